"""PCA of a token's states along the unrolled recurrence (spec §1.5 (b)).

The points are the slot states ``H[t, l]`` of one token taken in unrolled order
``(0, 0), (0, 1), ..., (0, J-1), (1, 0), ...``. Once every slot sits at its own fixed point,
each iteration visits the same J points: in the plane of the top two principal components the
path is a closed J-gon that later iterations retrace, and early iterations spiral onto it.
"""

from __future__ import annotations

import numpy as np


def pca(points: np.ndarray, n_components: int = 2, center: bool = True):
  """Principal axes of a point cloud by SVD.

  Args:
    points: ``[N, D]``.
    n_components: ``k``, how many axes to keep (at most ``min(N, D)``).
    center: subtract the mean point first.

  Returns:
    ``(coords [N, k], axes [k, D], mean [D], explained [k])``: the projections, the unit
    principal directions, the mean removed (zeros if not centred) and each axis' share of the
    total variance (of the centred cloud).
  """
  x = np.asarray(points, np.float64)
  mean = x.mean(0) if center else np.zeros(x.shape[1])
  xc = x - mean
  _, s, vt = np.linalg.svd(xc, full_matrices=False)
  k = min(n_components, vt.shape[0])
  total = float(np.sum(s ** 2))
  explained = (s[:k] ** 2) / total if total > 0 else np.zeros(k)
  axes = vt[:k]
  return xc @ axes.T, axes, mean, explained


def token_trajectory(h: np.ndarray, n_components: int = 2, center_tokens: bool = True):
  """PCA coordinates of the (iteration, slot) path of one or several tokens.

  One token: ``h`` is ``[I, J, D]``. Several: ``[I, J, N, D]``; each token is first centred on
  its own mean over (iteration, slot) when ``center_tokens`` (so the shared axes describe the
  shape of the paths, not where the tokens sit), then one PCA is fitted to all points.

  Returns:
    ``(coords, explained)``: ``[I, J, k]`` (or ``[I, J, N, k]``) and ``[k]``.
  """
  h = np.asarray(h, np.float64)
  single = h.ndim == 3
  if single:
    h = h[:, :, None]
  if h.ndim != 4:
    raise ValueError(f"token_trajectory: states must be [I, J, D] or [I, J, N, D], got "
                     f"{list(h.shape)}")
  if center_tokens:
    h = h - h.mean(axis=(0, 1), keepdims=True)
  i, j, n, d = h.shape
  coords, _, _, explained = pca(h.reshape(-1, d), n_components, center=True)
  coords = coords.reshape(i, j, n, -1)
  return (coords[:, :, 0] if single else coords), explained


def cycle_summary(coords: np.ndarray, eps: float = 1e-12) -> dict[str, float]:
  """How closed and how regular the last iteration's J-gon is, in the projected plane.

  Args:
    coords: ``[I, J, k]`` from :func:`token_trajectory` (one token), ``I >= 2``.

  Returns:
    ``retrace``: ``max_l |c[I-1, l] - c[I-2, l]| / perimeter`` (0 when the last iteration
    retraces the one before); ``min_side``: the shortest side of the polygon, closing side
    ``(J-1 -> 0)`` included, over the mean side (distinct vertices when away from 0);
    ``perimeter``: the polygon's perimeter in PC units.
  """
  c = np.asarray(coords, np.float64)
  last = c[-1]
  sides = np.linalg.norm(np.roll(last, -1, axis=0) - last, axis=-1)
  perimeter = float(sides.sum())
  retrace = float(np.linalg.norm(c[-1] - c[-2], axis=-1).max() / (perimeter + eps))
  return dict(retrace=retrace, min_side=float(sides.min() / (sides.mean() + eps)),
              perimeter=perimeter)
