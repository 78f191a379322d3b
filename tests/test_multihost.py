"""Multi-process runs on one machine (``launch.local_cluster`` + ``launch.train --multihost``).

Two processes with 4 CPU devices each form one 8-device mesh, talking over 127.0.0.1 (gloo).
Checked here: PPO (gymnax CartPole), one SFT step on the tiny decoder and two llm_rl steps
(sampled rollouts, rewards, one RLOO update each) give the same metrics and final parameters as
one process with 8 devices (rtol 1e-3), each SFT and llm_rl process parsing (and llm_rl
scoring) only its own half of the rows;
there is one copy of every output file; a process
killed with SIGKILL stops the whole job with one line naming it, and the same command then
resumes to the uninterrupted two-process result; ``launch.eval`` reads a two-process run in one
process; bad input (a batch that does not split over processes x devices, a coordinator port in
use, processes started with different configs) ends every process with one ``error:`` line and
exit status 2, writing nothing.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 8 PPO updates of 8 envs x 16 steps, logged and checkpointed every 2, evaluated every 4.
PPO = ["--config=configs/ppo/cartpole_gymnax.py", "--config.num_envs=8",
       "--config.unroll_length=16", "--config.total_env_steps=1024", "--config.log_every=2",
       "--config.checkpoint.every=2", "--config.eval.every=4", "--config.eval.num_envs=8",
       "--config.network.policy_width=16", "--config.network.value_width=16"]
SFT = ["--config=configs/llm/sft_tiny.py", "--config.steps=1", "--config.log_every=1",
       "--config.eval.num_examples=8", "--config.eval.batch_size=8",
       "--config.eval.max_new_tokens=4", "--config.model.hidden_size=32",
       "--config.model.intermediate_size=64", "--config.model.num_layers=1",
       "--config.model.head_dim=8", "--config.batch_size=8", "--config.data.max_train_rows=64",
       "--config.dtype=float32"]
# One SFT step of the tiny vision-language model on the generated shapes images. Learning rate
# 3e-4 for the reason given at RL below (at the config's 3e-3 one weight of 12,288 differed by
# 2e-6, 0.2% relative, after one step).
VLM_SFT = ["--config=configs/vlm/sft_tiny.py", "--config.steps=1", "--config.log_every=1",
           "--config.eval.num_examples=8", "--config.eval.batch_size=8",
           "--config.eval.max_new_tokens=4", "--config.batch_size=8",
           "--config.data.max_train_rows=64", "--config.optim.learning_rate=3e-4"]
# Two llm_rl steps of 4 prompts x 4 samples of 4 tokens, logged each; the test adds
# --config.model.init (a tiny random policy). row_reward (below) gives varied rewards where the
# random policy would score 0 everywhere and leave nothing to update. The learning rate is the
# config's 3e-4: Adam turns the last-bit differences of gloo's summation order into update
# differences of up to ~1% of the learning rate on gradient entries near its eps (measured at
# 1e-2: one k-projection entry off by 9.6e-5 after one step), which 3e-4 keeps inside rtol.
RL = ["--config=configs/kl_estimators/rloo.py:R1", "--config.steps=2", "--config.log_every=1",
      "--config.prompts_per_step=4", "--config.group_size=4",
      "--config.sampling.max_new_tokens=4", "--config.data.max_train_rows=64",
      "--config.eval.num_examples=8", "--config.eval.batch_size=8",
      "--config.eval.max_new_tokens=4", "--config.pg.entropy_coef=0.01",
      "--config.reward.fn=tests.test_multihost:row_reward"]
TIMEOUT = 600


def _env(**extra):
  """The environment of a launched process: this one's (less any device-count flag a test
  runner set), plus ``extra`` (e.g. the single-process run's own XLA_FLAGS).

  Every launched process compiles with XLA's optimisations mostly off (jax's
  ``jax_disable_most_optimizations``): these runs are tiny and nearly all their CPU time is
  compilation (a cold one-process llm_rl run: 21 s of CPU with them, 15 s without); what is
  checked here (how work and data split over processes, checkpoints, errors) is the same.
  Both sides of every comparison compile alike."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
  env.pop("XLA_FLAGS", None)
  return {**env, **extra}


