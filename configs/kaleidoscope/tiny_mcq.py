r"""A tiny decoder trained from scratch on a synthetic 18-language exam, scored by the
Kaleidoscope harness in both prompt regimes.

    python -m jaxlab.evals.kaleidoscope_synthetic --out=data/kaleidoscope_synthetic
    python -m launch.train --config=configs/kaleidoscope/tiny_mcq.py --workdir=runs/kscope_tiny
    python -m launch.eval --benchmark=kaleidoscope --model=runs/kscope_tiny/hf_model \
        --data=data/kaleidoscope_synthetic/heldout --workdir=runs/kscope_tiny/direct \
        --regime=direct --max_new_tokens=24
    python -m launch.eval --benchmark=kaleidoscope --model=runs/kscope_tiny/hf_model \
        --data=data/kaleidoscope_synthetic/heldout --workdir=runs/kscope_tiny/cot \
        --regime=cot --max_new_tokens=24

Task (``jaxlab/evals/kaleidoscope_synthetic.py``): "which of these options is a number?" asked
in each of the 18 languages (one two-digit number among three words of the language), options
A-D, the answer position balanced. The training prompts are exactly the harness's prompts
(system message, in-language keywords, chat template), once per regime; the answer is
``{"choice": "X"}`` (direct) or ``<ANSWER> X </ANSWER>`` (CoT). 300 items per language for
training, 20 held-out items per language (none shares its options with a training item).

Model: a Qwen3-style decoder (3 layers, width 128, char tokenizer built from the training
text), float32 on CPU, 1500 steps of 16 prompts, AdamW (peak 3e-3, cosine to 3e-4).

Chance is 0.25. Measured on the 360 held-out items (macro total accuracy over the 18
languages, direct / CoT, 95% bootstrap intervals over items; 2-core CPU shared with other
runs, 27-39 min of training): seed 0 0.661 [0.614, 0.706] / 0.683 [0.633, 0.731]; seed 1
1.000 / 1.000 (360 of 360 in each regime); seeds 2-4 1.000 / 1.000, 0.978 / 0.989, 0.967 /
0.978; over the five seeds 0.92 +- 0.18 / 0.93 +- 0.17 (95% Student-t over seeds:
``python -m launch.analyze --data=docs/reproductions/data/kaleidoscope/text_seeds.csv``).
Seed 3 sat at chance until about step 1150, so 1500 steps is near the edge of this setting.
The first run used 500 steps (``--config.steps=500 --config.eval.every=250
--config.checkpoint.every=100``) and stopped on a positional shortcut: 0.372 / 0.500. Details
and per-item outputs: ``docs/reproductions/kaleidoscope.md``.
"""

from jaxlab.llm import sft


def get_config():
  c = sft.default_config()
  c.data.train_files = ("data/kaleidoscope_synthetic/train.jsonl",)
  c.data.eval_files = ("data/kaleidoscope_synthetic/eval.jsonl",)
  c.data.prompt_format = "{question}"
  c.data.completion_format = "{answer}"
  c.data.prompt_special_tokens = False  # the prompts are rendered chat transcripts
  sft.tiny_decoder(c)
  c.model.architecture = "Qwen3ForCausalLM"
  c.steps = 1500
  c.batch_size = 16
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 50
  c.optim.schedule = "cosine"
  c.optim.min_lr_ratio = 0.1
  c.log_every = 50
  c.eval.every = 500
  c.eval.num_examples = 120
  c.eval.batch_size = 40
  c.eval.max_new_tokens = 24
  c.checkpoint.every = 250
  return c
