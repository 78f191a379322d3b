"""SFT of a Qwen2.5-VL model on image rows: padded image batches equal the static path, a short
run trains, exports and reloads, and bad rows fail with their file and row named."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import nnx

from jaxlab import evals, models
from jaxlab.core import loop
from jaxlab.core.errors import DataError
from jaxlab.core.mesh import make_mesh
from jaxlab.llm import data as data_lib
from jaxlab.llm import image_tasks, sft, tasks
from jaxlab.llm.evaluation import TaskAccuracy
from jaxlab.models.decoder.config import DecoderConfig
from jaxlab.models.qwen_vl import modeling, processor, vision
from jaxlab.models.qwen_vl.config import QwenVLConfig, VisionConfig
from tests.models.qwen_vl import tiny

START, IMAGE, END = 34, 35, 37


def _tiny_vl(remat: bool = False) -> modeling.QwenVL:
  """2 vision blocks (block 0 windowed with a window smaller than the images, block 1 full),
  a GQA text model with M-RoPE."""
  text = DecoderConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_layers=2,
                       num_heads=4, num_kv_heads=2, head_dim=8, mrope_section=(2, 1, 1),
                       attention_bias=True, architecture="Qwen2ForCausalLM", remat=remat)
  tower = VisionConfig(depth=2, hidden_size=16, intermediate_size=24, num_heads=2,
                       window_size=56, fullatt_block_indexes=(1,), out_hidden_size=32)
  return modeling.init_qwen_vl(QwenVLConfig(text=text, vision=tower, image_token_id=IMAGE,
                                            video_token_id=36, vision_start_token_id=START,
                                            vision_end_token_id=END), seed=1)


def test_padded_image_batch_equals_static_grids():
  """A LEFT-padded batch of three prompts: two images of different sizes, one image, none.
  The data-driven layout (each row's patches padded to 112) gives the static path's logits;
  a second batch of other image sizes reuses its compiled program."""
  model = _tiny_vl()
  rng = np.random.default_rng(0)
  grids = [[(1, 8, 6), (1, 4, 4)], [(1, 6, 8)], []]

  def batch(grids):
    rows = []
    for g in grids:
      r = list(rng.integers(3, 30, 3))
      for t, h, w in g:
        r += [START] + [IMAGE] * (t * h * w // 4) + [END] + list(rng.integers(3, 30, 2))
      rows.append(r)
    t = max(map(len, rows))
    tokens, mask = np.zeros((len(rows), t), np.int32), np.zeros((len(rows), t), bool)
    for i, r in enumerate(rows):
      tokens[i, t - len(r):], mask[i, t - len(r):] = r, True
    flat = np.array([x for g in grids for x in g]).reshape(-1, 3)
    pixels = rng.normal(size=(int(flat.prod(-1).sum()), 1176)).astype(np.float32)
    return tokens, mask, pixels, flat

  tokens, mask, pixels, flat = batch(grids)
  static = np.asarray(modeling.forward(model, tokens, mask, pixels, flat))
  images = vision.pack_images(model.config.vision, pixels, flat, [2, 1, 0], max_patches=112)
  assert images.pixel_values.shape == (3, 112, 1176) and images.grid.shape == (3, 2, 3)
  padded = np.asarray(modeling.forward(model, tokens, mask, images))
  np.testing.assert_allclose(padded[mask], static[mask], atol=2e-5, rtol=0)

  before = modeling._prompt_logits._cache_size()  # pylint: disable=protected-access
  tokens2, mask2, pixels2, flat2 = batch([[(1, 4, 6)], [(1, 8, 8)], [(1, 4, 4), (1, 4, 6)]])
  images2 = vision.pack_images(model.config.vision, pixels2, flat2, [1, 1, 2], 112, 2)
  tokens2 = np.pad(tokens2, ((0, 0), (tokens.shape[1] - tokens2.shape[1], 0)))
  mask2 = np.pad(mask2, ((0, 0), (mask.shape[1] - mask2.shape[1], 0)))
  out2 = np.asarray(modeling.forward(model, tokens2, mask2, images2))
  assert modeling._prompt_logits._cache_size() == before  # pylint: disable=protected-access
  static2 = np.asarray(modeling.forward(model, tokens2, mask2, pixels2, flat2))
  np.testing.assert_allclose(out2[mask2], static2[mask2], atol=2e-5, rtol=0)

  with pytest.raises(ValueError, match=r"row 0: its image\(s\) \[\[1, 8, 6\], \[1, 4, 4\]\] "
                     "need 64 patches, more than max_patches=48"):
    vision.pack_images(model.config.vision, pixels, flat, [2, 1, 0], max_patches=48)
  one = vision.pack_images(model.config.vision, pixels[64:], flat[2:], [1], 48)  # 12 merged
  with pytest.raises(ValueError, match="row 0: 10 image placeholder tokens .* give 12"):
    modeling.prepare_prompt(model.config, np.full((1, 10), IMAGE), None, one)


def test_remat_recomputes_vision_and_text_blocks_with_the_same_gradients():
  """``remat`` wraps every vision block and text layer in ``nnx.remat``: the backward pass
  recomputes them (remat ops in the gradient's program) and the gradients are unchanged."""
  rng = np.random.default_rng(3)
  flat = np.array([[1, 8, 6], [1, 4, 4]])
  pixels = rng.normal(size=(64, 1176)).astype(np.float32)
  tokens = np.array([[5, START] + [IMAGE] * 12 + [END, 7, START] + [IMAGE] * 4 + [END, 9]])
  grads, programs = [], []
  for remat in (False, True):
    model = _tiny_vl(remat)
    images = vision.pack_images(model.config.vision, pixels, flat, [2], max_patches=64)
    prompt = modeling.prepare_prompt(model.config, tokens, None, images)
    graphdef, state = nnx.split(model)

    def loss(state, prompt=prompt, graphdef=graphdef):
      m = nnx.merge(graphdef, state)
      h, _ = m.prompt_hidden(prompt.tokens, prompt.mask, prompt.positions, prompt.pixel_values,
                             prompt.grid, None)
      return jnp.mean(m.logits(h) ** 2)

    grads.append(jax.jit(jax.grad(loss))(state))
    programs.append(str(jax.make_jaxpr(jax.grad(loss))(state)))
  # One checkpoint per vision block (2) and per text layer (2).
  assert "remat2[" not in programs[0] and programs[1].count("remat2[") >= 4
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
  d = tmp_path_factory.mktemp("shapes")
  out = {}
  for split, n in (("train", 16), ("eval", 4)):
    rows = image_tasks.make_rows(n, 0, split, str(d / "img"), "img")
    out[split] = str(d / f"{split}.jsonl")
    tasks.write_jsonl(rows, out[split])
  return out


def _config(data, **overrides):
  return tiny.sft_config(data["train"], data["eval"], "{image}{question}", " {answer}", steps=4,
                         eval_rows=4, max_new_tokens=4, log_every=2, overrides=overrides)


def test_short_vlm_run_exports_a_model_the_loader_and_sampler_read(shapes_data, tmp_path):
  """4 steps on mixed-size image rows; ``hf_model`` (weights, char tokenizer with the vision
  tokens, preprocessor_config.json) loads through the registry as a QwenVL and gives the
  run's held-out completions again."""
  c = _config(shapes_data)
  summary = sft.run(c, str(tmp_path / "run"), make_mesh(), progress=False)
  records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert [r["step"] for r in records] == [2, 4]
  assert all(np.isfinite(r["train/loss"]) for r in records) and "eval/accuracy" in records[-1]
  hf = summary["hf_model"]
  assert {"config.json", "model.safetensors", "tokenizer.json",
          processor.PREPROCESSOR_FILE} <= set(os.listdir(hf))
  # Placed on the run's (one-device) mesh like the trained state, so the sampler compiled for
  # the run's evaluation serves the reloaded model too.
  model, tok = models.from_pretrained(hf, mesh=make_mesh(), layout=c.layout)
  assert isinstance(model, modeling.QwenVL)
  assert tok.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id
  assert model.config == sft.qwen_vl_config(c, tok)  # the run's own config, read back
  rows = data_lib.load_rows(c.data.eval_files)
  images = data_lib.RowImages(rows, "image", processor.ImageProcessorConfig.from_dir(hf),
                              model.config.vision)
  again = TaskAccuracy.from_config(c, tok, rows, None, images=images)
  samples = [json.loads(line) for line in open(tmp_path / "run" / "eval_samples.jsonl")]
  assert again.completions(model) == [s["completion"] for s in samples]
  # launch.eval's evaluator on the restored run reads the rows' images too.
  run, state, _ = loop.restore_run(sft.TRAINER, c, str(tmp_path / "run"), make_mesh())
  metrics = evals.get("task_accuracy")(run, state, evals.Options())
  assert metrics["eval/accuracy"] == records[-1]["eval/accuracy"]


def test_bad_image_rows_name_file_row_and_field(shapes_data, tmp_path):
  rows = tasks.load_jsonl(shapes_data["train"])
  rows[2]["image"] = "img/nope.png"
  bad = os.path.join(os.path.dirname(shapes_data["train"]), "bad.jsonl")  # next to img/
  tasks.write_jsonl(rows, bad)
  c = _config(shapes_data, **{"data.train_files": (bad,)})
  with pytest.raises(DataError, match=r"bad\.jsonl:3: field 'image': image file "
                     r"'img/nope\.png' not found"):
    sft.SFTRun(c, str(tmp_path / "run"), make_mesh())
  # A row whose image needs more patches than the budget is named with the budget's key.
  c = _config(shapes_data, **{"data.max_patches": 16})
  with pytest.raises(DataError, match=r"train\.jsonl:\d+: its image\(s\) need \d+ patches .*"
                     r"'config\.data\.max_patches'=16"):
    sft.SFTRun(c, str(tmp_path / "run2"), make_mesh())
  # More {image} placeholders than the row has images.
  c = _config(shapes_data, **{"data.prompt_format": "{image}{image}{question}"})
  with pytest.raises(DataError, match=r"train\.jsonl:1: the prompt holds 2 image "
                     r"placeholder\(s\) but the row has 1 image"):
    sft.SFTRun(c, str(tmp_path / "run3"), make_mesh())


def test_batches_are_a_function_of_seed_and_step(shapes_data, tmp_path):
  """What makes a resumed VLM run equal an uninterrupted one (the loop's resume itself is
  tested with the decoder in test_sft.py): a fresh run object rebuilds the same batch of every
  step, images included, and every step's batch has the same shapes (one compiled step)."""
  c = _config(shapes_data)
  a = sft.SFTRun(c, str(tmp_path / "run"), make_mesh())
  b = sft.SFTRun(c, str(tmp_path / "run"), make_mesh())  # as a resumed run: tokenizer reread
  shapes = set()
  for step in (0, 3, 5):
    x, y = a.host_batch(step), b.host_batch(step)
    assert jax.tree.structure(x) == jax.tree.structure(y)
    for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)):
      np.testing.assert_array_equal(u, v)
    shapes.add(tuple(u.shape for u in jax.tree.leaves(x)))
  assert len(shapes) == 1
  grids = {tuple(g.reshape(-1)) for g in a.host_batch(0)["images"].grid}
  assert len(grids) > 1  # the batch mixes image sizes


