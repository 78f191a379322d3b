"""The looped model's own properties: every injection / norm / initial-state variant runs with
the documented shapes and its states captured inside jit equal a Python-loop forward, cached
decoding equals a full forward, the core is one shared pytree, the trip count is a call
option, and bad configs fail clearly."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab.core.errors import ConfigError
from jaxlab.llm import sampling
from jaxlab.models.decoder.modeling import positions_from_mask, rope_cos_sin
from jaxlab.models.errors import ModelConfigError
from jaxlab.models.looped import config as config_lib
from jaxlab.models.looped import modeling
from jaxlab.models.looped.config import LoopedConfig, LoopedConfigError
from jaxlab.models.paths import path_str
from tests.models.looped.conftest import padded_batch

V, D = 64, 32
BASE = dict(vocab_size=V, hidden_size=D, intermediate_size=48, num_heads=4, num_kv_heads=2,
            head_dim=8, n_prelude=1, n_core=2, n_coda=1, num_iterations=3)
HUGINN = config_lib.huginn_like(V, hidden_size=D, num_heads=4, n_core=2, num_iterations=3)
HRM = LoopedConfig(vocab_size=V, hidden_size=D, intermediate_size=48, num_heads=4,
                   num_kv_heads=4, head_dim=8, n_core=2, inner_layers=2, inner_iterations=2,
                   num_iterations=2, injection="add", block_norm="pre", iter_norm="rmsnorm",
                   norm_weights=False, attn_output_gate=True, state_init="copy_e",
                   embedding_scale=4.0, final_norm=False, architecture="HrmTextForCausalLM")
OURO = LoopedConfig(**{**BASE, "n_prelude": 0, "n_coda": 0, "injection": "none",
                       "block_norm": "pre_post_ouro", "iter_norm": "rmsnorm",
                       "state_init": "copy_e"})


def _perturbed(config, seed=0):
  """A random model, drawn with numpy (cheap on CPU): weights normal(0, 0.1), norm scales and
  biases and HRM's inner initial state away from 1 / 0 so that a skipped one cannot hide."""
  rng = np.random.default_rng(seed)
  graphdef, abstract = nnx.split(modeling.abstract_looped(config))

  def draw(kp, x):
    name = jax.tree_util.keystr(kp)
    base = 1.0 if "scale" in name else 0.0
    std = 0.3 if any(s in name for s in ("scale", "bias", "inner_init")) else 0.1
    return jnp.asarray(base + std * rng.standard_normal(x.shape), x.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, abstract))


VARIANTS = {
    "huginn": HUGINN,
    "hrm": HRM,
    "ouro": OURO,
    "pre_add_zeros": LoopedConfig(**BASE, injection="add", state_init="zeros"),
    "post_gated": LoopedConfig(**BASE, injection="gated", block_norm="post",
                               state_init="trunc_normal", state_init_std=0.5),
    "pre_iternorm_none": LoopedConfig(**BASE, injection="none", iter_norm="rmsnorm",
                                      state_init="copy_e"),
    "sandwich_concat_inner": LoopedConfig(**BASE, injection="concat_adapter",
                                          block_norm="sandwich_huginn", inner_layers=1,
                                          inner_iterations=2),
}


def _python_loop(model, tokens, mask):
  """Logits and per-(iteration, slot) states by calling each block in Python loops (jitted as
  a whole: the loops are unrolled into one program, no ``lax.scan``)."""
  graphdef, state = nnx.split(model)
  return jax.jit(lambda st, tk, mk: _unrolled(nnx.merge(graphdef, st), tk, mk))(
      state, jnp.asarray(tokens), jnp.asarray(mask))


