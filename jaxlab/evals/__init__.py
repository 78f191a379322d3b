"""Evaluators by name: ``launch.eval`` runs a finished run's evaluators, or any you name.

An evaluator is ``fn(run, state, options) -> metrics``: ``run`` is the trainer's run rebuilt
from the workdir's ``config.json`` (:func:`jaxlab.core.loop.restore_run`), ``state`` its newest
checkpoint, ``options`` an :class:`Options`. A trainer lists the evaluators that fit its runs
(``Trainer.evaluators``); benchmark harnesses register here under their own names.

    from jaxlab import evals
    metrics = evals.get("jax_env")(run, state, evals.Options(episodes=10))
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


def names() -> list[str]:
  return sorted(EVALUATORS)


def get(name: str) -> Evaluator:
  """The evaluator called ``name``; an unknown name is one error line listing the known ones."""
  if name not in EVALUATORS:
    raise ConfigError(f"unknown evaluator {name!r}; known evaluators: {', '.join(names())}")
  module, _, attr = EVALUATORS[name].partition(":")
  return getattr(importlib.import_module(module), attr)
