"""Compare runs: a table of final metrics with 95% confidence intervals, and overlaid curves.

    python -m launch.analyze --workdir=runs/a,runs/b,runs/c --out=runs/compare
    python -m launch.analyze --workdir='runs/sweep/*' --keys=eval/episode_return,health/dormant_ratio/critic
    python -m launch.analyze --workdir='runs/kl/sync/*' ... --export=docs/reproductions/data/x.csv
    python -m launch.analyze --data=docs/reproductions/data/kl_estimators/sync.csv

``--export`` writes the per-seed values behind the table (one row per arm, run and seed;
``jaxlab.core.stats``); ``--data`` rebuilds the table from such a file alone, with no runs, so
every table of ``docs/reproductions/`` can be audited without rerunning. ``--update_page=PAGE``
rewrites, in a markdown page, the table after each ``<!-- data: FILE -->`` marker from FILE
(the prose around it still needs rereading). ``--data=FILE --paired=ARM`` gives the per-seed
differences of every other arm minus ``ARM``, seed matched with seed (``--export`` writes them),
the interval that supports an ordering between arms that share seeds. ``--data=A.csv,B.csv
--export=OUT.csv`` merges per-seed CSVs into one (rows matched by arm, run and seed; each
column from the first file that has it; two files disagreeing on a run's value is an error;
``--keys`` picks the columns, ``--runs=GLOB,...`` the runs), e.g. a table of arms that
different commands exported:

    python -m launch.analyze --update_page=docs/reproductions/asyppo.md

Each run contributes its ``metrics.jsonl``. Per-seed values (lists) give the interval over seeds;
runs sharing a label (``--group_by`` a config key, e.g. ``env.name``) are pooled as seeds of one
arm. Writes ``table.md`` / ``table.csv`` and one PNG per key into ``--out``.

``--columns`` names the table's columns (one per key, then one for ``--threshold``);
``--label=OLD:NEW`` renames an arm; ``--last`` takes one window for every key or one per key
(``--last=1,8``: the final chunk of the first key, the mean of the last 8 of the second).
``--at=1000,1400,...`` reports values over training instead of final ones: for every key and
every x (in ``--x`` units) the per-seed value of the record at that x, or of the nearest one
logged before it, as a column ``<column> @ <x>``.

``--preset=offpolicy`` (when ``--keys`` is not given) compares SAC/TD3 runs: returns, dormant
and GraMa ratios of critic and actor over training, neurons reset, and LEAST's stop rate and
where in the episode stops happen; only keys some run logged are kept. ``--threshold=R`` adds
the env steps each seed needed until its eval return first reached R (sample efficiency).

A run that trains several arms in one program (e.g. ``ns_supervised``: SIGReg weights side by
side) writes each metric once per arm as ``"<key>@<arm>"``; asking for ``<key>`` then gives one
row per arm, labelled ``<run>@<arm>`` (or ``<group>@<arm>`` with ``--group_by``).

``--kind=looped`` analyses one looped model instead (``jaxlab/looped``, spec
looped_grounding_kaleidoscope.md §1.5): ``--workdir`` is its model directory (or a run directory
holding ``hf_model/``); the prompts come from ``--prompts`` (a JSONL task file, whose
``question`` fields are used, or a text file with one prompt per line; for a run directory the
default is the run's first held-out file, ``config.data.eval_files[0]``); every trip count of
``--iterations`` is captured, and ``results.npz``, ``metrics.json`` and the PNGs go to ``--out``:

    python -m launch.analyze --kind=looped --workdir=runs/looped_sandwich \
        --prompts=data/llm/chain_sum_eval.jsonl --iterations=4,8,16,32 --out=runs/looped_analysis

``--core_order=1,0`` analyses the model with its core blocks swapped (``--core_order=0`` with
block 1 deleted), in every iteration; an index the model does not have is one error line.

``--kind=eval_runs`` pools ``launch.eval`` results over training seeds: each ``--workdir`` is
an evaluation folder ``<training run>/<name>`` holding ``results.json``; runs sharing ``<name>``
(e.g. ``direct``) form one arm, the seed is the training run's, and the table gives every
headline aggregate (e.g. ``total_accuracy/macro_language``) as a mean with its 95% Student-t
interval over seeds (``results.json``'s own intervals are over items):

    python -m launch.analyze --kind=eval_runs \
        --workdir='runs/kscope_1500_s*/direct,runs/kscope_1500_s*/cot' \
        --keys=total_accuracy/macro_language --export=x.csv

``--kind=groundcua_study`` scores GroundCUA runs' held-out completions (``jaxlab/grounding/
study.py``): one row per run with accuracy and mean reward overall, by element size and by
instruction kind; ``--data=<its --export CSV> --paired=<SFT arm>`` then gives RL minus SFT:

    python -m launch.analyze --kind=groundcua_study \
        --tasks=runs/groundcua_data/heldout/tasks.jsonl \
        --workdir='runs/groundcua_sft_s*,runs/groundcua_rl_s*' --export=study.csv
"""

