"""Generalised advantage estimation with separate termination and truncation.

``gae`` is GAE(λ) (PPO's paper, PureJaxRL); ``lambda_td_advantages`` is brax.training's PPO
advantage, the one-step TD error of the λ-return targets (PPO's ``config.advantage_estimator``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(rewards: jax.Array, values: jax.Array, next_values: jax.Array,
        terminated: jax.Array, done: jax.Array, gamma: float, lam: float,
        ) -> tuple[jax.Array, jax.Array]:
  """GAE(lambda) over a time-major rollout.

  Args:
    rewards: [T, B] reward of step t.
    values: [T, B] V(s_t).
    next_values: [T, B] V of the state step t actually reached (its ``final_obs``), even when the
      episode ended there: a truncated step bootstraps from it, a terminated step multiplies it
      by zero.
    terminated: [T, B] the step reached a terminal state (no bootstrap).
    done: [T, B] terminated or truncated: the advantage recursion stops (the next row belongs to
      a new episode).
    gamma, lam: discount and GAE lambda.

  Returns:
    advantages [T, B] and value targets ``advantages + values`` [T, B].
  """
  not_term = 1.0 - terminated.astype(values.dtype)
  not_done = 1.0 - done.astype(values.dtype)
  deltas = rewards + gamma * not_term * next_values - values

  def backward(carry, xs):
    delta, cont = xs
    adv = delta + gamma * lam * cont * carry
    return adv, adv

  _, advantages = jax.lax.scan(backward, jnp.zeros_like(values[0]), (deltas, not_done),
                               reverse=True)
  return advantages, advantages + values


def lambda_td_advantages(rewards: jax.Array, values: jax.Array, next_values: jax.Array,
                         terminated: jax.Array, done: jax.Array, targets: jax.Array,
                         gamma: float) -> jax.Array:
  """The one-step TD error of the λ-return targets: ``r_t + γ (1 - term_t) G_{t+1} - V(s_t)``.

  brax.training's PPO uses this as its policy advantage (its ``compute_gae``), with ``targets``
  the λ-returns that :func:`gae` also returns. Written in TD errors it is
  δ_t + Σ_k γ^k λ^(k-1) δ_{t+k}: later errors weigh λ^(k-1) where GAE(λ) weighs λ^k, so the two
  agree at λ = 1 only. ``G_{t+1}`` is the next row's target while the episode goes on, and the
  reached state's value ``next_values`` where it ended (truncated: the bootstrap, terminated:
  multiplied by zero) or at the rollout's last row. Arguments as :func:`gae`; returns [T, B].
  """
  not_term = 1.0 - terminated.astype(values.dtype)
  not_done = 1.0 - done.astype(values.dtype)
  following = jnp.concatenate([targets[1:], next_values[-1:]])
  next_return = not_done * following + (1.0 - not_done) * next_values
  return rewards + gamma * not_term * next_return - values