def _cluster_cmd(workdir, args, num=2, devices=4, port=None):
  cmd = [sys.executable, "-m", "launch.local_cluster", f"--num_processes={num}",
         f"--devices_per_process={devices}"]
  if port is not None:
    cmd.append(f"--port={port}")
  return cmd + ["--", sys.executable, "-m", "launch.train", "--multihost",
                f"--workdir={workdir}", *args]


def _cluster(workdir, args, env=None, **kw):
  return subprocess.run(_cluster_cmd(workdir, args, **kw), cwd=REPO, env=_env(**(env or {})),
                        capture_output=True, text=True, timeout=TIMEOUT)


def _single(workdir, args, devices=8, env=None):
  cmd = [sys.executable, "-m", "launch.train", f"--workdir={workdir}", *args]
  env = _env(JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **(env or {}))
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f" devices={devices} " in out.stdout + out.stderr, out.stderr[:500]  # the 1 x 8 compared
  return out


def _ok(out):
  assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
  return out


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in f]


def _final_arrays(workdir):
  """The newest checkpoint's arrays, read whole onto this process's one device (whatever
  the number of processes that wrote it)."""
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  ckdir = os.path.join(workdir, "checkpoints")
  last = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
  path = os.path.join(ckdir, str(last), "state")
  one = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  with ocp.StandardCheckpointer() as ckptr:
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                          ckptr.metadata(path).item_metadata)
    return last, ckptr.restore(path, target)


def _outputs(workdir):
  """Relative paths of every file a run wrote outside its checkpoints (whose internal layout
  is orbax's: one metadata file per writing process)."""
  out = set()
  for root, _, names in os.walk(workdir):
    rel = os.path.relpath(root, workdir)
    if rel.split(os.sep)[0] in ("checkpoints",):
      continue
    for name in names:
      if rel == "tb":  # event files are named by their creation time
        name = name.rsplit(".", 2)[0]
      out.add(os.path.normpath(os.path.join(rel, name)))
  return out


def _assert_records_close(a, b):
  assert [r["step"] for r in a] == [r["step"] for r in b]
  for ra, rb in zip(a, b):
    assert set(ra) == set(rb)
    for key in ra:
      np.testing.assert_allclose(ra[key], rb[key], rtol=1e-3, atol=1e-6, err_msg=key)


def _error_lines(text):
  return [line for line in text.splitlines() if "error:" in line]


def _children(pid):
  kids = []
  for task in os.listdir(f"/proc/{pid}/task"):
    with open(f"/proc/{pid}/task/{task}/children") as f:
      kids += [int(k) for k in f.read().split()]
  return kids


def _process_id(pid):
  with open(f"/proc/{pid}/environ", "rb") as f:
    env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
  return int(env[b"JAXLAB_PROCESS_ID"])


def _kill_process_1_after_first_checkpoint(workdir):
  """Starts the two-process PPO run, SIGKILLs process 1 once a checkpoint exists; returns
  the launcher's stderr after checking that every process is gone."""
  launcher = subprocess.Popen(_cluster_cmd(workdir, PPO), cwd=REPO, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  ckdir = os.path.join(workdir, "checkpoints")
  deadline = time.time() + TIMEOUT
  while time.time() < deadline and launcher.poll() is None:
    if os.path.isdir(ckdir) and any(d.isdigit() for d in os.listdir(ckdir)):
      break
    time.sleep(0.02)
  assert launcher.poll() is None, "finished before it could be killed: " + launcher.stderr.read()
  by_index = {_process_id(pid): pid for pid in _children(launcher.pid)}
  os.kill(by_index[1], signal.SIGKILL)
  stderr = launcher.communicate(timeout=120)[1]
  assert launcher.returncode != 0
  for pid in by_index.values():  # none is left running
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)
  return stderr


