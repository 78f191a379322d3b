"""The Qwen2.5-VL image processor in numpy and PIL: images in, vision-tower patches out.

A Qwen2.5-VL checkpoint's vision tower reads an image as a sequence of flattened patches: the
image is resized so that each side is a multiple of ``patch_size * merge_size`` (28 pixels by
default) and its area lies within ``[min_pixels, max_pixels]``, rescaled to [0, 1], normalised
with the CLIP mean and std, and cut into ``patch_size`` squares. A still image is one time step
repeated ``temporal_patch_size`` times, because the tower's first layer is a 3-D convolution
shared with videos. Patches are listed window by window: the ``merge_size x merge_size``
neighbours that the merger later folds into one language-model token are consecutive rows.

Everything here reproduces transformers' ``Qwen2VLImageProcessorPil`` (5.25) step for step,
including its dtypes (uint8 through the PIL resize, float64 rescale cast to float32, float32
normalisation), so that the same image gives the same ``pixel_values`` as the reference; the
tests hold it to that. It needs neither torch nor transformers.

The text side lives here too: the chat template puts one ``<|image_pad|>`` per image, and
:func:`expand_image_placeholders` repeats each one as many times as its image yields tokens
after merging, which is what the model's embedding step expects to find.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxlab.core.errors import DataError
from jaxlab.models.errors import ModelConfigError

PREPROCESSOR_FILE = "preprocessor_config.json"
IMAGE_TOKEN = "<|image_pad|>"

# The reference's defaults (transformers' Qwen2VLImageProcessor class attributes).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 28 * 28 * 1280
# The resize rule gives up beyond this ratio of the long side to the short side.
MAX_ASPECT_RATIO = 200
# PIL filter codes that transformers' PILImageResampling knows (BICUBIC = 3 is Qwen's choice).
_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box",
                   5: "hamming"}
# Keys of preprocessor_config.json that carry no information for still images (metadata, or
# options of the video processor and of other processors that this one ignores, as the
# reference does). Any other unknown key is reported, so that a setting is never dropped
# silently.
_IGNORED_KEYS = frozenset({
    "image_processor_type", "processor_class", "auto_map", "_processor_class",
    "default_to_square", "data_format", "input_data_format", "return_tensors", "device",
    "disable_grouping", "do_center_crop", "crop_size", "do_pad", "pad_size",
    "video_processor_type", "do_sample_frames", "fps", "num_frames", "min_frames",
    "max_frames", "return_metadata", "video_metadata", "image_seq_length",
})
_KNOWN_KEYS = frozenset({
    "patch_size", "temporal_patch_size", "merge_size", "min_pixels", "max_pixels", "size",
    "image_mean", "image_std", "do_resize", "do_rescale", "rescale_factor", "do_normalize",
    "do_convert_rgb", "resample",
})


def smart_resize(height: int, width: int, factor: int = 28,
                 min_pixels: int = DEFAULT_MIN_PIXELS,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
  """The ``(height, width)`` an image of this size is resized to before patching.

  Each side is rounded to the nearest multiple of ``factor``. If the rounded area exceeds
  ``max_pixels`` both sides shrink by one common ratio (rounded down to multiples, at least one
  ``factor``); if it falls short of ``min_pixels`` they grow by one ratio (rounded up). The
  aspect ratio is thus kept up to the rounding. Images far smaller than one ``factor`` square
  are enlarged like any other; the reference has no lower limit beyond a non-empty image.

  Raises:
    DataError: an empty side, or a long side more than ``MAX_ASPECT_RATIO`` times the short one.
  """
  if height <= 0 or width <= 0:
    raise DataError(f"height x width = {height}x{width} pixels: expected both sides to be at "
                    "least 1 pixel")
  ratio = max(height, width) / min(height, width)
  if ratio > MAX_ASPECT_RATIO:
    raise DataError(f"height x width = {height}x{width} pixels: aspect ratio {ratio:.1f} "
                    f"exceeds the {MAX_ASPECT_RATIO} the resize rule accepts")
  # Python's round (half to even), as the reference uses.
  new_h = round(height / factor) * factor
  new_w = round(width / factor) * factor
  if new_h * new_w > max_pixels:
    shrink = math.sqrt(height * width / max_pixels)
    new_h = max(factor, math.floor(height / shrink / factor) * factor)
    new_w = max(factor, math.floor(width / shrink / factor) * factor)
  elif new_h * new_w < min_pixels:
    grow = math.sqrt(min_pixels / (height * width))
    new_h = math.ceil(height * grow / factor) * factor
    new_w = math.ceil(width * grow / factor) * factor
  return new_h, new_w


@dataclasses.dataclass(frozen=True)
class ImageProcessorConfig:
  """What ``preprocessor_config.json`` says about turning images into patches.

  Attributes:
    patch_size: P, the side of one vision-tower patch in pixels.
    temporal_patch_size: T, frames per patch; a still image is repeated T times.
    merge_size: M, the merger folds M x M neighbouring patches into one language token.
    min_pixels, max_pixels: bounds on the resized image's area (``size.shortest_edge`` and
      ``size.longest_edge`` in the files transformers 5 writes).
    image_mean, image_std: per-channel (R, G, B) normalisation after rescaling.
    do_resize, do_rescale, do_normalize, do_convert_rgb: the reference's switches.
    rescale_factor: multiplies the uint8 pixels (1/255).
    resample: PIL filter code of the resize (3 = bicubic).
  """
  patch_size: int = 14
  temporal_patch_size: int = 2
  merge_size: int = 2
  min_pixels: int = DEFAULT_MIN_PIXELS
  max_pixels: int = DEFAULT_MAX_PIXELS
  image_mean: tuple[float, float, float] = CLIP_MEAN
  image_std: tuple[float, float, float] = CLIP_STD
  do_resize: bool = True
  do_rescale: bool = True
  rescale_factor: float = 1 / 255
  do_normalize: bool = True
  do_convert_rgb: bool = True
  resample: int = 3

  @property
  def factor(self) -> int:
    """The multiple each resized side is a multiple of: ``patch_size * merge_size``."""
    return self.patch_size * self.merge_size

  @property
  def patch_dim(self) -> int:
    """Length of one row of ``pixel_values``: ``3 * T * P * P``."""
    return 3 * self.temporal_patch_size * self.patch_size ** 2

  @classmethod
  def from_dir(cls, path: str | os.PathLike) -> "ImageProcessorConfig":
    """Reads a model directory's ``preprocessor_config.json`` (or that file itself).

    Raises:
      ModelConfigError: the file is missing, not a JSON object, or has a bad value.
    """
    path = os.fspath(path)
    file = path if os.path.isfile(path) else os.path.join(path, PREPROCESSOR_FILE)
    if not os.path.isfile(file):
      raise ModelConfigError(f"{file}: missing (an image processor needs {PREPROCESSOR_FILE})")
    from jaxlab.models import read_json_object  # pylint: disable=import-outside-toplevel
    return cls.from_dict(read_json_object(file), path=file)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any],
                path: str = PREPROCESSOR_FILE) -> "ImageProcessorConfig":
    """Builds the config from a parsed ``preprocessor_config.json``; absent keys take the
    reference's defaults.

    Both spellings of the area bounds are read: top-level ``min_pixels`` / ``max_pixels``
    (the published Qwen2.5-VL files) and ``size: {shortest_edge, longest_edge}`` (what
    transformers 5 ``save_pretrained`` writes). As in the reference, the top-level keys win.

    Raises:
      ModelConfigError: an unknown key, or a value of the wrong type or range; one line naming
        ``path`` and the key.
    """
    def bad(key: str, value: Any, expected: str) -> ModelConfigError:
      return ModelConfigError(f"{path}: {key}={value!r}; expected {expected}")

    for key in d:
      if key not in _KNOWN_KEYS and key not in _IGNORED_KEYS:
        raise ModelConfigError(f"{path}: unknown key {key!r} for a Qwen2-VL image processor")
    kind = d.get("image_processor_type")
    if kind is not None and not str(kind).startswith("Qwen2VLImageProcessor"):
      raise bad("image_processor_type", kind, "a Qwen2VLImageProcessor")

    def positive_int(key: str, default: int, value: Any = None) -> int:
      value = d.get(key, default) if value is None else value
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise bad(key, value, "a positive integer")
      return value

    def flag(key: str, default: bool) -> bool:
      value = d.get(key, default)
      if not isinstance(value, bool):
        raise bad(key, value, "true or false")
      return value

    def per_channel(key: str, default: tuple[float, ...], nonzero: bool) -> tuple[float, ...]:
      value = d.get(key, default)
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3  # the reference accepts one number for all channels
      if (not isinstance(value, (list, tuple)) or len(value) != 3
          or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
          or (nonzero and any(v == 0 for v in value))):
        raise bad(key, value, "3 numbers (R, G, B)" + (", none zero" if nonzero else ""))
      return tuple(float(v) for v in value)

    min_pixels, max_pixels = DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS
    size = d.get("size")
    if size is not None:
      if not isinstance(size, dict) or not set(size) <= {"shortest_edge", "longest_edge"}:
        raise bad("size", size, "an object with 'shortest_edge' and 'longest_edge'")
      # An explicit size replaces the defaults entirely, as in the reference.
      min_pixels, max_pixels = size.get("shortest_edge"), size.get("longest_edge")
    if d.get("min_pixels") is not None:
      min_pixels = d["min_pixels"]
    if d.get("max_pixels") is not None:
      max_pixels = d["max_pixels"]
    if min_pixels is None or max_pixels is None:
      raise bad("size", size, "both 'shortest_edge' and 'longest_edge' (or top-level "
                "min_pixels and max_pixels)")
    min_pixels = positive_int("min_pixels", 0, min_pixels)
    max_pixels = positive_int("max_pixels", 0, max_pixels)
    if min_pixels > max_pixels:
      raise bad("min_pixels", min_pixels, f"at most max_pixels={max_pixels}")

    rescale = d.get("rescale_factor", 1 / 255)
    if isinstance(rescale, bool) or not isinstance(rescale, (int, float)) or rescale <= 0:
      raise bad("rescale_factor", rescale, "a positive number")
    resample = d.get("resample", 3)
    if isinstance(resample, bool) or resample not in _RESAMPLE_NAMES:
      raise bad("resample", resample, "a PIL filter code, one of " + ", ".join(
          f"{k} ({v})" for k, v in _RESAMPLE_NAMES.items()))
    return cls(
        patch_size=positive_int("patch_size", 14),
        temporal_patch_size=positive_int("temporal_patch_size", 2),
        merge_size=positive_int("merge_size", 2),
        min_pixels=min_pixels, max_pixels=max_pixels,
        image_mean=per_channel("image_mean", CLIP_MEAN, nonzero=False),
        image_std=per_channel("image_std", CLIP_STD, nonzero=True),
        do_resize=flag("do_resize", True), do_rescale=flag("do_rescale", True),
        rescale_factor=float(rescale), do_normalize=flag("do_normalize", True),
        do_convert_rgb=flag("do_convert_rgb", True), resample=int(resample))

  def to_dict(self) -> dict[str, Any]:
    """The config in the form transformers 5 writes to ``preprocessor_config.json``."""
    d = dataclasses.asdict(self)
    d["size"] = {"shortest_edge": d.pop("min_pixels"), "longest_edge": d.pop("max_pixels")}
    d["image_mean"], d["image_std"] = list(self.image_mean), list(self.image_std)
    d["image_processor_type"] = "Qwen2VLImageProcessor"
    return d


def load_image(path: str | os.PathLike) -> Image.Image:
  """Opens an image file and decodes it now, turned upright by its EXIF orientation (as
  transformers' ``load_image`` does). Its mode is kept: :func:`preprocess` converts to RGB,
  compositing any transparency onto white like the reference processor.

  Raises:
    DataError: the file is missing or is not an image PIL can decode; one line naming it.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: image file not found")
  try:
    with Image.open(path) as im:
      im.load()
      upright = ImageOps.exif_transpose(im)
      return upright if upright is not im else im.copy()
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(f"{path}: cannot read image ({msg})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
  """RGB, with any alpha (an alpha band or a palette's transparent colour) over white."""
  if "A" in image.getbands() or image.info.get("transparency") is not None:
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
  return image.convert("RGB")


def _image_patches(image: Image.Image, config: ImageProcessorConfig, index: int
                   ) -> tuple[np.ndarray, int, int]:
  """One image's rows of ``pixel_values`` ``[gh * gw, 3 * T * P * P]`` and its patch grid."""
  if config.do_convert_rgb:
    image = _to_rgb(image)
  elif image.mode != "RGB":
    raise DataError(f"image {index}: mode {image.mode!r} with do_convert_rgb=false; expected "
                    "an RGB image")
  width, height = image.size
  p, m = config.patch_size, config.merge_size
  if config.do_resize:
    try:
      new_h, new_w = smart_resize(height, width, config.factor, config.min_pixels,
                                  config.max_pixels)
    except DataError as e:
      raise DataError(f"image {index}: {e}") from None
    # PIL works on the uint8 image, exactly as the reference's resize does.
    image = image.resize((new_w, new_h), resample=config.resample)
  elif height % config.factor or width % config.factor:
    raise DataError(f"image {index}: height x width = {height}x{width} with do_resize=false; "
                    f"expected multiples of patch_size * merge_size = {config.factor}")
  pixels = np.asarray(image)  # [H, W, 3] uint8
  if config.do_rescale:
    # Scale in float64, then store float32: the reference's order of casts.
    pixels = (pixels.astype(np.float64) * config.rescale_factor).astype(np.float32)
  if config.do_normalize:
    pixels = pixels.astype(np.float32, copy=False)
    mean = np.asarray(config.image_mean, np.float32)
    std = np.asarray(config.image_std, np.float32)
    pixels = (pixels - mean) / std
  pixels = pixels.astype(np.float32, copy=False)
  height, width = pixels.shape[:2]
  gh, gw = height // p, width // p
  # Axes: (window row, row in window, pixel row, window col, col in window, pixel col, channel).
  blocks = pixels.reshape(gh // m, m, p, gw // m, m, p, 3)
  # Rows of the output run over windows, then over the M x M patches of a window; each row
  # holds (channel, time, pixel row, pixel col).
  blocks = blocks.transpose(0, 3, 1, 4, 6, 2, 5)
  blocks = np.broadcast_to(blocks[:, :, :, :, :, None],
                           blocks.shape[:5] + (config.temporal_patch_size, p, p))
  return blocks.reshape(gh * gw, config.patch_dim), gh, gw


def preprocess(images: Sequence[Image.Image], config: ImageProcessorConfig
               ) -> tuple[np.ndarray, np.ndarray]:
  """Turns still images into the vision tower's input.

  Args:
    images: PIL images of any mode and size (each is converted to RGB when
      ``config.do_convert_rgb``).
    config: the checkpoint's :class:`ImageProcessorConfig`.

  Returns:
    ``(pixel_values, image_grid_thw)``: ``pixel_values`` float32 ``[sum of gh * gw, 3 * T * P *
    P]``, every image's patches in turn; ``image_grid_thw`` int64 ``[n, 3]``, one row ``(1, gh,
    gw)`` per image (one time step; the patch grid's height and width).

  Raises:
    DataError: no images, a non-image, or an image the resize rule rejects.
  """
  if len(images) == 0:
    raise DataError("preprocess: no images given; expected at least one")
  rows, grids = [], []
  for i, image in enumerate(images):
    if not isinstance(image, Image.Image):
      raise DataError(f"image {i}: got {type(image).__name__}; expected a PIL image")
    patches, gh, gw = _image_patches(image, config, i)
    rows.append(patches)
    grids.append((1, gh, gw))
  return np.concatenate(rows, axis=0), np.asarray(grids, dtype=np.int64)


def num_image_tokens(grid_thw: Sequence[int] | np.ndarray, merge_size: int = 2) -> int:
  """Language-model tokens one image becomes: ``t * h * w / merge_size**2``.

  Raises:
    DataError: a grid that is not three positive integers, or whose area is not a multiple of
      ``merge_size**2``.
  """
  thw = [int(v) for v in np.asarray(grid_thw).reshape(-1)]
  if len(thw) != 3 or min(thw) <= 0:
    raise DataError(f"grid_thw={thw}: expected three positive integers (t, h, w)")
  t, h, w = thw
  if (h * w) % (merge_size ** 2):
    raise DataError(f"grid_thw={thw}: h * w = {h * w} is not a multiple of "
                    f"merge_size**2 = {merge_size ** 2}")
  return t * h * w // merge_size ** 2


def expand_image_placeholders(text: str, grid_thws: Sequence[Sequence[int]] | np.ndarray,
                              image_token: str = IMAGE_TOKEN, merge_size: int = 2) -> str:
  """``text`` with its k-th ``image_token`` repeated ``num_image_tokens(grid_thws[k])`` times.

  Raises:
    DataError: the text holds a different number of placeholders than there are images; the
      message gives both counts.
  """
  pieces = text.split(image_token)
  grids = np.asarray(grid_thws).reshape(-1, 3) if len(grid_thws) else np.zeros((0, 3), int)
  if len(pieces) - 1 != len(grids):
    raise DataError(f"text has {len(pieces) - 1} {image_token} placeholder(s) but "
                    f"{len(grids)} image(s) were given; expected one placeholder per image")
  out = [pieces[0]]
  for grid, piece in zip(grids, pieces[1:]):
    out.append(image_token * num_image_tokens(grid, merge_size))
    out.append(piece)
  return "".join(out)
