"""TD3 (Fujimoto et al. 2018): twin critics, target policy smoothing, delayed actor updates.

Reading order follows one gradient step: ``_td_target`` (clipped double-Q target with a
smoothed target action, bootstrapping through truncations), ``_actor_loss`` (deterministic
policy gradient through Q1), then ``_gradient_step``: the critic (``OffPolicy._critic_step``
on ``losses.twin_critic_loss``) steps every time; the actor and both target networks step every ``policy_delay``-th
gradient step. Collection, replay, warm-up, health, resets, LEAST and evaluation live in
``offpolicy.OffPolicy``; ``make_train(config, env)(key)`` is the PureJaxRL-shaped entry.

Shapes: a batch is a ``replay.Transition`` with leaves [B, ...]; Q-values are [2, B].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxlab import nets
from jaxlab.core.config import require
from jaxlab.rl import env_trainer
from jaxlab.rl import losses
from jaxlab.rl import offpolicy


def default_config() -> ml_collections.ConfigDict:
  """Every key a TD3 experiment may set (defaults: the TD3 paper / CleanRL)."""
  c = offpolicy.default_config("td3")
  c.exploration_noise = 0.1  # std of the Gaussian added to μ(s) when collecting
  c.policy_noise = 0.2  # target policy smoothing: std of the noise on μ̄(s')
  c.noise_clip = 0.5  # ... clipped to [-noise_clip, noise_clip]
  c.policy_delay = 2  # actor and target updates every d-th critic update
  return c


def check_config(c: ml_collections.ConfigDict) -> None:
  offpolicy.check_config(c)
  for key in ("exploration_noise", "policy_noise", "noise_clip"):
    require(c[key] >= 0, f"'config.{key}' must be >= 0, got {c[key]}")
  require(c.policy_delay >= 1, f"'config.policy_delay' must be >= 1, got {c.policy_delay}")


class TD3(offpolicy.OffPolicy):
  """TD3 for one seed. ``jax.vmap`` its methods (or the instance) to train many seeds."""

  actor_class = nets.DeterministicActor
  target_keys = ("actor", "critic")

  def _exploration_noise(self) -> float:
    return float(self.config.exploration_noise)

  # --- acting -------------------------------------------------------------------------------

  def _explore(self, params, stats, obs, key, noise_std):
    """μ(s) + N(0, σ²), clipped to the action box; σ = exploration_noise or LEAST's σ."""
    action = self.actor(params["actor"], stats, obs)
    return jnp.clip(action + noise_std * jax.random.normal(key, action.shape), -1.0, 1.0)

  def _greedy(self, params, stats, obs):
    return self.actor(params["actor"], stats, obs)

  # --- losses -------------------------------------------------------------------------------

  def _td_target(self, learner, stats, reward, terminated, next_obs, key):
    """``losses.td3_target`` at the smoothed target action (``losses.smoothed_target_action``
    of μ̄(s')) with the target critics; [B]."""
    c = self.config
    next_action = self.actor(learner.target["actor"], stats, next_obs)
    next_action = losses.smoothed_target_action(
        next_action, jax.random.normal(key, next_action.shape), policy_noise=c.policy_noise,
        noise_clip=c.noise_clip)
    next_q = self.critic(learner.target["critic"], stats, next_obs, next_action)
    return losses.td3_target(reward, terminated, next_q, gamma=c.gamma,
                             reward_scaling=c.reward_scaling)

  def _actor_loss(self, actor_params, learner, stats, batch, key, perturbations=None):
    """``losses.td3_actor_loss`` at a = μ(s)."""
    del key
    action, features = self.actor(actor_params, stats, batch.obs, return_features=True,
                                  perturbations=perturbations)
    q = self.critic(learner.params["critic"], stats, batch.obs, action)
    loss, metrics = losses.td3_actor_loss(q)
    return loss, (metrics, features)

  # --- one gradient step --------------------------------------------------------------------

  def _gradient_step(self, learner, stats, batch, key):
    c = self.config
    k_critic, k_actor = jax.random.split(key)
    learner, metrics = self._critic_step(learner, stats, batch, k_critic)

    def _actor_and_targets(operand):
      """The delayed part: one actor step, then Polyak updates of both targets."""
      learner, stats, batch, key, _ = operand
      params, opt_state, m = self._actor_step(learner, stats, batch, key)
      target = {k: offpolicy.polyak(learner.target[k], params[k], c.tau)
                for k in ("actor", "critic")}
      m["actor/updates"] = jnp.ones((), jnp.float32)
      learner = learner.replace(params=params, opt_state=opt_state, target=target,
                                actor_steps=learner.actor_steps + 1)
      return learner, stats, batch, key, m

    learner, actor_metrics = self._every_policy_delay(_actor_and_targets, learner, stats, batch,
                                                      k_actor)
    metrics.update(actor_metrics)
    return learner, metrics


TRAINER, make_train = env_trainer.declare("td3", TD3, default_config, check_config)
