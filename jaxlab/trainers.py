"""Trainers by name: ``config.trainer`` picks the module that ``launch.train`` runs.

Each trainer module provides ``default_config()``, ``check_config(config)``,
``check_mesh(config, mesh)`` and ``run(config, workdir, mesh)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from jaxlab.core.errors import ConfigError

TRAINERS = {
    "ppo": "jaxlab.rl.ppo",
    "pqn": "jaxlab.rl.pqn",
    "sac": "jaxlab.rl.sac",
    "td3": "jaxlab.rl.td3",
    "llm_sft": "jaxlab.llm.sft",
    "llm_rl": "jaxlab.llm.rl",
    "ns_supervised": "jaxlab.supervised.nonstationary",
}


def get(name: str) -> ModuleType:
  if name not in TRAINERS:
    raise ConfigError(f"unknown 'config.trainer'={name!r}; valid trainers: {sorted(TRAINERS)}")
  return importlib.import_module(TRAINERS[name])
