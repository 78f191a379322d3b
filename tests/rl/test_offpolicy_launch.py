"""TD3 and LEAST through the launcher: a run, its resume from a checkpoint (replay buffer and
LEAST state included) equal to the uninterrupted run, and launch.analyze over two arms."""

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
  result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in f]


@pytest.mark.slow
def test_launch_resume_and_analyze(tmp_path):
  base, least = str(tmp_path / "base"), str(tmp_path / "least")
  short = ["--config.total_env_steps=3000", "--config.log_every=250",
           "--config.eval.every=250", "--config.checkpoint.every=250", "--config.num_seeds=2"]
  _run("launch.train", "--config=configs/td3/pendulum.py", f"--workdir={base}", *short)
  _run("launch.train", "--config=configs/least/pendulum.py:least", f"--workdir={least}", *short,
       "--config.least.start_fraction=0.4")
  full = _records(least)
  assert [r["step"] for r in full] == [250, 500, 750]
  assert sum(sum(r["least/stops"]) for r in full) > 0

  # Resume: drop the last checkpoint; the rerun restores update 500 (replay, LEAST histories,
  # optimizer, env states) and must reproduce the last chunk exactly.
  shutil.rmtree(os.path.join(least, "checkpoints", "750"))
  _run("launch.train", "--config=configs/least/pendulum.py:least", f"--workdir={least}", *short,
       "--config.least.start_fraction=0.4")
  assert _records(least) == full

  out = str(tmp_path / "compare")
  result = _run("launch.analyze", f"--workdir={base},{least}", "--preset=offpolicy",
                "--threshold=-1000", f"--out={out}")
  table = open(os.path.join(out, "table.md")).read()
  # One row per arm with its number of seeds (2), then mean ± interval per key.
  assert "\n| base | 2 | " in table and "\n| least | 2 | " in table
  assert "least/stop_rate" in table and "env_steps to eval return >= -1000" in table
  for name in ("eval_episode_return.png", "least_stop_rate.png"):
    assert os.path.exists(os.path.join(out, name)), result.stdout
