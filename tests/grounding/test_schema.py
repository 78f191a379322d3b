"""GroundCUA record schemas: round trips, and one-line errors naming file, row and field."""

import json
import os

import pytest

from jaxlab.core.errors import DataError
from jaxlab.grounding import schema, synthetic
from jaxlab.models.qwen_vl import processor


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("groundcua"))
  synthetic.write_dataset(out, 2, seed=0, apps=(1,), sizes=((256, 160),),
                          instructions_per_screen=4)
  return out


def _one(pattern_dir):
  name = sorted(os.listdir(pattern_dir))[0]
  return os.path.join(pattern_dir, name)


def _annotation_file(root):
  return _one(_one(os.path.join(root, "data")))


def _rewrite_json(path, rows, tmp_path, name):
  new = os.path.join(os.path.dirname(path), name)
  with open(new, "w") as f:
    json.dump(rows, f)
  return new


def test_annotation_errors_name_file_index_and_field(dataset, tmp_path):
  path = _annotation_file(dataset)
  rows = json.load(open(path))
  assert len(schema.load_annotations(path)) == len(rows)
  cases = [
      ({"bbox": [0, 0, 9999, 10]}, r"\[2\]: field 'bbox': box .* lies outside its image of "
                                   r"256x160"),
      ({"bbox": [0, 0, 10]}, r"\[2\]: field 'bbox': expected a list of 4 numbers"),
      ({"bbox": "0 0 1 1"}, r"\[2\]: field 'bbox'"),
      ({"text": 5}, r"\[2\]: field 'text': expected a string"),
      ({"category": "Widget"}, r"\[2\]: field 'category': expected one of Button"),
      ({"image_path": "Nope/missing.png"}, r"\[2\]: screenshot .*missing.png' does not exist"),
  ]
  for i, (change, msg) in enumerate(cases):
    bad = [dict(r) for r in rows]
    bad[2].update(change)
    f = _rewrite_json(path, bad, tmp_path, f"bad{i}.json")
    try:
      with pytest.raises(DataError, match=msg) as err:
        schema.load_annotations(f)
      assert str(err.value).startswith(f) and "\n" not in str(err.value)
    finally:
      os.remove(f)


def test_annotations_swap_reversed_corners_and_allow_no_category(dataset, tmp_path):
  path = _annotation_file(dataset)
  rows = json.load(open(path))
  x1, y1, x2, y2 = rows[0]["bbox"]
  rows[0]["bbox"] = [x2, y2, x1, y1]
  rows[1].pop("category")
  f = _rewrite_json(path, rows, tmp_path, "swapped.json")
  try:
    got = schema.load_annotations(f)
  finally:
    os.remove(f)
  assert got[0].bbox == (x1, y1, x2, y2) and got[1].category is None
  assert "category" not in got[1].to_json()


def test_bad_json_and_wrong_top_level(tmp_path):
  p = tmp_path / "x.json"
  p.write_text('[{"a": 1},\n oops]')
  with pytest.raises(DataError, match=r"x.json: line 2: invalid JSON"):
    schema.load_annotations(str(p))
  p.write_text('{"image_path": "a.png"}')
  with pytest.raises(DataError, match="expected a JSON list of records, got dict"):
    schema.load_annotations(str(p))
  with pytest.raises(DataError, match="does not exist"):
    schema.load_annotations(str(tmp_path / "none.json"))


def test_instruction_records_and_errors(dataset, tmp_path):
  rows = [
      {"id": "h1", "bbox": [1, 2, 30, 20], "text": "Save", "category": "Button",
       "platform": "App", "instruction": "Click Save",
       "all_instructions": {"description": "d", "functional_instruction": "f",
                            "simple_instruction": "Click Save"}},
      {"id": "h1", "coordinate": [10, 5], "platform": "App", "instruction": "the icon"},
  ]
  p = tmp_path / "mixed.json"
  p.write_text(json.dumps(rows))
  a, b = schema.load_instructions(str(p))
  assert isinstance(a, schema.InstructionRecord) and a.to_json() == rows[0]
  assert isinstance(b, schema.CoordinateInstruction) and b.to_json() == rows[1]
  bad = json.loads(json.dumps(rows))
  del bad[0]["all_instructions"]["simple_instruction"]
  p.write_text(json.dumps(bad))
  with pytest.raises(DataError, match=r"mixed.json\[0\]: field "
                                      r"'all_instructions.simple_instruction'"):
    schema.load_instructions(str(p))
  bad = json.loads(json.dumps(rows))
  bad[1]["coordinate"] = [1, "2"]
  p.write_text(json.dumps(bad))
  with pytest.raises(DataError, match=r"mixed.json\[1\]: field 'coordinate'"):
    schema.load_instructions(str(p))
  # Against the dataset, the screenshot must exist.
  p.write_text(json.dumps(rows))
  with pytest.raises(DataError, match=r"mixed.json\[0\]: screenshot .*h1.png' does not exist"):
    schema.load_instructions(str(p), dataset)