from __future__ import annotations

import glob
import json
import math
import os
import re

import numpy as np
from absl import flags

from jaxlab.core import files
from launch import cli
from launch.cli import fail
from jaxlab.core.errors import DataError, JaxlabError

_WORKDIR = flags.DEFINE_list("workdir", None, "Run directories (comma-separated; globs allowed).")
_DATA = flags.DEFINE_list("data", None, "Per-seed CSV files (written by --export) or benchmark "
                          "results.json files: print their "
                          "tables instead of reading runs.")
_UPDATE_PAGE = flags.DEFINE_list("update_page", None, "Markdown pages whose tables after "
                                 "'<!-- data: FILE -->' markers are rewritten from FILE.")
_PAIRED = flags.DEFINE_string("paired", None, "With --data (one CSV): print, and --export, the "
                              "per-seed differences of every other arm minus this arm, seed "
                              "matched with seed (a run's _s<N> suffix, else its seed column).")
_EXPORT = flags.DEFINE_string("export", None, "Write the per-seed values of the table here (CSV).")
_RUNS = flags.DEFINE_list("runs", None, "With --data and --export: keep only the rows whose run "
                          "name matches one of these globs.")
_OUT = flags.DEFINE_string("out", "runs/analysis", "Output directory for the table and plots.")
_KEYS = flags.DEFINE_list("keys", ["eval/episode_return", "train/episode_return"],
                          "Metric keys for the table and the plots.")
_GROUP_BY = flags.DEFINE_string("group_by", None,
                                "Dotted config key whose value labels (and pools) runs, or "
                                "'seed_suffix': pool runs whose names differ only in _s<N>.")
_LAST = flags.DEFINE_list("last", ["1"], "Average each run's last N finite records per key: one "
                          "N for every key, or one N per key (in --keys order).")
_COLUMNS = flags.DEFINE_list("columns", None, "Column headers of the table and of the exported "
                             "CSV: one per key, then one for --threshold (default: the key).")
_AT = flags.DEFINE_list("at", None, "Report each key at these x values (in --x units) instead "
                        "of its final value: the record at x, or the nearest logged before it.")
_LABEL = flags.DEFINE_multi_string("label", [], "Rename an arm: OLD:NEW (split at the first "
                                   "':'); OLD must be an arm of the table.")
_X = flags.DEFINE_string("x", "env_steps", "Metric for the x axis of the curves.")
PRESETS = {
    "returns": ["eval/episode_return", "train/episode_return"],
    "offpolicy": ["eval/episode_return", "train/episode_return",
                  "health/dormant_ratio/critic", "health/grama_ratio/critic",
                  "health/grama_w_ratio/critic", "health/dormant_ratio/actor",
                  "health/grama_ratio/actor", "reset/neurons/critic", "reset/neurons/actor",
                  "least/stop_rate", "least/stop_step_mean", "least/stop_quarter/1",
                  "least/stop_quarter/2", "least/stop_quarter/3", "least/stop_quarter/4",
                  "replay/low_reward_share"],
}
_PRESET = flags.DEFINE_enum("preset", "returns", list(PRESETS),
                            "Key set used when --keys is not given.")
