"""Grounding scorers: ``score_items`` on the committed fixtures against an independent numpy
computation (targets and groups taken from the raw JSON), and the region rules one by one:
polygons, refusals, empty targets, unparseable answers, MMBench-GUI's near-(1, 1) point."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from jaxlab.core.errors import DataError
from jaxlab.evals import grounding, grounding_formats as gf
from jaxlab.grounding import answer
from jaxlab.models.qwen_vl import processor
from tests.evals import grounding_fixtures
from tests.evals.test_grounding_formats import ROOT, _expected_region, _records


def _raw_groups(name, rel, rec):
  """The breakdown labels of a raw record, straight from each benchmark's schema."""
  if name == "screenspot_pro":
    return {"group": {rec["group"]}, "ui_type": {rec["ui_type"]},
            "group/ui_type": {rec["group"] + "/" + rec["ui_type"]},
            "application": {rec["application"]}}
  if name == "screenspot_v2":
    plat = rel.split("_")[1]
    return {"platform": {plat}, "data_type": {rec["data_type"]},
            "platform/data_type": {plat + "/" + rec["data_type"]}}
  if name == "osworld_g":
    with open(os.path.join(ROOT, name, "buckets.json")) as f:
      table = json.load(f)
    b = {k for k, v in table.items() if set(v) & set(rec["GUI_types"])}
    if rec["box_type"] == "refusal" or "/" in rec["GUI_types"]:
      b.add("refusal")
    return {"bucket": b or {"unclassified"}, "box_type": {rec["box_type"]}}
  if name == "ui_vision":
    cat = {"VSCode": "Development", "GIMP": "Creativity"}.get(rec["platform"], "Other")
    setting = rel.split("_")[-1][:-len(".json")]
    return {"setting": {setting}, "category": {cat}, "setting/category": {setting + "/" + cat}}
  return {"grounding_type": {rec["grounding_type"]}, "platform": {rec["platform"]},
          "grounding_type/platform": {rec["grounding_type"] + "/" + rec["platform"]},
          "data_type": {rec["data_type"]}}


def _inside_polygon(p, poly):
  """Even-odd rule by counting edge crossings of a ray to +x, in numpy (points exactly on an
  edge are avoided by the callers)."""
  a, b = poly, np.roll(poly, -1, axis=0)
  crosses = (a[:, 1] > p[1]) != (b[:, 1] > p[1])
  with np.errstate(divide="ignore", invalid="ignore"):
    xc = a[:, 0] + (p[1] - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
  return bool(np.sum(crosses & (p[0] < xc)) % 2)


def _predictions(items, rng):
  """A mix of answer texts per item: the target's centre (a hit), a point outside, (-1, -1),
  prose (no point) and the integer fallback (no JSON)."""
  out = {}
  for it in items:
    kind = rng.integers(0, 5)
    b = it.region.bounds()
    w, h = it.frame.resized_size
    if kind == 0 and b is not None:
      x, y = int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2)
      out[it.key] = answer.format_answer(x, y)
    elif kind == 1:
      out[it.key] = answer.format_answer(int(rng.integers(0, w)), int(rng.integers(0, h)))
    elif kind == 2:
      out[it.key] = answer.format_answer(-1, -1)
    elif kind == 3:
      out[it.key] = "I would click the save button."
    else:
      out[it.key] = f"<tool_call>left_click at {int(rng.integers(0, w))}, " \
                    f"{int(rng.integers(0, h))}</tool_call>"
  return out


