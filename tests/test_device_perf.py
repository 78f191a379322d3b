"""benchmarks/device/perf.py (issue 18's GPU performance script) at its CPU smoke size.

The smoke run goes through the GPU run's code path (device probe, per-part timeouts from the
budget, each benchmark as a subprocess, parsing, ``name=value`` lines, perf.json) with tiny
models; the two parts the smoke mode skips (``perf.SMOKE_SKIPPED``: sac_vs_brax.py and
ppo_vs_brax.py, whose Playground programs take over a minute of this CPU to compile) have
their parsers checked on sample outputs below. Also checked: a sub-command past its timeout is
killed with its whole process group and recorded as NaN with the reason, a failing one too,
and a budget too small for a part skips it with a printed reason.

Cost: about 35 s of CPU (five sub-commands of 5-12 s each, nearly all JAX start-up and
compilation) plus a few seconds for the rest.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import re
import sys
import time

import pytest

# It times programs: they are compiled as a user's are (tests/conftest.py).
pytestmark = pytest.mark.optimized

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("sac_ratio", "ppo_ratio", "ppo_raw_fraction", "ppo_ant_raw_fraction",
         "decode_roofline_b32", "decode_roofline_b1", "train_mfu_1b", "decode_roofline_b8")
LINE = re.compile(r"^(\w+)=(\S+)  \[(.+)\]$")


@pytest.fixture(scope="module")
def perf():
  return importlib.import_module("benchmarks.device.perf")


def _lines(text: str) -> dict[str, tuple[str, str]]:
  """``name -> (value text, bracketed tag)`` of the ``name=value  [...]`` lines."""
  out = {}
  for line in text.splitlines():
    m = LINE.match(line)
    if m:
      assert m.group(1) not in out, f"{m.group(1)} printed twice"
      out[m.group(1)] = (m.group(2), m.group(3))
  return out


def test_smoke_run_records_every_name(perf, tmp_path, capsys):
  assert perf.NAMES == NAMES
  out = tmp_path / "perf"
  t0 = time.perf_counter()
  assert perf.main(["--smoke", f"--out={out}"]) == 0
  wall = time.perf_counter() - t0
  printed = _lines(capsys.readouterr().out)
  assert set(printed) == set(NAMES), printed

  with open(out / "perf.json") as f:
    doc = json.load(f)
  assert doc["smoke"] is True and doc["complete"] is True and doc["budget_s"] == 480
  assert doc["device_kind"] == "cpu" and re.match(r"\d+\.\d+", doc["jax_version"])
  datetime.datetime.fromisoformat(doc["date"])
  assert doc["wall_s"] <= wall
  assert set(doc["results"]) == set(doc["values"]) == set(NAMES)
  skipped = set(perf.SMOKE_SKIPPED)
  assert skipped == {"sac_ratio", "ppo_ratio", "ppo_raw_fraction"}
  for name in NAMES:
    r = doc["results"][name]
    assert r["goal"] == perf.GOALS[name]
    if name in skipped:  # documented: skipped at smoke size, with the reason printed
      assert r["value"] is None and doc["values"][name] is None
      assert r["status"] == "skipped" and perf.SMOKE_SKIPPED[name] in r["reason"]
      assert printed[name][0] == "nan" and printed[name][1].startswith("skipped: smoke: ")
      assert r["goal_met"] is None
    else:
      assert r["status"] == "ok", (name, r)
      assert isinstance(r["value"], float) and math.isfinite(r["value"]), (name, r)
      assert math.isclose(float(printed[name][0]), r["value"], rel_tol=1e-3, abs_tol=1e-4)
      assert r["goal_met"] is (None if r["goal"] is None else r["value"] >= r["goal"])
      part = doc["parts"][r["part"]]
      assert part["returncode"] == 0 and 0 < part["wall_s"] <= part["timeout_s"]
      assert part["command"] in doc["commands"]
  # The five parts that ran, each with its exact command line, in order.
  ran = ["ppo_ant_raw_fraction", "decode_roofline_b32", "decode_roofline_b1", "train_mfu_1b",
         "decode_roofline_b8"]
  assert doc["commands"] == [doc["parts"][p]["command"] for p in ran]
  assert "--worker=ppo_ant_raw" in doc["commands"][0]
  assert "--skip_torch --device_report --batch=32" in doc["commands"][1]
  assert "--batch=1 " in doc["commands"][2]
  assert "--preset=tiny" in doc["commands"][3]
  assert "--batch=8 " in doc["commands"][4]
  assert doc["parts"]["ppo_ant_raw_fraction"]["extras"]["raw_env_sps"] > 0
  assert doc["parts"]["train_mfu_1b"]["extras"]["step_time_ms"] > 0
  assert doc["goals_met"]["of"] == 5
  assert doc["goals_met"]["count"] == len(doc["goals_met"]["names"])
  log = (out / "perf.log").read_text()
  assert all(f"===== {p} (exit 0" in log for p in ran)


def test_gpu_commands_use_the_gpu_sizes(perf):
  ctx = perf.Context(smoke=False, device_kind="NVIDIA H100 80GB HBM3", hbm_bandwidth=0.0)
  cmds = {p.name: " ".join(p.command(ctx)) for p in perf.PARTS}
  assert "--only" not in cmds["sac_ratio"] and "--num_envs=512" in cmds["sac_ratio"]
  assert "--only" not in cmds["ppo_ratio"] and "--num_envs=2048" in cmds["ppo_ratio"]
  assert "--env=" not in cmds["ppo_ant_raw_fraction"]  # the config's brax/ant, 4096 envs
  for b in (32, 1, 8):
    c = cmds[f"decode_roofline_b{b}"]
    assert f"--batch={b} " in c and "--dtype=bfloat16" in c and "--hbm_bandwidth=3.35e+12" in c
    assert ("--layers=28 --hidden=2048 --heads=16 --kv_heads=8 --head_dim=128 "
            "--intermediate=6144 --vocab=151936") in c
  assert "--preset=1b" in cmds["train_mfu_1b"] and "--peak_tflops" not in cmds["train_mfu_1b"]
  assert perf._bandwidth(perf.Context(False, "NVIDIA H200", 0.0)) == 4.8e12
  assert perf._bandwidth(perf.Context(False, "NVIDIA H100 PCIe", 0.0)) == 2.0e12


# sac_vs_brax.py, default flags: the ours/brax lines are the benchmark's own format with the
# numbers it reports in its docstring (2-core CPU, 2026-11-27).
SAC_SAMPLE = """\
device: cpu x1  jax 0.10.2
CheetahRun: 100,352 env steps each, 128 envs, batch 512, 8 grad steps per iteration; 64 \
warm-up iterations, then 4 intervals of 180 iterations
ours:     1,539 env-steps/s      96.2 grad-steps/s  (training only; compile ~44s excluded)  \
    1,512 env-steps per CPU-second (evaluations included)
