"""Resume after SIGKILL equals an uninterrupted run, for SAC (replay buffer in the checkpoint),
the SFT trainer and the LLM RL trainer (lagged behaviour policies and critics in the
checkpoint), all through the one run loop; then ``launch.eval`` on each finished run, and on
tiny TD3 and PQN runs. PPO's twins are in tests/test_launch.py.

Each resume case: an uninterrupted run; the same command killed with SIGKILL once its first
checkpoint exists; the same command again. The metrics (wall-clock keys aside) and every array
of the final checkpoint must be equal.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SFT = ["--config=configs/llm/sft_tiny.py", "--config.steps=60", "--config.log_every=10",
       "--config.eval.every=30", "--config.checkpoint.every=10", "--config.eval.num_examples=8",
       "--config.eval.batch_size=8", "--config.eval.max_new_tokens=4",
       "--config.model.hidden_size=32", "--config.model.intermediate_size=64",
       "--config.model.num_layers=1", "--config.model.head_dim=8", "--config.batch_size=8",
       "--config.data.max_train_rows=256", "--config.dtype=float32"]
SAC = ["--config=configs/sac/pendulum.py", "--config.total_env_steps=8000",
       "--config.log_every=500", "--config.eval.every=2000", "--config.checkpoint.every=500",
       "--config.learning_starts=1000", "--config.batch_size=64",
       "--config.network.actor_width=32", "--config.network.critic_width=32"]


def _rl(init):
  return ["--config=configs/asyppo/ppo.py:asyppo", f"--config.model.init={init}",
          "--config.data.prompt_format={question}", "--config.steps=12", "--config.log_every=2",
          "--config.eval.every=6", "--config.checkpoint.every=2", "--config.prompts_per_step=4",
          "--config.group_size=4", "--config.async_lag=2", "--config.minibatches=2",
          "--config.sampling.max_new_tokens=4",
          "--config.eval.max_new_tokens=4", "--config.eval.num_examples=8",
          "--config.eval.batch_size=8", "--config.critic.hidden_size=16",
          "--config.critic.intermediate_size=32", "--config.critic.head_dim=8"]


def _launch(workdir, args, wait=True):
  cmd = [sys.executable, "-m", "launch.train", f"--workdir={workdir}", *args]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  if not wait:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in f]


def _final_arrays(workdir):
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  ckdir = os.path.join(workdir, "checkpoints")
  last = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
  return last, ocp.StandardCheckpointer().restore(os.path.join(ckdir, str(last), "state"))


def _kill_after_first_checkpoint(workdir, args):
  proc = _launch(workdir, args, wait=False)
  ckdir = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckdir) and any(d.isdigit() for d in os.listdir(ckdir)):
      break
    time.sleep(0.05)
  assert proc.poll() is None, "finished before it could be killed: " + proc.stderr.read()
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def _check_resume(tmp_path, args, full):
  part = str(tmp_path / "part")
  _kill_after_first_checkpoint(part, args)
  assert len(_records(part)) < len(_records(full))  # it really was interrupted
  _launch(part, args)
  assert _records(part) == _records(full)
  step_a, a = _final_arrays(part)
  step_b, b = _final_arrays(full)
  assert step_a == step_b and a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def sft_full(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft") / "full")
  _launch(workdir, SFT)
  return workdir


def test_sft_resume_after_sigkill(sft_full, tmp_path):
  _check_resume(tmp_path, SFT, sft_full)


@pytest.fixture(scope="module")
def rl_full(sft_full, tmp_path_factory):
  """Starts from the SFT run's exported model; AsyPPO's two critics, their optimizer states
  and the two lagged behaviour policies (lag 2) are checkpointed, with two minibatch updates
  per rollout batch."""
  workdir = str(tmp_path_factory.mktemp("rl") / "full")
  _launch(workdir, _rl(os.path.join(sft_full, "hf_model")))
  return workdir


@pytest.fixture(scope="module")
def sac_full(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sac") / "full")
  _launch(workdir, SAC)
  return workdir


def test_llm_rl_resume_after_sigkill(sft_full, rl_full, tmp_path):
  _check_resume(tmp_path, _rl(os.path.join(sft_full, "hf_model")), rl_full)


def test_sac_resume_after_sigkill_with_replay(sac_full, tmp_path):
  _, arrays = _final_arrays(sac_full)
  assert any(k.startswith(".replay") for k in arrays)  # the buffer is part of the state
  _check_resume(tmp_path, SAC, sac_full)


# -- launch.eval on every kind of run ---------------------------------------------------------


def _eval(workdir, *extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-m", "launch.eval", f"--workdir={workdir}", *extra],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, "eval.json")) as f:
    return json.load(f)


def _summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


@pytest.mark.parametrize("run", ["sft_full", "rl_full"])
def test_eval_of_llm_runs_scores_held_out_accuracy(run, request):
  workdir = request.getfixturevalue(run)
  out = _eval(workdir)
  acc = out["evaluators"]["task_accuracy"]
  assert out["checkpoint_step"] == _summary(workdir)["final_step"]
  # The same greedy scorer on the same rows as the run's own last evaluation.
  assert acc["eval/accuracy"] == pytest.approx(_summary(workdir)["eval/accuracy"])
  assert acc["num_examples"] == 8
  with open(acc["samples"]) as f:
    assert len(f.readlines()) == 8


def test_eval_of_sac_run(sac_full):
  out = _eval(sac_full, "--episodes=2")
  jax_env = out["evaluators"]["jax_env"]
  assert len(jax_env["returns"]) == 2 and np.isfinite(jax_env["return_mean"])
  assert "skipped" in out["evaluators"]["dm_control"]  # gymnax Pendulum has no dm_control twin


@pytest.mark.parametrize("config, extra", [
    ("configs/td3/pendulum.py", ["--config.total_env_steps=1000", "--config.log_every=250",
                                 "--config.eval.every=500", "--config.learning_starts=250",
                                 "--config.batch_size=32"]),
    ("configs/pqn/cartpole.py", ["--config.total_env_steps=20480", "--config.log_every=5",
                                 "--config.eval.every=5", "--config.checkpoint.every=5"]),
])
def test_eval_of_td3_and_pqn_runs(config, extra, tmp_path):
  workdir = str(tmp_path / "run")
  _launch(workdir, [f"--config={config}", *extra])
  out = _eval(workdir, "--episodes=1", "--evaluators=jax_env")
  assert out["trainer"] in ("td3", "pqn")
  assert np.isfinite(out["evaluators"]["jax_env"]["return_mean"])
  assert out["evaluators"]["jax_env"]["env"] == ("gymnax/Pendulum-v1" if "td3" in config
                                                 else "gymnax/CartPole-v1")
