"""The GroundCUA study's per-run numbers: hand-built completions and task rows, the groups
counted by hand; a sample that does not match its task row is one DataError; the analyze
command writes one row per run and exits 2 without --tasks."""

import json
import math
import os
import subprocess
import sys

import pytest

from jaxlab.core import files
from jaxlab.core.errors import DataError
from jaxlab.grounding import answer, reward, study

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = [252, 168]


def _task(kind, box, element_size):
  return {"task": "groundcua", "question": f"{kind} {box}", "answer": json.dumps(box),
          "gt_bbox": box, "image_size": SIZE,
          "metadata": {"kind": kind, "resized_element_size": element_size}}


TASKS = [
    _task("direct", [0.0, 0.0, 100.0, 100.0], [100.0, 100.0]),     # large, clicked inside
    _task("functional", [10.0, 10.0, 20.0, 30.0], [10.0, 20.0]),   # small, clicked far away
    _task("spatial", [40.0, 40.0, 70.0, 44.0], [30.0, 4.0]),       # small, unparseable answer
    _task("direct", [100.0, 100.0, 130.0, 160.0], [30.0, 60.0]),   # large, not JSON inside
]
COMPLETIONS = [answer.format_answer(50, 50), answer.format_answer(200, 150), "no idea",
               "<tool_call>\nclick 110, 120\n</tool_call>"]


def _samples(completions=COMPLETIONS, tasks=TASKS):
  return [{"question": t["question"], "answer": t["answer"], "completion": c}
          for t, c in zip(tasks, completions)]


def test_groups_equal_hand_counts():
  out = study.summarize(study.scored(_samples(), TASKS))
  # The verifier reads the two integers of a call block that is not JSON (the benchmarks'
  # fallback: a hit); the reward does not (scored as the point (0, 0)), as in the paper.
  r = [reward.score((50, 50), TASKS[0]["gt_bbox"], SIZE),
       reward.score((200, 150), TASKS[1]["gt_bbox"], SIZE),
       reward.score(None, TASKS[2]["gt_bbox"], SIZE),
       reward.score(None, TASKS[3]["gt_bbox"], SIZE)]
  assert r[0] == 1.0 and r[3] < 0
  assert out["n"] == 4 and out["n_large"] == 2
  assert out["accuracy"] == 0.5 and out["reward"] == pytest.approx(sum(r) / 4)
  assert out["accuracy/large"] == 1.0 and out["reward/large"] == pytest.approx((r[0] + r[3]) / 2)
  assert out["accuracy/small"] == 0.0 and out["reward/small"] == pytest.approx((r[1] + r[2]) / 2)
  assert out["accuracy/direct"] == 1.0 and out["reward/direct"] == pytest.approx((r[0] + r[3]) / 2)
  assert out["accuracy/functional"] == 0.0 and out["reward/functional"] == r[1]
  assert out["accuracy/spatial"] == 0.0 and out["reward/spatial"] == r[2]
  assert list(out) == study.COLUMNS
  # An empty group is NaN, not 0.
  none_large = study.summarize(study.scored(_samples()[1:3], TASKS[1:3]))
  assert math.isnan(none_large["accuracy/large"]) and none_large["n_large"] == 0


def test_samples_must_match_their_task_rows(tmp_path):
  swapped = _samples()
  swapped[1], swapped[2] = swapped[2], swapped[1]
  with pytest.raises(DataError, match=r"sample 1: field 'question'"):
    study.scored(swapped, TASKS)
  with pytest.raises(DataError, match="5 samples but only 4 task rows"):
    study.scored(_samples() + _samples()[:1], TASKS)
  with pytest.raises(DataError, match="launch.eval --workdir"):
    study.samples_path(str(tmp_path))


def test_analyze_writes_one_row_per_run(tmp_path):
  tasks = str(tmp_path / "tasks.jsonl")
  files.write_jsonl(tasks, TASKS)
  for seed, completions in ((0, COMPLETIONS), (1, [answer.format_answer(50, 50)] * 4)):
    run = tmp_path / f"groundcua_sft_s{seed}"
    run.mkdir()
    files.write_jsonl(str(run / "eval_samples.jsonl"), _samples(completions))
    (run / "config.json").write_text(json.dumps({"seed": seed}))
  export = str(tmp_path / "study.csv")
  base = [sys.executable, "-m", "launch.analyze", "--kind=groundcua_study",
          f"--workdir={tmp_path}/groundcua_sft_s*", f"--out={tmp_path}/out"]
  out = subprocess.run(base + [f"--tasks={tasks}", f"--export={export}"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  with open(export) as f:
    lines = f.read().splitlines()
  assert lines[0].split(",")[:5] == ["arm", "run", "seed", "n", "accuracy"]
  assert [line.split(",")[:5] for line in lines[1:]] == [
      ["groundcua_sft", "groundcua_sft_s0", "0", "4.0", "0.5"],
      ["groundcua_sft", "groundcua_sft_s1", "1", "4.0", "0.25"]]  # (50, 50) hits task 0 only
  assert "\n| groundcua_sft | 2 | 4 | 0.4 ± 1.6 | " in out.stdout, out.stdout  # mean of 0.5, 0.25
  bad = subprocess.run(base, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      "error: --kind=groundcua_study needs --tasks=<the held-out tasks.jsonl>"]
