"""The Llama 3 / Qwen2 / Qwen3 decoder in Flax NNX, with an explicit, functional KV cache.

Shape letters used in names: B batch, T new tokens, S cache slots (or keys), D hidden, N query
heads, K key/value heads, G = N / K query heads per kv head, H head width, F SwiGLU width,
V vocabulary, L layers.

Precision: parameters are stored in ``config.param_dtype`` and matmuls run in
``config.dtype``; RMSNorm statistics, RoPE angles, attention softmax and the output logits are
always float32 (matmuls that feed them accumulate in float32).

Masks and positions: ``mask_bt`` marks real tokens (1) and padding (0). Batches are LEFT-padded
so that every row's next token lands in the same cache slot; the RoPE position of a token is
the number of real tokens before it in its row, so the same prompt gets the same positions
whatever its padding. With M-RoPE (``config.mrope_section``) a token may carry P positions
(``[P, B, T]``: temporal, height, width for image patches), see :func:`rope_cos_sin`.

Inputs: token ids ``[B, T]``, or embeddings ``[B, T, D]`` in their place (e.g. image features
spliced between text embeddings, see :meth:`Decoder.embed`); the output can include the
residual stream after every layer (``return_hidden_states=True``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab.models.decoder.config import DecoderConfig

_INIT_STD = 0.02  # transformers' initializer_range for all three families


def _normal(rngs: nnx.Rngs, shape, dtype):
  return _INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32).astype(dtype)


def dense(x: jax.Array, w: jax.Array, in_dims: int = 1, preferred_element_type=None) -> jax.Array:
  """``x [..., *in] @ w [*in, *out] -> [..., *out]`` as one 2-D matmul, the leading axes of
  ``x`` flattened into rows (``in_dims``: how many trailing axes of ``x`` are contracted).

  The same products as ``jnp.einsum``, but XLA:CPU computes the weight gradient of a matmul
  whose rows span two axes (``[B, T, D]``) through transposed copies of the activations and of
  their gradients: a SwiGLU forward + backward on ``[32, 567, 128]`` rows took 2.4x as long as
  on the same rows as ``[18144, 128]`` (752 vs 307 ms, 2-core CPU). Every projection of the
  model families goes through here.
  """
  k = math.prod(x.shape[x.ndim - in_dims:])
  out = w.shape[in_dims:]
  y = jnp.dot(x.reshape(-1, k), w.reshape(k, -1), preferred_element_type=preferred_element_type)
  return y.reshape(*x.shape[:x.ndim - in_dims], *out)


# -- KV cache -------------------------------------------------------------------------------------


@flax.struct.dataclass
class KVCache:
  """Preallocated keys and values of every layer, plus which slots hold real tokens.

  A plain pytree: pass it into the model and take the updated one out, so it can live inside
  ``jit``/``while_loop`` carries, be donated, and be sharded like any array.

  Attributes:
    k: per layer, keys ``[B, K, S, H]`` (RoPE already applied): kv heads before slots, the
      layout the attention products read, so a decode step reads each cached byte once
      instead of first copying the cache into that layout (as ``[B, S, K, H]`` made XLA do
      at every step and layer).
    v: per layer, values ``[B, K, S, H]``.
    mask_bs: ``[B, S]`` bool, slot holds a real (non-pad) token.
    index: ``[]`` int32, the next slot to write; slots ``>= index`` are ignored.
  """
  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  mask_bs: jax.Array
  index: jax.Array

  @classmethod
  def init(cls, config: DecoderConfig, batch: int, max_len: int,
           dtype: jnp.dtype | str | None = None) -> "KVCache":
    """An empty cache of ``max_len`` slots, in the compute dtype unless told otherwise."""
    dtype = jnp.dtype(dtype or config.dtype)
    shape = (batch, config.num_kv_heads, max_len, config.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return cls(k=zeros, v=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
               mask_bs=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32))

  @property
  def max_len(self) -> int:
    return self.mask_bs.shape[1]


# -- building blocks ------------------------------------------------------------------------------


class RMSNorm(nnx.Module):
  """``x / rms(x) * scale``, computed in float32 whatever the input dtype.

  ``weighted=False`` drops the learned scale (a parameter-free norm, as in HRM-text).
  """

  def __init__(self, dim: int, eps: float, param_dtype, weighted: bool = True):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype)) if weighted else None

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.eps)
    if self.scale is not None:
      y = y * self.scale[...].astype(jnp.float32)
    return y.astype(x.dtype)


@functools.lru_cache(maxsize=64)
def rope_inv_freq(config: DecoderConfig) -> np.ndarray:
  """Inverse RoPE frequencies ``[H/2]`` (float32) with the config's scaling applied.

  Computed in float32 like transformers, so that positions map to the same angles.
  """
  dim = config.head_dim
  exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
  inv = (np.float32(1.0) / np.power(np.float32(config.rope_theta), exponents)).astype(np.float32)
  s = config.rope_scaling
  if s is None:
    return inv
  if s.rope_type == "linear":
    # Dividing frequencies by the factor == dividing positions by it (position interpolation).
    return (inv / np.float32(s.factor)).astype(np.float32)
  if s.rope_type != "llama3":
    raise ValueError(f"unsupported rope_type {s.rope_type!r}")
  # Llama 3.1: frequencies whose wavelength exceeds the pre-training context / low_freq_factor
  # are interpolated by `factor`; those shorter than context / high_freq_factor are kept; in
  # between, a ramp linear in context/wavelength blends the two.
  ctx = float(s.original_max_position_embeddings)
  wavelen = (2 * math.pi / inv).astype(np.float32)
  long_wave = wavelen > ctx / s.low_freq_factor
  short_wave = wavelen < ctx / s.high_freq_factor
  scaled = np.where(long_wave, inv / np.float32(s.factor), inv).astype(np.float32)
  ramp = ((ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor))
  ramp = ramp.astype(np.float32)
  blended = ((1 - ramp) * scaled / np.float32(s.factor) + ramp * scaled).astype(np.float32)
  medium = ~short_wave & ~long_wave
  return np.where(medium, blended, scaled).astype(np.float32)


@functools.lru_cache(maxsize=64)
def mrope_rows(config: DecoderConfig) -> np.ndarray:
  """``[H/2]`` int: the position row each rotary frequency turns with under M-RoPE.

  Frequency ``j`` belongs to chunk ``i`` of ``config.mrope_section`` (consecutive chunks of
  those sizes), and chunk ``i`` reads position row ``i``: (2, 3, 3) gives 0 0 1 1 1 2 2 2.
  """
  if config.mrope_section is None:
    raise ValueError("positions with a leading row axis [P, B, T] need config.mrope_section "
                     "(M-RoPE); this config has none: pass positions [B, T]")
  sec = config.mrope_section
  return np.repeat(np.arange(len(sec)), sec)


def rope_cos_sin(config: DecoderConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``cos, sin`` of shape ``[B, T, H/2]`` (float32) for integer positions.

  Args:
    config: gives the frequencies (:func:`rope_inv_freq`) and, for M-RoPE, the sections.
    positions: ``[B, T]`` (one position per token), or ``[P, B, T]`` with
      ``P = len(config.mrope_section)``: frequency ``j`` then turns by row
      ``mrope_rows(config)[j]`` of the positions (Qwen2-VL's multimodal RoPE). Each angle is
      the float32 product of one position and one frequency, as in transformers, so equal rows
      give exactly plain RoPE.
  """
  inv_h = jnp.asarray(rope_inv_freq(config))
  if positions.ndim == 3:
    rows_h = mrope_rows(config)
    if positions.shape[0] != len(config.mrope_section):
      raise ValueError(f"M-RoPE positions have {positions.shape[0]} rows (shape "
                       f"{list(positions.shape)}), expected len(mrope_section) = "
                       f"{len(config.mrope_section)}")
    # Pick each frequency's own position row: [P, B, T] -> [B, T, H/2].
    pos_bth = jnp.moveaxis(positions, 0, -1)[..., rows_h]
    angles = pos_bth.astype(jnp.float32) * inv_h
  elif positions.ndim == 2:
    angles = positions.astype(jnp.float32)[..., None] * inv_h
  else:
    raise ValueError(f"positions must be [B, T] or [P, B, T], got shape {list(positions.shape)}")
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_btnh: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array) -> jax.Array:
  """Rotates channel pairs ``(i, i + H/2)`` (the "rotate half" layout of HF checkpoints)."""
  x = x_btnh.astype(jnp.float32)
  half = x.shape[-1] // 2
  x1, x2 = x[..., :half], x[..., half:]
  cos, sin = cos_bth[:, :, None, :], sin_bth[:, :, None, :]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_btnh.dtype)


