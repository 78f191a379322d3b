"""Evaluators by name: ``launch.eval`` runs a finished run's evaluators, or any you name.

An evaluator is ``fn(run, state, options) -> metrics``: ``run`` is the trainer's run rebuilt
from the workdir's ``config.json`` (:func:`jaxlab.core.loop.restore_run`), ``state`` its newest
checkpoint, ``options`` an :class:`Options`. A trainer lists the evaluators that fit its runs
(``Trainer.evaluators``); benchmark harnesses register here under their own names.

    from jaxlab import evals
    metrics = evals.get("jax_env")(run, state, evals.Options(episodes=10))

A benchmark harness scores a model directory on a released dataset rather than a run's
checkpoint: ``fn(BenchmarkArgs) -> results`` (``launch.eval --benchmark=NAME``), registered in
:data:`BENCHMARKS`.

    results = evals.get_benchmark("kaleidoscope")(evals.BenchmarkArgs(
        model="runs/x/hf_model", data="kaleidoscope/data", workdir="runs/x/kaleidoscope"))
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from jaxlab.core.errors import ConfigError

# name -> "module:function", imported when asked for.
EVALUATORS = {
    "jax_env": "jaxlab.evals.rl:jax_env",
    "dm_control": "jaxlab.evals.rl:dm_control",
    "held_out": "jaxlab.evals.rl:held_out",
    "task_accuracy": "jaxlab.evals.tasks:task_accuracy",
}

# name -> "module:function" of benchmark harnesses, imported when asked for.
BENCHMARKS = {
    "kaleidoscope": "jaxlab.evals.kaleidoscope:evaluate",
    "screenspot_pro": "jaxlab.evals.grounding:screenspot_pro",
    "screenspot_v2": "jaxlab.evals.grounding:screenspot_v2",
    "osworld_g": "jaxlab.evals.grounding:osworld_g",
    "ui_vision": "jaxlab.evals.grounding:ui_vision",
    "mmbench_gui": "jaxlab.evals.grounding:mmbench_gui",
}

Evaluator = Callable[[Any, Any, "Options"], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Options:
  """What ``launch.eval`` lets a user choose.

  Attributes:
    episodes: RL: evaluations of the jax env (each over ``config.eval.num_envs`` envs), and
      episodes on dm_control.
    seed_index: RL runs with several seeds: which seed's policy.
    num_examples: LLM: held-out rows to score (0: the run's ``config.eval.num_examples``).
    workdir: the run directory (evaluators that write per-item files put them there).
  """
  episodes: int = 10
  seed_index: int = 0
  num_examples: int = 0
  workdir: str = ""


@dataclasses.dataclass(frozen=True)
class BenchmarkArgs:
  """What ``launch.eval --benchmark=NAME`` passes to a benchmark harness.

  Attributes:
    model: a model directory (config.json, safetensors, tokenizer).
    data: the benchmark's release (a parquet file or folder, or a save_to_disk folder).
    workdir: where outputs, per-item samples and results go (an evaluation resumes here).
    images: the benchmark's images: an extracted folder or the release zip ("": none).
    regime: the prompting regime (benchmark-specific names).
    languages: restrict to these language codes (empty: all).
    text_only: score only the items without images (for text-only models).
    multimodal_only: score only the items with images (Kaleidoscope's headline: total
      accuracy macro over languages on the multimodal items).
    limit: Kaleidoscope: at most this many items per language; grounding benchmarks: the
      first this many items (0: all).
    batch_size: prompts per sampler call (outputs do not depend on it).
    max_new_tokens, temperature, top_p, seed: decoding (temperature 0: greedy).
    texts: a JSON file overriding the harness's prompt texts ("": ours).
    dtype: compute dtype of the model.
  """
  model: str
  data: str
  workdir: str
  images: str = ""
  regime: str = "direct"
  languages: tuple[str, ...] = ()
  text_only: bool = False
  multimodal_only: bool = False
  limit: int = 0
  batch_size: int = 16
  max_new_tokens: int = 1024
  temperature: float = 0.0
  top_p: float = 1.0
  seed: int = 0
  texts: str = ""
  dtype: str = "float32"


def names() -> list[str]:
  return sorted(EVALUATORS)


def _resolve(table: dict[str, str], name: str, what: str):
  if name not in table:
    raise ConfigError(f"unknown {what} {name!r}; known {what}s: {', '.join(sorted(table))}")
  module, _, attr = table[name].partition(":")
  return getattr(importlib.import_module(module), attr)


def get(name: str) -> Evaluator:
  """The evaluator called ``name``; an unknown name is one error line listing the known ones."""
  return _resolve(EVALUATORS, name, "evaluator")


def get_benchmark(name: str) -> Callable[[BenchmarkArgs], dict[str, Any]]:
  """The benchmark harness called ``name`` (an unknown name lists the known ones)."""
  return _resolve(BENCHMARKS, name, "benchmark")
