"""How an RL algorithm in the chunked shape becomes a trainer of the run loop.

An algorithm class (``PPO``, ``PQN``, ``SAC``, ``TD3``) is built as ``Algorithm(config, env)``
and implements :class:`jaxlab.core.chunked.ChunkedAlgorithm` for one seed. :func:`declare`
gives it the two entry points every RL module exports:

* ``TRAINER``: the :class:`jaxlab.core.loop.Trainer` that ``launch.train`` runs (the env comes
  from ``config.env``; seeds are vmapped; env batches are split over the data devices);
* ``make_train(config, env)``: PureJaxRL's entry, ``make_train(config, env)(key) -> (state,
  metrics)``, validating the config first.
"""

from __future__ import annotations

from typing import Callable

import ml_collections

from jaxlab.core import loop
from jaxlab.core import mesh as mesh_lib
from jaxlab.core.chunked import ChunkedRun
from jaxlab.core.config import snapshot
from jaxlab.envs.base import Env
from jaxlab.envs.from_config import make_from_config


def declare(name: str, algorithm: type, default_config: Callable[[], ml_collections.ConfigDict],
            check_config: Callable[[ml_collections.ConfigDict], None],
            evaluators: tuple[str, ...] = ("jax_env", "dm_control"),
            ) -> tuple[loop.Trainer, Callable[[ml_collections.ConfigDict, Env], object]]:
  """``(TRAINER, make_train)`` of an env-based algorithm class."""

  def build(config: ml_collections.ConfigDict, workdir: str, mesh) -> ChunkedRun:
    del workdir
    return ChunkedRun(algorithm(snapshot(config), make_from_config(config.env)), config, mesh)

  trainer = loop.Trainer(name=name, default_config=default_config, check_config=check_config,
                         build=build, check_mesh=mesh_lib.check_env_batches, vmaps_seeds=True,
                         evaluators=evaluators)

  def make_train(config: ml_collections.ConfigDict, env: Env):
    """``make_train(config, env)(key) -> (state, metrics)``; vmap it over keys for many seeds.
    The config is validated here (the launcher validates it before building instead), and the
    trainer keeps a copy: changing ``config`` afterwards does not change what it traces."""
    loop.validate(trainer, config)
    return algorithm(snapshot(config), env)

  make_train.__doc__ = f"{name}: " + make_train.__doc__
  return trainer, make_train
