"""Atomic file writes: the whole file appears under its name, or the old one stays.

Every JSON/JSONL/text artefact a run or an evaluation writes (config.json, summary.json,
eval.json, task files, resumable state files) goes through here, so an interrupted process
never leaves a half-written file that a resume would read.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping

import numpy as np


def _atomic(path: str, write, mode: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, mode) as f:
    write(f)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` through a temporary file and a rename (parents created)."""
  _atomic(path, lambda f: f.write(text), "w")


def write_npz(path: str, arrays: Mapping[str, Any]) -> None:
  """``np.savez_compressed`` of ``arrays``, atomically."""
  _atomic(path, lambda f: np.savez_compressed(f, **arrays), "wb")


def write_json(path: str, obj: Any, indent: int | None = None) -> None:
  """``obj`` as JSON (numpy scalars through ``float``), atomically."""
  write_text(path, json.dumps(obj, indent=indent, default=float))


def write_jsonl(path: str, records: Iterable[dict[str, Any]], **dumps_kwargs: Any) -> None:
  """One JSON object per line, atomically."""
  write_text(path, "".join(json.dumps(r, **dumps_kwargs) + "\n" for r in records))
