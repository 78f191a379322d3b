r"""Recursive self-aggregation (RSA) of a local model on a task, with its baselines.

    python -m launch.rsa --model=DIR --task=chain_sum [--config=configs/rsa/default.py] \
        [--workdir=runs/rsa_chain_sum] [--config.k=2 --config.steps=4 ...]
    python -m launch.rsa --model=REF_DIR --task=train.jsonl --rl_data=agg_rl.jsonl  # spec §3.6

``--task`` is a task of ``jaxlab/llm/tasks.py`` (its held-out file ``data/llm/<name>_eval.jsonl``)
or a JSONL task file. Without ``--config`` the defaults of ``jaxlab.llm.rsa.default_config()``
apply (``--config.key=value`` overrides need ``--config``). The run writes
``workdir/results.json`` (per step, per problem and overall metrics of RSA, the K = 1
self-refinement run and plain sampling at equal generated tokens), PNG curves under
``workdir/plots/`` and one state file per finished step; the same command resumes an
interrupted run. Bad input (a config rule, an unknown task, a prompt that does not fit under
``overflow="error"``, a bad model directory) is one ``error:`` line, exit status 2.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from absl import flags, logging
from ml_collections import config_flags

from launch.cli import flag_error



def _define_flags() -> flags.FlagValues:
  """A fresh set of flags per call: our own FlagValues never clash with another launcher's, and
  config_flags' per-key override flags (defined while parsing) do not leak between calls."""
  fv = flags.FlagValues()
  flags.DEFINE_string("model", None, "model directory (config.json, safetensors, tokenizer "
                      "files)", flag_values=fv)
  flags.DEFINE_string("task", None, "a task name of jaxlab/llm/tasks.py or a .jsonl file",
                      flag_values=fv)
  flags.DEFINE_string("workdir", None, "run directory (default runs/rsa_<task>)",
                      flag_values=fv)
  flags.DEFINE_string("rl_data", None, "instead of running RSA, write aggregation-aware RL "
                      "training rows (spec §3.6) to this .jsonl: each problem as a standard "
                      "prompt and as an aggregation prompt over config.k candidates of the "
                      "--model (the frozen reference)", flag_values=fv)
  config_flags.DEFINE_config_file(
      "config", None, "RSA config file (configs/rsa/<name>.py)", flag_values=fv,
      lock_config=False, accept_new_attributes=True)  # unknown keys reach our validator
  return fv


def _fail(message: str) -> int:
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  return 2


def _parse(fv: flags.FlagValues, argv: Sequence[str]) -> str | None:
  """Parses flags and loads the config file; returns an error message instead of raising."""
  # config_flags reads the ``--config.key`` overrides from sys.argv, also when the config is
  # first accessed: point it at ``argv`` for both (cli() is also called in-process by tests).
  saved, sys.argv = sys.argv, list(argv)
  try:
    fv(list(argv))
    if fv.config is not None:
      fv.config.keys()
  except flags.Error as err:
    return flag_error(err)
  except (OSError, ValueError, SyntaxError) as err:
    return f"--config: the file could not be loaded ({err})"
  finally:
    sys.argv = saved
  for name in ("model", "task"):
    if not fv[name].value:
      return f"--{name} is required"
  return None


def cli(argv: Sequence[str]) -> int:
  """The command line (``argv[0]`` is the program name); returns the exit status."""
  fv = _define_flags()
  if any(a in ("--help", "-h", "--helpfull", "-?") for a in argv[1:]):
    # Our own FlagValues has no absl --help flag: print the usage and the flags ourselves.
    print(f"{__doc__.strip()}\n\nflags:\n{fv.get_help()}")
    return 0
  err = _parse(fv, argv)
  if err:
    return _fail(err)
  logging.set_verbosity(logging.WARNING)
  from jaxlab.core.errors import JaxlabError  # pylint: disable=import-outside-toplevel
  from jaxlab.llm import rsa  # pylint: disable=import-outside-toplevel

  try:
    config = fv.config if fv.config is not None else rsa.default_config()
    rsa.validate(config)
    rows = rsa.load_problems(fv.task, config.num_problems)
    task_name = os.path.splitext(os.path.basename(fv.task))[0]
    workdir = fv.workdir or os.path.join("runs", f"rsa_{task_name}")
    gen = _generator(config, fv.model)
    if fv.rl_data:
      from jaxlab.llm import tasks as tasks_lib  # pylint: disable=import-outside-toplevel
      out = rsa.aggregation_rl_rows(config, rows, gen)
      tasks_lib.write_jsonl(out, fv.rl_data)
      print(f"jaxlab: wrote {len(out)} rows ({len(rows)} standard, {len(rows)} aggregation "
            f"with K={config.k}) to {fv.rl_data}; train with data.prompt_format='{{question}}'",
            file=sys.stderr)
      return 0
    print(f"jaxlab: RSA N={config.population} K={config.k} T={config.steps} "
          f"islands={config.islands} on {len(rows)} problems; workdir={workdir}",
          file=sys.stderr)
    say = lambda line: print(line, file=sys.stderr, flush=True)
    curves, path, pngs = rsa.run_all(config, rows, gen, workdir, log=say)
  except (JaxlabError, ValueError) as e:
    return _fail(str(e))
  last = curves["rsa"][-1]["overall"]
  print(f"jaxlab: done; final accuracy {last['accuracy']:.3f} majority {last['majority']:.3f} "
        f"pass@n {last['pass_at_n']:.3f}; results in {path}, {len(pngs)} plots in "
        f"{os.path.join(workdir, 'plots')}", file=sys.stderr)
  return 0


def _generator(config, model_dir: str):
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jaxlab import models  # pylint: disable=import-outside-toplevel
  from jaxlab.llm import rsa  # pylint: disable=import-outside-toplevel
  g = config.generation
  model, tok = models.from_pretrained(model_dir, dtype=jnp.dtype(g.dtype))
  return rsa.SamplerGenerator(model, tok, max_new_tokens=g.max_new_tokens,
                              max_prompt_tokens=g.max_prompt_tokens, temperature=g.temperature,
                              top_p=g.top_p, top_k=g.top_k, batch_size=g.batch_size,
                              chat=g.chat)


if __name__ == "__main__":
  sys.exit(cli(sys.argv))
