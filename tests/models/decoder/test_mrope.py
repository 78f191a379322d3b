"""Multimodal RoPE (Qwen2-VL / Qwen2.5-VL): positions [P, B, T], frequencies split by
``mrope_section``; equal rows are plain RoPE, and the math matches transformers' own code."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from jaxlab import models
from jaxlab.models.decoder import modeling
from jaxlab.models.decoder.config import DecoderConfig
from jaxlab.models.errors import ModelConfigError

SECTION = (2, 3, 3)  # H/2 = 8 for head_dim 16
CFG = DecoderConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=16, architecture="Qwen2ForCausalLM",
                    attention_bias=True, tie_word_embeddings=True, rope_theta=10_000.0,
                    mrope_section=SECTION, max_position_embeddings=256)


def _positions_pbt(seed=0, b=2, t=9):
  """Three different rows, like an image grid (temporal, height, width) inside text."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, 60, (3, b, t)).astype(np.int32)


def test_frequency_rows_follow_the_sections():
  np.testing.assert_array_equal(modeling.mrope_rows(CFG), [0, 0, 1, 1, 1, 2, 2, 2])


def test_equal_rows_reproduce_plain_rope_exactly():
  pos_bt = _positions_pbt()[0]
  plain = CFG.replace(mrope_section=None)
  cos_p, sin_p = modeling.rope_cos_sin(plain, jnp.asarray(pos_bt))
  cos_m, sin_m = modeling.rope_cos_sin(CFG, jnp.asarray(np.stack([pos_bt] * 3)))
  np.testing.assert_array_equal(np.asarray(cos_m), np.asarray(cos_p))
  np.testing.assert_array_equal(np.asarray(sin_m), np.asarray(sin_p))
  # Whole model: [3, B, T] equal rows == [B, T] == the same weights without M-RoPE.
  model = modeling.init_decoder(CFG, seed=0)
  tokens = np.random.default_rng(1).integers(3, 128, pos_bt.shape)
  want = np.asarray(modeling.forward(model, tokens, positions_bt=jnp.asarray(pos_bt)))
  got = np.asarray(modeling.forward(model, tokens,
                                    positions_bt=jnp.asarray(np.stack([pos_bt] * 3))))
  np.testing.assert_array_equal(got, want)
  # Different rows do change the result (so the comparison above can fail).
  other = np.asarray(modeling.forward(model, tokens, positions_bt=jnp.asarray(_positions_pbt())))
  assert np.abs(other - want).max() > 1e-3


def test_bad_positions_are_named():
  model = modeling.init_decoder(CFG, seed=0)
  tokens = jnp.zeros((2, 9), jnp.int32)
  with pytest.raises(ValueError, match=r"2 rows \(shape \[2, 2, 9\]\), expected "
                     r"len\(mrope_section\) = 3"):
    model(tokens, positions_bt=jnp.zeros((2, 2, 9), jnp.int32))
  plain = modeling.init_decoder(CFG.replace(mrope_section=None), seed=0)
  with pytest.raises(ValueError, match="need config.mrope_section"):
    plain(tokens, positions_bt=jnp.zeros((3, 2, 9), jnp.int32))
  with pytest.raises(ValueError, match="sums to 9, expected head_dim / 2 = 8"):
    CFG.replace(mrope_section=(3, 3, 3))