ours eval return by env step: 0:0.5  31232:0.8  54272:17.1  77312:21.4  100352:21.4
brax:     1,483 env-steps/s      92.7 grad-steps/s  (training only; compile ~37s excluded)  \
    1,465 env-steps per CPU-second (evaluations included)
brax eval return by env step: 0:0.5  31232:0.3  54272:0.2  77312:0.1  100352:0.1
ours gradient step: 10.40 ms, 0.512 GFLOP (XLA) -> 49 GFLOP/s = 40% of this machine's \
[512,256]x[256,256] matmul rate (123 GFLOP/s)
ratio by CPU time (robust to other load on the machine)=1.032
ratio=1.038
"""

# ppo_vs_brax.py --only=ours at the smoke size, captured on the 2-core CPU, with the brax and
# ratio lines a --only=both run adds (the benchmark's format).
PPO_SAMPLE = """\
device: cpu x1  jax 0.10.2
seed 0 ours:      1,661 env-steps/s  final return    20.0  wall   35.0s  to 900:    nans
seed 0 brax:      1,234 env-steps/s  final return    19.0  wall   41.2s  to 900:    nans
mean ours:      1,661 env-steps/s  final return    20.0 (per seed [19.959754943847656])  \
time to target nan
mean brax:      1,234 env-steps/s  final return    19.0 (per seed [19.0])  time to target nan
raw env-steps/s:      9,218 (wall),      9,294 per CPU-second  (4 envs x 4 steps, random \
actions, best of 1)
ppo/raw fraction=0.180
brax/raw fraction=0.134
ratio=1.346
"""


def test_sac_parser_on_a_sample(perf):
  values, extras = perf.parse_sac(SAC_SAMPLE)
  assert values == {"sac_ratio": 1.038}
  assert extras == {"ours_env_sps": 1539.0, "brax_env_sps": 1483.0, "ratio_by_cpu_time": 1.032}
  # --only=ours (or a crash before the end) prints no ratio=: the value is absent, not wrong.
  only_ours = "\n".join(l for l in SAC_SAMPLE.splitlines() if not l.startswith(("brax", "ratio")))
  values, extras = perf.parse_sac(only_ours)
  assert values == {"sac_ratio": None} and extras["ours_env_sps"] == 1539.0


def test_ppo_parser_on_a_sample_with_and_without_the_raw_line(perf):
  values, extras = perf.parse_ppo(PPO_SAMPLE)
  assert values == {"ppo_ratio": 1.346, "ppo_raw_fraction": 0.18}
  assert extras == {"ours_env_sps": 1661.0, "brax_env_sps": 1234.0, "raw_env_sps": 9218.0,
                    "brax_raw_fraction": 0.134}
  # A version of ppo_vs_brax.py without raw stepping: the ratio is still read.
  old = "\n".join(l for l in PPO_SAMPLE.splitlines() if "raw" not in l)
  values, extras = perf.parse_ppo(old)
  assert values == {"ppo_ratio": 1.346, "ppo_raw_fraction": None}
  assert extras["raw_env_sps"] is None


def test_other_parsers_on_samples(perf):
  # generate_vs_transformers --device_report's format (GPU-like numbers, made up).
  decode = ("ours: first call (compile + run) 41.20s on NVIDIA H200\n"
            "ours: 21,333 tokens/s (384.0 ms for 32x256 tokens, 1.50 ms/step)\n"
            "prefill (32x32) + 1 token: 20.0 ms; decode: 701 steps/s = 22,432 tokens/s\n"
            "roofline: 3441.2 MB weights + 939.5 MB live KV per step at 4.80 TB/s -> 1,096 "
            "steps/s max; decode reaches 64.0% of the roofline\n")
  values, extras = perf._parse_decode("decode_roofline_b32", decode)
  assert values == {"decode_roofline_b32": 0.64}
  assert extras == {"tokens_per_s": 21333.0, "decode_steps_per_s": 701.0,
                    "roofline_steps_per_s": 1096.0, "weights_mb": 3441.2}
  assert perf._parse_decode("decode_roofline_b1", decode.replace("64.0%", "nan%"))[0] == {
      "decode_roofline_b1": pytest.approx(float("nan"), nan_ok=True)}
  # A generation timed at or under its own prefill (noise at a few tokens): no share, no speed.
  unresolved = ("prefill (3x67) + 1 token: 136.6 ms; decode: not resolved (4 tokens took 130.2 "
                "ms in all, no more than the prefill and first token; raise --max_new_tokens)\n"
                "roofline: 113.8 MB weights + 0.8 MB live KV per step at 0.01 TB/s -> 111 "
                "steps/s max\n")
  values, extras = perf._parse_decode("decode_roofline_b8", unresolved)
  assert values == {"decode_roofline_b8": None} and extras["decode_steps_per_s"] is None
  assert extras["roofline_steps_per_s"] == 111.0
  # llm_train_mfu, captured (tiny preset, CPU).
  mfu = ("device=cpu x1 mesh={'data': 1, 'fsdp': 1, 'tensor': 1} layout=fsdp dtype=bfloat16 "
         "remat=False\nparams=0.1M batch=2x32 grad_accum=1 loss=5.549\n"
         "step_time=11.5ms tokens/s=5,550 model_flops/step=4.561e+07 achieved=0.00TFLOP/s "
         "peak/device=1TFLOP/s\nxla_flops/step/device=5.334e+07 (model/xla per device=0.86)\n"
         "mfu=0.0040\n")
  values, extras = perf.parse_mfu(mfu)
  assert values == {"train_mfu_1b": 0.004} and extras["step_time_ms"] == 11.5
  assert extras["tokens_per_s"] == 5550.0 and extras["peak_tflops"] == 1.0
  # perf.py --worker=ppo_ant_raw, captured (smoke size).
  ant = ("ppo: compile + first chunk 9.3 s; best of 1 chunks 0.060 s\n"
         "raw: compile + first unroll 2.2 s; best of 1 unrolls 0.003 s\n"
         "ppo env-steps/s: 2,134\nraw env-steps/s: 38,354\nppo/raw fraction=0.056\n")
  values, extras = perf.parse_ant(ant)
  assert values == {"ppo_ant_raw_fraction": 0.056}
  assert extras == {"ppo_env_sps": 2134.0, "raw_env_sps": 38354.0, "ppo_compile_s": 9.3,
                    "raw_compile_s": 2.2}


def _pid_gone(pid: int, wait_s: float = 5.0) -> bool:
  t_end = time.monotonic() + wait_s
  while time.monotonic() < t_end:
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return True
    time.sleep(0.05)
  return False


def test_timeouts_and_failures_are_recorded_and_the_run_goes_on(perf, tmp_path, capsys):
  py = sys.executable
  # Starts a grandchild and sleeps; both must die at the timeout (the process group is killed).
  sleeper = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
             "'import time; time.sleep(60)']); print('grandchild', p.pid, flush=True); "
             "time.sleep(60)")
  value = lambda name: (lambda text: ({name: perf._find(r"^value=" + perf._NUM, text)}, {}))
  table = (
      # Needs more than the budget (a part's minimum also holds back the parts before it, so
      # such a part can only come first): skipped.
      perf.Part("late", ("late",), lambda ctx: [py, "-c", "print('value=1')"], value("late"),
                cap_s=30, min_s=1e6, smoke_cap_s=30, smoke_min_s=1e6),
      perf.Part("sleeper", ("sleeper",), lambda ctx: [py, "-c", sleeper], value("sleeper"),
                cap_s=2, min_s=1, smoke_cap_s=2, smoke_min_s=1),
      perf.Part("failer", ("failer",), lambda ctx: [py, "-c", "print('value=1'); exit(3)"],
                value("failer"), cap_s=30, min_s=1, smoke_cap_s=30, smoke_min_s=1),
      perf.Part("silent", ("silent",), lambda ctx: [py, "-c", "print('no value')"],
                value("silent"), cap_s=30, min_s=1, smoke_cap_s=30, smoke_min_s=1),
      perf.Part("fine", ("fine",), lambda ctx: [py, "-c", "print('value=0.5')"], value("fine"),
                cap_s=30, min_s=1, smoke_cap_s=30, smoke_min_s=1),
  )
  doc = perf.run_parts(out=str(tmp_path), smoke=True, budget_s=120, table=table)
  printed = _lines(capsys.readouterr().out)
  r, parts = doc["results"], doc["parts"]
  assert r["sleeper"]["status"] == "timeout" and r["sleeper"]["value"] is None
  assert "killed after 2 s" in r["sleeper"]["reason"] and parts["sleeper"]["returncode"] is None
  assert parts["sleeper"]["wall_s"] < 10
  grandchild = int(re.search(r"grandchild (\d+)", (tmp_path / "perf.log").read_text()).group(1))
  assert _pid_gone(grandchild)
  assert r["failer"]["status"] == "failed" and r["failer"]["value"] is None
  assert "exit status 3" in r["failer"]["reason"]
  assert parts["failer"]["extras"] == {"values_before_failed": {"failer": 1.0}}
  assert r["silent"]["status"] == "missing" and "no such line" in r["silent"]["reason"]
  assert r["fine"] == {"value": 0.5, "goal": None, "goal_met": None, "status": "ok",
                       "reason": "", "part": "fine"}
  # A part whose minimum exceeds what is left is skipped, with the reason printed.
  assert r["late"]["status"] == "skipped" and "would not fit" in r["late"]["reason"]
  assert printed["late"][0] == "nan" and "would not fit" in printed["late"][1]
  assert printed["sleeper"] == ("nan", r["sleeper"]["status"] + ": " + r["sleeper"]["reason"])
  assert printed["fine"] == ("0.5", "no goal")
  assert len(doc["commands"]) == 4  # the skipped part ran nothing


def test_a_zero_budget_skips_every_part_with_a_reason(perf, tmp_path, capsys):
  doc = perf.run_parts(out=str(tmp_path), smoke=True, budget_s=0)
  printed = _lines(capsys.readouterr().out)
  assert set(printed) == set(NAMES) and all(v == "nan" for v, _ in printed.values())
  assert doc["commands"] == [] and doc["device"]["error"] == "skipped: no budget left"
  for name in NAMES:
    reason = doc["results"][name]["reason"]
    assert doc["results"][name]["status"] == "skipped"
    assert ("would not fit" in reason) != (name in perf.SMOKE_SKIPPED), (name, reason)


def test_plan_timeout(perf):
  assert perf.plan_timeout(left=400, cap=120, min_s=60, later_min=200) == 120
  assert perf.plan_timeout(left=250, cap=120, min_s=60, later_min=200) is None
  assert perf.plan_timeout(left=300, cap=120, min_s=60, later_min=200) == 100
