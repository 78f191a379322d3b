"""Training and inference modes of the looped model: truncated backprop through the last k
iterations, Huginn's sampled recurrence, the convergence-based early exit, Ouro's exit rules,
and the config checks of those options."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab.models.decoder.modeling import positions_from_mask, rope_cos_sin
from jaxlab.models.looped import config as config_lib
from jaxlab.models.looped import modeling
from jaxlab.models.looped.config import LoopedConfig, LoopedConfigError
from jaxlab.models.paths import path_str
from tests.models.looped.conftest import padded_batch
from tests.models.looped.test_looped import BASE, D, V, _perturbed

HUGINN = config_lib.huginn_like(V, hidden_size=D, num_heads=4, n_core=1, num_iterations=4,
                                backprop_depth=3, train_recurrence="lognormal_poisson",
                                intermediate_size=48)
# The prelude reaches the recurrence only through s_0 = e (no injection): with a truncation
# window shorter than the trip count, nothing upstream of the recurrence gets a gradient.
NO_INJECTION = LoopedConfig(**{**BASE, "n_core": 1, "num_iterations": 3, "injection": "none",
                               "state_init": "copy_e", "iter_norm": "rmsnorm"})


def _batch():
  tokens, mask, _ = padded_batch(vocab=V, lengths=(7, 4, 6))
  return jnp.asarray(tokens), jnp.asarray(mask)


def _loss(model, tokens, mask, **kw):
  logits, _ = model(tokens, mask, **kw)
  lp = jax.nn.log_softmax(logits[:, :-1])
  nll = -jnp.take_along_axis(lp, tokens[:, 1:, None], -1)[..., 0]
  w = mask[:, 1:] & mask[:, :-1]
  return jnp.sum(nll * w) / jnp.sum(w)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("num_iterations",
                                                                   "grad_iterations"))
def _loss_and_grad(graphdef, state, tokens, mask, num_iterations=None, grad_iterations=None):
  f = lambda st: _loss(nnx.merge(graphdef, st), tokens, mask, num_iterations=num_iterations,
                       grad_iterations=grad_iterations)
  return jax.value_and_grad(f)(state)


def _grads(model, with_loss=False, **kw):
  """Loss gradients by parameter path (one compiled program per graph and trip count, shared
  by the tests)."""
  tokens, mask = _batch()
  graphdef, state = nnx.split(model)
  loss, g = _loss_and_grad(graphdef, state, tokens, mask, **kw)
  g = {path_str(kp): np.asarray(x) for kp, x in jax.tree_util.tree_leaves_with_path(g)}
  return (float(loss), g) if with_loss else g


def test_truncation_zeroes_gradients_before_the_window_and_is_full_backprop_when_k_ge_t():
  m = _perturbed(NO_INJECTION)
  full = _grads(m)
  g = _grads(m, grad_iterations=2)
  upstream = [p for p in g if p.startswith(("prelude/", "embedding_vd"))]
  assert upstream and all(not np.any(g[p]) for p in upstream)
  assert all(np.abs(g[p]).max() > 0 for p in g if p.startswith("core/"))
  assert any(np.abs(g[p] - full[p]).max() > 1e-6 for p in g if p.startswith("core/"))
  g = _grads(m, grad_iterations=NO_INJECTION.num_iterations)
  for p in full:
    np.testing.assert_array_equal(g[p], full[p], err_msg=p)
  assert any(np.abs(full[p]).max() > 0 for p in full if p.startswith("prelude/"))


def test_truncated_gradient_equals_restarting_from_a_constant_state():
  """With window k, the gradient equals that of k iterations started from the (numeric) state
  after T - k iterations; the prelude still gets gradients through e inside the window."""
  c = HUGINN
  m = _perturbed(c)
  tokens, mask = _batch()
  t_total, k = c.num_iterations, 2
  graphdef, state = nnx.split(m)
  iterates = jax.jit(lambda st: nnx.merge(graphdef, st)(tokens, mask, return_states=True)[2]
                     .iterates)(state)
  s_const = np.asarray(iterates[t_total - k - 1])
  pos = positions_from_mask(mask)
  cos, sin = rope_cos_sin(c.block_config, pos)
  t = tokens.shape[1]
  allowed = jnp.tril(jnp.ones((t, t), bool))[None] & mask[:, None, :]

  def restarted(st):
    model = nnx.merge(graphdef, st)
    e = model.embed(tokens) * c.embedding_scale
    for blk in model.prelude:
      e = blk(e, cos, sin, allowed, None, None, None)[0]
    s = jnp.asarray(s_const)
    for _ in range(k):
      s = model._iteration(s, e * 0, e, cos, sin, allowed, None, None, None)[0]
    logits = model.logits(model.readout(s, cos, sin, allowed))
    lp = jax.nn.log_softmax(logits[:, :-1])
    nll = -jnp.take_along_axis(lp, tokens[:, 1:, None], -1)[..., 0]
    w = mask[:, 1:] & mask[:, :-1]
    return jnp.sum(nll * w) / jnp.sum(w)

  want = {path_str(kp): np.asarray(g) for kp, g in
          jax.tree_util.tree_leaves_with_path(jax.jit(jax.grad(restarted))(state))}
  got = _grads(m, grad_iterations=k)
  assert np.abs(got["prelude/0/mlp/up_df"]).max() > 0
  for p in want:
    scale = np.abs(want[p]).max() + 1e-12
    np.testing.assert_allclose(got[p] / scale, want[p] / scale, atol=2e-5, err_msg=p)


def test_sampled_recurrence_equals_the_static_trip_count():
  """``recurrence=(n_nograd, n_grad)`` (traced) gives the logits and gradients of a static
  ``n_nograd + n_grad`` run truncated to ``n_grad``, including n_grad < the window (masked)."""
  m = _perturbed(HUGINN)
  tokens, mask = _batch()
  graphdef, state = nnx.split(m)

  @jax.jit
  def sampled(state, n_nograd, n_grad):
    f = lambda st: _loss(nnx.merge(graphdef, st), tokens, mask, recurrence=(n_nograd, n_grad))
    return jax.value_and_grad(f)(state)

  for n_nograd, n_grad in ((2, 2), (1, 3)):  # a masked step; a full window
    loss, g = sampled(state, jnp.int32(n_nograd), jnp.int32(n_grad))
    want_loss, want = _grads(m, with_loss=True, num_iterations=n_nograd + n_grad,
                             grad_iterations=n_grad)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-6)
    for kp, x in jax.tree_util.tree_leaves_with_path(g):
      p = path_str(kp)
      scale = np.abs(want[p]).max() + 1e-12
      np.testing.assert_allclose(np.asarray(x) / scale, want[p] / scale, atol=2e-5,
                                 err_msg=f"{p} {(n_nograd, n_grad)}")


def test_recurrence_sampler_follows_the_lognormal_poisson_law():
  c = HUGINN.replace(num_iterations=8, backprop_depth=4)
  keys = jax.random.split(jax.random.key(0), 20_000)
  n_nograd, n_grad = jax.jit(jax.vmap(lambda k: modeling.sample_recurrence(k, c)))(keys)
  n_nograd, n_grad = np.asarray(n_nograd), np.asarray(n_grad)
  total = n_nograd + n_grad
  assert total.min() >= 1 and n_nograd.min() >= 0 and n_grad.max() <= 4
  np.testing.assert_array_equal(n_grad, np.minimum(total, 4))
  # E[1 + Poisson(tau)] = 1 + E[tau] = 1 + mean recurrence (8); std of the mean ~0.04.
  assert abs(total.mean() - 9.0) < 0.2, total.mean()
  assert total.std() > 4  # over-dispersed: a Poisson(8) alone has std 2.8
  fixed = modeling.sample_recurrence(None, c.replace(train_recurrence="fixed"))
  assert tuple(int(x) for x in fixed) == (4, 4)


def _contraction_model():
  """A model whose iteration map is a contraction: s' = core(0.1 s + e) with a weak core."""
  c = LoopedConfig(**{**BASE, "num_iterations": 3, "injection": "concat_adapter"})
  m = _perturbed(c, seed=3)
  graphdef, state = nnx.split(m)
  eye = np.eye(D, dtype=np.float32)

  def shrink(kp, x):
    p = path_str(kp)
    if p == "adapter_2dd":
      return jnp.asarray(np.concatenate([0.1 * eye, eye]))
    if p.startswith("core/") and "scale" not in p:
      return x * 0.3
    return x

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(shrink, state))


