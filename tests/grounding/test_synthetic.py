"""Synthetic desktop screens and their instructions: determinism, exact boxes, filters,
unambiguous targets, and a written dataset that loads back through the validating loaders."""

import glob
import json
import os

import numpy as np
import pytest

from jaxlab.core.errors import ConfigError
from jaxlab.grounding import answer, frames, geometry, reward, schema
from jaxlab.grounding import instructions as instr_lib
from jaxlab.grounding import synthetic
from jaxlab.models.qwen_vl import processor

SIZES = [(256, 160), (320, 200)]


def _png(image) -> bytes:
  import io  # pylint: disable=import-outside-toplevel
  buf = io.BytesIO()
  image.save(buf, format="PNG")
  return buf.getvalue()


def test_same_seed_same_pixels_and_records_other_seed_differs():
  a_img, a_el = synthetic.generate_screen(7, 256, 160, 3)
  b_img, b_el = synthetic.generate_screen(7, 256, 160, 3)
  assert _png(a_img) == _png(b_img) and a_el == b_el
  c_img, _ = synthetic.generate_screen(8, 256, 160, 3)
  assert synthetic.screen_hash(c_img) != synthetic.screen_hash(a_img)
  rng = lambda: np.random.default_rng(0)  # pylint: disable=unnecessary-lambda-assignment
  assert (instr_lib.instructions_for_screen(a_el, 256, 160, rng())
          == instr_lib.instructions_for_screen(b_el, 256, 160, rng()))


def test_apps_differ_in_theme_layout_and_words():
  a, b = synthetic.make_app(0), synthetic.make_app(100)
  assert a == synthetic.make_app(0)
  assert a.platform != b.platform and a.theme != b.theme
  assert set(a.menu_words) != set(b.menu_words)


@pytest.mark.parametrize("seed,size", [(0, (256, 160)), (1, (320, 200)), (2, (896, 560)),
                                       (3, (1288, 812)), (4, (240, 150)),
                                       (5, (1920, 1080))])
def test_boxes_inside_the_image_and_leaves_disjoint(seed, size):
  image, elements = synthetic.generate_screen(seed, *size, seed % 5)
  assert image.size == size and image.mode == "RGB"
  w, h = size
  for e in elements:
    x1, y1, x2, y2 = e.bbox
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, e
    assert e.category in schema.CATEGORIES
  leaves = [e for e in elements if e.kind != "panel"]
  for i, a in enumerate(leaves):
    for b in leaves[i + 1:]:
      overlap = (min(a.bbox[2], b.bbox[2]) > max(a.bbox[0], b.bbox[0])
                 and min(a.bbox[3], b.bbox[3]) > max(a.bbox[1], b.bbox[1]))
      assert not overlap, (a, b)
  icons = [e for e in elements if e.kind == "icon"]
  assert 6 <= len(icons) <= 20
  assert len({(e.glyph, e.colour) for e in icons}) == len(icons)
  menus = [e for e in elements if e.kind == "menu"]
  assert 4 <= len(menus) <= 8


def test_boxes_cover_what_was_drawn():
  # Each icon's box holds its glyph colour, and the pixels just outside it do not.
  image, elements = synthetic.generate_screen(11, 320, 200, 1)
  px = np.asarray(image).astype(int)
  for e in elements:
    if e.kind != "icon":
      continue
    x1, y1, x2, y2 = e.bbox
    rgb = np.asarray(synthetic.COLOURS[e.colour])
    inside = np.abs(px[y1:y2, x1:x2] - rgb).sum(-1) == 0
    assert inside.sum() >= 4, e
    ring = np.abs(px[y1 - 1:y2 + 1, x1 - 1:x2 + 1] - rgb).sum(-1) == 0
    assert ring.sum() == inside.sum(), e  # no glyph pixel outside the box


