"""Config validation, run before anything is compiled.

Every trainer owns a ``default_config()``: the complete set of keys with their default values.
An experiment file (``configs/<paper>/<name>.py``) starts from it and overrides values. The
launcher then checks the final config (``jaxlab.core.loop.validate``): unknown keys (typos) and
wrong types here, then the keys every trainer shares, then the trainer's own rules; each
failure is one :class:`ConfigError` line naming the key.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from typing import Any, Iterable

import ml_collections

from jaxlab.core.errors import ConfigError

# Types that may stand in for one another: an int where a float is expected is fine
# (``--config.learning_rate=1``), the reverse is not.
_COMPATIBLE = {float: (int, float), int: (int,), bool: (bool,), str: (str,)}


def _type_name(value: Any) -> str:
  return type(value).__name__


def check_against_defaults(config: ml_collections.ConfigDict,
                           defaults: ml_collections.ConfigDict,
                           prefix: str = "config") -> None:
  """Raises ConfigError on unknown keys and on values whose type differs from the default.

  A default of ``None`` accepts anything; nested ConfigDicts are checked recursively; tuples and
  lists are interchangeable.
  """
  for key in config.keys():
    path = f"{prefix}.{key}"
    if key not in defaults:
      known = ", ".join(sorted(defaults.keys()))
      raise ConfigError(f"unknown config key '{path}'; valid keys here are: {known}")
    value, default = config[key], defaults[key]
    if isinstance(default, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ConfigError(f"'{path}' must be a group of keys (like the default), got "
                          f"{_type_name(value)} {value!r}")
      check_against_defaults(value, default, path)
      continue
    if default is None or value is None:
      continue
    if isinstance(default, (tuple, list)):
      if not isinstance(value, (tuple, list)):
        raise ConfigError(f"'{path}' must be a list/tuple, got {_type_name(value)} {value!r}")
      continue
    allowed = _COMPATIBLE.get(type(default), (type(default),))
    # bool is a subclass of int; `True` is no valid learning rate.
    if isinstance(value, bool) and type(default) is not bool:
      allowed = ()
    if not isinstance(value, allowed):
      raise ConfigError(f"'{path}' must be {_type_name(default)} (default {default!r}), got "
                        f"{_type_name(value)} {value!r}")


def require(condition: bool, message: str) -> None:
  """Raises ConfigError(message) unless condition holds. For trainers' consistency rules."""
  if not condition:
    raise ConfigError(message)


def require_choice(config: ml_collections.ConfigDict, key: str, choices: Iterable[str]) -> None:
  """Checks that the dotted ``key`` of ``config`` is one of ``choices``."""
  value = config
  for part in key.split("."):
    value = value[part]
  choices = list(choices)
  require(value in choices, f"'config.{key}'={value!r} is not one of {choices}")


def snapshot(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of ``config`` with its field references resolved, for a trainer to keep. Trainers
  read their config again whenever they trace, so holding the caller's object would let a
  later change of it (a sweep that edits one config between runs) alter a trainer already
  built."""
  return config.copy_and_resolve_references()


def set_dotted(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
  """Sets ``{"group.key": value}`` entries in place, as ``--config.group.key=value`` would."""
  for key, value in overrides.items():
    target = config
    *groups, name = key.split(".")
    for g in groups:
      target = target[g]
    target[name] = value


def load_module(path: str):
  """The config file at ``path`` as a module, executed from its path as ``--config=path``
  would be (config files are not an importable package); for files that export more than
  ``get_config`` (a study's ``ARMS``)."""
  name = "jaxlab_config_" + re.sub(r"\W", "_", os.path.splitext(os.path.abspath(path))[0])
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """``get_config()`` (or ``get_config(arg)``) of the config file at ``path``."""
  module = load_module(path)
  return module.get_config() if arg is None else module.get_config(arg)


def to_json(config: ml_collections.ConfigDict) -> str:
  """Stable JSON of a config, for ``config.json`` and for comparing a resumed run's config."""
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