def test_convergence_exit_runs_the_full_count_at_zero_tol_and_stops_early_on_a_contraction():
  m = _contraction_model()
  tokens, mask = _batch()
  cap = 12
  graphdef, state = nnx.split(m)
  run = jax.jit(lambda st, tol: nnx.merge(graphdef, st).hidden_converged(
      tokens, mask, tol=tol, max_iterations=cap))

  @jax.jit
  def every_count(st):  # logits and iterates after 1..cap iterations
    model = nnx.merge(graphdef, st)
    _, _, states = model(tokens, mask, return_states=True, num_iterations=cap)
    return model.iteration_logits(tokens, mask, num_iterations=cap)[0], states.iterates

  logits_i, iterates = (np.asarray(x) for x in every_count(state))
  mk = np.asarray(mask)
  h, steps = run(state, 0.0)
  assert int(steps) == cap
  np.testing.assert_allclose(np.asarray(m.logits(h))[mk], logits_i[-1][mk], rtol=1e-5,
                             atol=1e-5)
  h, steps = run(state, 1e-4)
  steps = int(steps)
  assert 2 <= steps < cap, steps
  np.testing.assert_allclose(np.asarray(m.logits(h))[mk], logits_i[steps - 1][mk], rtol=1e-5,
                             atol=1e-5)
  it = iterates[:, mk]
  rel = lambda i: (np.linalg.norm(it[i] - it[i - 1], axis=-1) / np.linalg.norm(it[i], axis=-1)
                   ).max()
  assert rel(steps - 1) < 1e-4 <= rel(steps - 2)  # stopped at the first settled iteration
  np.testing.assert_allclose(logits_i[-1][mk], logits_i[steps - 1][mk], atol=1e-3)


