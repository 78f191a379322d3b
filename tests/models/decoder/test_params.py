"""Loading and saving HF checkpoints: bit-exact round trips, sharded files, clear errors."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from jaxlab.models.decoder import modeling, params
from jaxlab.models.decoder.config import DecoderConfig
from jaxlab.models.errors import ModelConfigError
from tests.models.decoder.tiny_hf import build_hf_model, left_padded_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _tensors(path):
  """All tensors of a model dir, single-file or sharded, as name -> array."""
  files, _ = params.weight_files(path)
  out = {}
  for f in sorted(set(files.values())):
    with safe_open(f, framework="numpy") as h:
      out.update({k: h.get_tensor(k) for k in h.keys()})
  return out


@pytest.mark.parametrize("name", ["llama3", "qwen2", "qwen3_tied", "qwen3_untied"])
def test_save_pretrained_round_trip_is_bit_exact(hf_dirs, tmp_path, name):
  _, path = hf_dirs[name]
  model, tok = params.from_pretrained(path)
  out = str(tmp_path / "saved")
  params.save_pretrained(model, out, tokenizer=tok)
  want, got = _tensors(path), _tensors(out)
  assert set(got) == set(want)
  for k in want:
    assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
    assert got[k].tobytes() == want[k].tobytes(), k
  # The saved config describes the same model, and the tokenizer came along.
  assert params.load_config(out) == params.load_config(path)
  again, tok2 = params.from_pretrained(out)
  assert tok2("abc")["input_ids"] == tok("abc")["input_ids"]


def test_transformers_loads_our_save(hf_dirs, tmp_path):
  ref, path = hf_dirs["llama3"]
  model, _ = params.from_pretrained(path, tokenizer=False)
  params.save_pretrained(model, str(tmp_path))
  back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  tokens, mask, positions = left_padded_batch()
  with torch.no_grad():
    args = dict(attention_mask=torch.tensor(mask.astype(np.int64)),
                position_ids=torch.tensor(positions))
    a = ref(torch.tensor(tokens), **args).logits.numpy()
    b = back(torch.tensor(tokens), **args).logits.numpy()
  np.testing.assert_array_equal(a[mask], b[mask])


def test_sharded_checkpoints_load_and_save(hf_dirs, tmp_path):
  ref, path = hf_dirs["qwen3_untied"]
  hf_sharded = str(tmp_path / "hf_sharded")
  ref.save_pretrained(hf_sharded, max_shard_size="40KB")
  assert os.path.isfile(os.path.join(hf_sharded, params.INDEX_FILE))
  a, _ = params.from_pretrained(path, tokenizer=False)
  b, _ = params.from_pretrained(hf_sharded, tokenizer=False)
  tokens, mask, _ = left_padded_batch()
  np.testing.assert_array_equal(np.asarray(modeling.forward(a, tokens, mask)),
                                np.asarray(modeling.forward(b, tokens, mask)))
  ours_sharded = str(tmp_path / "ours_sharded")
  params.save_pretrained(b, ours_sharded, max_shard_bytes=50_000)
  names = os.listdir(ours_sharded)
  assert params.INDEX_FILE in names and params.SINGLE_FILE not in names
  assert sum(n.startswith("model-0") for n in names) > 1
  want, got = _tensors(path), _tensors(ours_sharded)
  assert set(got) == set(want)
  assert all(got[k].tobytes() == want[k].tobytes() for k in want)


def test_bfloat16_checkpoint_round_trip(tmp_path):
  ref = build_hf_model("qwen2").to(torch.bfloat16)
  src = str(tmp_path / "src")
  ref.save_pretrained(src)
  model, _ = params.from_pretrained(src, dtype=jnp.bfloat16, tokenizer=False)
  params.save_pretrained(model, str(tmp_path / "out"))
  want, got = _tensors(src), _tensors(str(tmp_path / "out"))
  assert set(got) == set(want)
  assert all(got[k].tobytes() == want[k].tobytes() and got[k].dtype == want[k].dtype
             for k in want)


# -- bad input -----------------------------------------------------------------------------------


def _copy(src, dst):
  shutil.copytree(src, dst)
  return str(dst)


def _edit_config(path, **changes):
  cfg_path = os.path.join(path, "config.json")
  with open(cfg_path) as f:
    d = json.load(f)
  for k, v in changes.items():
    if v is None:
      d.pop(k, None)
    else:
      d[k] = v
  with open(cfg_path, "w") as f:
    json.dump(d, f)
  return cfg_path


def test_missing_config_field_names_file_and_field(hf_dirs, tmp_path):
  path = _copy(hf_dirs["qwen2"][1], tmp_path / "m")
  cfg_path = _edit_config(path, hidden_size=None)
  with pytest.raises(ValueError) as e:
    params.from_pretrained(path)
  msg = str(e.value)
  assert cfg_path in msg and "'hidden_size'" in msg and "\n" not in msg


def test_unsupported_architecture_names_it_and_supported_list(hf_dirs, tmp_path):
  path = _copy(hf_dirs["qwen2"][1], tmp_path / "m")
  cfg_path = _edit_config(path, architectures=["MistralForCausalLM"])
  with pytest.raises(ValueError) as e:
    params.from_pretrained(path)
  msg = str(e.value)
  assert cfg_path in msg and "MistralForCausalLM" in msg and "Qwen3ForCausalLM" in msg
  assert "\n" not in msg


def test_unsupported_rope_type(hf_dirs, tmp_path):
  path = _copy(hf_dirs["qwen2"][1], tmp_path / "m")
  cfg_path = _edit_config(path, rope_parameters={"rope_type": "yarn", "factor": 2.0,
                                                 "rope_theta": 1e4})
  with pytest.raises(ModelConfigError, match="yarn"):
    params.load_config(path)
  assert cfg_path


def test_missing_tensor_names_file_and_tensor(hf_dirs, tmp_path):
  path = _copy(hf_dirs["llama3"][1], tmp_path / "m")
  f = os.path.join(path, "model.safetensors")
  tensors = load_file(f)
  del tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, f, metadata={"format": "pt"})
  with pytest.raises(ValueError) as e:
    params.from_pretrained(path, tokenizer=False)
  msg = str(e.value)
  assert f in msg and "model.layers.1.mlp.up_proj.weight" in msg and "[96, 64]" in msg


def test_wrong_shape_names_file_tensor_and_shapes(hf_dirs, tmp_path):
  path = _copy(hf_dirs["qwen3_untied"][1], tmp_path / "m")
  f = os.path.join(path, "model.safetensors")
  tensors = load_file(f)
  tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 64), np.float32)
  save_file(tensors, f, metadata={"format": "pt"})
  with pytest.raises(ValueError) as e:
    params.from_pretrained(path, tokenizer=False)
  msg = str(e.value)
  assert f in msg and "model.layers.0.self_attn.k_proj.weight" in msg
  assert "[8, 64]" in msg and "[16, 64]" in msg and "\n" not in msg


def test_missing_weights_and_config_files(hf_dirs, tmp_path):
  path = _copy(hf_dirs["qwen2"][1], tmp_path / "m")
  os.remove(os.path.join(path, "model.safetensors"))
  with pytest.raises(ValueError, match="model.safetensors"):
    params.from_pretrained(path, tokenizer=False)
  os.remove(os.path.join(path, "config.json"))
  with pytest.raises(ValueError, match="config.json"):
    params.from_pretrained(path, tokenizer=False)
  with pytest.raises(ValueError, match="does not exist"):
    params.from_pretrained(str(tmp_path / "nowhere"))


def test_missing_tokenizer_is_clear_and_skippable(hf_dirs, tmp_path):
  src = hf_dirs["qwen2"][1]
  path = tmp_path / "m"
  path.mkdir()
  for n in ("config.json", "model.safetensors"):
    shutil.copy(os.path.join(src, n), path / n)
  with pytest.raises(ValueError) as e:
    params.from_pretrained(str(path))
  assert str(path) in str(e.value) and "tokenizer" in str(e.value)
  model, tok = params.from_pretrained(str(path), tokenizer=False)
  assert tok is None and model.config.architecture == "Qwen2ForCausalLM"


# -- config mapping ------------------------------------------------------------------------------


def test_config_reads_v4_spelling_and_qwen_defaults():
  d = {"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 64,
       "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
       "num_key_value_heads": 2, "rope_theta": 5e5,
       "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}
  c = DecoderConfig.from_hf_dict(d, "x/config.json")
  assert c.rope_theta == 5e5 and c.rope_scaling.rope_type == "llama3" and c.head_dim == 16
  assert DecoderConfig.from_hf_dict(c.to_hf_dict()) == c
  q3 = DecoderConfig.from_hf_dict({**d, "architectures": ["Qwen3ForCausalLM"],
                                   "rope_scaling": None})
  assert q3.head_dim == 128 and q3.qk_norm  # Qwen3Config's default head_dim
  q2 = DecoderConfig.from_hf_dict({**d, "architectures": ["Qwen2ForCausalLM"]})
  assert q2.attention_bias and not q2.attention_out_bias
  with pytest.raises(ValueError, match="mlp_bias"):
    DecoderConfig.from_hf_dict({**d, "mlp_bias": True}, "x/config.json")
