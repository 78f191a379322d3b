"""Kaleidoscope's image items through the Qwen2.5-VL family: the committed fixture release (its
image folder and its data.zip) scored by the tiny random VL model, end to end.

Decoding samples (temperature 1) rather than decodes greedily: the random model's greedy
output is one token repeated whatever the input, so equal greedy outputs would prove nothing,
while sampled outputs follow each row's exact distribution.
"""

import json
import os
import shutil

import pytest
from PIL import Image

from jaxlab import evals
from jaxlab.core import files
from jaxlab.core.errors import ConfigError, DataError
from jaxlab.evals import generation, kaleidoscope, mcq
from tests.evals.test_kaleidoscope_data import IMAGES, PARQUET, ZIP
from tests.models.qwen_vl.tiny import save_tiny_vl

pytest.importorskip("torch")  # the tiny model is written by transformers

LANGS = ("en", "ru")
# The fixture's first three en and ru items: en 60 (image), en 61 (four image options, no
# question image), en 62 (image), ru 280 (image), ru 281 (text only), ru 282 (image).
LIMIT = 3
IMAGE_OPTIONS_ROW = 61
# A 512x512 image under the tiny processor's max_pixels = 28*28*20: smart_resize shrinks it to
# 112x112, i.e. 8x8 patches of 14 pixels, merged 2x2 into 16 language-model tokens.
TOKENS_PER_IMAGE = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("kscope_vl"))
  save_tiny_vl(path)
  return path


def _args(model_dir, workdir, **kw):
  base = dict(model=model_dir, data=PARQUET, workdir=str(workdir), images=ZIP, languages=LANGS,
              limit=LIMIT, batch_size=4, max_new_tokens=4, temperature=1.0, seed=0)
  base.update(kw)
  return evals.BenchmarkArgs(**base)


def _samples(workdir):
  return files.read_jsonl(os.path.join(workdir, mcq.SAMPLES_FILE))


@pytest.fixture(scope="module")
def whole(model_dir, tmp_path_factory):
  """The uninterrupted direct-regime run over the zip: (workdir, results)."""
  workdir = tmp_path_factory.mktemp("whole")
  return workdir, kaleidoscope.evaluate(_args(model_dir, workdir))


def test_image_items_are_scored_with_their_images(model_dir, whole):
  workdir, res = whole
  modality = res["breakdowns"]["modality"]
  assert set(modality) == {"multimodal", "text-only"}
  assert modality["multimodal"]["n"] == 5 and modality["text-only"]["n"] == 1
  samples = _samples(workdir)
  assert [s["index"] for s in samples] == [60, 61, 62, 280, 281, 282]
  outputs = [s["output"] for s in samples]
  assert len(set(outputs)) > 1  # sampled outputs differ, so the comparisons below can fail
  # Each image went in as its merged patches: the prompt's token count is its rendered text's
  # (each image one <|vision_start|><|image_pad|><|vision_end|> span) plus 15 more tokens per
  # image, with the images resized to 512x512 first.
  from jaxlab import models  # pylint: disable=import-outside-toplevel
  tok = models.from_pretrained(model_dir)[1]
  with kaleidoscope.load(PARQUET, images=ZIP, languages=LANGS, limit=LIMIT) as ds:
    items = {it.key: it for it in ds.items}
    records = files.read_jsonl(os.path.join(workdir, generation.OUTPUTS_FILE))
    assert {r["key"] for r in records} == set(items)
    marker = kaleidoscope.image_marker("qwen_vl")
    for r in records:
      it = items[r["key"]]
      prompt = kaleidoscope.build_prompt(it, "direct")
      text = kaleidoscope.render(prompt, tok, marker)
      n_images = len(prompt.images)
      assert text.count(marker) == n_images and kaleidoscope.IMAGE_TOKEN not in text
      # Chat-rendered prompts carry their own special tokens: no bos is added.
      n_text = len(tok(text, add_special_tokens=False)["input_ids"])
      assert r["prompt_tokens"] == n_text + n_images * (TOKENS_PER_IMAGE - 1), it.index
      if it.index == IMAGE_OPTIONS_ROW:
        assert prompt.images == (("option", 0), ("option", 1), ("option", 2), ("option", 3))
        assert [im.size for im in ds.prompt_images(it, prompt)] == [(512, 512)] * 4


