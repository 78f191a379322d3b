"""One neuron-reset engine for ReDo and ReGraMa (spec rl.md §4.1, §4.3, §6).

Pipeline: scores -> per-neuron masks (``redo_masks``, ``regrama_masks``,
``regrama_weight_masks``, optional per-layer cap) -> ``reset_neurons`` (parameters and optimizer
state) -> ``maybe_reset`` (every F updates, inside a jitted loop).

What a reset of neuron j of layer ℓ does (``NeuronLayer`` describes ℓ):

1. Incoming parameters get fresh initial values: kernel[..., j] (Linear [in, out] or Conv
   [kh, kw, in, out]), bias[j], and, if ℓ is followed by a LayerNorm, its scale[j] = 1 and
   bias[j] = 0 (the norm's own init; the GraMa code also resets LN parameters, §4.3 item 6).
   "Fresh" = the layer's initialiser is called for the *whole* kernel shape with a new key
   (``fold_in(key, layer index)``) and the masked columns are taken from it. For the orthogonal
   initialiser this gives unit-norm-times-gain columns with the same distribution as at
   construction (but not orthogonal to the kept columns; re-orthogonalising against live
   weights is not what ReDo/GraMa do either).
2. If ``layer.zero_outgoing``: every consumer's kernel[..., j, :] is set to 0, so the new
   neuron contributes nothing yet. The network output is then equal to that of the *old*
   network with those rows zeroed; it equals the old output exactly when the reset neurons were
   dead on the batch (the τ=0 case) and, in general, only approximately (a τ-dormant neuron's
   small contribution is removed). Incoming-only resets (``zero_outgoing=False``) change the
   output. LayerNorm after ℓ breaks the invariance even for dead neurons: the new kernel column
   changes the norm's mean and variance, hence every unit of ℓ.
3. Optimizer moments are zeroed at exactly the entries changed in 1-2 (spec §4.3 item 5): in
   every state leaf found under a field named in ``moment_fields`` (optax ``ScaleByAdamState``
   mu / nu, ``TraceState.trace``) whose remaining path equals a parameter's path, anywhere in a
   chain / ``multi_transform`` / ``inject_hyperparams`` state.

   Difference from PyTorch: the reference code also sets the tensor's Adam ``step`` to 0,
   restarting bias correction for the whole tensor. optax keeps one global ``count``, which we
   leave untouched. So the first updates of a reset entry are not bias-corrected from zero
   moments: the Adam step is about (1 − β1)/√(1 − β2) ≈ 3.2 times lr in magnitude for the
   default betas instead of ≈ lr, decaying to the normal size over ~1/(1 − β1) steps. Emulating
   per-tensor counts needs per-leaf optimizer states (``optax.multi_transform``), which we
   do not impose.

Everything is traceable (masks are arrays; layers are static), so resets run inside ``jit``,
``vmap`` over seeds and ``lax.scan``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxlab.representations import metrics
from jaxlab.representations.layers import NeuronLayer
from jaxlab.representations.layers import Path
from jaxlab.representations.layers import flatten
from jaxlab.representations.layers import get
from jaxlab.representations.layers import key_to_entry
from jaxlab.representations.layers import normalize_path

Masks = Mapping[str, jax.Array]

# optax state fields holding per-parameter moments: ScaleByAdamState / ScaleByBeliefState
# (adam, adamw, radam, adabelief: mu, nu), ScaleByLionState (mu), ScaleByRmsState (nu),
# TraceState (sgd momentum: trace).
MOMENT_FIELDS = ("mu", "nu", "trace")


# ---------------------------------------------------------------------------------------------
# Masks.


def cap_mask(mask: jax.Array, scores: jax.Array, max_fraction: float | None) -> jax.Array:
  """Keeps at most ``floor(max_fraction * H)`` flagged neurons, those with the lowest scores.

  The "hybrid" cap of the GraMa code (spec §4.3 item 2; 5% on Humanoid).

  Args:
    mask: bool [H] flagged neurons.
    scores: [H] their scores (lower = more inactive).
    max_fraction: cap in [0, 1]; None: no cap.

  Returns:
    bool [H] a subset of ``mask``.
  """
  if max_fraction is None:
    return mask
  if not 0.0 <= max_fraction <= 1.0:
    raise ValueError(f"max_fraction={max_fraction} must lie in [0, 1]")
  limit = int(max_fraction * mask.shape[-1])
  # Rank the flagged neurons by score (unflagged ones last); stable so ties keep index order.
  order = jnp.argsort(jnp.where(mask, scores, jnp.inf), stable=True)
  rank = jnp.zeros(mask.shape, jnp.int32).at[order].set(jnp.arange(mask.shape[-1]))
  return mask & (rank < limit)


def _masks_from_scores(scores: Mapping[str, jax.Array], tau: float,
                       max_fraction: float | None) -> dict[str, jax.Array]:
  return {name: cap_mask(metrics.flagged(s, tau), s, max_fraction) for name, s in scores.items()}


def redo_masks(features: Mapping[str, jax.Array], tau: float = 0.02, *,
               layers: Sequence[NeuronLayer] | None = None,
               max_fraction: float | None = None) -> dict[str, jax.Array]:
  """ReDo: neurons with dormant score ``<= tau`` (spec §4.1).

  Args:
    features: ``{name: [..., H]}`` features on a batch.
    tau: threshold (ReDo 0.02).
    layers: if given, only layers with an activation (dormancy is defined on post-activation
      values) and present in ``layers`` are masked; None: every feature.
    max_fraction: optional per-layer cap (``cap_mask``).

  Returns:
    ``{name: bool [H]}``.
  """
  names = list(features) if layers is None else [
    layer.name for layer in layers if layer.activation is not None and layer.name in features]
  return _masks_from_scores({k: metrics.dormant_scores(features[k]) for k in names}, tau,
                            max_fraction)


def regrama_masks(feature_grads: Mapping[str, jax.Array], tau: float = 0.01, *,
                  max_fraction: float | None = None) -> dict[str, jax.Array]:
  """ReGraMa, paper form: neurons with GraMa score ``<= tau`` (spec §4.2-4.3).

  Args:
    feature_grads: ``{name: [..., H]}`` per-sample pre-activation gradients
      (``Probe.feature_grads``).
    tau: threshold (ReGraMa 0.01; SAC runs use 0).
    max_fraction: optional per-layer cap.

  Returns:
    ``{name: bool [H]}``.
  """
  return _masks_from_scores({k: metrics.grama_scores(g) for k, g in feature_grads.items()}, tau,
                            max_fraction)


def regrama_weight_masks(grads: Any, layers: Sequence[NeuronLayer], tau: float = 0.01, *,
                         max_fraction: float | None = None) -> dict[str, jax.Array]:
  """ReGraMa, official-code form: scores from the update's kernel gradients (spec §4.2).

  Args:
    grads: the latest update's gradients, shaped like the params ``layers`` index.
    layers: the layers to score.
    tau: threshold.
    max_fraction: optional per-layer cap.

  Returns:
    ``{name: bool [out]}``.
  """
  kg = metrics.kernel_grads(grads, layers)
  return _masks_from_scores({k: metrics.grama_weight_scores(g) for k, g in kg.items()}, tau,
                            max_fraction)


def mask_counts(masks: Masks, prefix: str = "reset/count") -> dict[str, jax.Array]:
  """``{f"{prefix}/{name}": number of masked neurons}`` (float32, for logging)."""
  return {f"{prefix}/{k}": jnp.sum(m).astype(jnp.float32) for k, m in masks.items()}


# ---------------------------------------------------------------------------------------------
# Resets.


def fresh_layer_params(layers: Sequence[NeuronLayer], params: Any, key: jax.Array, *,
                       names: Sequence[str] | None = None
                       ) -> dict[str, tuple[jax.Array, jax.Array | None]]:
  """The fresh (kernel, bias) each layer would be re-initialised from with ``key``.

  Layer i uses ``fold_in(key, i)`` split into a kernel and a bias key; ``reset_neurons`` takes
  the masked columns of these arrays.

  Args:
    layers: the network's layers (their order defines the keys).
    params: the parameter tree (for shapes and dtypes).
    key: PRNG key.
    names: only these layers (keys still follow the position in ``layers``); None: all.

  Returns:
    ``{name: (kernel [..., in, out], bias [out] or None)}``.
  """
  flat = flatten(params)
  fresh = {}
  for i, layer in enumerate(layers):
    if names is not None and layer.name not in names:
      continue
    k_kernel, k_bias = jax.random.split(jax.random.fold_in(key, i))
    kernel = get(flat, layer.path + ("kernel",))
    bias = flat.get(layer.path + ("bias",))
    new_bias = None if bias is None else layer.bias_init(k_bias, bias.shape, bias.dtype)
    fresh[layer.name] = (layer.kernel_init(k_kernel, kernel.shape, kernel.dtype), new_bias)
  return fresh


def _outgoing_mask(mask: jax.Array, n_in: int, where: str) -> jax.Array:
  """bool [H] -> bool [n_in] over a consumer's input axis (tiled for a flattened conv map)."""
  h = mask.shape[-1]
  if n_in == h:
    return mask
  if n_in % h:
    raise ValueError(f"consumer {where} has {n_in} inputs, not a multiple of the producer's "
                     f"{h} neurons")
  # Channels-last flatten of [..., positions, h]: input row r reads channel r % h.
  return jnp.tile(mask, n_in // h)


def reset_neurons(params: Any, opt_state: Any, masks: Masks, key: jax.Array,
                  layers: Sequence[NeuronLayer], *, reset_norm: bool = True,
                  moment_fields: Sequence[str] = MOMENT_FIELDS,
                  require_moments: bool = True) -> tuple[Any, Any]:
  """Resets the masked neurons' parameters and optimizer moments (module docstring).

  Call it once per network (actor, critic, ...) with that network's layers and masks (layer
  names repeat across networks) and a different key per network (fresh values are keyed by
  the layer's position in ``layers``). ``params`` / ``opt_state`` may be the full trees shared by
  all networks: only the entries under the layers' paths change.

  Args:
    params: parameter pytree (``nnx.State``, dict of them, pure dicts) that ``layers`` index.
    opt_state: the optax state of ``params``, or None.
    masks: ``{layer name: bool [out]}``; layers absent from it are left alone.
    key: PRNG key for fresh values (see ``fresh_layer_params``).
    layers: the network's ``NeuronLayer``s.
    reset_norm: also reset the following LayerNorm's scale/bias at masked entries.
    moment_fields: optax state fields whose param-shaped subtrees are moments to zero.
    require_moments: raise if ``opt_state`` is given but no moment leaf matches a reset
      parameter (catches optimizers whose state is not elementwise, e.g. Kron, or a wrong
      prefix); set False for stateless optimizers.

  Returns:
    ``(params, opt_state)`` with the same structures.
  """
  unknown = sorted(set(masks) - {layer.name for layer in layers})
  if unknown:
    raise ValueError(f"masks for unknown layers {unknown}; layers: "
                     f"{[layer.name for layer in layers]}")
  flat = flatten(params)
  fresh = fresh_layer_params(layers, params, key, names=tuple(masks))
  new: dict[Path, jax.Array] = {}       # path -> edited array
  touched: dict[Path, jax.Array] = {}   # path -> bool, broadcastable to the leaf

  def current(path):
    return new[path] if path in new else get(flat, path)

  def touch(path, m):
    touched[path] = m if path not in touched else (touched[path] | m)

  # Incoming first, outgoing second: a kernel that is both (layer ℓ+1's kernel) gets its fresh
  # columns and then loses the rows of reset neurons of ℓ, so a reset ℓ neuron feeds nothing.
  for layer in layers:
    if layer.name not in masks:
      continue
    mask = masks[layer.name]
    kpath = layer.path + ("kernel",)
    kernel = current(kpath)
    if mask.shape != (kernel.shape[-1],):
      raise ValueError(f"mask of layer {layer.name!r} has shape {mask.shape}, expected "
                       f"({kernel.shape[-1]},)")
    new_kernel, new_bias = fresh[layer.name]
    new[kpath] = jnp.where(mask, new_kernel, kernel)
    touch(kpath, mask)
    bpath = layer.path + ("bias",)
    if new_bias is not None:
      new[bpath] = jnp.where(mask, new_bias, current(bpath))
      touch(bpath, mask)
    if reset_norm and layer.norm_path is not None:
      for leaf, value in (("scale", 1.0), ("bias", 0.0)):
        npath = layer.norm_path + (leaf,)
        if npath in flat:
          old = current(npath)
          new[npath] = jnp.where(mask, jnp.asarray(value, old.dtype), old)
          touch(npath, mask)
  for layer in layers:
    if layer.name not in masks or not layer.zero_outgoing:
      continue
    for consumer in layer.consumers:
      cpath = consumer + ("kernel",)
      ckernel = current(cpath)
      rows = _outgoing_mask(masks[layer.name], ckernel.shape[-2], str(consumer))[:, None]
      new[cpath] = jnp.where(rows, jnp.zeros((), ckernel.dtype), ckernel)
      touch(cpath, rows)

  def edit_param(keypath, leaf):
    path = normalize_path(keypath)
    return new.get(path, leaf)

  params = jax.tree_util.tree_map_with_path(edit_param, params)
  if opt_state is not None:
    opt_state = _zero_moments(opt_state, touched, tuple(moment_fields), require_moments)
  return params, opt_state


def _moment_param_path(keypath: Sequence[Any], fields: tuple[str, ...]) -> Path | None:
  """The parameter path of an optimizer-state leaf under a moment field, else None."""
  for i, k in enumerate(keypath):
    if isinstance(k, jax.tree_util.GetAttrKey) and key_to_entry(k) in fields:
      return normalize_path(keypath[i + 1:])
  return None


def _zero_moments(opt_state: Any, touched: Mapping[Path, jax.Array], fields: tuple[str, ...],
                  require: bool) -> Any:
  matched = []

  def edit(keypath, leaf):
    path = _moment_param_path(keypath, fields)
    if path is None or path not in touched:
      return leaf
    m = touched[path]
    try:
      compatible = jnp.broadcast_shapes(m.shape, jnp.shape(leaf)) == jnp.shape(leaf)
    except ValueError:
      compatible = False
    if not compatible:  # Same path, different shape: not an elementwise moment of the param.
      return leaf
    matched.append(path)
    return jnp.where(m, jnp.zeros((), leaf.dtype), leaf)

  out = jax.tree_util.tree_map_with_path(edit, opt_state)
  if require and touched and not matched:
    raise ValueError(
      f"no optimizer moments found under fields {fields} for the reset parameters (e.g. "
      f"{sorted(touched, key=str)[:3]}). Pass the opt_state of these params, add the state's "
      "moment field names via moment_fields, or require_moments=False for stateless optimizers.")
  return out


def maybe_reset(step: jax.Array, every: int,
                reset_fn: Callable[[Any, Any, jax.Array], tuple[Any, Any, dict[str, jax.Array]]],
                params: Any, opt_state: Any, key: jax.Array) -> tuple[Any, Any, dict]:
  """Runs ``reset_fn`` when ``step > 0`` and ``step % every == 0``; identity otherwise.

  ``step`` counts completed updates, so with ``every = F`` resets follow updates F, 2F, ...
  (spec §4.3: every F = 1000 gradient steps). ``lax.cond`` skips the reset's work (masks, fresh
  orthogonal inits) on other steps when ``step`` is not batched; under ``vmap`` over seeds with
  a shared step it stays a ``cond``.

  Args:
    step: int scalar update counter.
    every: the period F (static, >= 1).
    reset_fn: ``(params, opt_state, key) -> (params, opt_state, stats)``; typically computes
      masks from the latest grads/features and calls ``reset_neurons``; ``stats`` is a dict of
      arrays (e.g. ``mask_counts``), zero-filled on steps without a reset.
    params: parameters.
    opt_state: optimizer state.
    key: PRNG key for this step.

  Returns:
    ``(params, opt_state, stats)``.
  """
  if every < 1:
    raise ValueError(f"every={every} must be >= 1")
  shapes = jax.eval_shape(reset_fn, params, opt_state, key)[2]

  def skip(params, opt_state, key):
    del key
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return params, opt_state, zeros

  due = (step > 0) & (step % every == 0)
  return jax.lax.cond(due, reset_fn, skip, params, opt_state, key)
