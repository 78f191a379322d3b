"""GPU performance goals (issue 18) in one run: each existing benchmark at a GPU size.

    python benchmarks/device/perf.py --out=$OUT/perf           # one H100/H200, <= 8 min in all
    python benchmarks/device/perf.py --out=runs/perf --smoke   # CPU, tiny sizes, ~35 s of CPU

Every part runs one benchmark of ours as a subprocess with GPU-sized flags and parses what it
prints; nothing is re-implemented here except part 3, which no benchmark covers:

======================== ========================================================== ========
name                     what (sub-command)                                         goal
======================== ========================================================== ========
``sac_ratio``            ours / brax SAC env-steps/s, ``sac_vs_brax.py``               >= 2
                         (CheetahRun, 512 envs, 300k env steps, ``ratio=``)
``ppo_ratio``            ours / brax PPO env-steps/s, ``ppo_vs_brax.py``               >= 2
                         (CartpoleBalance, 2048 envs, 8M env steps, ``ratio=``)
``ppo_raw_fraction``     ours' PPO / raw random-action stepping of the same env and     (none)
                         batch: the ``ppo/raw fraction=`` line of that same run (NaN,
                         with the reason, if the run printed none)
``ppo_ant_raw_fraction`` PPO on Brax ant (MJX; ``configs/ppo/brax_ant.py``, 4096 envs,   >= 0.5
                         our trainer) / raw random-action stepping of the same env and
                         batch: this file's ``--worker=ppo_ant_raw`` (ppo_vs_brax.py's
                         ``--env`` reaches only Playground DM Control envs)
``decode_roofline_b32``  greedy decode steps/s / the HBM roofline, batch 32:            >= 0.6
                         ``generate_vs_transformers --skip_torch --device_report`` at
                         Qwen3-1.7B's sizes, bfloat16, 256 new tokens
``decode_roofline_b1``   the same at batch 1                                            (none)
``train_mfu_1b``         MFU of the SFT step: ``llm_train_mfu --preset=1b``             >= 0.40
                         (Llama-3.2-1B shape, batch 8 x 2048, remat, bf16)
``decode_roofline_b8``   the decode roofline share at batch 8 (last: it runs in what    (none)
                         the budget has left)
======================== ========================================================== ========

The decode parts pass ``--hbm_bandwidth`` by device kind (H200 4.8e12 B/s, H100 SXM 3.35e12;
see ``HBM_BANDWIDTH``; ``--hbm_bandwidth`` here overrides). generate_vs_transformers has no flag
for Qwen3's QK-norm or tied embeddings: its model has Qwen3-1.7B's sizes in a Llama layout
(untied head, whose bytes per step equal the tied table's; the untied embedding is only
gathered, and not counted).

Output, at the end on stdout: one line ``name=value  [goal >= g: met|not met]`` per name
(``name=nan  [<status>: <reason>]`` for a part that failed, timed out or was skipped; status
``missing``: it ran but printed no such line), then ``goals met: k of 5``. ``<out>/perf.json``:
jax version, device kind, date, budget, the exact sub-commands run, per name its value (``null``
for NaN), goal and ``goal_met`` (null without a value or goal), per part its command, timeout,
wall time, exit status, reason and the other numbers parsed from its output;
``<out>/perf.log``: each sub-command's output (its last 40,000 characters). Both files are
rewritten after every part (``"complete": false`` until the end). Progress, with each part's
values as it ends, goes to stderr.

Budget (``--budget_s``, default 480 s, everything included): a device probe (a subprocess, so
that this process never holds GPU memory; at most 60 s), then the parts in the order above. A
part's timeout is ``min(its cap, time left - the minimums of the parts after it)``; a part whose
timeout would fall below its own minimum is skipped with a printed reason, never silently; 5 s
are kept for writing the results. Caps / minimums (s): sac 120/60, ppo 110/60, ant 110/60,
decode b32 75/45, b1 65/40, MFU 80/50, decode b8 60/35: estimates, as no GPU was available when
they were set; compilation is most of every part. A sub-command past its timeout is killed
(its process group) and its names recorded as ``nan`` with the reason; the run goes on.
``--parts=a,b`` runs only those parts (the others are recorded as skipped). The sub-commands
share a persistent compilation cache (``--cache_dir``; default ``jaxlab_perf/`` in the system's
temporary folder), so that a second run on the same machine compiles little.

``--smoke`` runs the same code path at tiny CPU sizes, for tests/test_device_perf.py:
``JAX_PLATFORMS=cpu`` and XLA's optimisations off in the sub-commands, tiny models and batches,
each benchmark's brax / torch side left out (``--only=ours`` / ``--skip_torch``; so no
``ratio=`` line). ``SMOKE_SKIPPED`` parts are skipped at smoke size unless named in
``--parts``: ``sac_ratio`` and ``ppo_ratio`` (with ``ppo_raw_fraction``), whose Playground MJX
programs alone take 60-75 s of the 2-core CPU at 4 envs, more than the test may spend; their
parsers are tested on sample outputs instead. Part 3 steps gymnax Pendulum-v1 instead of Brax
ant at smoke size (ant's MJX programs take ~50 s to compile on that CPU); its code is the same.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
THIS = os.path.abspath(__file__)

# name -> goal (the value must be >= it); None: recorded without a goal.
GOALS = {"sac_ratio": 2.0, "ppo_ratio": 2.0, "ppo_raw_fraction": None,
         "ppo_ant_raw_fraction": 0.5, "decode_roofline_b32": 0.6, "decode_roofline_b1": None,
         "train_mfu_1b": 0.40, "decode_roofline_b8": None}
NAMES = tuple(GOALS)

# Qwen3-1.7B's text sizes (its config.json): generate_vs_transformers builds a Llama-style
# decoder of these sizes (no QK-norm flag there; untied head, which streams the same bytes).
QWEN3_1P7B = dict(layers=28, hidden=2048, heads=16, kv_heads=8, head_dim=128,
                  intermediate=6144, vocab=151936)

# HBM bandwidth (bytes/s) for the decode roofline, by a substring of jax's device_kind; the
# first match wins (H100 PCIe / NVL before the SXM default; 0: unknown, as for GH200, whose
# memory varies). Other devices: the benchmark's default, with a note.
HBM_BANDWIDTH = (("GH200", 0.0), ("H200", 4.8e12), ("H100 PCIe", 2.0e12),
                 ("H100 NVL", 3.9e12), ("H100", 3.35e12))

LOG_CHARS = 40_000  # per part, in perf.log
RESERVE_S = 5.0  # kept back from the budget for writing the results


# -- parsing -------------------------------------------------------------------------------------


def _number(text: str) -> float:
  """``"1,234.5"`` / ``"nan"`` / ``"62.3%"`` -> float (a percentage is divided by 100)."""
  text = text.strip().replace(",", "")
  if text.endswith("%"):
    return float(text[:-1]) / 100.0
  return float(text)


def _find(pattern: str, text: str) -> float | None:
  """The number in group 1 of the LAST line matching ``pattern`` (multiline), or None."""
  hits = re.findall(pattern, text, flags=re.MULTILINE)
  if not hits:
    return None
  try:
    return _number(hits[-1])
  except ValueError:
    return None


_NUM = r"([-+]?[0-9][0-9,]*\.?[0-9]*(?:[eE][-+]?[0-9]+)?|[-+]?nan|[-+]?inf)"


def parse_sac(text: str) -> tuple[dict, dict]:
  """sac_vs_brax.py's output -> ``({"sac_ratio": v}, extras)``; v is None without a line
  ``ratio=`` (it is printed only when both trainers ran)."""
  extras = {"ours_env_sps": _find(r"^ours:\s+" + _NUM + r" env-steps/s", text),
            "brax_env_sps": _find(r"^brax:\s+" + _NUM + r" env-steps/s", text),
            "ratio_by_cpu_time": _find(r"^ratio by CPU time[^=]*=" + _NUM + r"\s*$", text)}
  return {"sac_ratio": _find(r"^ratio=" + _NUM + r"\s*$", text)}, extras


def parse_ppo(text: str) -> tuple[dict, dict]:
  """ppo_vs_brax.py's output -> ``({"ppo_ratio", "ppo_raw_fraction"}, extras)``; each None
  when its line (``ratio=``, ``ppo/raw fraction=``) is absent."""
  extras = {"ours_env_sps": _find(r"^mean ours:\s+" + _NUM + r" env-steps/s", text),
            "brax_env_sps": _find(r"^mean brax:\s+" + _NUM + r" env-steps/s", text),
            "raw_env_sps": _find(r"^raw env-steps/s:\s+" + _NUM, text),
            "brax_raw_fraction": _find(r"^brax/raw fraction=" + _NUM + r"\s*$", text)}
  return {"ppo_ratio": _find(r"^ratio=" + _NUM + r"\s*$", text),
          "ppo_raw_fraction": _find(r"^ppo/raw fraction=" + _NUM + r"\s*$", text)}, extras


def parse_ant(text: str) -> tuple[dict, dict]:
  """``--worker=ppo_ant_raw``'s output -> ``({"ppo_ant_raw_fraction": v}, extras)``."""
  extras = {"ppo_env_sps": _find(r"^ppo env-steps/s:\s+" + _NUM, text),
            "raw_env_sps": _find(r"^raw env-steps/s:\s+" + _NUM, text),
            "ppo_compile_s": _find(r"^ppo: compile \+ first chunk " + _NUM + " s", text),
            "raw_compile_s": _find(r"^raw: compile \+ first unroll " + _NUM + " s", text)}
  return {"ppo_ant_raw_fraction": _find(r"^ppo/raw fraction=" + _NUM + r"\s*$", text)}, extras


