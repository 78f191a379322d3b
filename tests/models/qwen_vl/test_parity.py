"""Qwen2.5-VL against transformers' PyTorch reference: vision tower, M-RoPE positions, logits,
checkpoint layouts and round trips, cached decoding.

The reference models are tiny random ``Qwen2_5_VLForConditionalGeneration`` s saved with
``save_pretrained``: 2 vision blocks (block 1 full attention, block 0 windowed with a window
smaller than the images), a GQA text model, tied and untied heads. Norm scales and biases are
perturbed away from 1/0 so that a mapping bug cannot hide behind an identity.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from jaxlab import models
from jaxlab.models.errors import ModelConfigError
from jaxlab.models.qwen_vl import modeling, params, vision
from jaxlab.models.qwen_vl.config import QwenVLConfig, VisionConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 160
START, END, IMAGE, VIDEO = 150, 153, 151, 152
# Patch grids (frames, rows, columns): a 112x140 image and a 56x84 one at patch 14.
GRID = np.array([[1, 8, 10], [1, 4, 6]])
# The window (56 px = 2x2 merged patches) is smaller than either image.
VISION = dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2, patch_size=14,
              temporal_patch_size=2, spatial_merge_size=2, window_size=56,
              fullatt_block_indexes=[1], out_hidden_size=64, in_channels=3)
TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0,
            rope_parameters={"rope_type": "default", "rope_theta": 10_000.0,
                             "mrope_section": [2, 3, 3]})


def _build(tied: bool, seed: int):
  torch.manual_seed(seed)
  cfg = transformers.Qwen2_5_VLConfig(
      text_config=dict(TEXT), vision_config=dict(VISION), image_token_id=IMAGE,
      video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END,
      tie_word_embeddings=tied)
  model = transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or "bias" in name or "ln_q" in name:
        p.add_(0.2 * torch.randn_like(p))
  return model


@pytest.fixture(scope="module")
def ref_dirs(tmp_path_factory):
  """"tied"/"untied" -> (torch model, its save_pretrained directory)."""
  out = {}
  for i, name in enumerate(("tied", "untied")):
    model = _build(name == "tied", seed=i)
    path = str(tmp_path_factory.mktemp(name))
    model.save_pretrained(path)
    out[name] = (model, path)
  return out


@pytest.fixture(scope="module")
def ours(ref_dirs):
  return {name: params.from_pretrained(path, tokenizer=False)[0]
          for name, (_, path) in ref_dirs.items()}


def _pixels(seed=0):
  n = int(GRID.prod(-1).sum())
  return np.random.default_rng(seed).normal(size=(n, 3 * 2 * 14 * 14)).astype(np.float32)


def _processor_pixels(seed=0):
  """pixel_values of two random 112x140 and 56x84 RGB images through transformers' own image
  processor (its grids are GRID: the sizes are already multiples of 28)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  images = [Image.fromarray(rng.integers(0, 256, (h * 14, w * 14, 3), dtype=np.uint8))
            for _, h, w in GRID]
  out = transformers.Qwen2VLImageProcessorPil()(images=images, return_tensors="np")
  np.testing.assert_array_equal(out["image_grid_thw"], GRID)
  return out["pixel_values"].astype(np.float32)


def _batch(seed=0):
  """Two LEFT-padded prompts: text, <vision_start>, the image's placeholders, <vision_end>,
  text; row 0 shows the 8x10 image (20 merged patches), row 1 the 4x6 one (6)."""
  rng = np.random.default_rng(seed)
  text = lambda n: list(rng.integers(3, 140, size=n))
  counts = GRID.prod(-1) // 4
  rows = [text(3) + [START] + [IMAGE] * counts[0] + [END] + text(4),
          text(2) + [START] + [IMAGE] * counts[1] + [END] + text(5)]
  t = max(map(len, rows))
  tokens = np.zeros((2, t), np.int64)
  mask = np.zeros((2, t), bool)
  for i, r in enumerate(rows):
    tokens[i, t - len(r):] = r
    mask[i, t - len(r):] = True
  return tokens, mask


def _ref_logits(model, tokens, mask, pixels, grid=GRID):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                pixel_values=torch.tensor(pixels), image_grid_thw=torch.tensor(grid),
                mm_token_type_ids=torch.tensor((tokens == IMAGE).astype(np.int64)))
  return out.logits.numpy()