def test_config_reads_both_spellings_and_round_trips(tmp_path):
  base = {"architectures": ["Qwen2ForCausalLM"], "vocab_size": 128, "hidden_size": 64,
          "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "rope_theta": 1e6}
  v4 = DecoderConfig.from_hf_dict({**base, "rope_scaling": {"type": "mrope",
                                                            "mrope_section": [2, 3, 3]}})
  v5 = DecoderConfig.from_hf_dict({**base, "rope_parameters": {
      "rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}})
  assert v4 == v5 and v4.mrope_section == SECTION and v4.rope_scaling is None
  assert v4.rope_theta == 1e6
  assert DecoderConfig.from_hf_dict(v4.to_hf_dict()) == v4
  path = str(tmp_path / "config.json")
  with pytest.raises(ModelConfigError, match=f"{path}: rope_type 'mrope' needs field "
                     "'mrope_section'"):
    DecoderConfig.from_hf_dict({**base, "rope_scaling": {"type": "mrope"}}, path)
  with pytest.raises(ModelConfigError, match=f"{path}: mrope_section=\\[2, 3, 2\\] sums to 7"):
    DecoderConfig.from_hf_dict({**base, "rope_scaling": {"type": "mrope",
                                                         "mrope_section": [2, 3, 2]}}, path)


# -- against transformers' Qwen2.5-VL text model (PyTorch) ----------------------------------------


def _qwen25_vl():
  pytest.importorskip("torch")
  try:
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as hf  # pylint: disable=g-import-not-at-top
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # e.g. a transformers build that wants torchvision here
    pytest.skip(f"Qwen2.5-VL modeling not importable: {e}")
  return hf, Qwen2_5_VLTextConfig


def _text_config(Qwen2_5_VLTextConfig, d):
  return Qwen2_5_VLTextConfig(
      vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
      intermediate_size=d["intermediate_size"], num_hidden_layers=d["num_hidden_layers"],
      num_attention_heads=d["num_attention_heads"],
      num_key_value_heads=d["num_key_value_heads"], rms_norm_eps=d["rms_norm_eps"],
      max_position_embeddings=d["max_position_embeddings"],
      rope_parameters=d["rope_parameters"], bos_token_id=None, eos_token_id=None,
      pad_token_id=None)


def test_cos_sin_match_transformers_qwen2_5_vl_rotary():
  import torch  # pylint: disable=g-import-not-at-top
  hf, Qwen2_5_VLTextConfig = _qwen25_vl()
  tc = _text_config(Qwen2_5_VLTextConfig, CFG.to_hf_dict())
  assert list(tc.rope_parameters["mrope_section"]) == list(SECTION)  # reads our config.json
  rotary = hf.Qwen2_5_VLRotaryEmbedding(tc)
  for seed in range(3):
    pos = _positions_pbt(seed, b=3, t=11)
    want_cos, want_sin = rotary(torch.zeros(1), torch.tensor(pos, dtype=torch.long))
    cos, sin = modeling.rope_cos_sin(CFG, jnp.asarray(pos))
    # transformers repeats the H/2 table for the two rotated halves.
    got_cos = np.concatenate([np.asarray(cos)] * 2, -1)
    got_sin = np.concatenate([np.asarray(sin)] * 2, -1)
    np.testing.assert_allclose(got_cos, want_cos.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_sin, want_sin.numpy(), rtol=0, atol=1e-6)


def test_decoder_matches_the_qwen2_5_vl_text_model_on_3_row_positions(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  hf, Qwen2_5_VLTextConfig = _qwen25_vl()
  torch.manual_seed(0)
  ref = hf.Qwen2_5_VLTextModel(_text_config(Qwen2_5_VLTextConfig, CFG.to_hf_dict())).eval()
  with torch.no_grad():
    for name, p in ref.named_parameters():
      if "norm" in name or "bias" in name:
        p.add_(0.2 * torch.randn_like(p))
  # The text model's tensors under a causal-LM checkpoint's names (tied head: no lm_head).
  path = str(tmp_path / "m")
  os.makedirs(path)
  save_file({f"model.{k}": v.numpy() for k, v in ref.state_dict().items()},
            os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(CFG.to_hf_dict(), f)
  ours, _ = models.from_pretrained(path, tokenizer=False)
  assert ours.config.mrope_section == SECTION
  tokens = np.random.default_rng(2).integers(0, 128, (2, 9))
  pos = _positions_pbt(seed=4)
  with torch.no_grad():
    want = ref(torch.tensor(tokens), position_ids=torch.tensor(pos, dtype=torch.long))
  h, _ = ours.hidden(jnp.asarray(tokens), positions_bt=jnp.asarray(pos))
  np.testing.assert_allclose(np.asarray(h), want.last_hidden_state.numpy(), atol=1e-4,
                             rtol=1e-4)
