"""``python -m launch.analyze --kind=looped``: files from a tiny HrmText checkpoint, and bad
input as one line with exit status 2."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.models.decoder.tiny_hf import write_char_tokenizer
from tests.models.looped.conftest import build_hrm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _analyze(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-m", "launch.analyze", "--kind=looped", *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def hrm_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hrm"))
  build_hrm("hrm").save_pretrained(path)
  write_char_tokenizer(path)
  return path


def test_launch_writes_results_for_each_trip_count(hrm_dir, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  # The first row names character spans: token groups of the class fractions.
  rows = [{"question": "S:1 Q:12+3=", "metadata": {"segments": {"system": [0, 3],
                                                                 "question": [4, 11]}}},
          {"question": "7*8="}]
  prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "analysis"
  result = _analyze(f"--workdir={hrm_dir}", f"--prompts={prompts}", "--iterations=2,3",
                    f"--out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out / "metrics.json") as f:
    metrics = json.load(f)
  assert set(metrics["per_iteration"]) == {"2", "3"}
  classes = metrics["per_iteration"]["3"]["classes"]
  assert (classes["system"]["count"], classes["question"]["count"]) == (3, 7)
  assert classes["other"]["count"] == classes["all"]["count"] - 10  # BOS, the space, row 2
  assert os.path.getsize(out / "results.npz") > 0
  assert any(name.endswith(".png") for name in os.listdir(out))


def test_a_run_directory_defaults_to_its_first_held_out_file(hrm_dir, tmp_path):
  """Without --prompts, a launch.train run directory gives the first of its
  ``config.data.eval_files`` (the command of the looped issue, as written)."""
  run = tmp_path / "run"
  shutil.copytree(hrm_dir, run / "hf_model")
  first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
  first.write_text(json.dumps({"question": "7*8="}) + "\n")
  second.write_text("not json\n")  # never read: only the first file is the default
  (run / "config.json").write_text(json.dumps(
      {"trainer": "llm_sft", "data": {"eval_files": [str(first), str(second)]}}))
  out = tmp_path / "analysis"
  result = _analyze(f"--workdir={run}", "--iterations=2", f"--out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"prompts: {first}" in result.stdout, result.stdout
  with open(out / "metrics.json") as f:
    # BOS + the 4 characters of the one prompt.
    assert json.load(f)["per_iteration"]["2"]["classes"]["all"]["count"] == 5


@pytest.mark.parametrize("args, needle", [
    (["--iterations=0"], "--iterations=0: every trip count must be >= 1"),
    (["--iterations=2,x"], "expected comma-separated integers"),
    ([], "needs --prompts"),
    (["--core_order=0,x"], "--core_order=0,x: expected comma-separated block indices"),
    (["--core_order=0,9"], "core_order=[0, 9]: the model has"),
    (["--prompts=SEG"], "p.jsonl:1: metadata.segments must map group names to [start, end]"),
])
def test_bad_input_is_one_line(hrm_dir, tmp_path, args, needle):
  prompts = tmp_path / "p.txt"
  prompts.write_text("1+1=\n")
  extra = [] if args == [] else [f"--prompts={prompts}"]
  if args == ["--prompts=SEG"]:
    bad = tmp_path / "p.jsonl"
    bad.write_text(json.dumps({"question": "1+1=", "metadata": {"segments": {"q": [0]}}}) + "\n")
    extra, args = [f"--prompts={bad}"], []
  result = _analyze(f"--workdir={hrm_dir}", *extra, *args)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
