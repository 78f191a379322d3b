"""What a forward does not return, recomputed from its captured states with the model's blocks.

``LoopedLM(..., return_states=True)`` gives the residual stream after every block call; the
analysis also needs each block's *input* and each attention call's probabilities. Both follow
from the captured states: the input of core slot ``j > 0`` is the output of slot ``j - 1``,
the first slot of an iteration reads ``inject(s_{t-1}, e)`` (or, with HRM's inner stack,
``z + s`` and ``inject(s, z)``), and an attention row is ``softmax(q k^T / sqrt(H))`` of the
block's own projections of its normalised input. :func:`replay_iteration` reruns one outer
iteration from ``(s_{t-1}, z_{t-1})`` with the model's public blocks, recording those; the
model's code is untouched. :func:`capture` runs the forward and the replay in one jitted
program and reports how far the replayed block outputs are from the captured ones (a
self-check that should be ~1e-6 in float32).

Shape letters: B batch, T tokens, D width, N query heads, I iterations, J slots per iteration.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab.models.decoder.modeling import (grouped_attention_probs, positions_from_mask,
                                            rope_cos_sin)
from jaxlab.models.looped.modeling import LoopedLM


def layout(block_config, mask_bt: jax.Array):
  """``(positions_bt, cos_bth, sin_bth, allowed_btt)`` of a cache-free causal forward over a
  LEFT-padded batch, as the model lays out its own call."""
  mask_bt = jnp.asarray(mask_bt, bool)
  t = mask_bt.shape[1]
  positions = positions_from_mask(mask_bt)
  cos, sin = rope_cos_sin(block_config, positions)
  allowed = jnp.tril(jnp.ones((t, t), bool))[None] & mask_bt[:, None, :]
  return positions, cos, sin, allowed


def attention_probs(attn, x_btd: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array,
                    allowed_bts: jax.Array) -> jax.Array:
  """Attention probabilities ``[B, N, T, S]`` (float32) of one attention module.

  ``A[b, n, t, s] = softmax_s(q[b, t, n] . k[b, s, n // G] / sqrt(H))`` over the allowed keys,
  with ``q = x W_q (+ b_q)``, ``k = x W_k (+ b_k)``, the per-head q/k norms when the module has
  them, RoPE on both, ``G`` query heads per key head. ``x_btd`` is what the module sees, i.e.
  the block's input after its input norm. Works for the decoder's attention and the looped
  family's (its output gate does not change the probabilities).
  """
  c = attn.config
  q, k, _ = attn.qkv(x_btd, cos_bth, sin_bth)  # the module's own projections, norms and RoPE
  b, t = q.shape[:2]
  groups = c.num_heads // c.num_kv_heads
  q = q.reshape(b, t, c.num_kv_heads, groups, c.head_dim)
  # The module's own softmax, over keys [B, K, S, H] as the attention reads them.
  probs = grouped_attention_probs(q, jnp.swapaxes(k, 1, 2), allowed_bts)
  return probs.reshape(b, c.num_heads, t, -1)


def block_attention_input(block, x_btd: jax.Array) -> jax.Array:
  """What a block's attention reads: its input after the block's input norm (if it has one).

  Covers the looped family's ``LoopBlock`` (``attn_in_norm``; none for "post" placement) and
  the decoder's pre-norm ``Block`` (``input_norm``).
  """
  norm = getattr(block, "attn_in_norm", None)
  if norm is None:
    norm = getattr(block, "input_norm", None)
  return x_btd if norm is None else norm(x_btd)


def _apply(blocks, x, cos, sin, allowed, inputs, outputs, probs, keep_k=None):
  for k, blk in enumerate(blocks):
    inputs.append(x)
    if probs is not None:
      probs.append(attention_probs(blk.attn, block_attention_input(blk, x), cos, sin, allowed))
    y, _, _ = blk(x, cos, sin, allowed, None, None, None)
    x = y if keep_k is None else jnp.where(keep_k[k], y, x)
    outputs.append(x)
  return x


def replay_iteration(model: LoopedLM, s_btd, z_btd, e_btd, cos, sin, allowed, order=None,
                     keep_k=None, attention: bool = True):
  """One outer iteration rerun from ``(s_{t-1}, z_{t-1})`` with the model's own blocks.

  Follows the equations of :mod:`jaxlab.models.looped.config`: with an inner stack,
  ``inner_iterations`` times ``z <- post(inner(z + s))`` and the core reads ``inject(s, z)``;
  else the core reads ``inject(s, e)``; then ``s <- post(core(.))``.

  Args:
    model: the looped model.
    s_btd, z_btd, e_btd: the state, the inner state (ignored without an inner stack) and the
      prelude output, ``[B, T, D]``.
    cos, sin, allowed: from :func:`layout`.
    order: core blocks to apply, by index (default all, in order): a slot deleted or swapped
      for this iteration only (see :mod:`jaxlab.looped.ablation`).
    keep_k: ``[len(order)]`` bool (may be traced) or None: a core call whose entry is False
      passes its input through unchanged (the block is deleted, without recompiling).
    attention: False skips the attention probabilities (``probs_jbnts`` is then None).

  Returns:
    ``(s_next, z_next, inputs_jbtd, outputs_jbtd, probs_jbnts)``: the block inputs and outputs
    and the attention probabilities of every block call, in slot order.
  """
  c = model.config
  inputs, outputs, probs = [], [], ([] if attention else None)
  source = e_btd
  if c.inner_layers:
    for _ in range(c.inner_iterations):
      h = _apply(model.inner, z_btd + s_btd, cos, sin, allowed, inputs, outputs, probs)
      z_btd = h if model.inner_norm is None else model.inner_norm(h)
    source = z_btd
  core = list(model.core) if order is None else [model.core[i] for i in order]
  h = _apply(core, model.inject(s_btd, source), cos, sin, allowed, inputs, outputs, probs,
             keep_k)
  s_btd = h if model.iter_norm is None else model.iter_norm(h)
  return (s_btd, z_btd, jnp.stack(inputs), jnp.stack(outputs),
          None if probs is None else jnp.stack(probs))


def inner_states(model: LoopedLM, core_ijbtd: jax.Array, e_btd: jax.Array) -> jax.Array:
  """``z`` at the start of every iteration, ``[I, B, T, D]``, from the captured core states.

  Iteration 0 starts at the model's inner initial state; iteration ``t`` at the normalised
  output of the last inner-stack call of iteration ``t - 1``. Zeros without an inner stack.
  """
  c = model.config
  z0 = e_btd * 0
  if model.inner_init_d is not None:
    z0 = z0 + model.inner_init_d[...].astype(z0.dtype)
  if not c.inner_layers:
    return jnp.broadcast_to(z0, core_ijbtd.shape[:1] + z0.shape)
  last = core_ijbtd[:-1, c.inner_layers * c.inner_iterations - 1]
  z = last if model.inner_norm is None else model.inner_norm(last)
  return jnp.concatenate([z0[None], z], axis=0)


def _capture(model: LoopedLM, tokens_bt, mask_bt, key, num_iterations: int,
             attention: bool) -> dict[str, jax.Array]:
  c = model.config
  logits, _, st = model(tokens_bt, mask_bt, key=key, return_states=True,
                        num_iterations=num_iterations)
  positions, cos, sin, allowed = layout(c.block_config, mask_bt)
  e = st.prelude[-1]
  s0 = model.initial_state(e, positions, key)
  out = dict(logits=logits, prelude=st.prelude, core=st.core, iterates=st.iterates,
             coda=st.coda, s0=s0)
  if not attention:
    return out
  s_prev = jnp.concatenate([s0[None], st.iterates[:-1]], axis=0)
  z_prev = inner_states(model, st.core, e)
  replay = lambda s, z: replay_iteration(model, s, z, e, cos, sin, allowed)
  _, _, inputs, outputs, probs = jax.vmap(replay)(s_prev, z_prev)
  out["core_inputs"] = inputs
  out["attn_core"] = probs
  out["replay_error"] = jnp.max(jnp.abs(outputs.astype(jnp.float32) -
                                        st.core.astype(jnp.float32)))
  pre = [attention_probs(b.attn, block_attention_input(b, x), cos, sin, allowed)
         for b, x in zip(model.prelude, st.prelude[:-1])]
  s_last = st.iterates[-1]
  coda_in = [s_last if not c.coda_norm else model.final_norm(s_last)] + list(st.coda[:-1])
  coda = [attention_probs(b.attn, block_attention_input(b, x), cos, sin, allowed)
          for b, x in zip(model.coda, coda_in)]
  b, t = tokens_bt.shape
  empty = jnp.zeros((0, b, c.num_heads, t, t), jnp.float32)
  out["attn_prelude"] = jnp.stack(pre) if pre else empty
  out["attn_coda"] = jnp.stack(coda) if coda else empty
  return out


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _capture_jit(graphdef, state, tokens_bt, mask_bt, key, num_iterations, attention):
  return _capture(nnx.merge(graphdef, state), tokens_bt, mask_bt, key, num_iterations,
                  attention)


def capture(model: LoopedLM, tokens_bt, mask_bt=None, num_iterations: int | None = None,
            key: jax.Array | None = None, attention: bool = True) -> dict[str, np.ndarray]:
  """Runs the model once (jitted) and returns everything the analysis reads, as numpy.

  Args:
    model: a looped model.
    tokens_bt: ``[B, T]`` ids (LEFT-padded); mask_bt: ``[B, T]`` (default all real).
    num_iterations: ``I`` of this run (default the config's).
    key: PRNG key of a random initial state (default the config's seed, as the model).
    attention: also replay every block for its inputs and attention probabilities.

  Returns:
    ``logits [B, T, V]``, ``prelude [P + 1, B, T, D]``, ``core [I, J, B, T, D]``,
    ``iterates [I, B, T, D]``, ``coda [C, B, T, D]``, ``s0 [B, T, D]``; with ``attention``
    also ``core_inputs [I, J, B, T, D]``, ``attn_core [I, J, B, N, T, T]``,
    ``attn_prelude [P, B, N, T, T]``, ``attn_coda [C, B, N, T, T]`` and ``replay_error``
    (max abs difference between the replayed and the captured core states).
  """
  tokens_bt = jnp.asarray(tokens_bt)
  mask_bt = (jnp.ones(tokens_bt.shape, bool) if mask_bt is None
             else jnp.asarray(mask_bt, bool))
  graphdef, state = nnx.split(model)
  out = _capture_jit(graphdef, state, tokens_bt, mask_bt, key,
                     int(num_iterations or model.config.num_iterations), bool(attention))
  return {k: np.asarray(v) for k, v in out.items()}


@functools.partial(jax.jit, static_argnums=0)
def _capture_decoder_jit(graphdef, state, tokens_bt, mask_bt):
  model = nnx.merge(graphdef, state)
  logits, _, hs = model(tokens_bt, mask_bt, return_hidden_states=True)
  _, cos, sin, allowed = layout(model.config, mask_bt)
  probs = [attention_probs(layer.attn, block_attention_input(layer, x), cos, sin, allowed)
           for layer, x in zip(model.layers, hs[:-1])]
  return dict(logits=logits, hidden=hs, attn=jnp.stack(probs))


def capture_decoder(model: Any, tokens_bt, mask_bt=None) -> dict[str, np.ndarray]:
  """A feed-forward decoder's baseline: ``logits [B, T, V]``, ``hidden [L + 1, B, T, D]``
  (embeddings, then each layer's output) and ``attn [L, B, N, T, T]``."""
  tokens_bt = jnp.asarray(tokens_bt)
  mask_bt = (jnp.ones(tokens_bt.shape, bool) if mask_bt is None
             else jnp.asarray(mask_bt, bool))
  graphdef, state = nnx.split(model)
  return {k: np.asarray(v) for k, v in
          _capture_decoder_jit(graphdef, state, tokens_bt, mask_bt).items()}
