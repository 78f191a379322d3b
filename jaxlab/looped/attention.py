"""Attention-head behaviour across recurrences (spec §1.5 (c), (d) 2 and 4), numpy functions.

Inputs are attention probabilities ``A[..., n, q, k]`` (heads, query rows, key columns) from
:mod:`jaxlab.looped.replay`, with any leading axes (iteration, slot, batch). A query row
counts only if its token is real (``mask``); padded keys carry no mass already. Batches are
LEFT-padded, so a row's "BOS" (the sink candidate) is its first real token, not column 0.
"""

from __future__ import annotations

import numpy as np

SINK_THRESHOLD = 0.3  # a head is a sink head when its mean mass on the first token exceeds this


def _row_mean(x: np.ndarray, mask_bt: np.ndarray | None) -> np.ndarray:
  """Mean over query rows ``[..., B, N, T] -> [..., B, N]``, counting real tokens only."""
  if mask_bt is None:
    return x.mean(-1)
  w = np.asarray(mask_bt, bool)[:, None, :]  # [B, 1, T]
  return np.sum(np.where(w, x, 0.0), -1) / np.maximum(w.sum(-1), 1)


def first_token_index(mask_bt: np.ndarray) -> np.ndarray:
  """``[B]`` column of each row's first real token (its BOS under left padding)."""
  return np.argmax(np.asarray(mask_bt, bool), axis=-1)


def row_total_variation(a: np.ndarray, mask_bt: np.ndarray | None = None) -> np.ndarray:
  """Change of every head's attention rows from one iteration to the next.

  ``TV[t] = mean_q 1/2 sum_k |A[t + 1, ..., q, k] - A[t, ..., q, k]|`` (0 for identical rows,
  1 for rows with disjoint support).

  Args:
    a: ``[I, ..., B, N, T, S]`` with iterations first.
    mask_bt: ``[B, T]`` real query tokens (default all).

  Returns:
    ``[I - 1, ..., B, N]``.
  """
  a = np.asarray(a, np.float64)
  tv = 0.5 * np.abs(a[1:] - a[:-1]).sum(-1)
  return _row_mean(tv, mask_bt)


def head_entropy(a: np.ndarray, mask_bt: np.ndarray | None = None) -> np.ndarray:
  """``E = mean_q -sum_k A[q, k] log A[q, k]`` (nats) per head, ``[..., B, N]``."""
  a = np.asarray(a, np.float64)
  ent = -np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0), -1)
  return _row_mean(ent, mask_bt)


def sink_score(a: np.ndarray, mask_bt: np.ndarray | None = None) -> np.ndarray:
  """Mean attention mass on the first real token, ``a = mean_q A[q, bos]``, ``[..., B, N]``."""
  a = np.asarray(a, np.float64)
  b = a.shape[-4]
  bos = (np.zeros(b, np.int64) if mask_bt is None else first_token_index(mask_bt))
  onehot = np.zeros((b, a.shape[-1]))
  onehot[np.arange(b), bos] = 1.0
  mass = np.einsum("...bnqk,bk->...bnq", a, onehot)
  return _row_mean(mass, mask_bt)


def sink_rate(a: np.ndarray, mask_bt: np.ndarray | None = None,
              threshold: float = SINK_THRESHOLD) -> np.ndarray:
  """Share of (row, head) pairs whose :func:`sink_score` exceeds ``threshold``, ``[...]``
  (the batch and head axes are pooled)."""
  return (sink_score(a, mask_bt) > threshold).mean(axis=(-2, -1))


def local_mass(a: np.ndarray, mask_bt: np.ndarray | None = None, window: int = 5) -> np.ndarray:
  """Mass on the ``window`` most recent keys ``q - window < k <= q`` (the query itself
  included), not counting the first real token: a detokenisation / local-mixing signal
  (Lad et al.), ``[..., B, N]``."""
  a = np.asarray(a, np.float64)
  b, t, s = a.shape[-4], a.shape[-2], a.shape[-1]
  q = np.arange(t)[:, None]
  k = np.arange(s)[None, :]
  near = (k <= q) & (k > q - window)  # [T, S]
  bos = np.zeros(b, np.int64) if mask_bt is None else first_token_index(mask_bt)
  not_bos = np.arange(s)[None, :] != bos[:, None]  # [B, S]
  sel = near[None] & not_bos[:, None, :]  # [B, T, S]
  mass = np.sum(a * sel[:, None], -1)
  return _row_mean(mass, mask_bt)
