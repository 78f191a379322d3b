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


def test_polygon_interior_boundary_and_vertices():
  assert geometry.in_polygon((5, 5), SQUARE)
  for p in [(0, 0), (10, 10), (5, 0), (10, 5), (0, 7.5)]:  # vertices and edges count
    assert geometry.in_polygon(p, SQUARE), p
  for p in [(-1, 5), (11, 5), (5, 10.5), None]:
    assert not geometry.in_polygon(p, SQUARE)
  assert not geometry.in_polygon((1, 1), [(0, 0), (5, 5)])  # fewer than 3 vertices


def test_concave_polygon():
  assert geometry.in_polygon((1, 8), U_SHAPE)  # left arm
  assert geometry.in_polygon((8, 8), U_SHAPE)  # right arm
  assert geometry.in_polygon((5, 2), U_SHAPE)  # the base
  assert not geometry.in_polygon((5, 7), U_SHAPE)  # inside the notch
  assert geometry.in_polygon((5, 4), U_SHAPE)  # on the notch's bottom edge
  assert geometry.in_polygon((7, 6), U_SHAPE)  # on the notch's side


def test_polygon_matches_the_box_on_rectangles_and_is_orientation_free():
  box = (2, 3, 8, 9)
  rect = [(2, 3), (8, 3), (8, 9), (2, 9)]
  for x in range(0, 11):
    for y in range(0, 11):
      p = (x + 0.5 * (x % 2), y)
      assert geometry.in_polygon(p, rect) == geometry.in_box(p, box)
      assert geometry.in_polygon(p, rect[::-1]) == geometry.in_box(p, box)


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
