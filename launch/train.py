"""Train any jaxlab experiment from its config file; the same command resumes.

    python -m launch.train --config=configs/ppo/cartpole_balance.py --workdir=runs/quickstart
    python -m launch.train --config=configs/ppo/cartpole_balance.py --workdir=runs/q2 \
        --config.num_seeds=3 --config.learning_rate=3e-4

``config.trainer`` names the trainer (see ``jaxlab/trainers.py``). The config is checked before
anything is compiled or written; a bad key, type or combination stops with one line naming it
and exit status 2. On a multi-host slice (TPU pod, GPU cluster) pass ``--multihost`` (see
``launch/tpu_pod.sh``): ``jax.distributed.initialize()`` runs first (the coordinator comes from
``--coordinator_address`` / ``--num_processes`` / ``--process_id``, from ``launch.local_cluster``'s
environment, or from the cluster itself: Cloud TPU, SLURM), and every process runs the same
command; process 0 writes the run's files, all of them write the checkpoints together.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from launch import cli
from launch.cli import fail

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/<paper>/<name>.py[:arg]).",
    lock_config=False, accept_new_attributes=True)  # unknown keys reach our validator
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: config, metrics, checkpoints.")
_MULTIHOST = flags.DEFINE_bool("multihost", False,
                               "Join a multi-process job (jax.distributed) before anything else.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --multihost: HOST:PORT of process 0 (default: from "
    "launch.local_cluster's environment, or detected on TPU / SLURM).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --multihost: processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --multihost: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def load_config():
  """The ``--config`` file's ConfigDict; a missing or failing file is one ``error:`` line."""
  name = config_flags.get_config_filename(flags.FLAGS["config"])
  path = name.split(":", 1)[0]
  if not os.path.isfile(path):
    fail(f"--config={name}: no such file {path!r} (expected a file like "
         f"configs/<paper>/<experiment>.py, optionally with ':<arg>')")
  try:
    config = _CONFIG.value
    config.keys()  # the flag loads lazily: a failed load raises here
  except (OSError, ValueError, SyntaxError) as err:
    fail(f"--config={name}: the file could not be loaded ({' '.join(str(err).split())})")
  return config


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # keep the console for progress and errors
  import jax  # pylint: disable=import-outside-toplevel

  from jaxlab import trainers  # pylint: disable=import-outside-toplevel
  from jaxlab.core import config as config_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.core import loop  # pylint: disable=import-outside-toplevel
  from jaxlab.core import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.core.errors import JaxlabError  # pylint: disable=import-outside-toplevel

  if _MULTIHOST.value:
    try:
      mesh_lib.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                      _PROCESS_ID.value)
    except JaxlabError as err:
      fail(str(err))
  config = load_config()
  try:
    # Every process must train the same run: compared before anything is compiled or written.
    mesh_lib.check_same_across_processes(
        config_lib.to_json(config) + "\n" + os.path.abspath(_WORKDIR.value),
        "the config (or --workdir)")
    if "trainer" not in config:
      raise config_lib.ConfigError("the config has no 'trainer' key; start it from a trainer's "
                                   "default_config(), e.g. jaxlab.rl.ppo.default_config()")
    trainer = trainers.get(config.trainer)
    loop.validate(trainer, config)
    mesh = mesh_lib.make_mesh(**config.mesh)
    trainer.check_mesh(config, mesh)
    procs = (f" processes={jax.process_count()}x{jax.local_device_count()}"
             if jax.process_count() > 1 else "")
    if mesh_lib.is_primary():
      print(f"jaxlab: trainer={config.trainer} devices={jax.device_count()}{procs} "
            f"({jax.devices()[0].platform}) mesh={dict(mesh.shape)} workdir={_WORKDIR.value}",
            file=sys.stderr)
    loop.run(trainer, config, _WORKDIR.value, mesh, progress=mesh_lib.is_primary())
  except JaxlabError as err:
    fail(str(err))
  if not mesh_lib.is_primary():
    return
  print(f"jaxlab: done; metrics in {_WORKDIR.value}/metrics.jsonl, plot with: "
        f"python -m launch.plot --workdir={_WORKDIR.value}", file=sys.stderr)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
