"""PPO's phase methods compose to the update as it was written before the split.

``PPO.update`` became collect -> advantages -> learn -> finish (so that
benchmarks/ppo_vs_brax.py can time each phase), and ``_advantages`` reuses V(obs[t + 1]) as
V(final_obs[t]) where the two observations are equal. ``_reference_update`` below is the
update before both changes (one scan collecting and computing GAE with separate value passes
over ``obs`` and ``final_obs``); on XLA:CPU the two must agree bit for bit.
"""

import copy

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.core import running_stats
from jaxlab.envs.from_config import make_from_config
from jaxlab.rl import ppo
from jaxlab.rl.gae import gae


def _reference_update(trainer, state):
  """``PPO.update`` before the phase split (the code it replaced)."""
  c = trainer.config

  def _collect(state, _):
    state, traj = trainer._rollout(state)  # pylint: disable=protected-access
    values = trainer.value(state.params, state.obs_stats, traj.obs)
    next_values = trainer.value(state.params, state.obs_stats, traj.final_obs)
    adv, targets = gae(traj.reward * c.reward_scaling, values, next_values, traj.terminated,
                       traj.done, c.gamma, c.gae_lambda)
    return state, (traj, adv, targets, values)

  state, (traj, adv, targets, values) = jax.lax.scan(_collect, state, None,
                                                     length=c.unrolls_per_update)
  flat = lambda x: x.reshape((-1,) + x.shape[3:])
  batch = {"obs": flat(traj.obs), "raw_action": flat(traj.raw_action),
           "log_prob": flat(traj.log_prob), "advantage": flat(adv),
           "target": flat(targets), "value": flat(values)}
  key, k_epochs = jax.random.split(state.key)
  (params, opt_state, _, _), metrics = jax.lax.scan(
      lambda carry, _: trainer._update_epoch(carry, batch),  # pylint: disable=protected-access
      (state.params, state.opt_state, state.obs_stats, k_epochs), None, length=c.num_epochs)
  metrics = jax.tree.map(jnp.mean, metrics)
  obs_stats = state.obs_stats
  if c.normalize_observations:
    obs_stats = running_stats.update(obs_stats, traj.obs)
  metrics["train/episodes"] = traj.done.sum()
  metrics["train/return_sum"] = jnp.where(traj.done, traj.done_return, 0.0).sum()
  metrics["lr"] = trainer.lr_schedule(state.update * c.num_epochs * c.num_minibatches)
  return state.replace(params=params, opt_state=opt_state, obs_stats=obs_stats, key=key,
                       update=state.update + 1), metrics


def _config():
  """Pendulum (continuous actions, never terminates), observation normalisation, two unrolls
  of 8 steps per update, episodes cut at 10 steps: the first unroll ends no episode
  (``_advantages`` reuses V(obs[t + 1])), the second ends one at its second step
  (V(final_obs) is computed)."""
  c = ppo.default_config()
  c.env.name = "gymnax/Pendulum-v1"
  c.env.episode_length = 10
  c.num_envs, c.unroll_length, c.unrolls_per_update = 8, 8, 2
  c.num_minibatches, c.num_epochs, c.log_every = 4, 2, 1
  c.normalize_observations = True
  c.advantage_refresh = "update"  # the learner _reference_update writes out (once per update)
  c.max_grad_norm = 0.5
  c.network.policy_width = c.network.value_width = 16
  c.network.policy_depth = c.network.value_depth = 1
  c.total_env_steps = ppo.steps_per_update(c) * c.log_every
  c.eval.every = c.checkpoint.every = 0
  return c


def _leaves(tree):
  return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                     else x) for x in jax.tree.leaves(tree)]


def test_chunk_matches_the_update_before_the_phase_split():
  c = _config()
  trainer = ppo.make_train(c, make_from_config(c.env))
  before = copy.copy(trainer)  # the same trainer, whose chunk runs the reference update
  before.update = lambda state: _reference_update(trainer, state)
  state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
  # One program for both (compilation is most of this test's time).
  ours, ref = jax.jit(lambda s: (trainer.chunk(s), before.chunk(s)))(state)
  # Steps 0-15: every env's episode ends at step 9, in the second unroll only.
  np.testing.assert_array_equal(ref[1]["train/episodes"], c.num_envs)
  chex.assert_trees_all_equal_structs(ours, ref)
  exact = jax.default_backend() == "cpu"
  for a, b in zip(_leaves(ours), _leaves(ref)):
    if exact:
      np.testing.assert_array_equal(a, b)
    else:  # other backends may round a matmul's rows differently for another batch size
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
