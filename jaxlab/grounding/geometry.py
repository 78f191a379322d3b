"""Is a point inside a region: closed boxes, polygons (ray casting) and refusals (spec §2.4).

Box boundaries count as inside; polygon boundaries as the reference scorer's ray casting
counts them (:func:`in_polygon`).
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


def in_polygon(point: Sequence[float] | None, vertices: Sequence[Sequence[float]]) -> bool:
  """``point`` inside the polygon by the reference scorer's ray casting (GroundCUA's
  ``eval/prompts.py``): count the edges that a ray from the point towards +x meets, each edge
  spanning the half-open height range ``(lower, upper]`` and met where its crossing is at or
  right of the point; an odd count is inside.

  Boundary points follow from that rule, not from a closed region: on an axis-aligned
  rectangle (y pointing down) the right and bottom edges count as inside, the left and top
  edges as outside. The benchmark's own numbers were computed this way.
  """
  if point is None or len(vertices) < 3:
    return False
  x, y = float(point[0]), float(point[1])
  n = len(vertices)
  crossings = 0
  for i in range(n):
    (ax, ay), (bx, by) = vertices[i], vertices[(i + 1) % n]
    if min(ay, by) < y <= max(ay, by):  # never true for a horizontal edge
      if x <= (y - ay) * (bx - ax) / (by - ay) + ax:
        crossings += 1
  return crossings % 2 == 1


def is_refusal(point: Sequence[float] | None) -> bool:
  """A refusal answer: both coordinates negative (OSWorld-G's convention)."""
  return point is not None and float(point[0]) < 0 and float(point[1]) < 0


def polygon_from_flat(flat: Sequence[float]) -> list[tuple[float, float]]:
  """``[x1, y1, x2, y2, ...]`` -> vertex pairs (OSWorld-G's polygon layout)."""
  if len(flat) % 2 or len(flat) < 6:
    raise ValueError(f"expected an even number (>= 6) of polygon coordinates, got {len(flat)}")
  return [(float(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]
