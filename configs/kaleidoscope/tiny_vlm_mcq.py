r"""A tiny Qwen2.5-VL-architecture model trained from scratch on a synthetic 18-language image
exam, scored on its held-out image items by the Kaleidoscope harness in both prompt regimes.

    python -m jaxlab.evals.kaleidoscope_synthetic --out=data/kaleidoscope_synthetic \
        --image_per_language=150 --image_heldout_per_language=20
    python -m launch.train --config=configs/kaleidoscope/tiny_vlm_mcq.py \
        --workdir=runs/kscope_vlm
    python -m launch.eval --benchmark=kaleidoscope --model=runs/kscope_vlm/hf_model \
        --data=data/kaleidoscope_synthetic/heldout_images --images=data/kaleidoscope_synthetic \
        --workdir=runs/kscope_vlm/direct --regime=direct --max_new_tokens=24
    # and the same with --regime=cot --workdir=runs/kscope_vlm/cot

Task (``jaxlab/evals/kaleidoscope_synthetic.py``, image exam): "what colour is the shape in the
image?" asked in each of the 18 languages; the image is one filled square or circle on grey,
red, green, blue or yellow, saved at the harness's 512x512; the options are those four colour
words of the item's language in that order, so the answer depends on the image alone, and it is
balanced over A-D. 150 training items per language (each seen in both regimes) and 20 held-out
items per language with other images. The training prompts are exactly the harness's prompts
for the ``qwen_vl`` family (system message, in-language keywords, the image span where the
harness puts it); the answer is ``{"choice": "X"}`` (direct) or ``<ANSWER> X </ANSWER>``
(CoT). A model blind to the image stays at 0.25.

Model: vision tower of 2 blocks (width 64) and the 2x2 merger into a 3-layer, width-128
Qwen2 text model; char tokenizer from the training text plus the vision tokens; float32.
``data.max_pixels`` = 112 x 112, so the 512x512 images reach the tower as 8x8 patches (16
language-model tokens), in training and in the harness alike (the bound is saved in the
exported model's ``preprocessor_config.json``).

Chance is 0.25. Measured (2-core CPU, load average ~2, 1500 steps in 19-20 min, macro total
accuracy on the 360 held-out items, direct / CoT; docs/reproductions/kaleidoscope.md):
seed 0 0.500 [0.444, 0.547] / the same, seed 1 0.747 [0.700, 0.789] / the same (95% bootstrap
intervals over items); seeds 2-4 (three side by side, 45 min each) 0.750, 1.000, 1.000 in both
regimes; every criterion met for every seed; over the five seeds 0.80 +- 0.26 (95% Student-t:
``python -m launch.analyze --data=docs/reproductions/data/kaleidoscope/image_seeds.csv``).
Seeds 3 and 4 learned all four colours; seed 0 answers "green" for green, blue and yellow,
seeds 1 and 2 "blue" for green and blue. A first version of the exam (four
of six colour words shuffled per item) stayed at 0.250 after 1500 steps, every answer A.
"""

import os

from jaxlab.core import config as config_lib

DATA = "data/kaleidoscope_synthetic"


def get_config():
  # The text exam's config (data format, tiny text model, optimiser, evaluation), then the
  # image exam's data and the vision tower.
  c = config_lib.load_file(os.path.join(os.path.dirname(__file__), "tiny_mcq.py"))
  c.data.train_files = (f"{DATA}/train_images.jsonl",)
  c.data.eval_files = (f"{DATA}/eval_images.jsonl",)
  c.data.image_field = "image"
  c.data.max_pixels = 112 * 112
  c.model.family = "qwen_vl"
  c.model.vision.update(dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4,
                             window_size=56, fullatt_block_indexes=(1,)))
  return c
