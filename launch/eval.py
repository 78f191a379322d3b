"""Evaluate a finished (or interrupted) run: its newest checkpoint, with the evaluators of its kind.

    python -m launch.eval --workdir=runs/quickstart                  # PPO: jax env + dm_control
    python -m launch.eval --workdir=runs/sft_tiny                     # LLM: held-out accuracy
    python -m launch.eval --workdir=runs/x --evaluators=jax_env --episodes=20
    python -m launch.eval --benchmark=kaleidoscope --model=DIR --data=DIR --workdir=OUT \
        [--images=DIR|data.zip] [--regime=direct|cot] [--languages=es,ru] [--text_only|--multimodal_only]
    python -m launch.eval --benchmark=screenspot_pro --model=DIR --data=DIR [--workdir=OUT]
        (also screenspot_v2, osworld_g, ui_vision, mmbench_gui: each reads its release layout)

The run's kind is its ``config.trainer`` (``config.json``); each kind lists its evaluators
(``jaxlab.core.loop.Trainer.evaluators``, defined in ``jaxlab.evals``): ``jax_env`` and
``dm_control`` for PPO, SAC and TD3 (dm_control only for Playground DM Control tasks),
``jax_env`` for PQN, ``task_accuracy`` for ``llm_sft`` / ``llm_rl``, ``held_out`` for
``ns_supervised``. Results are printed and written to ``workdir/eval.json``.

With ``--benchmark=NAME`` it runs a benchmark harness (``jaxlab.evals.BENCHMARKS``) on a model
directory instead: ``--workdir`` is then the evaluation's own folder (outputs, per-item
samples, ``results.json``), and running the same command again resumes it. Without
``--workdir`` that folder is ``runs/eval/<benchmark>/<model directory's name>``.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging

from launch import cli
from launch.cli import fail

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by launch.train; with "
                                "--benchmark, the evaluation's folder (default "
                                "runs/eval/<benchmark>/<model dir name>).")
_EVALUATORS = flags.DEFINE_list("evaluators", [], "Evaluators to run (default: those of the "
                                "run's kind).")
_EPISODES = flags.DEFINE_integer("episodes", 10, "RL: evaluations / episodes per evaluator.")
_SEED_INDEX = flags.DEFINE_integer("seed_index", 0, "RL: which of the run's seeds to evaluate.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 0, "LLM: held-out rows (0: the run's).")
# Benchmark harnesses (--benchmark).
_BENCHMARK = flags.DEFINE_string("benchmark", None, "Score --model on a benchmark (e.g. "
                                 "kaleidoscope); --workdir is the evaluation's folder.")
_MODEL = flags.DEFINE_string("model", None, "Benchmark: model directory.")
_DATA = flags.DEFINE_string("data", None, "Benchmark: the release (parquet file/folder or a "
                            "save_to_disk folder).")
_IMAGES = flags.DEFINE_string("images", "", "Benchmark: image folder or the release zip.")
_REGIME = flags.DEFINE_string("regime", "direct", "Benchmark: prompting regime.")
_LANGUAGES = flags.DEFINE_list("languages", [], "Benchmark: language codes (default: all).")
_TEXT_ONLY = flags.DEFINE_bool("text_only", False, "Benchmark: only items without images.")
_MULTIMODAL_ONLY = flags.DEFINE_bool(
    "multimodal_only", False, "Benchmark: only items with images (Kaleidoscope's headline is "
    "the macro over languages of these).")
_LIMIT = flags.DEFINE_integer("limit", 0, "Benchmark: items per language (Kaleidoscope) or in all "
                                 "(grounding benchmarks); 0: all.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Benchmark: prompts per sampler call.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 1024, "Benchmark: generation budget.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "Benchmark: 0 = greedy.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Benchmark: nucleus mass.")
_SEED = flags.DEFINE_integer("seed", 0, "Benchmark: sampling seed.")
_TEXTS = flags.DEFINE_string("texts", "", "Benchmark: JSON file overriding prompt texts.")


def _brief(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def _benchmark() -> None:
  from jaxlab import evals  # pylint: disable=import-outside-toplevel
  from jaxlab.core.errors import JaxlabError  # pylint: disable=import-outside-toplevel
  try:
    for flag in (_MODEL, _DATA):
      if not flag.value:
        raise JaxlabError(f"--benchmark needs --{flag.name}")
    workdir = _WORKDIR.value or default_benchmark_workdir(_BENCHMARK.value, _MODEL.value)
    args = evals.BenchmarkArgs(
        model=_MODEL.value, data=_DATA.value, workdir=workdir, images=_IMAGES.value,
        regime=_REGIME.value, languages=tuple(_LANGUAGES.value), text_only=_TEXT_ONLY.value,
        multimodal_only=_MULTIMODAL_ONLY.value, limit=_LIMIT.value, batch_size=_BATCH.value, max_new_tokens=_MAX_NEW.value,
        temperature=_TEMPERATURE.value, top_p=_TOP_P.value, seed=_SEED.value,
        texts=_TEXTS.value)
    results = evals.get_benchmark(_BENCHMARK.value)(args)
  except JaxlabError as err:
    fail(str(err))
  from jaxlab.evals import benchmark  # pylint: disable=import-outside-toplevel
  for line in benchmark.summary_lines(results):
    print(line)
  print(f"wrote {os.path.join(workdir, 'results.json')}", file=sys.stderr)


def default_benchmark_workdir(benchmark: str, model: str) -> str:
  """``runs/eval/<benchmark>/<the model directory's last name>``: the same command resumes."""
  name = os.path.basename(os.path.normpath(model)) or "model"
  return os.path.join("runs", "eval", benchmark, name)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if _BENCHMARK.value:
    _benchmark()
    return
  from jaxlab import evals  # pylint: disable=import-outside-toplevel
  from jaxlab import trainers  # pylint: disable=import-outside-toplevel
  from jaxlab.core import files  # pylint: disable=import-outside-toplevel
  from jaxlab.core import loop  # pylint: disable=import-outside-toplevel
  from jaxlab.core import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.core.errors import JaxlabError  # pylint: disable=import-outside-toplevel

  workdir = _WORKDIR.value
  if not workdir:
    fail("--workdir is required: the run directory written by launch.train (or --benchmark=NAME "
         "--model=DIR --data=DIR to score a model directory on a benchmark)")
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
  cli.run(main)
