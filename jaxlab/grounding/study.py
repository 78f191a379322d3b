"""The GroundCUA study's numbers per run (docs/reproductions/groundcua.md).

A run's held-out completions (``eval_samples_launch.jsonl`` written by ``python -m launch.eval
--workdir=RUN``, else the trainer's final ``eval_samples.jsonl``) are joined, in order, with
the held-out ``tasks.jsonl`` they were generated from (the trainers and ``launch.eval`` score
the first ``eval.num_examples`` rows of it), and scored two ways:

* accuracy: the ``groundcua`` verifier (:func:`jaxlab.llm.tasks.point_in_box`: closed box, the
  benchmarks' parser with its two-integer fallback), which the trainers log as
  ``eval/accuracy``;
* reward: the paper's reward (:func:`jaxlab.grounding.reward.score_completion`, no fallback).

Both overall, for elements whose short side in the resized frame is at least
:data:`LARGE_SIDE` px (the design's size criterion) and below it, and per instruction kind.
``python -m launch.analyze --kind=groundcua_study --workdir=runs/groundcua_sft_s* --tasks=...``
writes one row per run (:func:`study_rows`); ``--paired`` over its CSV gives RL minus SFT.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from jaxlab.core import files
from jaxlab.core.errors import DataError

LARGE_SIDE = 24  # px, short side in the resized frame
KINDS = ("direct", "functional", "spatial")
SAMPLE_FILES = ("eval_samples_launch.jsonl", "eval_samples.jsonl")  # first found is read
COLUMNS = ["n", "accuracy", "reward", "n_large", "accuracy/large", "reward/large",
           "accuracy/small", "reward/small",
           *[f"{m}/{k}" for k in KINDS for m in ("accuracy", "reward")]]


def samples_path(workdir: str) -> str:
  """The completions file of a run (:data:`SAMPLE_FILES`, the first that exists).

  Raises:
    DataError: the run has neither.
  """
  for name in SAMPLE_FILES:
    path = os.path.join(workdir, name)
    if os.path.isfile(path):
      return path
  raise DataError(f"{workdir}: no {' or '.join(SAMPLE_FILES)}; run `python -m launch.eval "
                  f"--workdir={workdir}` first")


def scored(samples: Sequence[dict[str, Any]], tasks: Sequence[dict[str, Any]]
           ) -> list[dict[str, Any]]:
  """One record per sample: ``kind``, ``large``, ``hit`` and ``reward``.

  Raises:
    DataError: more samples than task rows, or a sample whose question or answer differs from
      the task row at its position (naming it).
  """
  from jaxlab.grounding import reward  # pylint: disable=import-outside-toplevel
  from jaxlab.llm import tasks as tasks_lib  # pylint: disable=import-outside-toplevel
  if len(samples) > len(tasks):
    raise DataError(f"{len(samples)} samples but only {len(tasks)} task rows; expected the "
                    "samples of the first rows of this tasks file")
  out = []
  for i, (sample, row) in enumerate(zip(samples, tasks)):
    for field in ("question", "answer"):
      if sample.get(field) != row.get(field):
        raise DataError(f"sample {i}: field {field!r} is {sample.get(field)!r} but task row "
                        f"{i} has {row.get(field)!r}; expected the same rows in the same order")
    meta = row.get("metadata") or {}
    side = min(float(v) for v in meta["resized_element_size"])
    completion = sample.get("completion", "")
    out.append(dict(
        kind=meta.get("kind", ""), large=side >= LARGE_SIDE,
        hit=bool(tasks_lib.verify("groundcua", completion, row["answer"])),
        reward=reward.score_completion(completion, row["gt_bbox"], row["image_size"]).reward))
  return out


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
  """The :data:`COLUMNS` of scored records (NaN for an empty group)."""
  def mean(key, keep=lambda r: True):
    values = [float(r[key]) for r in records if keep(r)]
    return float(np.mean(values)) if values else float("nan")
  out = {"n": float(len(records)), "accuracy": mean("hit"), "reward": mean("reward"),
         "n_large": float(sum(r["large"] for r in records))}
  for name, keep in (("large", lambda r: r["large"]), ("small", lambda r: not r["large"])):
    out[f"accuracy/{name}"] = mean("hit", keep)
    out[f"reward/{name}"] = mean("reward", keep)
  for kind in KINDS:
    out[f"accuracy/{kind}"] = mean("hit", lambda r, k=kind: r["kind"] == k)
    out[f"reward/{kind}"] = mean("reward", lambda r, k=kind: r["kind"] == k)
  return {k: out[k] for k in COLUMNS}


def _read(path: str) -> list[dict[str, Any]]:
  try:
    return files.read_jsonl(path)
  except (OSError, ValueError) as err:
    raise DataError(f"{path}: {err}") from None


def run_values(workdir: str, tasks: Sequence[dict[str, Any]], tasks_path: str
               ) -> dict[str, float]:
  """:func:`summarize` of one run's held-out completions against the rows ``tasks`` (read
  from ``tasks_path``, which errors name).

  Raises:
    DataError: a missing or unreadable samples file, or samples that do not match the tasks.
  """
  path = samples_path(workdir)
  samples = _read(path)
  try:
    return summarize(scored(samples, tasks))
  except (KeyError, TypeError, ValueError) as err:
    raise DataError(f"{path} against {tasks_path}: {err!r}") from None


def study_rows(arms: dict[str, list[str]], tasks_path: str) -> list[dict[str, Any]]:
  """Per-run rows (``arm``, ``run``, ``seed`` from the run's ``config.json``, then
  :data:`COLUMNS`) of ``{arm: [workdirs]}``; ``tasks_path`` is read once for all runs.

  Raises:
    DataError: as :func:`run_values`, or an unreadable ``tasks_path``.
  """
  tasks = _read(tasks_path)
  rows = []
  for arm, workdirs in arms.items():
    for w in workdirs:
      seed = (files.read_run_config(w).get("seed", "")
              if os.path.isfile(os.path.join(w, "config.json")) else "")
      rows.append(dict(arm=arm, run=os.path.basename(os.path.normpath(w)), seed=seed,
                       **run_values(w, tasks, tasks_path)))
  return rows
