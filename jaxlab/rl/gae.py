"""Generalised advantage estimation with separate termination and truncation."""

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
