"""The Qwen2.5-VL image processor against transformers' Qwen2VLImageProcessorPil (the reference).

Parity is checked on random-noise images (the hardest input for a resize filter) of sizes the
resize rule enlarges, shrinks and keeps, in modes that need an RGB conversion, singly and in a
mixed batch; the config is checked through files the reference itself writes.
"""

import json

import numpy as np
import pytest
from PIL import Image

from jaxlab.core.errors import DataError
from jaxlab.models.errors import ModelConfigError
from jaxlab.models.qwen_vl import processor as pr

qwen2_vl = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
image_utils = pytest.importorskip("transformers.image_utils")

MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 64  # small bounds keep every case fast


def _noise(h, w, mode="RGB", seed=0):
  rng = np.random.default_rng(seed)
  if mode == "RGBA":
    return Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
  im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
  if mode == "P":  # a palette image with one transparent colour: composited over white
    im = im.convert("P")
    im.info["transparency"] = int(np.asarray(im)[0, 0])
    return im
  return im.convert(mode)


@pytest.fixture(scope="module")
def reference():
  return qwen2_vl.Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)


def _over_white(image):
  """A transparent image composited over white (an opaque one unchanged)."""
  if "A" not in image.getbands() and image.info.get("transparency") is None:
    return image
  rgba = image.convert("RGBA")
  return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


def _reference_composites_over_white() -> bool:
  """transformers composites transparency over white since 5.2x (ours does, as Qwen's own
  pipeline does); earlier releases (5.17, on the GPU machines) drop the alpha channel."""
  from transformers import image_transforms  # pylint: disable=import-outside-toplevel
  clear = Image.new("RGBA", (1, 1), (0, 0, 0, 0))
  return np.asarray(image_transforms.convert_to_rgb(clear)).reshape(-1)[:3].tolist() == [255] * 3


def _assert_same(images, ours_cfg, ref):
  pixel_values, grid = pr.preprocess(images, ours_cfg)
  # With an older reference, its input is composited here, so that everything after the
  # conversion to RGB (resize, rescale, normalise, patch layout) is still compared.
  want = ref(images if _reference_composites_over_white() else [_over_white(i) for i in images],
             return_tensors="np")
  assert pixel_values.dtype == np.float32 and grid.dtype == np.int64
  np.testing.assert_array_equal(grid, want["image_grid_thw"])
  assert pixel_values.shape == want["pixel_values"].shape
  assert np.abs(pixel_values - want["pixel_values"]).max() <= 1e-6
  return pixel_values, grid


