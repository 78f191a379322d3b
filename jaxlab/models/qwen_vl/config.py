"""Qwen2.5-VL configuration: the text decoder's config, the vision tower's, and the special ids.

The language model of Qwen2.5-VL is a Qwen2 decoder (q/k/v biases, no output bias, head width
D / N) whose RoPE is multimodal (``mrope_section``), so its part is the decoder family's own
:class:`~jaxlab.models.decoder.config.DecoderConfig`; only the vision tower and the ids of the
image placeholder tokens are new here.

``config.json`` comes in two layouts and both are read: transformers 5 nests the language
model's fields under ``text_config`` (and the tower's under ``vision_config``), while the
checkpoints published with Qwen2.5-VL keep the text fields at the top level next to a nested
``vision_config``. Saving writes the nested layout, which transformers 5 reads back.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from jaxlab.models.decoder.config import DecoderConfig
from jaxlab.models.errors import ModelConfigError

ARCHITECTURE = "Qwen2_5_VLForConditionalGeneration"
MODEL_TYPE = "qwen2_5_vl"
# The language model's fields that transformers' Qwen2_5_VLTextConfig defaults differently
# from the plain Qwen2 config that DecoderConfig.from_hf_dict assumes.
_TEXT_DEFAULTS = {"rms_norm_eps": 1e-5, "num_key_value_heads": 8,
                  "max_position_embeddings": 32768, "rope_theta": 1_000_000.0}
# Qwen2_5_VLVisionConfig's defaults (transformers 5.25) for fields config.json may omit.
_VISION_DEFAULTS = dict(depth=32, hidden_size=3584, intermediate_size=3420, num_heads=16,
                        patch_size=14, temporal_patch_size=2, spatial_merge_size=2,
                        window_size=112, out_hidden_size=3584, in_channels=3,
                        fullatt_block_indexes=(7, 15, 23, 31), hidden_act="silu",
                        tokens_per_second=4)
VISION_NORM_EPS = 1e-6  # fixed in the reference's vision blocks and merger


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """Sizes of the Qwen2.5-VL vision tower (a ViT with windowed attention and a 2x2 merger).

  Attributes:
    depth: number of vision blocks.
    hidden_size: Dv, the tower's width.
    intermediate_size: the SwiGLU width of its MLPs.
    num_heads: attention heads (head width Dv / num_heads, a multiple of 4 for the 2-D RoPE).
    patch_size: P, pixels per patch side.
    temporal_patch_size: frames per patch (a still image is repeated this many times).
    spatial_merge_size: M; the merger folds M x M neighbouring patches into one LM token.
    window_size: the side, in pixels, of the square windows the windowed blocks attend within;
      a multiple of ``patch_size * spatial_merge_size``.
    fullatt_block_indexes: blocks that attend over the whole image instead of a window.
    out_hidden_size: the merger's output width (the language model's D).
    in_channels: image channels.
    hidden_act: the MLP activation ("silu").
    rope_theta: base wavelength of the 2-D RoPE over the patch grid.
    tokens_per_second: temporal position spacing of videos (kept so saving writes it back).
  """
  depth: int
  hidden_size: int
  intermediate_size: int
  num_heads: int
  patch_size: int = 14
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  window_size: int = 112
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  out_hidden_size: int = 3584
  in_channels: int = 3
  hidden_act: str = "silu"
  rope_theta: float = 10_000.0
  tokens_per_second: int = 4

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of "
                       f"num_heads={self.num_heads}")
    if self.head_dim % 4:
      raise ValueError(f"hidden_size / num_heads = {self.head_dim} must be a multiple of 4 "
                       "(the 2-D RoPE splits each head's rotary half between rows and columns)")
    unit = self.patch_size * self.spatial_merge_size
    if self.window_size % unit or self.window_size <= 0:
      raise ValueError(f"window_size={self.window_size} must be a positive multiple of "
                       f"patch_size * spatial_merge_size = {unit}")
    bad = [i for i in self.fullatt_block_indexes if not 0 <= i < self.depth]
    if bad:
      raise ValueError(f"fullatt_block_indexes={list(self.fullatt_block_indexes)} has "
                       f"{bad}, outside blocks 0..{self.depth - 1}")
    if self.hidden_act not in ("silu", "swish"):
      raise ValueError(f"hidden_act={self.hidden_act!r}: expected 'silu'")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Length of one flattened patch, ``C * T * P * P`` (a row of ``pixel_values``)."""
    return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

  @property
  def merge_unit(self) -> int:
    """Patches per merged token, ``M * M``."""
    return self.spatial_merge_size ** 2

  @property
  def window_units(self) -> int:
    """Window side in merged tokens."""
    return self.window_size // (self.patch_size * self.spatial_merge_size)