class Attention(nnx.Module):
  """Grouped-query attention with optional q/k/v biases (Qwen2) and per-head q/k norm (Qwen3)."""

  def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
    c = config
    pd = jnp.dtype(c.param_dtype)
    d, n, k, h = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
    self.config = c
    self.q_dnh = nnx.Param(_normal(rngs, (d, n, h), pd))
    self.k_dkh = nnx.Param(_normal(rngs, (d, k, h), pd))
    self.v_dkh = nnx.Param(_normal(rngs, (d, k, h), pd))
    self.o_nhd = nnx.Param(_normal(rngs, (n, h, d), pd))
    if c.attention_bias:
      self.q_bias_nh = nnx.Param(jnp.zeros((n, h), pd))
      self.k_bias_kh = nnx.Param(jnp.zeros((k, h), pd))
      self.v_bias_kh = nnx.Param(jnp.zeros((k, h), pd))
    else:
      self.q_bias_nh = self.k_bias_kh = self.v_bias_kh = None
    self.o_bias_d = nnx.Param(jnp.zeros((d,), pd)) if c.attention_out_bias else None
    if c.qk_norm:
      self.q_norm = RMSNorm(h, c.rms_norm_eps, pd)
      self.k_norm = RMSNorm(h, c.rms_norm_eps, pd)
    else:
      self.q_norm = self.k_norm = None

  def __call__(self, x_btd: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array,
               allowed_bts: jax.Array, k_cache: jax.Array | None, v_cache: jax.Array | None,
               index: jax.Array | None, causal: bool = False):
    """One attention sub-layer: :meth:`heads`, then :meth:`project` (``causal``: see
    :meth:`heads`; the decoder blocks pass True, the vision tower's dense mask False).

    Returns:
      ``(out_btd, k_cache, v_cache)`` with the caches updated (None when not given).
    """
    out, k_cache, v_cache = self.heads(x_btd, cos_bth, sin_bth, allowed_bts, k_cache, v_cache,
                                       index, causal=causal)
    return self.project(out), k_cache, v_cache

  def qkv(self, x_btd: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Queries ``[B, T, N, H]``, keys and values ``[B, T, K, H]`` (compute dtype) of the
    normalised input ``x_btd``: projections, biases, q/k norms, then RoPE on q and k."""
    dt = jnp.dtype(self.config.dtype)
    x = x_btd.astype(dt)
    q = dense(x, self.q_dnh[...].astype(dt))
    k = dense(x, self.k_dkh[...].astype(dt))
    v = dense(x, self.v_dkh[...].astype(dt))
    if self.q_bias_nh is not None:
      q = q + self.q_bias_nh[...].astype(dt)
      k = k + self.k_bias_kh[...].astype(dt)
      v = v + self.v_bias_kh[...].astype(dt)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    return apply_rope(q, cos_bth, sin_bth), apply_rope(k, cos_bth, sin_bth), v

  def heads(self, x_btd: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array,
            allowed_bts: jax.Array, k_cache: jax.Array | None, v_cache: jax.Array | None,
            index: jax.Array | None, causal: bool = False):
    """The per-head attention outputs, before the output projection.

    Args:
      x_btd: normalised input ``[B, T, D]``.
      cos_bth, sin_bth: RoPE tables ``[B, T, H/2]``.
      allowed_bts: ``[B, T, S]`` bool, query t may attend key slot s.
      k_cache, v_cache: ``[B, K, S, H]`` or None (then the keys are this call's T tokens).
      index: slot where this call's first token is written.
      causal: the caller promises that ``allowed_bts`` never lets query t see a key s > t (as
        :func:`attention_layout` builds it). Without a cache, long calls then attend by blocks
        of queries (:func:`causal_blocks`), each over the keys up to its end only: the same
        outputs for every query that has an allowed key (to rounding), at about (C + 1) / 2C
        of the score and softmax work for C blocks. A query with no allowed key (padding)
        gets another meaningless, finite output.

    Returns:
      ``(out_btnh, k_cache, v_cache)`` (compute dtype) with the caches updated (None when not
      given); a subclass may reweight ``out_btnh`` before :meth:`project`.
    """
    c = self.config
    dt = jnp.dtype(c.dtype)
    q, k, v = self.qkv(x_btd, cos_bth, sin_bth)
    k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [B, K, T, H]: kv heads major
    if k_cache is not None:
      # In-place slab write; under jit with a donated / loop-carried cache XLA reuses the buffer.
      k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, 0, index, 0))
      v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, 0, index, 0))
      keys, values = k_cache.astype(dt), v_cache.astype(dt)
    else:
      keys, values = k, v

    b, t = q.shape[:2]
    groups = c.num_heads // c.num_kv_heads
    # Query head n uses kv head n // G: split N into (K, G) instead of repeating keys G times.
    q_btkgh = q.reshape(b, t, c.num_kv_heads, groups, c.head_dim)
    if causal and k_cache is None:
      out = jnp.concatenate([
          _attend(q_btkgh[:, start:end], keys[:, :, :end], values[:, :, :end],
                  allowed_bts[:, start:end, :end], dt)
          for start, end in causal_blocks(t)], axis=1)
    else:
      out = _attend(q_btkgh, keys, values, allowed_bts, dt)
    return out.reshape(b, t, c.num_heads, c.head_dim), k_cache, v_cache

  def project(self, out_btnh: jax.Array) -> jax.Array:
    """The output projection ``[B, T, N, H] -> [B, T, D]`` (plus its bias)."""
    dt = jnp.dtype(self.config.dtype)
    y = dense(out_btnh.astype(dt), self.o_nhd[...].astype(dt), in_dims=2)
    if self.o_bias_d is not None:
      y = y + self.o_bias_d[...].astype(dt)
    return y


class MLP(nnx.Module):
  """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

  def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
    pd = jnp.dtype(config.param_dtype)
    d, f = config.hidden_size, config.intermediate_size
    self.dtype = jnp.dtype(config.dtype)
    self.gate_df = nnx.Param(_normal(rngs, (d, f), pd))
    self.up_df = nnx.Param(_normal(rngs, (d, f), pd))
    self.down_fd = nnx.Param(_normal(rngs, (f, d), pd))

  def __call__(self, x_btd: jax.Array) -> jax.Array:
    dt = self.dtype
    x = x_btd.astype(dt)
    gate = dense(x, self.gate_df[...].astype(dt))
    up = dense(x, self.up_df[...].astype(dt))
    return dense(jax.nn.silu(gate) * up, self.down_fd[...].astype(dt))


class Block(nnx.Module):
  """Pre-norm decoder layer: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

  def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
    pd = jnp.dtype(config.param_dtype)
    self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, pd)
    self.attn = Attention(config, rngs)
    self.post_attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, pd)
    self.mlp = MLP(config, rngs)

  def __call__(self, x_btd, cos_bth, sin_bth, allowed_bts, k_cache, v_cache, index):
    # Causal: every caller lays the mask out with attention_layout (or its causal equal).
    h, k_cache, v_cache = self.attn(self.input_norm(x_btd), cos_bth, sin_bth, allowed_bts,
                                    k_cache, v_cache, index, causal=True)
    x_btd = x_btd + h.astype(x_btd.dtype)
    x_btd = x_btd + self.mlp(self.post_attn_norm(x_btd)).astype(x_btd.dtype)
    return x_btd, k_cache, v_cache


# -- the decoder ----------------------------------------------------------------------------------


def positions_from_mask(mask_bt: jax.Array, offset_b: jax.Array | int = 0) -> jax.Array:
  """RoPE positions ``[B, T]``: real tokens seen so far in the row (pads get clamped values).

  Args:
    mask_bt: ``[B, T]``, 1 for real tokens.
    offset_b: ``[B]`` real tokens already in the cache before this chunk.
  """
  pos = jnp.cumsum(mask_bt.astype(jnp.int32), axis=-1) - 1
  pos = pos + jnp.asarray(offset_b, jnp.int32).reshape(-1, 1)
  return jnp.maximum(pos, 0)


class Decoder(nnx.Module):
  """Token embedding, ``L`` pre-norm blocks, final RMSNorm, (tied or untied) output head."""

  def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
    c = config
    pd = jnp.dtype(c.param_dtype)
    self.config = c
    self.embedding_vd = nnx.Param(_normal(rngs, (c.vocab_size, c.hidden_size), pd))
    self.layers = nnx.List([Block(c, rngs) for _ in range(c.num_layers)])
    self.final_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, pd)
    self.lm_head_dv = (None if c.tie_word_embeddings else
                       nnx.Param(_normal(rngs, (c.hidden_size, c.vocab_size), pd)))

  def embed(self, tokens_bt: jax.Array) -> jax.Array:
    """Embedding rows ``[B, T, D]`` of token ids, in the compute dtype.

    What :meth:`hidden` feeds the first block for ids; to splice other embeddings in (image
    patches), edit its result and pass it as ``inputs_embeds_btd``.
    """
    return self.embedding_vd[...].astype(jnp.dtype(self.config.dtype))[tokens_bt]

  def hidden(self, tokens_bt: jax.Array | None = None, mask_bt: jax.Array | None = None,
             positions_bt: jax.Array | None = None, cache: KVCache | None = None, *,
             inputs_embeds_btd: jax.Array | None = None, return_hidden_states: bool = False):
    """Final-normed hidden states ``[B, T, D]`` (compute dtype) and the updated cache.

    Args:
      tokens_bt: int token ids ``[B, T]``; or None when ``inputs_embeds_btd`` is given.
      mask_bt: ``[B, T]``, 1 for real tokens, 0 for padding (default: all real).
      positions_bt: RoPE positions ``[B, T]``, or ``[P, B, T]`` for M-RoPE (see
        :func:`rope_cos_sin`); default counts real tokens (see :func:`positions_from_mask`),
        continuing from what the cache holds.
      cache: None for a plain causal forward over the ``T`` tokens; otherwise they are
        written at slots ``[cache.index, cache.index + T)`` and attend to every real token
        before them in the cache.
      inputs_embeds_btd: ``[B, T, D]`` embeddings that take the place of ``tokens_bt`` (exactly
        one of the two); cast to the compute dtype. ``embed(ids)`` gives the same logits as
        ``ids``.
      return_hidden_states: also return the residual stream after every layer.

    Returns:
      ``(h_btd, cache)``, or ``(h_btd, cache, states_lbtd)`` with ``return_hidden_states``:
      ``states_lbtd`` is ``[L + 1, B, T, D]`` (compute dtype), row 0 the embeddings that enter
      the first block and row ``i`` the output of block ``i``; the last row is before the final
      norm (transformers' ``output_hidden_states`` puts the normed ``h_btd`` there instead).
    """
    c = self.config
    dt = jnp.dtype(c.dtype)
    if (tokens_bt is None) == (inputs_embeds_btd is None):
      raise ValueError("Decoder: pass exactly one of tokens_bt [B, T] or inputs_embeds_btd "
                       f"[B, T, D]; got {'both' if tokens_bt is not None else 'neither'}")
    if tokens_bt is not None:
      if tokens_bt.ndim != 2:
        raise ValueError(f"Decoder: tokens_bt must be [B, T], got shape {list(tokens_bt.shape)}")
      b, t = tokens_bt.shape
      x = self.embed(tokens_bt)
    else:
      if inputs_embeds_btd.ndim != 3 or inputs_embeds_btd.shape[-1] != c.hidden_size:
        raise ValueError(f"Decoder: inputs_embeds_btd must be [B, T, D={c.hidden_size}], got "
                         f"shape {list(inputs_embeds_btd.shape)}")
      b, t = inputs_embeds_btd.shape[:2]
      x = inputs_embeds_btd.astype(dt)
    mask_bt = (jnp.ones((b, t), bool) if mask_bt is None else mask_bt.astype(bool))
    if positions_bt is not None and tuple(positions_bt.shape[-2:]) != (b, t):
      raise ValueError(f"Decoder: positions must be [B, T] or [P, B, T] with B, T = {b}, {t}; "
                       f"got shape {list(positions_bt.shape)}")

    positions_bt, allowed_bts, mask_bs = attention_layout(mask_bt, positions_bt, cache, t)
    index = None if cache is None else cache.index
    cos, sin = rope_cos_sin(c, positions_bt)
    states = [x]
    new_k, new_v = [], []
    for i, layer in enumerate(self.layers):
      kc = None if cache is None else cache.k[i]
      vc = None if cache is None else cache.v[i]
      if c.remat:
        x, kc, vc = nnx.remat(Block.__call__)(layer, x, cos, sin, allowed_bts, kc, vc, index)
      else:
        x, kc, vc = layer(x, cos, sin, allowed_bts, kc, vc, index)
      states.append(x)
      new_k.append(kc)
      new_v.append(vc)
    x = self.final_norm(x)
    if cache is not None:
      cache = KVCache(k=tuple(new_k), v=tuple(new_v), mask_bs=mask_bs, index=index + t)
    if return_hidden_states:
      return x, cache, jnp.stack(states)
    return x, cache

  def logits(self, h_btd: jax.Array) -> jax.Array:
    """Float32 logits ``[B, T, V]`` from final hidden states."""
    return unembed(h_btd, self.embedding_vd, self.lm_head_dv, self.config.dtype)

  def __call__(self, tokens_bt: jax.Array | None = None, mask_bt: jax.Array | None = None,
               positions_bt: jax.Array | None = None, cache: KVCache | None = None, *,
               inputs_embeds_btd: jax.Array | None = None, return_hidden_states: bool = False):
    """``(logits_btv, new_cache)``, or ``(logits_btv, new_cache, states_lbtd)`` with
    ``return_hidden_states``; see :meth:`hidden` for the arguments."""
    out = self.hidden(tokens_bt, mask_bt, positions_bt, cache,
                      inputs_embeds_btd=inputs_embeds_btd,
                      return_hidden_states=return_hidden_states)
    return (self.logits(out[0]),) + tuple(out[1:])


CAUSAL_BLOCK = 128  # queries per block of a long cache-free causal call (causal_blocks)
MAX_CAUSAL_BLOCKS = 8


def causal_blocks(t: int) -> list[tuple[int, int]]:
  """Static ``(start, end)`` query blocks of a cache-free causal call over ``t`` tokens: one
  block up to ``2 * CAUSAL_BLOCK`` tokens, else blocks of ``max(CAUSAL_BLOCK, t / 8)`` (at
  most :data:`MAX_CAUSAL_BLOCKS`), the last one shorter."""
  if t < 2 * CAUSAL_BLOCK:
    return [(0, t)]
  size = max(CAUSAL_BLOCK, -(-t // MAX_CAUSAL_BLOCKS))
  return [(start, min(start + size, t)) for start in range(0, t, size)]


def grouped_attention_probs(q_btkgh: jax.Array, keys_bksh: jax.Array,
                            allowed_bts: jax.Array) -> jax.Array:
  """Float32 softmax probabilities ``[B, K, G, T, S]`` of grouped queries ``[B, T, K, G, H]``
  over keys ``[B, K, S, H]`` (the cache's layout) where ``allowed_bts``."""
  scores = jnp.einsum("btkgh,bksh->bkgts", q_btkgh, keys_bksh,
                      preferred_element_type=jnp.float32) / np.sqrt(q_btkgh.shape[-1])
  # A finite floor instead of -inf: fully padded query rows (left padding) get a uniform, finite
  # distribution rather than NaN, and their outputs are never used.
  scores = jnp.where(allowed_bts[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(scores, axis=-1)


def _attend(q_btkgh: jax.Array, keys_bksh: jax.Array, values_bksh: jax.Array,
            allowed_bts: jax.Array, dt: Any) -> jax.Array:
  """Softmax attention (:func:`grouped_attention_probs`) over values ``[B, K, S, H]`` ->
  ``[B, T, K, G, H]`` in ``dt``."""
  probs = grouped_attention_probs(q_btkgh, keys_bksh, allowed_bts)
  b, k, g, t, s = probs.shape
  # One batched [G*T, S] x [S, H] product per (b, k), written as a plain matmul: as an einsum
  # XLA:CPU computed it as values^T x probs, a transposed-operand dot that runs outside its
  # fast matmul library (~2x slower per decode step).
  out = jnp.matmul(probs.astype(dt).reshape(b, k, g * t, s), values_bksh)
  return jnp.moveaxis(out.reshape(b, k, g, t, -1), 3, 1)


def attention_layout(mask_bt: jax.Array, positions_bt: jax.Array | None, cache: Any, t: int
                     ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """``(positions_bt, allowed_bts, new_mask_bs)`` of a call over ``t`` new tokens.

  Without a cache: causal attention among the call's real tokens (LEFT padding), positions
  counting real tokens. With a cache (anything with ``mask_bs``, ``index``, ``max_len``): the
  new tokens go to slots ``index .. index + t``; each query sees real slots up to its own, and
  positions continue from the real tokens before ``index`` (stale slots past it, after a
  rewind, are ignored). Given ``positions_bt`` (e.g. M-RoPE's 3 rows) are kept. Every model
  family lays out its attention through here.
  """
  if cache is None:
    if positions_bt is None:
      positions_bt = positions_from_mask(mask_bt)
    allowed = jnp.tril(jnp.ones((t, t), bool))[None] & mask_bt[:, None, :]
    return positions_bt, allowed, None
  index = cache.index
  slots_s = jnp.arange(cache.max_len)
  if positions_bt is None:
    seen_b = jnp.sum(cache.mask_bs & (slots_s < index)[None], axis=-1)
    positions_bt = positions_from_mask(mask_bt, seen_b)
  mask_bs = jax.lax.dynamic_update_slice(cache.mask_bs, mask_bt, (0, index))
  causal_ts = slots_s[None, :] <= (index + jnp.arange(t))[:, None]
  return positions_bt, causal_ts[None] & mask_bs[:, None, :], mask_bs


def unembed(h_btd: jax.Array, embedding_vd: nnx.Param, lm_head_dv: nnx.Param | None,
            dtype: Any) -> jax.Array:
  """Float32 logits ``[B, T, V]``: hidden states times the head ``[D, V]``, or times the
  transposed embedding ``[V, D]`` when the head is tied (``lm_head_dv`` None); the matmul runs
  in ``dtype`` and accumulates in float32. Every model family's head goes through here."""
  dt = jnp.dtype(dtype)
  h = h_btd.astype(dt)
  if lm_head_dv is None:
    return dense(h, embedding_vd[...].astype(dt).T, preferred_element_type=jnp.float32)
  return dense(h, lm_head_dv[...].astype(dt), preferred_element_type=jnp.float32)


def init_decoder(config: DecoderConfig, seed: int = 0) -> Decoder:
  """A randomly initialised decoder (normal(0.02) weights, unit norms, zero biases)."""
  return Decoder(config, rngs=nnx.Rngs(seed))


def abstract_decoder(config: DecoderConfig) -> Decoder:
  """The decoder's structure with ``ShapeDtypeStruct`` leaves: nothing is allocated."""
  return nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, tokens_bt, mask_bt, positions_bt, inputs_embeds_btd):
  model = nnx.merge(graphdef, state)
  logits, _ = model(tokens_bt, mask_bt, positions_bt, inputs_embeds_btd=inputs_embeds_btd)
  return logits


def forward(model: Decoder, tokens_bt: jax.Array | None = None, mask_bt: jax.Array | None = None,
            positions_bt: jax.Array | None = None, *,
            inputs_embeds_btd: jax.Array | None = None) -> jax.Array:
  """Jitted cache-free forward: float32 logits ``[B, T, V]``.

  Takes token ids ``[B, T]`` or embeddings ``inputs_embeds_btd`` ``[B, T, D]`` (exactly one),
  and positions ``[B, T]`` or ``[P, B, T]`` (M-RoPE). The model is split into (static graph,
  parameter pytree) so repeated calls with the same shapes reuse one compiled program.
  """
  graphdef, state = nnx.split(model)
  if mask_bt is None:
    like = tokens_bt if tokens_bt is not None else inputs_embeds_btd
    if like is None:
      raise ValueError("forward: pass exactly one of tokens_bt [B, T] or inputs_embeds_btd "
                       "[B, T, D]; got neither")
    mask_bt = jnp.ones(like.shape[:2], bool)
  return _forward(graphdef, state, tokens_bt, mask_bt, positions_bt, inputs_embeds_btd)
