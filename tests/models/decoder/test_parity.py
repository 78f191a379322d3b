"""Logit parity with transformers' PyTorch models on left-padded batches, RoPE frequencies,
bfloat16 and remat. Checkpoints are loaded through the registry, as a user would."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import models
from jaxlab.models.decoder import modeling, params
from jaxlab.models.decoder.config import DecoderConfig
from tests.models.decoder.tiny_hf import MODELS, left_padded_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_match_transformers(hf_dirs, name):
  ref, path = hf_dirs[name]
  assert models.family_for(path) == "decoder"
  model, _ = models.from_pretrained(path, tokenizer=False)
  assert isinstance(model, modeling.Decoder)
  tokens, mask, positions = left_padded_batch()
  with torch.no_grad():
    want = ref(torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
               position_ids=torch.tensor(positions)).logits.numpy()
  got = np.asarray(modeling.forward(model, jnp.asarray(tokens), jnp.asarray(mask)))
  assert got.dtype == np.float32
  # Pad positions are garbage on both sides: compare real tokens only.
  np.testing.assert_allclose(got[mask], want[mask], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["llama3", "llama_linear", "qwen3_untied"])
def test_rope_frequencies_match_transformers(hf_dirs, name):
  ref, path = hf_dirs[name]
  config = params.load_config(path)
  want = ref.model.rotary_emb.inv_freq.numpy()
  np.testing.assert_allclose(modeling.rope_inv_freq(config), want, rtol=1e-6)


def test_llama3_rope_frequencies_all_three_bands():
  # Real Llama 3.1 numbers, so that every band (kept, ramped, divided) is populated.
  hf = transformers.LlamaConfig(
      hidden_size=4096, num_attention_heads=32, rope_theta=500_000.0,
      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
  want, _ = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
  cfg = DecoderConfig.from_hf_dict({**hf.to_dict(), "architectures": ["LlamaForCausalLM"]})
  got = modeling.rope_inv_freq(cfg)
  base = 1.0 / 500_000.0 ** (np.arange(0, 128, 2) / 128)
  ratio = got / base
  assert (np.isclose(ratio, 1.0, rtol=1e-5)).any() and (np.isclose(ratio, 1 / 8, rtol=1e-5)).any()
  assert ((ratio < 0.99) & (ratio > 0.13)).any()  # the smooth ramp
  np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)


def test_bfloat16_close_to_float32(hf_dirs):
  _, path = hf_dirs["qwen3_untied"]
  m32, _ = models.from_pretrained(path, tokenizer=False)
  m16, _ = models.from_pretrained(path, dtype=jnp.bfloat16, tokenizer=False)
  assert m16.layers[0].mlp.gate_df[...].dtype == jnp.bfloat16
  tokens, mask, _ = left_padded_batch()
  l32 = np.asarray(modeling.forward(m32, tokens, mask))
  l16 = modeling.forward(m16, tokens, mask)
  assert l16.dtype == jnp.float32  # logits are float32 whatever the compute dtype
  err = np.abs(np.asarray(l16) - l32)[mask].max()
  assert err < 0.05 * np.abs(l32[mask]).max()


def test_remat_gives_same_loss_and_gradients(hf_dirs):
  from flax import nnx
  _, path = hf_dirs["qwen2"]
  plain, _ = models.from_pretrained(path, tokenizer=False)
  remat, _ = models.from_pretrained(path, tokenizer=False, remat=True)
  tokens, mask, _ = left_padded_batch()

  def loss(model):
    logits, _ = model(jnp.asarray(tokens), jnp.asarray(mask))
    lp = jax.nn.log_softmax(logits[:, :-1])
    nll = -jnp.take_along_axis(lp, jnp.asarray(tokens)[:, 1:, None], -1)[..., 0]
    return jnp.sum(nll * mask[:, 1:]) / mask[:, 1:].sum()

  def has_remat(model):
    graphdef, state = nnx.split(model)
    jaxpr = jax.make_jaxpr(jax.grad(lambda s: loss(nnx.merge(graphdef, s))))(state)
    return "remat" in str(jaxpr) or "checkpoint" in str(jaxpr)

  assert has_remat(remat) and not has_remat(plain)
  grad_fn = nnx.jit(nnx.value_and_grad(loss))
  l1, g1 = grad_fn(plain)
  l2, g2 = grad_fn(remat)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g1, g2)
