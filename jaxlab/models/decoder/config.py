"""The decoder's configuration: named sizes, and the mapping to/from Hugging Face config.json.

One frozen, hashable dataclass describes every supported family (Llama 3, Qwen2/2.5, Qwen3);
the differences between them are options (biases, qk-norm, RoPE scaling, head tying), not
subclasses. Being hashable lets the config ride along as a static argument of ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from jaxlab.models.errors import ModelConfigError

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
_MODEL_TYPE_TO_ARCH = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
# "mrope" is transformers 4's spelling of default RoPE plus an ``mrope_section`` (Qwen2-VL).
ROPE_TYPES = ("default", "linear", "llama3", "mrope")
# Fields every config.json must state; the rest fall back to the defaults of the matching
# transformers config class (checked against transformers 5.24).
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling, as in transformers' ``rope_parameters``.

  Attributes:
    rope_type: "linear" (all frequencies divided by ``factor``) or "llama3" (low frequencies
      divided by ``factor``, high ones kept, a smooth ramp between; Llama 3.1).
    factor: the context extension factor.
    low_freq_factor: llama3 only; wavelengths above ``original_max / low_freq_factor`` are
      scaled fully.
    high_freq_factor: llama3 only; wavelengths below ``original_max / high_freq_factor`` are
      left alone.
    original_max_position_embeddings: llama3 only; the pre-training context length.
  """
  rope_type: str
  factor: float
  low_freq_factor: float | None = None
  high_freq_factor: float | None = None
  original_max_position_embeddings: int | None = None


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Sizes and options of a Llama/Qwen-style decoder.

  Attributes:
    vocab_size: V, rows of the embedding table.
    hidden_size: D, the residual stream width.
    intermediate_size: F, the SwiGLU hidden width.
    num_layers: L.
    num_heads: N, query heads.
    num_kv_heads: K, key/value heads (GQA: N is a multiple of K).
    head_dim: H, per-head width (Qwen3 decouples it from D / N).
    rope_theta: RoPE base wavelength.
    rope_scaling: None for plain RoPE, else a :class:`RopeScaling`.
    mrope_section: None, or multimodal RoPE (M-RoPE, Qwen2-VL / Qwen2.5-VL): positions may then
      come as ``P = len(mrope_section)`` rows per token (``[P, B, T]``; temporal, height, width
      for images) and the H/2 rotary frequencies are cut into consecutive chunks of these
      sizes, chunk i turning with position row i; e.g. (16, 24, 24) for H = 128. The sizes sum
      to H/2. Plain ``[B, T]`` positions (all rows equal) give exactly plain RoPE.
    rms_norm_eps: epsilon inside every RMSNorm.
    tie_word_embeddings: the output head reuses the embedding table.
    attention_bias: biases on the q/k/v projections (always on in Qwen2).
    attention_out_bias: a bias on the output projection (Llama/Qwen3 ``attention_bias``).
    qk_norm: per-head RMSNorm on queries and keys before RoPE (Qwen3).
    max_position_embeddings: the context length the model was trained for.
    architecture: the Hugging Face class name, kept so that saving writes it back.
    dtype: compute dtype of matmuls ("float32" or "bfloat16"); norms, softmax and logits are
      always computed in float32.
    param_dtype: storage dtype of the parameters.
    remat: recompute each layer's activations in the backward pass (``nnx.remat``).
    bos_token_id, eos_token_id, pad_token_id: copied through from config.json; eos may be a
      tuple (Llama 3 instruct lists several).
  """
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10_000.0
  rope_scaling: RopeScaling | None = None
  mrope_section: tuple[int, ...] | None = None
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  attention_out_bias: bool = False
  qk_norm: bool = False
  max_position_embeddings: int = 2048
  architecture: str = "LlamaForCausalLM"
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
    if self.mrope_section is not None:
      sec = self.mrope_section
      if (not isinstance(sec, tuple) or not sec
          or not all(isinstance(s, int) and s > 0 for s in sec)):
        raise ValueError(f"mrope_section={sec!r} must be a non-empty tuple of positive ints")
      if sum(sec) != self.head_dim // 2:
        raise ValueError(f"mrope_section={list(sec)} sums to {sum(sec)}, expected "
                         f"head_dim / 2 = {self.head_dim // 2}")
    if self.architecture not in SUPPORTED_ARCHITECTURES:
      raise ValueError(f"architecture={self.architecture!r} is not one of "
                       f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"{name}={getattr(self, name)!r}: expected float32, bfloat16 or "
                         "float16")

  @property
  def stop_token_ids(self) -> tuple[int, ...]:
    """The eos ids as a tuple (possibly empty)."""
    return eos_ids(self.eos_token_id)

  def replace(self, **changes: Any) -> "DecoderConfig":
    return dataclasses.replace(self, **changes)

  # -- Hugging Face config.json -----------------------------------------------------------------

  @classmethod
  def from_hf_dict(cls, d: Mapping[str, Any], path: str = "config.json",
                   **overrides: Any) -> "DecoderConfig":
    """Builds a config from a parsed Hugging Face ``config.json``.

    Args:
      d: the parsed JSON object.
      path: where it came from; named in every error.
      **overrides: fields of ours to set on top (``dtype``, ``param_dtype``, ``remat``).

    Raises:
      ModelConfigError: (a ``ValueError``) on a missing required field, an unsupported
        architecture or option, in one line naming ``path``.
    """
    archs = d.get("architectures") or []
    if archs:
      arch = archs[0]
    elif d.get("model_type") in _MODEL_TYPE_TO_ARCH:
      arch = _MODEL_TYPE_TO_ARCH[d["model_type"]]
    else:
      raise ModelConfigError(
          f"{path}: no 'architectures' (or known 'model_type'); supported: "
          f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    if arch not in SUPPORTED_ARCHITECTURES:
      raise ModelConfigError(f"{path}: unsupported architecture {arch!r}; supported: "
                             f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    for key in _REQUIRED:
      if d.get(key) is None:
        raise ModelConfigError(f"{path}: missing required field {key!r} (needed for {arch}; "
                               f"required: {', '.join(_REQUIRED)})")

    def unsupported(key, value, expected):
      raise ModelConfigError(f"{path}: {key}={value!r} is not supported for {arch}; expected "
                             f"{expected}")

    if d.get("hidden_act", "silu") not in ("silu", "swish"):
      unsupported("hidden_act", d["hidden_act"], "'silu'")
    if d.get("mlp_bias", False):
      unsupported("mlp_bias", True, "false")
    if d.get("use_sliding_window", False):
      unsupported("use_sliding_window", True, "false")
    if (d.get("pretraining_tp") or 1) != 1:
      unsupported("pretraining_tp", d["pretraining_tp"], "1")

    num_heads = int(d["num_attention_heads"])
    hidden = int(d["hidden_size"])
    # Defaults of transformers' config classes where config.json is silent.
    if arch == "Qwen3ForCausalLM":
      head_dim_default, kv_default, max_pos_default = 128, 32, 32768
    elif arch == "Qwen2ForCausalLM":
      head_dim_default, kv_default, max_pos_default = hidden // num_heads, 32, 32768
    else:
      head_dim_default, kv_default, max_pos_default = hidden // num_heads, num_heads, 2048
    head_dim = d.get("head_dim") or head_dim_default
    num_kv = d.get("num_key_value_heads") or kv_default

    theta, scaling, mrope_section = parse_rope(d, path, arch)
    attn_bias = bool(d.get("attention_bias", False))
    if arch == "Qwen2ForCausalLM":
      # Qwen2 always has q/k/v biases and never an output bias.
      qkv_bias, out_bias = True, False
    else:
      qkv_bias, out_bias = attn_bias, attn_bias
    eos = d.get("eos_token_id")
    if isinstance(eos, list):
      eos = tuple(int(e) for e in eos)
    fields = dict(
        vocab_size=int(d["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(d["intermediate_size"]),
        num_layers=int(d["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(num_kv),
        head_dim=int(head_dim),
        rope_theta=float(theta),
        rope_scaling=scaling,
        mrope_section=mrope_section,
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        attention_bias=qkv_bias,
        attention_out_bias=out_bias,
        qk_norm=arch == "Qwen3ForCausalLM",
        max_position_embeddings=int(d.get("max_position_embeddings") or max_pos_default),
        architecture=arch,
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=eos,
        pad_token_id=d.get("pad_token_id"),
    )
    fields.update(overrides)
    try:
      return cls(**fields)
    except ValueError as e:
      raise ModelConfigError(f"{path}: {e}") from None

  def to_hf_dict(self, torch_dtype: str | None = None) -> dict[str, Any]:
    """A ``config.json`` object that transformers 5.x (and our loader) reads back as-is.

    Args:
      torch_dtype: the dtype name to record for the saved weights (default ``param_dtype``).
    """
    model_type = {v: k for k, v in _MODEL_TYPE_TO_ARCH.items()}[self.architecture]
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
    if self.rope_scaling is not None:
      s = self.rope_scaling
      rope.update(rope_type=s.rope_type, factor=s.factor)
      if s.rope_type == "llama3":
        rope.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
                    original_max_position_embeddings=s.original_max_position_embeddings)
    if self.mrope_section is not None:
      rope["mrope_section"] = list(self.mrope_section)
    eos = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
    d: dict[str, Any] = {
        "architectures": [self.architecture],
        "model_type": model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": self.max_position_embeddings,
        "rms_norm_eps": self.rms_norm_eps,
        # Both spellings: transformers 5 reads rope_parameters, 4.x reads rope_theta and
        # rope_scaling.
        "rope_theta": self.rope_theta,
        "rope_parameters": rope,
        "rope_scaling": (None if self.rope_scaling is None and self.mrope_section is None
                         else rope),
        "tie_word_embeddings": self.tie_word_embeddings,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": self.pad_token_id,
        "dtype": torch_dtype or self.param_dtype,
    }
    if self.architecture == "Qwen2ForCausalLM":
      d["use_sliding_window"] = False
    else:
      if self.attention_bias != self.attention_out_bias:
        raise ValueError(f"{self.architecture} has one attention_bias flag for q/k/v and output; "
                         f"got attention_bias={self.attention_bias}, "
                         f"attention_out_bias={self.attention_out_bias}")
      d["attention_bias"] = self.attention_bias
    if self.architecture == "Qwen3ForCausalLM":
      d["use_sliding_window"] = False
    elif self.qk_norm:
      raise ValueError(f"{self.architecture} cannot express qk_norm=True; use Qwen3ForCausalLM")
    if self.architecture == "Qwen2ForCausalLM" and not (self.attention_bias and
                                                       not self.attention_out_bias):
      raise ValueError("Qwen2ForCausalLM always has q/k/v biases and no output bias")
    return d


def _parse_mrope(params: Mapping[str, Any], path: str, rope_type: str
                 ) -> tuple[int, ...] | None:
  sec = params.get("mrope_section")
  if sec is None:
    if rope_type == "mrope":
      raise ModelConfigError(f"{path}: rope_type 'mrope' needs field 'mrope_section' in "
                             "rope_parameters/rope_scaling")
    return None
  if not isinstance(sec, (list, tuple)) or not all(isinstance(s, int) for s in sec):
    raise ModelConfigError(f"{path}: mrope_section={sec!r} must be a list of ints")
  return tuple(int(s) for s in sec)


def eos_ids(eos_token_id: int | Sequence[int] | None) -> tuple[int, ...]:
  """A config's ``eos_token_id`` (None, one id or several) as a tuple of ids."""
  if eos_token_id is None:
    return ()
  if isinstance(eos_token_id, int):
    return (eos_token_id,)
  return tuple(eos_token_id)


