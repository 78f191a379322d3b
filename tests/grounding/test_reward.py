"""The GroundNext reward (spec §2.3): the spec's test vectors, its properties, the llm_rl hook."""

import math

import numpy as np
import pytest

from jaxlab.core.errors import DataError
from jaxlab.grounding import answer, reward

BOX = (100, 50, 200, 90)
IMAGE = (1000, 800)

# (point, n to 3 decimals, level): spec §2.3, box [100,50,200,90] in a 1000x800 image.
VECTORS = [
    ((150, 70), 1.000, 1.0),
    ((150, 50), 0.929, 1.0),
    ((120, 60), 0.415, 0.5),
    ((100, 50), 0.000, 0.1),
    ((210, 70), -0.009, -0.1),
    ((500, 400), -0.403, -0.5),
    ((900, 700), -0.868, -1.0),
]


@pytest.mark.parametrize("point,n,level", VECTORS)
def test_spec_vectors(point, n, level):
  # The spec's n are given to 3 decimals; its edge-midpoint 0.929 is 100 / sqrt(11600) =
  # 0.92848 (a rounding slip of the spec, checked exactly below), hence the 1e-3 tolerance.
  assert reward.normalized_distance(point, BOX, IMAGE) == pytest.approx(n, abs=1e-3)
  assert reward.score(point, BOX, IMAGE) == level


def test_edge_midpoint_exactly():
  assert reward.normalized_distance((150, 50), BOX, IMAGE) == pytest.approx(
      100 / math.sqrt(100**2 + 40**2), rel=1e-15)


def test_format_failure_scores_the_origin_not_minus_one():
  # The eighth vector: no point -> (0, 0), n = -0.105 -> -0.5.
  assert round(reward.normalized_distance((0, 0), BOX, IMAGE), 3) == -0.105
  assert reward.score(None, BOX, IMAGE) == -0.5
  s = reward.score_completion("I would click the save button", BOX, IMAGE)
  assert (s.reward, s.point, s.well_formed, s.hit) == (-0.5, None, False, False)
  # Float coordinates are a format failure for the reward's reading too.
  bad = '<tool_call>{"name": "computer_use", "arguments": {"action": "left_click", ' \
        '"coordinate": [150.0, 70.0]}}</tool_call>'
  assert reward.score_completion(bad, BOX, IMAGE).reward == -0.5


def test_unclosed_call_and_calls_the_paper_reward_fails_on():
  """A call cut off before ``</tool_call>`` is a format failure (-0.5 here, not the +1 of
  its point); JSON that is not an object makes the paper's reward fail: -1."""
  centre = '<tool_call>{"name": "computer_use", "arguments": {"action": "left_click", ' \
           '"coordinate": [150, 70]}}'
  assert reward.score_completion(centre + "</tool_call>", BOX, IMAGE).reward == 1.0
  assert reward.score_completion(centre, BOX, IMAGE).reward == -0.5
  for block in ("[150, 70]", '{"arguments": [150, 70]}'):
    s = reward.score_completion(f"<tool_call>{block}</tool_call>", BOX, IMAGE)
    assert (s.reward, s.point, s.well_formed) == (-1.0, None, False), block


def _independent_n(p, box, size):
  """n by brute force: corners and the clamped point written out from the definition."""
  x1, y1, x2, y2 = box
  corners = [(x1, y1), (x1, y2), (x2, y1), (x2, y2)]
  if x1 <= p[0] <= x2 and y1 <= p[1] <= y2:
    return 2 * min(math.dist(p, c) for c in corners) / math.dist((x1, y1), (x2, y2))
  q = (np.clip(p[0], x1, x2), np.clip(p[1], y1, y2))
  zs = [(0, 0), (size[0], 0), (0, size[1]), size]
  d = max(math.dist(z, (np.clip(z[0], x1, x2), np.clip(z[1], y1, y2))) for z in zs)
  return -math.dist(p, q) / d


def test_random_points_match_the_definition_and_levels_partition_n():
  rng = np.random.default_rng(0)
  for _ in range(300):
    x1, y1 = rng.uniform(0, 500, 2)
    box = (x1, y1, x1 + rng.uniform(1, 300), y1 + rng.uniform(1, 300))
    p = (rng.uniform(0, IMAGE[0]), rng.uniform(0, IMAGE[1]))  # n in [-1, 1] inside the image
    n = reward.normalized_distance(p, box, IMAGE)
    assert n == pytest.approx(_independent_n(p, box, IMAGE), rel=1e-12, abs=1e-12)
    assert -1 <= n <= 1
    expect = (1.0 if n >= 0.5 else 0.5 if n >= 0.1 else 0.1 if n >= 0 else -0.1 if n >= -0.1
              else -0.5 if n >= -0.5 else -1.0)
    assert reward.score(p, box, IMAGE) == expect


