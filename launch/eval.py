"""Evaluate a finished (or interrupted) run: its newest checkpoint, with the evaluators of its kind.

    python -m launch.eval --workdir=runs/quickstart                  # PPO: jax env + dm_control
    python -m launch.eval --workdir=runs/sft_tiny                     # LLM: held-out accuracy
    python -m launch.eval --workdir=runs/x --evaluators=jax_env --episodes=20

The run's kind is its ``config.trainer`` (``config.json``); each kind lists its evaluators
(``jaxlab.core.loop.Trainer.evaluators``, defined in ``jaxlab.evals``): ``jax_env`` and
``dm_control`` for PPO, SAC and TD3 (dm_control only for Playground DM Control tasks),
``jax_env`` for PQN, ``task_accuracy`` for ``llm_sft`` / ``llm_rl``, ``held_out`` for
``ns_supervised``. Results are printed and written to ``workdir/eval.json``.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by launch.train.")
_EVALUATORS = flags.DEFINE_list("evaluators", [], "Evaluators to run (default: those of the "
                                "run's kind).")
_EPISODES = flags.DEFINE_integer("episodes", 10, "RL: evaluations / episodes per evaluator.")
_SEED_INDEX = flags.DEFINE_integer("seed_index", 0, "RL: which of the run's seeds to evaluate.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 0, "LLM: held-out rows (0: the run's).")
flags.mark_flag_as_required("workdir")


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def _brief(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from jaxlab import evals  # pylint: disable=import-outside-toplevel
  from jaxlab import trainers  # pylint: disable=import-outside-toplevel
  from jaxlab.core import files  # pylint: disable=import-outside-toplevel
  from jaxlab.core import loop  # pylint: disable=import-outside-toplevel
  from jaxlab.core import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.core.errors import JaxlabError  # pylint: disable=import-outside-toplevel

  workdir = _WORKDIR.value
  try:
    config = loop.read_config(workdir)
    kind = config.get("trainer")
    if kind not in trainers.TRAINERS:
      raise JaxlabError(f"{os.path.join(workdir, 'config.json')}: run kind "
                        f"(config.trainer) {kind!r} is not known; launch.eval evaluates runs "
                        f"of: {', '.join(sorted(trainers.TRAINERS))}")
    trainer = trainers.get(kind)
    names = _EVALUATORS.value or list(trainer.evaluators)
    fns = {name: evals.get(name) for name in names}
    if not 0 <= _SEED_INDEX.value < config.get("num_seeds", 1):
      raise JaxlabError(f"--seed_index={_SEED_INDEX.value} but the run has "
                        f"{config.get('num_seeds', 1)} seed(s)")
    mesh = mesh_lib.make_mesh(**config.mesh)
    run, state, step = loop.restore_run(trainer, config, workdir, mesh)
    options = evals.Options(episodes=_EPISODES.value, seed_index=_SEED_INDEX.value,
                            num_examples=_NUM_EXAMPLES.value, workdir=workdir)
    results = {"trainer": kind, "checkpoint_step": step, "evaluators": {}}
    for name, fn in fns.items():
      out = fn(run, state, options)
      results["evaluators"][name] = out
      shown = ", ".join(f"{k}={_brief(v)}" for k, v in out.items() if not isinstance(v, list))
      print(f"{name} (step {step}): {shown}")
  except JaxlabError as err:
    fail(str(err))
  path = os.path.join(workdir, "eval.json")
  files.write_json(path, results, indent=2)
  print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
