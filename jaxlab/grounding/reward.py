"""The GroundNext RL reward (spec §2.3): discretised, zero-centred, distance-based.

Everything is in the *resized* frame of the prompt's image (:mod:`jaxlab.grounding.frames`):
the predicted point, the ground-truth box ``[x1, y1, x2, y2]`` and the image size ``(W, H)``.

* Inside the closed box: ``n = 2 * min_corner |p - c| / diag(box)`` in ``[0, 1]`` (1 at the
  centre, 0 at a corner). It measures the distance to the *nearest corner*, not to the edge,
  so a point at the middle of an edge still scores about +1.
* Outside: ``n = -|p - clamp(p, box)| / D`` in ``[-1, 0)``, where ``D`` is the largest
  distance from an image corner to the box, so ``n`` depends on where the box sits.
* ``n`` maps to a level with the thresholds (0.1, 0.5) mirrored around 0:
  ``n >= 0.5 -> +1``, ``[0.1, 0.5) -> +0.5``, ``[0, 0.1) -> +0.1``, ``[-0.1, 0) -> -0.1``,
  ``[-0.5, -0.1) -> -0.5``, ``< -0.5 -> -1``.
* An answer without a readable point (no closed call block, JSON that does not decode, a
  coordinate that is not two integers) is scored as the point ``(0, 0)``, so a format
  failure is *not* always -1; a call whose JSON is not an object, or whose ``arguments`` is
  not one, and any error while scoring give -1 (where the paper's reward raises).
* The format check and a strict-interior hit ("accuracy") are computed for logging only.

As an ``llm_rl`` reward (``config.reward.fn = "jaxlab.grounding.reward:groundcua_reward"``)
it reads two fields of each RL row (:mod:`jaxlab.grounding.schema`, ``RLRecord``):
``gt_bbox``, the element's box already converted into the resized frame, and
``image_size``, the resized ``[W, H]``. Storing the resized frame in the row (written once
by the dataset writer with the processor's own rule) keeps the reward a pure function of
the row and the completion, with no image to open and no resize setting to repeat.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from jaxlab.core.errors import DataError
from jaxlab.grounding import answer

# (lower bound of n, level), checked in order; below the last bound the level is -1.
LEVELS: tuple[tuple[float, float], ...] = (
    (0.5, 1.0), (0.1, 0.5), (0.0, 0.1), (-0.1, -0.1), (-0.5, -0.5))
FLOOR = -1.0
# The point a format failure is scored as.
FALLBACK_POINT = (0, 0)


def _clamp(v: float, lo: float, hi: float) -> float:
  return min(max(v, lo), hi)


def normalized_distance(point: Sequence[float], box: Sequence[float],
                        image_size: Sequence[float]) -> float:
  """``n`` of spec §2.3 for a point, a box ``[x1, y1, x2, y2]`` and an image ``(W, H)``.

  The box's coordinates are swapped into order. Raises (``ZeroDivisionError``,
  ``ValueError``, ``TypeError``) on a degenerate box or a non-finite input; :func:`score`
  turns that into -1.
  """
  px, py = float(point[0]), float(point[1])
  x1, y1, x2, y2 = (float(v) for v in box)
  w, h = float(image_size[0]), float(image_size[1])
  if not all(math.isfinite(v) for v in (px, py, x1, y1, x2, y2, w, h)):
    raise ValueError("non-finite point, box or image size")
  x1, x2 = min(x1, x2), max(x1, x2)
  y1, y2 = min(y1, y2), max(y1, y2)
  if x1 <= px <= x2 and y1 <= py <= y2:
    nearest = min(math.hypot(px - cx, py - cy) for cx in (x1, x2) for cy in (y1, y2))
    return 2.0 * nearest / math.hypot(x2 - x1, y2 - y1)
  gap = math.hypot(px - _clamp(px, x1, x2), py - _clamp(py, y1, y2))
  worst = max(math.hypot(zx - _clamp(zx, x1, x2), zy - _clamp(zy, y1, y2))
              for zx in (0.0, w) for zy in (0.0, h))
  return -gap / worst


def level(n: float) -> float:
  """The reward level of ``n`` (thresholds 0.1, 0.5 mirrored around 0)."""
  if not math.isfinite(n):
    raise ValueError(f"n={n} is not finite")
  for bound, value in LEVELS:
    if n >= bound:
      return value
  return FLOOR


def score(point: Sequence[float] | None, box: Sequence[float],
          image_size: Sequence[float]) -> float:
  """The reward of one point: a level in {+1, +0.5, +0.1, -0.1, -0.5, -1}.

  Args:
    point: the parsed point in the resized frame, or None for a format failure (scored as
      the point (0, 0)).
    box: the ground-truth ``[x1, y1, x2, y2]`` in the same frame.
    image_size: ``(W, H)`` of the resized image.

  Never raises: any error while scoring gives -1, as in the paper's reward.
  """
  try:
    return level(normalized_distance(FALLBACK_POINT if point is None else point, box,
                                     image_size))
  except Exception:  # pylint: disable=broad-except
    return FLOOR


def strict_hit(point: Sequence[float] | None, box: Sequence[float]) -> bool:
  """The logged accuracy of the reward: the point strictly inside the (ordered) box."""
  if point is None:
    return False
  try:
    x1, y1, x2, y2 = (float(v) for v in box)
    x, y = float(point[0]), float(point[1])
  except (TypeError, ValueError, IndexError):
    return False
  return min(x1, x2) < x < max(x1, x2) and min(y1, y2) < y < max(y1, y2)


@dataclasses.dataclass(frozen=True)
class Scored:
  """One completion's reward and its log-only companions.

  Attributes:
    reward: the level of :func:`score`.
    point: the parsed point (None: format failure, scored as (0, 0)).
    well_formed: the format check (one call, the tool's name, an action, an integer pair).
    hit: strict-interior hit.
  """
  reward: float
  point: tuple[int, int] | None
  well_formed: bool
  hit: bool


def score_completion(completion: Any, box: Sequence[float],
                     image_size: Sequence[float]) -> Scored:
  """Parses a completion (the reward's reading, no fallback) and scores it; never raises."""
  parsed = answer.parse(completion)
  reward = FLOOR if parsed.error else score(parsed.point, box, image_size)
  return Scored(reward, parsed.point, parsed.well_formed, strict_hit(parsed.point, box))


# -- the llm_rl reward ------------------------------------------------------------------------


def row_target(row: Any, index: int = 0) -> tuple[list[float], list[float]]:
  """``(gt_bbox, image_size)`` of an RL row, both in the resized frame.

  Raises:
    DataError: the row is not an object, or a field is missing or not 4 / 2 numbers (naming
      the row's position in the batch and the field).
  """
  where = f"reward row {index}"
  if not isinstance(row, dict):
    raise DataError(f"{where}: expected an RL record (a dict), got {type(row).__name__}")
  for field, size in (("gt_bbox", 4), ("image_size", 2)):
    value = row.get(field)
    if (not isinstance(value, (list, tuple)) or len(value) != size
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
      raise DataError(f"{where}: field {field!r} must be a list of {size} numbers in the "
                      f"resized frame, got {value!r}")
  return list(row["gt_bbox"]), list(row["image_size"])


def groundcua_scored(rows: Sequence[dict[str, Any]],
                     completions: Sequence[str]) -> list[Scored]:
  """:func:`score_completion` of each (row, completion) pair."""
  if len(rows) != len(completions):
    raise DataError(f"reward: {len(rows)} rows but {len(completions)} completions")
  out = []
  for i, (row, text) in enumerate(zip(rows, completions)):
    box, size = row_target(row, i)
    out.append(score_completion(text, box, size))
  return out


def groundcua_reward(rows: Sequence[dict[str, Any]], completions: Sequence[str]) -> np.ndarray:
  """The ``llm_rl`` reward: ``fn(rows, completions) -> [B]`` float32 levels."""
  return np.asarray([s.reward for s in groundcua_scored(rows, completions)], np.float32)


def groundcua_log_metrics(rows: Sequence[dict[str, Any]],
                          completions: Sequence[str]) -> dict[str, float]:
  """The log-only extras over a batch: mean reward, format rate, strict-hit rate.

  ``llm_rl`` calls only :func:`groundcua_reward` (its interface returns one array); a
  trainer or an evaluation that wants these calls this function on the same batch.
  """
  scored = groundcua_scored(rows, completions)
  if not scored:
    return {}
  return {"reward/mean": float(np.mean([s.reward for s in scored])),
          "reward/format": float(np.mean([s.well_formed for s in scored])),
          "reward/strict_hit": float(np.mean([s.hit for s in scored]))}
