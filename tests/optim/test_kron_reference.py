"""Kron's preconditioner fit against kron_torch 0.3.3, the PyTorch Kron of the Stable-Gradients
code (spec rl.md §2.3), piece by piece with the same probe vectors.

The whole optimizer step cannot be compared draw for draw (kron_torch draws its probes and its
balancing coin from torch's generators inside ``step``), so the tests drive its preconditioner
update with probes we also hand to ours, and compare the preconditioners P = Q^T Q they reach.
"""

import jax.numpy as jnp
import numpy as np
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
    gv, vv = jnp.asarray(g), jnp.asarray(v.numpy())
    ours = psgd._refit(ours, gv + psgd._DAMPING * jnp.mean(jnp.abs(gv)) * vv, vv, 0.1)

  x = rng.normal(size=shape).astype(np.float32)
  want = torch.einsum(exprs[-1], *q_ref, *q_ref, torch.tensor(x)).numpy()
  got = np.asarray(psgd._precondition(ours, jnp.asarray(x)))
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())
  # Four refits moved P away from its start, so the comparison is not of two starting points.
  start_p = np.asarray(psgd._precondition(tuple(jnp.asarray(s) for s in start), jnp.asarray(x)))
  assert np.abs(got - start_p).max() > 1e-2 * np.abs(start_p).max()