def parse_rope(d: Mapping[str, Any], path: str, arch: str
                ) -> tuple[float, RopeScaling | None, tuple[int, ...] | None]:
  """``(theta, scaling, mrope_section)`` from v5 ``rope_parameters`` or v4 ``rope_scaling``."""
  params = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
  theta = params.get("rope_theta", d.get("rope_theta", 10_000.0))
  rope_type = params.get("rope_type", params.get("type", "default"))
  if rope_type not in ROPE_TYPES:
    raise ModelConfigError(f"{path}: unsupported rope_type {rope_type!r} for {arch}; "
                           f"supported: {', '.join(ROPE_TYPES)}")
  mrope_section = _parse_mrope(params, path, rope_type)
  if rope_type in ("default", "mrope"):
    return theta, None, mrope_section

  def need(key):
    if params.get(key) is None:
      raise ModelConfigError(f"{path}: rope_type {rope_type!r} needs field {key!r} in "
                             "rope_parameters/rope_scaling")
    return params[key]

  if rope_type == "linear":
    return theta, RopeScaling("linear", float(need("factor"))), mrope_section
  original = params.get("original_max_position_embeddings",
                        d.get("original_max_position_embeddings",
                              d.get("max_position_embeddings")))
  if original is None:
    need("original_max_position_embeddings")
  return theta, RopeScaling("llama3", float(need("factor")), float(need("low_freq_factor")),
                            float(need("high_freq_factor")), int(original)), mrope_section