def _numpy_scores(name, predictions):
  """Per-item (valid, correct) and per-group accuracy from the raw JSON, without the reader."""
  rows = {}
  for rel, i, rec, image in _records(name):
    size = Image.open(image).size
    rh, rw = processor.smart_resize(size[1], size[0])
    kind, region = _expected_region(name, rec, size, (rw, rh))
    text = predictions[f"{rel}#{i}"]
    nums = [int(v) for v in re.findall(r"-?\d+", text.split("<tool_call>")[-1])]
    valid = "<tool_call>" in text and len(nums) == 2
    p = np.array(nums, float) if valid else None
    if not valid:
      correct = False
    elif kind == "box":
      correct = bool(np.all((region[0] <= p) & (p <= region[1])))
    elif kind == "polygon":
      correct = _inside_polygon(p, region)
    else:
      correct = bool(np.all(p < 0))
    rows[f"{rel}#{i}"] = (valid, correct, _raw_groups(name, rel, rec))
  return rows


@pytest.mark.parametrize("name", gf.BENCHMARKS)
def test_accuracy_and_groups_equal_a_numpy_computation(name):
  items = gf.read(name, os.path.join(ROOT, name))
  rng = np.random.default_rng(sum(map(ord, name)))
  best = None
  for _ in range(3):  # keep the draw with the most hits, so every rule is exercised
    preds = _predictions(items, rng)
    ref = _numpy_scores(name, preds)
    hits = sum(c for _, c, _ in ref.values())
    if best is None or hits > best[0]:
      best = hits, preds, ref
  _, preds, ref = best
  spec = grounding.SPECS[name]
  got = grounding.score_items(items, preds, breakdowns=spec.breakdowns, macro_by=spec.macro_by,
                              num_bootstrap=200)
  assert [(r["valid"], r["correct"]) for r in got["per_item"]] == [
      ref[it.key][:2] for it in items]
  correct = np.array([ref[it.key][1] for it in items], float)
  valid = np.array([ref[it.key][0] for it in items], float)
  assert 0 < correct.sum() < len(items)
  assert got["micro"]["total_accuracy"] == pytest.approx(correct.mean())
  assert got["micro"]["format_error_rate"] == pytest.approx(1 - valid.mean())
  assert got["micro"]["valid_accuracy"] == pytest.approx(correct.sum() / valid.sum())
  lo, hi = got["micro"]["total_accuracy_ci"]
  assert lo <= correct.mean() <= hi
  for by in spec.breakdowns:
    want = {}
    for it in items:
      for g in ref[it.key][2][by]:
        want.setdefault(g, []).append(ref[it.key][1])
    table = got["breakdowns"][by]
    assert set(table) == set(want), by
    for g, cs in want.items():
      assert table[g]["n"] == len(cs)
      assert table[g]["total_accuracy"] == pytest.approx(np.mean(cs)), (by, g)
  if spec.macro_by:
    accs = [m["total_accuracy"] for m in got["breakdowns"][spec.macro_by].values()]
    assert got["macro"]["total_accuracy"] == pytest.approx(np.mean(accs))


def _item(region, key="k"):
  return gf.GroundingItem(key=key, image="x.png", instruction="x",
                          frame=gf.frames.Frame(100, 100, 100, 100), region=region,
                          original=region, groups={"g": ("a",)})


def _correct(region, prediction):
  return grounding.score_items([_item(region)], {"k": prediction},
                               num_bootstrap=10)["per_item"][0]["correct"]


def test_polygons_by_the_reference_ray_casting():
  ell = gf.polygon([(0, 0), (40, 0), (40, 10), (10, 10), (10, 40), (0, 40)])  # concave L
  assert _correct(ell, (5, 30)) and _correct(ell, (30, 5))
  assert not _correct(ell, (30, 30))  # in the hull, outside the L
  # Right-hand edges count, left-hand and top ones do not (the reference scorer's rule).
  assert _correct(ell, (10, 25)) and _correct(ell, (40, 5)) and _correct(ell, (5, 40))
  assert not _correct(ell, (0, 0)) and not _correct(ell, (0, 20)) and not _correct(ell, (20, 0))
  assert not _correct(ell, (41, 5)) and not _correct(ell, None)
  # Decimal points in the answer are truncated as the reference evaluator's int() does.
  assert _correct(ell, answer.format_answer(5, 30).replace("[5, 30]", "[5.9, 30.9]"))
  committed = {it.instruction: it for it in gf.read("osworld_g", os.path.join(ROOT, "osworld_g"))}
  tri = committed["click the triangle"]  # (20, 20), (80, 30), (40, 90) in 256x160 -> 252x168
  sx, sy = 252 / 256, 168 / 160
  assert tri.region.contains((45 * sx, 45 * sy)) and not tri.region.contains((75 * sx, 80 * sy))