@pytest.mark.parametrize("h,w,mode", [
    (1, 1, "RGB"),        # far below one patch: enlarged to 56 x 56
    (20, 33, "RGB"),      # enlarged (area under min_pixels)
    (56, 84, "RGB"),      # already multiples of 28 within bounds: size kept
    (300, 500, "RGB"),    # shrunk (area over max_pixels)
    (1000, 10, "RGB"),    # thin: aspect ratio 100
    (64, 80, "L"),        # grey
    (90, 40, "RGBA"),     # alpha over white
    (45, 70, "P"),        # palette with a transparent colour
])
def test_preprocess_matches_reference(reference, h, w, mode):
  cfg = pr.ImageProcessorConfig(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
  _, grid = _assert_same([_noise(h, w, mode)], cfg, reference)
  want_h, want_w = pr.smart_resize(h, w, 28, MIN_PIXELS, MAX_PIXELS)
  assert grid.tolist() == [[1, want_h // 14, want_w // 14]]


def test_batch_of_two_sizes_matches_reference_and_single_calls(reference):
  cfg = pr.ImageProcessorConfig(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
  a, b = _noise(120, 70, seed=1), _noise(33, 200, "RGBA", seed=2)
  pixel_values, grid = _assert_same([a, b], cfg, reference)
  first, _ = pr.preprocess([a], cfg)
  second, _ = pr.preprocess([b], cfg)
  np.testing.assert_array_equal(pixel_values, np.concatenate([first, second]))
  assert grid[:, 0].tolist() == [1, 1] and len(pixel_values) == int(grid.prod(axis=1).sum())


def test_patch_layout_by_hand():
  """Patch rows go window by window, each row (channel, time, y, x) with time repeated."""
  cfg = pr.ImageProcessorConfig(patch_size=2, merge_size=2, temporal_patch_size=2,
                                min_pixels=1, max_pixels=10_000, do_resize=False,
                                do_rescale=False, do_normalize=False)
  img = np.arange(4 * 8 * 3, dtype=np.uint8).reshape(4, 8, 3)  # 2 x 4 patches, 1 x 2 windows
  pixel_values, grid = pr.preprocess([Image.fromarray(img, "RGB")], cfg)
  assert grid.tolist() == [[1, 2, 4]] and pixel_values.shape == (8, 3 * 2 * 2 * 2)
  # Row 2 is the first window's patch at (patch row 1, patch col 0): pixels y 2..3, x 0..1.
  patch = img[2:4, 0:2].transpose(2, 0, 1)  # [C, y, x]
  want = np.stack([patch, patch], axis=1).reshape(-1)  # [C, T, y, x]
  np.testing.assert_array_equal(pixel_values[2], want.astype(np.float32))
  # Row 4 starts the second window: patch (0, 2), pixels y 0..1, x 4..5.
  np.testing.assert_array_equal(pixel_values[4].reshape(3, 2, 2, 2)[:, 0],
                                img[0:2, 4:6].transpose(2, 0, 1))


def test_smart_resize_matches_reference():
  sides = [1, 2, 13, 14, 27, 28, 29, 42, 55, 56, 99, 224, 333, 1000, 2049, 4000]
  for factor, lo, hi in [(28, 56 * 56, 28 * 28 * 1280), (28, MIN_PIXELS, MAX_PIXELS),
                         (32, 32 * 32 * 4, 32 * 32 * 100)]:
    for h in sides:
      for w in sides:
        if max(h, w) / min(h, w) > 200:
          with pytest.raises(ValueError):
            qwen2_vl.smart_resize(h, w, factor, lo, hi)
          with pytest.raises(DataError, match=f"{h}x{w}.*aspect ratio"):
            pr.smart_resize(h, w, factor, lo, hi)
        else:
          got = pr.smart_resize(h, w, factor, lo, hi)
          assert got == qwen2_vl.smart_resize(h, w, factor, lo, hi), (h, w, factor)
          assert got[0] % factor == 0 and got[1] % factor == 0
  with pytest.raises(DataError, match="0x5"):
    pr.smart_resize(0, 5)


def test_config_from_save_pretrained_round_trips(tmp_path):
  settings = dict(min_pixels=28 * 28 * 8, max_pixels=28 * 28 * 32, resample=2,
                  image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3],
                  rescale_factor=1 / 127.5)
  qwen2_vl.Qwen2VLImageProcessorPil(**settings).save_pretrained(str(tmp_path))
  saved = json.loads((tmp_path / pr.PREPROCESSOR_FILE).read_text())
  assert saved["size"] == {"shortest_edge": 28 * 28 * 8, "longest_edge": 28 * 28 * 32}
  cfg = pr.ImageProcessorConfig.from_dir(str(tmp_path))
  assert cfg == pr.ImageProcessorConfig(
      min_pixels=28 * 28 * 8, max_pixels=28 * 28 * 32, resample=2, image_mean=(0.5, 0.4, 0.3),
      image_std=(0.2, 0.25, 0.3), rescale_factor=1 / 127.5)
  assert pr.ImageProcessorConfig.from_dir(str(tmp_path / pr.PREPROCESSOR_FILE)) == cfg
  ref = qwen2_vl.Qwen2VLImageProcessorPil.from_pretrained(str(tmp_path))
  _assert_same([_noise(150, 260, seed=3), _noise(30, 40, "L", seed=4)], cfg, ref)
  # Our own writer gives a file the reference reads to the same processor.
  ref_again = qwen2_vl.Qwen2VLImageProcessorPil(**cfg.to_dict())
  _assert_same([_noise(150, 260, seed=3)], cfg, ref_again)


def test_config_published_form_and_precedence():
  published = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
               "temporal_patch_size": 2, "merge_size": 2, "image_mean": list(pr.CLIP_MEAN),
               "image_std": list(pr.CLIP_STD), "image_processor_type": "Qwen2VLImageProcessor",
               "processor_class": "Qwen2_5_VLProcessor"}
  cfg = pr.ImageProcessorConfig.from_dict(published)
  assert (cfg.min_pixels, cfg.max_pixels, cfg.resample) == (3136, 12845056, 3)
  both = dict(published, size={"shortest_edge": 1, "longest_edge": 2})
  ref = qwen2_vl.Qwen2VLImageProcessorPil(**both)  # top-level keys win in the reference too
  assert (ref.size.shortest_edge, ref.size.longest_edge) == (3136, 12845056)
  assert pr.ImageProcessorConfig.from_dict(both) == cfg
  assert pr.ImageProcessorConfig.from_dict({}) == pr.ImageProcessorConfig()


@pytest.mark.parametrize("change,key", [
    ({"resample": 9}, "resample"),
    ({"image_mean": [0.5, 0.5]}, "image_mean"),
    ({"image_std": [0.5, 0.0, 0.5]}, "image_std"),
    ({"patch_size": 0}, "patch_size"),
    ({"do_resize": "yes"}, "do_resize"),
    ({"size": {"shortest_edge": 3136}}, "size"),
    ({"min_pixels": 5000, "max_pixels": 4000}, "min_pixels"),
    ({"image_processor_type": "CLIPImageProcessor"}, "image_processor_type"),
    ({"do_fancy_thing": True}, "do_fancy_thing"),
])
def test_config_errors_name_file_and_key(tmp_path, change, key):
  path = tmp_path / pr.PREPROCESSOR_FILE
  path.write_text(json.dumps(change))
  with pytest.raises(ModelConfigError, match=f"{path}: .*{key}"):
    pr.ImageProcessorConfig.from_dir(str(tmp_path))


def test_config_missing_and_malformed_files(tmp_path):
  with pytest.raises(ModelConfigError, match=f"{tmp_path / pr.PREPROCESSOR_FILE}: missing"):
    pr.ImageProcessorConfig.from_dir(str(tmp_path))
  (tmp_path / pr.PREPROCESSOR_FILE).write_text("{not json")
  with pytest.raises(ModelConfigError, match="not valid JSON"):
    pr.ImageProcessorConfig.from_dir(str(tmp_path))
  (tmp_path / pr.PREPROCESSOR_FILE).write_text("[1, 2]")
  with pytest.raises(ModelConfigError, match="expected a JSON object"):
    pr.ImageProcessorConfig.from_dir(str(tmp_path))


def test_expand_image_placeholders():
  grids = np.array([[1, 4, 6], [1, 12, 20]])
  assert [pr.num_image_tokens(g, 2) for g in grids] == [6, 60]
  assert pr.num_image_tokens([2, 4, 4], merge_size=2) == 8
  tok = pr.IMAGE_TOKEN
  text = f"<|vision_start|>{tok}<|vision_end|>and<|vision_start|>{tok}<|vision_end|>?"
  out = pr.expand_image_placeholders(text, grids)
  assert out == (f"<|vision_start|>{tok * 6}<|vision_end|>and<|vision_start|>{tok * 60}"
                 "<|vision_end|>?")
  assert pr.expand_image_placeholders("no images", []) == "no images"
  with pytest.raises(DataError, match="text has 2 .* but 1 image"):
    pr.expand_image_placeholders(text, grids[:1])
  with pytest.raises(DataError, match="text has 0 .* but 2 image"):
    pr.expand_image_placeholders("plain", grids)
  with pytest.raises(DataError, match="text has 1 .* but 2 image"):
    pr.expand_image_placeholders("<img>", grids, image_token="<img>")


def test_load_image(tmp_path):
  missing = tmp_path / "nope.png"
  with pytest.raises(DataError, match=f"{missing}: image file not found"):
    pr.load_image(missing)
  garbage = tmp_path / "broken.png"
  garbage.write_bytes(b"this is not a png")
  with pytest.raises(DataError, match=f"{garbage}: cannot read image"):
    pr.load_image(str(garbage))
  good = tmp_path / "ok.png"
  src = _noise(17, 23, "RGBA", seed=5)
  src.save(good)
  loaded = pr.load_image(good)
  assert loaded.mode == "RGBA" and loaded.size == (23, 17)
  np.testing.assert_array_equal(np.asarray(loaded), np.asarray(src))
  # EXIF orientation is applied, as transformers' load_image does (which also drops alpha).
  turned = tmp_path / "turned.png"
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
  src.save(turned, exif=exif)
  loaded = pr.load_image(turned)
  assert loaded.size == (17, 23)
  want = image_utils.load_image(str(turned))
  np.testing.assert_array_equal(np.asarray(loaded.convert("RGB")), np.asarray(want))


def test_preprocess_rejects_bad_input():
  cfg = pr.ImageProcessorConfig(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
  with pytest.raises(DataError, match="no images"):
    pr.preprocess([], cfg)
  with pytest.raises(DataError, match="image 1: height x width = 2x500 pixels: aspect ratio"):
    pr.preprocess([_noise(8, 8), _noise(2, 500)], cfg)
  with pytest.raises(DataError, match="image 0: mode 'L'"):
    pr.preprocess([_noise(8, 8, "L")], pr.ImageProcessorConfig(do_convert_rgb=False))
  with pytest.raises(DataError, match="image 0: height x width = 30x28 .*multiples of"):
    pr.preprocess([_noise(30, 28)], pr.ImageProcessorConfig(do_resize=False))
