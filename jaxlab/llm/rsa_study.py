r"""The RSA reproduction's own pieces (docs/reproductions/rsa.md, configs/rsa/study.py).

Two commands:

    python -m jaxlab.llm.rsa_study teacher --rows=AGG_ROWS.jsonl [--rows=...] --out=SFT.jsonl
    python -m jaxlab.llm.rsa_study table --study=runs/rsa_study --export=DIR --plot=PNG

``teacher`` turns the aggregation rows of ``launch.rsa --rl_data`` (aggregation prompts over
candidates sampled from a frozen model) into supervised rows whose target is the candidates'
per-position plurality: a scripted aggregator that reads only the candidates, never the true
answer (kept as ``metadata.true_answer``). Ties break by a draw keyed on the row's problem id
and candidates, so the file is a pure function of its input.

``table`` reads ``<study>/s<seed>/<model>_rsa/results.json`` of every seed and model, writes
per-seed CSVs (``criteria.csv``: one row per (model, seed); ``curves.csv``: one row per (model,
seed, curve, step)) for ``launch.analyze --data``, prints the criteria table and draws the
page's figure (``--plot``).
"""

from __future__ import annotations

import collections
import glob
import hashlib
import json
import os
import re
import sys
from typing import Any, Sequence

import numpy as np

from jaxlab.core import stats
from jaxlab.llm import tasks as tasks_lib

# The models of the study, in the order of the page's tables.
MODELS = ("base", "agg", "rl_plain", "rl_agg", "rl_plain_short", "rl_agg_short")

# Per-(model, seed) columns of criteria.csv (each a mean over the held-out problems).
COLUMNS = (
    "step0_accuracy",  # Pass@1 of plain sampling (RSA's step 0)
    "step0_majority",  # majority vote over the N step-0 samples
    "step0_pass_at_n",  # any of the N step-0 samples right
    "final_accuracy",  # RSA's Pass@1 after T steps
    "gain",  # final_accuracy - step0_accuracy
    "self_refine_final_accuracy",  # the same loop with K = 1
    "sampling_majority",  # majority vote over plain samples of RSA's generated tokens
    "sampling_pass",  # any of those samples right
    "rsa_minus_majority",  # final_accuracy - sampling_majority
    "step0_letter_accuracy",  # share of answer positions right, over the step-0 samples
    "final_letter_accuracy",  # the same after T steps
    "final_distinct_answers",
    "tokens_per_problem",  # generated tokens per problem over the T steps
)


# -- the scripted aggregation teacher -------------------------------------------------------------


def _tie_rng(row: dict[str, Any], candidates: Sequence[str]) -> np.random.Generator:
  blob = json.dumps([row["task"], row["metadata"].get("source_question", row["question"]),
                     list(candidates)])
  return np.random.default_rng(int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8],
                                              "little"))


def plurality(words: Sequence[str], rng: np.random.Generator) -> str:
  """Per-position plurality of ``words``: the most common length, then at each position the
  most common character among the words long enough to have one; ties drawn with ``rng``."""

  def vote(items: Sequence[Any]) -> Any:
    counts = collections.Counter(items)
    top = max(counts.values())
    tied = sorted(v for v, n in counts.items() if n == top)
    return tied[int(rng.integers(len(tied)))]

  if not words:
    raise ValueError("plurality of no words")
  length = vote([len(w) for w in words])
  return "".join(vote([w[i] for w in words if len(w) > i]) for i in range(length))


def teacher_rows(rows: Sequence[dict[str, Any]], where: str = "rows") -> list[dict[str, Any]]:
  """The aggregation rows of ``rows`` with ``answer`` replaced by the plurality of the answers
  their candidates give (``metadata.candidates``); rows of other forms are dropped.

  Raises:
    tasks_lib.TaskDataError: a row without ``metadata.candidates`` (not written by
      ``launch.rsa --rl_data``), naming its position in ``where``.
  """
  out = []
  for i, row in enumerate(rows):
    meta = row.get("metadata") or {}
    if meta.get("rsa_form") != "aggregation":
      continue
    cands = meta.get("candidates")
    if not isinstance(cands, list) or not cands:
      raise tasks_lib.TaskDataError(
          f"{where}:{i + 1}: an aggregation row without metadata.candidates; write the rows "
          "with python -m launch.rsa --rl_data=FILE")
    task = tasks_lib.get_task(row["task"])
    answers = [a for a in (task.extract(c) for c in cands) if a]
    if not answers:
      continue  # no candidate gives an answer: nothing to teach
    target = plurality(answers, _tie_rng(row, cands))
    out.append(dict(row, answer=target,
                    metadata=dict(meta, true_answer=row["answer"], teacher="plurality")))
  return out