_KIND = flags.DEFINE_enum("kind", "runs", ["runs", "looped", "looped_study", "groundcua_study",
                                            "eval_runs"],
                          "runs: compare training runs; looped: the mechanistic analysis of one "
                          "looped model; looped_study: the looped study's criteria per run, from "
                          "runs analysed with --kind=looped (docs/reproductions/looped.md); "
                          "groundcua_study: held-out accuracy and reward per run, overall, by "
                          "element size and instruction kind (docs/reproductions/groundcua.md); "
                          "eval_runs: launch.eval results per training seed, intervals over "
                          "seeds (docs/reproductions/kaleidoscope.md).")
_TASKS = flags.DEFINE_string("tasks", None, "groundcua_study: the held-out tasks.jsonl the runs' "
                             "completions answer.")
_ANALYSIS_DIR = flags.DEFINE_string("analysis_dir", "analysis", "looped_study: the folder of "
                                    "each run that holds its --kind=looped output.")
_ITERATIONS = flags.DEFINE_list("iterations", ["4", "8", "16"], "looped: trip counts to capture.")
_PROMPTS = flags.DEFINE_string("prompts", None, "looped: a JSONL task file or a text file with one "
                               "prompt per line.")
_NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 16, "looped: the first N prompts (0: all).")
_CORE_ORDER = flags.DEFINE_list("core_order", None, "looped: analyse the model with its core "
                                "blocks in this order in every iteration (leave an index out to "
                                "delete that block, exchange two to swap them).")
_BASELINE = flags.DEFINE_string("baseline", None, "looped: a feed-forward decoder directory for "
                                "the stage curves.")
_THRESHOLD = flags.DEFINE_float("threshold", None, "Also report env steps to reach this eval "
                                "return (per seed; mean over the seeds that reached it).")


def _config_value(workdir: str, dotted: str):
  value = files.read_run_config(workdir)
  for part in dotted.split("."):
    if not isinstance(value, dict) or part not in value:
      raise KeyError(f"{workdir}/config.json has no key 'config.{dotted}'")
    value = value[part]
  return value


def split_arms(records: list[dict], keys: list[str]) -> dict[str, list[dict]]:
  """One run's records per arm: ``{"": records}`` unless the keys are only there as
  ``"<key>@<arm>"``, then ``{arm: records with "<key>@<arm>" renamed to "<key>"}``."""
  present = {k for rec in records for k in rec}
  if any(k in present for k in keys):
    return {"": records}
  arms = sorted({k.split("@", 1)[1] for k in present
                 if "@" in k and k.split("@", 1)[0] in keys})
  if not arms:
    return {"": records}
  out = {}
  for arm in arms:
    suffix = "@" + arm
    out[arm] = [{(k[:-len(suffix)] if k.endswith(suffix) else k): v for k, v in rec.items()
                 if "@" not in k or k.endswith(suffix)} for rec in records]
  return out


def final_values(records: list[dict], key: str, last: int) -> np.ndarray:
  """Per-seed values of ``key``: the mean of the last ``last`` finite records, shape [seeds]."""
  rows = []
  for rec in records:
    if key in rec and rec[key] is not None:
      v = np.asarray(rec[key], dtype=np.float64).reshape(-1)
      if np.all(np.isfinite(v)):
        rows.append(v)
  if not rows:
    return np.zeros((0,))
  return np.mean(np.stack(rows[-last:]), axis=0)


def steps_to_threshold(records: list[dict], threshold: float, key: str = "eval/episode_return",
                       x_key: str = "env_steps") -> np.ndarray:
  """Per seed, the first ``x_key`` at which ``key`` >= ``threshold``; +inf if never (a seed
  that was measured and did not get there, unlike a missing value). [seeds]."""
  first = None
  for rec in records:
    if key not in rec or rec[key] is None:
      continue
    v = np.asarray(rec[key], dtype=np.float64).reshape(-1)
    if first is None:
      first = np.full(v.shape, np.nan)
    hit = np.isnan(first) & np.isfinite(v) & (v >= threshold)
    first[hit] = rec.get(x_key, rec["step"])
  return np.zeros((0,)) if first is None else np.where(np.isnan(first), np.inf, first)


