"""One coordinate frame: the resize rule's test vectors (spec §2.3) and box conversions."""

import numpy as np
import pytest

from jaxlab.core.errors import DataError
from jaxlab.grounding import frames
from jaxlab.models.qwen_vl import processor

# (W, H) -> resized (W, H), spec §2.3.
EVAL_VECTORS = [((1920, 1080), (1932, 1092)), ((2560, 1440), (2548, 1428)),
                ((3840, 2160), (3836, 2156)), ((6016, 3384), (4760, 2688)),
                ((1280, 800), (1288, 812))]
QUICKSTART_VECTORS = [((3840, 2160), (3248, 1820)), ((6016, 3384), (3248, 1820))]


@pytest.mark.parametrize("size,resized", EVAL_VECTORS)
def test_resize_vectors_eval_max_pixels(size, resized):
  f = frames.resized_frame(*size, max_pixels=frames.EVAL_MAX_PIXELS)
  assert f.resized_size == resized
  assert (f.width, f.height) == size


@pytest.mark.parametrize("size,resized", QUICKSTART_VECTORS)
def test_resize_vectors_six_million(size, resized):
  f = frames.resized_frame(*size, min_pixels=78_400, max_pixels=6_000_000)
  assert f.resized_size == resized


def test_frame_for_uses_the_processor_settings():
  cfg = processor.ImageProcessorConfig(max_pixels=frames.EVAL_MAX_PIXELS)
  assert frames.frame_for(1280, 800, cfg).resized_size == (1288, 812)
  # Our default processor (max 28*28*1280) shrinks the same screen.
  assert frames.frame_for(1280, 800).resized_size == (1260, 784)
  # The synthetic CPU sizes are moved by the rounding to multiples of 28.
  assert frames.frame_for(256, 160).resized_size == (252, 168)
  assert frames.frame_for(320, 200).resized_size == (308, 196)


def test_box_round_trip_through_the_resized_frame():
  rng = np.random.default_rng(0)
  for w, h, _ in [(1920, 1080, 0), (6016, 3384, 0), (256, 160, 0)]:
    f = frames.resized_frame(w, h, max_pixels=frames.EVAL_MAX_PIXELS)
    for _ in range(20):
      x1, x2 = sorted(rng.uniform(0, w, 2))
      y1, y2 = sorted(rng.uniform(0, h, 2))
      r = frames.box_to_frame((x1, y1, x2, y2), f)
      back = (*frames.point_to_original(r[:2], f), *frames.point_to_original(r[2:], f))
      np.testing.assert_allclose(back, (x1, y1, x2, y2), rtol=1e-12)
      # The whole image maps onto the whole resized image.
    assert frames.box_to_frame((0, 0, w, h), f) == pytest.approx((0, 0, *f.resized_size))


def test_xywh_normalised_and_polygon_conversions_agree():
  f = frames.resized_frame(1920, 1080, max_pixels=frames.EVAL_MAX_PIXELS)
  xyxy = frames.xywh_to_xyxy((100, 200, 50, 20))
  assert xyxy == (100, 200, 150, 220)
  via_px = frames.box_to_frame(xyxy, f)
  via_norm = frames.normalized_box_to_frame((100 / 1920, 200 / 1080, 150 / 1920, 220 / 1080), f)
  np.testing.assert_allclose(via_px, via_norm, rtol=1e-12)
  poly = frames.points_to_frame([(100, 200), (150, 200), (150, 220)], f)
  assert poly[1] == pytest.approx(via_px[2:3] + via_px[1:2])


def test_ordered_box_swaps_and_rejects():
  assert frames.ordered_box((10, 20, 5, 2)) == (5, 2, 10, 20)
  with pytest.raises(DataError, match="row 3: expected"):
    frames.ordered_box((1, 2, 3), "row 3")
  with pytest.raises(DataError, match="expected 4 numbers"):
    frames.ordered_box((1, 2, 3, "x"))


def test_center_is_inside_and_rounds_half_up():
  assert frames.center((0, 0, 3, 3)) == (2, 2)
  assert frames.center((10, 10, 11, 11)) == (11, 11)
  assert frames.center((4, 8, 0, 0)) == (2, 4)