def test_recover_box_takes_the_containing_box_with_the_nearest_centre():
  anns = [schema.Annotation("a.png", (0, 0, 100, 100), "panel"),
          schema.Annotation("a.png", (10, 10, 20, 20), "icon"),
          schema.Annotation("a.png", (18, 10, 40, 20), "wide")]
  assert schema.recover_box((15, 15), anns) == (10, 10, 20, 20)
  assert schema.recover_box((19, 15), anns) == (10, 10, 20, 20)  # centre 15 beats 29
  assert schema.recover_box((30, 15), anns) == (18, 10, 40, 20)
  assert schema.recover_box((60, 60), anns) == (0, 0, 100, 100)
  assert schema.recover_box((160, 60), anns) is None


def _rewrite_line(path, line_no, change, tmp_path):
  lines = open(path).read().splitlines()
  row = json.loads(lines[line_no - 1])
  change(row)
  lines[line_no - 1] = json.dumps(row)
  new = os.path.join(os.path.dirname(path), "bad.jsonl")
  with open(new, "w") as f:
    f.write("\n".join(lines) + "\n")
  return new


@pytest.mark.parametrize("change,msg", [
    (lambda r: r.update(gt_bbox=[0, 0, 500, 10]), r":3: field 'gt_bbox': box .* outside"),
    (lambda r: r.update(gt_bbox=[0, 0, 1]), r":3: field 'gt_bbox': expected a list of 4"),
    (lambda r: r.update(image_size=[256, 160]), r":3: field 'image_size': \[256, 160\] but the "
                                                r"resize rule .* gives \[252, 168\]"),
    (lambda r: r.update(original_size=[300, 160]), r":3: field 'original_size'"),
    (lambda r: r.update(images=["images/missing.png"]), r":3: screenshot .* does not exist"),
    (lambda r: r.update(images="x.png"), r":3: field 'images'"),
    (lambda r: r.pop("instruction"), r":3: field 'instruction': expected a non-empty string"),
])
def test_rl_rows_errors(dataset, tmp_path, change, msg):
  path = _rewrite_line(os.path.join(dataset, "rl.jsonl"), 3, change, tmp_path)
  try:
    with pytest.raises(DataError, match=msg):
      schema.load_rl(path, image_config=processor.ImageProcessorConfig())
  finally:
    os.remove(path)


def test_rl_rows_written_for_another_resize_setting_are_refused(dataset):
  other = processor.ImageProcessorConfig(min_pixels=100_000)
  with pytest.raises(DataError, match=r"rl.jsonl:1: field 'image_size'.*another setting"):
    schema.load_rl(os.path.join(dataset, "rl.jsonl"), image_config=other)


@pytest.mark.parametrize("change,msg", [
    (lambda r: r["conversations"][1].update(value='{"name": "computer_use"}'),
     r":2: field 'conversations\[1\].value': expected a computer_use call"),
    (lambda r: r["conversations"][0].update(value="no image token"),
     r":2: field 'conversations\[0\].value'"),
    (lambda r: r["conversations"].reverse(), r":2: field 'conversations\[0\]'"),
    (lambda r: r["conversations"][1].update(
        value=r["conversations"][1]["value"].replace("[", "[900, 900, ").replace(
            "900, 900, ", "").replace("coordinate\": [", "coordinate\": [9000")),
     r":2: field 'conversations\[1\].value': point .* outside the resized image of 252x168"),
])
def test_sft_rows_errors(dataset, tmp_path, change, msg):
  path = _rewrite_line(os.path.join(dataset, "sft.jsonl"), 2, change, tmp_path)
  try:
    with pytest.raises(DataError, match=msg):
      schema.load_sft(path, image_config=processor.ImageProcessorConfig())
  finally:
    os.remove(path)


def test_jsonl_bad_line(tmp_path):
  p = tmp_path / "rl.jsonl"
  p.write_text('{"system": ""}\n')
  with pytest.raises(DataError, match=r"rl.jsonl:1: field 'images'"):
    schema.load_rl(str(p))
  p.write_text('\n{broken\n')
  with pytest.raises(DataError, match=r"rl.jsonl:2: invalid JSON"):
    schema.load_rl(str(p))


def test_system_prompt_template_keeps_json_braces():
  assert "1932x1092" in schema.system_prompt(1932, 1092)
  tpl = 'Tools: {"name": "computer_use"} resolution {width}x{height}'
  assert schema.system_prompt(10, 20, tpl) == 'Tools: {"name": "computer_use"} resolution 10x20'
  assert json.loads(schema.tool_json())[0]["function"]["name"] == "computer_use"
