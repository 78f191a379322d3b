"""The one run loop, driven by a toy trainer: resume equals uninterrupted, a corrupt newest
checkpoint falls back to the previous one, non-finite losses name step, metric and checkpoint,
shared keys are checked in one place, and importing the loop pulls in no plotting library."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core import config as config_lib
from jaxlab.core import loop
from jaxlab.core.errors import CheckpointError, ConfigError
from jaxlab.core.mesh import make_mesh

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _defaults():
  c = loop.base_config("toy", log_every=2, eval_every=4, checkpoint_every=2, checkpoint_keep=3)
  c.steps = 10
  c.blow_up_at = 0  # a step whose loss is NaN (0: never)
  return c


class _ToyRun:
  """x <- x * 0.9 + step; loss = x. Pure numpy-in, jax arrays out: enough to drive the loop."""

  def __init__(self, config, workdir, mesh):
    del workdir, mesh
    self.config = config
    self.total_steps = config.steps
    self.units_per_step = 3
    self.progress_keys = {"loss": "loss/x"}
    self.plot_keys = ("loss/x",)
    self.target = ("eval/x", 8.0)  # x after 4 steps: 9.05
    self.finished = []

  def init(self):
    return {"x": jnp.zeros((2,), jnp.float32), "calls": jnp.zeros((), jnp.int32)}

  def train(self, state, step, num_steps):
    x = state["x"]
    losses = []
    for s in range(step + 1, step + num_steps + 1):
      x = x * 0.9 + s
      losses.append(float(x[0]) if s != self.config.blow_up_at else float("nan"))
    return {"x": x, "calls": state["calls"] + 1}, {"loss/x": np.mean(losses)}

  def evaluate(self, state, step):
    return {"eval/x": float(state["x"][1]), "eval/step": step}

  def finish(self, state, metrics):
    self.finished.append(float(state["x"][0]))
    return {"exported": True}


TOY = loop.Trainer(name="toy", default_config=_defaults, check_config=lambda c: None,
                   build=_ToyRun)


def _run(workdir, **overrides):
  c = _defaults()
  config_lib.set_dotted(c, overrides)
  loop.validate(TOY, c)
  return loop.run(TOY, c, str(workdir), make_mesh(), progress=False)


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in f]


def test_run_logs_evaluates_checkpoints_and_summarises(tmp_path):
  summary = _run(tmp_path)
  recs = _records(tmp_path)
  assert [r["step"] for r in recs] == [2, 4, 6, 8, 10]
  assert [r["step"] for r in recs if "eval/x" in r] == [4, 8, 10]  # every 4, and the end
  assert recs[-1]["env_steps"] == 30
  assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints")) == [6, 8, 10]  # keep 3
  assert summary["final_step"] == 10 and summary["final_env_steps"] == 30
  assert summary["exported"] is True
  assert summary["first_target_step"] == 4 and summary["first_target_env_steps"] == 12
  assert os.path.isfile(tmp_path / "plots" / "loss_x.png")
  assert json.loads((tmp_path / "summary.json").read_text())["loss/x"] == summary["loss/x"]


def test_stop_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
  checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  # as `python -m launch.train` sets it: the script's absolute path
  monkeypatch.setattr(sys, "argv", [os.path.join(checkout, "launch", "train.py"), "--flag=1"])
  full, part = tmp_path / "full", tmp_path / "part"
  _run(full)
  c = _defaults()
  loop.validate(TOY, c)
  stopped = loop.run(TOY, c, str(part), make_mesh(), progress=False, stop_at=6)
  assert stopped == {"stopped_at": 6}
  assert not (part / "summary.json").exists()
  _run(part)
  assert _records(part) == _records(full)
  # starts.jsonl: one line per start, saying where it started and with which code.
  starts = [json.loads(line) for line in (part / loop.STARTS_FILE).read_text().splitlines()]
  assert [s["step"] for s in starts] == [0, 6]
  import jax  # pylint: disable=import-outside-toplevel
  for start in starts:
    assert start["versions"]["jax"] == jax.__version__
    assert start["commit"] is None or len(start["commit"]) == 40
    assert start["devices"].startswith("1 x ") and start["processes"] == 1
    assert start["time"].endswith("+00:00")
    assert start["argv"] == ["launch/train.py", "--flag=1"]  # no directory of this machine


def test_corrupt_newest_checkpoint_falls_back_and_is_kept(tmp_path, capsys):
  _run(tmp_path)
  before = _records(tmp_path)
  newest = tmp_path / "checkpoints" / "10"
  for root, _, files in os.walk(newest):
    for name in files:
      if not name.startswith("_"):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"not a checkpoint")
  summary = _run(tmp_path)  # resumes from step 8, trains 9-10 again
  err = capsys.readouterr().err
  warnings = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
  assert len(warnings) == 1 and "10" in warnings[0] and "using step 8" in warnings[0], err
  assert (tmp_path / "checkpoints_corrupt" / "10").is_dir()  # kept, not deleted
  assert _records(tmp_path) == before
  assert summary["final_step"] == 10


def test_every_checkpoint_corrupt_is_one_error_and_nothing_moves(tmp_path):
  _run(tmp_path, steps=2, **{"checkpoint.every": 2})
  for root, _, files in os.walk(tmp_path / "checkpoints"):
    for name in files:
      if not name.startswith("_"):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"x")
  with pytest.raises(CheckpointError, match="checkpoints/2 cannot be restored"):
    _run(tmp_path, steps=2, **{"checkpoint.every": 2})
  assert (tmp_path / "checkpoints" / "2").is_dir()
  assert not (tmp_path / "checkpoints_corrupt").exists()


def test_non_finite_loss_names_step_metric_and_last_checkpoint(tmp_path):
  with pytest.raises(loop.NonFiniteError) as info:
    _run(tmp_path, blow_up_at=5)
  msg = str(info.value)
  assert "'loss/x'=nan at step 6 (logged over steps 5-6)" in msg, msg
  assert msg.endswith(os.path.join(str(tmp_path), "checkpoints", "4")), msg
  with pytest.raises(loop.NonFiniteError, match="at step 1; last good checkpoint: none"):
    _run(tmp_path / "b", blow_up_at=1, log_every=1, **{"eval.every": 1, "checkpoint.every": 1})


def test_check_finite_reads_loss_metrics_only():
  loop.check_finite({"loss/a": np.asarray([1.0, 2.0]), "train/x": np.nan}, 0, 10, None, "w")
  with pytest.raises(loop.NonFiniteError, match=r"'train/loss'=inf at step 3"):
    loop.check_finite({"train/loss": np.inf}, 2, 3, None, "w")


@pytest.mark.parametrize("overrides, needle", [
    ({"log_every": 0}, "'config.log_every' must be >= 1"),
    ({"eval": {"every": 3}}, "'config.eval.every'=3 must be a multiple of config.log_every=2"),
    ({"checkpoint": {"every": 5}}, "'config.checkpoint.every'=5 must be a multiple"),
    ({"checkpoint": {"keep": 0}}, "'config.checkpoint.keep' must be >= 1"),
    ({"num_seeds": 3}, "'config.num_seeds'=3: the toy trainer trains one seed per run"),
    ({"nmu_seeds": 3}, "unknown config key 'config.nmu_seeds'"),
])
def test_shared_keys_are_checked_in_one_place(overrides, needle):
  c = _defaults()
  for k, v in overrides.items():
    if isinstance(v, dict):
      c[k].update(v)
    else:
      c[k] = v
  with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
    loop.validate(TOY, c)


def test_changed_config_is_refused_and_nothing_is_lost(tmp_path):
  _run(tmp_path)
  before = (tmp_path / "metrics.jsonl").read_text()
  with pytest.raises(ConfigError, match="keys differ: config.steps"):
    _run(tmp_path, steps=12)
  assert (tmp_path / "metrics.jsonl").read_text() == before


def test_importing_the_loop_does_not_import_matplotlib():
  code = ("import sys, jaxlab.core.loop, jaxlab.core.chunked, jaxlab.trainers; "
          "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"), timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
