"""Looped (recurrent-depth) language models in Flax NNX: prelude -> core x T -> coda.

The equations are in :mod:`jaxlab.models.looped.config`. Attention, MLP, RMSNorm and RoPE are
the decoder's (:mod:`jaxlab.models.decoder.modeling`); this module adds the block's norm
placements, HRM's gated attention output, the input injections, the initial state, and the
recurrence, which is one ``lax.scan`` over iterations with the core's parameters closed over.

Shape letters: B batch, T new tokens, S cache slots, D hidden, N/K query/kv heads, H head
width, V vocabulary; I outer iterations, J block slots per iteration (the inner stack's
``inner_iterations * inner_layers`` calls, then the core's ``n_core``).

Masks, positions and padding follow the decoder (LEFT padding, positions count real tokens).
The KV cache holds one slab per (iteration, slot) of the recurrence, so decoding token by
token with it gives the same logits as a full forward; a cache is built for one trip count.

Training: ``grad_iterations`` (default ``config.backprop_depth``) makes the state entering the
last k iterations a constant for the gradient (truncated backprop; values are unchanged);
``recurrence=(n_nograd, n_grad)`` runs a traced trip count (Huginn's sampled recurrence, see
:func:`sample_recurrence`): ``n_nograd`` iterations in a ``while_loop`` on stop-gradient'ed
parameters, then a static ``backprop_depth``-long scan whose steps past ``n_grad`` are masked.
Inference: :meth:`LoopedLM.hidden_converged` stops iterating once the relative change of the
state is below a tolerance for every real token (``while_loop`` under a static maximum);
:meth:`LoopedLM.iteration_logits` with :func:`exit_distribution` / :func:`expected_exit_logits`
/ :func:`threshold_exit_step` is Ouro's exit gate.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.models.decoder.modeling import (MLP, Attention, RMSNorm, attention_layout, dense,
                                            rope_cos_sin, unembed)
from jaxlab.models.looped.config import LoopedConfig, LoopedConfigError

_INIT_STD = 0.02


def _detach_where(flag: jax.Array, x: jax.Array) -> jax.Array:
  """``x`` with its gradient cut where ``flag`` (a traced bool) holds; the value is ``x``."""
  return jnp.where(flag, jax.lax.stop_gradient(x), x)


def _normal(rngs: nnx.Rngs, shape, dtype):
  return _INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32).astype(dtype)


# -- KV cache -------------------------------------------------------------------------------------


@flax.struct.dataclass
class LoopedCache:
  """Keys and values of every attention call of the unrolled model, plus the slot mask.

  Attributes:
    prelude_k, prelude_v: ``[n_prelude, B, K, S, H]`` (the decoder's cache layout).
    core_k, core_v: ``[I, J, B, K, S, H]``, indexed by (iteration, slot).
    coda_k, coda_v: ``[n_coda, B, K, S, H]``.
    mask_bs: ``[B, S]`` bool, slot holds a real token.
    index: ``[]`` int32, the next slot to write.
  """
  prelude_k: jax.Array
  prelude_v: jax.Array
  core_k: jax.Array
  core_v: jax.Array
  coda_k: jax.Array
  coda_v: jax.Array
  mask_bs: jax.Array
  index: jax.Array

  @classmethod
  def init(cls, config: LoopedConfig, batch: int, max_len: int,
           num_iterations: int | None = None, dtype=None) -> "LoopedCache":
    """An empty cache of ``max_len`` slots for ``num_iterations`` (default: the config's)."""
    dtype = jnp.dtype(dtype or config.dtype)
    it = num_iterations or config.num_iterations
    tail = (batch, config.num_kv_heads, max_len, config.head_dim)
    z = lambda *lead: jnp.zeros(lead + tail, dtype)
    return cls(prelude_k=z(config.n_prelude), prelude_v=z(config.n_prelude),
               core_k=z(it, config.slots_per_iteration), core_v=z(it, config.slots_per_iteration),
               coda_k=z(config.n_coda), coda_v=z(config.n_coda),
               mask_bs=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32))

  @property
  def max_len(self) -> int:
    return self.mask_bs.shape[1]

  @property
  def num_iterations(self) -> int:
    return self.core_k.shape[0]


@flax.struct.dataclass
class LoopStates:
  """The residual stream along the unrolled depth (compute dtype).

  Attributes:
    prelude: ``[n_prelude + 1, B, T, D]``: the scaled embeddings, then each prelude block.
    core: ``[I, J, B, T, D]``: the output of every block call in iteration i, slot j (before
      the per-iteration norm); the spec's ``h_{t,l}``.
    iterates: ``[I, B, T, D]``: the state ``s_t`` passed to the next iteration.
    coda: ``[n_coda, B, T, D]``: each coda block's output.
  """
  prelude: jax.Array
  core: jax.Array
  iterates: jax.Array
  coda: jax.Array


# -- blocks ---------------------------------------------------------------------------------------


class LoopAttention(Attention):
  """The decoder's attention, optionally with HRM's per-channel sigmoid gate on each head's
  output: ``o(sigmoid(x W_g + b_g) * attn(x))``."""

  def __init__(self, config: LoopedConfig, rngs: nnx.Rngs):
    super().__init__(config.block_config, rngs)
    pd = jnp.dtype(config.param_dtype)
    d, n, h = config.hidden_size, config.num_heads, config.head_dim
    self.gate_dnh = nnx.Param(_normal(rngs, (d, n, h), pd)) if config.attn_output_gate else None
    self.gate_bias_nh = (nnx.Param(jnp.zeros((n, h), pd))
                         if config.attn_output_gate and config.attention_bias else None)

  def __call__(self, x_btd, cos_bth, sin_bth, allowed_bts, k_cache, v_cache, index,
               causal=False):
    out, k_cache, v_cache = self.heads(x_btd, cos_bth, sin_bth, allowed_bts, k_cache, v_cache,
                                       index, causal=causal)
    if self.gate_dnh is not None:
      dt = jnp.dtype(self.config.dtype)
      g = dense(x_btd.astype(dt), self.gate_dnh[...].astype(dt))
      if self.gate_bias_nh is not None:
        g = g + self.gate_bias_nh[...].astype(dt)
      out = jax.nn.sigmoid(g) * out
    return self.project(out), k_cache, v_cache


class LoopBlock(nnx.Module):
  """Attention then SwiGLU MLP, each wrapped by the config's norm placement (``block_norm``)."""

  def __init__(self, config: LoopedConfig, rngs: nnx.Rngs):
    pd = jnp.dtype(config.param_dtype)
    p = config.block_norm
    self.placement = p

    def norm(when):
      return (RMSNorm(config.hidden_size, config.rms_norm_eps, pd, weighted=config.norm_weights)
              if when else None)

    has_in = p in ("pre", "sandwich_huginn", "pre_post_ouro")
    has_out = p in ("post", "sandwich_huginn", "pre_post_ouro")
    self.attn_in_norm, self.attn_out_norm = norm(has_in), norm(has_out)
    self.attn = LoopAttention(config, rngs)
    self.mlp_in_norm, self.mlp_out_norm = norm(has_in), norm(has_out)
    self.mlp = MLP(config.block_config, rngs)

  def _wrap(self, x, h_fn, n_in, n_out):
    h = h_fn(x if n_in is None else n_in(x))
    if self.placement == "pre_post_ouro":
      return x + n_out(h).astype(x.dtype)
    y = x + h.astype(x.dtype)
    return y if n_out is None else n_out(y)

  def __call__(self, x_btd, cos_bth, sin_bth, allowed_bts, k_cache, v_cache, index):
    kv = {}

    def attn(h):
      out, kv["k"], kv["v"] = self.attn(h, cos_bth, sin_bth, allowed_bts, k_cache, v_cache,
                                        index, causal=True)  # a causal layout, as the decoder's
      return out

    x_btd = self._wrap(x_btd, attn, self.attn_in_norm, self.attn_out_norm)
    x_btd = self._wrap(x_btd, self.mlp, self.mlp_in_norm, self.mlp_out_norm)
    return x_btd, kv["k"], kv["v"]


# -- the model ------------------------------------------------------------------------------------


class LoopedLM(nnx.Module):
  """Embedding, prelude, recurrent core (with optional inner stack), coda, head."""

  def __init__(self, config: LoopedConfig, *, rngs: nnx.Rngs):
    c = config
    pd = jnp.dtype(c.param_dtype)
    d = c.hidden_size
    self.config = c
    blocks = lambda n: nnx.List([LoopBlock(c, rngs) for _ in range(n)])
    norm = lambda: RMSNorm(d, c.rms_norm_eps, pd, weighted=c.norm_weights)
    self.embedding_vd = nnx.Param(_normal(rngs, (c.vocab_size, d), pd))
    self.prelude = blocks(c.n_prelude)
    self.inner = blocks(c.inner_layers)
    self.core = blocks(c.n_core)
    self.coda = blocks(c.n_coda)
    # HRM's low-level initial state; frozen there, so gradients are stopped in the forward.
    self.inner_init_d = nnx.Param(jnp.zeros((d,), pd)) if c.inner_layers else None
    self.adapter_2dd = (nnx.Param(_normal(rngs, (2 * d, d), pd))
                        if c.injection in ("concat_adapter", "gated") else None)
    self.adapter_bias_d = nnx.Param(jnp.zeros((d,), pd)) if c.injection == "gated" else None
    self.inner_norm = norm() if c.inner_layers and c.iter_norm == "rmsnorm" else None
    self.iter_norm = norm() if c.iter_norm == "rmsnorm" else None
    self.final_norm = norm() if c.final_norm else None
    self.lm_head_dv = (None if c.tie_word_embeddings else
                       nnx.Param(_normal(rngs, (d, c.vocab_size), pd)))
    # Ouro's exit head, lambda_t = sigmoid(w . s_t + b), read from each iterate.
    self.exit_gate_d = nnx.Param(_normal(rngs, (d,), pd)) if c.exit_gate else None
    self.exit_gate_bias = nnx.Param(jnp.zeros((1,), pd)) if c.exit_gate else None

  # -- pieces -------------------------------------------------------------------------------------

  def embed(self, tokens_bt: jax.Array) -> jax.Array:
    """Embedding rows ``[B, T, D]`` (compute dtype), before ``embedding_scale``."""
    return self.embedding_vd[...].astype(jnp.dtype(self.config.dtype))[tokens_bt]

  def inject(self, s_btd: jax.Array, e_btd: jax.Array) -> jax.Array:
    """The core's input from the state and the injected signal (``config.injection``)."""
    kind = self.config.injection
    if kind == "none":
      return s_btd
    if kind == "add":
      return s_btd + e_btd
    dt = jnp.dtype(self.config.dtype)
    both = jnp.concatenate([s_btd, e_btd], axis=-1).astype(dt)
    mixed = dense(both, self.adapter_2dd[...].astype(dt))
    if kind == "concat_adapter":
      return mixed.astype(s_btd.dtype)
    g = jax.nn.sigmoid(mixed + self.adapter_bias_d[...].astype(dt)).astype(s_btd.dtype)
    return g * s_btd + (1 - g) * e_btd

  def initial_state(self, e_btd: jax.Array, positions_bt: jax.Array,
                    key: jax.Array | None = None) -> jax.Array:
    """``s_0`` ``[B, T, D]``; the random draw of a token depends only on (key, its position)."""
    c = self.config
    if c.state_init == "zeros":
      return jnp.zeros_like(e_btd)
    if c.state_init == "copy_e":
      return e_btd
    if c.state_init_std == 0:
      return jnp.zeros_like(e_btd)
    key = jax.random.key(c.state_seed) if key is None else key
    keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(positions_bt.reshape(-1))
    draw = jax.vmap(lambda k: jax.random.truncated_normal(k, -3.0, 3.0, (c.hidden_size,),
                                                          jnp.float32))(keys)
    return (c.state_init_std * draw).reshape(e_btd.shape).astype(e_btd.dtype)

  def _run(self, blocks, x, cos, sin, allowed, k_lbksh, v_lbksh, index, states):
    """Applies ``blocks`` in order; caches are stacked ``[len(blocks), ...]`` or None."""
    new_k, new_v = [], []
    for i, blk in enumerate(blocks):
      kc = None if k_lbksh is None else k_lbksh[i]
      vc = None if v_lbksh is None else v_lbksh[i]
      x, kc, vc = blk(x, cos, sin, allowed, kc, vc, index)
      new_k.append(kc)
      new_v.append(vc)
      states.append(x)
    if k_lbksh is None:
      return x, None, None
    if not blocks:
      return x, k_lbksh, v_lbksh
    return x, jnp.stack(new_k), jnp.stack(new_v)

  def _iteration(self, s, z, e, cos, sin, allowed, k_jbksh, v_jbksh, index, inner_nograd=None):
    """One outer iteration: ``(s, z, k, v, slot_states_jbtd)``.

    ``inner_nograd`` (traced int or None): the inner state leaving the first that many inner
    iterations is a gradient constant (HRM's ``L_bp_cycles``); 0 cuts nothing.
    """
    c = self.config
    states, ks, vs = [], [], []
    off = 0
    source = e
    if c.inner_layers:
      for l in range(c.inner_iterations):
        sl = slice(off, off + c.inner_layers)
        h, k, v = self._run(self.inner, z + s, cos, sin, allowed,
                            None if k_jbksh is None else k_jbksh[sl],
                            None if v_jbksh is None else v_jbksh[sl], index, states)
        z = h if self.inner_norm is None else self.inner_norm(h)
        if inner_nograd is not None:
          z = _detach_where(inner_nograd == l + 1, z)
        ks.append(k)
        vs.append(v)
        off += c.inner_layers
      source = z
    sl = slice(off, off + c.n_core)
    h, k, v = self._run(self.core, self.inject(s, source), cos, sin, allowed,
                        None if k_jbksh is None else k_jbksh[sl],
                        None if v_jbksh is None else v_jbksh[sl], index, states)
    ks.append(k)
    vs.append(v)
    s = h if self.iter_norm is None else self.iter_norm(h)
    if k_jbksh is not None:
      k_jbksh, v_jbksh = jnp.concatenate(ks), jnp.concatenate(vs)
    return s, z, k_jbksh, v_jbksh, jnp.stack(states)

  # -- forward ------------------------------------------------------------------------------------

  def hidden(self, tokens_bt: jax.Array | None = None, mask_bt: jax.Array | None = None,
             positions_bt: jax.Array | None = None, cache: LoopedCache | None = None, *,
             inputs_embeds_btd: jax.Array | None = None, return_states: bool = False,
             num_iterations: int | None = None, key: jax.Array | None = None,
             grad_iterations: int | None = None, recurrence=None):
    """Hidden states ``[B, T, D]`` before the head, and the updated cache.

    Args:
      tokens_bt: ids ``[B, T]``; or None when ``inputs_embeds_btd`` ``[B, T, D]`` is given
        (it is multiplied by ``embedding_scale`` like the embedding rows).
      mask_bt: ``[B, T]``, 1 for real tokens (default: all real).
      positions_bt: RoPE positions ``[B, T]`` (default: real tokens before, as the decoder).
      cache: None for a cache-free causal forward; else the tokens go to slots
        ``[cache.index, cache.index + T)`` of every (iteration, slot) slab.
      return_states: also return :class:`LoopStates` (the state after every block call).
      num_iterations: trip count of this call (static; default: the cache's, else the
        config's).
      key: PRNG key of a ``trunc_normal`` initial state (default: ``config.state_seed``).
      grad_iterations: truncation window k (static; default ``config.backprop_depth``): the
        state entering the last k iterations is a gradient constant, so gradients flow only
        through those k (and through ``e`` into them); None or k >= trip count: full backprop.
      recurrence: ``(n_nograd, n_grad)`` traced ints (from :func:`sample_recurrence`): run
        ``n_nograd`` gradient-free iterations, then ``n_grad <= config.backprop_depth`` with
        gradients; replaces ``num_iterations`` / ``grad_iterations``; no cache or states.

    Returns:
      ``(h_btd, cache)`` or ``(h_btd, cache, states)``.
    """
    c = self.config
    iters = num_iterations or (cache.num_iterations if cache is not None else c.num_iterations)
    if iters < 1:
      raise LoopedConfigError(f"looped call: num_iterations={iters} is invalid; expected >= 1")
    if cache is not None and cache.num_iterations != iters:
      raise ValueError(f"LoopedLM: the cache was built for {cache.num_iterations} iterations, "
                       f"this call runs {iters}")
    window = c.backprop_depth if grad_iterations is None else grad_iterations
    if window is not None and window < 1:
      raise LoopedConfigError(f"looped call: grad_iterations={window} is invalid; expected "
                              ">= 1 (the truncation window)")
    if recurrence is not None and (cache is not None or return_states):
      raise ValueError("LoopedLM: a sampled recurrence (recurrence=...) runs without a cache "
                       "and without return_states")
    f = self._front(tokens_bt, mask_bt, positions_bt, cache, inputs_embeds_btd, key)
    x, e, s0, z0, cos, sin, allowed, index, mask_bs, pre_states, pk, pv = f
    b, t = x.shape[:2]
    dt = x.dtype

    if recurrence is not None:
      s = self._sampled_recurrence(s0, z0, e, cos, sin, allowed, *recurrence)
      core_kv = captured = None
    else:
      nograd_in = jnp.asarray(c.inner_nograd_counts(iters), jnp.int32)

      def body(carry, xs):
        s, z = carry
        kv, thr = xs
        kc, vc = (None, None) if kv is None else kv
        s, z, kc, vc, slot_states = self._iteration(s, z, e, cos, sin, allowed, kc, vc, index,
                                                    thr if c.truncate_inner else None)
        ys = (None if kc is None else (kc, vc),
              (slot_states, s) if return_states else None)
        return (s, z), ys

      kv_all = None if cache is None else (cache.core_k, cache.core_v)
      split = iters - window if window is not None and window < iters else 0
      carry, pieces = (s0, z0), []
      for lo, hi in ((0, split), (split, iters)):
        if hi == lo:
          continue
        if lo:  # the state entering the window is a constant for the gradient
          carry = jax.lax.stop_gradient(carry)
        kv = None if kv_all is None else jax.tree_util.tree_map(lambda a: a[lo:hi], kv_all)
        carry, ys = jax.lax.scan(body, carry, (kv, nograd_in[lo:hi]), length=hi - lo)
        pieces.append(ys)
      s = carry[0]
      core_kv, captured = (pieces[0] if len(pieces) == 1 else
                           jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *pieces))

    coda_in = s if not c.coda_norm else self.final_norm(s)
    coda_states = []
    h, ck, cv = self._run(self.coda, coda_in, cos, sin, allowed,
                          None if cache is None else cache.coda_k,
                          None if cache is None else cache.coda_v, index, coda_states)
    if self.final_norm is not None:
      h = self.final_norm(h)
    if cache is not None:
      cache = LoopedCache(prelude_k=pk, prelude_v=pv, core_k=core_kv[0], core_v=core_kv[1],
                          coda_k=ck, coda_v=cv, mask_bs=mask_bs, index=cache.index + t)
    if not return_states:
      return h, cache
    empty = jnp.zeros((0, b, t, c.hidden_size), dt)
    states = LoopStates(prelude=jnp.stack(pre_states), core=captured[0], iterates=captured[1],
                        coda=jnp.stack(coda_states) if coda_states else empty)
    return h, cache, states

  def _front(self, tokens_bt, mask_bt, positions_bt, cache, inputs_embeds_btd, key):
    """Embedding, attention layout, prelude and the initial states of a call."""
    c = self.config
    dt = jnp.dtype(c.dtype)
    if (tokens_bt is None) == (inputs_embeds_btd is None):
      raise ValueError("LoopedLM: pass exactly one of tokens_bt [B, T] or inputs_embeds_btd "
                       f"[B, T, D]; got {'both' if tokens_bt is not None else 'neither'}")
    x = self.embed(tokens_bt) if tokens_bt is not None else inputs_embeds_btd.astype(dt)
    if x.ndim != 3 or x.shape[-1] != c.hidden_size:
      raise ValueError(f"LoopedLM: inputs must be ids [B, T] or embeddings [B, T, "
                       f"D={c.hidden_size}]; got shape {list(x.shape)}")
    x = x * jnp.asarray(c.embedding_scale, dt)
    b, t = x.shape[:2]
    mask_bt = jnp.ones((b, t), bool) if mask_bt is None else mask_bt.astype(bool)
    positions_bt, allowed, mask_bs = attention_layout(mask_bt, positions_bt, cache, t)
    index = None if cache is None else cache.index
    cos, sin = rope_cos_sin(c.block_config, positions_bt)

    pre_states = [x]
    e, pk, pv = self._run(self.prelude, x, cos, sin, allowed,
                          None if cache is None else cache.prelude_k,
                          None if cache is None else cache.prelude_v, index, pre_states)
    s0 = self.initial_state(e, positions_bt, key)
    z0 = e * 0
    if self.inner_init_d is not None:
      z0 = z0 + jax.lax.stop_gradient(self.inner_init_d[...]).astype(dt)
    return x, e, s0, z0, cos, sin, allowed, index, mask_bs, pre_states, pk, pv

  def _sampled_recurrence(self, s0, z0, e, cos, sin, allowed, n_nograd, n_grad):
    """``n_nograd`` gradient-free iterations (traced count), then ``n_grad`` with gradients."""
    window = self.config.backprop_depth
    if window is None:
      raise LoopedConfigError("looped call: a sampled recurrence needs config.backprop_depth "
                              "(the static length of its gradient segment); got None")
    # A parameter copy with no tangent, so the dynamic-length loop needs no reverse pass.
    graphdef, state = nnx.split(self)
    frozen = nnx.merge(graphdef, jax.lax.stop_gradient(state))
    e_const = jax.lax.stop_gradient(e)

    def free(_, carry):
      return frozen._iteration(*carry, e_const, cos, sin, allowed, None, None, None)[:2]

    carry = jax.lax.fori_loop(0, n_nograd, free, jax.lax.stop_gradient((s0, z0)))
    carry = jax.lax.stop_gradient(carry)

    def body(carry, i):
      s, z = self._iteration(*carry, e, cos, sin, allowed, None, None, None)[:2]
      keep = i < n_grad
      return (jnp.where(keep, s, carry[0]), jnp.where(keep, z, carry[1])), None

    (s, _), _ = jax.lax.scan(body, carry, jnp.arange(window))
    return s

  def readout(self, s_btd: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array,
              allowed_bts: jax.Array) -> jax.Array:
    """The coda lens: hidden states before the head from a state ``s`` (no cache)."""
    c = self.config
    h = s_btd if not c.coda_norm else self.final_norm(s_btd)
    h = self._run(self.coda, h, cos_bth, sin_bth, allowed_bts, None, None, None, [])[0]
    return h if self.final_norm is None else self.final_norm(h)

  def hidden_converged(self, tokens_bt: jax.Array | None = None,
                       mask_bt: jax.Array | None = None, positions_bt: jax.Array | None = None,
                       *, tol: float, max_iterations: int | None = None,
                       inputs_embeds_btd: jax.Array | None = None,
                       key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Iterates until the state stops moving: ``(h_btd, iterations_run)``.

    After each iteration, ``delta = max over real tokens of |s_t - s_{t-1}| / |s_t|``
    (Euclidean norms over D); the loop stops after the first iteration with ``delta < tol``,
    or after ``max_iterations`` (static; default ``config.num_iterations``). ``tol = 0`` never
    stops early. A ``lax.while_loop``: jit-able, not reverse-differentiable, no cache.
    """
    c = self.config
    cap = max_iterations or c.num_iterations
    if cap < 1:
      raise LoopedConfigError(f"looped call: max_iterations={cap} is invalid; expected >= 1")
    f = self._front(tokens_bt, mask_bt, positions_bt, None, inputs_embeds_btd, key)
    _, e, s0, z0, cos, sin, allowed = f[:7]
    real_bt = allowed[:, -1, :] if mask_bt is None else jnp.asarray(mask_bt, bool)

    def cond(carry):
      i, _, _, delta = carry
      return (i < cap) & (delta >= tol)

    def body(carry):
      i, s, z, _ = carry
      s_new, z_new = self._iteration(s, z, e, cos, sin, allowed, None, None, None)[:2]
      a, b = s_new.astype(jnp.float32), s.astype(jnp.float32)
      rel = jnp.linalg.norm(a - b, axis=-1) / (jnp.linalg.norm(a, axis=-1) + 1e-30)
      return i + 1, s_new, z_new, jnp.max(jnp.where(real_bt, rel, 0.0))

    init = (jnp.zeros((), jnp.int32), s0, z0, jnp.asarray(jnp.inf, jnp.float32))
    steps, s, _, _ = jax.lax.while_loop(cond, body, init)
    return self.readout(s, cos, sin, allowed), steps

  def exit_probabilities(self, iterates_ibtd: jax.Array) -> jax.Array:
    """Ouro's per-iteration exit gate ``lambda = sigmoid(w . s_t + b)``: float32 ``[I, B, T]``."""
    if self.exit_gate_d is None:
      raise LoopedConfigError("looped model: exit_probabilities needs config.exit_gate=True")
    w = self.exit_gate_d[...].astype(jnp.float32)
    z = jnp.einsum("...d,d->...", iterates_ibtd.astype(jnp.float32), w)
    return jax.nn.sigmoid(z + self.exit_gate_bias[...].astype(jnp.float32)[0])

  def iteration_logits(self, tokens_bt: jax.Array | None = None,
                       mask_bt: jax.Array | None = None, positions_bt: jax.Array | None = None,
                       *, inputs_embeds_btd: jax.Array | None = None,
                       num_iterations: int | None = None, key: jax.Array | None = None):
    """Logits read out after every iteration, and the exit gate's lambdas.

    Returns:
      ``(logits_ibtv, lambda_ibt)``; ``lambda_ibt`` is None without ``config.exit_gate``.
      ``logits_ibtv[-1]`` equals the plain forward's logits.
    """
    _, _, states = self.hidden(tokens_bt, mask_bt, positions_bt, None,
                               inputs_embeds_btd=inputs_embeds_btd, return_states=True,
                               num_iterations=num_iterations, key=key)
    t = states.iterates.shape[2]
    mask = (jnp.ones(states.iterates.shape[1:3], bool) if mask_bt is None
            else jnp.asarray(mask_bt, bool))
    positions_bt, allowed, _ = attention_layout(mask, positions_bt, None, t)
    cos, sin = rope_cos_sin(self.config.block_config, positions_bt)
    logits = jax.lax.map(lambda s: self.logits(self.readout(s, cos, sin, allowed)),
                         states.iterates)
    gate = self.exit_probabilities(states.iterates) if self.exit_gate_d is not None else None
    return logits, gate

  def logits(self, h_btd: jax.Array) -> jax.Array:
    """Float32 logits ``[B, T, V]``."""
    return unembed(h_btd, self.embedding_vd, self.lm_head_dv, self.config.dtype)

  def __call__(self, tokens_bt=None, mask_bt=None, positions_bt=None, cache=None, *,
               inputs_embeds_btd=None, return_states: bool = False,
               num_iterations: int | None = None, key: jax.Array | None = None,
               grad_iterations: int | None = None, recurrence=None):
    """``(logits_btv, cache)`` or ``(logits_btv, cache, states)``; see :meth:`hidden`."""
    out = self.hidden(tokens_bt, mask_bt, positions_bt, cache,
                      inputs_embeds_btd=inputs_embeds_btd, return_states=return_states,
                      num_iterations=num_iterations, key=key, grad_iterations=grad_iterations,
                      recurrence=recurrence)
    return (self.logits(out[0]),) + tuple(out[1:])

  def init_cache(self, batch: int, max_len: int, num_iterations: int | None = None,
                 dtype=None) -> LoopedCache:
    """An empty :class:`LoopedCache` (what the sampler asks a model for)."""
    return LoopedCache.init(self.config, batch, max_len, num_iterations, dtype)


def init_looped(config: LoopedConfig, seed: int = 0) -> LoopedLM:
  """A randomly initialised looped model (normal(0.02) weights, unit norms, zero biases)."""
  return LoopedLM(config, rngs=nnx.Rngs(seed))


def abstract_looped(config: LoopedConfig) -> LoopedLM:
  """The model's structure with ``ShapeDtypeStruct`` leaves: nothing is allocated."""
  return nnx.eval_shape(lambda: LoopedLM(config, rngs=nnx.Rngs(0)))


@functools.partial(jax.jit, static_argnums=0, static_argnames=("num_iterations",))
def _forward(graphdef, state, tokens_bt, mask_bt, positions_bt, inputs_embeds_btd, key,
             num_iterations=None):
  model = nnx.merge(graphdef, state)
  logits, _ = model(tokens_bt, mask_bt, positions_bt, inputs_embeds_btd=inputs_embeds_btd,
                    num_iterations=num_iterations, key=key)
  return logits


def forward(model: LoopedLM, tokens_bt=None, mask_bt=None, positions_bt=None, *,
            inputs_embeds_btd=None, num_iterations: int | None = None,
            key: jax.Array | None = None) -> jax.Array:
  """Jitted cache-free forward: float32 logits ``[B, T, V]``."""
  graphdef, state = nnx.split(model)
  if mask_bt is None:
    like = tokens_bt if tokens_bt is not None else inputs_embeds_btd
    if like is None:
      raise ValueError("forward: pass exactly one of tokens_bt [B, T] or inputs_embeds_btd")
    mask_bt = jnp.ones(jnp.shape(like)[:2], bool)
  return _forward(graphdef, state, tokens_bt, mask_bt, positions_bt, inputs_embeds_btd, key,
                  num_iterations=num_iterations)


# -- training-time recurrence and Ouro's exit rules ------------------------------------------------


def sample_recurrence(key: jax.Array, config: LoopedConfig) -> tuple[jax.Array, jax.Array]:
  """``(n_nograd, n_grad)`` int32 for one training step, per ``config.train_recurrence``.

  "fixed": ``(T - k, k)`` with ``k = min(backprop_depth or T, T)``. "lognormal_poisson"
  (Huginn): with ``k = backprop_depth``, ``m = max(T - k, 0) + k``,
  ``tau ~ LogNormal(log m - sigma^2 / 2, sigma)`` (mean m), ``n = 1 + Poisson(tau)``; then
  ``n_nograd = max(n - k, 0)``, ``n_grad = min(k, n)``. Pass the pair as ``recurrence=``.
  """
  c = config
  if c.train_recurrence == "fixed":
    k = min(c.backprop_depth or c.num_iterations, c.num_iterations)
    return jnp.asarray(c.num_iterations - k, jnp.int32), jnp.asarray(k, jnp.int32)
  k = c.backprop_depth
  mean = max(c.num_iterations - k, 0) + k
  sigma = c.recurrence_sigma
  k_tau, k_n = jax.random.split(key)
  tau = jnp.exp(jnp.log(mean) - sigma ** 2 / 2 + sigma * jax.random.normal(k_tau, ()))
  n = jax.random.poisson(k_n, tau).astype(jnp.int32) + 1
  return jnp.maximum(n - k, 0), jnp.minimum(k, n)


def exit_distribution(lambda_ibt: jax.Array) -> jax.Array:
  """Exit probabilities ``p(t) = lambda_t * prod_{j<t} (1 - lambda_j)`` ``[I, B, T]``; the
  last iteration takes all the mass left, so ``p`` sums to 1 over ``I``."""
  lam = lambda_ibt.astype(jnp.float32)
  survive = jnp.cumprod(1.0 - lam, axis=0)
  before = jnp.concatenate([jnp.ones_like(survive[:1]), survive[:-1]], axis=0)
  p = lam * before
  return p.at[-1].set(before[-1])


def expected_exit_logits(logits_ibtv: jax.Array, p_ibt: jax.Array) -> jax.Array:
  """Ouro's expected-exit readout ``sum_t p(t) logits_t``: ``[B, T, V]``."""
  return jnp.einsum("ibt,ibtv->btv", p_ibt.astype(jnp.float32),
                    logits_ibtv.astype(jnp.float32))


def threshold_exit_step(p_ibt: jax.Array, threshold: float) -> jax.Array:
  """Per token, the first iteration (0-based) whose exit CDF reaches ``threshold``; the last
  iteration when none does. ``[B, T]`` int32."""
  cdf = jnp.cumsum(p_ibt.astype(jnp.float32), axis=0)
  reached = (cdf >= threshold).at[-1].set(True)
  return jnp.argmax(reached, axis=0).astype(jnp.int32)


def select_exit_logits(logits_ibtv: jax.Array, step_bt: jax.Array) -> jax.Array:
  """``logits_ibtv[step_bt[b, t], b, t]``: each token's logits at its exit iteration."""
  return jnp.take_along_axis(logits_ibtv, step_bt[None, :, :, None], axis=0)[0]


def exit_gate_loss(logits_ibtv: jax.Array, lambda_ibt: jax.Array, targets_bt: jax.Array,
                   weights_bt: jax.Array, beta: float = 0.0) -> jax.Array:
  """Ouro's entropy-regularised objective ``sum_t p(t) CE_t - beta H(p)``, weighted mean over
  tokens (``weights_bt``, e.g. the loss mask)."""
  logp = jax.nn.log_softmax(logits_ibtv.astype(jnp.float32), axis=-1)
  ce_ibt = -jnp.take_along_axis(logp, targets_bt[None, :, :, None], axis=-1)[..., 0]
  p = exit_distribution(lambda_ibt)
  entropy = -jnp.sum(p * jnp.log(jnp.clip(p, 1e-30)), axis=0)
  per_token = jnp.sum(p * ce_ibt, axis=0) - beta * entropy
  w = weights_bt.astype(jnp.float32)
  return jnp.sum(per_token * w) / jnp.maximum(jnp.sum(w), 1.0)
