"""SIGReg: a sketched test of "these features are N(0, I)", used as an auxiliary loss.

Two forms of the same idea (spec rl.md §1.3, §1.4). Both project a batch of representations
``z`` [B, D] on M random unit directions and compare, at a few points t, the empirical
characteristic function of each 1-D projection with the standard normal's ``exp(-t^2 / 2)``.
By Cramér–Wold, matching every 1-D projection matches the whole law, so driving the statistic
down pushes the features towards an isotropic Gaussian: spread over all directions (no
collapse), centred, unit variance per direction.

* ``"rl"`` (spec §1.4, **the variant the RL paper's code uses**; the default): M = 16
  directions, 8 points ``t = linspace(-5, 5, 8)`` (t = 0 is not on the grid), and the plain mean
  of the squared error over points and directions::

      L = mean_{k, m} [ (mean_b cos(t_k s_bm) - exp(-t_k^2 / 2))^2 + (mean_b sin(t_k s_bm))^2 ]

  with no quadrature weights, no ``exp(-t^2/2)`` window and no ``×B`` factor. Its value is
  comparable across batch sizes up to the Monte-Carlo floor ``E[L] = mean_k (1 - exp(-t_k^2))/B``
  that even exact N(0, I) samples reach (see :func:`expected_gaussian_value`).
* ``"lejepa"`` (spec §1.3, LeJEPA's Epps–Pulley statistic): points on [0, t_max] (default 17
  knots on [0, 3]), trapezoid weights folded to exploit the integrand's symmetry in t, times the
  window ``exp(-t^2/2)``, times B. This is ``B ∫ |φ̂(t) − φ(t)|² e^{−t²/2} dt`` per direction.

The directions are fresh every call (draw a new ``key`` per minibatch, spec §1.4 step 1) and
are constants of the loss: :func:`sigreg_statistic` stops their gradient, so a caller who
passes directions that depend on parameters still gets no gradient into them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

FORMS = ("rl", "lejepa")

# Per-form defaults of (number of directions, number of t points, t_max), spec §1.3 / §1.4.
_DEFAULTS = {"rl": (16, 8, 5.0), "lejepa": (16, 17, 3.0)}

# The reference code adds this before dividing a direction by its norm (spec §1.4 step 1).
_NORM_EPS = 1e-12


class SIGRegOut(NamedTuple):
  """What :func:`sigreg_loss` returns (a pytree).

  Attributes:
    loss: scalar, the statistic of the requested form.
    real: scalar, the part of the statistic from the real parts (cos terms). For the "rl" form
      ``loss == real + imag``; the paper's code logs the two separately.
    imag: scalar, the part from the imaginary parts (sin terms).
  """
  loss: jax.Array
  real: jax.Array
  imag: jax.Array


def t_grid(form: str = "rl", num_t: int | None = None,
           t_max: float | None = None) -> tuple[jax.Array, jax.Array]:
  """The points t_k and their weights w_k of a form.

  Args:
    form: "rl" or "lejepa".
    num_t: number of points (None: the form's default, 8 or 17).
    t_max: grid bound (None: 5 for "rl", on [-t_max, t_max]; 3 for "lejepa", on [0, t_max]).

  Returns:
    ``(t [K], w [K])``. "rl": uniform weights 1/K (a plain mean). "lejepa": the trapezoid rule on
    [-t_max, t_max] folded onto [0, t_max] (the integrand is even in t: |φ̂(−t) − φ(−t)| =
    |conj(φ̂(t) − φ(t))|), so t = 0 keeps weight Δ and every other knot doubles, t_max included
    (2 · Δ/2), all times the window exp(−t²/2).
  """
  _check_form(form)
  _, k_default, t_default = _DEFAULTS[form]
  num_t = k_default if num_t is None else int(num_t)
  t_max = t_default if t_max is None else float(t_max)
  if num_t < 2 or not t_max > 0:
    raise ValueError(f"SIGReg needs num_t >= 2 and t_max > 0, got num_t={num_t}, t_max={t_max}")
  if form == "rl":
    t = jnp.linspace(-t_max, t_max, num_t)
    return t, jnp.full((num_t,), 1.0 / num_t)
  t = jnp.linspace(0.0, t_max, num_t)
  dt = t_max / (num_t - 1)
  w = jnp.full((num_t,), 2.0 * dt).at[0].set(dt).at[-1].set(dt)
  return t, w * jnp.exp(-0.5 * t ** 2)


def random_directions(key: jax.Array, dim: int, num_slices: int = 16) -> jax.Array:
  """M directions uniform on the sphere S^{D-1}: Gaussian columns scaled to unit norm.

  Args:
    key: PRNG key; draw a fresh one per minibatch.
    dim: D, the feature size.
    num_slices: M.

  Returns:
    [D, M] float32, each column of norm 1 (up to the 1e-12 guard of the reference code).
  """
  a = jax.random.normal(key, (dim, num_slices), jnp.float32)
  return a / (jnp.linalg.norm(a, axis=0, keepdims=True) + _NORM_EPS)


def sigreg_statistic(z: jax.Array, directions: jax.Array, *, form: str = "rl",
                     num_t: int | None = None, t_max: float | None = None) -> SIGRegOut:
  """The statistic for given directions; the gradient reaches ``z`` only.

  Args:
    z: [..., D] representations; all leading axes form the batch (B = their product).
    directions: [D, M] unit directions (e.g. :func:`random_directions`). Their gradient is
      stopped: they are a random sketch of the test, not something to optimise.
    form: "rl" (spec §1.4) or "lejepa" (spec §1.3).
    num_t: number of t points (None: the form's default).
    t_max: grid bound (None: the form's default).

  Returns:
    :class:`SIGRegOut` of scalars (float32).
  """
  _check_form(form)
  z = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
  if directions.ndim != 2 or directions.shape[0] != z.shape[-1]:
    raise ValueError(f"directions must be [D, M] with D={z.shape[-1]} (the feature size), got "
                     f"shape {directions.shape}")
  a = jax.lax.stop_gradient(directions.astype(jnp.float32))
  t, w = t_grid(form, num_t, t_max)
  s = z @ a                                     # [B, M] projections
  ts = s[..., None] * t                         # [B, M, K]
  real_err = jnp.mean(jnp.cos(ts), axis=0) - jnp.exp(-0.5 * t ** 2)   # [M, K]
  imag_err = jnp.mean(jnp.sin(ts), axis=0)                          # [M, K]
  # Weighted sum over t, mean over directions. "rl" weights are 1/K: a plain mean, as §1.4.
  real = jnp.mean(jnp.sum(real_err ** 2 * w, axis=-1))
  imag = jnp.mean(jnp.sum(imag_err ** 2 * w, axis=-1))
  if form == "lejepa":
    n = jnp.asarray(z.shape[0], jnp.float32)  # Epps–Pulley's ×N (spec §1.3 step 4).
    real, imag = real * n, imag * n
  return SIGRegOut(real + imag, real, imag)


def sigreg_loss(z: jax.Array, key: jax.Array, *, form: str = "rl", num_slices: int | None = None,
           num_t: int | None = None, t_max: float | None = None) -> SIGRegOut:
  """SIGReg of a batch of representations with directions drawn from ``key``.

  Args:
    z: [..., D] representations (the trunk output, spec §1.4 "where the regulariser attaches").
    key: PRNG key; pass a fresh one for every minibatch so the directions are redrawn.
    form: "rl" (default, spec §1.4) or "lejepa" (spec §1.3).
    num_slices: M directions (None: 16).
    num_t: number of t points (None: 8 for "rl", 17 for "lejepa").
    t_max: grid bound (None: 5 for "rl", 3 for "lejepa").

  Returns:
    :class:`SIGRegOut`; add ``weight * out.loss`` to the training loss.
  """
  _check_form(form)
  num_slices = _DEFAULTS[form][0] if num_slices is None else int(num_slices)
  if num_slices < 1:
    raise ValueError(f"SIGReg needs num_slices >= 1, got {num_slices}")
  a = random_directions(key, z.shape[-1], num_slices)
  return sigreg_statistic(z, a, form=form, num_t=num_t, t_max=t_max)


def expected_gaussian_value(batch: int, form: str = "rl", num_t: int | None = None,
                            t_max: float | None = None) -> float:
  """E[statistic] for B i.i.d. exact N(0, I) samples: the Monte-Carlo floor of the loss.

  For a unit direction, s ~ N(0, 1); the batch means of cos(ts) and sin(ts) are unbiased for
  exp(−t²/2) and 0 with variances ((1 + e^{−2t²})/2 − e^{−t²})/B and ((1 − e^{−2t²})/2)/B,
  which add to (1 − e^{−t²})/B. So E[L] = Σ_k w_k (1 − e^{−t_k²}) / B, times B for "lejepa"
  (whose floor therefore does not shrink with the batch).

  Args:
    batch: B.
    form, num_t, t_max: as :func:`sigreg_loss`.

  Returns:
    The expectation, a Python float.
  """
  t, w = t_grid(form, num_t, t_max)
  value = float(jnp.sum(w * (1.0 - jnp.exp(-t ** 2)))) / batch
  return value * batch if form == "lejepa" else value


def _check_form(form: str) -> None:
  if form not in FORMS:
    raise ValueError(f"SIGReg form={form!r} is not valid; expected one of {', '.join(FORMS)}")


__all__ = ["FORMS", "SIGRegOut", "expected_gaussian_value", "random_directions", "sigreg_loss",
           "sigreg_statistic", "t_grid"]
