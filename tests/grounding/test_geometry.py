"""Point-in-region tests: closed boxes, polygons by ray casting, refusals (spec §2.4)."""

import pytest

from jaxlab.grounding import geometry

SQUARE = [(0, 0), (10, 0), (10, 10), (0, 10)]
# A "U": the notch x in (3, 7), y in (4, 10] is outside.
U_SHAPE = [(0, 0), (10, 0), (10, 10), (7, 10), (7, 4), (3, 4), (3, 10), (0, 10)]


def test_box_is_closed():
  box = (0, 0, 10, 5)
  for p in [(0, 0), (10, 5), (5, 0), (10, 2.5), (3, 3)]:
    assert geometry.in_box(p, box)
  for p in [(-0.01, 2), (10.01, 2), (5, 5.01), None]:
    assert not geometry.in_box(p, box)


def _reference_crossings(point, polygon):
  """The reference scorer's rule written from its description (spec §2.4, GroundCUA's
  ``eval/prompts.py``), by a different route: per edge, the parametric point where it meets
  the horizontal line through ``point``; half-open in height, at or right of the point."""
  x, y = point
  odd = False
  for a, b in zip(polygon, polygon[1:] + polygon[:1]):
    lo, hi = sorted((a[1], b[1]))
    if lo == hi or not lo < y <= hi:
      continue
    t = (y - a[1]) / (b[1] - a[1])
    odd ^= x <= a[0] + t * (b[0] - a[0])
  return odd


def test_polygon_interior_boundary_and_vertices():
  assert geometry.in_polygon((5, 5), SQUARE)
  # Boundaries as the reference's ray casting counts them: right and bottom edges (y down)
  # inside, left and top edges outside, on either vertex order.
  for poly in (SQUARE, SQUARE[::-1]):
    for p in [(10, 10), (10, 5), (5, 10), (10, 0.5)]:
      assert geometry.in_polygon(p, poly), p
    for p in [(0, 0), (5, 0), (0, 7.5), (10, 0), (0, 10), (-1, 5), (11, 5), (5, 10.5), None]:
      assert not geometry.in_polygon(p, poly), p
  assert not geometry.in_polygon((1, 1), [(0, 0), (5, 5)])  # fewer than 3 vertices


def test_concave_polygon():
  assert geometry.in_polygon((1, 8), U_SHAPE)  # left arm
  assert geometry.in_polygon((8, 8), U_SHAPE)  # right arm
  assert geometry.in_polygon((5, 2), U_SHAPE)  # the base
  assert not geometry.in_polygon((5, 7), U_SHAPE)  # inside the notch
  assert geometry.in_polygon((5, 4), U_SHAPE)  # on the notch's bottom edge
  assert not geometry.in_polygon((7, 6), U_SHAPE)  # the notch's right side: the arm's left
  assert geometry.in_polygon((3, 6), U_SHAPE)  # the notch's left side: the arm's right


def test_polygon_equals_the_reference_rule_on_a_grid_of_edge_points():
  tri = [(0, 0), (8, 2), (3, 9)]
  for poly in (SQUARE, U_SHAPE, tri, tri[::-1]):
    for x in range(-1, 12):
      for y in range(-1, 12):
        for p in ((x, y), (x + 0.5, y), (x, y + 0.5)):
          assert geometry.in_polygon(p, poly) == _reference_crossings(p, poly), (poly, p)


def test_polygon_matches_the_box_inside_rectangles_and_is_orientation_free():
  box = (2, 3, 8, 9)
  rect = [(2, 3), (8, 3), (8, 9), (2, 9)]
  for x in range(0, 11):
    for y in range(0, 11):
      p = (x + 0.5 * (x % 2), y)
      assert geometry.in_polygon(p, rect) == geometry.in_polygon(p, rect[::-1])
      on_edge = x in (2, 8) or y in (3, 9)
      if not on_edge:  # away from the boundary, where the two rules agree
        assert geometry.in_polygon(p, rect) == geometry.in_box(p, box), p


def test_refusal_needs_both_coordinates_negative():
  assert geometry.is_refusal((-1, -1))
  assert not geometry.is_refusal((-1, 5))
  assert not geometry.is_refusal((0, -3))
  assert not geometry.is_refusal(None)


def test_polygon_from_flat():
  assert geometry.polygon_from_flat([0, 0, 4, 0, 4, 3]) == [(0, 0), (4, 0), (4, 3)]
  with pytest.raises(ValueError):
    geometry.polygon_from_flat([0, 0, 4, 0, 4])
  with pytest.raises(ValueError):
    geometry.polygon_from_flat([0, 0, 4, 0])
