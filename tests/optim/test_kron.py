"""Kron (PSGD, Kronecker-factored preconditioner) and the optimizer factory (spec rl.md §2.3)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab import optim
from jaxlab.optim import psgd


def _regression(din=24, dout=6, n=2048, seed=0):
  """Ill-conditioned least squares: feature scales 1..30 (curvature ratio ~1e3), label noise."""
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  scales = jnp.logspace(0.0, 1.5, din)
  x = jax.random.normal(k1, (n, din)) * scales
  w = jax.random.normal(k2, (din, dout)) / scales[:, None]
  y = x @ w + 0.1 * jax.random.normal(k3, (n, dout))

  def loss(p, idx=None):
    xb, yb = (x, y) if idx is None else (x[idx], y[idx])
    return jnp.mean(jnp.sum((xb @ p["w"] + p["b"] - yb) ** 2, -1))

  curvature = float(jnp.linalg.eigvalsh(2 * x.T @ x / n).max())
  return loss, {"w": jnp.zeros((din, dout)), "b": jnp.zeros(dout)}, n, curvature


def _train(tx, loss, p0, n, steps=600, batch=64):
  @jax.jit
  def go(p):
    def step(carry, key):
      p, s = carry
      g = jax.grad(loss)(p, jax.random.randint(key, (batch,), 0, n))
      u, s = tx.update(g, s, p)
      p = optax.apply_updates(p, u)
      return (p, s), loss(p)
    (p, _), losses = jax.lax.scan(step, (p, tx.init(p)), jax.random.split(jax.random.key(1),
                                                                          steps))
    return losses
  return np.asarray(go(p0))


def test_kron_beats_sgd_on_ill_conditioned_regression():
  """Minibatch least squares with curvature spread over ~3 decades, 600 steps, both optimizers
  with a linearly decaying lr (as the RL configs use). SGD is limited by the largest curvature
  (lr <= 1/L; its best of 0.5/L and 1/L ends near 15); Kron's whitening preconditioner is not,
  and ends at the noise floor (0.06 = 6 outputs x 0.1^2; measured 0.064)."""
  loss, p0, n, curvature = _regression()
  steps = 600
  decay = lambda lr: optax.linear_schedule(lr, 0.0, steps)
  sgd = min(_train(optax.sgd(decay(c / curvature)), loss, p0, n, steps)[-1] for c in (0.5, 1.0))
  kron = _train(optim.kron(decay(1e-2)), loss, p0, n, steps)
  assert np.all(np.isfinite(kron))
  assert kron[-1] < 0.02 * sgd, (kron[-1], sgd)
  assert kron[-1] < 0.2


def test_preconditioner_whitens_a_known_gradient_covariance():
  """Fitting on gradients g = L1 Z L2^T (covariance C2 ⊗ C1) drives P_i C_i P_i towards a
  multiple of I: the whitening criterion of the method, checked on its own."""
  rng = np.random.default_rng(0)
  d1, d2 = 5, 4
  l1 = np.diag(np.logspace(0, 1, d1)) + 0.3 * np.tril(rng.standard_normal((d1, d1)), -1)
  l2 = np.diag(np.logspace(0, 0.5, d2))
  qs = psgd._init_factors((d1, d2), ("tri", "tri"), 1.0)  # pylint: disable=protected-access

  @jax.jit
  def fit(qs):
    def step(qs, key):
      kz, kv = jax.random.split(key)
      g = jnp.asarray(l1) @ jax.random.normal(kz, (d1, d2)) @ jnp.asarray(l2).T
      return psgd._refit(qs, g, jax.random.normal(kv, (d1, d2)), 0.02), None  # pylint: disable=protected-access
    return jax.lax.scan(step, qs, jax.random.split(jax.random.key(0), 6000))[0]

  q1, q2 = (np.asarray(q, np.float64) for q in fit(qs))
  for q, l in ((q1, l1), (q2, l2)):
    assert np.allclose(q, np.triu(q))  # the group stays upper triangular
    p = q.T @ q
    m = p @ (l @ l.T) @ p
    eig = np.linalg.eigvalsh(m / np.trace(m) * len(m))
    assert eig.max() / eig.min() < 1.6, eig  # C_1 alone has condition number 100
  # Before fitting (P = I) the same ratio for C_1 is ~100.
  c1 = np.linalg.eigvalsh(l1 @ l1.T)
  assert c1.max() / c1.min() > 50


def test_state_shapes_and_factor_kinds():
  params = {"w": jnp.zeros((6, 3)), "b": jnp.zeros(3), "s": jnp.zeros(()),
            "big": jnp.zeros((2, 20)), "conv": jnp.zeros((3, 3, 2, 4))}
  tx = psgd.scale_by_kron(max_size_triangular=10, merge_dims=False)
  state = tx.init(params)
  shapes = jax.tree.map(lambda q: q.shape, state.qs)
  assert shapes["w"] == ((6, 6), (3, 3))
  assert shapes["b"] == ((3,),)                 # 1-D: diagonal
  assert shapes["s"] == ((1,),)                 # scalar: one diagonal entry
  assert shapes["big"] == ((2, 2), (20,))       # 20 > max_size_triangular: diagonal
  assert shapes["conv"] == ((3, 3), (3, 3), (2, 2), (4, 4))   # one factor per axis
  merged = psgd.scale_by_kron(max_size_triangular=10).init(params)  # kron_torch 0.3.3's default
  assert jax.tree.map(lambda q: q.shape, merged.qs)["conv"] == ((24,), (3, 3))  # 24 > 10: diag
  chex.assert_trees_all_equal_shapes(state.mu, params)
  assert psgd.factor_kinds((8, 4), memory_save_mode="one_diag") == ("diag", "tri")
  assert psgd.factor_kinds((8, 4), memory_save_mode="all_diag") == ("diag", "diag")
  # Initial P = I: the first direction is the (bias-corrected) momentum = the gradient.
  g = jax.tree.map(lambda p: jnp.full(p.shape, 0.5), params)
  d, _ = psgd.scale_by_kron(clip_update_rms=0.0, preconditioner_update_probability=0.5,
                            merge_dims=False).update(g, state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), d, g)


def _kron_state(group, params):
  """The KronState inside the initial state of ``from_group(group)``'s optimizer chain."""
  is_kron = lambda x: isinstance(x, psgd.KronState)
  state = optim.from_group(group, 1.0).tx.init(params)
  return next(x for x in jax.tree.leaves(state, is_leaf=is_kron) if is_kron(x))


