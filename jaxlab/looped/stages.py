"""Stages of inference along the unrolled depth (spec §1.5 (d)), as numpy functions.

The looped model's unrolled depth ``k`` runs over the prelude blocks, then every (iteration,
slot) call of the recurrence, then the coda; a feed-forward decoder's depth is its layer index.
Along it we track how compressed the token representations are (normalised matrix entropy),
how large the first token's state grows (BOS norm, "massive activations") and, from
:mod:`jaxlab.looped.attention`, how many heads sink onto it. In the Mix-Compress-Refine
picture these move together; "repeating stages" means the curves become periodic with period
J (slots per iteration) once the slots converge.
"""

from __future__ import annotations

import math

import numpy as np

from jaxlab.looped.attention import first_token_index


def matrix_entropy(z: np.ndarray, normalize_rows: bool = True, alpha: float = 1.0,
                   eps: float = 1e-12) -> float:
  """Normalised (Renyi-alpha) entropy of the Gram spectrum of a token-state matrix.

  For ``Z [S, D]`` (rows L2-normalised when ``normalize_rows``), ``K = Z Z^T`` and
  ``lambda = eig(K) / tr(K)`` (the squared singular values of ``Z``, summing to 1);
  ``H_1 = -sum_j lambda_j log lambda_j``, ``H_alpha = log(sum_j lambda_j^alpha) / (1 - alpha)``;
  the result is ``H / log S`` in ``[0, 1]``: 1 when the S rows are orthogonal with equal norms
  (nothing compressed, needs ``S <= D``), 0 when they all lie on one line (rank 1).

  Args:
    z: ``[S, D]`` with ``S >= 2``.
  """
  z = np.asarray(z, np.float64)
  n = z.shape[0]
  if n < 2:
    return float("nan")
  if normalize_rows:
    z = z / (np.linalg.norm(z, axis=-1, keepdims=True) + eps)
  s2 = np.linalg.svd(z, compute_uv=False) ** 2
  lam = s2 / max(float(s2.sum()), eps)
  lam = lam[lam > eps]
  if alpha == 1.0:
    h = float(-np.sum(lam * np.log(lam)))
  else:
    h = float(np.log(np.sum(lam ** alpha)) / (1.0 - alpha))
  return h / math.log(n)


def entropy_curve(states: np.ndarray, mask_bt: np.ndarray | None = None,
                  **kwargs) -> np.ndarray:
  """:func:`matrix_entropy` of each row's real tokens at every depth, averaged over the batch.

  Args:
    states: ``[K, B, T, D]`` (depth first).
    mask_bt: ``[B, T]`` real tokens.

  Returns:
    ``[K]``.
  """
  states = np.asarray(states)
  k, b, t = states.shape[:3]
  mask = np.ones((b, t), bool) if mask_bt is None else np.asarray(mask_bt, bool)
  out = np.zeros(k)
  for d in range(k):
    out[d] = np.nanmean([matrix_entropy(states[d, i][mask[i]], **kwargs) for i in range(b)])
  return out


def bos_norm_curve(states: np.ndarray, mask_bt: np.ndarray | None = None) -> np.ndarray:
  """``|h_k[bos]|`` at every depth, averaged over the batch: ``[K, B, T, D] -> [K]``."""
  states = np.asarray(states, np.float64)
  b = states.shape[1]
  bos = np.zeros(b, np.int64) if mask_bt is None else first_token_index(mask_bt)
  return np.linalg.norm(states[:, np.arange(b), bos], axis=-1).mean(-1)


def unrolled_states(prelude: np.ndarray, core: np.ndarray, coda: np.ndarray) -> np.ndarray:
  """The residual stream after every block call in unrolled order, ``[K, B, T, D]``.

  ``prelude [P + 1, ...]`` (its row 0, the scaled embeddings, is dropped so that depth ``k``
  is always "after block call k"), ``core [I, J, ...]`` in (iteration, slot) order, then
  ``coda [C, ...]``; ``K = P + I J + C``.
  """
  core = np.asarray(core)
  flat = core.reshape((-1,) + core.shape[2:])
  return np.concatenate([np.asarray(prelude)[1:], flat, np.asarray(coda)], axis=0)


def depth_labels(n_prelude: int, n_iter: int, n_slots: int, n_coda: int) -> list[str]:
  """Names of the unrolled depths: ``p0.., t0/l0, t0/l1, ..., c0..``."""
  return ([f"p{i}" for i in range(n_prelude)] +
          [f"t{t}/l{l}" for t in range(n_iter) for l in range(n_slots)] +
          [f"c{i}" for i in range(n_coda)])


def periodicity_error(curve_ij: np.ndarray, eps: float = 1e-12) -> float:
  """How far a core curve ``[I, J]`` is from repeating with period J at the end:
  ``max_l |c[I-1, l] - c[I-2, l]| / (max c - min c)`` over the last two iterations
  (0: the last iteration repeats the one before exactly)."""
  c = np.asarray(curve_ij, np.float64)
  if c.shape[0] < 2:
    return float("nan")
  span = float(np.nanmax(c) - np.nanmin(c))
  return float(np.nanmax(np.abs(c[-1] - c[-2])) / (span + eps))
