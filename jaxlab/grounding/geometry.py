"""Is a point inside a region: closed boxes, polygons (ray casting) and refusals (spec §2.4).

Boundaries count as inside, as in the benchmarks' scorers.
"""

from __future__ import annotations

from typing import Sequence


def in_box(point: Sequence[float] | None, box: Sequence[float]) -> bool:
  """``point`` inside the closed box ``[x1, y1, x2, y2]`` (ordered); no point: a miss."""
  if point is None:
    return False
  x, y = float(point[0]), float(point[1])
  x1, y1, x2, y2 = box
  return x1 <= x <= x2 and y1 <= y <= y2


def _on_segment(x: float, y: float, a: Sequence[float], b: Sequence[float]) -> bool:
  (ax, ay), (bx, by) = a, b
  cross = (bx - ax) * (y - ay) - (by - ay) * (x - ax)
  if abs(cross) > 1e-9 * max(1.0, abs(bx - ax) + abs(by - ay)):
    return False
  return min(ax, bx) <= x <= max(ax, bx) and min(ay, by) <= y <= max(ay, by)


def in_polygon(point: Sequence[float] | None, vertices: Sequence[Sequence[float]]) -> bool:
  """``point`` inside the polygon or on its boundary (even-odd ray casting)."""
  if point is None or len(vertices) < 3:
    return False
  x, y = float(point[0]), float(point[1])
  n = len(vertices)
  inside = False
  for i in range(n):
    a, b = vertices[i], vertices[(i + 1) % n]
    if _on_segment(x, y, a, b):
      return True
    (ax, ay), (bx, by) = a, b
    if (ay > y) != (by > y):
      x_cross = ax + (y - ay) * (bx - ax) / (by - ay)
      if x < x_cross:
        inside = not inside
  return inside


def is_refusal(point: Sequence[float] | None) -> bool:
  """A refusal answer: both coordinates negative (OSWorld-G's convention)."""
  return point is not None and float(point[0]) < 0 and float(point[1]) < 0


def polygon_from_flat(flat: Sequence[float]) -> list[tuple[float, float]]:
  """``[x1, y1, x2, y2, ...]`` -> vertex pairs (OSWorld-G's polygon layout)."""
  if len(flat) % 2 or len(flat) < 6:
    raise ValueError(f"expected an even number (>= 6) of polygon coordinates, got {len(flat)}")
  return [(float(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]
