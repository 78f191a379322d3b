"""Trainers by name: ``config.trainer`` picks the :class:`jaxlab.core.loop.Trainer` that
``launch.train`` and ``launch.eval`` use.

Each module below declares ``TRAINER = loop.Trainer(...)`` (its default config, its checks, its
``build``); importing one is deferred until a run asks for it.
"""

from __future__ import annotations

import importlib

from jaxlab.core.errors import ConfigError
from jaxlab.core.loop import Trainer

TRAINERS = {
    "ppo": "jaxlab.rl.ppo",
    "pqn": "jaxlab.rl.pqn",
    "sac": "jaxlab.rl.sac",
    "td3": "jaxlab.rl.td3",
    "llm_sft": "jaxlab.llm.sft",
    "llm_rl": "jaxlab.llm.rl",
    "ns_supervised": "jaxlab.supervised.nonstationary",
}


def get(name: str) -> Trainer:
  """The trainer called ``name``; an unknown name is one error line listing the known ones."""
  if name not in TRAINERS:
    raise ConfigError(f"unknown 'config.trainer'={name!r}; valid trainers: {sorted(TRAINERS)}")
  return importlib.import_module(TRAINERS[name]).TRAINER
