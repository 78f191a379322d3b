"""The launcher end to end: resume after SIGKILL equals an uninterrupted run; bad input fails
with one line and a non-zero exit, and nothing in the workdir is lost."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

# Its module fixtures' runs reach learning thresholds and are compared with runs of other
# tests: the whole file compiles optimised (tests/conftest.py).
pytestmark = pytest.mark.optimized

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/ppo/cartpole_gymnax.py"
# 200 updates of 2048 env steps, a checkpoint every 20: long enough to be killed mid-run.
SHORT = ["--config.total_env_steps=409600", "--config.checkpoint.every=20",
         "--config.eval.every=20", "--config.log_every=5"]


def _launch(workdir, *extra, env=None, wait=True):
  cmd = [sys.executable, "-m", "launch.train", f"--config={CONFIG}", f"--workdir={workdir}",
         *SHORT, *extra]
  full_env = dict(os.environ, **(env or {}))
  if not wait:
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                        timeout=900)


def _deterministic(records):
  return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def _read(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _final_params(workdir):
  import orbax.checkpoint as ocp
  ckdir = os.path.join(workdir, "checkpoints")
  last = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
  tree = ocp.StandardCheckpointer().restore(os.path.join(ckdir, str(last), "state"))
  return last, {k: v for k, v in tree.items() if k.startswith(".params")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full") / "run")
  result = _launch(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_resume_after_sigkill_equals_uninterrupted(uninterrupted, tmp_path):
  workdir = str(tmp_path / "run")
  proc = _launch(workdir, wait=False)
  ckdir = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    done = [d for d in os.listdir(ckdir) if d.isdigit()] if os.path.isdir(ckdir) else []
    if done:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "run finished before it could be killed: " + proc.stderr.read()
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  records_at_kill = _read(workdir)
  assert records_at_kill[-1]["step"] < 200  # it really was interrupted

  result = _launch(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert _deterministic(_read(workdir)) == _deterministic(_read(uninterrupted))
  step_a, params_a = _final_params(workdir)
  step_b, params_b = _final_params(uninterrupted)
  assert step_a == step_b == 200
  import jax
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)


def _assert_one_line_error(result, needle):
  assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
  errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
  assert len(errors) == 1 and needle in errors[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("extra, needle", [
    (["--config.num_evns=8"], "unknown config key 'config.num_evns'"),
    (["--config.env.name=gymnax/CartPoel-v1"], "unknown env 'gymnax/CartPoel-v1'"),
    (["--config.num_minibatches=7"], "'config.num_minibatches'=7 must divide"),
])
def test_bad_config_fails_before_touching_workdir(tmp_path, extra, needle):
  workdir = str(tmp_path / "run")
  _assert_one_line_error(_launch(workdir, *extra), needle)
  assert not os.path.exists(workdir)


def test_num_envs_not_divisible_by_devices(tmp_path):
  workdir = str(tmp_path / "run")
  result = _launch(workdir, "--config.num_envs=36",
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  _assert_one_line_error(result, "'config.num_envs'=36 is not divisible by the 8")


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("a file, not a directory")
  _assert_one_line_error(_launch(str(blocker / "run")), "is not writable")


def test_changed_config_in_existing_workdir_is_refused(uninterrupted, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(uninterrupted, workdir)
  before = open(os.path.join(workdir, "metrics.jsonl")).read()
  _assert_one_line_error(_launch(workdir, "--config.learning_rate=0.1"),
                         "keys differ: config.learning_rate")
  assert open(os.path.join(workdir, "metrics.jsonl")).read() == before


def test_corrupt_newest_checkpoint_falls_back_with_one_warning(uninterrupted, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(uninterrupted, workdir)
  last = os.path.join(workdir, "checkpoints", "200", "state")
  damaged = []
  for root, _, files in os.walk(last):
    for name in files:
      if not name.startswith("_"):
        path = os.path.join(root, name)
        with open(path, "wb") as f:
          f.write(b"not a checkpoint")
        damaged.append(os.path.relpath(path, os.path.join(workdir, "checkpoints")))
  assert damaged
  # The same command resumes from step 180, trains 181-200 again and ends as before.
  result = _launch(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning: ")]
  assert len(warnings) == 1 and "using step 180" in warnings[0], result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  # The damaged checkpoint is kept aside, byte for byte.
  aside = os.path.join(workdir, "checkpoints_corrupt")
  assert all(open(os.path.join(aside, p), "rb").read() == b"not a checkpoint" for p in damaged)
  assert _deterministic(_read(workdir)) == _deterministic(_read(uninterrupted))
  _, params_a = _final_params(workdir)
  _, params_b = _final_params(uninterrupted)
  import jax
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)


def test_eval_restores_the_trained_policy(uninterrupted):
  result = subprocess.run([sys.executable, "-m", "launch.eval", f"--workdir={uninterrupted}",
                           "--episodes=2"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(uninterrupted, "eval.json")) as f:
    out = json.load(f)
  assert out["trainer"] == "ppo" and out["checkpoint_step"] == 200
  # The same policy the training log last evaluated (CartPole-v1's maximum is 500).
  assert out["evaluators"]["jax_env"]["return_mean"] >= 400, out
  assert "skipped" in out["evaluators"]["dm_control"]  # gymnax: no dm_control twin


def test_missing_config_file_is_one_line(tmp_path):
  cmd = [sys.executable, "-m", "launch.train", "--config=configs/ppo/nope.py",
         f"--workdir={tmp_path / 'run'}"]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  _assert_one_line_error(result, "--config=configs/ppo/nope.py: no such file")
  assert not os.path.exists(tmp_path / "run")


def test_an_arm_given_to_a_config_without_arms_is_one_line(tmp_path):
  cmd = [sys.executable, "-m", "launch.train", "--config=configs/ppo/cartpole_balance.py:fast",
         f"--workdir={tmp_path / 'run'}"]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  _assert_one_line_error(result, "configs/ppo/cartpole_balance.py has no arms (its get_config() "
                         "takes no argument); drop ':fast'")
  assert not os.path.exists(tmp_path / "run")


LAUNCHERS = ("train", "eval", "analyze", "plot", "generate", "rsa", "ns_phases")


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_reports_a_bad_flag_in_one_line(launcher):
  # absl alone would print "FATAL Flags parsing error" and a hint, exit status 1.
  result = subprocess.run([sys.executable, "-m", f"launch.{launcher}", "--no_such_flag=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  _assert_one_line_error(result, "Unknown command line flag 'no_such_flag'")


def test_a_usage_error_raised_by_main_is_one_line():
  code = ("from absl import app\nfrom launch import cli\n"
          "def main(argv):\n  raise app.UsageError('--size=3 must be even')\n"
          "cli.run(main)\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  _assert_one_line_error(result, "error: --size=3 must be even")
  assert "USAGE" not in result.stderr + result.stdout


def test_launchers_parse_flags_one_way():
  """Every launcher parses its flags through launch.cli (one error line, exit 2), none through
  absl's app.run alone (rsa parses its own FlagValues with launch.cli.flag_error); nor do the
  benchmark scripts that use absl flags."""
  import ast  # pylint: disable=import-outside-toplevel
  found = sorted(n[:-3] for n in os.listdir(os.path.join(REPO, "launch"))
                 if n.endswith(".py") and n not in ("__init__.py", "cli.py", "local_cluster.py"))
  assert sorted(LAUNCHERS) == found  # a new launcher joins the test above
  scripts = [os.path.join("launch", f"{name}.py") for name in found]
  for root in ("benchmarks", os.path.join("benchmarks", "device")):  # their absl scripts too
    scripts += [os.path.join(root, n) for n in sorted(os.listdir(os.path.join(REPO, root)))
                if n.endswith(".py")]
  for path in scripts:
    with open(os.path.join(REPO, path)) as f:
      tree = ast.parse(f.read())
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert "app.run" not in calls, f"{path} calls app.run; use launch.cli.run"


def test_eval_of_an_unknown_run_kind_lists_the_known_ones(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"trainer": "dreamer"}))
  result = subprocess.run([sys.executable, "-m", "launch.eval", f"--workdir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  _assert_one_line_error(result, "'dreamer' is not known; launch.eval evaluates runs of: llm_rl")


def test_eval_of_a_missing_run_is_one_line(tmp_path):
  result = subprocess.run([sys.executable, "-m", "launch.eval", f"--workdir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  _assert_one_line_error(result, "config.json does not exist")


def test_analyze_pools_seed_suffixed_runs(tmp_path):
  """--group_by=seed_suffix makes runs/x/grpo_s0 and grpo_s1 one arm of two seeds."""
  for name, value in (("grpo_s0", 1.0), ("grpo_s1", 3.0), ("ppo_s0", 5.0)):
    run = tmp_path / name
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "reward/task": value}) + "\n")
  out = subprocess.run(
      [sys.executable, "-m", "launch.analyze", f"--workdir={tmp_path}/*", "--group_by=seed_suffix",
       "--x=step", "--keys=reward/task", f"--out={tmp_path / 'an'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO))
  assert out.returncode == 0, out.stderr
  rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines()
          if line.startswith("| grpo") or line.startswith("| ppo")}
  assert set(rows) == {"grpo", "ppo"}
  # arm | seeds | mean ± t-interval (t_{0.975,1} = 12.7 for two seeds 1 and 3)
  assert "| grpo | 2 | 2 ± 13 |" in rows["grpo"] and "| ppo | 1 | 5 |" in rows["ppo"]
  # The per-seed file rebuilds the same table without the runs.
  export = tmp_path / "an" / "table.csv"
  again = subprocess.run([sys.executable, "-m", "launch.analyze", f"--data={export}"],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=REPO))
  assert again.returncode == 0, again.stderr
  assert rows["grpo"] in again.stdout and rows["ppo"] in again.stdout


def _analyze_in(cwd, *args):
  """``launch.analyze`` in a subprocess (its absl flags would clash with launch.ns_phases' in
  this process)."""
  return subprocess.run([sys.executable, "-m", "launch.analyze", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO))


def test_analyze_update_page_rewrites_the_tables_after_data_markers(tmp_path):
  """A stale table after a marker is replaced, a marker with no table gets one, prose and
  unmarked tables stay; a marker naming a missing file is one line, exit 2."""
  from jaxlab.core import stats  # pylint: disable=import-outside-toplevel
  stats.write_seed_rows(str(tmp_path / "a.csv"),
                        [{"arm": "x", "run": "x_s0", "seed": 0, "acc": 0.5},
                         {"arm": "x", "run": "x_s1", "seed": 1, "acc": 0.7}], ["acc"])
  table = stats.seed_table(*reversed(stats.read_seed_rows(str(tmp_path / "a.csv"))))
  page = tmp_path / "page.md"
  page.write_text("# t\n<!-- data: a.csv -->\n\n| old | table |\n|---|---|\n| 1 | 2 |\n\ntext\n"
                  "<!-- data: a.csv -->\nmore text\n\n| kept | table |\n")
  want = (f"# t\n<!-- data: a.csv -->\n\n{table}\n\ntext\n"
          f"<!-- data: a.csv -->\n\n{table}\n\nmore text\n\n| kept | table |\n")
  for _ in range(2):  # idempotent
    out = _analyze_in(tmp_path, "--update_page=page.md")
    assert out.returncode == 0, out.stderr
    assert "page.md: 2 tables rewritten" in out.stdout and page.read_text() == want
  page.write_text("<!-- data: gone.csv -->\n")
  out = _analyze_in(tmp_path, "--update_page=page.md")
  assert out.returncode == 2 and out.stderr.strip().startswith("error: gone.csv"), out.stderr


def test_analyze_threshold_tells_never_reached_from_not_logged(tmp_path):
  """A seed that never reaches --threshold is +inf ("never"), one that reached it counts."""
  run = tmp_path / "run"
  run.mkdir()
  records = [{"step": 1, "env_steps": 100, "eval/episode_return": [5.0, 1.0]},
             {"step": 2, "env_steps": 200, "eval/episode_return": [9.0, 2.0]}]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  out = _analyze_in(REPO, f"--workdir={run}", "--keys=eval/episode_return", "--threshold=4",
                    "--columns=ret,steps", f"--export={tmp_path / 't.csv'}",
                    f"--out={tmp_path / 'an'}")
  assert out.returncode == 0, out.stderr
  assert "| run | 2 | 6 ± 44 | 100 (1/2) |" in out.stdout, out.stdout
  from jaxlab.core import stats  # pylint: disable=import-outside-toplevel
  _, rows = stats.read_seed_rows(str(tmp_path / "t.csv"))
  assert [r["steps"] for r in rows] == [100.0, np.inf]


def _analyze(*args):
  return subprocess.run([sys.executable, "-m", "launch.analyze", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO))


def test_analyze_at_steps_columns_and_labels(tmp_path):
  """--at gives per-seed values at given x (the record there, else the last one before it),
  --columns names them, --label renames an arm, --last takes one window per key."""
  run = tmp_path / "runs" / "base"
  run.mkdir(parents=True)
  records = [{"step": 1, "env_steps": 200, "share": [0.5, 0.7], "ret": [1.0, 3.0]},
             {"step": 2, "env_steps": 400, "share": [0.3, 0.5], "ret": [5.0, 7.0]},
             {"step": 3, "env_steps": 600, "share": [0.1, 0.3]}]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  export = tmp_path / "over.csv"
  out = _analyze(f"--workdir={run}", "--keys=share", "--at=100,400,500", "--columns=dead share",
                 "--label=base:TD3", f"--export={export}", f"--out={tmp_path / 'an'}")
  assert out.returncode == 0, out.stderr
  from jaxlab.core import stats  # pylint: disable=import-outside-toplevel
  columns, rows = stats.read_seed_rows(str(export))
  assert columns == ["dead share @ 100", "dead share @ 400", "dead share @ 500"]
  assert [r["arm"] for r in rows] == ["TD3", "TD3"] and [r["run"] for r in rows] == ["base"] * 2
  assert np.isnan(rows[0]["dead share @ 100"])  # nothing logged by x = 100
  assert [r["dead share @ 400"] for r in rows] == [0.3, 0.5]  # the record at 400
  assert [r["dead share @ 500"] for r in rows] == [0.3, 0.5]  # the last one before 500
  assert "| TD3 | 2 | — | 0.4 ± 1.3 | 0.4 ± 1.3 |" in out.stdout
  # One window per key: the last record of "share", the mean of the last two of "ret".
  out = _analyze(f"--workdir={run}", "--keys=share,ret", "--last=1,2", "--columns=share,ret",
                 f"--export={export}", f"--out={tmp_path / 'an'}")
  assert out.returncode == 0, out.stderr
  _, rows = stats.read_seed_rows(str(export))
  assert [r["share"] for r in rows] == [0.1, 0.3] and [r["ret"] for r in rows] == [3.0, 5.0]
  # A label naming no arm, or a column count that does not match, is one line, exit 2.
  for bad in (["--label=nope:X"], ["--columns=a,b,c"]):
    out = _analyze(f"--workdir={run}", "--keys=share,ret", *bad, f"--out={tmp_path / 'an'}")
    assert out.returncode == 2 and out.stderr.strip().startswith("error: "), out.stderr


def test_analyze_ns_phases_exports_phase_ends_and_differences(tmp_path):
  """launch.ns_phases: --export_phases holds each phase's last accuracy, --export_diff the
  --baseline differences (so --export keeps the arms alone), --label renames arms."""
  run = tmp_path / "digits"
  run.mkdir()
  acc = {"sigreg=0": [[0.5, 0.6], [0.9, 0.8], [0.4, 0.5], [0.7, 0.9]],
         "sigreg=1": [[0.6, 0.6], [1.0, 0.9], [0.5, 0.4], [0.9, 0.9]]}
  lines = []
  for epoch in range(4):
    rec = {"step": epoch + 1, "phase": [epoch // 2, epoch // 2]}
    rec.update({f"test/accuracy@{arm}": a[epoch] for arm, a in acc.items()})
    lines.append(json.dumps(rec) + "\n")
  (run / "metrics.jsonl").write_text("".join(lines))
  files = {k: tmp_path / f"{k}.csv" for k in ("arms", "diff", "phases")}
  out = subprocess.run(
      [sys.executable, "-m", "launch.ns_phases", f"--workdir={run}", "--baseline=sigreg=0",
       "--label=digits@sigreg=0:λ = 0", "--label=digits@sigreg=1:λ = 1",
       f"--export={files['arms']}", f"--export_diff={files['diff']}",
       f"--export_phases={files['phases']}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO))
  assert out.returncode == 0, out.stderr
  from jaxlab.core import stats  # pylint: disable=import-outside-toplevel
  _, arms = stats.read_seed_rows(str(files["arms"]))
  assert [r["arm"] for r in arms] == ["λ = 0"] * 2 + ["λ = 1"] * 2
  columns, phases = stats.read_seed_rows(str(files["phases"]))
  assert columns == ["end of phase 1", "end of phase 2"]
  assert [r["end of phase 1"] for r in phases] == [0.9, 0.8, 1.0, 0.9]
  assert [r["end of phase 2"] for r in phases] == [0.7, 0.9, 0.9, 0.9]
  _, diff = stats.read_seed_rows(str(files["diff"]))
  assert [r["arm"] for r in diff] == ["λ = 1 − λ = 0"] * 2
  np.testing.assert_allclose([r["last phase end"] for r in diff], [0.2, 0.0], atol=1e-12)


def test_analyze_merges_per_seed_csvs_and_names_a_disagreement(tmp_path):
  """--data=A,B --export=OUT: one CSV of the runs of both, columns joined by run; a run whose
  value differs between the files is one error line naming both, exit 2."""
  from jaxlab.core import stats  # pylint: disable=import-outside-toplevel
  a, b, out = (str(tmp_path / n) for n in ("a.csv", "b.csv", "out.csv"))
  stats.write_seed_rows(a, [{"arm": "r1", "run": "r1_s0", "seed": 0, "fixed": 0.9}], ["fixed"])
  stats.write_seed_rows(b, [{"arm": "r1", "run": "r1_s0", "seed": 0, "growth": 1.0},
                            {"arm": "r2", "run": "r2_s0", "seed": 0, "growth": 6.0}], ["growth"])
  cmd = [sys.executable, "-m", "launch.analyze", f"--data={a},{b}", f"--export={out}",
         "--runs=r1_*"]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert stats.read_seed_rows(out) == (["fixed", "growth"], [
      {"arm": "r1", "run": "r1_s0", "seed": "0", "fixed": 0.9, "growth": 1.0}])
  stats.write_seed_rows(b, [{"arm": "r1", "run": "r1_s0", "seed": 0, "fixed": 0.8}], ["fixed"])
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip() == (f"error: run 'r1_s0' column 'fixed': 0.9 in {a} but 0.8 "
                                   f"in {b}")