def _parse_decode(name: str, text: str) -> tuple[dict, dict]:
  """generate_vs_transformers --device_report -> ``({name: roofline fraction}, extras)``."""
  extras = {"tokens_per_s": _find(r"^ours:\s+" + _NUM + r" tokens/s", text),
            "decode_steps_per_s": _find(r"decode: " + _NUM + r" steps/s", text),
            "roofline_steps_per_s": _find(r"-> " + _NUM + r" steps/s max", text),
            "weights_mb": _find(r"^roofline: " + _NUM + r" MB weights", text)}
  # "decode reaches 62.3% of the roofline": the percentage, as a fraction.
  value = _find(r"decode reaches ((?:" + _NUM[1:-1] + r")%) of the roofline", text)
  return {name: value}, extras


def parse_mfu(text: str) -> tuple[dict, dict]:
  """llm_train_mfu's output -> ``({"train_mfu_1b": mfu}, extras)``."""
  extras = {"step_time_ms": _find(r"^step_time=" + _NUM + "ms", text),
            "tokens_per_s": _find(r"tokens/s=" + _NUM, text),
            "achieved_tflops": _find(r"achieved=" + _NUM + "TFLOP/s", text),
            "peak_tflops": _find(r"peak/device=" + _NUM + "TFLOP/s", text)}
  return {"train_mfu_1b": _find(r"^mfu=" + _NUM + r"\s*$", text)}, extras