# The tests run longest first: xdist hands the first four out in pairs (first and third to one
# worker, second and fourth to the other), so the two PPO tests start on different workers and
# the short ones at the end fill the gaps.
def test_ppo_two_processes_equal_one_process(tmp_path):
  """PPO: 2 x 4 devices == 1 x 8; one copy of each file; launch.eval in one process."""
  two, one = str(tmp_path / "two"), str(tmp_path / "one")
  out = _ok(_cluster(two, PPO))
  assert "[p0] jaxlab: done" in out.stderr and "[p1] jaxlab: done" not in out.stderr
  _single(one, PPO)
  two_records = _records(two)
  assert [r["step"] for r in two_records] == [2, 4, 6, 8]  # each step logged once
  _assert_records_close(two_records, _records(one))
  step_two, arrays_two = _final_arrays(two)
  step_one, arrays_one = _final_arrays(one)
  assert step_two == step_one == 8 and set(arrays_two) == set(arrays_one)
  for key in arrays_one:
    np.testing.assert_allclose(arrays_two[key], arrays_one[key], rtol=1e-3, atol=1e-5,
                               err_msg=key)
  assert _outputs(two) == _outputs(one)  # one copy of every output file
  assert sorted(os.listdir(tmp_path)) == ["one", "two"]

  cmd = [sys.executable, "-m", "launch.eval", f"--workdir={two}", "--episodes=1",
         "--evaluators=jax_env"]
  out = subprocess.run(cmd, cwd=REPO, env=_env(JAX_PLATFORMS="cpu"), capture_output=True,
                       text=True, timeout=TIMEOUT)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(two, "eval.json")) as f:
    result = json.load(f)
  assert result["checkpoint_step"] == 8
  assert np.isfinite(result["evaluators"]["jax_env"]["return_mean"])


def test_ppo_process_killed_then_same_command_resumes_to_the_uninterrupted_result(tmp_path):
  """SIGKILL of one process stops the job with one line; the same command then resumes to the
  uninterrupted two-process run's metrics and parameters, bit for bit. (A test of its own, with
  its own uninterrupted run, so that the two PPO tests run on different xdist workers.)"""
  two, killed = str(tmp_path / "two"), str(tmp_path / "killed")
  _ok(_cluster(two, PPO))
  stderr = _kill_process_1_after_first_checkpoint(killed)
  assert "local_cluster: process 1 ended (killed by SIGKILL); stopping the others" in stderr
  assert _records(killed)[-1]["step"] < 8  # it really was interrupted
  _ok(_cluster(killed, PPO))  # the same command resumes
  assert _records(killed) == _records(two)
  step_two, arrays_two = _final_arrays(two)
  step_killed, arrays_killed = _final_arrays(killed)
  assert step_killed == step_two == 8
  for key in arrays_two:
    np.testing.assert_array_equal(arrays_killed[key], arrays_two[key], err_msg=key)


def _data_lines(text):
  """``{process: (rows, parsed)}`` of the step-0 lines ``JAXLAB_DEBUG_DATA`` prints (SFT and
  llm_rl): the batch rows each process built and how many rows it has parsed in all."""
  found = {}
  for m in re.finditer(r"jaxlab: data: process (\d+) step 0 rows \[([\d, ]*)\] parsed (\d+)",
                       text):
    found[int(m.group(1))] = ([int(x) for x in m.group(2).split(",")], int(m.group(3)))
  return found


def row_reward(rows, completions):
  """The RL test's reward (imported by the trainer): depends on both the row and its
  completion, so rows scored against another row's completion change the result."""
  return [len(text) / 4 + float(text.strip()[:1] == row["answer"][:1]) +
          float(row["metadata"]["source_index"] % 3) for row, text in zip(rows, completions)]