def test_too_small_a_canvas_is_a_config_error():
  with pytest.raises(ConfigError, match="200x120: expected at least 240x150"):
    synthetic.generate_screen(0, 200, 120, 0)


def test_a_large_canvas_is_the_small_layout_scaled():
  big, big_el = synthetic.generate_screen(5, 768, 480, 2)  # k = 3
  small, small_el = synthetic.generate_screen(5, 256, 160, 2)
  assert synthetic.scale_of(768, 480) == 3
  assert [e.bbox for e in big_el] == [tuple(3 * v for v in e.bbox) for e in small_el]
  np.testing.assert_array_equal(np.asarray(big)[::3, ::3], np.asarray(small))


def test_filters_and_unambiguous_targets():
  for seed in range(6):
    w, h = SIZES[seed % 2]
    _, elements = synthetic.generate_screen(seed, w, h, seed)
    items = instr_lib.instructions_for_screen(elements, w, h, np.random.default_rng(seed))
    assert items
    kinds = {it.kind for it in items}
    assert kinds <= {"direct", "functional", "spatial"}
    visible = [instr_lib._norm(e.text) for e in elements if e.text_bearing]  # pylint: disable=protected-access
    for it in items:
      e = elements[it.element]
      share = e.area / (w * h)
      assert share <= (0.1 if e.text_bearing else 0.005) and len(e.text) <= 30
      assert e.kind != "panel"
      if e.kind in ("icon", "visual"):
        same = [o for o in elements if (o.glyph, o.colour) == (e.glyph, e.colour)]
        assert same == [e]
      elif e.text_bearing:
        assert visible.count(instr_lib._norm(e.text)) == 1  # pylint: disable=protected-access
      if it.kind == "functional":
        others = [instr_lib._functional(o) for o in elements if o is not e]  # pylint: disable=protected-access
        assert it.text not in others
  # The panel and over-long distractor lines exist but are never targets.
  _, elements = synthetic.generate_screen(0, 320, 200, 0)
  assert any(e.kind == "panel" for e in elements)
  assert not instr_lib.eligible(next(e for e in elements if e.kind == "panel"), 320 * 200)


def test_functional_strings_are_fixed_per_glyph_and_colour():
  pairs = [(g, c) for g in instr_lib.GLYPHS for c in instr_lib.COLOUR_NAMES]
  phrases = [instr_lib.icon_function(g, c) for g, c in pairs]
  assert len(set(phrases)) == len(pairs) == 40
  assert instr_lib.icon_function("triangle", "red") == instr_lib.icon_function("triangle", "red")
  assert all(len(instr_lib.icon_label(g, c)) <= 30 for g, c in pairs)


def test_spatial_instructions_name_a_true_neighbour():
  found = 0
  for seed in range(10):
    w, h = SIZES[seed % 2]
    _, elements = synthetic.generate_screen(seed, w, h, seed % 4)
    for it in instr_lib.instructions_for_screen(elements, w, h, np.random.default_rng(seed)):
      if it.kind != "spatial":
        continue
      found += 1
      t, a = elements[it.element], elements[it.anchor]
      assert t.kind == a.kind and t.region == a.region
      tc, ac = frames.center(t.bbox), frames.center(a.bbox)
      axis = 1 if it.relation in ("above", "below") else 0
      sign = 1 if it.relation in ("right", "below") else -1
      assert sign * (tc[axis] - ac[axis]) > 0, it
      # Immediate: no element of the group lies between them along that axis.
      lo, hi = sorted((tc[axis], ac[axis]))
      between = [e for e in elements if e.kind == t.kind and e.region == t.region
                 and lo < frames.center(e.bbox)[axis] < hi]
      assert not between, it
      # The anchor is named in the text as the target is not.
      name = f"{a.colour} {a.glyph}" if a.kind in ("icon", "visual") else f"'{a.text}'"
      assert name in it.text and it.relation in it.text
  assert found >= 10


