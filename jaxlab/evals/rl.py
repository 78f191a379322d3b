"""Evaluators of trained policies (PPO, PQN, SAC, TD3) and of other chunked runs.

* ``jax_env``: the run's own deterministic evaluation (``first_episode_returns`` on the
  training env, :mod:`jaxlab.envs.evaluation`), repeated with ``episodes`` independent keys.
* ``dm_control``: the same policy on the original DeepMind Control suite (CPU MuJoCo, the
  environment the papers report) for Playground DM Control tasks, observations laid out as
  Playground's (:mod:`jaxlab.envs.dm_control_eval`).
* ``held_out``: the run's in-training evaluation (``eval/*`` metrics) recomputed on the
  checkpoint, for runs without a policy (the non-stationary supervised benchmark).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxlab.envs import dm_control_eval

_EVAL_SEED = 12345  # launch.eval's own keys: independent of the training seeds


def jax_env(run: Any, state: Any, options: Any) -> dict[str, Any]:
  """``{"return_mean", "return_std", "returns", "num_envs"}`` over ``options.episodes``
  evaluations of seed ``options.seed_index``'s deterministic policy."""
  policy = run.policy(state, options.seed_index)
  returns = [float(policy.evaluate(jax.random.fold_in(jax.random.PRNGKey(_EVAL_SEED), i))
                   ["eval/episode_return"]) for i in range(options.episodes)]
  return {"env": run.config.env.name, "return_mean": float(np.mean(returns)),
          "return_std": float(np.std(returns)), "returns": returns,
          "num_envs": run.config.eval.num_envs}


def dm_control(run: Any, state: Any, options: Any) -> dict[str, Any]:
  """The policy on ``dm_control.suite`` for ``playground/<Task>`` runs; ``{"skipped": why}``
  for other envs."""
  env = run.config.env.name
  backend, _, task = env.partition("/")
  if backend != "playground" or task not in dm_control_eval.PLAYGROUND_TO_DM_CONTROL:
    return {"skipped": f"{env} is not a Playground DM Control task"}
  domain, dm_task = dm_control_eval.PLAYGROUND_TO_DM_CONTROL[task]
  policy = run.policy(state, options.seed_index)
  out = dm_control_eval.evaluate(lambda obs: np.asarray(policy.act(obs)), domain, dm_task,
                                 options.episodes, seed=0,
                                 action_repeat=run.config.env.action_repeat)
  return {"domain": domain, "task": dm_task, "return_mean": out["mean_return"],
          "return_std": out["std_return"], "returns": out["returns"].tolist()}


def held_out(run: Any, state: Any, options: Any) -> dict[str, Any]:
  """The run's own evaluation metrics on the checkpoint (per seed, and their mean)."""
  del options
  metrics = jax.device_get(run.evaluate(state, run.total_steps))
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)
    out[k] = float(v.mean())
    if v.size > 1:
      out[k + "/per_seed"] = v.tolist()
  return out
