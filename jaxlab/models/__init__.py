"""Model families, one folder each, and the registry that picks one from a model directory.

  decoder/    Llama 3 / Qwen2 / Qwen2.5 / Qwen3: config, modeling, params (safetensors I/O),
              sharding rules, value (a decoder body with a scalar head)
  looped/     prelude / recurrent core / coda models; HrmText, Huginn (Raven), Ouro checkpoints
  qwen_vl/    Qwen2.5-VL: vision tower, M-RoPE, image processor, checkpoints of both key layouts
  tokenizer   the tokenizer and chat template of a model directory (shared by every family)
  errors      ModelConfigError, raised for any bad model directory
  paths       path_str: parameter paths as the strings param maps and sharding tables use

The registry maps Hugging Face ``config.json`` values to a family: ``architectures`` first
(the class name transformers would build), then ``model_type``. A family is a name, the module
whose ``from_pretrained(path, **kw)`` loads it, and the values it claims; its module is imported
only when a checkpoint of that family is loaded, so registering a family costs nothing.

  model, tokenizer = jaxlab.models.from_pretrained("path/to/model_dir")
  jaxlab.models.family_for("path/to/model_dir")   # -> "decoder"

A new family adds one :func:`register` call below (or its own, from anywhere, before loading).
Importing this package pulls in no jax, transformers or family code.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from types import ModuleType
from typing import Any, Mapping

from jaxlab.models.errors import ModelConfigError

CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class Family:
  """One model family of the registry.

  Attributes:
    name: the family's name, also its folder under ``jaxlab/models/``.
    module: the importable module that provides ``from_pretrained(path, **kw)``.
    architectures: Hugging Face class names (``config.json["architectures"]``) it loads.
    model_types: ``config.json["model_type"]`` values it loads when ``architectures`` is absent.
  """
  name: str
  module: str
  architectures: tuple[str, ...]
  model_types: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {}


def register(name: str, module: str, architectures: tuple[str, ...] | list[str],
             model_types: tuple[str, ...] | list[str] = ()) -> Family:
  """Adds a family to the registry (or replaces the family of the same name).

  Raises:
    ValueError: an architecture or model_type is already claimed by another family.
  """
  family = Family(name, module, tuple(architectures), tuple(model_types))
  for other in FAMILIES.values():
    if other.name == name:
      continue
    clash = (set(family.architectures) & set(other.architectures)) | (
        set(family.model_types) & set(other.model_types))
    if clash:
      raise ValueError(f"family {name!r}: {sorted(clash)} already belong to family "
                       f"{other.name!r}")
  FAMILIES[name] = family
  return family


register("decoder", "jaxlab.models.decoder.params",
         architectures=("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"),
         model_types=("llama", "qwen2", "qwen3"))
# Huginn (Raven) and Ouro: format-compatible readers, not verified against upstream weights.
register("looped", "jaxlab.models.looped.params",
         architectures=("HrmTextForCausalLM", "RavenForCausalLM", "OuroForCausalLM",
                        "JaxlabLoopedForCausalLM"),
         model_types=("hrm_text", "huginn_raven", "ouro", "jaxlab_looped"))
register("qwen_vl", "jaxlab.models.qwen_vl.params",
         architectures=("Qwen2_5_VLForConditionalGeneration",), model_types=("qwen2_5_vl",))


def _known(attr: str) -> str:
  return ", ".join(v for f in FAMILIES.values() for v in getattr(f, attr))


def read_config(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
  """``(parsed config.json, its path)`` from a model directory or a config.json file.

  Raises:
    ModelConfigError: the directory or file is missing, or the file is not a JSON object.
  """
  path = os.fspath(path)
  cfg_path = path if os.path.isfile(path) else os.path.join(path, CONFIG_FILE)
  if not os.path.exists(path):
    raise ModelConfigError(f"{path}: model directory does not exist")
  if not os.path.isfile(cfg_path):
    raise ModelConfigError(f"{cfg_path}: missing (a model directory needs {CONFIG_FILE})")
  return read_json_object(cfg_path), cfg_path


def read_json_object(file: str) -> dict[str, Any]:
  """A JSON file of a model directory that must hold one object (config.json,
  preprocessor_config.json, a weight index), for every family; jax-free.

  Raises:
    ModelConfigError: the file is not valid JSON or not an object (its path named).
  """
  try:
    with open(file) as f:
      d = json.load(f)
  except json.JSONDecodeError as e:
    raise ModelConfigError(f"{file}: not valid JSON ({e})") from None
  if not isinstance(d, dict):
    raise ModelConfigError(f"{file}: expected a JSON object, got {type(d).__name__}")
  return d


def family_for(source: str | os.PathLike | Mapping[str, Any]) -> str:
  """The name of the family that loads a model directory, a config.json, or a parsed config.

  Raises:
    ModelConfigError: no registered family claims the config's ``architectures`` (or, when it
      has none, its ``model_type``); one line naming the file, the value and the known ones.
  """
  if isinstance(source, Mapping):
    d, where = source, CONFIG_FILE
  else:
    d, where = read_config(source)
  archs = d.get("architectures") or []
  if isinstance(archs, str):
    archs = [archs]
  if archs:
    for arch in archs:
      for f in FAMILIES.values():
        if arch in f.architectures:
          return f.name
    shown = archs[0] if len(archs) == 1 else archs
    raise ModelConfigError(f"{where}: unknown architecture {shown!r} in 'architectures'; "
                           f"known: {_known('architectures')}")
  model_type = d.get("model_type")
  if model_type is None:
    raise ModelConfigError(f"{where}: no 'architectures' or 'model_type' to pick a model "
                           f"family from; known architectures: {_known('architectures')}")
  for f in FAMILIES.values():
    if model_type in f.model_types:
      return f.name
  raise ModelConfigError(f"{where}: unknown model_type {model_type!r} (and no "
                         f"'architectures'); known: {_known('model_types')}")


def family_module(name: str) -> ModuleType:
  """The loading module of a registered family (imported on first use)."""
  if name not in FAMILIES:
    raise KeyError(f"unknown model family {name!r}; registered: {', '.join(FAMILIES)}")
  return importlib.import_module(FAMILIES[name].module)


def from_pretrained(path: str | os.PathLike, **kwargs: Any) -> Any:
  """Loads a local model directory with its family's ``from_pretrained``.

  The keyword arguments go to the family unchanged; for the decoder that is
  :func:`jaxlab.models.decoder.params.from_pretrained` (mesh, dtype, tokenizer, ...), which
  returns ``(model, tokenizer or None)``.
  """
  return family_module(family_for(path)).from_pretrained(os.fspath(path), **kwargs)