def test_config_reads_nested_and_flat_layouts(ref_dirs, tmp_path):
  _, path = ref_dirs["untied"]
  cfg = params.load_config(path)
  assert cfg.text.mrope_section == (2, 3, 3) and cfg.text.num_kv_heads == 2
  assert cfg.vision.fullatt_block_indexes == (1,) and cfg.vision.window_size == 56
  assert cfg.image_token_id == IMAGE and not cfg.tie_word_embeddings
  # The flat layout of published checkpoints: text fields at the top, v4 rope_scaling.
  d = json.load(open(os.path.join(path, "config.json")))
  flat = {k: v for k, v in d.items() if k != "text_config"}
  flat.update({k: v for k, v in d["text_config"].items() if k not in ("rope_parameters",
                                                                      "model_type")})
  flat["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 3, 3]}
  flat["rope_theta"] = 10_000.0
  flat["vision_config"] = dict(d["vision_config"])
  flat["vision_config"]["in_chans"] = flat["vision_config"].pop("in_channels")
  assert QwenVLConfig.from_hf_dict(flat) == cfg
  # Our own writing reads back the same.
  assert QwenVLConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
  bad = json.loads(json.dumps(d))
  bad["vision_config"]["hidden_act"] = "gelu"
  with pytest.raises(ModelConfigError, match=r"vision_config\): hidden_act='gelu'"):
    QwenVLConfig.from_hf_dict(bad, "x/config.json")
  bad = json.loads(json.dumps(d))
  del bad["text_config"]["rope_parameters"]["mrope_section"]
  with pytest.raises(ModelConfigError, match="mrope_section"):
    QwenVLConfig.from_hf_dict(bad, "x/config.json")


def test_vision_tower_matches_reference(ref_dirs, ours):
  ref, _ = ref_dirs["untied"]
  pixels = _pixels()
  with torch.no_grad():
    want = ref.model.visual(torch.tensor(pixels), grid_thw=torch.tensor(GRID)).pooler_output
  got = np.asarray(modeling.image_embeds(ours["untied"], pixels, GRID))
  assert got.shape == (int(GRID.prod(-1).sum()) // 4, 64)
  np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)


def test_window_order_is_a_permutation_with_small_windows():
  v = VisionConfig(**{**VISION, "fullatt_block_indexes": (1,)})
  grid = vision.as_grid(GRID)
  order, wid = vision.window_order(v, grid)
  np.testing.assert_array_equal(np.sort(order), np.arange(26))
  # 8x10 patches = 4x5 merged; windows of 2x2 merged: 2 x 3 windows, sizes 4,4,2,4,4,2.
  assert np.bincount(wid[:20]).tolist() == [4, 4, 2, 4, 4, 2]
  # Window 0 of image 0 holds merged patches (0,0), (0,1), (1,0), (1,1) of its 4x5 grid.
  assert order[:4].tolist() == [0, 1, 5, 6]


def test_rope_index_matches_reference(ref_dirs, ours):
  ref, _ = ref_dirs["untied"]
  tokens, mask = _batch()
  with torch.no_grad():
    want_pos, want_delta = ref.model.get_rope_index(
        torch.tensor(tokens), mm_token_type_ids=torch.tensor((tokens == IMAGE).astype(np.int64)),
        image_grid_thw=torch.tensor(GRID), attention_mask=torch.tensor(mask.astype(np.int64)))
  pos, delta = modeling.rope_index(ours["untied"].config, tokens, mask, GRID)
  np.testing.assert_array_equal(pos, want_pos.numpy())
  np.testing.assert_array_equal(delta, want_delta.numpy()[:, 0])
  assert (delta < 0).all()  # images advance positions by less than their token count
  # Without images: plain counts of real tokens in all three rows, no delta.
  text = np.where(tokens == IMAGE, 5, tokens)
  pos, delta = modeling.rope_index(ours["untied"].config, text, mask)
  plain = np.where(mask, np.cumsum(mask, 1) - 1, 0)
  np.testing.assert_array_equal(pos, np.stack([plain] * 3))
  np.testing.assert_array_equal(delta, [0, 0])


@pytest.mark.parametrize("name", ["tied", "untied"])
def test_logits_match_reference_on_left_padded_batch(ref_dirs, ours, name):
  ref, _ = ref_dirs[name]
  tokens, mask = _batch()
  pixels = _processor_pixels()
  want = _ref_logits(ref, tokens, mask, pixels)
  got = np.asarray(modeling.forward(ours[name], tokens, mask, pixels, GRID))
  np.testing.assert_allclose(got[mask], want[mask], atol=1e-4, rtol=0)


def test_placeholder_count_mismatch_is_named(ours):
  tokens, mask = _batch()
  tokens[0, -3] = IMAGE  # one placeholder too many
  with pytest.raises(ValueError, match=r"27 image placeholder tokens .* give 26 merged"):
    modeling.forward(ours["tied"], tokens, mask, _pixels(), GRID)


def _tree(model):
  return {k: np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(
      nnx.state(model))}


def test_both_key_layouts_load_identically(ref_dirs, ours, tmp_path):
  _, path = ref_dirs["untied"]
  tensors = load_file(os.path.join(path, "model.safetensors"))
  # transformers 5.25 saves the hub layout (visual.*, model.*); write the other one.
  assert any(k.startswith("visual.") for k in tensors)
  renamed = {}
  for k, w in tensors.items():
    if k.startswith("visual."):
      k = "model." + k
    elif k.startswith("model."):
      k = "model.language_model." + k[len("model."):]
    renamed[k] = w
  out = tmp_path / "t5"
  out.mkdir()
  save_file(renamed, str(out / "model.safetensors"), metadata={"format": "pt"})
  (out / "config.json").write_text(open(os.path.join(path, "config.json")).read())
  a, b = _tree(ours["untied"]), _tree(params.from_pretrained(str(out), tokenizer=False)[0])
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  # A tensor of the wrong shape is named with both shapes.
  renamed["model.visual.blocks.0.attn.qkv.weight"] = np.zeros((96, 31), np.float32)
  save_file(renamed, str(out / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(ModelConfigError, match=r"'model.visual.blocks.0.attn.qkv.weight' has "
                     r"shape \[96, 31\], expected \[96, 32\]"):
    params.from_pretrained(str(out), tokenizer=False)
  # A missing tensor is named in both layouts.
  del renamed["model.visual.blocks.0.attn.qkv.weight"]
  save_file(renamed, str(out / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(ModelConfigError, match=r"missing tensor 'model.visual.blocks.0.attn.qkv."
                     r"weight' \(or 'visual.blocks.0.attn.qkv.weight'; expected shape \[96, 32\]"):
    params.from_pretrained(str(out), tokenizer=False)


@pytest.mark.parametrize("name", ["tied", "untied"])
def test_save_pretrained_loads_in_transformers(ref_dirs, ours, tmp_path, name):
  ref, _ = ref_dirs[name]
  out = str(tmp_path / "saved")
  params.save_pretrained(ours[name], out)
  assert models.family_for(out) == "qwen_vl"
  back = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(out).eval()
  tokens, mask = _batch(1)
  pixels = _pixels(1)
  np.testing.assert_array_equal(_ref_logits(back, tokens, mask, pixels)[mask],
                                _ref_logits(ref, tokens, mask, pixels)[mask])
  # Through the registry, and bit-exact against the directory we loaded from.
  again, tok = models.from_pretrained(out, tokenizer=False)
  assert tok is None and isinstance(again, modeling.QwenVL)
  a, b = _tree(ours[name]), _tree(again)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_cached_decode_equals_full_recompute(ours):
  model = ours["untied"]
  tokens, mask = _batch(2)
  pixels = _pixels(2)
  steps = 4
  p = tokens.shape[1]
  new = np.random.default_rng(3).integers(3, 140, size=(2, steps))
  all_tokens = np.concatenate([tokens, new], axis=1)
  all_mask = np.concatenate([mask, np.ones((2, steps), bool)], axis=1)
  want = np.asarray(modeling.forward(model, all_tokens, all_mask, pixels, GRID))
  # Decode positions continue the prompt's M-RoPE positions as rope_index sees the whole text.
  full_pos, _ = modeling.rope_index(model.config, all_tokens, all_mask, GRID)

  cache = model.init_cache(2, p + steps)
  logits, cache, deltas = modeling.prefill(model, tokens, mask, pixels, GRID, cache)
  np.testing.assert_allclose(np.asarray(logits)[mask], want[:, :p][mask], atol=1e-4, rtol=0)
  ones = jnp.ones((2, 1), bool)
  for i in range(steps):
    pos = modeling.decode_positions(cache, ones, deltas)
    np.testing.assert_array_equal(np.asarray(pos)[..., 0], full_pos[..., p + i])
    out, cache = modeling.decode_step(model, new[:, i:i + 1], ones, cache, deltas)
    np.testing.assert_allclose(np.asarray(out[:, 0]), want[:, p + i], atol=1e-4, rtol=0)
