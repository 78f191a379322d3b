"""One coordinate frame from end to end: the resized image a model sees.

A screenshot of ``width x height`` pixels is resized by the Qwen2.5-VL rule
(:func:`jaxlab.models.qwen_vl.processor.smart_resize`, factor 28) before it is patched. A
grounding model answers with a point in that resized frame, so SFT targets, the RL reward and
every benchmark scorer convert boxes from the original frame (or from normalised coordinates)
into it with the functions here, and only here.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from jaxlab.core.errors import DataError
from jaxlab.models.qwen_vl import processor

# The evaluation setting of the paper's code (spec §2.3): 16384 * 28 * 28 pixels.
EVAL_MAX_PIXELS = 12_845_056


@dataclasses.dataclass(frozen=True)
class Frame:
  """An original image size and the size the model sees, both as (width, height)."""
  width: int
  height: int
  resized_width: int
  resized_height: int

  @property
  def scale(self) -> tuple[float, float]:
    """(x, y) factors from the original frame to the resized one."""
    return self.resized_width / self.width, self.resized_height / self.height

  @property
  def resized_size(self) -> tuple[int, int]:
    return self.resized_width, self.resized_height


def resized_frame(width: int, height: int, *, factor: int = 28,
                  min_pixels: int = processor.DEFAULT_MIN_PIXELS,
                  max_pixels: int = processor.DEFAULT_MAX_PIXELS) -> Frame:
  """The frame of a ``width x height`` screenshot under the processor's resize rule."""
  new_h, new_w = processor.smart_resize(int(height), int(width), factor=factor,
                                        min_pixels=min_pixels, max_pixels=max_pixels)
  return Frame(int(width), int(height), new_w, new_h)


def frame_for(width: int, height: int,
              image_config: processor.ImageProcessorConfig | None = None) -> Frame:
  """The frame under a model directory's image processor settings (ours by default)."""
  cfg = image_config or processor.ImageProcessorConfig()
  return resized_frame(width, height, factor=cfg.factor, min_pixels=cfg.min_pixels,
                       max_pixels=cfg.max_pixels)


def ordered_box(box: Sequence[float], where: str = "box") -> tuple[float, float, float, float]:
  """``[x1, y1, x2, y2]`` with each pair swapped into order (the reference swaps silently)."""
  if len(box) != 4:
    raise DataError(f"{where}: expected [x1, y1, x2, y2] (4 numbers), got {list(box)!r}")
  try:
    x1, y1, x2, y2 = (float(v) for v in box)
  except (TypeError, ValueError):
    raise DataError(f"{where}: expected 4 numbers, got {list(box)!r}") from None
  return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def xywh_to_xyxy(box: Sequence[float], where: str = "box") -> tuple[float, float, float, float]:
  """``[x, y, w, h]`` (ScreenSpot-v2, OSWorld-G) -> ``[x1, y1, x2, y2]``."""
  if len(box) != 4:
    raise DataError(f"{where}: expected [x, y, w, h] (4 numbers), got {list(box)!r}")
  x, y, w, h = (float(v) for v in box)
  return ordered_box((x, y, x + w, y + h), where)


def box_to_frame(box: Sequence[float], frame: Frame) -> tuple[float, float, float, float]:
  """An ``[x1, y1, x2, y2]`` box in original pixels -> the resized frame."""
  sx, sy = frame.scale
  x1, y1, x2, y2 = ordered_box(box)
  return x1 * sx, y1 * sy, x2 * sx, y2 * sy


def normalized_box_to_frame(box: Sequence[float],
                            frame: Frame) -> tuple[float, float, float, float]:
  """An ``[x1, y1, x2, y2]`` box in [0, 1] image fractions (MMBench-GUI) -> the resized frame."""
  x1, y1, x2, y2 = ordered_box(box)
  w, h = frame.resized_size
  return x1 * w, y1 * h, x2 * w, y2 * h


def points_to_frame(points: Sequence[Sequence[float]], frame: Frame) -> list[tuple[float, float]]:
  """Polygon vertices (or any points) in original pixels -> the resized frame."""
  sx, sy = frame.scale
  return [(float(x) * sx, float(y) * sy) for x, y in points]


def point_to_original(point: Sequence[float], frame: Frame) -> tuple[float, float]:
  """A point in the resized frame -> original pixels (for overlays on the screenshot)."""
  sx, sy = frame.scale
  return float(point[0]) / sx, float(point[1]) / sy


def center(box: Sequence[float]) -> tuple[int, int]:
  """The integer centre of a box (the SFT target point), rounded half up."""
  x1, y1, x2, y2 = ordered_box(box)
  return int((x1 + x2) / 2 + 0.5), int((y1 + y2) / 2 + 0.5)