def _unrolled(m, tokens, mask, key=None):
  c = m.config
  mask = jnp.asarray(mask, bool)
  t = tokens.shape[1]
  pos = positions_from_mask(mask)
  cos, sin = rope_cos_sin(c.block_config, pos)
  allowed = jnp.tril(jnp.ones((t, t), bool))[None] & mask[:, None, :]
  call = lambda blk, x: blk(x, cos, sin, allowed, None, None, None)[0]
  x = m.embed(jnp.asarray(tokens)) * c.embedding_scale
  for blk in m.prelude:
    x = call(blk, x)
  e = x
  s = m.initial_state(e, pos, key)
  z = jnp.zeros_like(e) + (m.inner_init_d[...] if m.inner_init_d is not None else 0)
  slots, iterates = [], []
  for _ in range(c.num_iterations):
    row = []
    source = e
    if c.inner_layers:
      for _ in range(c.inner_iterations):
        h = z + s
        for blk in m.inner:
          h = call(blk, h)
          row.append(h)
        z = m.inner_norm(h) if m.inner_norm is not None else h
      source = z
    h = m.inject(s, source)
    for blk in m.core:
      h = call(blk, h)
      row.append(h)
    s = m.iter_norm(h) if m.iter_norm is not None else h
    slots.append(jnp.stack(row))
    iterates.append(s)
  h = m.final_norm(s) if c.coda_norm else s
  for blk in m.coda:
    h = call(blk, h)
  if m.final_norm is not None:
    h = m.final_norm(h)
  return m.logits(h), jnp.stack(slots), jnp.stack(iterates)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_shapes_and_states_captured_in_jit_equal_python_loop(name):
  c = VARIANTS[name]
  m = _perturbed(c)
  tokens, mask, _ = padded_batch(vocab=V)
  b, t = tokens.shape
  graphdef, state = nnx.split(m)

  @jax.jit
  def run(state, tokens, mask):
    return nnx.merge(graphdef, state)(tokens, mask, return_states=True)

  logits, cache, states = run(state, jnp.asarray(tokens), jnp.asarray(mask))
  chex.assert_shape(logits, (b, t, V))
  assert cache is None
  j = c.inner_layers * c.inner_iterations + c.n_core
  chex.assert_shape(states.prelude, (c.n_prelude + 1, b, t, D))
  chex.assert_shape(states.core, (c.num_iterations, j, b, t, D))
  chex.assert_shape(states.iterates, (c.num_iterations, b, t, D))
  chex.assert_shape(states.coda, (c.n_coda, b, t, D))
  chex.assert_tree_all_finite((logits, states))
  # The iterate is the last slot, after the per-iteration norm when there is one.
  last = states.core[:, -1]
  if c.iter_norm == "none":
    np.testing.assert_allclose(states.iterates, last, rtol=1e-6)
  else:
    rms = np.sqrt(np.mean(np.square(np.asarray(states.iterates)), -1))
    if not c.norm_weights:
      np.testing.assert_allclose(rms, 1.0, rtol=1e-3)
  # Iterations actually change the state.
  assert np.abs(np.asarray(states.iterates[0] - states.iterates[-1])).max() > 1e-3

  want_logits, want_slots, want_iter = _python_loop(m, tokens, mask)
  mk = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(states.core)[:, :, mk], np.asarray(want_slots)[:, :, mk],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(states.iterates)[:, mk], np.asarray(want_iter)[:, mk],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(logits)[mk], np.asarray(want_logits)[mk],
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["huginn", "hrm"])
def test_cached_decoding_equals_full_forward_at_every_step(name):
  m = _perturbed(VARIANTS[name])
  tokens, mask, _ = padded_batch(seed=5, vocab=V, lengths=(5, 2, 4))
  b, p = tokens.shape
  n = 6
  new = np.random.default_rng(0).integers(3, V, size=(b, n))
  cache = m.init_cache(b, p + n)
  chex.assert_shape(cache.core_k, (m.config.num_iterations, m.config.slots_per_iteration, b,
                                   m.config.num_kv_heads, p + n, m.config.head_dim))
  logits, cache = sampling.forward_with_cache(m, tokens, mask, cache)
  got = [np.asarray(logits)[:, -1]]
  for i in range(n):
    logits, cache = sampling.forward_with_cache(m, new[:, i:i + 1], np.ones((b, 1), bool), cache)
    got.append(np.asarray(logits)[:, -1])
  # The model is causal: the full forward's logits at column p - 1 + i are those of a full
  # recompute of the first p + i tokens.
  full = modeling.forward(m, np.concatenate([tokens, new], 1),
                          np.concatenate([mask, np.ones((b, n), bool)], 1))
  for i, g in enumerate(got):
    np.testing.assert_allclose(g, np.asarray(full)[:, p - 1 + i], rtol=1e-5, atol=1e-5,
                               err_msg=f"step {i}")


def test_trunc_normal_initial_state_is_deterministic_and_clipped():
  m = _perturbed(HUGINN)
  e = jnp.zeros((2, 5, D))
  pos = jnp.tile(jnp.arange(5), (2, 1))
  s1 = np.asarray(m.initial_state(e, pos, jax.random.key(3)))
  s2 = np.asarray(m.initial_state(e, pos, jax.random.key(3)))
  s3 = np.asarray(m.initial_state(e, pos, jax.random.key(4)))
  np.testing.assert_array_equal(s1, s2)
  assert np.abs(s1 - s3).max() > 0
  std = HUGINN.state_init_std
  assert np.abs(s1).max() <= 3 * std + 1e-7
  np.testing.assert_array_equal(s1[0], s1[1])  # a function of (key, position) only
  tokens, mask, _ = padded_batch(vocab=V)
  a = modeling.forward(m, tokens, mask, key=jax.random.key(3))
  b = modeling.forward(m, tokens, mask, key=jax.random.key(4))
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 0


