"""Kron against kron_torch 0.3.3, the PyTorch Kron of the Stable-Gradients code (spec rl.md
§2.3), with the same probe vectors: its spectral-norm bound, its preconditioner update (the
preconditioners P = Q^T Q both reach) and whole ``Kron.step`` calls, whose probe draws are
replaced by the probes ours draws at that step (its balancing coin does not change P).
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from kron_torch import kron as ref

from jaxlab.optim import psgd


def _uncompiled(fn):
  """kron_torch wraps its update in torch.compile; the tests run the plain function."""
  return getattr(fn, "_torchdynamo_orig_callable", fn)


def test_spectral_bound_matches_kron_torch():
  rng = np.random.default_rng(0)
  for d in (1, 3, 16, 64):
    for scale in (1e-3, 1.0, 1e4):
      x = rng.normal(size=(d, 2 * d)) * scale
      m = (x @ x.T).astype(np.float32)
      want = ref._lb(torch.tensor(m), torch.tensor(np.abs(m).max())).item()
      got = float(psgd._spectral_norm_lower_bound(jnp.asarray(m)))
      np.testing.assert_allclose(got, want, rtol=2e-5)
      # Still a lower bound on the spectral norm, and at least the one-step bound.
      m64 = m.astype(np.float64)
      exact = np.linalg.norm(m64, 2)
      j = np.argmax(np.linalg.norm(m64, axis=0))
      one_step = np.linalg.norm(m64 @ m64[:, j]) / np.linalg.norm(m64[:, j])
      assert one_step * (1 - 1e-5) <= got <= exact * (1 + 1e-5)
  assert float(psgd._spectral_norm_lower_bound(jnp.zeros((4, 4)))) == 0.0


@pytest.mark.parametrize("shape,memory_save_mode", [
    ((6, 5), None),          # two triangular factors
    ((7,), None),            # a bias: one diagonal factor
    ((4, 4), "one_diag"),    # a tie for the largest axis
    ((3, 4, 5), None),       # three triangular factors (kron_torch's step merges such tensors)
    ((9, 3), "all_diag"),
])
def test_preconditioner_fit_matches_kron_torch(shape, memory_save_mode):
  rng = np.random.default_rng(1)
  g = (rng.normal(size=shape) * rng.uniform(0.5, 2.0, size=shape[-1])).astype(np.float32)
  q_ref, exprs = ref._init_Q_exprs(torch.tensor(g), 1.0, 8192, 2, memory_save_mode,
                                   dtype=torch.float32)
  kinds = psgd.factor_kinds(shape, memory_save_mode=memory_save_mode)
  assert kinds == tuple("tri" if q.dim() == 2 else "diag" for q in q_ref)
  # Start both from the same non-trivial factors.
  start = []
  for q in q_ref:
    if q.dim() == 2:
      d = q.shape[0]
      start.append((np.eye(d) + 0.3 * np.triu(rng.normal(size=(d, d)), 1)
                    + np.diag(rng.uniform(0.2, 0.8, d))).astype(np.float32))
    else:
      start.append(rng.uniform(0.5, 1.5, q.shape[0]).astype(np.float32))
  q_ref = [torch.tensor(s) for s in start]
  ours = tuple(jnp.asarray(s) for s in start)

  update = _uncompiled(ref._update_precond)
  lr = torch.tensor(0.1)
  tiny = torch.tensor(torch.finfo(torch.float32).tiny)
  for k in range(4):
    torch.manual_seed(k)
    v = torch.randn_like(torch.tensor(g))
    torch.manual_seed(k)  # the update draws the same probe
    update(q_ref, exprs, torch.tensor(g), lr, tiny)
    ours = psgd._refit_damped(ours, jnp.asarray(g), jnp.asarray(v.numpy()), 0.1)

  x = rng.normal(size=shape).astype(np.float32)
  want = torch.einsum(exprs[-1], *q_ref, *q_ref, torch.tensor(x)).numpy()
  got = np.asarray(psgd._precondition(ours, jnp.asarray(x)))
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())
  # Four refits moved P away from its start, so the comparison is not of two starting points.
  start_p = np.asarray(psgd._precondition(tuple(jnp.asarray(s) for s in start), jnp.asarray(x)))
  assert np.abs(got - start_p).max() > 1e-2 * np.abs(start_p).max()


# Parameter layouts of the whole-step comparison: a dense layer as is, and a flax convolution
# kernel (3, 3, in 2, out 5) that kron_torch sees as PyTorch's (5, 2, 3, 3) weight and, with
# merge_dims (on by default in both), preconditions as a [30, 3] matrix.
_LAYOUTS = {"dense": ({"b": (4,), "w": (5, 4)}, False),
            "conv": ({"b": (5,), "w": (3, 3, 2, 5)}, True)}


def _torch_layout(x):
  return np.ascontiguousarray(np.transpose(x, psgd.torch_order(x.ndim))) if x.ndim > 2 else x


@pytest.mark.parametrize("prob,layout", [(1.0, "dense"), (0.3, "dense"), (1.0, "conv")])
def test_optimizer_steps_match_kron_torch(monkeypatch, prob, layout):
  """Whole optimizer steps (momentum, debiasing, refits on kron_torch's schedule, the
  preconditioned direction, the RMS cap, the learning rate) on the same gradients, with
  kron_torch's probe draws replaced by the probes ours draws at that step."""
  rng = np.random.default_rng(2)
  shapes, merged = _LAYOUTS[layout]
  names = ("b", "w")  # ours flattens the dict as b, w
  p0 = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  grads = [{k: (3.0 * rng.normal(size=s)).astype(np.float32) for k, s in shapes.items()}
           for _ in range(8)]

  tx = psgd.kron(learning_rate=0.05, preconditioner_update_probability=prob)  # merge_dims on
  params = {k: jnp.asarray(v) for k, v in p0.items()}
  state = tx.init(params)
  fitted = [psgd.merged_shape(shapes[n]) for n in names]
  assert (fitted[1] != shapes["w"]) == merged
  assert [tuple(q.shape[0] for q in state[0].qs[n]) for n in names] == fitted
  probes = []
  for g in grads:
    # The probes scale_by_kron draws at this step, one per leaf in flattening order.
    probes.append([np.asarray(v) for v in psgd._probes(state[0].key, state[0].count, fitted)])
    updates, state = tx.update({k: jnp.asarray(v) for k, v in g.items()}, state, params)
    params = optax.apply_updates(params, updates)

  for name in ("_update_precond", "_precond_grad", "_clip_update_rms", "_balance_Q"):
    monkeypatch.setattr(ref, name, _uncompiled(getattr(ref, name)))
  # kron_torch adds the fit's damping noise to the momentum in place, so on refit steps its
  # direction carries that noise too (relative size sqrt(eps) ~ 3e-4; without this copy the two
  # differ by ~1e-4 relative after the first step). Ours keeps the noise in the fit only.
  add_noise = ref._calc_A_and_conjB
  monkeypatch.setattr(ref, "_calc_A_and_conjB", lambda e, g, q: add_noise(e, g.clone(), q))
  queue = []

  def probe_like(t, **_):
    v = queue.pop(0)
    assert tuple(t.shape) == v.shape
    return torch.tensor(v)

  monkeypatch.setattr(torch, "randn_like", probe_like)
  tp = [torch.nn.Parameter(torch.tensor(_torch_layout(p0[n]))) for n in names]
  opt = ref.Kron(tp, lr=0.05, b1=0.9, preconditioner_update_probability=prob)  # merge_dims on
  refits = []
  for g, v in zip(grads, probes):
    queue[:] = v
    for p, n in zip(tp, names):
      p.grad = torch.tensor(_torch_layout(g[n]))
    opt.step()
    refits.append(not queue)
  assert refits == ([True] * 8 if prob == 1.0 else [False, False, False, True] * 2)
  for p, n in zip(tp, names):
    np.testing.assert_allclose(_torch_layout(np.asarray(params[n])), p.detach().numpy(),
                               rtol=1e-5, atol=2e-6)
  # Eight steps moved the parameters, so this compares more than the starting point.
  assert np.abs(np.asarray(params["w"]) - p0["w"]).max() > 0.05


def test_merged_shape_is_kron_torchs_choice():
  """kron_torch's own comparison of its two candidate shapes, on the PyTorch-ordered shape,
  for many kernel shapes: it always lands on the shape merged_shape returns."""
  rng = np.random.default_rng(3)
  for _ in range(200):
    shape = tuple(int(d) for d in rng.integers(1, 40, size=rng.integers(3, 6)))
    t = [shape[i] for i in psgd.torch_order(len(shape))]
    first, second = [np.prod(t[:-1]), t[-1]], [t[0], np.prod(t[1:])]
    want = first if np.diff(first) <= np.diff(second) else second
    assert psgd.merged_shape(shape) == tuple(int(d) for d in want)
  assert psgd.merged_shape((3, 3, 4, 16)) == (192, 3)
  assert psgd.merged_shape((6, 5)) == (6, 5) and psgd.merged_shape((7,)) == (7,)
