"""Bad off-policy input through ``python -m launch.train``: one ``error:`` line naming the key,
exit status 2, no traceback, nothing written to the workdir."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("flag,needle", [
    # Replay that cannot fit: over max_gb, and over the machine's memory with max_gb raised.
    ("--config.replay.capacity=100000000000", "'config.replay.capacity'=100000000000"),
    ("--config.replay.capacity=100000000000 --config.replay.max_gb=1e9",
     "more than the"),
    # A replay ratio below 1 is utd / num_envs with an integer utd; a fractional utd, zero
    # gradient steps, or a batch larger than the buffer are refused.
    ("--config.utd=0.5", "--config.utd=0.5"),
    ("--config.utd=0", "'config.utd' must be >= 1"),
    ("--config.batch_size=20000", "'config.replay.capacity'=12000 must be >= "
     "config.batch_size=20000"),
    ("--config.reset.method=grama", "'config.reset.method'='grama' is not one of"),
])
def test_bad_offpolicy_input_is_one_line(tmp_path, flag, needle):
  workdir = str(tmp_path / "run")
  result = subprocess.run(
      [sys.executable, "-m", "launch.train", "--config=configs/sac/pendulum.py",
       f"--workdir={workdir}", *flag.split()],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and needle in errors[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert not os.path.exists(workdir)