@dataclasses.dataclass(frozen=True)
class QwenVLConfig:
  """A Qwen2.5-VL model: the text decoder, the vision tower and the special token ids.

  Attributes:
    text: the language model (a Qwen2 decoder with ``mrope_section`` set).
    vision: the vision tower.
    image_token_id: the ``<|image_pad|>`` placeholder; each is replaced by one merged patch.
    video_token_id: the video placeholder (videos are not supported; kept for saving).
    vision_start_token_id, vision_end_token_id: ``<|vision_start|>`` / ``<|vision_end|>``.
  """
  text: DecoderConfig
  vision: VisionConfig
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653

  def __post_init__(self):
    if self.text.mrope_section is None:
      raise ValueError("the text config needs mrope_section (Qwen2.5-VL uses M-RoPE)")
    if self.vision.out_hidden_size != self.text.hidden_size:
      raise ValueError(f"vision out_hidden_size={self.vision.out_hidden_size} differs from the "
                       f"text hidden_size={self.text.hidden_size}")

  @property
  def mrope_section(self) -> tuple[int, ...]:
    return self.text.mrope_section

  @property
  def tie_word_embeddings(self) -> bool:
    return self.text.tie_word_embeddings

  @property
  def stop_token_ids(self) -> tuple[int, ...]:
    return self.text.stop_token_ids

  @property
  def remat(self) -> bool:
    """Whether the text layers and the vision blocks recompute their activations in the
    backward pass."""
    return self.text.remat

  @property
  def dtype(self) -> str:
    """The compute dtype of the whole model (the tower runs in the text model's dtype)."""
    return self.text.dtype

  def replace(self, **changes: Any) -> "QwenVLConfig":
    """A copy with fields changed; fields of the text config (``dtype``, ``param_dtype``,
    ``remat``, ...) may be given directly and go to ``text``, as a trainer changes a decoder's."""
    own = {f.name for f in dataclasses.fields(self)}
    text = {k: changes.pop(k) for k in list(changes) if k not in own}
    if text:
      changes["text"] = dataclasses.replace(changes.get("text", self.text), **text)
    return dataclasses.replace(self, **changes)

  # -- Hugging Face config.json -----------------------------------------------------------------

  @classmethod
  def from_hf_dict(cls, d: Mapping[str, Any], path: str = "config.json",
                   **overrides: Any) -> "QwenVLConfig":
    """Builds a config from a parsed Qwen2.5-VL ``config.json`` (nested or flat text fields).

    Args:
      d: the parsed JSON object.
      path: where it came from; named in every error.
      **overrides: fields of the text config to set (``dtype``, ``param_dtype``, ``remat``,
        ``eos_token_id``).

    Raises:
      ModelConfigError: a missing or unsupported field, in one line naming ``path`` and the key.
    """
    archs = d.get("architectures") or []
    if archs and archs[0] != ARCHITECTURE:
      raise ModelConfigError(f"{path}: architectures={archs!r}; expected [{ARCHITECTURE!r}]")
    if not archs and d.get("model_type") != MODEL_TYPE:
      raise ModelConfigError(f"{path}: model_type={d.get('model_type')!r}; expected "
                             f"{MODEL_TYPE!r}")
    nested = isinstance(d.get("text_config"), Mapping)
    text_d = dict(d["text_config"]) if nested else dict(d)
    where = f"{path} (text_config)" if nested else path
    for key, value in _TEXT_DEFAULTS.items():
      if text_d.get(key) is None and not (key == "rope_theta" and _has_rope_theta(text_d)):
        text_d[key] = value
    for key in ("hidden_size", "num_attention_heads"):
      if text_d.get(key) is None:
        raise ModelConfigError(f"{where}: missing required field {key!r}")
    # The Qwen2.5-VL text attention always has width hidden_size / num_heads.
    head_dim = int(text_d["hidden_size"]) // int(text_d["num_attention_heads"])
    if text_d.get("head_dim") not in (None, head_dim):
      raise ModelConfigError(f"{where}: head_dim={text_d['head_dim']!r} is not supported; "
                             f"Qwen2.5-VL uses hidden_size / num_attention_heads = {head_dim}")
    text_d.update(architectures=["Qwen2ForCausalLM"], head_dim=head_dim)
    text_d.pop("model_type", None)
    tie = d.get("tie_word_embeddings", False) or text_d.get("tie_word_embeddings", False)
    text_d["tie_word_embeddings"] = bool(tie)
    text = DecoderConfig.from_hf_dict(text_d, where, **overrides)
    if text.mrope_section is None:
      raise ModelConfigError(f"{where}: missing 'mrope_section' in rope_parameters/rope_scaling "
                             "(Qwen2.5-VL uses M-RoPE)")

    v = d.get("vision_config")
    if not isinstance(v, Mapping):
      raise ModelConfigError(f"{path}: missing 'vision_config' object")
    vwhere = f"{path} (vision_config)"
    rope = v.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", "axial")
    if rope_type != "axial":
      raise ModelConfigError(f"{vwhere}: rope_parameters.rope_type={rope_type!r}; expected "
                             "'axial'")
    fields = {k: v.get(k, default) for k, default in _VISION_DEFAULTS.items()}
    if "in_channels" not in v and "in_chans" in v:  # the published checkpoints' spelling
      fields["in_channels"] = v["in_chans"]
    for key in ("patch_size", "temporal_patch_size"):
      if not isinstance(fields[key], int):
        raise ModelConfigError(f"{vwhere}: {key}={fields[key]!r} is not supported; expected "
                               "one int")
    if fields["hidden_act"] not in ("silu", "swish"):
      raise ModelConfigError(f"{vwhere}: hidden_act={fields['hidden_act']!r} is not supported; "
                             "expected 'silu'")
    fields["fullatt_block_indexes"] = tuple(int(i) for i in fields["fullatt_block_indexes"])
    fields["rope_theta"] = float(rope.get("rope_theta", v.get("rope_theta", 10_000.0)))
    try:
      vision = VisionConfig(**fields)
    except (TypeError, ValueError) as e:
      raise ModelConfigError(f"{vwhere}: {e}") from None
    ids = {}
    for key, default in (("image_token_id", 151655), ("video_token_id", 151656),
                         ("vision_start_token_id", 151652), ("vision_end_token_id", 151653)):
      value = d.get(key, default)
      if not isinstance(value, int):
        raise ModelConfigError(f"{path}: {key}={value!r}; expected an int")
      ids[key] = value
    try:
      return cls(text=text, vision=vision, **ids)
    except ValueError as e:
      raise ModelConfigError(f"{path}: {e}") from None

  def to_hf_dict(self, torch_dtype: str | None = None) -> dict[str, Any]:
    """A nested (transformers 5) ``config.json`` object that transformers and we read back."""
    t = self.text.to_hf_dict(torch_dtype=torch_dtype)
    for key in ("architectures", "use_sliding_window", "rope_scaling", "head_dim"):
      t.pop(key, None)
    t.update(model_type="qwen2_5_vl_text", use_sliding_window=False)
    v = self.vision
    vision = {
        "model_type": "qwen2_5_vl_vision", "depth": v.depth, "hidden_size": v.hidden_size,
        "intermediate_size": v.intermediate_size, "num_heads": v.num_heads,
        "patch_size": v.patch_size, "temporal_patch_size": v.temporal_patch_size,
        "spatial_merge_size": v.spatial_merge_size, "window_size": v.window_size,
        "fullatt_block_indexes": list(v.fullatt_block_indexes),
        "out_hidden_size": v.out_hidden_size, "in_channels": v.in_channels,
        "hidden_act": v.hidden_act, "tokens_per_second": v.tokens_per_second,
        "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
    }
    return {
        "architectures": [ARCHITECTURE], "model_type": MODEL_TYPE,
        "text_config": t, "vision_config": vision,
        "image_token_id": self.image_token_id, "video_token_id": self.video_token_id,
        "vision_start_token_id": self.vision_start_token_id,
        "vision_end_token_id": self.vision_end_token_id,
        "tie_word_embeddings": self.text.tie_word_embeddings,
        "dtype": t["dtype"],
    }


def _has_rope_theta(d: Mapping[str, Any]) -> bool:
  params = d.get("rope_parameters") or d.get("rope_scaling") or {}
  return "rope_theta" in params or d.get("rope_theta") is not None
