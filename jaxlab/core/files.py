"""Atomic file writes: the whole file appears under its name, or the old one stays.

Every JSON/JSONL/text artefact a run or an evaluation writes (config.json, summary.json,
eval.json, task files, resumable state files) goes through here, so an interrupted process
never leaves a half-written file that a resume would read.

Logs that grow record by record (``metrics.jsonl``, an evaluation's per-item outputs) are
appended instead (:func:`append_jsonl`): a process killed mid-write can leave one unfinished
last line, which :func:`read_jsonl` drops, so a resume sees only whole records.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping

import numpy as np

from jaxlab.core.errors import JaxlabError


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


def write_figure(path: str, fig: Any, dpi: int = 100) -> None:
  """A matplotlib figure as PNG, atomically (parents created)."""
  _atomic(path, lambda f: fig.savefig(f, format="png", dpi=dpi), "wb")


def write_json(path: str, obj: Any, indent: int | None = None) -> None:
  """``obj`` as JSON (numpy scalars through ``float``), atomically."""
  write_text(path, json.dumps(obj, indent=indent, default=float))


def write_jsonl(path: str, records: Iterable[dict[str, Any]], **dumps_kwargs: Any) -> None:
  """One JSON object per line, atomically."""
  write_text(path, "".join(json.dumps(r, **dumps_kwargs) + "\n" for r in records))


def _drop_unfinished_line(path: str) -> None:
  """Truncates ``path`` after its last newline (no-op for a missing or complete file)."""
  if not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    size = f.seek(0, os.SEEK_END)
    if size == 0:
      return
    f.seek(size - 1)
    if f.read(1) == b"\n":
      return
    f.seek(0)
    data = f.read()
    f.truncate(data.rfind(b"\n") + 1)


def append_jsonl(path: str, records: Iterable[dict[str, Any]], **dumps_kwargs: Any) -> None:
  """Appends one JSON object per line and flushes them to disk (parents created).

  An unfinished last line left by a killed writer is cut off first, so it can never merge
  with the next record.
  """
  text = "".join(json.dumps(r, **dumps_kwargs) + "\n" for r in records)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  _drop_unfinished_line(path)
  with open(path, "a", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The whole records of a JSONL file written by :func:`append_jsonl` or :func:`write_jsonl`.

  An unfinished last line (no newline: the writer was killed mid-write) is dropped; a broken
  line anywhere else is an error naming ``path:line``.
  """
  with open(path, encoding="utf-8") as f:
    text = f.read()
  lines = text.split("\n")
  complete = lines[:-1]  # the part after the last newline is empty or unfinished
  out = []
  for i, line in enumerate(complete):
    if not line.strip():
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError as err:
      raise ValueError(f"{path}:{i + 1}: not a JSON record ({err.msg})") from None
  return out


def read_run_config(workdir: str) -> dict[str, Any]:
  """The ``config.json`` of a run directory as a plain dict (no jax import, for analysis
  tools reading many runs), or a one-line error saying what is missing."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise JaxlabError(f"{path} does not exist; is '{workdir}' a run directory of launch.train?")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as err:
    raise JaxlabError(f"{path} is not valid JSON ({err})") from None
