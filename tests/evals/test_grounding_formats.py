"""The five grounding benchmarks' readers and writers on the committed fixture releases: the
layouts and schemas, targets converted into the resized frame, groups, and bad input."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxlab.core.errors import ConfigError, DataError
from jaxlab.evals import grounding_formats as gf
from jaxlab.models.qwen_vl import processor
from tests.evals import grounding_fixtures

ROOT = grounding_fixtures.ROOT


def _json_files(root):
  out = {}
  for d, _, names in os.walk(root):
    for n in names:
      if n.endswith(".json"):
        path = os.path.join(d, n)
        with open(path) as f:
          out[os.path.relpath(path, root)] = json.load(f)
  return out


def _records(name):
  """(relative file, row, record, image path) of the committed release, read as plain JSON."""
  root = os.path.join(ROOT, name)
  out = []
  for rel, recs in sorted(_json_files(root).items()):
    if rel in ("buckets.json",):
      continue
    for i, r in enumerate(recs):
      if name == "screenspot_pro":
        image = os.path.join(root, "images", r["img_filename"])
      elif name == "screenspot_v2":
        image = os.path.join(root, "screenspotv2_image", r["img_filename"])
      elif name == "mmbench_gui":
        image = os.path.join(root, "offline_images", r["platform"], r["image_path"])
      else:
        image = os.path.join(root, "images", r["image_path"])
      out.append((rel, i, r, image))
  return out


def _expected_region(name, rec, size, resized):
  """The target in the resized frame, computed here from the raw record (numpy)."""
  w, h = size
  scale = np.array(resized, float) / np.array(size, float)
  if name in ("screenspot_pro", "ui_vision"):
    return "box", np.array(rec["bbox"], float).reshape(2, 2) * scale
  if name == "screenspot_v2" or (name == "osworld_g" and rec["box_type"] == "bbox"):
    x, y, bw, bh = rec["bbox"] if name == "screenspot_v2" else rec["box_coordinates"]
    return "box", np.array([[x, y], [x + bw, y + bh]], float) * scale
  if name == "mmbench_gui":
    return "box", np.array(rec["bbox"], float).reshape(2, 2) * np.array(resized, float)
  if rec["box_type"] == "polygon":
    return "polygon", np.array(rec["box_coordinates"], float).reshape(-1, 2) * scale
  return "refusal", None


def test_committed_fixtures_are_what_the_writers_write(tmp_path):
  grounding_fixtures.write_all(str(tmp_path))
  for name in gf.BENCHMARKS:
    assert _json_files(tmp_path / name) == _json_files(os.path.join(ROOT, name)), name
    got = sorted(os.path.relpath(os.path.join(d, n), tmp_path / name)
                 for d, _, ns in os.walk(tmp_path / name) for n in ns)
    want = sorted(os.path.relpath(os.path.join(d, n), os.path.join(ROOT, name))
                  for d, _, ns in os.walk(os.path.join(ROOT, name)) for n in ns)
    assert got == want, name


@pytest.mark.parametrize("name", gf.BENCHMARKS)
def test_targets_land_in_the_resized_frame(name):
  items = {it.key: it for it in gf.read(name, os.path.join(ROOT, name))}
  records = _records(name)
  assert len(items) == len(records)
  changed = 0
  for rel, i, rec, image in records:
    it = items[f"{rel}#{i}"]
    size = Image.open(image).size
    rh, rw = processor.smart_resize(size[1], size[0])
    changed += (rw, rh) != size
    assert (it.frame.width, it.frame.height, *it.frame.resized_size) == (*size, rw, rh)
    assert os.path.samefile(it.image, image)
    kind, want = _expected_region(name, rec, size, (rw, rh))
    assert it.region.kind == kind
    if kind == "box":
      np.testing.assert_allclose(np.array(it.region.box).reshape(2, 2), want, atol=1e-6)
    elif kind == "polygon":
      np.testing.assert_allclose(np.array(it.region.polygon), want, atol=1e-6)
    assert it.instruction == rec.get("instruction", rec.get("prompt_to_evaluate"))
  assert changed > 0  # at least one screenshot is resized by the rule


def test_a_small_image_processor_changes_the_frame():
  cfg = processor.ImageProcessorConfig(min_pixels=56 * 56, max_pixels=28 * 28 * 20)
  it = gf.read("screenspot_pro", os.path.join(ROOT, "screenspot_pro"), image_config=cfg)[2]
  assert (it.frame.width, it.frame.height) == (256, 160)
  assert it.frame.resized_size == (140, 84)
  sx, sy = 140 / 256, 84 / 160
  np.testing.assert_allclose(it.region.box, np.array(it.original.box) * [sx, sy, sx, sy])


def test_groups_follow_each_benchmarks_schema():
  def groups(name, by):
    return [it.groups[by] for it in gf.read(name, os.path.join(ROOT, name))]
  assert sorted({g for (g,) in groups("screenspot_pro", "group")}) == ["CAD", "Dev", "Office"]
  assert ("Dev/icon",) in groups("screenspot_pro", "group/ui_type")
  assert {g for (g,) in groups("screenspot_v2", "platform")} == {"mobile", "desktop", "web"}
  buckets = groups("osworld_g", "bucket")
  assert buckets[0] == ("text_matching", "element_recognition")  # Label + Button
  assert ("refusal",) in buckets and ("fine_grained_manipulation", "layout_understanding") in [
      tuple(sorted(b)) for b in buckets]
  cats = {g for (g,) in groups("ui_vision", "category")}
  assert cats == {"Development", "Creativity", "Other"}  # VSCode, GIMP, an unknown app
  assert {g for (g,) in groups("ui_vision", "setting")} == set(gf.UI_VISION_SETTINGS)
  assert {g for (g,) in groups("mmbench_gui", "grounding_type")} == {"basic", "advanced"}


def test_osworld_without_a_bucket_map_and_with_the_releases_category_map(tmp_path):
  data = tmp_path / "osw"
  shutil.copytree(os.path.join(ROOT, "osworld_g"), data)
  os.remove(data / "buckets.json")
  buckets = {it.groups["bucket"] for it in gf.read("osworld_g", str(data))}
  assert buckets == {("unclassified",), ("refusal",)}
  uiv = tmp_path / "uiv"
  shutil.copytree(os.path.join(ROOT, "ui_vision"), uiv)
  (uiv / gf.UI_VISION_MAP_FILE).write_text(json.dumps({"Mine": ["myunknownapp"]}))
  cats = {it.groups["category"] for it in gf.read("ui_vision", str(uiv))}
  assert cats == {("Mine",), ("Other",)}


def test_limit_and_unknown_names():
  assert len(gf.read("osworld_g", os.path.join(ROOT, "osworld_g"), limit=2)) == 2
  with pytest.raises(ConfigError, match="unknown grounding benchmark 'screenspot'"):
    gf.read("screenspot", ROOT)


@pytest.mark.parametrize("name", gf.BENCHMARKS)
def test_a_folder_in_the_wrong_layout_is_named(name, tmp_path):
  with pytest.raises(DataError, match=f"{tmp_path}: not an? {gf.TITLES[name].split()[0]}"):
    gf.read(name, str(tmp_path))
  with pytest.raises(DataError, match="no such folder"):
    gf.read(name, str(tmp_path / "missing"))


def _copy(name, tmp_path):
  data = tmp_path / name
  shutil.copytree(os.path.join(ROOT, name), data)
  return data


def _edit(path, row, **fields):
  with open(path) as f:
    recs = json.load(f)
  for k, v in fields.items():
    if v is KeyError:
      del recs[row][k]
    else:
      recs[row][k] = v
  with open(path, "w") as f:
    json.dump(recs, f)


# (benchmark, annotation file, row, edit, field named, words of the message)
BAD_ROWS = [
    ("screenspot_pro", "annotations/vscode_linux.json", 1, {"bbox": [1, 2, 3]}, "bbox",
     "expected a list of 4 numbers"),
    ("screenspot_pro", "annotations/vscode_linux.json", 0, {"bbox": [150, 10, 260, 30]}, "bbox",
     "outside its 256x160 image"),
    ("screenspot_pro", "annotations/word_windows.json", 0, {"img_size": [300, 90]}, "img_size",
     "expected the screenshot's size [240, 150]"),
    ("screenspot_pro", "annotations/word_windows.json", 1, {"ui_type": KeyError}, "ui_type",
     "no such field"),
    ("screenspot_pro", "annotations/word_windows.json", 1, {"img_filename": "gone.png"},
     "img_filename", "not found"),
    ("screenspot_v2", "screenspot_web_v2.json", 1, {"bbox": [10, 10, -4, 5]}, "bbox",
     "w, h >= 0"),
    ("screenspot_v2", "screenspot_web_v2.json", 0, {"instruction": 7}, "instruction",
     "expected a non-empty string"),
    ("osworld_g", "OSWorld-G_refined.json", 3, {"box_type": "circle"}, "box_type",
     "expected one of bbox, polygon, refusal"),
    ("osworld_g", "OSWorld-G_refined.json", 6, {"box_coordinates": [1, 2, 3, 4, 5]},
     "box_coordinates", "even number"),
    ("osworld_g", "OSWorld-G_refined.json", 7, {"box_coordinates": [100, 10, 300, 10, 300, 30]},
     "box_coordinates", "outside its 256x160 image"),
    ("osworld_g", "OSWorld-G_refined.json", 2, {"GUI_types": "Button"}, "GUI_types",
     "expected a list of strings"),
    ("ui_vision", "annotations/element_grounding/element_grounding_spatial.json", 0,
     {"prompt_to_evaluate": KeyError}, "prompt_to_evaluate", "no such field"),
    ("mmbench_gui", "L2_annotations.json", 4, {"bbox": [0.1, 0.2, 1.5, 0.4]}, "bbox",
     "fractions of the image"),
    ("mmbench_gui", "L2_annotations.json", 5, {"platform": "linux"}, "image_path",
     "not found"),
]


@pytest.mark.parametrize("name,rel,row,edit,field,words", BAD_ROWS)
def test_a_bad_record_names_file_row_and_field(name, rel, row, edit, field, words, tmp_path):
  data = _copy(name, tmp_path)
  _edit(data / rel, row, **edit)
  with pytest.raises(DataError) as err:
    gf.read(name, str(data))
  msg = str(err.value)
  assert msg.startswith(f"{data / rel} row {row}: field '{field}': "), msg
  assert words in msg and "\n" not in msg


def test_unreadable_files_and_edges(tmp_path):
  data = _copy("osworld_g", tmp_path)
  path = data / "OSWorld-G_refined.json"
  path.write_text('{"not": "a list"}')
  with pytest.raises(DataError, match="expected a JSON list of records"):
    gf.read("osworld_g", str(data))
  path.write_text("[1, 2")
  with pytest.raises(DataError, match=r"OSWorld-G_refined.json: not JSON"):
    gf.read("osworld_g", str(data))
  path.write_text("[1]")
  with pytest.raises(DataError, match=r"row 0: expected a JSON object"):
    gf.read("osworld_g", str(data))
  # A broken screenshot; MMBench-GUI's -1 edge value reads as 0.
  data = _copy("mmbench_gui", tmp_path)
  (data / "offline_images" / "web" / "shot_2.png").write_bytes(b"not a png")
  with pytest.raises(DataError, match=r"row 4: field 'image_path': screenshot .* not a readable"):
    gf.read("mmbench_gui", str(data))
  data = _copy("mmbench_gui", tmp_path / "b")
  _edit(data / "L2_annotations.json", 0, bbox=[-1, -1, 0.5, 0.5])
  it = gf.read("mmbench_gui", str(data))[0]
  assert it.region.box == (0.0, 0.0, 126.0, 84.0)  # half of 252x168


def test_writers_refuse_targets_their_schema_cannot_hold(tmp_path):
  im = grounding_fixtures.screenshot(240, 150, 0)
  for name in ("screenspot_pro", "screenspot_v2", "ui_vision", "mmbench_gui"):
    with pytest.raises(ValueError, match="boxes only"):
      gf.write_fixture(name, [gf.Screen(im, "a.png", "x", gf.REFUSAL)], str(tmp_path / name))
