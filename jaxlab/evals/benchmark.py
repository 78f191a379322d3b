"""Running a multiple-choice benchmark end to end: prompts -> outputs -> extracted answers ->
metrics, resumable, with every item auditable.

A benchmark module (e.g. :mod:`jaxlab.evals.kaleidoscope`) turns its dataset into
:class:`McqItem` s (a key, the model-ready prompt, the right option, the groups it is scored
in) and calls :func:`run_mcq`. Everything after that is shared:

  * ``workdir/run.json`` pins the settings that decide the outputs (model, data, regime,
    decoding, ...). Re-running in the same workdir with different settings is refused with
    the first differing key named, so a results file never mixes two settings; the batch
    size may change, since outputs do not depend on it.
  * ``workdir/outputs.jsonl`` grows batch by batch (:mod:`jaxlab.evals.generation`); a killed
    evaluation continues where it stopped and never counts an item twice.
  * every output goes through the benchmark's ordered extraction rules
    (:func:`jaxlab.evals.mcq.extract`); ``samples.jsonl`` records, per item, the raw output,
    the rule that fired (or none: a format error), the extracted and the right option.
  * ``results.json`` and the per-group PNG come from :func:`jaxlab.evals.mcq.write_results`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable, Mapping, Sequence

from jaxlab.core import files
from jaxlab.core.errors import ConfigError, DataError
from jaxlab.evals import generation, mcq

RUN_FILE = "run.json"


@dataclasses.dataclass(frozen=True)
class McqItem:
  """One question, ready for a model.

  Attributes:
    key: unique, stable id (the resume key).
    prompt: the model-ready prompt text (chat template already applied).
    answer: index of the right option.
    num_options: how many options (valid letters are ``mcq.LETTERS[:num_options]``).
    language: ISO-639-1 code (selects look-alike letters and answer phrases in extraction).
    groups: group name -> value, the breakdowns this item is scored in.
    record: extra fields copied into the item's line of ``samples.jsonl``.
  """
  key: str
  prompt: str
  answer: int
  num_options: int
  language: str
  groups: Mapping[str, str]
  record: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def read_texts_file(path: str, known: Sequence[str]) -> dict[str, Any]:
  """The JSON object of a user's prompt-texts file (``--texts``), every key one of ``known``.

  Raises:
    ConfigError: an unreadable file, not a JSON object, or an unknown key (naming it and the
      known ones). Checking the values is the harness's.
  """
  try:
    with open(path, encoding="utf-8") as f:
      given = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path}: cannot read prompt texts: {e}") from None
  if not isinstance(given, dict):
    raise ConfigError(f"{path}: expected a JSON object, got {type(given).__name__}")
  for key in given:
    if key not in known:
      raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(known)}")
  return given


def pin_settings(workdir: str, settings: Mapping[str, Any],
                 free: Sequence[str] = ("batch_size",)) -> None:
  """Writes ``workdir/run.json`` on the first call; later calls must match it.

  Raises:
    ConfigError: a setting (other than those in ``free``) differs from the pinned one.
  """
  path = os.path.join(workdir, RUN_FILE)
  settings = json.loads(json.dumps(dict(settings)))  # tuples -> lists, as read back
  if os.path.exists(path):
    with open(path) as f:
      pinned = json.load(f)
    for k in sorted(set(pinned) | set(settings)):
      if k in free:
        continue
      if pinned.get(k) != settings.get(k):
        raise ConfigError(
            f"{path}: this evaluation was started with {k}={pinned.get(k)!r}, now "
            f"{k}={settings.get(k)!r}; use the same settings to resume or another --workdir")
  files.write_json(path, settings, indent=2)


def run_mcq(task: str, model: Any, tokenizer: Any, items: Sequence[McqItem], workdir: str, *,
            rules: Sequence[Any], settings: Mapping[str, Any], breakdown_keys: Sequence[str],
            decoding: generation.Decoding = generation.Decoding(), batch_size: int = 16,
            mesh: Any = None, progress: Callable[[int, int], None] | None = None,
            num_bootstrap: int = 1000, images: Sequence[Sequence[Any]] | None = None,
            image_config: Any = None) -> dict[str, Any]:
  """Generates (or resumes), extracts, scores and writes the results of ``items``.

  ``images`` (per item, its PIL images in placeholder order) and ``image_config`` are for a
  vision-language model; see :func:`jaxlab.evals.generation.generate_outputs`.

  Returns:
    The results dict written to ``workdir/results.json``.
  """
  pin_settings(workdir, settings)
  outputs = generation.generate_outputs(
      model, tokenizer, [(it.key, it.prompt) for it in items],
      os.path.join(workdir, generation.OUTPUTS_FILE), decoding=decoding,
      batch_size=batch_size, mesh=mesh, progress=progress, images=images,
      image_config=image_config)
  scored, per_item = [], []
  for it in items:
    out = outputs[it.key]
    e = mcq.extract(out["output"], rules, mcq.Context(it.num_options, it.language))
    scored.append(mcq.Scored(key=it.key, answer=it.answer, choice=e.choice, groups=it.groups))
    per_item.append({"key": it.key, **it.record, **dict(it.groups), "output": out["output"],
                     "rule": e.rule, "letter": e.letter, "choice": e.choice,
                     "answer": it.answer, "correct": e.choice == it.answer,
                     "new_tokens": out["new_tokens"]})
  return mcq.write_results(workdir, task=task, items=scored, breakdown_keys=breakdown_keys,
                           config=dict(settings), per_item=per_item,
                           num_bootstrap=num_bootstrap)


def _with_ci(value: float | None, ci: Any, missing: str = "—") -> str:
  """``0.372 [0.325, 0.419]``: a metric with its interval (when there is one)."""
  if value is None:
    return missing
  return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def summary_lines(results: Mapping[str, Any]) -> list[str]:
  """Console lines of a results dict: the headline aggregates, then one line per language
  (or whatever the first breakdown is) with its item count and metrics."""
  lines = []
  for task, head in results["results"].items():
    aggregates = sorted({k.split(",")[1] for k in head if "," in k})
    for agg in aggregates:
      shown = ", ".join(f"{m}={_with_ci(head[f'{m},{agg}'], head.get(f'{m}_ci,{agg}'), 'n/a')}"
                        for m in mcq.METRICS)
      lines.append(f"{task} {agg}: {shown}")
  if results.get("breakdowns"):
    by, table = next(iter(results["breakdowns"].items()))
    for group, m in table.items():
      total, valid, errors = (_with_ci(m[k], None, "n/a") for k in mcq.METRICS)
      lines.append(f"  {by}={group} n={m['n']}: total={total} valid={valid} "
                   f"format_errors={errors}")
  return lines


def results_table(results: Mapping[str, Any], by: str = "language") -> str:
  """The markdown table of a results dict: one row per ``by`` group, then the aggregates, each
  metric with its 95% bootstrap interval. Reproduction pages show this table under a
  ``<!-- data: .../results.json -->`` marker, and ``launch.analyze --data=results.json``
  prints it, so a page's numbers can be checked against the committed file."""
  lines = [f"| {by} | n | total accuracy | valid accuracy | format-error rate |",
           "|---|---|---|---|---|"]
  for group, m in results["breakdowns"][by].items():
    lines.append(f"| {group} | {m['n']} | " + " | ".join(
        _with_ci(m[k], m.get(f"{k}_ci")) for k in mcq.METRICS) + " |")
  for task, head in results["results"].items():
    n = results.get("n-samples", {}).get(task, {}).get("effective", "")
    for agg in sorted({k.split(",")[1] for k in head if "," in k}):
      lines.append(f"| **{agg}** | {n} | " + " | ".join(
          _with_ci(head[f"{k},{agg}"], head.get(f"{k}_ci,{agg}")) for k in mcq.METRICS) + " |")
  return "\n".join(lines)