def test_rl_step_two_processes_equal_one_process(tmp_path):
  """Two llm_rl steps (4 prompts x 4 samples, sampled at temperature 1, then one RLOO update
  with k1-in-reward KL and an entropy bonus): 2 x 4 devices == 1 x 8, one copy of each file;
  each process parsed, tokenized and scored only its half of the rows (its 2 prompts x 4
  samples of the batch, its half of the start-up check of all 64), never the other's."""
  # pylint: disable-next=import-outside-toplevel
  from tests.models.decoder.tiny_hf import save_tiny_char_decoder
  from jaxlab.llm import data as data_lib  # pylint: disable=import-outside-toplevel
  model = save_tiny_char_decoder(str(tmp_path / "model"), "0123456789+-= ")
  args = RL + [f"--config.model.init={model}"]
  two, one = str(tmp_path / "two"), str(tmp_path / "one")
  debug = {"JAXLAB_DEBUG_DATA": "1"}
  out = _ok(_cluster(two, args, env=debug))
  single = _single(one, args, env=debug)
  per_process, whole = _data_lines(out.stdout + out.stderr), _data_lines(single.stdout)
  batch = np.repeat(data_lib.batch_indices(0, 4, 64, 0), 4).tolist()  # prompts x group_size
  assert whole == {0: (batch, whole[0][1])}
  assert whole[0][1] == 64 + 4  # the start-up check of every row, then the step's 4 prompts
  assert sorted(per_process) == [0, 1]
  assert per_process[0][0] + per_process[1][0] == batch  # halves, in the mesh's row order
  assert not set(per_process[0][0]) & set(per_process[1][0])  # whole groups: disjoint rows
  assert per_process[0][1] == per_process[1][1] == whole[0][1] // 2
  records = _records(two)
  assert [r["step"] for r in records] == [1, 2]
  assert all(r["adv/abs_mean"] > 0 for r in records)  # rewards vary in groups: a real update
  _assert_records_close(records, _records(one))
  _, arrays_two = _final_arrays(two)
  _, arrays_one = _final_arrays(one)
  assert set(arrays_two) == set(arrays_one)
  for key in arrays_one:
    np.testing.assert_allclose(arrays_two[key], arrays_one[key], rtol=1e-3, atol=1e-6,
                               err_msg=key)
  assert _outputs(two) == _outputs(one)


@pytest.mark.parametrize("args", [VLM_SFT, SFT], ids=["vision_language", "decoder"])
def test_sft_step_two_processes_equal_one_process(tmp_path, args):
  """One SFT step: 2 x 4 devices == 1 x 8; each process parsed and tokenized only its half of
  the rows (its 4 batch rows, its half of the start-up passes over all 64), never the other's;
  for the vision-language model it also read only its rows' images."""
  from jaxlab.llm import data as data_lib  # pylint: disable=import-outside-toplevel
  two, one = str(tmp_path / "two"), str(tmp_path / "one")
  debug = {"JAXLAB_DEBUG_DATA": "1"}
  out = _ok(_cluster(two, args, env=debug))
  single = _single(one, args, env=debug)
  per_process, whole = _data_lines(out.stdout + out.stderr), _data_lines(single.stdout)
  batch = data_lib.batch_indices(0, 8, 64, 0).tolist()
  assert whole == {0: (batch, whole[0][1])}
  assert sorted(per_process) == [0, 1]
  assert per_process[0][0] + per_process[1][0] == batch  # halves, in the mesh's row order
  assert per_process[0][1] == per_process[1][1] == whole[0][1] // 2
  _assert_records_close(_records(two), _records(one))
  assert _records(two)[0]["step"] == 1 and len(_records(two)) == 1
  _, arrays_two = _final_arrays(two)
  _, arrays_one = _final_arrays(one)
  for key in arrays_one:
    np.testing.assert_allclose(arrays_two[key], arrays_one[key], rtol=1e-3, atol=1e-6,
                               err_msg=key)
  assert _outputs(two) == _outputs(one)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(coordinator_address="127.0.0.1:1234"), "given without the process count"),
    (dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=2),
     "process id 2 is not in [0, 2)"),
    (dict(coordinator_address="nohostport", num_processes=2, process_id=1),
     "coordinator address 'nohostport' is not HOST:PORT"),
])
def test_distributed_settings_are_checked_before_joining(kwargs, message):
  from jaxlab.core import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.core.errors import ConfigError  # pylint: disable=import-outside-toplevel
  with pytest.raises(ConfigError, match=re.escape(message)):
    mesh_lib.initialize_distributed(**kwargs)


# Each process prints the persistent-cache key jax computes for one program over the global
# mesh (jax's own key function, called as jax calls it), and the program's result.
_KEY_PROBE = """
from jaxlab.core import mesh as mesh_lib
mesh_lib.initialize_distributed()
import jax, numpy as np
from jax._src import cache_key
keys = []
get = cache_key.get
def spy(*args, **kwargs):
  keys.append(get(*args, **kwargs))
  return keys[-1]
cache_key.get = spy
mesh = jax.make_mesh((jax.device_count(),), ("d",))
sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
x = jax.make_array_from_process_local_data(sharding, np.full(2, jax.process_index() + 1.0))
total = float(jax.jit(lambda v: (v * 2).sum())(x))
print("probe", jax.process_index(), keys[-1], total)
"""