def values_at(records: list[dict], key: str, x: float, x_key: str = "env_steps") -> np.ndarray:
  """Per-seed values of ``key`` at ``x_key`` = ``x``: those of the last record logging ``key``
  whose x is at most ``x`` (the record at ``x`` if there is one). [seeds]; empty if ``key`` was
  not logged by then."""
  chosen = None
  for rec in records:
    if key in rec and rec[key] is not None and rec.get(x_key, rec["step"]) <= x:
      chosen = rec[key]
  if chosen is None:
    return np.zeros((0,))
  return np.asarray(chosen, dtype=np.float64).reshape(-1)


def _x_text(x: float) -> str:
  return str(int(x)) if float(x).is_integer() else f"{x:g}"


def resolve_keys(records_per_run: list[list[dict]]) -> list[str]:
  """``--keys`` if given, else the preset's keys that some run logged (returns always)."""
  if flags.FLAGS["keys"].present or _PRESET.value == "returns":
    return list(_KEYS.value)
  present = {k.split("@", 1)[0] for recs in records_per_run for rec in recs for k in rec}
  return [k for k in PRESETS[_PRESET.value] if k in present or k.endswith("episode_return")]


def run_label(workdir: str, group_by: str | None) -> str:
  """The arm a run belongs to: its directory name; with ``group_by="seed_suffix"`` the name
  without a trailing ``_s<N>`` (so ``runs/x/grpo_s0`` and ``grpo_s1`` pool as arm ``grpo``);
  with a dotted config key, ``key=value``."""
  name = os.path.basename(os.path.normpath(workdir))
  if not group_by:
    return name
  if group_by == "seed_suffix":
    return re.sub(r"_s\d+$", "", name)
  return f"{group_by}={_config_value(workdir, group_by)}"


def table_of(path: str) -> str:
  """The markdown table of a per-seed CSV, or of a benchmark ``results.json``; a file that
  cannot be read or parsed exits 2 naming it."""
  from jaxlab.core import stats  # pylint: disable=import-outside-toplevel
  from jaxlab.evals import benchmark  # pylint: disable=import-outside-toplevel
  try:
    if path.endswith(".json"):
      with open(path) as f:
        return benchmark.results_table(json.load(f))
    columns, rows = stats.read_seed_rows(path)
    return stats.seed_table(rows, columns)
  except (OSError, ValueError, KeyError) as err:
    fail(f"{path}: {err}")


def tables_from_data(paths: list[str]) -> None:
  """Prints the table of each per-seed CSV, or of each benchmark ``results.json``."""
  for path in paths:
    print(f"{path}:\n{table_of(path)}\n")


def merge_data() -> None:
  """``--data=A.csv,B.csv,... --export=OUT``: one per-seed CSV of the runs in all of them
  (:func:`stats.merge_seed_rows`), its table printed."""
  from jaxlab.core import stats  # pylint: disable=import-outside-toplevel
  tables, columns = [], []
  for path in _DATA.value:
    if not path.endswith(".csv"):
      fail(f"--data={path}: --export merges per-seed CSVs only")
    try:
      cols, rows = stats.read_seed_rows(path)
    except (OSError, ValueError) as err:
      fail(f"{path}: {err}")
    tables.append((path, rows))
    columns += [c for c in cols if c not in columns]
  if flags.FLAGS["keys"].present:
    missing = [k for k in _KEYS.value if k not in columns]
    if missing:
      fail(f"--keys: {', '.join(missing)} in none of {', '.join(_DATA.value)}")
    columns = list(_KEYS.value)
  try:
    rows = stats.merge_seed_rows(tables, columns, _RUNS.value)
  except ValueError as err:
    fail(str(err))
  os.makedirs(os.path.dirname(os.path.abspath(_EXPORT.value)), exist_ok=True)
  stats.write_seed_rows(_EXPORT.value, rows, columns)
  print(stats.seed_table(rows, columns))


