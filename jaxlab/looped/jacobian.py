"""Local stability of the iteration map at its fixed point (spec §1.5 (a), Jacobian view).

For a map ``F: R^D -> R^D`` and a point ``x``, the Jacobian ``J = dF/dx (x)`` is never formed:
power iteration needs only products ``J v`` (``jax.linearize``, forward mode) and ``J^T u``
(``jax.vjp``). ``rho(J) < 1`` (spectral radius) means the fixed point attracts nearby states;
the spectral norm ``|J|_2 >= rho(J)`` bounds the one-step growth of any perturbation.

For a looped model the map is one outer iteration acting on one token's state, every other
token's state (and HRM's inner state) held at their values at the end of the run:
``F_i(x) = post(core(inject(s* with row i set to x, e)))[i]`` (:func:`token_iteration_map`).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab.looped.replay import layout, replay_iteration
from jaxlab.models.looped.modeling import LoopedLM


def _unit(v):
  return v / (jnp.linalg.norm(v) + 1e-30)


def _power_logs(op, x, key, iters):
  """``log |op(v_k)|`` of the normalised power iteration ``v_{k+1} = op(v_k) / |op(v_k)|``."""
  v0 = _unit(jax.random.normal(key, x.shape, jnp.float32).astype(x.dtype))

  def step(v, _):
    w = op(v)
    n = jnp.linalg.norm(w)
    return w / (n + 1e-30), jnp.log(n + 1e-30)

  return jax.lax.scan(step, v0, None, length=iters)[1]


def spectra(f: Callable[[jax.Array], jax.Array], x: jax.Array, key: jax.Array,
            iters: int = 100) -> tuple[jax.Array, jax.Array]:
  """``(spectral radius, spectral norm)`` estimates of ``J = df/dx (x)``.

  Radius: power iteration on ``J v`` (``v_{k+1} = J v_k / |J v_k|``); once the other modes
  have died out, ``|J v_k|`` is the dominant eigenvalue's modulus. The estimate is the
  geometric mean of ``|J v_k|`` over the later half of the ``iters`` steps, i.e.
  ``(|J^n v| / |J^m v|)^(1/(n-m))``, which also converges when the dominant eigenvalues are a
  complex pair (the single-step ratio then oscillates); the error decays like
  ``(|lambda_2| / |lambda_1|)^k``. Norm: the same on ``J^T J`` (its dominant eigenvalue is
  ``|J|_2^2``), with ``J^T`` the transpose of the linearisation, so ``f`` is traced once.

  Args:
    f: a map of one array (any shape; the Jacobian acts on its flattening).
    x: the point to linearise at.
    key: PRNG key of the start vectors.
  """
  _, jvp = jax.linearize(f, x)
  vjp = jax.linear_transpose(jvp, x)
  k1, k2 = jax.random.split(key)
  late = slice(iters // 2, None)
  radius = jnp.exp(jnp.mean(_power_logs(jvp, x, k1, iters)[late]))
  norm_sq = jnp.exp(_power_logs(lambda v: vjp(jvp(v))[0], x, k2, iters)[-1])
  return radius, jnp.sqrt(norm_sq)


def spectral_radius(f, x, key, iters: int = 100) -> jax.Array:
  """The radius of :func:`spectra` alone (power iteration on ``J v`` only)."""
  _, jvp = jax.linearize(f, x)
  return jnp.exp(jnp.mean(_power_logs(jvp, x, key, iters)[iters // 2:]))


def spectral_norm(f, x, key, iters: int = 100) -> jax.Array:
  """The norm of :func:`spectra`."""
  return spectra(f, x, key, iters)[1]


def final_inner_state(model: LoopedLM, core_ijbtd: jax.Array, e_btd: jax.Array) -> jax.Array:
  """HRM's inner state ``z`` after the last iteration (zeros without an inner stack)."""
  c = model.config
  if not c.inner_layers:
    return e_btd * 0
  last = core_ijbtd[-1, c.inner_layers * c.inner_iterations - 1]
  return last if model.inner_norm is None else model.inner_norm(last)


def token_iteration_map(model: LoopedLM, s_btd, z_btd, e_btd, mask_bt, b: int | jax.Array,
                        t: int | jax.Array) -> Callable[[jax.Array], jax.Array]:
  """``x [D] -> s_next[b, t] [D]``: one outer iteration seen from token ``(b, t)``'s state, the
  rest of the batch held at ``s_btd`` / ``z_btd``."""
  _, cos, sin, allowed = layout(model.config.block_config, mask_bt)

  def f(x):
    s = s_btd.at[b, t].set(x.astype(s_btd.dtype))
    nxt = replay_iteration(model, s, z_btd, e_btd, cos, sin, allowed, attention=False)[0]
    return nxt[b, t].astype(jnp.float32)

  return f


@functools.partial(jax.jit, static_argnums=(0, 8))
def _token_spectra(graphdef, state, s, z, e, mask, bt, key, iters):
  model = nnx.merge(graphdef, state)

  def one(pair, k):
    f = token_iteration_map(model, s, z, e, mask, pair[0], pair[1])
    x = s[pair[0], pair[1]].astype(jnp.float32)
    return spectra(f, x, k, iters)

  return jax.vmap(one)(bt, jax.random.split(key, bt.shape[0]))


def token_spectra(model: LoopedLM, captured: dict, mask_bt, tokens_at, iters: int = 60,
                  seed: int = 0) -> dict[str, np.ndarray]:
  """Spectral radius and norm of the iteration map's Jacobian at the end of a run.

  Args:
    model: the looped model.
    captured: :func:`jaxlab.looped.replay.capture` output (``iterates``, ``core``,
      ``prelude``).
    mask_bt: the run's mask.
    tokens_at: ``[M, 2]`` (batch row, position) pairs to probe.
    iters: power-iteration steps.

  Returns:
    ``{"tokens": [M, 2], "spectral_radius": [M], "spectral_norm": [M]}``.
  """
  tokens_at = np.asarray(tokens_at, np.int32).reshape(-1, 2)
  graphdef, state = nnx.split(model)
  s = jnp.asarray(captured["iterates"][-1])
  e = jnp.asarray(captured["prelude"][-1])
  z = final_inner_state(model, jnp.asarray(captured["core"]), e)
  rad, nrm = _token_spectra(graphdef, state, s, z, e, jnp.asarray(mask_bt, bool),
                            jnp.asarray(tokens_at), jax.random.key(seed), int(iters))
  return dict(tokens=tokens_at, spectral_radius=np.asarray(rad), spectral_norm=np.asarray(nrm))
