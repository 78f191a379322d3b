"""Builds an env from the ``config.env`` group that every RL trainer's config has."""

from __future__ import annotations

import ml_collections

from jaxlab.core.errors import ConfigError
from jaxlab.envs import make
from jaxlab.envs.base import Env


def make_from_config(env_config: ml_collections.ConfigDict) -> Env:
  """``config.env`` -> Env, with bad names reported against the config key.

  Keys: ``name`` ("<backend>/<env>"), ``episode_length``, ``action_repeat``, and the backend
  options ``impl`` (Playground physics) and ``backend`` (Brax pipeline; "" = default), each
  passed only to the backend that understands it.
  """
  backend, _, _ = env_config.name.partition("/")
  kwargs = {}
  if backend == "playground" and env_config.get("impl"):
    kwargs["impl"] = env_config.impl
  if backend == "brax" and env_config.get("backend"):
    kwargs["backend"] = env_config.backend
  try:
    return make(env_config.name, episode_length=env_config.episode_length,
                action_repeat=env_config.action_repeat, **kwargs)
  except ValueError as err:
    raise ConfigError(f"'config.env.name'={env_config.name!r}: {err}") from None