def paired_from_data() -> None:
  """``--data=FILE --paired=ARM``: the table of per-seed differences to ``ARM`` (and their CSV
  with ``--export``)."""
  from jaxlab.core import stats  # pylint: disable=import-outside-toplevel
  if not _DATA.value or len(_DATA.value) != 1 or not _DATA.value[0].endswith(".csv"):
    fail(f"--paired needs --data=<one per-seed CSV>, got --data={_DATA.value}")
  path = _DATA.value[0]
  try:
    columns, rows = stats.read_seed_rows(path)
    diffs = stats.paired_differences(rows, columns, _PAIRED.value)
  except (OSError, ValueError, KeyError) as err:
    fail(f"{path}: {err}")
  columns = [f"Δ {c}" for c in columns]
  diffs = [{**{k: d[k] for k in stats.ID_COLUMNS},
            **{f"Δ {c}": v for c, v in d.items() if c not in stats.ID_COLUMNS}} for d in diffs]
  if _EXPORT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_EXPORT.value)), exist_ok=True)
    stats.write_seed_rows(_EXPORT.value, diffs, columns)
  print(stats.seed_table(diffs, columns))


DATA_MARKER = re.compile(r"^<!-- data: (\S+\.(?:csv|json)) -->$")


def update_page(page: str) -> int:
  """Replaces the table that follows each data marker of ``page`` (blank lines between them
  allowed; a marker with no table yet gets one) with the table of the marker's file, a path
  relative to the working directory. Returns the number of tables written."""
  try:
    with open(page, encoding="utf-8") as f:
      lines = f.read().split("\n")
  except OSError as err:
    fail(f"--update_page: {page}: {err.strerror}")
  n, i = 0, -1
  while i + 1 < len(lines):  # the loop edits ``lines``
    i += 1
    m = DATA_MARKER.match(lines[i].strip())
    if not m:
      continue
    j = i + 1
    while j < len(lines) and not lines[j].strip():
      j += 1
    k = j
    while k < len(lines) and lines[k].lstrip().startswith("|"):
      k += 1
    table = table_of(m.group(1)).split("\n")
    lines[j:k] = table if k > j else [""] + table + [""]
    n += 1
  with open(page, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  return n


def _model_dir(path: str) -> str:
  exported = os.path.join(path, "hf_model")
  return exported if os.path.isfile(os.path.join(exported, "config.json")) else path


def _read_prompts(path: str, n: int) -> tuple[list[str], list[dict | None]]:
  """The prompts and, from JSONL rows with ``metadata.segments`` (``{group: [start, end]}``
  character spans), their token-group spans (None per prompt without)."""
  try:
    with open(path) as f:
      lines = [ln.rstrip("\n") for ln in f if ln.strip()]
  except OSError as err:
    fail(f"--prompts={path}: {err.strerror or err}")
  prompts, segments = [], []
  if path.endswith(".jsonl"):
    for i, line in enumerate(lines, 1):
      try:
        row = json.loads(line)
        prompts.append(str(row["question"]))
      except (ValueError, KeyError, TypeError):
        fail(f"{path}:{i}: expected a JSON object with a 'question' field")
      seg = (row.get("metadata") or {}).get("segments") if isinstance(row, dict) else None
      if seg is not None and not (isinstance(seg, dict) and all(
          isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v)
          for v in seg.values())):
        fail(f"{path}:{i}: metadata.segments must map group names to [start, end] ints")
      segments.append(seg)
  else:
    prompts, segments = lines, [None] * len(lines)
  if not prompts:
    fail(f"--prompts={path}: no prompts")
  return (prompts[:n], segments[:n]) if n else (prompts, segments)


def _run_eval_file(workdir: str) -> str | None:
  """The first of a launch.train run's ``config.data.eval_files``; None for a model directory
  (or a run without them)."""
  try:
    eval_files = _config_value(workdir, "data.eval_files")
  except (KeyError, JaxlabError):
    return None
  return eval_files[0] if isinstance(eval_files, list) and eval_files else None


