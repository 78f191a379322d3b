"""``task_accuracy``: held-out task accuracy of an LLM run's model (greedy, verifier-scored).

The same scorer the trainers log as ``eval/accuracy`` (:class:`jaxlab.llm.evaluation.
TaskAccuracy`), on the run's held-out rows (``config.data.eval_files``); every completion is
written to ``workdir/eval_samples_launch.jsonl`` with whether it is right, for audit.
"""

from __future__ import annotations

import os
from typing import Any

from jaxlab.core import files
from jaxlab.llm import data as data_lib
from jaxlab.llm.evaluation import TaskAccuracy


def task_accuracy(run: Any, state: Any, options: Any) -> dict[str, Any]:
  c = run.config
  n = options.num_examples or c.eval.num_examples
  located = data_lib.load_rows(c.data.eval_files, n)
  rows = [r for _, _, r in located]
  # Runs whose rows carry images (a vision-language SFT run) read them beside their files.
  images = run.row_images(located) if hasattr(run, "row_images") else None
  scorer = TaskAccuracy.from_config(c, run.tokenizer, located, run.mesh, images=images)
  metrics, texts = scorer(run.model(state))
  if options.workdir:
    path = os.path.join(options.workdir, "eval_samples_launch.jsonl")
    files.write_jsonl(path, scorer.samples(texts))
    metrics["samples"] = path
  metrics["num_examples"] = len(rows)
  return metrics
