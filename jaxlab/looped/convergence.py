"""Per-slot fixed points of the recurrence (spec §1.5 (a)), as numpy functions of captured states.

Notation: ``H[t, l, ..., :]`` is the residual stream after core slot ``l`` of iteration ``t``
(``LoopStates.core``, shape ``[I, J, B, T, D]``; any number of token axes may stand for
``B, T``). Iterations are counted from 0 here; the spec's ``t = 1..T`` is our ``0..I-1``.
Everything is computed in float64, so that geometric decays far below float32's resolution
of the *differences* are still measured faithfully once the states themselves are float64.
"""

from __future__ import annotations

import numpy as np

FIXED, PERIODIC, DRIFTING = 0, 1, 2
CLASS_NAMES = ("fixed", "periodic", "drifting")
_EPS = 1e-12


def _norm(x: np.ndarray) -> np.ndarray:
  return np.linalg.norm(np.asarray(x, np.float64), axis=-1)


def relative_deltas(h: np.ndarray, eps: float = _EPS) -> np.ndarray:
  """Relative step of every slot between consecutive iterations.

  ``delta[t] = |H[t + 1] - H[t]| / (|H[t + 1]| + eps)``, the norm over the last (feature) axis.

  Args:
    h: ``[I, ..., D]`` states, iterations first.

  Returns:
    ``[I - 1, ...]``: entry ``t`` compares iteration ``t + 1`` with iteration ``t``.
  """
  h = np.asarray(h, np.float64)
  return _norm(h[1:] - h[:-1]) / (_norm(h[1:]) + eps)


def successive_cosines(h: np.ndarray, eps: float = _EPS) -> np.ndarray:
  """``cos(H[t + 1], H[t])`` per slot and token, ``[I - 1, ...]`` (1 at a fixed point)."""
  h = np.asarray(h, np.float64)
  dot = np.sum(h[1:] * h[:-1], axis=-1)
  return dot / (_norm(h[1:]) * _norm(h[:-1]) + eps)


def distance_to_final(h: np.ndarray, eps: float = _EPS) -> np.ndarray:
  """``|H[t] - H[I-1]| / (|H[I-1]| + eps)`` per iteration, slot and token, ``[I, ...]``.

  A straight line of its log against ``t`` is linear convergence; the slope is ``log rho``.
  """
  h = np.asarray(h, np.float64)
  return _norm(h - h[-1:]) / (_norm(h[-1:]) + eps)


def step_ratios(deltas: np.ndarray, eps: float = _EPS) -> np.ndarray:
  """``delta[t + 1] / delta[t]``, ``[I - 2, ...]``: for ``s <- A s + b`` near its fixed point
  this tends to the spectral radius of ``A`` (the dominant mode's decay per iteration)."""
  d = np.asarray(deltas, np.float64)
  return d[1:] / (d[:-1] + eps)