def analyze_looped() -> None:
  """``--kind=looped``: :func:`jaxlab.looped.analyze.run_analysis` on one model."""
  if not _WORKDIR.value or len(_WORKDIR.value) != 1:
    fail("--kind=looped takes one --workdir: a looped model directory or a run holding hf_model/")
  prompts_path = _PROMPTS.value or _run_eval_file(_WORKDIR.value[0])
  if not prompts_path:
    fail("--kind=looped needs --prompts=<task .jsonl or text file, one prompt per line> (only "
         "a launch.train run directory has held-out files to take them from)")
  if not _PROMPTS.value:
    print(f"prompts: {prompts_path} (the run's first held-out file; --prompts=FILE for others)")
  try:
    iterations = [int(x) for x in _ITERATIONS.value]
  except ValueError:
    fail(f"--iterations={','.join(_ITERATIONS.value)}: expected comma-separated integers")
  if not iterations or min(iterations) < 1:
    fail(f"--iterations={','.join(_ITERATIONS.value)}: every trip count must be >= 1")
  model_dir = _model_dir(_WORKDIR.value[0])
  if not os.path.isfile(os.path.join(model_dir, "config.json")):
    fail(f"--workdir={_WORKDIR.value[0]}: no config.json there or in its hf_model/")
  core_order = None
  if _CORE_ORDER.value is not None:
    try:
      core_order = [int(x) for x in _CORE_ORDER.value]
    except ValueError:
      fail(f"--core_order={','.join(_CORE_ORDER.value)}: expected comma-separated block indices")
  prompts, segments = _read_prompts(prompts_path, _NUM_PROMPTS.value)
  from jaxlab.looped import analyze as looped_analyze  # pylint: disable=import-outside-toplevel
  try:
    out = looped_analyze.run_analysis(
        model_dir, _OUT.value, iterations, prompts=prompts, segments=segments,
        baseline=_model_dir(_BASELINE.value) if _BASELINE.value else None,
        core_order=core_order)
  except (JaxlabError, ValueError) as err:
    fail(str(err))
  print(f"wrote {len(out['files'])} files to {_OUT.value}")


def write_tables(seed_rows: list[dict], columns: list[str]) -> None:
  """``--out``/table.csv (per seed), table.md (mean ± 95% CI per arm), ``--export``; prints
  the table."""
  from jaxlab.core import stats  # pylint: disable=import-outside-toplevel
  os.makedirs(_OUT.value, exist_ok=True)
  stats.write_seed_rows(os.path.join(_OUT.value, "table.csv"), seed_rows, columns)
  if _EXPORT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_EXPORT.value)), exist_ok=True)
    stats.write_seed_rows(_EXPORT.value, seed_rows, columns)
  table = stats.seed_table(seed_rows, columns)
  with open(os.path.join(_OUT.value, "table.md"), "w") as f:
    f.write(table + "\n")
  print(table)


def picked_columns(columns: list[str]) -> list[str]:
  """``--keys`` when given (each must be one of ``columns``, else one error line), else
  ``columns``."""
  if not flags.FLAGS["keys"].present:
    return columns
  unknown = [k for k in _KEYS.value if k not in columns]
  if unknown:
    fail(f"--keys: no column {', '.join(unknown)}; the columns are {', '.join(columns)}")
  return list(_KEYS.value)


def globbed_workdirs() -> list[str]:
  """The ``--workdir`` entries, globs expanded, directories only."""
  workdirs = []
  for pattern in _WORKDIR.value or []:
    matches = sorted(glob.glob(pattern)) or [pattern]
    workdirs += [m for m in matches if os.path.isdir(m)]
  return workdirs


def study_arms() -> dict[str, list[str]]:
  """``{arm: [workdirs]}`` of ``--workdir`` (globs expanded), arms from ``--group_by`` (default:
  the directory name without ``_s<N>``); no run directory exits 2."""
  workdirs = globbed_workdirs()
  if not workdirs:
    fail(f"--workdir={','.join(_WORKDIR.value or [])}: no run directories")
  arms: dict[str, list[str]] = {}
  for w in workdirs:
    try:
      arms.setdefault(run_label(w, _GROUP_BY.value or "seed_suffix"), []).append(w)
    except (KeyError, JaxlabError) as err:
      fail(err.args[0])
  return arms