def test_refusal_and_empty_targets():
  assert _correct(gf.REFUSAL, answer.format_answer(-1, -1))
  assert _correct(gf.REFUSAL, (-5, -200))
  for p in ((-1, 5), (0, 0), (3, -1), None, "no idea"):
    assert not _correct(gf.REFUSAL, p), p
  assert _correct(gf.EMPTY, None) and _correct(gf.EMPTY, "nothing to click")
  assert not _correct(gf.EMPTY, (3, 4))


def test_unparseable_answers_are_misses_never_crashes():
  box = gf.box(0, 0, 99, 99)
  for text in ("", "<tool_call>", "<tool_call>{\"coordinate\": [1, 2, 3]}</tool_call>",
               "<tool_call>{]</tool_call>", "[50, 50]", None, 42, ("a", "b"), (float("nan"), 1)):
    s = grounding.score_items([_item(box)], {"k": text}, num_bootstrap=10)
    assert s["per_item"][0] == {"key": "k", "point": None, "valid": False, "correct": False}
    assert s["micro"]["format_error_rate"] == 1.0 and s["micro"]["valid_accuracy"] is None


def test_mmbench_point_near_one_one_is_pixels_not_fractions():
  """MMBench-GUI's scorer reads [1, 1] as normalised (the bottom-right corner); ours reads the
  integer pixel (1, 1) of the resized frame, near the top-left corner."""
  items = {it.instruction: it for it in gf.read("mmbench_gui", os.path.join(ROOT, "mmbench_gui"))}
  top_left = items["click the top-left corner"]
  bottom_right = items["click the bottom-right corner"]
  one = answer.format_answer(1, 1)
  s = grounding.score_items([top_left, bottom_right], {top_left.key: one, bottom_right.key: one},
                            num_bootstrap=10)
  assert [r["correct"] for r in s["per_item"]] == [True, False]
  # Their reading would put the point at (1.0 * w, 1.0 * h): inside the bottom-right target.
  w, h = bottom_right.frame.resized_size
  assert bottom_right.region.contains((w, h)) and not top_left.region.contains((w, h))


def test_multi_label_groups_count_an_item_in_each_and_bad_calls_raise():
  items = [_item(gf.box(0, 0, 10, 10), "a"), _item(gf.box(0, 0, 10, 10), "b")]
  items[0] = gf.GroundingItem(**{**items[0].__dict__, "groups": {"g": ("x", "y")}})
  s = grounding.score_items(items, {"a": (5, 5), "b": (50, 50)}, num_bootstrap=10)
  assert {g: m["n"] for g, m in s["breakdowns"]["g"].items()} == {"a": 1, "x": 1, "y": 1}
  assert s["breakdowns"]["g"]["x"]["total_accuracy"] == 1.0
  with pytest.raises(DataError, match="no prediction"):
    grounding.score_items(items, {"a": None})
  with pytest.raises(DataError, match="appears twice"):
    grounding.score_items([items[1], items[1]], {"b": None})
  with pytest.raises(DataError, match="exactly one label"):
    grounding.score_items(items, {"a": None, "b": None}, macro_by="g")


def test_fixture_builder_targets_are_inside_their_images():
  for name in gf.BENCHMARKS:
    for s in grounding_fixtures.screens(name):
      b = s.region.bounds()
      if b is not None:
        assert 0 <= b[0] <= b[2] <= s.image.width and 0 <= b[1] <= b[3] <= s.image.height
