"""The looped family's configuration, and its mapping to/from HrmText's ``config.json``.

One frozen, hashable dataclass covers the prelude / recurrent core / coda layouts of the
looped-LM spec (§1.4, §1.6.1 of ``specs/looped_grounding_kaleidoscope.md``) and HRM-text's
two-stack hierarchy:

  e   = prelude(embed(x) * embedding_scale)               n_prelude blocks, run once
  s_0 = init(e)                                           zeros | trunc_normal | copy_e
  z_0 = inner_init                                        (only with an inner stack)
  for t in 1..T:                                          T = num_iterations
    if inner_layers:                                      HRM's low-level (L) stack:
      for k in 1..inner_iterations: z = post(inner(z + s))
      u = inject(s, z)                                    the core is fed the inner state
    else:
      u = inject(s, e)                                    none | add | concat_adapter | gated
    s = post(core(u))                                     n_core blocks, shared across t
  logits = head(final_norm?(coda(coda_norm?(s_T))))

``post`` is the per-iteration norm (``iter_norm``). Training options (see
:mod:`jaxlab.models.looped.modeling`): ``backprop_depth`` truncates backpropagation to the last
k outer iterations; ``train_recurrence="lognormal_poisson"`` draws the trip count per step
(Huginn); ``truncate_inner`` applies HRM's ``L_bp_cycles`` to the inner stack; ``exit_gate``
adds Ouro's per-iteration exit-probability head.

Three checkpoint formats map onto this config: HrmText (transformers), and Huginn-0125 / Raven
(``RavenForCausalLM``) and Ouro (``OuroForCausalLM``), whose classes live only in model-hub
remote code: those two are read from our reading of their equations and key layouts
(``specs/looped_grounding_kaleidoscope.md`` §1.4), format-compatible but not verified against
upstream weights. HRM-text is: no prelude / coda,
``state_init="copy_e"`` (its high-level state starts at the scaled embeddings), an inner stack
of the same size as the core, ``injection="add"``, weightless pre-norm blocks with a sigmoid
gate on the attention output, ``iter_norm="rmsnorm"`` (each stack ends with a norm) and no
final norm.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from jaxlab.core.errors import ConfigError
from jaxlab.models.decoder.config import DecoderConfig, RopeScaling, eos_ids, parse_rope
from jaxlab.models.errors import ModelConfigError

INJECTIONS = ("none", "add", "concat_adapter", "gated")
BLOCK_NORMS = ("pre", "post", "sandwich_huginn", "pre_post_ouro")
ITER_NORMS = ("none", "rmsnorm")
STATE_INITS = ("zeros", "trunc_normal", "copy_e")
TRAIN_RECURRENCES = ("fixed", "lognormal_poisson")
HRM_ARCHITECTURE = "HrmTextForCausalLM"
HRM_MODEL_TYPE = "hrm_text"
RAVEN_ARCHITECTURE = "RavenForCausalLM"  # Huginn-0125 (recpre); hub remote code only
RAVEN_MODEL_TYPE = "huginn_raven"
OURO_ARCHITECTURE = "OuroForCausalLM"  # Ouro / LoopLM; hub remote code only
OURO_MODEL_TYPE = "ouro"
# Our own format, for layouts no upstream class holds (e.g. sandwich blocks with a pre-norm
# ablation): every LoopedConfig field under "looped" in config.json, tensors named by our
# parameter paths. Read and written here only.
NATIVE_ARCHITECTURE = "JaxlabLoopedForCausalLM"
NATIVE_MODEL_TYPE = "jaxlab_looped"
ARCHITECTURES = (HRM_ARCHITECTURE, RAVEN_ARCHITECTURE, OURO_ARCHITECTURE, NATIVE_ARCHITECTURE)
_MODEL_TYPES = {HRM_MODEL_TYPE: HRM_ARCHITECTURE, RAVEN_MODEL_TYPE: RAVEN_ARCHITECTURE,
                OURO_MODEL_TYPE: OURO_ARCHITECTURE, NATIVE_MODEL_TYPE: NATIVE_ARCHITECTURE}
# Fields the native config.json does not store: the dtypes are the loader's choice.
_NATIVE_SKIP = ("dtype", "param_dtype", "architecture")
_HRM_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads")


class LoopedConfigError(ConfigError, ValueError):
  """A looped-model config field is out of range or names an unknown option (one line)."""


@dataclasses.dataclass(frozen=True)
class LoopedConfig:
  """Sizes and options of a looped (recurrent-depth) language model.

  Attributes:
    vocab_size: V.
    hidden_size: D, width of the residual stream and of every state.
    intermediate_size: F, the SwiGLU hidden width.
    num_heads: N query heads; num_kv_heads: K key/value heads; head_dim: H.
    n_prelude, n_core, n_coda: unique blocks before, inside (shared across iterations) and
      after the recurrence.
    num_iterations: T, default trip count of the recurrence (a call may override it).
    inner_layers: blocks of an optional inner stack run ``inner_iterations`` times per outer
      iteration (HRM's L module); 0 for none.
    inner_iterations: HRM's ``L_cycles``.
    injection: how the core's input combines the state ``s`` with ``e`` (or with the inner
      state ``z``): "none" ``s``; "add" ``s + e``; "concat_adapter" ``W [s; e]``
      (``W: 2D -> D``, Huginn); "gated" ``g * s + (1 - g) * e`` with
      ``g = sigmoid(W [s; e] + b)``, a per-channel convex gate.
    block_norm: norm placement inside every block: "pre" ``x + f(n(x))``; "post"
      ``n(x + f(x))``; "sandwich_huginn" ``n2(x + f(n1(x)))``; "pre_post_ouro"
      ``x + n2(f(n1(x)))``; ``f`` is attention, then the MLP.
    iter_norm: "rmsnorm" normalises the state after each iteration (Ouro; HRM's stack norms),
      "none" leaves it.
    norm_weights: False makes every norm parameter-free (HRM).
    attn_output_gate: multiply each head's output by ``sigmoid(x W_g)`` before the output
      projection (HRM).
    state_init: initial state ``s_0``: "zeros", "copy_e" (``s_0 = e``) or "trunc_normal"
      (normal(0, ``state_init_std``) clipped at 3 std, drawn per token from the call's key
      folded with the token's position, so cached decoding draws the same values).
    state_init_std: see ``state_init``.
    state_seed: the key used when a call passes none.
    embedding_scale: multiplies token (and passed-in) embeddings.
    final_norm: a norm after the coda (before the head).
    coda_norm: apply that same final norm also before the coda (Huginn uses ln_f twice).
    rms_norm_eps, rope_theta, rope_scaling, max_position_embeddings: as the decoder's.
    attention_bias: biases on q/k/v, the output projection and the gate.
    tie_word_embeddings: the head reuses the embedding table.
    architecture: the checkpoint class this config was read from ("HrmTextForCausalLM",
      "RavenForCausalLM", "OuroForCausalLM") or None; only HrmText is written back on save.
    initializer_range, prefix_lm, bp_cycles: HrmText fields kept to write config.json back
      (``bp_cycles`` is its ``L_bp_cycles``; ``prefix_lm`` only matters when token types are
      passed, which we do not support).
    backprop_depth: k, the truncation window of backpropagation through the recurrence: the
      state entering the last k outer iterations is a constant for the gradient (Huginn's
      mean backprop depth). None backpropagates through every iteration.
    train_recurrence: how a training step picks its trip count: "fixed" (``num_iterations``)
      or "lognormal_poisson" (Huginn: ``1 + Poisson(tau)``, ``tau ~ LogNormal`` with mean
      ``max(num_iterations, backprop_depth)`` and log-std ``recurrence_sigma``; needs
      ``backprop_depth``). See :func:`jaxlab.models.looped.modeling.sample_recurrence`.
    recurrence_sigma: the log-normal's sigma.
    truncate_inner: HRM's ``L_bp_cycles`` rule on the inner stack: in outer iteration h only
      the last ``bp_cycles`` (left-padded with 1 to ``num_iterations`` entries) inner
      iterations carry gradients (transformers' HrmText always applies it).
    exit_gate: Ouro's exit head: ``lambda_t = sigmoid(w . s_t + b)`` on every iterate.
    dtype, param_dtype: compute and storage dtypes.
    bos_token_id, eos_token_id, pad_token_id: copied through.
  """
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  n_prelude: int = 0
  n_core: int = 1
  n_coda: int = 0
  num_iterations: int = 1
  inner_layers: int = 0
  inner_iterations: int = 1
  injection: str = "add"
  block_norm: str = "pre"
  iter_norm: str = "none"
  norm_weights: bool = True
  attn_output_gate: bool = False
  state_init: str = "zeros"
  state_init_std: float = 0.02
  state_seed: int = 0
  embedding_scale: float = 1.0
  final_norm: bool = True
  coda_norm: bool = False
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10_000.0
  rope_scaling: RopeScaling | None = None
  max_position_embeddings: int = 2048
  attention_bias: bool = False
  tie_word_embeddings: bool = False
  architecture: str | None = None
  initializer_range: float = 0.02
  prefix_lm: bool = True
  bp_cycles: tuple[int, ...] = (2,)
  dtype: str = "float32"
  param_dtype: str = "float32"
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None
  backprop_depth: int | None = None
  train_recurrence: str = "fixed"
  recurrence_sigma: float = 0.5
  truncate_inner: bool = False
  exit_gate: bool = False

  def __post_init__(self):
    def bad(key, expected):
      raise LoopedConfigError(f"looped config: {key}={getattr(self, key)!r} is invalid; "
                              f"expected {expected}")

    for key, options in (("injection", INJECTIONS), ("block_norm", BLOCK_NORMS),
                         ("iter_norm", ITER_NORMS), ("state_init", STATE_INITS),
                         ("train_recurrence", TRAIN_RECURRENCES)):
      if getattr(self, key) not in options:
        bad(key, "one of " + ", ".join(options))
    if self.num_iterations < 1:
      bad("num_iterations", "an int >= 1")
    if self.inner_layers and self.inner_iterations < 1:
      bad("inner_iterations", "an int >= 1 when inner_layers > 0")
    for key in ("n_prelude", "n_coda", "inner_layers"):
      if getattr(self, key) < 0:
        bad(key, "an int >= 0")
    if self.n_core < 1:
      bad("n_core", "an int >= 1")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_heads", "num_kv_heads",
                "head_dim"):
      if getattr(self, key) < 1:
        bad(key, "an int >= 1")
    if self.num_heads % self.num_kv_heads:
      bad("num_kv_heads", f"a divisor of num_heads={self.num_heads}")
    if self.head_dim % 2:
      bad("head_dim", "an even int (RoPE)")
    if self.state_init_std < 0:
      bad("state_init_std", "a float >= 0")
    if self.injection == "none" and self.state_init != "copy_e":
      bad("state_init", "'copy_e' when injection='none' (with no injection the prompt reaches "
          "the recurrence only through s_0 = e; any other s_0 leaves the model blind to it)")
    if self.coda_norm and not self.final_norm:
      bad("coda_norm", "False when final_norm is False (it reuses the final norm)")
    for key in ("dtype", "param_dtype"):
      if getattr(self, key) not in ("float32", "bfloat16", "float16"):
        bad(key, "float32, bfloat16 or float16")
    if self.architecture not in (None,) + ARCHITECTURES:
      bad("architecture", "None or one of " + ", ".join(ARCHITECTURES))
    if self.backprop_depth is not None and self.backprop_depth < 1:
      bad("backprop_depth", "None or an int >= 1 (the truncation window)")
    if self.train_recurrence == "lognormal_poisson" and self.backprop_depth is None:
      bad("train_recurrence", "'fixed' when backprop_depth is None (lognormal_poisson needs "
          "the window)")
    if not self.recurrence_sigma > 0:
      bad("recurrence_sigma", "a float > 0")
    if self.truncate_inner and (not self.bp_cycles or min(self.bp_cycles) < 0):
      bad("bp_cycles", "a non-empty tuple of ints >= 0 when truncate_inner is True")

  # -- derived ----------------------------------------------------------------------------------

  @property
  def slots_per_iteration(self) -> int:
    """Block applications per outer iteration: the inner stack's runs, then the core."""
    return self.inner_layers * self.inner_iterations + self.n_core

  @property
  def effective_depth(self) -> int:
    return self.n_prelude + self.num_iterations * self.slots_per_iteration + self.n_coda

  @property
  def block_config(self) -> DecoderConfig:
    """The decoder config its attention / MLP / RoPE blocks are built from."""
    return DecoderConfig(
        vocab_size=self.vocab_size, hidden_size=self.hidden_size,
        intermediate_size=self.intermediate_size,
        num_layers=self.n_prelude + self.n_core + self.n_coda + self.inner_layers,
        num_heads=self.num_heads, num_kv_heads=self.num_kv_heads, head_dim=self.head_dim,
        rope_theta=self.rope_theta, rope_scaling=self.rope_scaling,
        rms_norm_eps=self.rms_norm_eps, attention_bias=self.attention_bias,
        attention_out_bias=self.attention_bias,
        max_position_embeddings=self.max_position_embeddings, dtype=self.dtype,
        param_dtype=self.param_dtype)

  @property
  def stop_token_ids(self) -> tuple[int, ...]:
    return eos_ids(self.eos_token_id)

  def replace(self, **changes: Any) -> "LoopedConfig":
    return dataclasses.replace(self, **changes)

  @property
  def is_hrm_text(self) -> bool:
    return not self.hrm_mismatches()

  def hrm_mismatches(self) -> list[str]:
    """Fields that keep this config from being written as an HrmText checkpoint."""
    want = dict(n_prelude=0, n_coda=0, inner_layers=self.n_core, injection="add",
                block_norm="pre", iter_norm="rmsnorm", norm_weights=False,
                attn_output_gate=True, state_init="copy_e", final_norm=False, coda_norm=False,
                num_kv_heads=self.num_heads)
    return [f"{k}={getattr(self, k)!r} (HrmText needs {v!r})" for k, v in want.items()
            if getattr(self, k) != v]

  # -- HrmText config.json ----------------------------------------------------------------------

  def inner_nograd_counts(self, num_iterations: int | None = None) -> tuple[int, ...]:
    """Per outer iteration, how many leading inner iterations carry no gradient.

    HrmText's rule: ``bp_cycles`` left-padded with 1 to the trip count gives the inner
    iterations with gradients in each outer iteration; all zeros unless ``truncate_inner``.
    """
    t = num_iterations or self.num_iterations
    if not (self.truncate_inner and self.inner_layers):
      return (0,) * t
    raw = list(self.bp_cycles)
    padded = [1] * max(0, t - len(raw)) + raw
    return tuple(max(self.inner_iterations - padded[h], 0) for h in range(t))

  # -- config.json --------------------------------------------------------------------------------

  @classmethod
  def from_hf_dict(cls, d: Mapping[str, Any], path: str = "config.json",
                   **overrides: Any) -> "LoopedConfig":
    """A config from a parsed ``config.json`` of HrmText, Huginn (Raven) or Ouro.

    The architecture is ``architectures[0]``, else looked up from ``model_type``
    (``hrm_text``, ``huginn_raven``, ``ouro``).

    Raises:
      ModelConfigError: unknown architecture, missing field or an option we do not implement,
        naming ``path`` and the field.
    """
    archs = d.get("architectures") or []
    arch = archs[0] if archs else _MODEL_TYPES.get(d.get("model_type"))
    if arch not in ARCHITECTURES:
      raise ModelConfigError(f"{path}: architecture {arch!r} is not a looped checkpoint format "
                             f"we read; supported: {', '.join(ARCHITECTURES)}")
    build = {HRM_ARCHITECTURE: _hrm_fields, RAVEN_ARCHITECTURE: _raven_fields,
             OURO_ARCHITECTURE: _ouro_fields, NATIVE_ARCHITECTURE: _native_fields}[arch]
    fields = build(d, path, arch)
    fields.update(overrides)
    try:
      return cls(**fields)
    except ValueError as e:
      raise ModelConfigError(f"{path}: {e}") from None

  def to_hf_dict(self, torch_dtype: str | None = None) -> dict[str, Any]:
    """An HrmText ``config.json`` object that transformers 5.x reads back.

    Raises:
      LoopedConfigError: the config is not HrmText-shaped (names the first field at fault).
    """
    bad = self.hrm_mismatches()
    if bad:
      raise LoopedConfigError(f"looped config cannot be saved as {HRM_ARCHITECTURE}: {bad[0]}"
                              + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
    if self.rope_scaling is not None:
      s = self.rope_scaling
      rope.update(rope_type=s.rope_type, factor=s.factor)
      if s.rope_type == "llama3":
        rope.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
                    original_max_position_embeddings=s.original_max_position_embeddings)
    eos = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
    per_stack = self.n_core
    return {
        "architectures": [HRM_ARCHITECTURE],
        "model_type": HRM_MODEL_TYPE,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_attention_heads": self.num_heads,
        "head_dim": self.head_dim,
        "num_layers_per_stack": per_stack,
        # transformers' inflated count: one KV slot per attention call of the recurrence.
        "num_hidden_layers": per_stack * self.num_iterations * (self.inner_iterations + 1),
        "H_cycles": self.num_iterations,
        "L_cycles": self.inner_iterations,
        "L_bp_cycles": list(self.bp_cycles),
        "embedding_scale": self.embedding_scale,
        "initializer_range": self.initializer_range,
        "prefix_lm": self.prefix_lm,
        "hidden_act": "silu",
        "mlp_bias": False,
        "attention_bias": self.attention_bias,
        "attention_dropout": 0.0,
        "max_position_embeddings": self.max_position_embeddings,
        "rms_norm_eps": self.rms_norm_eps,
        "rope_parameters": rope,
        "tie_word_embeddings": self.tie_word_embeddings,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": self.pad_token_id,
        "use_cache": True,
        "dtype": torch_dtype or self.param_dtype,
    }


  def to_native_dict(self, torch_dtype: str | None = None) -> dict[str, Any]:
    """Our ``config.json`` object: every field under ``"looped"`` (any layout)."""
    fields = {}
    for f in dataclasses.fields(self):
      if f.name in _NATIVE_SKIP:
        continue
      v = getattr(self, f.name)
      if f.name == "rope_scaling" and v is not None:
        v = dataclasses.asdict(v)
      fields[f.name] = list(v) if isinstance(v, tuple) else v
    eos = self.eos_token_id
    return {"architectures": [NATIVE_ARCHITECTURE], "model_type": NATIVE_MODEL_TYPE,
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "bos_token_id": self.bos_token_id, "pad_token_id": self.pad_token_id,
            "eos_token_id": list(eos) if isinstance(eos, tuple) else eos,
            "dtype": torch_dtype or self.param_dtype, "looped": fields}


def huginn_like(vocab_size: int, hidden_size: int = 64, num_heads: int = 4, n_prelude: int = 1,
                n_core: int = 2, n_coda: int = 1, num_iterations: int = 4,
                **overrides: Any) -> LoopedConfig:
  """A miniature Huginn layout (spec §1.6.1 defaults): sandwich blocks, concat adapter,
  truncated-normal ``s_0`` with std ``sqrt(2 / (5 D))``, embeddings scaled by ``sqrt(D)``."""
  fields = dict(vocab_size=vocab_size, hidden_size=hidden_size,
                intermediate_size=4 * hidden_size, num_heads=num_heads, num_kv_heads=num_heads,
                head_dim=hidden_size // num_heads, n_prelude=n_prelude, n_core=n_core,
                n_coda=n_coda, num_iterations=num_iterations, injection="concat_adapter",
                block_norm="sandwich_huginn", state_init="trunc_normal",
                state_init_std=math.sqrt(2 / (5 * hidden_size)),
                embedding_scale=math.sqrt(hidden_size), coda_norm=True,
                tie_word_embeddings=True)
  fields.update(overrides)
  return LoopedConfig(**fields)


def _require(d: Mapping[str, Any], path: str, arch: str, *keys: str) -> None:
  for key in keys:
    if d.get(key) is None:
      raise ModelConfigError(f"{path}: missing required field {key!r} (needed for {arch})")


def _eos(d: Mapping[str, Any]):
  eos = d.get("eos_token_id")
  return tuple(int(e) for e in eos) if isinstance(eos, list) else eos


def _hrm_fields(d: Mapping[str, Any], path: str, arch: str) -> dict[str, Any]:
  """LoopedConfig fields of an HrmText ``config.json`` (transformers 5.x).

  HrmText stores the per-stack block count in ``num_layers_per_stack`` and an inflated
  ``num_hidden_layers`` (one KV slot per attention call); a legacy file without the former
  holds the per-stack count in ``num_hidden_layers``. ``L_bp_cycles`` is applied to the
  inner stack's gradients (``truncate_inner``), as transformers does.
  """
  _require(d, path, arch, *_HRM_REQUIRED)

  def unsupported(key, expected):
    raise ModelConfigError(f"{path}: {key}={d[key]!r} is not supported for {arch}; "
                           f"expected {expected}")

  if d.get("hidden_act", "silu") not in ("silu", "swish"):
    unsupported("hidden_act", "'silu'")
  if d.get("mlp_bias", False):
    unsupported("mlp_bias", "false")
  per_stack = d.get("num_layers_per_stack") or d.get("num_hidden_layers")
  if per_stack is None:
    raise ModelConfigError(f"{path}: missing 'num_layers_per_stack' (or "
                           "'num_hidden_layers') for HrmTextForCausalLM")
  heads = int(d["num_attention_heads"])
  init_range = float(d.get("initializer_range", 0.02))
  scale = d.get("embedding_scale")
  theta, scaling, mrope = parse_rope(d, path, arch)
  if mrope is not None:
    raise ModelConfigError(f"{path}: mrope_section is not supported for {arch}")
  eos = d.get("eos_token_id")
  if isinstance(eos, list):
    eos = tuple(int(e) for e in eos)
  fields = dict(
      vocab_size=int(d["vocab_size"]), hidden_size=int(d["hidden_size"]),
      intermediate_size=int(d["intermediate_size"]), num_heads=heads, num_kv_heads=heads,
      head_dim=int(d.get("head_dim") or 128),
      n_prelude=0, n_core=int(per_stack), n_coda=0,
      num_iterations=int(d.get("H_cycles", 2)), inner_layers=int(per_stack),
      inner_iterations=int(d.get("L_cycles", 3)), injection="add", block_norm="pre",
      iter_norm="rmsnorm", norm_weights=False, attn_output_gate=True, state_init="copy_e",
      embedding_scale=float(1.0 / init_range if scale is None else scale),
      final_norm=False, rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
      rope_theta=float(theta), rope_scaling=scaling,
      max_position_embeddings=int(d.get("max_position_embeddings") or 2048),
      attention_bias=bool(d.get("attention_bias", False)),
      tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
      architecture=arch, initializer_range=init_range,
      prefix_lm=bool(d.get("prefix_lm", True)),
      bp_cycles=tuple(int(x) for x in (d.get("L_bp_cycles") or [2])),
      bos_token_id=d.get("bos_token_id"), eos_token_id=eos,
      pad_token_id=d.get("pad_token_id"), truncate_inner=True)
  return fields



def _native_fields(d: Mapping[str, Any], path: str, arch: str) -> dict[str, Any]:
  """LoopedConfig fields of our own ``config.json`` (:meth:`LoopedConfig.to_native_dict`)."""
  fields = d.get("looped")
  if not isinstance(fields, Mapping):
    raise ModelConfigError(f"{path}: missing object 'looped' (the config fields of {arch})")
  known = {f.name for f in dataclasses.fields(LoopedConfig)} - set(_NATIVE_SKIP)
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ModelConfigError(f"{path}: 'looped.{unknown[0]}' is not a looped config field")
  _require(fields, f"{path} 'looped'", arch, "vocab_size", "hidden_size", "intermediate_size",
           "num_heads", "num_kv_heads", "head_dim")
  out = dict(fields)
  for key in ("bp_cycles", "eos_token_id"):
    if isinstance(out.get(key), list):
      out[key] = tuple(int(x) for x in out[key])
  if out.get("rope_scaling") is not None:
    out["rope_scaling"] = RopeScaling(**out["rope_scaling"])
  out["architecture"] = arch
  return out


def _unsupported(d: Mapping[str, Any], path: str, arch: str, key: str, expected: str):
  raise ModelConfigError(f"{path}: {key}={d[key]!r} is not supported for {arch}; "
                         f"expected {expected}")


def _raven_fields(d: Mapping[str, Any], path: str, arch: str) -> dict[str, Any]:
  """LoopedConfig fields of a Huginn-0125 / Raven (``recpre``) ``config.json``.

  Our reading of the format (spec §1.4.2): sizes in ``n_embd``, ``n_heads`` (or
  ``num_attention_heads``), ``num_key_value_heads``, ``intermediate_size``,
  ``padded_vocab_size`` (the embedding's row count; ``vocab_size`` when absent); the layout in
  ``n_layers_in_prelude`` / ``n_layers_in_recurrent_block`` / ``n_layers_in_coda``; the default
  trip count ``mean_recurrence`` and the backprop window ``mean_backprop_depth``; ``norm_eps``,
  ``rope_base``, ``block_size`` (context), ``tie_embeddings``, ``qk_bias`` (q and k biases
  only), ``bias`` (on the adapter), and ``init_values`` with ``std`` (of the random initial
  state) and ``embed_scale``. Format-compatible, not verified against upstream weights.
  """
  heads_key = "n_heads" if d.get("n_heads") is not None else "num_attention_heads"
  _require(d, path, arch, "n_embd", heads_key, "intermediate_size", "n_layers_in_prelude",
           "n_layers_in_recurrent_block", "n_layers_in_coda")
  vocab = d.get("padded_vocab_size") or d.get("vocab_size")
  if vocab is None:
    _require(d, path, arch, "padded_vocab_size")
  fixed = {"injection_type": ("linear",), "state_init": ("like-init",),
           "block_class_name": ("SandwichBlock",), "mlp_class_name": ("GatedMLP",),
           "nonlin_name": ("SiLU",), "norm_class_name": ("RMSNorm", "RMSNorm_llama")}
  for key, ok in fixed.items():
    if d.get(key) is not None and d[key] not in ok:
      _unsupported(d, path, arch, key, " or ".join(repr(o) for o in ok))
  if d.get("bias"):
    _unsupported(d, path, arch, "bias", "false (a bias on the adapter is not implemented)")
  if d.get("test_time_noise"):
    _unsupported(d, path, arch, "test_time_noise", "0")
  if d.get("rope_scaling"):
    _unsupported(d, path, arch, "rope_scaling", "null")
  d_model, heads = int(d["n_embd"]), int(d[heads_key])
  kv = int(d.get("num_key_value_heads") or heads)
  head_dim = int(d.get("head_dim") or d_model // heads)
  if head_dim * heads != d_model:
    _unsupported(d, path, arch, "head_dim" if d.get("head_dim") else heads_key,
                 f"head_dim * n_heads == n_embd = {d_model}")
  qk_bias = bool(d.get("qk_bias", False))
  if qk_bias and kv != heads:
    _unsupported(d, path, arch, "num_key_value_heads",
                 f"{heads} (= n_heads) when qk_bias is true")
  init = dict(d.get("init_values") or {})
  emb_scale = float(init.get("embed_scale", 1.0))
  std = float(init.get("std", math.sqrt(2 / (5 * d_model))))
  depth = d.get("mean_backprop_depth")
  return dict(
      vocab_size=int(vocab), hidden_size=d_model, intermediate_size=int(d["intermediate_size"]),
      num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
      n_prelude=int(d["n_layers_in_prelude"]), n_core=int(d["n_layers_in_recurrent_block"]),
      n_coda=int(d["n_layers_in_coda"]), num_iterations=int(d.get("mean_recurrence", 32)),
      injection="concat_adapter", block_norm="sandwich_huginn", iter_norm="none",
      # The initial state is std-truncated-normal, then scaled like the embeddings.
      state_init="trunc_normal" if std > 0 else "zeros", state_init_std=std * emb_scale,
      embedding_scale=emb_scale, final_norm=True, coda_norm=True,
      rms_norm_eps=float(d.get("norm_eps", 1e-6)),
      rope_theta=float(d.get("rope_base", d.get("rope_theta", 50_000.0))),
      max_position_embeddings=int(d.get("block_size") or d.get("max_position_embeddings")
                                  or 4096),
      # q/k biases; the v / output biases our attention then has are loaded as zeros.
      attention_bias=qk_bias, tie_word_embeddings=bool(d.get("tie_embeddings", True)),
      architecture=arch, backprop_depth=int(depth) if depth else None,
      train_recurrence="lognormal_poisson" if depth else "fixed",
      bos_token_id=d.get("bos_token_id"), eos_token_id=_eos(d),
      pad_token_id=d.get("pad_token_id"))


def _ouro_fields(d: Mapping[str, Any], path: str, arch: str) -> dict[str, Any]:
  """LoopedConfig fields of an Ouro (LoopLM) ``config.json``.

  Our reading of the format (spec §1.4.3): a Llama-shaped stack (``hidden_size``,
  ``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``,
  ``intermediate_size``, ``rms_norm_eps``, rope fields) run ``total_ut_steps`` times, each
  pass ending in the final norm whose output is the next pass's input; four norms per block
  and an exit-gate head. Sliding-window layers are not implemented. Format-compatible, not
  verified against upstream weights.
  """
  _require(d, path, arch, "vocab_size", "hidden_size", "intermediate_size",
           "num_hidden_layers", "num_attention_heads")
  if d.get("hidden_act", "silu") not in ("silu", "swish"):
    _unsupported(d, path, arch, "hidden_act", "'silu'")
  for key in ("attention_bias", "mlp_bias", "use_sliding_window"):
    if d.get(key):
      _unsupported(d, path, arch, key, "false")
  if "sliding_attention" in (d.get("layer_types") or []):
    _unsupported(d, path, arch, "layer_types", "only 'full_attention' layers")
  theta, scaling, mrope = parse_rope(d, path, arch)
  if mrope is not None:
    raise ModelConfigError(f"{path}: mrope_section is not supported for {arch}")
  d_model, heads = int(d["hidden_size"]), int(d["num_attention_heads"])
  return dict(
      vocab_size=int(d["vocab_size"]), hidden_size=d_model,
      intermediate_size=int(d["intermediate_size"]), num_heads=heads,
      num_kv_heads=int(d.get("num_key_value_heads") or heads),
      head_dim=int(d.get("head_dim") or d_model // heads),
      n_prelude=0, n_core=int(d["num_hidden_layers"]), n_coda=0,
      num_iterations=int(d.get("total_ut_steps", 4)), injection="none",
      block_norm="pre_post_ouro", iter_norm="rmsnorm", state_init="copy_e",
      embedding_scale=1.0, final_norm=False, rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
      rope_theta=float(theta), rope_scaling=scaling,
      max_position_embeddings=int(d.get("max_position_embeddings") or 2048),
      tie_word_embeddings=bool(d.get("tie_word_embeddings", False)), architecture=arch,
      exit_gate=True, bos_token_id=d.get("bos_token_id"), eos_token_id=_eos(d),
      pad_token_id=d.get("pad_token_id"))