# -- the parts ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Context:
  """What commands depend on: the size, the device probe's answer, the flags."""
  smoke: bool
  device_kind: str
  hbm_bandwidth: float  # 0: by device kind
  notes: list[str] = dataclasses.field(default_factory=list)


def sac_command(ctx: Context) -> list[str]:
  s = "benchmarks/sac_vs_brax.py"
  if ctx.smoke:
    flags = ["--only=ours", "--env=CartpoleBalance", "--total_steps=96", "--num_envs=4",
             "--batch_size=16", "--grad_updates_per_step=1", "--min_replay_size=32",
             "--max_replay_size=1024", "--hidden=16", "--episode_length=20", "--num_evals=3",
             "--num_eval_envs=2"]
  else:
    # 4x the default envs (Playground's DM Control SAC layout otherwise), 300k env steps: a
    # few seconds of training per side on an H100/H200; compilation dominates.
    flags = ["--env=CheetahRun", "--num_envs=512", "--total_steps=300000", "--num_evals=4"]
  return [sys.executable, s, *flags, "--profile_step=0"]


def ppo_command(ctx: Context) -> list[str]:
  s = "benchmarks/ppo_vs_brax.py"
  if ctx.smoke:
    flags = ["--only=ours", "--total_steps=64", "--num_envs=4", "--unroll_length=4",
             "--batch_size=2", "--num_minibatches=2", "--num_epochs=1", "--episode_length=20",
             "--num_evals=3", "--num_eval_envs=2", "--repeats=1"]
  else:
    # CartpoleBalance at 2048 envs (8x the default), one unroll of 32 steps per update
    # (256 x 8 sequences), 8M env steps: ~120 updates, so that the evaluation inside each timed
    # interval is a small share; the per-phase breakdown (5 more compilations) is left out.
    flags = ["--num_envs=2048", "--unroll_length=32", "--batch_size=256",
             "--num_minibatches=8", "--total_steps=8000000", "--num_evals=5"]
  return [sys.executable, s, *flags, "--no-phases"]


def ant_command(ctx: Context) -> list[str]:
  flags = ["--worker=ppo_ant_raw"]
  if ctx.smoke:
    flags += ["--env=gymnax/Pendulum-v1", "--episode_length=50", "--num_envs=8",
              "--unroll_length=4", "--unrolls_per_update=2", "--num_minibatches=2",
              "--num_epochs=1", "--updates_per_chunk=2", "--timed_chunks=1"]
  else:
    flags += ["--updates_per_chunk=4", "--timed_chunks=2"]  # 4 x 327,680 env steps a chunk
  return [sys.executable, THIS, *flags]