def test_inside_the_score_depends_on_the_nearest_corner_not_the_edge():
  box = (0, 0, 100, 100)
  # Every edge midpoint is on the boundary yet half a diagonal from the corners: n = 0.707.
  for p in [(50, 0), (100, 50), (50, 100), (0, 50)]:
    assert reward.normalized_distance(p, box, IMAGE) == pytest.approx(math.sqrt(0.5))
    assert reward.score(p, box, IMAGE) == 1.0
  assert reward.score((3, 3), box, IMAGE) == 0.1  # a corner region
  assert reward.score((15, 15), box, IMAGE) == 0.5
  # Symmetric under the box's reflections.
  for p in [(10, 30), (90, 30), (10, 70), (90, 70)]:
    assert reward.normalized_distance(p, box, IMAGE) == pytest.approx(
        reward.normalized_distance((10, 30), box, IMAGE))


def test_outside_the_normaliser_depends_on_where_the_box_sits():
  # The same 10-pixel gap to the right of the box, box near a corner vs in the middle.
  corner = reward.normalized_distance((110, 5), (0, 0, 100, 10), IMAGE)
  middle = reward.normalized_distance((560, 400), (450, 395, 550, 405), IMAGE)
  # The corner box's worst image corner is farther away, so the same gap weighs less.
  assert middle < corner < 0
  assert middle == pytest.approx(2 * corner)
  assert corner == pytest.approx(-10 / math.dist((100, 10), IMAGE))


def test_a_point_off_the_image_is_below_minus_one_and_scores_minus_one():
  assert reward.normalized_distance((-1500, -1200), BOX, IMAGE) < -1
  assert reward.score((-1500, -1200), BOX, IMAGE) == -1.0


def test_swapped_box_corners_are_ordered():
  assert reward.score((150, 70), (200, 90, 100, 50), IMAGE) == 1.0


@pytest.mark.parametrize("box", [(10, 10, 10, 10), ("a", 0, 5, 5), (0, 0, float("nan"), 5),
                                 (0, 0, 5)])
def test_any_error_scores_minus_one(box):
  assert reward.score((10, 10), box, IMAGE) == -1.0


def test_strict_hit_excludes_the_boundary():
  assert reward.strict_hit((150, 70), BOX)
  assert not reward.strict_hit((150, 50), BOX)  # on the edge: the reward's logged accuracy
  assert not reward.strict_hit(None, BOX)


def test_llm_rl_reward_reads_the_resized_frame_from_rows():
  rows = [{"gt_bbox": list(BOX), "image_size": list(IMAGE)}] * 4
  texts = [answer.format_answer(150, 70), answer.format_answer(900, 700), "no answer",
           answer.format_answer(150, 50) + answer.format_answer(1, 1)]
  r = reward.groundcua_reward(rows, texts)
  assert r.dtype == np.float32 and r.shape == (4,)
  np.testing.assert_array_equal(r, [1.0, -1.0, -0.5, 1.0])
  m = reward.groundcua_log_metrics(rows, texts)
  assert m["reward/format"] == 0.5  # the fourth has two calls
  assert m["reward/strict_hit"] == 0.25
  assert m["reward/mean"] == pytest.approx(0.125)


def test_llm_rl_loader_resolves_the_reward_by_name():
  from jaxlab.llm import rl  # pylint: disable=import-outside-toplevel
  fn = rl.get_reward_fn("jaxlab.grounding.reward:groundcua_reward")
  rows = [{"gt_bbox": list(BOX), "image_size": list(IMAGE), "question": "q"}]
  out = rl.score_rewards(fn, "groundcua", rows, [answer.format_answer(120, 60)], step=1)
  np.testing.assert_array_equal(out, [0.5])


@pytest.mark.parametrize("row,field", [({"image_size": [10, 10]}, "gt_bbox"),
                                       ({"gt_bbox": [0, 0, 1, 1]}, "image_size"),
                                       ({"gt_bbox": [0, 0, 1], "image_size": [9, 9]}, "gt_bbox")])
def test_a_bad_row_names_its_index_and_field(row, field):
  with pytest.raises(DataError, match=rf"reward row 1: field '{field}'"):
    reward.groundcua_reward([{"gt_bbox": [0, 0, 1, 1], "image_size": [9, 9]}, row], ["", ""])