# -- the study table ------------------------------------------------------------------------------


def _final(curve: Sequence[dict[str, Any]]) -> dict[str, float]:
  return curve[-1]["overall"]


def seed_row(model: str, seed: int, results: dict[str, Any]) -> dict[str, Any]:
  """One row of criteria.csv from a run's results.json."""
  rsa_steps = results["rsa"]["steps"]
  first, last = rsa_steps[0]["overall"], rsa_steps[-1]["overall"]
  row: dict[str, Any] = {"arm": model, "run": f"{model}_s{seed}", "seed": seed,
                         "step0_accuracy": first["accuracy"],
                         "step0_majority": first["majority"],
                         "step0_pass_at_n": first["pass_at_n"],
                         "final_accuracy": last["accuracy"],
                         "gain": last["accuracy"] - first["accuracy"],
                         "final_distinct_answers": last["distinct_answers"],
                         "tokens_per_problem": last["tokens_cum"]}
  if "self_refine" in results:
    row["self_refine_final_accuracy"] = _final(results["self_refine"]["steps"])["accuracy"]
  if "sampling" in results:
    s = _final(results["sampling"]["steps"])
    row["sampling_majority"] = s["majority"]
    row["sampling_pass"] = s["pass_at_n"]
    row["rsa_minus_majority"] = last["accuracy"] - s["majority"]
  return row


def letter_accuracy(results: dict[str, Any], state: dict[str, Any]) -> float:
  """The share of answer characters a population gets right at their position (first word of
  each completion against the reference answer, over the reference's length), averaged over
  members and problems: where whole-answer accuracy is near 0 it still shows how close the
  samples are, and what an aggregation step adds or loses per position."""
  per = []
  for prob, p in zip(results["problems"], state["problems"]):
    want = prob["answer"]
    for text in p["texts"]:
      got = (text.split() or [""])[0]
      per.append(np.mean([i < len(got) and got[i] == ch for i, ch in enumerate(want)]))
  return float(np.mean(per))


def _step_state(run_dir: str, step: int) -> dict[str, Any] | None:
  """The RSA arm's state file of ``step`` in a run directory (None if it was not kept)."""
  from jaxlab.llm import rsa  # pylint: disable=g-import-not-at-top  (jax: only for the table)
  path = rsa.step_path(os.path.join(run_dir, "rsa"), step)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


CURVE_KEYS = ("accuracy", "majority", "pass_at_n", "distinct_answers", "tokens_cum")


def curve_rows(model: str, seed: int, results: dict[str, Any]) -> list[dict[str, Any]]:
  """Rows of curves.csv: per curve (rsa, self_refine, sampling) and step, the overall means."""
  out = []
  for name in ("rsa", "self_refine", "sampling"):
    for point in results.get(name, {}).get("steps", []):
      out.append({"arm": f"{model}/{name}/{point['step']}", "run": f"{model}_s{seed}",
                  "seed": seed, **{k: point["overall"][k] for k in CURVE_KEYS}})
  return out