def bandwidth_for_kind(device_kind: str) -> float:
  """HBM bytes/s of a jax ``device_kind`` (:data:`HBM_BANDWIDTH`), 0.0 when unknown."""
  for key, value in HBM_BANDWIDTH:
    if key.lower() in device_kind.lower():
      return value
  return 0.0


def _bandwidth(ctx: Context) -> float:
  if ctx.hbm_bandwidth > 0:
    return ctx.hbm_bandwidth
  return bandwidth_for_kind(ctx.device_kind)


def _decode_command(ctx: Context, batch: int) -> list[str]:
  cmd = [sys.executable, "-m", "benchmarks.generate_vs_transformers", "--skip_torch",
         "--device_report", f"--batch={batch}", "--dtype=bfloat16"]
  if ctx.smoke:
    cmd += ["--layers=1", "--hidden=64", "--heads=4", "--kv_heads=2", "--head_dim=16",
            "--intermediate=128", "--vocab=256", "--max_new_tokens=32", "--prompt_min=4",
            "--prompt_max=8", "--repeats=2"]
    return cmd
  cmd += [f"--{k}={v}" for k, v in QWEN3_1P7B.items()]
  cmd += ["--max_new_tokens=256", "--repeats=2"]
  bandwidth = _bandwidth(ctx)
  if bandwidth:
    cmd.append(f"--hbm_bandwidth={bandwidth:g}")
  else:
    note = (f"unknown HBM bandwidth for device {ctx.device_kind!r}: the benchmark's default "
            "(H200, 4.8e12 B/s) is used; pass --hbm_bandwidth")
    if note not in ctx.notes:
      ctx.notes.append(note)
  return cmd


def mfu_command(ctx: Context) -> list[str]:
  cmd = [sys.executable, "-m", "benchmarks.llm_train_mfu"]
  if ctx.smoke:
    return cmd + ["--preset=tiny", "--steps=1", "--warmup=1", "--batch_size=2", "--seq_len=32",
                  "--peak_tflops=1"]
  # The documented one-GPU command (the peak is looked up from the device kind: 989 TFLOP/s).
  return cmd + ["--preset=1b", "--batch_size=8", "--seq_len=2048", "--remat"]


_SLOW_SMOKE = ("Playground MJX programs take 60-75 s of the 2-core CPU even at 4 envs "
               "(--only=ours), more than the smoke test may spend; its parser is tested on a "
               "captured sample output; name it in --parts to run it")


@dataclasses.dataclass
class Part:
  """One sub-command: the names it yields, how to build and parse it, its time limits.

  Attributes:
    name: the part's key (its first name).
    names: the names its parser yields; the first is the one the part is for.
    command: ``Context -> argv``.
    parse: ``output -> ({name: value or None}, {extra: value or None})``.
    cap_s / min_s: its longest and shortest useful timeout on the GPU (estimates).
    smoke_cap_s / smoke_min_s: the same at smoke size.
    smoke_skip: reason to skip it at smoke size unless named in ``--parts``.
  """
  name: str
  names: tuple[str, ...]
  command: Callable[[Context], list[str]]
  parse: Callable[[str], tuple[dict, dict]]
  cap_s: float
  min_s: float
  smoke_cap_s: float = 120.0
  smoke_min_s: float = 5.0
  smoke_skip: str = ""


def decode_part(batch: int, cap_s: float, min_s: float) -> Part:
  """The decode roofline part at ``batch``: name ``decode_roofline_b<batch>``."""
  name = f"decode_roofline_b{batch}"
  return Part(name, (name,), lambda ctx: _decode_command(ctx, batch),
              functools.partial(_parse_decode, name), cap_s=cap_s, min_s=min_s)


PARTS = (
    Part("sac_ratio", ("sac_ratio",), sac_command, parse_sac, cap_s=120, min_s=60,
         smoke_cap_s=200, smoke_skip=f"sac_vs_brax.py's {_SLOW_SMOKE}"),
    Part("ppo_ratio", ("ppo_ratio", "ppo_raw_fraction"), ppo_command, parse_ppo, cap_s=110,
         min_s=60, smoke_cap_s=200, smoke_skip=f"ppo_vs_brax.py's {_SLOW_SMOKE}"),
    Part("ppo_ant_raw_fraction", ("ppo_ant_raw_fraction",), ant_command, parse_ant, cap_s=110,
         min_s=60),
    decode_part(32, cap_s=75, min_s=45),
    decode_part(1, cap_s=65, min_s=40),
    Part("train_mfu_1b", ("train_mfu_1b",), mfu_command, parse_mfu, cap_s=80, min_s=50),
    # Last: issue 18 asks for batch 8 too, but no goal hangs on it, so it gets what is left.
    decode_part(8, cap_s=60, min_s=35),
)
assert sum((p.names for p in PARTS), ()) == NAMES
SMOKE_SKIPPED = {n: p.smoke_skip for p in PARTS if p.smoke_skip for n in p.names}