def test_processes_of_one_machine_share_compilation_cache_keys(tmp_path):
  """On one machine every process computes the same cache key for a program over the global
  mesh (jax's CPU key differs per process otherwise), so process 1 takes process 0's compiled
  program instead of compiling it again; the program still computes the right sum."""
  cmd = [sys.executable, "-m", "launch.local_cluster", "--num_processes=2",
         "--devices_per_process=2", "--", sys.executable, "-c", _KEY_PROBE]
  env = _env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  out = _ok(subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=TIMEOUT))
  found = dict(m.groups()[:2] for m in re.finditer(r"probe (\d) (\S+) (\S+)", out.stdout))
  totals = re.findall(r"probe \d \S+ (\S+)", out.stdout)
  assert sorted(found) == ["0", "1"], out.stdout + out.stderr
  assert found["0"] == found["1"]
  assert totals == ["12.0", "12.0"]  # 2 x (1 + 1 + 2 + 2)


def test_local_cluster_usage_errors():
  from launch import local_cluster  # pylint: disable=import-outside-toplevel
  assert local_cluster.main(["--num_processes=2", "python"]) == 2  # no "--"
  assert local_cluster.main(["--num_processes=0", "--", "python"]) == 2
  assert local_cluster.main(["--num_processes=2", "--"]) == 2
  assert local_cluster.main(["--num_processes=2", "--port=70000", "--", "python"]) == 2


def test_local_cluster_starts_without_jax():
  # It only starts processes; jax would cost it ~1.6 s of CPU per launch on 2 cores.
  code = "import sys, launch.local_cluster; print(sorted(m for m in sys.modules if m == 'jax'))"
  out = _ok(subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(),
                           capture_output=True, text=True, timeout=TIMEOUT))
  assert out.stdout.strip() == "[]"


def test_batch_not_divisible_over_processes(tmp_path):
  workdir = str(tmp_path / "run")
  out = _cluster(workdir, PPO + ["--config.num_envs=4"])
  assert out.returncode == 2, out.stderr[-3000:]
  errors = _error_lines(out.stderr)
  assert len(errors) == 2 and {e[:5] for e in errors} == {"[p0] ", "[p1] "}
  for line in errors:
    assert ("'config.num_envs'=4 is not divisible by the 8 data-parallel devices (2 processes "
            "x 4 local devices)") in line
  assert "Traceback" not in out.stderr
  assert not os.path.exists(workdir)


def test_coordinator_port_in_use(tmp_path):
  workdir = str(tmp_path / "run")
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    out = _cluster(workdir, PPO, port=port)
    assert out.returncode == 2
    assert _error_lines(out.stderr) == [
        f"error: coordinator port 127.0.0.1:{port} is in use (Address already in use); pick "
        "another port or stop the process holding it"]
    # launch.train itself (process 0 of a job started by hand) refuses it the same way.
    cmd = [sys.executable, "-m", "launch.train", "--multihost",
           f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=0",
           f"--workdir={workdir}", *PPO]
    out = subprocess.run(cmd, cwd=REPO, env=_env(JAX_PLATFORMS="cpu"), capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 2
    assert len(_error_lines(out.stderr)) == 1 and f"127.0.0.1:{port} is in use" in out.stderr
  assert not os.path.exists(workdir)


def test_config_mismatch_between_processes(tmp_path):
  workdir = str(tmp_path / "run")
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  procs = []
  for index, seed in ((0, 0), (1, 1)):
    cmd = [sys.executable, "-m", "launch.train", "--multihost",
           f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
           f"--process_id={index}", f"--workdir={workdir}", *PPO, f"--config.seed={seed}"]
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=_env(JAX_PLATFORMS="cpu"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  for p in procs:
    stderr = p.communicate(timeout=TIMEOUT)[1]
    assert p.returncode == 2, stderr[-3000:]
    assert _error_lines(stderr) == [
        "error: the config (or --workdir) differs between processes: process(es) 1 do not "
        "match process 0; every process must run the same command"]
  assert not os.path.exists(workdir)