def collect(study: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """``(criteria rows, curve rows)`` of every ``<study>/s<seed>/<model>_rsa/results.json``: the
  study's models in :data:`MODELS` order, then any other (exploratory) run by name."""
  crit, curves = [], []
  found = {os.path.basename(os.path.dirname(p))[:-len("_rsa")]
           for p in glob.glob(os.path.join(study, "s*", "*_rsa", "results.json"))}
  for model in [m for m in MODELS if m in found] + sorted(found - set(MODELS)):
    for path in sorted(glob.glob(os.path.join(study, "s*", f"{model}_rsa", "results.json"))):
      m = re.fullmatch(r"s(\d+)", os.path.basename(os.path.dirname(os.path.dirname(path))))
      if not m:
        continue
      with open(path) as f:
        results = json.load(f)
      row = seed_row(model, int(m.group(1)), results)
      run_dir = os.path.dirname(path)
      for key, step in (("step0_letter_accuracy", 0),
                        ("final_letter_accuracy", len(results["rsa"]["steps"]) - 1)):
        state = _step_state(run_dir, step)
        if state is not None:
          row[key] = letter_accuracy(results, state)
      crit.append(row)
      curves.extend(curve_rows(model, int(m.group(1)), results))
  return crit, curves


def plot(curves: Sequence[dict[str, Any]], path: str) -> str:
  """One figure, a panel per model: accuracy against generated tokens per problem (mean over
  seeds, 95% t-band) of RSA's Pass@1, K = 1 self-refinement's Pass@1 and plain-sampling
  majority vote at the same tokens. Returns ``path`` (a PNG)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from jaxlab.core import plotting  # pylint: disable=g-import-not-at-top
  by_point: dict[tuple[str, str, int], list[dict[str, Any]]] = collections.defaultdict(list)
  for r in curves:
    model, name, step = r["arm"].split("/")
    by_point[(model, name, int(step))].append(r)
  models = list(dict.fromkeys(k[0] for k in sorted(by_point, key=lambda k: (
      MODELS.index(k[0]) if k[0] in MODELS else len(MODELS), k))))
  cols = min(len(models), 3)
  rows = -(-len(models) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows), squeeze=False,
                           sharey=True)
  for ax in axes.flat[len(models):]:
    ax.set_visible(False)
  labels = {"rsa": "RSA K=4 (Pass@1)", "self_refine": "K=1 (Pass@1)",
            "sampling": "sampling, majority vote"}
  for ax, model in zip(axes.flat, models):
    for name, label in labels.items():
      key = "majority" if name == "sampling" else "accuracy"
      records = [{"step": step, "tokens": float(np.mean([r["tokens_cum"] for r in rs])),
                  "value": [r[key] for r in rs]}
                 for (m, n, step), rs in sorted(by_point.items()) if m == model and n == name]
      x, mean, half = plotting.series(records, "value", x_key="tokens")
      if x.size:
        ax.plot(x, mean, marker="o", ms=3, label=label)
        ax.fill_between(x, mean - half, mean + half, alpha=0.2)
    ax.set_title(model)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("generated tokens per problem")
  for row in axes:
    row[0].set_ylabel("accuracy")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main(argv: Sequence[str] | None = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m jaxlab.llm.rsa_study")
  sub = parser.add_subparsers(dest="command", required=True)
  t = sub.add_parser("teacher", help="plurality targets for aggregation SFT rows")
  t.add_argument("--rows", action="append", required=True, help="launch.rsa --rl_data output")
  t.add_argument("--out", required=True)
  s = sub.add_parser("table", help="per-seed CSVs and figures of a study directory")
  s.add_argument("--study", default="runs/rsa_study")
  s.add_argument("--export", required=True, help="directory for criteria.csv, curves.csv")
  s.add_argument("--plot", default="", help="PNG path of the figure ('' = none)")
  args = parser.parse_args(argv)
  try:
    if args.command == "teacher":
      out = []
      for path in args.rows:
        out += teacher_rows(tasks_lib.load_jsonl(path), where=path)
      tasks_lib.write_jsonl(out, args.out)
      agree = np.mean([r["answer"] == r["metadata"]["true_answer"] for r in out]) if out else 0
      print(f"wrote {len(out)} plurality-target rows to {args.out} (target = true answer in "
            f"{agree:.1%})", file=sys.stderr)
      return 0
    crit, curves = collect(args.study)
    if not crit:
      print(f"error: no {args.study}/s<seed>/<model>_rsa/results.json", file=sys.stderr)
      return 2
    os.makedirs(args.export, exist_ok=True)
    stats.write_seed_rows(os.path.join(args.export, "criteria.csv"), crit, COLUMNS)
    stats.write_seed_rows(os.path.join(args.export, "curves.csv"), curves, CURVE_KEYS)
    print(stats.seed_table(crit, COLUMNS))
    if args.plot:
      print(plot(curves, args.plot), file=sys.stderr)
    return 0
  except (tasks_lib.TaskDataError, OSError, KeyError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
