"""Fixtures of the looped-family tests: tiny random HrmText checkpoints from transformers."""

import pytest

from tests.models.decoder.tiny_hf import left_padded_batch, save_reference_dirs

try:
  import torch  # the PyTorch reference (the "dev" extra)
  import transformers
except ImportError:
  torch = transformers = None

# Two blocks per stack, 2 high-level x 2 low-level cycles: 12 attention calls per token.
TINY_HRM = dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, head_dim=8, H_cycles=2, L_cycles=2,
                max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)

VARIANTS = {
    "hrm": {},
    "hrm_bias_tied": dict(attention_bias=True, tie_word_embeddings=True, H_cycles=3,
                          L_cycles=1, embedding_scale=3.0),
}


def build_hrm(name: str, seed: int = 0):
  if torch is None:
    pytest.skip("needs torch + transformers (pip install -e '.[dev]')")
  torch.manual_seed(seed)
  config = transformers.HrmTextConfig(**{**TINY_HRM, **VARIANTS[name]})
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():
    # A nonzero low-level initial state and biases, so a mapping bug cannot hide behind 0.
    model.model.z_L_init.add_(0.5 * torch.randn_like(model.model.z_L_init))
    for pname, p in model.named_parameters():
      if "bias" in pname:
        p.add_(0.2 * torch.randn_like(p))
  return model


@pytest.fixture(scope="session")
def hrm_dirs(tmp_path_factory):
  """name -> (torch model, directory with its save_pretrained output + a char tokenizer)."""
  return save_reference_dirs(tmp_path_factory, VARIANTS, build_hrm)


def padded_batch(seed: int = 0, vocab: int = 128, lengths=(9, 5, 1, 7)):
  """A LEFT-padded ``(tokens_bt, mask_bt, positions_bt)`` batch (ids >= 3), shorter than the
  decoder tests' default."""
  return left_padded_batch(seed, vocab, lengths)
