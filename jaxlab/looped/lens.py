"""Logit lens and coda lens at every (iteration, slot) of the recurrence (spec §1.5 (d) 5).

Both decode an intermediate state ``h`` as if the recurrence had stopped there:

* logit lens: ``head(final_norm(post(h)))``: only the model's closing norms and unembedding
  (``post`` is the per-iteration norm, each absent norm being the identity);
* coda lens: ``head(final_norm(coda(coda_norm(post(h)))))``: the whole tail of the model, the
  coda's attention included, on the full sequence of states at that (iteration, slot) (what
  Huginn's ``predict_from_latents`` does).

At the last slot of the last iteration the coda lens is the model's own output, and so is the
logit lens for a model without coda blocks or a second norm before them. Each decoded
distribution ``p`` is scored against the target tokens (rank of the target, top-1 accuracy)
and against the model's final distribution ``q`` (``KL(p || q)``, top-1 agreement), plus its
entropy, one (iteration, slot) at a time so that only one ``[B, T, V]`` is alive at once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab.looped.replay import layout
from jaxlab.models.looped.modeling import LoopedLM

LENSES = ("logit", "coda")
METRICS = ("rank", "correct", "kl_to_final", "agree_final", "entropy")


def _post(model: LoopedLM, h):
  return h if model.iter_norm is None else model.iter_norm(h)


def logit_lens(model: LoopedLM, h_btd: jax.Array) -> jax.Array:
  """Logits ``[B, T, V]`` of the logit lens (see the module docstring)."""
  h = _post(model, h_btd)
  if model.final_norm is not None:
    h = model.final_norm(h)
  return model.logits(h)


def coda_lens(model: LoopedLM, h_btd: jax.Array, cos, sin, allowed,
              post: bool = True) -> jax.Array:
  """Logits ``[B, T, V]`` of the coda lens; ``cos, sin, allowed`` from
  :func:`jaxlab.looped.replay.layout`. ``post=False`` skips the per-iteration norm (for a
  state that already went through it, such as ``LoopStates.iterates``): the model's tail."""
  c = model.config
  h = _post(model, h_btd) if post else h_btd
  if c.coda_norm:
    h = model.final_norm(h)
  for blk in model.coda:
    h, _, _ = blk(h, cos, sin, allowed, None, None, None)
  if model.final_norm is not None:
    h = model.final_norm(h)
  return model.logits(h)


def score(logits_btv: jax.Array, final_btv: jax.Array, targets_bt: jax.Array):
  """Per-token scores of one decoded distribution ``p = softmax(logits)``.

  Returns ``{rank, correct, kl_to_final, agree_final, entropy}`` each ``[B, T]``: ``rank`` is
  the number of tokens with a strictly larger logit than the target (0 = top-1),
  ``correct = rank == 0``, ``kl_to_final = sum_v p log(p / q)`` with ``q`` the model's final
  distribution, ``agree_final`` the top-1 tokens match, ``entropy = -sum_v p log p`` (nats).
  """
  logp = jax.nn.log_softmax(logits_btv.astype(jnp.float32), -1)
  logq = jax.nn.log_softmax(final_btv.astype(jnp.float32), -1)
  p = jnp.exp(logp)
  tgt = jnp.take_along_axis(logits_btv, targets_bt[..., None], -1)
  rank = jnp.sum(logits_btv > tgt, -1)
  return dict(rank=rank, correct=(rank == 0).astype(jnp.float32),
              kl_to_final=jnp.sum(p * (logp - logq), -1),
              agree_final=(jnp.argmax(logits_btv, -1) ==
                           jnp.argmax(final_btv, -1)).astype(jnp.float32),
              entropy=-jnp.sum(p * logp, -1))


def _lens_scores(model, core_ijbtd, final_btv, targets_bt, mask_bt, which):
  _, cos, sin, allowed = layout(model.config.block_config, mask_bt)
  i, j = core_ijbtd.shape[:2]
  flat = core_ijbtd.reshape((i * j,) + core_ijbtd.shape[2:])
  if which == "logit":
    decode = lambda h: logit_lens(model, h)
  else:
    decode = lambda h: coda_lens(model, h, cos, sin, allowed)
  out = jax.lax.map(lambda h: score(decode(h), final_btv, targets_bt), flat)
  return {k: v.reshape((i, j) + v.shape[1:]) for k, v in out.items()}


@functools.partial(jax.jit, static_argnums=(0, 6))
def _lens_jit(graphdef, state, core, final, targets, mask, which):
  return _lens_scores(nnx.merge(graphdef, state), core, final, targets, mask, which)


def next_token_targets(tokens_bt: np.ndarray, mask_bt: np.ndarray | None = None):
  """``(targets_bt, valid_bt)`` for next-token prediction: position ``i`` predicts token
  ``i + 1``; the last position and padded ones are not valid (target 0 there)."""
  tokens = np.asarray(tokens_bt)
  mask = np.ones(tokens.shape, bool) if mask_bt is None else np.asarray(mask_bt, bool)
  targets = np.zeros_like(tokens)
  targets[:, :-1] = tokens[:, 1:]
  valid = np.zeros(tokens.shape, bool)
  valid[:, :-1] = mask[:, :-1] & mask[:, 1:]
  return targets, valid


def lens_table(model: LoopedLM, core_ijbtd, final_logits_btv, targets_bt, mask_bt,
               valid_bt=None, lenses=LENSES) -> dict[str, dict[str, np.ndarray]]:
  """Lens scores per (iteration, slot).

  Args:
    model: the looped model whose states were captured.
    core_ijbtd: ``LoopStates.core`` of the run, ``[I, J, B, T, D]``.
    final_logits_btv: the run's own logits (the reference distribution ``q``).
    targets_bt: target token per position (e.g. :func:`next_token_targets`).
    mask_bt: real tokens (the attention layout of the coda lens).
    valid_bt: positions to average over (default ``mask_bt``).
    lenses: a subset of :data:`LENSES`.

  Returns:
    ``{lens: {metric: [I, J] mean over valid positions, metric + "_tokens": [I, J, B, T]}}``
    for the metrics of :func:`score` (``rank`` is also given as ``mean_log_rank``, the mean of
    ``log(1 + rank)``).
  """
  mask = jnp.asarray(mask_bt, bool)
  valid = np.asarray(mask_bt if valid_bt is None else valid_bt, bool)
  graphdef, state = nnx.split(model)
  out = {}
  for which in lenses:
    if which not in LENSES:
      raise ValueError(f"lens_table: unknown lens {which!r}; expected one of {LENSES}")
    raw = _lens_jit(graphdef, state, jnp.asarray(core_ijbtd), jnp.asarray(final_logits_btv),
                    jnp.asarray(targets_bt), mask, which)
    table = {}
    n = max(int(valid.sum()), 1)
    for k, v in raw.items():
      v = np.asarray(v, np.float64)
      table[k + "_tokens"] = v
      table[k] = np.sum(v * valid, axis=(-2, -1)) / n
    table["mean_log_rank"] = np.sum(np.log1p(table["rank_tokens"]) * valid, axis=(-2, -1)) / n
    out[which] = table
  return out
