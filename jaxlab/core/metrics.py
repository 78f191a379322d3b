"""Metric writers and the console progress line.

``metrics.jsonl`` is always written: one JSON object per logged step, ``{"step": ..., name:
value, ...}``. Values may be scalars or per-seed lists. TensorBoard event files are written
beside it when tensorboardX is importable. On resume, :meth:`MetricWriter.truncate` drops lines
logged after the restored checkpoint, so a resumed run's log equals an uninterrupted one's.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Mapping

import numpy as np

from jaxlab.core import files


def to_python(value: Any) -> Any:
  """Host numbers for JSON: arrays become floats or (per-seed) lists, NaN stays NaN."""
  arr = np.asarray(value)
  if arr.ndim == 0:
    return arr.item()
  return arr.tolist()


def scalar(value: Any) -> float:
  """One number for display: the mean over seeds of a per-seed value."""
  return float(np.mean(np.asarray(value, dtype=np.float64)))


def _summary_writer_class():
  """tensorboardX's ``SummaryWriter``, imported without PyTorch.

  tensorboardX's writer module imports torch whenever it is installed (only to accept torch
  tensors as values), which costs every run ~1.2 s of start-up here; we only log Python floats.
  Unless torch is already loaded, a ``None`` entry in ``sys.modules`` makes that import fail
  the way tensorboardX expects (an ImportError it catches) for the length of this import.
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    return SummaryWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class MetricWriter:
  """Appends metrics to ``workdir/metrics.jsonl`` and TensorBoard event files."""

  def __init__(self, workdir: str, tensorboard: bool = True, purge_step: int | None = None):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if tensorboard:
      try:
        self._tb = _summary_writer_class()(os.path.join(workdir, "tb"), purge_step=purge_step)
      except ImportError:
        self._tb = None

  def truncate(self, last_step: int) -> None:
    """Keeps only records with ``step <= last_step`` (used when resuming)."""
    if not os.path.exists(self.path):
      return
    kept = [r for r in files.read_jsonl(self.path) if r["step"] <= last_step]
    files.write_jsonl(self.path, kept)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    record = {"step": int(step)}
    record.update({k: to_python(v) for k, v in metrics.items()})
    files.append_jsonl(self.path, [record])
    if self._tb is not None:
      for k, v in record.items():
        value = scalar(v) if k != "step" else math.nan
        if math.isfinite(value):  # e.g. no episode ended in this chunk
          self._tb.add_scalar(k, value, int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """All records of ``workdir/metrics.jsonl`` in order."""
  return files.read_jsonl(os.path.join(workdir, "metrics.jsonl"))


def _fmt_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _fmt_rate(rate: float, unit: str) -> str:
  """``1,234/s`` and ``2.5/s`` for fast work, ``4.2 s per step`` below one unit a second."""
  if not (math.isfinite(rate) and rate > 0):
    return "?/s"
  if rate >= 100:
    return f"{rate:,.0f}/s"
  if rate >= 1:
    return f"{rate:.3g}/s"
  return f"{1 / rate:.3g} s per {unit[:-1] if unit.endswith('s') else unit}"


class Progress:
  """A one-line console progress bar: done/total, rate, ETA and a few named metrics.

  On a terminal the line is redrawn in place; otherwise (CI, log files) a plain line is printed
  at most every ``min_interval`` seconds.
  """

  def __init__(self, total: int, start: int = 0, unit: str = "steps", stream=None,
               min_interval: float = 10.0):
    self.total, self.start, self.unit = total, start, unit
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.min_interval = min_interval
    self._t0 = time.perf_counter()
    self._last_print = -math.inf
    self.rate = float("nan")

  def update(self, done: int, metrics: Mapping[str, Any] | None = None, force: bool = False):
    now = time.perf_counter()
    elapsed = now - self._t0
    if done > self.start and elapsed > 0:
      self.rate = (done - self.start) / elapsed
    if not (self.tty or force or now - self._last_print >= self.min_interval):
      return
    self._last_print = now
    frac = min(done / max(self.total, 1), 1.0)
    eta = (self.total - done) / self.rate if self.rate and self.rate > 0 else float("nan")
    bar = "#" * int(frac * 20)
    shown = " ".join(f"{k}={scalar(v):.4g}" for k, v in (metrics or {}).items())
    line = (f"[{bar:<20}] {done:,}/{self.total:,} {self.unit} {_fmt_rate(self.rate, self.unit)} "
            f"elapsed {_fmt_duration(elapsed)} eta {_fmt_duration(eta)} {shown}")
    if self.tty:
      self.stream.write("\r" + line[:200].ljust(120))
    else:
      self.stream.write(line + "\n")
    self.stream.flush()

  def close(self):
    if self.tty:
      self.stream.write("\n")
      self.stream.flush()
