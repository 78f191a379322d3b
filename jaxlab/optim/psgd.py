"""Kron: PSGD with a Kronecker-factored preconditioner, as an optax transformation (spec §2.3).

Why our own: the JAX port named in the spec (``psgd-jax``) does not import with the pinned optax
0.2.8 (its 0.2.9 release imports ``optax._src.clipping``, which that optax no longer has), and
older releases have other defaults (spec §2.3: "pin the version, because defaults changed").
This module implements the method from its description (Li, "Preconditioned stochastic
gradient descent", and the Kron variant of the PSGD family) with public JAX/optax APIs only, and
with the defaults the Stable-Gradients paper used (spec §2.3).

The method, for one parameter tensor G of shape (d_1, ..., d_n)
----------------------------------------------------------------
The preconditioner is ``P = Q^T Q`` with ``Q = Q_1 ⊗ ... ⊗ Q_n``: one factor per axis, an upper
triangular [d_i, d_i] matrix, or a diagonal (a [d_i] vector) for 1-D tensors, axes of size 1 and
axes longer than ``max_size_triangular``. Applying Q to a tensor multiplies it by Q_i along each
axis i. P is fitted so that it whitens the gradient, ``P E[g g^T] P ≈ I``, by descending
``E[g^T P g] + E[v^T P^{-1} v]`` with v ~ N(0, I) on the group of such Q (multiplicative updates
``Q_i <- (I - step) Q_i`` keep it triangular and invertible):

* ``A = Q g`` (so ``g^T P g = |A|^2``) and ``B = Q^{-T} v`` (so ``v^T P^{-1} v = |B|^2``;
  triangular solves, no inverse is formed);
* for each axis i, with ``A_(i)`` the mode-i unfolding [d_i, rest],
  ``Q_i <- Q_i - lr_P · triu(A_(i) A_(i)^T - B_(i) B_(i)^T) / ‖A_(i) A_(i)^T + B_(i) B_(i)^T‖ · Q_i``
  (diagonal factors use the diagonals of those matrices and their max);
* the update direction is ``P m`` for the bias-corrected momentum m (b1 = 0.9; no second
  moment, no epsilon), its RMS capped at 1.1 (a whitened gradient has RMS ≈ 1; the cap guards
  the first steps, while P is still far from fitted), then scaled by the learning rate.

The preconditioner is refitted on a schedule that is 1 for the first ``flat_start`` steps and
then decays as ``exp(-decay (t - flat_start))`` to a floor of 0.03 (spec §2.3). As kron_torch
(0.2.9 to 0.3.3) does it, without randomness: a counter of steps since the last refit, and a
refit when it reaches 1 / probability, so vmapped seeds refit on the same steps.

Checked against kron_torch 0.3.3 with the same probe vectors (tests/optim/test_kron_reference.py):
the spectral-norm bound, the factor kinds, four refits of the preconditioner and eight whole
optimizer steps agree to float32 rounding. Kept different: kron_torch adds the fit's damping
noise to the momentum in place, so on refit steps its update carries that noise too (relative
size sqrt(eps) ~ 3e-4), where ours uses it in the fit only; kron_torch rescales the factors to a
common size on ~1% of refits drawn at random, we after every refit (P is the same either way);
and kron_torch 0.3.1+ first reshapes a tensor of more than two axes into a matrix
(``merge_dims``, on by default there and here: spec §2.3 asks for the library's defaults, and
0.3.3 is the release the tests compare with); ``merge_dims=False`` keeps one factor per axis, as
releases up to 0.3.0 did (the Stable-Gradients code does not pin a release). Only tensors of three
or more axes differ, i.e. convolution kernels; no result recorded before 2026-12-07 21:30 UTC
ran Kron on one.

Merged tensors (``merge_dims=True``)
------------------------------------
kron_torch decides the matrix shape from the tensor's axes in PyTorch's order, and the only
tensors of three or more axes in the networks it preconditions are convolution kernels, which
PyTorch stores as (out, in, *spatial) and flax as (*spatial, in, out). Ours reads a flax kernel in
PyTorch's order first (:func:`torch_order`), so a [3, 3, 4, 16] flax kernel gets the factors
that kron_torch gives the same layer's [16, 4, 3, 3] weight. kron_torch weighs two matrix
shapes that keep the axes in that order, (all but the last, last) and (first, all but the
first), and keeps the first unless its columns minus rows exceed the second's; with x the first
axis, y the last and m >= 1 the product of the others, the first's columns minus rows are
smaller by (x + y)(m - 1) >= 0, so the first is always kept: [16, 4, 3, 3] becomes [192, 3].
tests/optim/test_kron_reference.py steps a conv kernel in both and compares.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlab.core import batching

MEMORY_SAVE_MODES = (None, "one_diag", "all_diag")

# A tiny relative noise added to the fitting gradient, so that a rank-deficient gradient (e.g. a
# single-sample outer product) still yields a well-posed fit: sqrt(float32 eps) times its scale.
_DAMPING = float(np.sqrt(np.finfo(np.float32).eps))


def precond_update_prob_schedule(max_prob: float = 1.0, min_prob: float = 0.03,
                                 decay: float = 0.001,
                                 flat_start: int = 500) -> Callable[[jax.Array], jax.Array]:
  """Probability of refitting the preconditioner at step t (spec §2.3).

  ``clip(max_prob · exp(-decay · (t - flat_start)), min_prob, max_prob)``: 1 for the first
  ``flat_start`` steps, then an exponential decay to ``min_prob``.
  """
  def schedule(step):
    p = max_prob * jnp.exp(-decay * (jnp.asarray(step, jnp.float32) - flat_start))
    return jnp.clip(p, min_prob, max_prob)
  return schedule


class KronState(NamedTuple):
  """State of :func:`scale_by_kron` (a pytree).

  Attributes:
    count: () int32, steps taken.
    mu: momentum, shaped like the parameters (None when b1 == 0).
    qs: per parameter leaf, a tuple with one factor per axis: [d, d] upper triangular or [d]
      diagonal (scalars are treated as shape (1,); with ``merge_dims``, per axis of the
      leaf's :func:`merged_shape`).
    since_refit: () float32, steps since the preconditioner was last refitted.
    key: PRNG key for the probe vectors v.
  """
  count: jax.Array
  mu: Any
  qs: Any
  since_refit: jax.Array
  key: jax.Array


def factor_kinds(shape: tuple[int, ...], *, max_size_triangular: int = 8192,
                 min_ndim_triangular: int = 2,
                 memory_save_mode: str | None = None) -> tuple[str, ...]:
  """"tri" or "diag" per axis of a tensor of ``shape`` (scalars: one "diag" axis of size 1).

  An axis gets a diagonal factor when it has size 1, is longer than ``max_size_triangular``, the
  tensor has fewer than ``min_ndim_triangular`` axes (biases, LayerNorm scales), or
  ``memory_save_mode`` asks for it ("one_diag": the largest axis; "all_diag": every axis).
  """
  if memory_save_mode not in MEMORY_SAVE_MODES:
    raise ValueError(f"memory_save_mode={memory_save_mode!r} is not valid; expected one of "
                     f"{MEMORY_SAVE_MODES}")
  shape = tuple(shape) or (1,)
  kinds = ["diag" if (d == 1 or d > max_size_triangular or len(shape) < min_ndim_triangular)
           else "tri" for d in shape]
  if memory_save_mode == "all_diag":
    kinds = ["diag"] * len(shape)
  elif memory_save_mode == "one_diag":
    # The largest axis; of equal largest axes the last, as kron_torch picks it.
    kinds[len(shape) - 1 - int(np.argmax(shape[::-1]))] = "diag"
  return tuple(kinds)


def torch_order(ndim: int) -> tuple[int, ...]:
  """The permutation that reads a flax convolution kernel (*spatial, in, out) in PyTorch's axis
  order (out, in, *spatial)."""
  return (ndim - 1, ndim - 2, *range(ndim - 2))


def merged_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """The matrix shape kron_torch 0.3.1+ (``merge_dims``) preconditions a flax tensor of
  ``shape`` as: in PyTorch's axis order, (all axes but the last, the last) (module docstring);
  tensors of at most two axes keep their shape."""
  shape = tuple(shape)
  if len(shape) <= 2:
    return shape
  t = [shape[i] for i in torch_order(len(shape))]
  return (int(np.prod(t[:-1])), t[-1])


def _to_factor_layout(x: jax.Array, merge_dims: bool) -> jax.Array:
  """A parameter-shaped tensor in the layout its factors act on (float32; scalars as (1,))."""
  if merge_dims and x.ndim > 2:
    x = jnp.transpose(x, torch_order(x.ndim)).reshape(merged_shape(x.shape))
  return x.reshape(x.shape or (1,)).astype(jnp.float32)


def _from_factor_layout(x: jax.Array, shape: tuple[int, ...], merge_dims: bool) -> jax.Array:
  """The inverse of :func:`_to_factor_layout` (before the dtype cast back)."""
  if merge_dims and len(shape) > 2:
    order = torch_order(len(shape))
    x = jnp.transpose(x.reshape([shape[i] for i in order]), np.argsort(order))
  return x.reshape(shape)


def _init_factors(shape, kinds, scale):
  # Spread the initial scale over the factors so that P = scale^2 · I.
  per = scale ** (1.0 / len(kinds))
  shape = tuple(shape) or (1,)
  return tuple(per * (jnp.eye(d, dtype=jnp.float32) if k == "tri" else jnp.ones(d, jnp.float32))
               for d, k in zip(shape, kinds))


def _along(x: jax.Array, axis: int, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """Applies a matrix map ``fn`` ([d, rest] -> [d, rest]) to axis ``axis`` of ``x``."""
  moved = jnp.moveaxis(x, axis, 0)
  out = fn(moved.reshape(moved.shape[0], -1)).reshape(moved.shape)
  return jnp.moveaxis(out, 0, axis)


def _scale_axis(x: jax.Array, axis: int, q: jax.Array) -> jax.Array:
  """Multiplies axis ``axis`` of ``x`` by the vector q (a diagonal factor)."""
  shape = [1] * x.ndim
  shape[axis] = q.shape[0]
  return x * q.reshape(shape)


def _apply_q(qs, x):
  """Q x: every factor along its axis."""
  for i, q in enumerate(qs):
    x = _along(x, i, lambda m, q=q: q @ m) if q.ndim == 2 else _scale_axis(x, i, q)
  return x


# Under vmap (seeds, arms) one solve per batch element, in sequence: two batched solves at once
# (one per parameter tensor) hung XLA:CPU on 2 cores (see jaxlab.core.batching).
_solve_upper_transposed = batching.sequential(
  lambda q, m: jax.scipy.linalg.solve_triangular(q, m, trans="T", lower=False))


def _apply_q_inv_t(qs, x):
  """Q^{-T} x, by triangular solves Q_i^T y = x along each axis."""
  for i, q in enumerate(qs):
    if q.ndim == 2:
      x = _along(x, i, lambda m, q=q: _solve_upper_transposed(q, m))
    else:
      x = _scale_axis(x, i, 1.0 / q)
  return x


def _precondition(qs, x):
  """P x = Q^T Q x: ``Q_i^T Q_i`` (or q_i^2) along every axis."""
  for i, q in enumerate(qs):
    x = (_along(x, i, lambda m, q=q: q.T @ (q @ m)) if q.ndim == 2
         else _scale_axis(x, i, q * q))
  return x


def _gram(x: jax.Array, axis: int, diagonal: bool) -> jax.Array:
  """Mode-``axis`` Gram matrix X_(i) X_(i)^T [d, d], or only its diagonal [d]."""
  m = jnp.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
  return jnp.sum(m * m, axis=1) if diagonal else m @ m.T


def _spectral_norm_lower_bound(m: jax.Array) -> jax.Array:
  """A cheap lower bound on ‖M‖_2 for a symmetric PSD M: two power steps from its largest column.

  As kron_torch's ``_lb`` (every release): with c the column of largest norm, x = M^T c / ‖M^T c‖
  and the bound ‖M x‖ (= ‖M² c‖ / ‖M c‖ for symmetric M). For PSD M each power step can only
  raise the ratio, so the bound is >= ‖M c‖ / ‖c‖ >= ‖c‖ >= ‖M‖_2 / sqrt(d). M is divided by its
  largest entry first, so squares of large entries cannot overflow float32.
  """
  max_abs = jnp.max(jnp.abs(m))
  a = m / jnp.maximum(max_abs, 1e-30)
  c = a[:, jnp.argmax(jnp.sum(a * a, axis=0))]
  x = a.T @ c
  x = x / jnp.maximum(jnp.linalg.norm(x), 1e-30)
  return jnp.where(max_abs > 0, max_abs * jnp.linalg.norm(a @ x), 0.0)


def _refit(qs, g, v, lr):
  """One step of the whitening fit for one tensor's factors (module docstring)."""
  a = _apply_q(qs, g)
  b = _apply_q_inv_t(qs, v)
  new = []
  for i, q in enumerate(qs):
    diagonal = q.ndim == 1
    t1, t2 = _gram(a, i, diagonal), _gram(b, i, diagonal)
    if diagonal:
      step = lr * (t1 - t2) / jnp.maximum(jnp.max(t1 + t2), 1e-30)
      new.append(q - step * q)
    else:
      step = lr * jnp.triu(t1 - t2) / jnp.maximum(_spectral_norm_lower_bound(t1 + t2), 1e-30)
      new.append(q - step @ q)
  return tuple(_balance(new))


def _probes(key_data: jax.Array, count: jax.Array, shapes) -> list[jax.Array]:
  """The probe vectors v of a refit at step ``count`` (0-based), one per tensor shape."""
  key = jax.random.fold_in(jax.random.wrap_key_data(key_data), count)
  return [jax.random.normal(k, shape, jnp.float32)
          for k, shape in zip(jax.random.split(key, len(shapes)), shapes)]


def _refit_damped(qs, g, v, lr):
  """:func:`_refit` on ``g`` plus ``_DAMPING`` times its mean magnitude times the probe v."""
  return _refit(qs, g + _DAMPING * jnp.mean(jnp.abs(g)) * v, v, lr)


def _balance(qs):
  """Rescales the factors to equal max-abs (their product, hence P, is unchanged); without it
  one factor can drift large and another small over many multiplicative updates."""
  if len(qs) < 2:
    return qs
  sizes = jnp.stack([jnp.max(jnp.abs(q)) for q in qs])
  target = jnp.exp(jnp.mean(jnp.log(jnp.maximum(sizes, 1e-30))))
  return [q * (target / jnp.maximum(s, 1e-30)) for q, s in zip(qs, sizes)]


def scale_by_kron(b1: float = 0.9,
                  preconditioner_update_probability: float | Callable[[jax.Array], jax.Array]
                  = precond_update_prob_schedule(),
                  max_size_triangular: int = 8192, min_ndim_triangular: int = 2,
                  memory_save_mode: str | None = None, preconditioner_lr: float = 0.1,
                  preconditioner_init_scale: float = 1.0,
                  momentum_into_precond_update: bool = True, clip_update_rms: float = 1.1,
                  merge_dims: bool = True, seed: int = 0) -> optax.GradientTransformation:
  """The Kron direction ``P m`` (no learning rate; chain with ``optax.scale_by_learning_rate``).

  Args:
    b1: momentum coefficient (0: no momentum).
    preconditioner_update_probability: a constant or a function of the step (spec §2.3).
    max_size_triangular: axes longer than this get diagonal factors (memory: d^2 per factor).
    min_ndim_triangular: tensors with fewer axes get only diagonal factors (biases).
    memory_save_mode: None, "one_diag" or "all_diag" (see :func:`factor_kinds`).
    preconditioner_lr: step size of the whitening fit.
    preconditioner_init_scale: initial P = scale^2 · I.
    momentum_into_precond_update: fit P to the momentum (True, the library default) instead of
      the raw gradient.
    clip_update_rms: cap on the RMS of each preconditioned tensor (0 disables).
    merge_dims: precondition each tensor of three or more axes (a flax convolution kernel) as
      the matrix kron_torch 0.3.1+ makes of it (:func:`merged_shape`; its default), or with one
      factor per axis (False).
    seed: seed of the probe vectors v.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`KronState`.
  """
  factor_kinds(tuple(), memory_save_mode=memory_save_mode)  # validates the mode now
  kinds_of = functools.partial(factor_kinds, max_size_triangular=max_size_triangular,
                               min_ndim_triangular=min_ndim_triangular,
                               memory_save_mode=memory_save_mode)
  prob = (preconditioner_update_probability if callable(preconditioner_update_probability)
          else (lambda _: jnp.asarray(preconditioner_update_probability, jnp.float32)))

  def init_fn(params):
    leaves, treedef = jax.tree.flatten(params)
    shapes = [merged_shape(p.shape) if merge_dims else p.shape for p in leaves]
    qs = [_init_factors(shape, kinds_of(shape), preconditioner_init_scale) for shape in shapes]
    mu = jax.tree.map(jnp.zeros_like, params) if b1 > 0 else None
    return KronState(count=jnp.zeros((), jnp.int32), mu=mu, qs=treedef.unflatten(qs),
                     since_refit=jnp.zeros((), jnp.float32), key=jax.random.key_data(
                         jax.random.key(seed)))

  def update_fn(updates, state, params=None):
    del params
    count = state.count + 1
    leaves, treedef = jax.tree.flatten(updates)
    if b1 > 0:
      mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
      momentum = jax.tree.map(lambda m: m / (1 - b1 ** count.astype(jnp.float32)), mu)
    else:
      mu, momentum = None, updates
    m_leaves = treedef.flatten_up_to(momentum)
    qs = treedef.flatten_up_to(state.qs)
    shapes = [g.shape for g in leaves]
    # Scalars are handled as shape (1,) so every leaf has at least one axis.
    as_tensor = functools.partial(_to_factor_layout, merge_dims=merge_dims)
    fit_in = [as_tensor(x) for x in (m_leaves if momentum_into_precond_update else leaves)]

    since_refit = state.since_refit + 1.0
    do_refit = since_refit >= 1.0 / prob(state.count)
    since_refit = jnp.where(do_refit, 0.0, since_refit)

    def refit(qs):
      probes = _probes(state.key, state.count, [g.shape for g in fit_in])
      return [_refit_damped(q, g, v, preconditioner_lr) for q, g, v in zip(qs, fit_in, probes)]

    qs = jax.lax.cond(do_refit, refit, lambda qs: list(qs), list(qs))
    directions = []
    for q, m, shape, g in zip(qs, m_leaves, shapes, leaves):
      d = _precondition(q, as_tensor(m))
      if clip_update_rms > 0:
        rms = jnp.sqrt(jnp.mean(d * d))
        d = d / jnp.maximum(1.0, rms / clip_update_rms)
      directions.append(_from_factor_layout(d, shape, merge_dims).astype(g.dtype))
    new_state = KronState(count=count, mu=mu, qs=treedef.unflatten(qs), since_refit=since_refit,
                          key=state.key)
    return treedef.unflatten(directions), new_state

  return optax.GradientTransformation(init_fn, update_fn)


def kron(learning_rate: float | optax.Schedule = 1e-3, b1: float = 0.9,
         weight_decay: float = 0.0, weight_decay_mask: Any = None,
         **kwargs) -> optax.GradientTransformation:
  """Kron with a learning rate and optional decoupled weight decay.

  ``scale_by_kron -> [add_decayed_weights] -> scale_by_learning_rate``, the order of the PSGD
  libraries (the decay is not preconditioned). ``kwargs`` go to :func:`scale_by_kron`.
  kron_torch decays only tensors of two or more axes: ``weight_decay_mask`` (in configs
  ``optimizer.decay_mask="matrices"``) does the same; without it every leaf decays.
  Spec §2.3: the Stable-Gradients runs use the default lr of the base algorithm divided by 3
  (``jaxlab.optim.make_optimizer`` applies that rule).
  """
  chain = [scale_by_kron(b1=b1, **kwargs)]
  if weight_decay > 0:
    chain.append(optax.add_decayed_weights(weight_decay, weight_decay_mask))
  chain.append(optax.scale_by_learning_rate(learning_rate))
  return optax.chain(*chain)