def seed_rows(workdirs: Sequence[str]) -> tuple[list[str], list[dict[str, Any]]]:
  """Per-seed rows of evaluations, for ``jaxlab.core.stats`` (``launch.analyze
  --kind=eval_runs``): one row per evaluation workdir ``<run>/<name>`` holding a
  ``results.json``; ``arm`` is ``<name>`` (e.g. the regime, ``direct``), ``run`` is ``<run>``
  (the training run whose model it scored), ``seed`` that run's ``config.json`` seed, else its
  ``_s<N>`` suffix, else empty; one column per headline aggregate ``<metric>/<aggregate>``
  (e.g. ``total_accuracy/macro_language``). Intervals over seeds then come from these rows,
  where ``results.json``'s own intervals are over items.

  Raises:
    DataError: a workdir without a readable ``results.json``, or two that report different
      aggregates (one line naming the file).
  """
  columns: list[str] = []
  rows = []
  for w in workdirs:
    path = os.path.join(w, "results.json")
    try:
      with open(path) as f:
        results = json.load(f)
      heads = results["results"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
      raise DataError(f"{path}: not a benchmark results file ({err})") from None
    values = {k.replace(",", "/"): v for head in heads.values() for k, v in head.items()
              if "," in k and "_ci," not in k}
    if not columns:
      columns = list(values)
    elif sorted(values) != sorted(columns):
      raise DataError(f"{path}: reports {', '.join(sorted(values))}; the first evaluation "
                      f"({workdirs[0]}) reports {', '.join(sorted(columns))}")
    run_dir = os.path.dirname(os.path.normpath(w))
    run = os.path.basename(run_dir)
    if os.path.isfile(os.path.join(run_dir, "config.json")):
      seed = files.read_run_config(run_dir).get("seed", "")
    else:
      match = re.search(r"_s(\d+)$", run)
      seed = int(match.group(1)) if match else ""
    rows.append(dict(arm=os.path.basename(os.path.normpath(w)), run=run, seed=seed,
                     **{k: float("nan") if values[k] is None else float(values[k])
                        for k in columns}))
  return columns, rows
