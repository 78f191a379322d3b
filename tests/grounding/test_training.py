"""GroundCUA rows as LLM task rows: the ``groundcua`` verifier (held-out point-in-box
accuracy) and a short SFT run of a tiny Qwen2.5-VL on synthetic screens scored by it."""

import json
import os

import numpy as np
import pytest

from jaxlab.core import config as config_lib
from jaxlab.core.mesh import make_mesh
from jaxlab.grounding import answer, schema, synthetic
from jaxlab.llm import sft, tasks
from tests.models.qwen_vl import tiny

BOX = "[100, 50, 200, 90.5]"


@pytest.mark.parametrize("completion,correct", [
    (answer.format_answer(150, 70), True),  # inside
    (answer.format_answer(100, 50), True),  # a corner: the box is closed
    (answer.format_answer(200, 90), True),  # on the right edge
    (answer.format_answer(150, 91), False),  # just below (90.5 < 91)
    (answer.format_answer(99, 70), False),  # just left
    (answer.format_answer(0, 0), False),
    # The evaluation's fallback: the block's two integers when its JSON does not parse.
    ('<tool_call>{"coordinate": [120, 60]</tool_call>', True),
    ("click at (150, 70)", False),  # no call block: unparseable, a miss
    ("<tool_call>[1, 2, 3]</tool_call>", False),  # three integers: no point
    ("", False),
])
def test_groundcua_verifier_is_point_in_closed_box(completion, correct):
  assert tasks.verify("groundcua", completion, BOX) is correct


def test_groundcua_extract_and_box_order():
  assert tasks.extract_answer("groundcua", answer.format_answer(7, -3)) == "7,-3"
  assert tasks.extract_answer("groundcua", "no call") is None
  assert tasks.get_task("groundcua").equal("150,70", "[200, 90, 100, 50]")  # swapped corners
  assert not tasks.get_task("groundcua").equal("150,70", "not a box")


@pytest.fixture(scope="module")
def screens(tmp_path_factory):
  """Two training screens of app 0 and one held-out screen of app 5, 3 instructions each."""
  root = tmp_path_factory.mktemp("groundcua")
  out = {}
  for split, n, apps, seed in (("train", 2, (0,), 0), ("heldout", 1, (5,), 1)):
    d = str(root / split)
    synthetic.write_dataset(d, n, seed, apps, ((256, 160),), instructions_per_screen=3)
    out[split] = os.path.join(d, "tasks.jsonl")
  return out


def test_task_rows_carry_box_answer_and_target_call(screens):
  rows = tasks.load_jsonl(screens["train"])  # valid task rows
  for r in rows:
    assert r["task"] == schema.TASK_NAME
    assert json.loads(r["answer"]) == r["gt_bbox"]
    assert tasks.verify("groundcua", r["gt_response"], r["answer"])  # the centre is inside
    assert f"{r['image_size'][0]}x{r['image_size'][1]}" in r["system"]
  assert tasks.accuracy(rows, [answer.format_answer(-5, -5)] * len(rows))["all"] == 0.0


def test_short_sft_run_scores_heldout_with_the_groundcua_verifier(screens, tmp_path):
  c = tiny.sft_config(screens["train"], screens["heldout"], "{system}\n{image}{question}\n",
                      "{gt_response}", steps=3, eval_rows=3, max_new_tokens=6, log_every=3)
  sft.run(c, str(tmp_path / "run"), make_mesh(), progress=False)
  records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert np.isfinite(records[-1]["train/loss"])
  samples = [json.loads(line) for line in open(tmp_path / "run" / "eval_samples.jsonl")]
  heldout = tasks.load_jsonl(screens["heldout"])
  assert [s["answer"] for s in samples] == [r["answer"] for r in heldout]
  assert [s["correct"] for s in samples] == [
      tasks.point_in_box(tasks.extract_point(s["completion"]), s["answer"]) for s in samples]
  assert records[-1]["eval/accuracy"] == np.mean([s["correct"] for s in samples])


def test_user_system_prompt_file_renders_each_rows_resized_size(screens, tmp_path):
  """The 3B configs take the paper's prompt from a file: its JSON braces survive, and each
  prompt names its own row's resized resolution; a missing file is one clear error."""
  from jaxlab.core.errors import ConfigError  # pylint: disable=import-outside-toplevel
  prompt = tmp_path / "system.txt"
  prompt.write_text('Use {"name": "computer_use"} on a {width}x{height} screen.\n')
  fmt = schema.system_format(schema.read_system_template(str(prompt)))
  row = tasks.load_jsonl(screens["train"])[0]
  w, h = row["image_size"]
  assert fmt.format(**row) == f'Use {{"name": "computer_use"}} on a {w}x{h} screen.'
  assert schema.system_format(schema.SYSTEM_TEMPLATE).format(**row) == row["system"]
  with pytest.raises(ConfigError, match="nope.txt"):
    schema.read_system_template(str(tmp_path / "nope.txt"))
  for name in ("sft_3b", "rl_3b"):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "groundcua",
                        name + ".py")
    mod = config_lib.load_module(path)
    c = mod.get_config(str(prompt))
    text = c.data.prompt_format.format(**row)
    assert f"{w}x{h} screen.<|im_end|>" in text and text.endswith("assistant\n")
    assert c.data.prompt_format.format(**row) != mod.get_config().data.prompt_format.format(
        **row)


def test_gpu_size_of_the_tiny_configs():
  """configs/groundcua/gpu.sh's arms: the 896x560 data, every image's 2,560 patches, the §2.7
  GPU model in both stages (RL starts from the SFT export, so the shapes must agree); a size
  other than cpu / gpu is refused."""
  here = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "groundcua")
  s, r = (config_lib.load_file(os.path.join(here, f), "gpu") for f in ("sft_tiny.py",
                                                                        "rl_tiny.py"))
  for c in (s, r):
    assert c.data.train_files == ("runs/groundcua_gpu_data/train/tasks.jsonl",)
    assert c.data.max_patches == 2560 == (896 // 14) * (560 // 14)
    assert c.dtype == "bfloat16"
  assert (s.model.hidden_size, s.model.num_layers, s.model.vision.hidden_size,
          s.model.vision.depth) == (384, 6, 384, 6)
  assert config_lib.load_file(os.path.join(here, "sft_tiny.py")).data.max_patches == 308
  with pytest.raises(ValueError, match="expected cpu or gpu"):
    config_lib.load_file(os.path.join(here, "rl_tiny.py"), "tpu")