def test_trip_count_is_a_call_option():
  m = _perturbed(OURO)
  tokens, mask, _ = padded_batch(vocab=V)
  _, _, st = m(jnp.asarray(tokens), jnp.asarray(mask), return_states=True, num_iterations=5)
  chex.assert_shape(st.core, (5, OURO.n_core) + tokens.shape + (D,))
  # Running 2 then reading iterate 2 of a 5-step run: the recurrence is the same prefix.
  _, _, st2 = m(jnp.asarray(tokens), jnp.asarray(mask), return_states=True, num_iterations=2)
  np.testing.assert_allclose(st2.iterates, st.iterates[:2], rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="cache was built for 3 iterations"):
    m(jnp.asarray(tokens), jnp.asarray(mask), cache=m.init_cache(4, 16), num_iterations=2)


def test_core_gradient_sums_over_iterations():
  """The core is one pytree used T times: d loss / d W_core at T = 2 equals the sum of the
  gradients of two separate copies of W_core, one used per iteration."""
  c = LoopedConfig(**{**BASE, "num_iterations": 2, "n_prelude": 0, "n_coda": 0})
  m = _perturbed(c)
  tokens, mask, _ = padded_batch(vocab=V)
  tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
  graphdef, state = nnx.split(m)
  w0 = m.core[0].mlp.up_df[...]

  def loss_two_copies(w_a, w_b):
    copies = []
    for w in (w_a, w_b):
      st = jax.tree_util.tree_map_with_path(
          lambda kp, x, w=w: w if path_str(kp) == "core/0/mlp/up_df" else x, state)
      copies.append(nnx.merge(graphdef, st))
    pos = positions_from_mask(mask)
    cos, sin = rope_cos_sin(c.block_config, pos)
    t = tokens.shape[1]
    allowed = jnp.tril(jnp.ones((t, t), bool))[None] & mask[:, None, :]
    e = m.embed(tokens) * c.embedding_scale
    s = m.initial_state(e, pos)
    for mc in copies:
      h = mc.inject(s, e)
      for blk in mc.core:
        h = blk(h, cos, sin, allowed, None, None, None)[0]
      s = h
    return jnp.sum(m.logits(m.final_norm(s)) ** 2 * mask[..., None])

  ga, gb = jax.jit(jax.grad(loss_two_copies, argnums=(0, 1)))(w0, w0)

  def loss_shared(model):
    logits, _ = model(tokens, mask)
    return jnp.sum(logits ** 2 * mask[..., None])

  g = nnx.jit(nnx.grad(loss_shared))(m)
  want = np.asarray(ga + gb)
  np.testing.assert_allclose(g.core[0].mlp.up_df[...], want, rtol=1e-4,
                             atol=1e-5 * np.abs(want).max())
  assert np.abs(np.asarray(ga)).max() > 0 and np.abs(np.asarray(gb)).max() > 0
  assert np.abs(np.asarray(ga - gb)).max() > 0


@pytest.mark.parametrize("change, key", [
    (dict(num_iterations=0), "num_iterations"),
    (dict(injection="concat"), "injection"),
    (dict(block_norm="sandwich"), "block_norm"),
    (dict(iter_norm="layernorm"), "iter_norm"),
    (dict(state_init="random"), "state_init"),
    (dict(injection="none", state_init="trunc_normal"), "state_init"),  # blind to its prompt
    (dict(inner_layers=1, inner_iterations=0), "inner_iterations"),
    (dict(num_kv_heads=3), "num_kv_heads"),
])
def test_bad_config_names_the_key(change, key):
  with pytest.raises(LoopedConfigError, match=f"^looped config: {key}=") as info:
    LoopedConfig(**{**BASE, **change})
  assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
  assert "\n" not in str(info.value)


def test_non_hrm_layout_cannot_be_saved_as_hrm_text():
  with pytest.raises(LoopedConfigError, match="n_prelude=1"):
    HUGINN.to_hf_dict()
  assert HRM.to_hf_dict()["H_cycles"] == 2


def test_bad_hrm_config_json_names_file_and_field():
  d = HRM.to_hf_dict()
  with pytest.raises(ModelConfigError, match="cfg.json: missing required field 'hidden_size'"):
    LoopedConfig.from_hf_dict({k: v for k, v in d.items() if k != "hidden_size"}, "cfg.json")
  with pytest.raises(ModelConfigError, match="mlp_bias"):
    LoopedConfig.from_hf_dict({**d, "mlp_bias": True}, "cfg.json")
  with pytest.raises(ModelConfigError, match="H_cycles|num_iterations"):
    LoopedConfig.from_hf_dict({**d, "H_cycles": 0}, "cfg.json")
