"""Batched autoregressive sampling: one compiled program for prefill + the whole decode loop.

Prompts of different lengths are LEFT-padded to a common length ``P`` so that every row writes
its next token into the same cache slot; the KV cache holds ``P + max_new_tokens`` slots and is
created inside the compiled program, where the ``while_loop`` updates it in place.

Families: a decoder prefills from token ids; a vision-language model (Qwen2.5-VL) prefills from
the token embeddings with its image embeddings spliced in, at explicit M-RoPE positions
``[3, B, P]`` computed on the host, and each decode step continues the row's positions with its
rope delta. Both share one decode loop (:func:`_sample_loop`); only the prefill and the
one-token step differ.

Log-probabilities (what RL needs):
  * ``logprobs``: log-prob of each sampled token under the distribution it was actually drawn
    from: ``softmax(logits / temperature)``, restricted to the top-k / top-p set and
    renormalised. For greedy decoding (temperature 0) the draw is a point mass, so this holds
    the untempered model log-prob instead.
  * ``model_logprobs``: log-prob under the untempered, unfiltered model, ``log_softmax(logits)``.
Both are 0 after a row has stopped.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from jaxlab.core import mesh as mesh_lib
from jaxlab.models.decoder.modeling import Decoder, KVCache


class PromptTooLongError(ValueError):
  """A prompt does not fit into the KV cache together with the tokens to generate."""


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to pick tokens; hashable, so it is a static argument of the compiled loop.

  Attributes:
    max_new_tokens: tokens to generate per row (the output width).
    temperature: 0 for greedy (argmax), else logits are divided by it.
    top_k: keep only the k most likely tokens (0: off).
    top_p: keep the most likely tokens down to the first whose cumulative mass exceeds p, and
      every token tied with it (1.0: off); transformers' set, except that it keeps only as
      many of a tie as it needs, in the order its sort leaves them.
    stop_tokens: ids that end a row (the stop token is included in the row's length).
    pad_id: written after a row has stopped.
  """
  max_new_tokens: int
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  stop_tokens: tuple[int, ...] = ()
  pad_id: int = 0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
    if self.temperature < 0:
      raise ValueError(f"temperature={self.temperature} must be >= 0")
    if self.top_k < 0:
      raise ValueError(f"top_k={self.top_k} must be >= 0")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p={self.top_p} must be in (0, 1]")


def params_for(model: Any, tokenizer: Any, max_new_tokens: int, **kwargs: Any
               ) -> SamplingParams:
  """:class:`SamplingParams` for a loaded model and its tokenizer: rows stop at the config's eos
  ids and the tokenizer's eos, and are padded with the tokenizer's pad id (0 if it has none);
  ``kwargs`` are the other fields (temperature, top_k, top_p)."""
  stop = set(getattr(model.config, "stop_token_ids", ()) or ())
  if tokenizer.eos_token_id is not None:
    stop.add(int(tokenizer.eos_token_id))
  pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
  return SamplingParams(max_new_tokens=max_new_tokens, stop_tokens=tuple(sorted(stop)),
                        pad_id=pad_id, **kwargs)


@flax.struct.dataclass
class SampleOutput:
  """Generated continuations.

  Attributes:
    tokens: ``[B, max_new_tokens]`` int32; ``pad_id`` after each row's stop token.
    logprobs: ``[B, max_new_tokens]`` float32 under the sampling distribution (module doc).
    model_logprobs: ``[B, max_new_tokens]`` float32 under the untempered model.
    lengths: ``[B]`` int32, generated tokens per row including its stop token.
  """
  tokens: jax.Array
  logprobs: jax.Array
  model_logprobs: jax.Array
  lengths: jax.Array