def analyze_looped_study() -> None:
  """``--kind=looped_study``: the looped study's criteria per run (:mod:`jaxlab.looped.study`),
  arms from ``--group_by`` (default: the directory name without ``_s<N>``), the columns of
  ``--keys`` if given (a feed-forward run has only the accuracy and stage columns)."""
  from jaxlab.looped import study  # pylint: disable=import-outside-toplevel
  arms = study_arms()
  try:
    rows = study.study_rows(arms, _ANALYSIS_DIR.value)
  except (OSError, ValueError, KeyError) as err:
    fail(str(err))
  columns = study.columns(rows)
  # --keys: a subset, e.g. the stage columns the feed-forward has
  write_tables(rows, picked_columns(columns))
  from jaxlab.core import plotting  # pylint: disable=import-outside-toplevel
  written = plotting.plot_runs(study.curve_records(arms, _ANALYSIS_DIR.value), study.CURVES,
                               _OUT.value, x_key="iteration")
  print(f"wrote {_OUT.value}/table.md, table.csv (per seed) and {len(written)} plots")


def analyze_groundcua_study() -> None:
  """``--kind=groundcua_study``: :func:`jaxlab.grounding.study.study_rows` of the runs, arms
  from ``--group_by`` (default: the directory name without ``_s<N>``)."""
  from jaxlab.grounding import study  # pylint: disable=import-outside-toplevel
  if not _TASKS.value:
    fail("--kind=groundcua_study needs --tasks=<the held-out tasks.jsonl>")
  arms = study_arms()
  try:
    rows = study.study_rows(arms, _TASKS.value)
  except DataError as err:
    fail(str(err))
  write_tables(rows, study.COLUMNS)


def analyze_eval_runs() -> None:
  """``--kind=eval_runs``: :func:`jaxlab.evals.benchmark.seed_rows` of the evaluation
  workdirs ``--workdir`` (each ``<training run>/<name>`` with a ``results.json``), one arm per
  ``<name>``, intervals over the training runs' seeds; ``--keys`` picks columns."""
  from jaxlab.evals import benchmark  # pylint: disable=import-outside-toplevel
  workdirs = globbed_workdirs()
  if not workdirs:
    fail(f"--workdir={','.join(_WORKDIR.value or [])}: no evaluation directories")
  try:
    columns, rows = benchmark.seed_rows(workdirs)
  except JaxlabError as err:
    fail(str(err))
  write_tables(rows, picked_columns(columns))