def contraction_rate(deltas: np.ndarray, window: int | None = None,
                     floor: float = 1e-13) -> np.ndarray:
  """Geometric rate ``rho`` fitted to the last ``window`` relative steps.

  A least-squares line through ``(t, log delta[t])`` over the window; ``rho = exp(slope)``.
  ``rho < 1`` contracts (the step shrinks by ``rho`` per iteration), ``rho ~ 1`` neither
  converges nor diverges (a cycle or a drift), ``rho > 1`` expands. Steps below ``floor``
  (already at numerical rest) are left out of the fit; with fewer than two usable steps the
  rate is NaN.

  Args:
    deltas: ``[I - 1, ...]`` from :func:`relative_deltas`.
    window: how many of the last steps to fit (default: the later half, at least 2).

  Returns:
    ``[...]`` rates, one per slot and token.
  """
  d = np.asarray(deltas, np.float64)
  n = d.shape[0]
  window = max(2, n // 2) if window is None else window
  window = min(window, n)
  d = d[n - window:]
  t = np.arange(window, dtype=np.float64).reshape((window,) + (1,) * (d.ndim - 1))
  ok = d > floor
  logd = np.where(ok, np.log(np.maximum(d, floor)), 0.0)
  cnt = ok.sum(0)
  safe = np.maximum(cnt, 1)
  tm = np.sum(np.where(ok, t, 0.0), 0) / safe
  lm = np.sum(logd, 0) / safe
  cov = np.sum(np.where(ok, (t - tm) * (logd - lm), 0.0), 0)
  var = np.sum(np.where(ok, (t - tm) ** 2, 0.0), 0)
  slope = cov / np.where(var > 0, var, 1.0)
  return np.where(cnt >= 2, np.exp(slope), np.nan)


def periodic_gaps(h: np.ndarray, max_period: int, eps: float = _EPS) -> np.ndarray:
  """``max_l |H[I-1, l] - H[I-1-p, l]| / |H[I-1, l]|`` for ``p = 1..max_period``.

  Args:
    h: ``[I, J, ..., D]``.

  Returns:
    ``[P, ...]`` (slots reduced by their max); row ``p - 1`` is period ``p``; NaN where
    ``p >= I`` (not enough iterations to tell).
  """
  h = np.asarray(h, np.float64)
  last = h[-1]
  rows = []
  for p in range(1, max_period + 1):
    if p >= h.shape[0]:
      rows.append(np.full(last.shape[1:-1], np.nan))
      continue
    gap = _norm(last - h[-1 - p]) / (_norm(last) + eps)
    rows.append(gap.max(0))
  return np.stack(rows)


def settled_share(delta: np.ndarray, iteration: int, valid: np.ndarray,
                  threshold: float = 1e-2) -> float:
  """Share of valid tokens whose every slot moved by less than ``threshold`` (relative) into
  ``iteration`` (counted from 1, as spec §1.7's "by t = 2 r-bar"): ``max_l delta[t, l] <
  threshold``.

  Args:
    delta: ``[I-1, J, B, T]`` from :func:`relative_deltas` (entry ``k`` is iteration ``k + 2``).
    iteration: ``2 .. I``.
    valid: ``[B, T]`` bool, the real tokens.
  """
  delta = np.asarray(delta)
  if not 2 <= iteration <= delta.shape[0] + 1:
    raise ValueError(f"settled_share: iteration {iteration} is outside 2..{delta.shape[0] + 1}")
  moved = delta[iteration - 2].max(axis=0)  # the worst slot, [B, T]
  return float(np.mean(moved[np.asarray(valid, bool)] < threshold))


def classify_tokens(h: np.ndarray, threshold: float = 1e-2, window: int | None = None,
                    max_period: int = 4) -> dict[str, np.ndarray]:
  """Labels every token fixed / periodic / drifting with the spec's heuristic thresholds.

  * fixed: every slot's relative step stays below ``threshold`` from iteration ``I - window``
    on, spec §1.5's ``max_l max_{t >= T-w} delta[t, l] < threshold`` with iterations counted
    from 1: the last ``window + 1`` steps (all of them when there are fewer).
  * periodic with period ``p`` (2..``max_period``): not fixed, and the final states of every
    slot come back after ``p`` iterations, ``max_l |H[I-1,l] - H[I-1-p,l]| / |H[I-1,l]| <
    threshold``; the smallest such ``p`` is its period. This is a cycle of the *iteration
    map*, not the within-iteration cycle of slots.
  * drifting: neither.

  Args:
    h: ``[I, J, ..., D]`` core states (at least 2 iterations).
    threshold: the relative tolerance (the spec suggests 1e-2; sweep 1e-3..1e-1).
    window: the spec's ``w`` for "fixed" (default ``max(1, I // 4)``): ``w + 1`` steps.
    max_period: the longest iteration-map period tested.

  Returns:
    ``label`` ``[...]`` int (:data:`FIXED`, :data:`PERIODIC`, :data:`DRIFTING`), ``period``
    ``[...]`` int (0 unless periodic), ``final_step`` ``[...]`` (the max step in the window),
    and the settings ``threshold``, ``window``, ``max_period`` as 0-d arrays.
  """
  h = np.asarray(h, np.float64)
  if h.shape[0] < 2:
    raise ValueError(f"classify_tokens: needs >= 2 iterations, got states of shape "
                     f"{list(h.shape)}")
  n_iter = h.shape[0]
  window = max(1, n_iter // 4) if window is None else max(1, min(window, n_iter - 1))
  d = relative_deltas(h)  # [I-1, J, ...]
  final_step = d[-(window + 1):].max(axis=(0, 1))
  label = np.full(final_step.shape, DRIFTING, np.int64)
  period = np.zeros(final_step.shape, np.int64)
  gaps = periodic_gaps(h, max_period)  # [P, ...]
  for p in range(max_period, 1, -1):  # the smallest period wins: assign it last
    hit = np.nan_to_num(gaps[p - 1], nan=np.inf) < threshold
    label = np.where(hit, PERIODIC, label)
    period = np.where(hit, p, period)
  fixed = final_step < threshold
  label = np.where(fixed, FIXED, label)
  period = np.where(fixed, 0, period)
  return dict(label=label, period=period, final_step=final_step,
              threshold=np.asarray(threshold), window=np.asarray(window),
              max_period=np.asarray(max_period))


def class_fractions(label: np.ndarray, valid: np.ndarray | None = None,
                    groups: np.ndarray | None = None,
                    group_names: dict[int, str] | None = None) -> dict[str, dict[str, float]]:
  """Share of valid tokens in each class, overall and per token group.

  Args:
    label: ``[...]`` from :func:`classify_tokens`.
    valid: ``[...]`` bool, tokens to count (e.g. the attention mask).
    groups: ``[...]`` int group id per token (system / question / answer ...), or None.
    group_names: id -> name for the keys (default ``"group<id>"``).

  Returns:
    ``{"all": {"fixed": f, "periodic": f, "drifting": f, "non_fixed": f, "count": n}, name:
    {...}, ...}``.
  """
  label = np.asarray(label)
  valid = np.ones(label.shape, bool) if valid is None else np.asarray(valid, bool)

  def fractions(sel):
    n = int(sel.sum())
    out = {name: (float(np.sum(sel & (label == k))) / n if n else float("nan"))
           for k, name in enumerate(CLASS_NAMES)}
    out["non_fixed"] = (1.0 - out["fixed"]) if n else float("nan")
    out["count"] = n
    return out

  result = {"all": fractions(valid)}
  if groups is not None:
    groups = np.asarray(groups)
    for g in np.unique(groups[valid]):
      name = (group_names or {}).get(int(g), f"group{int(g)}")
      result[name] = fractions(valid & (groups == g))
  return result


def threshold_sweep(h: np.ndarray, thresholds=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
                    valid: np.ndarray | None = None, **kwargs) -> dict[str, dict[str, float]]:
  """:func:`class_fractions` (overall) of :func:`classify_tokens` at each threshold, keyed by
  the threshold written as ``"%g"``."""
  return {f"{tau:g}": class_fractions(classify_tokens(h, tau, **kwargs)["label"], valid)["all"]
          for tau in thresholds}


def slot_distinctness(h: np.ndarray, eps: float = _EPS) -> dict[str, np.ndarray]:
  """How far apart the slots' limit states are, against how much each still moves.

  With ``H* = H[I-1]`` (the last iteration's slot states) and per token:

  * ``distance[l, l'] = |H*[l] - H*[l']| / mean_l |H*[l]|`` (``[J, J, ...]``);
  * ``min_distance = min_{l != l'} distance[l, l']`` (NaN with one slot);
  * ``adjacent_cos[l] = cos(H*[l], H*[l + 1])`` for ``l = 0..J-2`` (``[J - 1, ...]``);
  * ``final_step = max_l delta[I-2, l]``, the within-slot relative step at the end;
  * ``separation = min_distance / final_step``: "distinct fixed points" means this is large
    (the slots settle far closer to their own limits than to each other's).

  Args:
    h: ``[I, J, ..., D]`` core states, at least 2 iterations.
  """
  h = np.asarray(h, np.float64)
  last = h[-1]  # [J, ..., D]
  n_slots = last.shape[0]
  scale = _norm(last).mean(0) + eps  # [...]
  dist = _norm(last[:, None] - last[None, :]) / scale  # [J, J, ...]
  if n_slots > 1:
    off = ~np.eye(n_slots, dtype=bool).reshape((n_slots, n_slots) + (1,) * (dist.ndim - 2))
    min_dist = np.where(off, dist, np.inf).min(axis=(0, 1))
  else:
    min_dist = np.full(dist.shape[2:], np.nan)
  dot = np.sum(last[:-1] * last[1:], axis=-1)
  adj = dot / (_norm(last[:-1]) * _norm(last[1:]) + eps)
  final_step = relative_deltas(h[-2:])[0].max(0)
  return dict(distance=dist, min_distance=min_dist, adjacent_cos=adj, final_step=final_step,
              separation=min_dist / (final_step + eps))