def test_merge_dims_from_the_config_group():
  """``config.optimizer.kron.merge_dims`` (on by default) reaches scale_by_kron: a flax conv
  kernel gets the two factors of kron_torch 0.3.1+'s matrix, other leaves keep theirs; the
  update keeps the parameter's shape and, with P = I at the start, is the gradient (no axis is
  scrambled)."""
  group = optim.default_config("kron")
  assert group.kron.merge_dims is True   # kron_torch 0.3.3's default
  params = {"conv": jnp.zeros((3, 3, 2, 4)), "w": jnp.zeros((6, 3)), "b": jnp.zeros(3)}
  kron_state = _kron_state(group, params)
  shapes = jax.tree.map(lambda q: q.shape, kron_state.qs)
  assert shapes["conv"] == ((24, 24), (3, 3))   # (out 4, in 2, 3, 3) -> [24, 3]
  assert shapes["w"] == ((6, 6), (3, 3)) and shapes["b"] == ((3,),)
  group.kron.merge_dims = False
  per_axis = _kron_state(group, params)
  assert jax.tree.map(lambda q: q.shape, per_axis.qs)["conv"] == ((3, 3), (3, 3), (2, 2), (4, 4))
  g = jax.tree.map(lambda p: jax.random.normal(jax.random.key(p.size), p.shape) * 0.1, params)
  d, _ = psgd.scale_by_kron(clip_update_rms=0.0,
                            preconditioner_update_probability=0.5).update(g, kron_state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), d, g)


def test_refit_schedule_and_accumulator():
  sched = psgd.precond_update_prob_schedule()
  np.testing.assert_allclose(sched(0), 1.0)
  np.testing.assert_allclose(sched(500), 1.0)
  np.testing.assert_allclose(sched(500 + np.log(2) / 0.001), 0.5, rtol=1e-4)
  np.testing.assert_allclose(sched(100_000), 0.03)
  # A constant probability p refits when the steps since the last refit reach 1 / p, as
  # kron_torch's counter: every 4th step for p = 1/4 and also for p = 0.3 (an accumulated
  # probability would refit at steps 4, 7, 10 there).
  params = {"w": jnp.zeros((3, 2))}
  for p in (0.25, 0.3):
    tx = psgd.scale_by_kron(preconditioner_update_probability=p)
    state = tx.init(params)
    refits = []
    for i in range(8):
      g = {"w": jax.random.normal(jax.random.key(i), (3, 2))}
      _, new = tx.update(g, state)
      refits.append(not np.allclose(new.qs["w"][0], state.qs["w"][0]))
      state = new
    assert refits == [False, False, False, True] * 2, p


def test_jit_and_vmap_over_seeds():
  loss, p0, n, _ = _regression(din=8, dout=2, n=256)
  tx = optim.kron(1e-3)

  def run(p, key):
    def step(carry, k):
      p, s = carry
      g = jax.grad(loss)(p, jax.random.randint(k, (16,), 0, n))
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(step, (p, tx.init(p)), jax.random.split(key, 20))[0][0]

  keys = jax.random.split(jax.random.key(0), 2)
  stacked = jax.tree.map(lambda x: jnp.stack([x, x + 0.1]), p0)
  batched = jax.jit(jax.vmap(run))(stacked, keys)
  for i in range(2):
    single = jax.jit(run)(jax.tree.map(lambda x, i=i: x[i], stacked), keys[i])
    jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-6),
                 batched, single)


def test_make_optimizer_names_and_kron_lr_rule():
  for name in optim.OPTIMIZERS:
    opt = optim.make_optimizer(name, 3e-4, schedule="linear", total_steps=10, max_grad_norm=1.0)
    expected = 3e-4 / 3 if name == "kron" else 3e-4  # spec §2.3: Kron uses lr / 3
    np.testing.assert_allclose(opt.lr(0), expected, rtol=1e-6)
    np.testing.assert_allclose(opt.lr(10), 0.0, atol=1e-12)
    params = {"w": jnp.ones((3, 2))}
    u, _ = jax.jit(opt.tx.update)({"w": jnp.ones((3, 2))}, opt.tx.init(params), params)
    assert np.all(np.isfinite(u["w"]))
  with pytest.raises(ValueError, match="name='sgd'"):
    optim.make_optimizer("sgd", 1e-3)
  with pytest.raises(ValueError, match="weight_decay"):
    optim.make_optimizer("radam", 1e-3, weight_decay=0.1)
  with pytest.raises(ValueError, match="total_steps"):
    optim.make_optimizer("adam", 1e-3, schedule="linear")