def plan_timeout(left: float, cap: float, min_s: float, later_min: float) -> float | None:
  """A part's timeout: ``min(cap, left - later_min)``, or None when that is below ``min_s``
  (the part would not fit beside the minimum time of the parts after it)."""
  timeout = min(cap, left - later_min)
  return timeout if timeout >= min_s else None


# -- running --------------------------------------------------------------------------------------


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _child_env(smoke: bool, cache_dir: str) -> dict:
  """The sub-commands' environment: the repository on PYTHONPATH, a persistent compilation
  cache shared by them (kept if the caller set one; ``cache_dir`` "none": off), and at smoke
  size the CPU with XLA's optimisations off."""
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  env.setdefault("TOKENIZERS_PARALLELISM", "false")
  if cache_dir != "none" and not env.get("JAX_COMPILATION_CACHE_DIR"):
    env["JAX_COMPILATION_CACHE_DIR"] = cache_dir or os.path.join(
        tempfile.gettempdir(), "jaxlab_perf", "jax_cache" + ("_smoke" if smoke else ""))
  if smoke:  # tiny CPU sizes, nearly all compilation: compile with XLA's optimisations off
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  return env


def run_command(cmd: Sequence[str], timeout: float, env: dict) -> tuple[int | None, str, float]:
  """Runs ``cmd`` in the repository with a wall-clock ``timeout``; past it, its whole process
  group is killed. Returns ``(exit status or None on timeout, stdout + stderr, wall s)``."""
  t0 = time.perf_counter()
  proc = subprocess.Popen(list(cmd), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace",
                          start_new_session=True)
  try:
    out, _ = proc.communicate(timeout=timeout)
    code = proc.returncode
  except subprocess.TimeoutExpired:
    try:
      os.killpg(proc.pid, signal.SIGKILL)  # the group this Popen started, nothing else
    except ProcessLookupError:
      pass
    out, _ = proc.communicate()
    code = None
  return code, out or "", time.perf_counter() - t0


def _tail(text: str, lines: int, width: int = 0) -> str:
  """The last ``lines`` lines of ``text`` (each cut to ``width`` characters if > 0)."""
  tail = text.strip().splitlines()[-lines:]
  return "\n".join(l[:width] if width else l for l in tail)


def probe_device(timeout: float, env: dict) -> dict:
  """``{"device_kind", "platform", "device_count", "jax_version", "command"}`` from a
  subprocess (this process never initialises a backend, so it holds no GPU memory)."""
  code = ("import json, jax; d = jax.devices(); print('probe=' + json.dumps({'device_kind': "
          "d[0].device_kind, 'platform': d[0].platform, 'device_count': len(d), "
          "'jax_version': jax.__version__}))")
  cmd = [sys.executable, "-c", code]
  info = {"device_kind": "unknown", "platform": "unknown", "device_count": 0,
          "jax_version": _jax_version(), "command": shlex.join(cmd)}
  if timeout <= 0:
    info["error"] = "skipped: no budget left"
    return info
  status, out, _ = run_command(cmd, timeout, dict(env, XLA_PYTHON_CLIENT_PREALLOCATE="false"))
  m = re.search(r"^probe=(\{.*\})$", out, flags=re.MULTILINE)
  if status == 0 and m:
    info.update(json.loads(m.group(1)))
  else:
    info["error"] = f"exit {status}: {_tail(out, 5)}"
  return info


def _jax_version() -> str:
  try:
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    return metadata.version("jax")
  except Exception:  # pylint: disable=broad-except
    return "unknown"


def _fmt(value: float | None) -> str:
  return "nan" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _goal_met(name: str, value: float | None) -> bool | None:
  goal = GOALS.get(name)
  if goal is None or value is None or not math.isfinite(value):
    return None
  return bool(value >= goal)


