"""Tiny random Hugging Face models saved to disk, shared by the decoder and LLM tests.

The conftest of each test folder that needs them imports the fixtures from here
(``from tests.models.decoder.tiny_hf import hf_dirs, exact_float32_matmuls``).

Each is built with transformers' own config and model classes (PyTorch, CPU) and written with
``save_pretrained``: exactly the directory layout a user's real checkpoint has. Norm scales and
biases are perturbed away from their 1/0 initialisation so that a mapping bug cannot hide
behind an identity.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
  import torch  # the PyTorch reference (the "dev" extra)
  import transformers
except ImportError:  # e.g. a GPU host without torch: the tests that need it skip
  torch = transformers = None

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)

# name -> (config class name, extra kwargs)
MODELS = {
    "llama3": ("LlamaConfig", dict(
        rope_theta=500_000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "llama_linear": ("LlamaConfig", dict(
        rope_scaling={"rope_type": "linear", "factor": 4.0}, attention_bias=True)),
    "qwen2": ("Qwen2Config", dict(tie_word_embeddings=True)),
    "qwen3_tied": ("Qwen3Config", dict(head_dim=32, tie_word_embeddings=True)),
    "qwen3_untied": ("Qwen3Config", dict(head_dim=8, tie_word_embeddings=False)),
}


def build_hf_model(name: str, seed: int = 0, **overrides):
  if torch is None:
    pytest.skip("needs torch + transformers (pip install -e '.[dev]')")
  config_name, extra = MODELS[name]
  torch.manual_seed(seed)
  config = getattr(transformers, config_name)(**{**TINY, **extra, **overrides})
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():
    for pname, p in model.named_parameters():
      if "norm" in pname or "bias" in pname:
        p.add_(0.2 * torch.randn_like(p))
  return model


def write_char_tokenizer(path):
  from jaxlab.models.tokenizer import train_char_tokenizer
  # Ids must fit the tiny vocab (128): specials + printable ASCII.
  return train_char_tokenizer([''.join(chr(c) for c in range(32, 127))], path)


def save_reference_dirs(tmp_path_factory, names, build):
  """name -> (torch model ``build(name)``, a directory holding its save_pretrained output and
  a char tokenizer)."""
  out = {}
  for name in names:
    path = str(tmp_path_factory.mktemp(name))
    model = build(name)
    model.save_pretrained(path)
    write_char_tokenizer(path)
    out[name] = (model, path)
  return out


def save_tiny_char_decoder(path, alphabet):
  """A random 1-layer Qwen3-style decoder over a char tokenizer of ``alphabet``, saved as a
  model directory (config, safetensors, tokenizer); returns ``path``."""
  from jaxlab.models import tokenizer as tok_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.models.decoder import config, modeling, params  # pylint: disable=import-outside-toplevel
  tok = tok_lib.train_char_tokenizer([alphabet], None)
  cfg = config.DecoderConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                             num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                             architecture="Qwen3ForCausalLM", qk_norm=True,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
  params.save_pretrained(modeling.init_decoder(cfg, seed=0), path, tokenizer=tok)
  return path


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory):
  """name -> (torch model, directory holding its save_pretrained output + a tokenizer)."""
  return save_reference_dirs(tmp_path_factory, MODELS, build_hf_model)


def left_padded_batch(seed: int = 0, vocab: int = 128, lengths=(12, 7, 1, 10)):
  """A LEFT-padded ``(tokens_bt, mask_bt, positions_bt)`` batch of prompts (ids >= 3)."""
  rng = np.random.default_rng(seed)
  t = max(lengths)
  tokens = np.zeros((len(lengths), t), np.int64)
  mask = np.zeros((len(lengths), t), bool)
  for i, n in enumerate(lengths):
    tokens[i, t - n:] = rng.integers(3, vocab, size=n)
    mask[i, t - n:] = True
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  return tokens, mask, positions


@pytest.fixture(autouse=True)
def exact_float32_matmuls():
  """Full float32 matmuls for parity checks: on GPUs XLA's default f32 dot uses TF32 (~1e-3
  relative error), which is the right speed trade for training but not for a 1e-4 comparison.
  A no-op on CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  with jax.default_matmul_precision("highest"):
    yield