def test_results_do_not_depend_on_batch_size_or_interruption(model_dir, whole, tmp_path):
  workdir, ref = whole
  ref_samples = _samples(workdir)
  other = tmp_path / "other"
  kaleidoscope.evaluate(_args(model_dir, other, batch_size=3))
  assert [s["output"] for s in _samples(other)] == [s["output"] for s in ref_samples]
  # Killed after two items (and a half-written line); resumed from the extracted image folder.
  cut = tmp_path / "cut"
  os.makedirs(cut)
  lines = open(os.path.join(workdir, generation.OUTPUTS_FILE)).read().splitlines(True)
  with open(os.path.join(cut, generation.OUTPUTS_FILE), "w") as f:
    f.write("".join(lines[:2]) + lines[2][:12])
  resumed = kaleidoscope.evaluate(_args(model_dir, cut, images=IMAGES))
  assert json.dumps(resumed, sort_keys=True) == json.dumps(ref, sort_keys=True)
  assert _samples(cut) == ref_samples
  assert len(files.read_jsonl(os.path.join(cut, generation.OUTPUTS_FILE))) == len(ref_samples)


def test_cot_regime_and_text_only(model_dir, tmp_path):
  res = kaleidoscope.evaluate(_args(model_dir, tmp_path / "cot", regime="cot", languages=("en",),
                                    limit=1, max_new_tokens=2))
  assert res["breakdowns"]["modality"] == {"multimodal": res["breakdowns"]["modality"][
      "multimodal"]} and res["breakdowns"]["modality"]["multimodal"]["n"] == 1
  assert "kaleidoscope_cot" in res["results"]
  res = kaleidoscope.evaluate(_args(model_dir, tmp_path / "text", text_only=True, limit=1,
                                    max_new_tokens=2))
  assert set(res["breakdowns"]["modality"]) == {"text-only"}
  assert [s["index"] for s in _samples(tmp_path / "text")] == [64, 281]


def test_missing_image_is_one_line_naming_row_and_path(model_dir, tmp_path):
  folder = tmp_path / "images"
  shutil.copytree(IMAGES, folder)
  rel = "data/KFIX_EN_2024_Multimodal/images/q3.png"
  os.remove(folder / rel)
  with pytest.raises(DataError) as err:
    kaleidoscope.evaluate(_args(model_dir, tmp_path / "run", images=str(folder)))
  msg = str(err.value)
  assert "\n" not in msg and "row 62" in msg and rel in msg, msg


def test_generation_matches_one_direct_sampler_call(model_dir, tmp_path):
  """Prompts with 2 and 0 images generated one per batch equal one two-row sampler call at the
  same per-row keys (so each row got its own images), and bad image arguments are named."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxlab import models  # pylint: disable=import-outside-toplevel
  from jaxlab.llm import sampling  # pylint: disable=import-outside-toplevel
  from jaxlab.models.qwen_vl import inputs, processor  # pylint: disable=import-outside-toplevel
  model, tok = models.from_pretrained(model_dir)
  cfg = processor.ImageProcessorConfig.from_dir(model_dir)
  rng = np.random.default_rng(0)
  images = [[Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
             for h, w in ((50, 90), (80, 60))], []]
  prompts = [("a", f"{inputs.IMAGE_SPAN} or {inputs.IMAGE_SPAN}?"), ("b", "no image, 1 2 3")]
  d = generation.Decoding(max_new_tokens=6, temperature=1.0, seed=1)
  got = generation.generate_outputs(model, tok, prompts, str(tmp_path / "o.jsonl"), decoding=d,
                                    batch_size=1, pad_multiple=16, images=images,
                                    image_config=cfg)
  ids, pixel_values, grid = inputs.encode(tok, model.config, cfg, [p for _, p in prompts],
                                          images, add_special_tokens=False)
  length = generation.padded_length([len(x) for x in ids], 16)
  tokens, mask = sampling.left_pad(ids, pad_id=tok.pad_token_id, length=length)
  keys = jax.vmap(lambda h: jax.random.fold_in(jax.random.key(1), h))(
      np.asarray([generation.stable_hash(k) for k, _ in prompts], np.uint32))
  stop = tuple(sorted(set(model.config.stop_token_ids) | {tok.eos_token_id}))
  sp = sampling.SamplingParams(max_new_tokens=6, temperature=1.0, stop_tokens=stop,
                               pad_id=tok.pad_token_id)
  out = sampling.generate(model, tokens, mask, keys, sp, pixel_values=pixel_values,
                          grid_thw=grid)
  want = [tok.decode(np.asarray(out.tokens[j])[:int(out.lengths[j])].tolist(),
                     skip_special_tokens=True) for j in range(2)]
  assert [got[k]["output"] for k, _ in prompts] == want
  assert [got[k]["prompt_tokens"] for k, _ in prompts] == [len(x) for x in ids]
  with pytest.raises(ConfigError, match="image_config"):
    generation.generate_outputs(model, tok, prompts, str(tmp_path / "x.jsonl"), images=images)
  with pytest.raises(DataError, match="2 prompts but image lists for 1"):
    generation.generate_outputs(model, tok, prompts, str(tmp_path / "x.jsonl"),
                                images=images[:1], image_config=cfg)