def run_parts(*, out: str, smoke: bool, budget_s: float, parts: Sequence[str] = (),
              hbm_bandwidth: float = 0.0, cache_dir: str = "",
              table: Sequence[Part] = PARTS) -> dict:
  """Runs the parts within ``budget_s``; prints ``name=value`` lines; writes perf.json/.log.

  perf.json and perf.log are rewritten after every part (``"complete": false`` until the end,
  names not reached yet have status ``pending``), so that a run stopped from outside still
  leaves what it measured. Progress goes to stderr as it happens; the ``name=value`` lines go
  to stdout together at the end, so that they close the output.

  Args:
    out: folder for perf.json and perf.log.
    smoke: tiny CPU sizes (see the module docstring).
    budget_s: wall-clock seconds for everything, the probe and compilation included.
    parts: run only these (empty: all; at smoke size the slow ones only when named).
    hbm_bandwidth: bytes/s for the decode roofline (0: from the device kind).
    cache_dir: the sub-commands' persistent compilation cache ("": a folder in the system's
      temporary folder, "none": no cache; a JAX_COMPILATION_CACHE_DIR already set is kept).
    table: the parts (tests pass their own).

  Returns:
    perf.json's content.
  """
  t_start = time.perf_counter()
  deadline = t_start + budget_s - RESERVE_S
  os.makedirs(out, exist_ok=True)
  env = _child_env(smoke, cache_dir)
  unknown = set(parts) - {p.name for p in table}
  if unknown:
    raise SystemExit(f"unknown --parts {sorted(unknown)}; valid: {[p.name for p in table]}")

  selected = []  # (part, reason to skip it or "")
  for p in table:
    if parts and p.name not in parts:
      selected.append((p, "not in --parts"))
    elif smoke and p.smoke_skip and p.name not in parts:
      selected.append((p, f"smoke: {p.smoke_skip}"))
    else:
      selected.append((p, ""))

  info = probe_device(min(60.0, deadline - time.perf_counter()), env)
  _log(f"[perf] device={info['device_kind']} x{info['device_count']} ({info['platform']}) "
       f"jax {info['jax_version']} smoke={smoke} budget_s={budget_s:g} out={out}"
       + (f"; probe failed: {info['error']}" if "error" in info else ""))
  ctx = Context(smoke=smoke, device_kind=info["device_kind"], hbm_bandwidth=hbm_bandwidth)
  names = [n for p in table for n in p.names]
  results = {n: {"value": None, "goal": GOALS.get(n), "goal_met": None, "status": "pending",
                 "reason": "", "part": p.name} for p in table for n in p.names}
  part_docs: dict[str, dict] = {}
  log_chunks = [f"probe: {info['command']}"]

  def write(complete: bool) -> dict:
    met = [n for n in names if results[n]["goal_met"]]
    with_goal = [n for n in names if GOALS.get(n) is not None]
    doc = {"smoke": smoke, "complete": complete,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "jax_version": info["jax_version"], "device_kind": info["device_kind"],
           "device": info, "budget_s": budget_s, "python": sys.executable,
           "commands": [d["command"] for d in part_docs.values() if d["status"] != "skipped"],
           "values": {n: results[n]["value"] for n in names}, "results": results,
           "parts": part_docs, "notes": ctx.notes,
           "goals_met": {"count": len(met), "of": len(with_goal), "names": met},
           "wall_s": time.perf_counter() - t_start}
    with open(os.path.join(out, "perf.json"), "w") as f:
      json.dump(doc, f, indent=1, allow_nan=False)
    with open(os.path.join(out, "perf.log"), "w") as f:
      f.write("\n\n".join(log_chunks) + "\n")
    return doc

  for i, (p, skip) in enumerate(selected):
    cap, min_s = (p.smoke_cap_s, p.smoke_min_s) if smoke else (p.cap_s, p.min_s)
    notes_before = len(ctx.notes)
    cmd = p.command(ctx)
    doc = {"command": shlex.join(cmd), "argv": cmd, "cap_s": cap, "min_s": min_s}
    timeout = None
    if not skip:
      later_min = sum((q.smoke_min_s if smoke else q.min_s)
                      for q, s in selected[i + 1:] if not s)
      left = deadline - time.perf_counter()
      timeout = plan_timeout(left, cap, min_s, later_min)
      if timeout is None:
        skip = (f"would not fit: {left:.0f} s left of the budget, {later_min:.0f} s kept for "
                f"the parts after it, this part needs >= {min_s:.0f} s")
    doc["notes"] = ctx.notes[notes_before:]
    found: dict = {}
    if skip:
      status, reason = "skipped", skip
      doc.update(timeout_s=None, wall_s=0.0, returncode=None, extras={})
      _log(f"[perf] {p.name}: skipped ({skip})")
    else:
      _log(f"[perf] {p.name}: timeout {timeout:.0f} s: {shlex.join(cmd)}")
      code, text, wall = run_command(cmd, timeout, env)
      found, extras = p.parse(text)
      log_chunks.append(f"===== {p.name} (exit {code}, {wall:.1f} s): {shlex.join(cmd)}\n"
                        + text[-LOG_CHARS:])
      if code is None:
        status, reason = "timeout", f"killed after {timeout:.0f} s (its time limit)"
      elif code != 0:
        status, reason = "failed", f"exit status {code}: {_tail(text, 1)[:300]}"
      else:
        status, reason = "ok", ""
      if status != "ok":  # its values count as NaN; what it printed before is kept to read
        extras["values_before_" + status] = {k: _finite(v) for k, v in found.items()}
        found = {}
      doc.update(timeout_s=timeout, wall_s=wall, returncode=code,
                 extras={k: _finite(v) for k, v in extras.items()})
      _log(f"[perf] {p.name}: {status} in {wall:.1f} s: " + ", ".join(
          f"{n}={_fmt(found.get(n))}" for n in p.names)
           + (f"; output tail:\n{_tail(text, 8, 300)}" if status != "ok" else ""))
    doc.update(status=status, reason=reason)
    part_docs[p.name] = doc
    for name in p.names:
      v = _finite(found.get(name))
      r = results[name]
      r.update(value=v, goal_met=_goal_met(name, v), status=status, reason=reason)
      if v is None and status == "ok":
        r["status"] = "missing"
        r["reason"] = ("it printed nan" if name in found and found[name] is not None else
                       f"no such line in the output of {p.name}'s command" +
                       (" (--only=ours at smoke size prints no ratio=)"
                        if smoke and name in ("sac_ratio", "ppo_ratio") else ""))
    write(complete=False)

  doc = write(complete=True)
  for name in names:
    _print_value(name, results[name])
  met = doc["goals_met"]
  print(f"goals met: {met['count']} of {met['of']} ({', '.join(met['names']) or 'none'})",
        flush=True)
  _log(f"[perf] wrote {out}/perf.json and perf.log in {doc['wall_s']:.1f} s")
  return doc