def test_written_dataset_loads_back_and_targets_are_in_the_resized_frame(tmp_path):
  out = str(tmp_path / "ds")
  manifest = synthetic.write_dataset(out, 4, seed=3, apps=(0, 9), sizes=SIZES,
                                     instructions_per_screen=12)
  assert manifest["instructions"] == 48
  again = synthetic.write_dataset(str(tmp_path / "again"), 4, seed=3, apps=(0, 9), sizes=SIZES,
                                  instructions_per_screen=12)
  assert again == manifest
  for name in ("rl.jsonl", "sft.jsonl"):
    with open(os.path.join(out, name), "rb") as f1, \
        open(os.path.join(str(tmp_path / "again"), name), "rb") as f2:
      assert f1.read() == f2.read()

  anns = {}
  for path in sorted(glob.glob(os.path.join(out, "data", "*", "*.json"))):
    platform, digest = path.split(os.sep)[-2], os.path.basename(path)[:-5]
    rows = schema.load_annotations(path)
    assert all(a.image_path == f"{platform}/{digest}.png" for a in rows)
    anns[digest] = rows
  assert len(anns) == 4
  n_files = 0
  for name in schema.INSTRUCTION_FILES:
    recs = schema.load_instructions(os.path.join(out, "instruction_tuning", name), out)
    n_files += len(recs)
    for r in recs:
      if name in schema.COORDINATE_FILES:
        assert isinstance(r, schema.CoordinateInstruction)
        box = schema.recover_box(r.coordinate, anns[r.id])
        assert box is not None and frames.center(box) == pytest.approx(r.coordinate, abs=0.5)
      else:
        assert isinstance(r, schema.InstructionRecord)
        assert r.instruction in r.all_instructions.values()
  assert n_files == 48

  cfg = processor.ImageProcessorConfig()
  sft = schema.load_sft(os.path.join(out, "sft.jsonl"), image_config=cfg)
  rl = schema.load_rl(os.path.join(out, "rl.jsonl"), image_config=cfg)
  assert len(sft) == len(rl) == 48
  for s, r in zip(sft, rl):
    assert s.instruction == r.instruction
    f = frames.frame_for(*r.original_size, cfg)
    assert r.image_size == f.resized_size != r.original_size
    assert f"{f.resized_width}x{f.resized_height}" in r.system
    # The SFT target is the element's centre in the resized frame, inside gt_bbox, and a
    # perfect answer earns the top reward.
    assert geometry.in_box(s.point, r.gt_bbox)
    assert answer.parse(r.gt_response).point == s.point
    assert s.target_text() == r.gt_response
  rows = [json.loads(line) for line in open(os.path.join(out, "rl.jsonl"))]
  np.testing.assert_array_equal(
      reward.groundcua_reward(rows, [r["gt_response"] for r in rows]), np.ones(48))
  tasks = [json.loads(line) for line in open(os.path.join(out, "tasks.jsonl"))]
  assert [t["question"] for t in tasks] == [r.instruction for r in rl]
  assert [t["gt_response"] for t in tasks] == [r.gt_response for r in rl]
  assert [json.loads(t["answer"]) for t in tasks] == [list(r.gt_bbox) for r in rl]
  assert all(os.path.isfile(os.path.join(out, t["image"])) for t in tasks)
  np.testing.assert_array_equal(
      reward.groundcua_reward(tasks, [t["gt_response"] for t in tasks]), np.ones(48))


def test_cli_writes_a_dataset(tmp_path, capsys):
  rc = synthetic.main([f"--out={tmp_path}", "--num_screens=2", "--apps=4",
                       "--sizes=256x160", "--instructions_per_screen=3"])
  assert rc == 0 and "2 screens, 6 instructions" in capsys.readouterr().out
  assert synthetic.main([f"--out={tmp_path}", "--sizes=256by160"]) == 2
  assert "WIDTHxHEIGHT" in capsys.readouterr().err