def test_batches_built_per_step_equal_reading_every_row(shapes_data, tmp_path):
  """Rows are read, tokenized, given M-RoPE positions and images per batch (and per process:
  only the rows asked for), and equal what reading and tokenizing every row up front gives:
  the same tokenizer, T, patch budget and every field of every batch."""
  c = _config(shapes_data)
  run = sft.SFTRun(c, str(tmp_path / "run"), make_mesh())
  located = data_lib.load_rows(c.data.train_files)
  images = data_lib.RowImages(located, "image", run.image_config, run.vision_config)
  prompts = images.prompts(c.data.prompt_format, [r for _, _, r in located], "image")
  pairs = [(p, sft.format_row(c, r)[1]) for p, (_, _, r) in zip(prompts, located)]
  tok = sft._build_tokenizer(c, str(tmp_path / "whole"), [p + q for p, q in pairs])
  assert tok.get_vocab() == run.tokenizer.get_vocab()
  where = [f"{f}:{line}" for f, line, _ in located]
  tokens, loss_mask = sft.encode_sft(tok, [p for p, _ in pairs], [q for _, q in pairs], 0, where)
  mask = np.arange(tokens.shape[1])[None] < (
      tokens.shape[1] - np.argmax(loss_mask[:, ::-1], axis=1))[:, None]
  positions = sft.mrope_positions(run.vl_config, tokens, mask, images, where)
  assert (run.num_rows, run.seq_len, run.max_patches) == tokens.shape + (images.max_patches,)
  for step in (0, 5):  # 5 crosses into the second epoch
    idx = data_lib.batch_indices(step, c.batch_size, run.num_rows, c.seed)
    whole = {"tokens": tokens[idx], "loss_mask": loss_mask[idx], "mask": mask[idx],
             "positions_b3t": positions[idx], "images": images.pack(idx)}
    got = run.host_batch(step)
    assert jax.tree.structure(got) == jax.tree.structure(whole)
    for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(whole)):
      np.testing.assert_array_equal(u, v)
    part = run.host_batch(step, np.array([1, 3]))
    for u, v in zip(jax.tree.leaves(part), jax.tree.leaves(whole)):
      np.testing.assert_array_equal(u, v[[1, 3]])