def _finite(v):
  """``v``, or None for a NaN or infinite float (perf.json has no NaN)."""
  return None if isinstance(v, float) and not math.isfinite(v) else v


def _print_value(name: str, r: dict) -> None:
  """``name=value  [goal >= g: met|not met]`` or ``name=nan  [status: reason]``."""
  value, goal = r["value"], r["goal"]
  if value is not None:
    tag = "no goal" if goal is None else (
        f"goal >= {goal:g}: {'met' if value >= goal else 'not met'}")
  else:
    tag = f"{r['status']}: {r['reason']}"
  print(f"{name}={_fmt(value)}  [{tag}]", flush=True)


# -- part 3: PPO on Brax ant vs raw env stepping (no benchmark covers it) -------------------------


def ppo_ant_raw(a) -> None:
  """PPO (our trainer, configs/ppo/brax_ant.py) env-steps/s against raw random-action stepping
  of the same env (``make_from_config`` of the config's ``env``, so the same wrappers) and batch.

  PPO: ``trainer.chunk`` (``--updates_per_chunk`` updates in one compiled call, as the launcher
  runs it) called once to compile, then ``--timed_chunks`` times; the best chunk counts. Raw:
  one jitted ``lax.scan`` of uniform random actions over the same env steps as one chunk
  (``unroll_length * unrolls_per_update * updates_per_chunk`` steps of ``num_envs`` envs),
  compiled once, then timed as often; the best counts. Prints ``ppo env-steps/s``,
  ``raw env-steps/s`` and ``ppo/raw fraction=`` (as benchmarks/ppo_vs_brax.py does).
  """
  sys.path.insert(0, REPO)
  import jax  # pylint: disable=import-outside-toplevel
  from jaxlab.envs.from_config import make_from_config  # pylint: disable=import-outside-toplevel
  from jaxlab.rl import ppo  # pylint: disable=import-outside-toplevel
  from jaxlab.core.config import load_file  # pylint: disable=import-outside-toplevel
  from benchmarks.timing import random_unroll  # pylint: disable=import-outside-toplevel

  c = load_file(os.path.join(REPO, "configs/ppo/brax_ant.py"))
  assert c.trainer == "ppo", c.trainer
  for key in ("num_envs", "unroll_length", "unrolls_per_update", "num_minibatches",
              "num_epochs"):
    if getattr(a, key):
      c[key] = getattr(a, key)
  if a.env:
    c.env.name = a.env
  if a.episode_length:
    c.env.episode_length = a.episode_length
  c.log_every = a.updates_per_chunk
  c.eval.every = c.log_every  # (not run here; the launcher's rule: a multiple of log_every)
  c.checkpoint.every = 0
  per_update = ppo.steps_per_update(c)
  per_chunk = per_update * c.log_every
  c.total_env_steps = per_chunk * (a.timed_chunks + 1)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  jax {jax.__version__}")
  print(f"{c.env.name}: {c.num_envs} envs; update = {c.unrolls_per_update} x "
        f"{c.unroll_length} steps = {per_update:,} env steps, {c.num_epochs} epochs x "
        f"{c.num_minibatches} minibatches; chunk = {c.log_every} updates", flush=True)

  env = make_from_config(c.env)
  trainer = ppo.make_train(c, env)
  chunk = jax.jit(trainer.chunk, donate_argnums=0)
  state = jax.block_until_ready(jax.jit(trainer.init)(jax.random.PRNGKey(0)))
  t0 = time.perf_counter()
  state, _ = jax.block_until_ready(chunk(state))
  first = time.perf_counter() - t0
  best = float("inf")
  for _ in range(a.timed_chunks):
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(chunk(state))
    best = min(best, time.perf_counter() - t0)
  del state
  ppo_sps = per_chunk / best
  print(f"ppo: compile + first chunk {first:.1f} s; best of {a.timed_chunks} chunks "
        f"{best:.3f} s", flush=True)

  length = c.unroll_length * c.unrolls_per_update * c.log_every
  unroll = jax.jit(random_unroll(env, c.num_envs, length), donate_argnums=0)
  env_state = jax.block_until_ready(jax.jit(jax.vmap(env.reset))(
      jax.random.split(jax.random.PRNGKey(1), c.num_envs)))
  t0 = time.perf_counter()
  env_state = jax.block_until_ready(unroll(env_state, jax.random.PRNGKey(2)))
  first = time.perf_counter() - t0
  best = float("inf")
  for i in range(a.timed_chunks):
    t0 = time.perf_counter()
    env_state = jax.block_until_ready(unroll(env_state, jax.random.PRNGKey(3 + i)))
    best = min(best, time.perf_counter() - t0)
  raw_sps = length * c.num_envs * c.env.action_repeat / best
  print(f"raw: compile + first unroll {first:.1f} s; best of {a.timed_chunks} unrolls "
        f"{best:.3f} s", flush=True)
  print(f"ppo env-steps/s: {ppo_sps:,.0f}")
  print(f"raw env-steps/s: {raw_sps:,.0f}")
  print(f"ppo/raw fraction={ppo_sps / raw_sps:.3f}", flush=True)


