"""Task rows for the LLM trainers: where the files are, which rows a step reads, prompts as ids.

Rows come from task JSONL files (:mod:`jaxlab.llm.tasks`); every error names ``file:row``.
The rows of step ``s`` are a pure function of ``(seed, s)`` (consecutive slices of per-epoch
permutations), so a resumed run reads exactly the rows an uninterrupted one would.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from jaxlab.core.errors import DataError
from jaxlab.llm import tasks as tasks_lib

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_path(path: str) -> str:
  """A data path as given if it exists, else relative to the repository root."""
  if os.path.isabs(path) or os.path.exists(path):
    return path
  candidate = os.path.join(_REPO, path)
  return candidate if os.path.exists(candidate) else path


def load_rows(files: Sequence[str], limit: int = 0) -> list[tuple[str, int, dict[str, Any]]]:
  """``(file, row number, row)`` for the rows of ``files`` (at most ``limit`` per file; 0: all).

  Raises:
    DataError: a file is missing or a row is malformed (``file:line`` and the field).
  """
  out = []
  for f in files:
    rows = tasks_lib.load_jsonl(resolve_path(f), limit or None)
    out.extend((f, i + 1, r) for i, r in enumerate(rows))
  return out


def batch_indices(step: int, batch_size: int, num_rows: int, seed: int) -> np.ndarray:
  """Row indices of the batch of ``step`` (0-based): consecutive slices of per-epoch
  permutations, a pure function of its arguments (so resuming replays the same data)."""
  start = step * batch_size
  idx = np.arange(start, start + batch_size)
  epochs, pos = idx // num_rows, idx % num_rows
  out = np.empty(batch_size, np.int64)
  for e in np.unique(epochs):
    perm = np.random.default_rng([seed, int(e)]).permutation(num_rows)
    sel = epochs == e
    out[sel] = perm[pos[sel]]
  return out


def encode_prompt_rows(prompt_format: str, tokenizer: Any,
                       rows_with_where: Sequence[tuple[str, int, dict]], max_len: int
                       ) -> tuple[list[dict], np.ndarray, np.ndarray]:
  """Left-padded prompt ids ``[R, Tp]`` and their mask, with ``Tp = max_len`` or the longest.

  Raises:
    DataError: a prompt is longer than ``max_len`` (naming the file and row).
  """
  from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
  from jaxlab.models.tokenizer import encode_prompts  # pylint: disable=g-import-not-at-top
  rows = [r for _, _, r in rows_with_where]
  ids = encode_prompts(tokenizer, [prompt_format.format(**r) for r in rows])
  tp = max_len or max(len(x) for x in ids)
  for (f, line, _), x in zip(rows_with_where, ids):
    if len(x) > tp:
      raise DataError(f"{f}:{line}: the prompt has {len(x)} tokens, longer than "
                      f"'config.data.max_prompt_len'={tp}")
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  tokens, mask = sampling.left_pad(ids, pad_id=pad, length=tp)
  return rows, tokens, mask
