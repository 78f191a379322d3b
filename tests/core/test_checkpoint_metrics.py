"""Checkpoints restore exactly; corrupt ones fail with the path; metrics truncate on resume."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core import metrics as metrics_lib
from jaxlab.core import plotting
from jaxlab.core.checkpoint import Checkpointer
from jaxlab.core.errors import CheckpointError


def _state(x):
  return {"w": jnp.full((3, 2), x, jnp.float32), "key": jax.random.PRNGKey(int(x)),
          "n": jnp.asarray(int(x), jnp.int32), "empty": jnp.zeros((0, 3))}


def test_save_keep_restore(tmp_path):
  ck = Checkpointer(str(tmp_path / "ck"), every=2, keep=2)
  for step in range(1, 7):
    ck.save(step, _state(step), {"step": step})
  ck.wait()
  assert ck.latest_step() == 6
  assert sorted(int(d) for d in os.listdir(tmp_path / "ck") if d.isdigit()) == [4, 6]
  state, record, step = ck.restore(_state(0))
  assert step == 6 and record == {"step": 6}
  jax.tree.map(np.testing.assert_array_equal, state, _state(6))
  ck.close()


def test_corrupt_checkpoint_names_path(tmp_path):
  ck = Checkpointer(str(tmp_path / "ck"), every=1, keep=3)
  ck.save(1, _state(1), force=True)
  ck.close()
  # Damage every data file of the saved state.
  for root, _, files in os.walk(tmp_path / "ck" / "1"):
    for name in files:
      if "state" in root and not name.startswith("_"):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
  ck = Checkpointer(str(tmp_path / "ck"), every=1, keep=3)
  with pytest.raises(CheckpointError, match=str(tmp_path / "ck" / "1")):
    ck.restore(_state(0))
  ck.close()


def test_restore_wrong_structure_fails_clearly(tmp_path):
  ck = Checkpointer(str(tmp_path / "ck"), every=1, keep=3)
  ck.save(1, _state(1), force=True)
  ck.wait()
  wrong = {"w": jnp.zeros((4, 2)), "key": jax.random.PRNGKey(0), "n": jnp.asarray(0)}
  with pytest.raises(CheckpointError, match="cannot be restored"):
    ck.restore(wrong)
  ck.close()


def test_metric_writer_truncate_and_plot(tmp_path):
  w = metrics_lib.MetricWriter(str(tmp_path), tensorboard=True)
  for step in range(1, 6):
    w.write(step, {"ret": np.asarray([step, step + 1.0]), "loss/x": np.float32(0.5),
                   "env_steps": step * 10})
  w.close()
  w = metrics_lib.MetricWriter(str(tmp_path), purge_step=4)
  w.truncate(3)
  w.write(4, {"ret": np.asarray([9.0, 9.0]), "env_steps": 40})
  w.close()
  records = metrics_lib.read_metrics(str(tmp_path))
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert records[-1]["ret"] == [9.0, 9.0]
  assert any(name.startswith("events") for name in os.listdir(tmp_path / "tb"))
  x, mean, half = plotting.series(records, "ret")
  np.testing.assert_allclose(x, [10, 20, 30, 40])
  np.testing.assert_allclose(mean, [1.5, 2.5, 3.5, 9.0])
  assert half[0] > 0 and half[-1] == 0
  paths = plotting.plot_runs({"run": records}, ["ret", "missing"], str(tmp_path / "plots"))
  assert [os.path.basename(p) for p in paths] == ["ret.png"]
  with open(paths[0], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_progress_plain_stream():
  import io
  buf = io.StringIO()
  bar = metrics_lib.Progress(total=100, stream=buf, min_interval=0.0)
  bar.update(50, {"ret": [1.0, 3.0]}, force=True)
  line = buf.getvalue()
  assert "50/100" in line and "ret=2" in line and "eta" in line


def test_progress_rate_is_readable_below_one_unit_a_second():
  # A slow trainer (seconds per step) used to print "0/s".
  assert metrics_lib._fmt_rate(0.25, "steps") == "4 s per step"
  assert metrics_lib._fmt_rate(2.5, "items") == "2.5/s"
  assert metrics_lib._fmt_rate(31_800.4, "env-steps") == "31,800/s"
  assert metrics_lib._fmt_rate(float("nan"), "steps") == "?/s"