def test_exit_rules_on_hand_made_gates():
  lam = jnp.asarray([[[0.5, 0.1]], [[0.5, 0.1]], [[0.9, 0.1]]])  # [I=3, B=1, T=2]
  p = np.asarray(modeling.exit_distribution(lam))
  np.testing.assert_allclose(p[:, 0, 0], [0.5, 0.25, 0.25])
  np.testing.assert_allclose(p[:, 0, 1], [0.1, 0.09, 0.81])
  steps = np.asarray(modeling.threshold_exit_step(jnp.asarray(p), 0.7))
  np.testing.assert_array_equal(steps, [[1, 2]])
  logits = jnp.arange(3 * 1 * 2 * 4, dtype=jnp.float32).reshape(3, 1, 2, 4)
  picked = np.asarray(modeling.select_exit_logits(logits, jnp.asarray(steps)))
  np.testing.assert_array_equal(picked[0, 0], np.asarray(logits)[1, 0, 0])
  np.testing.assert_array_equal(picked[0, 1], np.asarray(logits)[2, 0, 1])
  # The entropy-regularised loss: sum_t p(t) CE_t - beta H(p), averaged over weighted tokens.
  targets, weights = jnp.asarray([[1, 2]]), jnp.asarray([[1.0, 1.0]])
  ce = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), np.asarray(targets)[None, :,
                                                                                       :, None],
                           -1)[..., 0]
  ent = -(p * np.log(p)).sum(0)
  want = ((p * ce).sum(0) - 0.5 * ent).mean()
  got = modeling.exit_gate_loss(logits, lam, targets, weights, beta=0.5)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


@pytest.mark.parametrize("change, key", [
    (dict(backprop_depth=0), "backprop_depth"),
    (dict(train_recurrence="uniform"), "train_recurrence"),
    (dict(train_recurrence="lognormal_poisson"), "train_recurrence"),
    (dict(recurrence_sigma=0.0), "recurrence_sigma"),
    (dict(truncate_inner=True, bp_cycles=()), "bp_cycles"),
    (dict(architecture="HuginnForCausalLM"), "architecture"),
])
def test_bad_training_config_names_the_key(change, key):
  with pytest.raises(LoopedConfigError, match=f"^looped config: {key}="):
    LoopedConfig(**{**BASE, **change})


def test_bad_call_options_name_the_option():
  m = _perturbed(LoopedConfig(**BASE))
  tokens, mask = _batch()
  with pytest.raises(LoopedConfigError, match="grad_iterations=0"):
    m(tokens, mask, grad_iterations=0)
  with pytest.raises(LoopedConfigError, match="num_iterations=-1"):
    m(tokens, mask, num_iterations=-1)
  with pytest.raises(LoopedConfigError, match="backprop_depth"):
    m(tokens, mask, recurrence=(1, 1))
  with pytest.raises(LoopedConfigError, match="max_iterations"):
    m.hidden_converged(tokens, mask, tol=0.0, max_iterations=-1)
  with pytest.raises(LoopedConfigError, match="exit_gate"):
    m.exit_probabilities(jnp.zeros((2, 1, 3, D)))