def main(argv):
  del argv
  if _KIND.value == "eval_runs":
    analyze_eval_runs()
    return
  if _KIND.value == "groundcua_study":
    analyze_groundcua_study()
    return
  if _KIND.value == "looped":
    analyze_looped()
    return
  if _KIND.value == "looped_study":
    analyze_looped_study()
    return
  if _PAIRED.value is not None:
    paired_from_data()
    return
  if _DATA.value and _EXPORT.value:
    merge_data()
    return
  if _DATA.value or _UPDATE_PAGE.value:
    tables_from_data(_DATA.value or [])
    for page in _UPDATE_PAGE.value or []:
      print(f"{page}: {update_page(page)} tables rewritten from their data files")
    return
  if not _WORKDIR.value:
    fail("pass --workdir=<run dirs> (or --data=<per-seed CSV files>, or --update_page=<page>)")
  from jaxlab.core import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.core import plotting  # pylint: disable=import-outside-toplevel
  from jaxlab.core import stats  # pylint: disable=import-outside-toplevel

  workdirs = globbed_workdirs()
  missing = [w for w in workdirs if not os.path.exists(os.path.join(w, "metrics.jsonl"))]
  if not workdirs or missing:
    fail(f"no metrics.jsonl in {missing or _WORKDIR.value}; pass jaxlab run directories")

  all_records = {w: metrics_lib.read_metrics(w) for w in workdirs}
  keys = resolve_keys(list(all_records.values()))
  arms: dict[str, list[tuple[str, list[dict]]]] = {}
  for w in workdirs:
    try:
      label = run_label(w, _GROUP_BY.value)
    except (KeyError, JaxlabError) as err:
      fail(err.args[0])
    for arm, records in split_arms(all_records[w], keys).items():
      arms.setdefault(f"{label}@{arm}" if arm else label, []).append(
          (os.path.basename(os.path.normpath(w)), records))

  try:
    lasts = [int(v) for v in _LAST.value]
    at = [float(v) for v in _AT.value or []]
  except ValueError as err:
    fail(f"--last and --at take numbers: {err}")
  if len(lasts) not in (1, len(keys)) or min(lasts) < 1:
    fail(f"--last takes one window >= 1 or one per key ({len(keys)}), got {_LAST.value}")
  lasts = lasts * len(keys) if len(lasts) == 1 else lasts
  n_columns = len(keys) + (_THRESHOLD.value is not None)
  if _COLUMNS.value is not None and len(_COLUMNS.value) != n_columns:
    fail(f"--columns names {len(_COLUMNS.value)} columns, the table has {n_columns} "
         f"({len(keys)} keys{' and the threshold' if _THRESHOLD.value is not None else ''})")
  names = list(_COLUMNS.value or [])
  try:
    renames = stats.parse_labels(_LABEL.value)
  except ValueError as err:
    fail(str(err))
  unknown = sorted(set(renames) - set(arms))
  if unknown:
    fail(f"--label: no arm {', '.join(map(repr, unknown))}; the arms are {', '.join(arms)}")
  relabelled: dict[str, list[tuple[str, list[dict]]]] = {}
  for label, runs in arms.items():
    relabelled.setdefault(renames.get(label, label), []).extend(runs)
  arms = relabelled

  # One getter per column: (column header, per-seed values of one run's records).
  getters = []
  for i, (k, last) in enumerate(zip(keys, lasts)):
    name = names[i] if names else None
    if at:
      for x in at:
        getters.append((f"{name or k} @ {_x_text(x)}",
                        lambda recs, k=k, x=x: values_at(recs, k, x, x_key=_X.value)))
    else:
      getters.append((name or f"{k} (mean ± 95% CI)",
                      lambda recs, k=k, last=last: final_values(recs, k, last)))
  if _THRESHOLD.value is not None:
    getters.append((names[-1] if names else
                    f"{_X.value} to eval return >= {_THRESHOLD.value:g}",
                    lambda recs: steps_to_threshold(recs, _THRESHOLD.value, x_key=_X.value)))
  columns = [c for c, _ in getters]
  seed_rows = []
  for label, runs in arms.items():
    for name, records in runs:
      per_key = {c: get(records) for c, get in getters}
      for i in range(max(v.size for v in per_key.values())):
        seed_rows.append({"arm": label, "run": name, "seed": i, **{
            c: (float(v[i]) if i < v.size else math.nan) for c, v in per_key.items()}})

  write_tables(seed_rows, columns)

  # Curves: pool the runs of an arm as extra seeds, record by record.
  pooled = {}
  for label, runs in arms.items():
    runs = [records for _, records in runs]
    merged = []
    for i in range(max(len(r) for r in runs)):
      recs = [r[i] for r in runs if i < len(r)]
      rec = {"step": recs[0]["step"], _X.value: recs[0].get(_X.value, recs[0]["step"])}
      for key in keys:
        vals = [np.asarray(x[key], dtype=np.float64).reshape(-1) for x in recs if key in x]
        if vals:
          rec[key] = np.concatenate(vals).tolist()
      merged.append(rec)
    pooled[label] = merged
  written = plotting.plot_runs(pooled, keys, _OUT.value, x_key=_X.value)
  print(f"wrote {_OUT.value}/table.md, table.csv (per seed) and {len(written)} plots")


if __name__ == "__main__":
  cli.run(main)
