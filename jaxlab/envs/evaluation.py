"""Policy evaluation on a JAX env: the return of the first episode of fresh envs.

Every RL trainer evaluates with :func:`first_episode_returns` (during training, every
``config.eval.every`` updates) and ``launch.eval`` uses the same function on a finished run
(``jaxlab.evals``, evaluator ``jax_env``), so the two report the same quantity.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxlab.envs.base import Env


def first_episode_returns(env: Env, act: Callable[[jax.Array, jax.Array], jax.Array],
                          key: jax.Array, num_envs: int) -> dict[str, jax.Array]:
  """Runs ``num_envs`` fresh envs for one episode length with ``act(obs [N, ...], key) ->
  actions [N, ...]`` and returns the mean return of each env's first episode.

  Envs are reset with ``jax.random.split(key, num_envs)``; the policy's keys (for stochastic
  evaluation, e.g. ε-greedy) come from a separate stream, one key per step.

  Returns:
    ``{"eval/episode_return": () mean first-episode return, "eval/finished_fraction": ()
    share of envs whose first episode ended within the episode length}``.
  """
  env_state = jax.vmap(env.reset)(jax.random.split(key, num_envs))
  length = env.spec.episode_length
  act_keys = jax.random.split(jax.random.fold_in(key, 1), length)

  def _step(carry, k):
    env_state, first_return, finished = carry
    env_state = jax.vmap(env.step)(env_state, act(env_state.obs, k))
    newly = env_state.done & ~finished
    first_return = jnp.where(newly, env_state.done_return, first_return)
    return (env_state, first_return, finished | env_state.done), None

  init = (env_state, jnp.zeros(num_envs), jnp.zeros(num_envs, bool))
  (_, returns, finished), _ = jax.lax.scan(_step, init, act_keys)
  return {"eval/episode_return": returns.mean(), "eval/finished_fraction": finished.mean()}