# -- main -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
  import argparse  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", help="folder for perf.json and perf.log")
  p.add_argument("--smoke", action="store_true", help="tiny CPU sizes (tests)")
  p.add_argument("--budget_s", type=float, default=480.0,
                 help="wall-clock budget of the whole run, compilation included")
  p.add_argument("--parts", default="", help="comma-separated parts to run (default: all)")
  p.add_argument("--hbm_bandwidth", type=float, default=0.0,
                 help="bytes/s for the decode roofline (0: from the device kind)")
  p.add_argument("--cache_dir", default="",
                 help="persistent compilation cache of the sub-commands ('': jaxlab_perf/ in "
                 "the system's temporary folder, 'none': off)")
  w = p.add_argument_group("--worker=ppo_ant_raw (part 3, run as a sub-command)")
  w.add_argument("--worker", choices=["ppo_ant_raw"], default=None)
  w.add_argument("--env", default="", help="env name ('': the config's brax/ant)")
  w.add_argument("--episode_length", type=int, default=0)
  for key in ("num_envs", "unroll_length", "unrolls_per_update", "num_minibatches",
              "num_epochs"):
    w.add_argument(f"--{key}", type=int, default=0, help="0: configs/ppo/brax_ant.py's")
  w.add_argument("--updates_per_chunk", type=int, default=4)
  w.add_argument("--timed_chunks", type=int, default=2)
  a = p.parse_args(argv)
  if a.worker == "ppo_ant_raw":
    ppo_ant_raw(a)
    return 0
  if not a.out:
    p.error("--out is required")
  parts = tuple(x for x in a.parts.split(",") if x)
  run_parts(out=os.path.abspath(a.out), smoke=a.smoke, budget_s=a.budget_s, parts=parts,
            hbm_bandwidth=a.hbm_bandwidth, cache_dir=a.cache_dir)
  return 0


if __name__ == "__main__":
  sys.exit(main())