def filter_logits(logits_bv: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Sets logits outside the top-k, then outside the top-p nucleus, to -inf, in transformers'
  order (temperature before this, then top-k, then top-p).

  The top token always survives. The nucleus keeps the logits down to the smallest one whose
  strictly larger logits hold less than ``top_p`` of the softmax mass (:func:`_nucleus_cutoff`);
  after top-k that mass is over every token top-k kept, ties at the k-th logit included, as in
  transformers. Ties with the last kept logit are all kept, at top-k (as transformers) and at
  top-p (where transformers keeps only as many of the tied tokens as it needs, chosen by its
  sort's order): the kept set does not depend on the vocabulary's order. Float32 logits of a
  real model rarely tie exactly.
  """
  neg = jnp.array(-jnp.inf, logits_bv.dtype)
  if top_k and top_k < logits_bv.shape[-1]:
    kth = jax.lax.top_k(logits_bv, top_k)[0][..., -1:]
    logits_bv = jnp.where(logits_bv < kth, neg, logits_bv)
  if top_p < 1.0:
    logits_bv = jnp.where(logits_bv < _nucleus_cutoff(logits_bv, top_p), neg, logits_bv)
  return logits_bv


def _order_key(x: jax.Array) -> jax.Array:
  """float32 -> uint32 keys in the same order as the floats (-0.0 just below +0.0)."""
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  negative = bits >= jnp.uint32(0x80000000)
  return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def _nucleus_cutoff(logits_bv: jax.Array, top_p: float) -> jax.Array:
  """``[B, 1]``: per row the smallest logit whose strictly larger logits hold less than
  ``top_p`` of the softmax mass (the last logit of the sorted nucleus).

  Found by bisection over the logits' order keys (32 masked sums over the row) instead of a
  sort of the vocabulary: XLA's sort of [8, 32000] took ~50 ms per decode step on the 2-core
  CPU. The mass above a threshold only changes at a logit, so the smallest threshold that
  qualifies is itself a logit's key. The test is transformers' own form, the mass at or below
  the threshold against ``1 - top_p`` (the small tail is summed, not the large head, which
  float32 cannot resolve for ``top_p`` near 1); masses are summed in another order than a
  sorted cumsum, so a logit within float32 rounding of the boundary may fall the other way.
  """
  probs = jax.nn.softmax(logits_bv.astype(jnp.float32), axis=-1)
  keys_bv = _order_key(logits_bv)
  hi = jnp.max(keys_bv, axis=-1)  # the mass above the top logit is 0 < top_p
  lo = jnp.min(keys_bv, axis=-1) - 1  # (a virtual key below all; the top qualifies anyway)

  def body(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    # mass above mid < top_p, written as the tail: mass at or below mid > 1 - top_p.
    below = jnp.sum(jnp.where(keys_bv <= mid[:, None], probs, 0.0), axis=-1)
    ok = below > 1.0 - top_p
    return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

  _, hi = jax.lax.fori_loop(0, 32, body, (lo, hi))  # hi - lo < 2^32 halves to 1
  cutoff = jnp.min(jnp.where(keys_bv == hi[:, None], logits_bv, jnp.inf), axis=-1, keepdims=True)
  return cutoff


def _first_argmax(x_bv: jax.Array) -> jax.Array:
  """``jnp.argmax(x_bv, -1)`` (the first maximum; a NaN counts as the maximum) as int32, written
  as max and min reductions: XLA:CPU runs argmax's (value, index) pair reduction unvectorised,
  ~7x slower over a 32k vocabulary (1.1 vs 0.17 ms at [8, 32000])."""
  m_b1 = jnp.max(x_bv, axis=-1, keepdims=True)
  vocab = x_bv.shape[-1]
  hit = (x_bv == m_b1) | jnp.isnan(x_bv)
  return jnp.min(jnp.where(hit, jnp.arange(vocab, dtype=jnp.int32), vocab), axis=-1)


def _log_softmax_at(x_bv: jax.Array, tok_b: jax.Array) -> jax.Array:
  """``jax.nn.log_softmax(x_bv)[b, tok_b[b]]`` without the ``[B, V]`` result: log_softmax's
  own arithmetic at one index, ``(x - max) - log(sum(exp(x - max)))`` (bit for bit compiled
  alone; inside a larger program XLA's fusion may round the last bit differently)."""
  m_b1 = jnp.max(x_bv, axis=-1, keepdims=True)
  lse_b = jnp.log(jnp.sum(jnp.exp(x_bv - m_b1), axis=-1))
  x_b = jnp.take_along_axis(x_bv, tok_b[:, None], axis=-1)[:, 0]
  return (x_b - m_b1[:, 0]) - lse_b


def greedy_pick(logits_bv: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(argmax, its log-softmax)`` per row, equal to ``jnp.argmax`` and ``jax.nn.log_softmax``
  picked at it, bit for bit (:func:`_first_argmax`, :func:`_log_softmax_at`); the greedy
  decode step paid ~0.5 ms of its ~9 ms for argmax (benchmarks/generate_vs_transformers.py)."""
  tok = _first_argmax(logits_bv)
  return tok, _log_softmax_at(logits_bv, tok)


def sample_step(logits_bv: jax.Array, keys_b: jax.Array, step: jax.Array,
                params: SamplingParams) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Picks one token per row.

  The draw is ``jax.random.categorical``'s: the first argmax of the filtered, tempered logits
  plus Gumbel noise from the row's step key (the same tokens, with a faster argmax).

  Args:
    logits_bv: float32 logits ``[B, V]``.
    keys_b: one PRNG key per row; the step's key is ``fold_in(key, step)``, so a row's draws
      depend only on its own key, not on the rest of the batch.
    step: the index of the token being generated.
    params: see :class:`SamplingParams`.

  Returns:
    ``(tokens_b, logprobs_b, model_logprobs_b)``.
  """
  if params.temperature == 0.0:
    tok, lp = greedy_pick(logits_bv)
    return tok, lp, lp
  plain = params.temperature == 1.0 and not params.top_k and params.top_p >= 1.0
  scaled = logits_bv if plain else filter_logits(logits_bv / params.temperature, params.top_k,
                                                 params.top_p)
  step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys_b, step)
  noise = jax.vmap(lambda k: jax.random.gumbel(k, scaled.shape[1:], scaled.dtype))(step_keys)
  tok = _first_argmax(scaled + noise)
  sample_lp = _log_softmax_at(scaled, tok)
  return tok, sample_lp, sample_lp if plain else _log_softmax_at(logits_bv, tok)


def _init_cache(model: Any, batch: int, cache_len: int) -> Any:
  """An empty cache: the model's own ``init_cache`` (other families, e.g. looped models), else
  the decoder's :class:`KVCache`."""
  if hasattr(model, "init_cache"):
    return model.init_cache(batch, cache_len)
  return KVCache.init(model.config, batch, cache_len)


def _is_stop(tok_b: jax.Array, stop_tokens: tuple[int, ...]) -> jax.Array:
  if not stop_tokens:
    return jnp.zeros(tok_b.shape, bool)
  return jnp.any(tok_b[:, None] == jnp.asarray(stop_tokens, jnp.int32)[None, :], axis=-1)


def _sample_loop(logits_bv: jax.Array, cache: Any, decode: Callable[[jax.Array, Any], Any],
                 keys_b: jax.Array, params: SamplingParams) -> SampleOutput:
  """Samples the first token from the prefill's last-column logits, then decodes in a
  ``while_loop`` that exits once every row stopped.

  The family-specific part is ``decode(tok_b, cache) -> (logits_bv, cache)``: one sampled token
  per row written after the cache's content (a decoder counts its position on from the cache; a
  VLM adds its rows' rope deltas).
  """
  b = logits_bv.shape[0]
  n = params.max_new_tokens
  tok, lp, mlp = sample_step(logits_bv, keys_b, jnp.int32(0), params)
  done = _is_stop(tok, params.stop_tokens)

  out_tok = jnp.full((b, n), params.pad_id, jnp.int32).at[:, 0].set(tok)
  out_lp = jnp.zeros((b, n), jnp.float32).at[:, 0].set(lp)
  out_mlp = jnp.zeros((b, n), jnp.float32).at[:, 0].set(mlp)
  lengths = jnp.ones((b,), jnp.int32)

  def cond(carry):
    step, _, _, done, *_ = carry
    return (step < n) & ~jnp.all(done)

  def body(carry):
    step, tok, cache, done, out_tok, out_lp, out_mlp, lengths = carry
    logits_bv, cache = decode(tok, cache)
    new_tok, lp, mlp = sample_step(logits_bv, keys_b, step, params)
    # Rows that already stopped emit padding with log-prob 0.
    new_tok = jnp.where(done, params.pad_id, new_tok)
    lp = jnp.where(done, 0.0, lp)
    mlp = jnp.where(done, 0.0, mlp)
    out_tok = jax.lax.dynamic_update_slice(out_tok, new_tok[:, None], (0, step))
    out_lp = jax.lax.dynamic_update_slice(out_lp, lp[:, None], (0, step))
    out_mlp = jax.lax.dynamic_update_slice(out_mlp, mlp[:, None], (0, step))
    lengths = lengths + (~done).astype(jnp.int32)
    done = done | _is_stop(new_tok, params.stop_tokens)
    return step + 1, new_tok, cache, done, out_tok, out_lp, out_mlp, lengths

  carry = (jnp.int32(1), tok, cache, done, out_tok, out_lp, out_mlp, lengths)
  _, _, _, _, out_tok, out_lp, out_mlp, lengths = jax.lax.while_loop(cond, body, carry)
  return SampleOutput(tokens=out_tok, logprobs=out_lp, model_logprobs=out_mlp, lengths=lengths)


def _generate(graphdef, state, tokens_bp, mask_bp, keys_b, params: SamplingParams,
              cache_len: int, cache_shardings: Any = None) -> SampleOutput:
  """Decoder families: prefill the token prompt, then :func:`_sample_loop`."""
  model: Decoder = nnx.merge(graphdef, state)
  b = tokens_bp.shape[0]
  cache = _init_cache(model, b, cache_len)
  if cache_shardings is not None:
    cache = jax.lax.with_sharding_constraint(cache, cache_shardings)

  # Prefill: logits only at the last column (left padding puts every row's last token there),
  # which saves the [B, P, V] head matmul.
  h, cache = model.hidden(tokens_bp, mask_bp, cache=cache)
  logits = model.logits(h[:, -1:])[:, 0]
  ones_b1 = jnp.ones((b, 1), bool)

  def decode(tok_b, cache):
    logits_b1v, cache = model(tok_b[:, None], ones_b1, cache=cache)
    return logits_b1v[:, 0], cache

  return _sample_loop(logits, cache, decode, keys_b, params)


def _generate_multimodal(graphdef, state, prompt: Any, keys_b, params: SamplingParams,
                         cache_len: int, cache_shardings: Any = None) -> SampleOutput:
  """Vision-language families (:class:`~jaxlab.models.qwen_vl.modeling.QwenVL`): the prefill
  starts from the token embeddings with the image embeddings spliced in (the vision tower runs
  once, here) at the prompt's explicit M-RoPE positions ``[3, B, P]``; each decode step places
  its token at the real tokens before it plus the row's rope delta."""
  model = nnx.merge(graphdef, state)
  b = prompt.tokens.shape[0]
  cache = model.init_cache(b, cache_len)
  if cache_shardings is not None:
    cache = jax.lax.with_sharding_constraint(cache, cache_shardings)
  h, cache = model.prompt_hidden(prompt.tokens, prompt.mask, prompt.positions,
                                 prompt.pixel_values, prompt.grid, cache)
  logits = model.logits(h[:, -1:])[:, 0]
  ones_b1 = jnp.ones((b, 1), bool)

  def decode(tok_b, cache):
    logits_b1v, cache = model.step(tok_b[:, None], ones_b1, cache, prompt.deltas)
    return logits_b1v[:, 0], cache

  return _sample_loop(logits, cache, decode, keys_b, params)


_generate_multimodal_jit = jax.jit(_generate_multimodal,
                                   static_argnames=("graphdef", "params", "cache_len",
                                                    "cache_shardings"))


_generate_jit = jax.jit(_generate, static_argnames=("graphdef", "params", "cache_len",
                                                    "cache_shardings"))


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0, length: int | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
  """``(tokens_bp, mask_bp)``: prompts right-aligned in a ``[B, P]`` int32 array.

  Args:
    prompts: token id lists.
    pad_id: filler id.
    length: P (default: the longest prompt); a fixed P avoids recompiling for every batch.
  """
  longest = max(len(p) for p in prompts)
  length = longest if length is None else length
  if longest > length:
    raise PromptTooLongError(f"a prompt has {longest} tokens, longer than the padded length "
                             f"{length}")
  tokens = np.full((len(prompts), length), pad_id, np.int32)
  mask = np.zeros((len(prompts), length), bool)
  for i, p in enumerate(prompts):
    if len(p):
      tokens[i, length - len(p):] = p
      mask[i, length - len(p):] = True
  return tokens, mask


def _row_keys(key: jax.Array, batch: int) -> jax.Array:
  """Per-row keys: a batch of keys is used as is, a single key is split into ``batch``."""
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  single = key.ndim == 0 if typed else key.shape == (2,)
  if single:
    return jax.random.split(key, batch)
  if key.shape[0] != batch:
    raise ValueError(f"got {key.shape[0]} PRNG keys for a batch of {batch}")
  return key


def takes_images(model: Any) -> bool:
  """Whether ``model`` is a vision-language family, which :func:`generate` drives with images
  (it prepares its prompts' M-RoPE positions on the host: ``prepare_prompt``)."""
  return hasattr(model, "prepare_prompt")


def generate(model: Any, tokens_bp: Any, mask_bp: Any, key: jax.Array,
             params: SamplingParams, cache_len: int | None = None,
             mesh: Mesh | None = None, *, pixel_values: Any = None,
             grid_thw: Any = None) -> SampleOutput:
  """Samples ``params.max_new_tokens`` tokens after each left-padded prompt.

  Calls with the same shapes and ``params`` (and, for a VLM, the same image grids) reuse one
  compiled program.

  Args:
    model: a decoder family, or a vision-language family (a model with ``prepare_prompt``,
      e.g. :class:`~jaxlab.models.qwen_vl.modeling.QwenVL`), with or without images.
    tokens_bp: ``[B, P]`` int prompt ids, LEFT-padded (see :func:`left_pad`); for a VLM each
      image is a run of its placeholder tokens (see ``jaxlab.models.qwen_vl.inputs``).
    mask_bp: ``[B, P]``, 1 for real prompt tokens.
    key: one PRNG key (split per row) or ``[B]`` keys, one per row.
    params: see :class:`SamplingParams`.
    cache_len: KV cache slots, at least ``P + max_new_tokens`` (the default).
    mesh: shard the batch over ``("data", "fsdp")`` and the cache's kv heads over ``tensor``
      (for a VLM the image patches stay replicated).
    pixel_values: VLM only: ``[N, patch_dim]`` patches of all images, in the order of their
      placeholders (row 0's first); None for text-only prompts.
    grid_thw: VLM only: ``[num_images, 3]`` patch grids, with ``pixel_values``.

  Raises:
    PromptTooLongError: ``P + max_new_tokens`` exceeds ``cache_len``.
    ValueError: images for a model without a vision tower, or placeholders
      that do not match the images (counts named).
  """
  multimodal = takes_images(model)
  if not multimodal and (pixel_values is not None or grid_thw is not None):
    raise ValueError(f"{type(model).__name__} has no vision tower: pixel_values/grid_thw are "
                     "only for vision-language models")
  tokens_bp = jnp.asarray(tokens_bp, jnp.int32)
  mask_bp = jnp.asarray(mask_bp, bool)
  if tokens_bp.ndim != 2 or mask_bp.shape != tokens_bp.shape:
    raise ValueError(f"generate: tokens and mask must both be [B, P]; got shapes "
                     f"{list(tokens_bp.shape)} and {list(mask_bp.shape)}")
  b, p = tokens_bp.shape
  need = p + params.max_new_tokens
  cache_len = need if cache_len is None else cache_len
  if need > cache_len:
    raise PromptTooLongError(
        f"prompt length {p} + max_new_tokens {params.max_new_tokens} = {need} exceeds the KV "
        f"cache length {cache_len}; shorten the prompt or enlarge the cache")
  keys_b = _row_keys(key, b)
  if multimodal:
    # Host side first (placeholder checks, M-RoPE positions and deltas need concrete ids).
    prompt = model.prepare_prompt(tokens_bp, mask_bp, pixel_values, grid_thw)
    cache_shardings = None
    if mesh is not None:
      from jaxlab.models.qwen_vl import sharding as vl_sharding  # pylint: disable=g-import-not-at-top
      prompt = vl_sharding.shard_prompt(prompt, mesh)
      abstract = jax.eval_shape(lambda: model.init_cache(b, cache_len))
      cache_shardings = vl_sharding.cache_sharding(mesh, abstract)
    graphdef, state = nnx.split(model)
    return _generate_multimodal_jit(graphdef, state, prompt, keys_b, params=params,
                                    cache_len=cache_len, cache_shardings=cache_shardings)
  cache_shardings = None
  if mesh is not None:
    from jaxlab.models.decoder import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
    abstract = jax.eval_shape(lambda: _init_cache(model, b, cache_len))
    cache_shardings = sharding_lib.cache_sharding(mesh, abstract)
    batch = NamedSharding(mesh, sharding_lib.fit_spec(
        jax.sharding.PartitionSpec(("data", "fsdp"), None), (b, p), mesh))
    # Each process hands over only its own devices' rows (no all-gather to compare them).
    tokens_bp, mask_bp = (mesh_lib.put(x, batch) for x in (tokens_bp, mask_bp))
  graphdef, state = nnx.split(model)
  return _generate_jit(graphdef, state, tokens_bp, mask_bp, keys_b, params=params,
                       cache_len=cache_len, cache_shardings=cache_shardings)


# -- step-by-step API (interactive use, tests): the cache is donated and returned ----------------


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def _step(graphdef, state, tokens_bt, mask_bt, cache):
  model = nnx.merge(graphdef, state)
  return model(tokens_bt, mask_bt, cache=cache)


def forward_with_cache(model: Decoder, tokens_bt: jax.Array, mask_bt: jax.Array,
                       cache: KVCache) -> tuple[jax.Array, KVCache]:
  """One jitted call writing ``T`` tokens into ``cache`` (prefill or a decode step).

  The passed cache is donated: its buffers are reused for the returned one, so do not use it
  again.

  Returns:
    ``(logits_btv, new_cache)``.
  """
  if int(cache.index) + tokens_bt.shape[1] > cache.max_len:
    raise PromptTooLongError(f"writing {tokens_bt.shape[1]} tokens at slot {int(cache.index)} "
                             f"overflows the KV cache length {cache.max_len}")
  graphdef, state = nnx.split(model)
  return _step(graphdef, state, jnp.asarray(tokens_bt, jnp.int32), jnp.asarray(mask_bt, bool),
               cache)
