"""Soft Actor-Critic (Haarnoja et al. 2018) with twin critics and automatic entropy tuning.

Reading order follows one gradient step: ``_td_target`` (soft Bellman target from the target
critics, bootstrapping through truncations), ``_actor_loss``, then ``_gradient_step``: the
critic step (``OffPolicy._critic_step``), the actor and temperature steps, the Polyak update.
The losses themselves are pure functions in ``jaxlab.rl.losses`` (``sac_target``,
``twin_critic_loss``, ``sac_actor_loss``, ``sac_temperature_loss``). Collection,
replay, warm-up, health, resets, LEAST and evaluation live in ``offpolicy.OffPolicy``.

``make_train(config, env)`` returns a :class:`SAC` whose methods are pure functions of one
seed's state; ``train(key)`` runs the whole thing as one ``lax.scan`` and
``jax.vmap(make_train(config, env))(keys)`` trains many seeds at once. The launcher uses the
chunked form (``init``/``chunk``/``evaluate``) through ``jaxlab.core.loop``.

Shapes: a batch is a ``replay.Transition`` with leaves [B, ...]; Q-values of the twin critics
are [2, B].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxlab import nets
from jaxlab import optim
from jaxlab.core.config import require
from jaxlab.envs.base import Env
from jaxlab.rl import env_trainer
from jaxlab.rl import losses
from jaxlab.rl import offpolicy


def default_config() -> ml_collections.ConfigDict:
  """Every key a SAC experiment may set (defaults: CleanRL / GraMa's SAC, spec §4.4)."""
  c = offpolicy.default_config("sac")
  c.critic_lr = 1e-3
  c.alpha_lr = 3e-4
  c.init_alpha = 1.0
  c.target_entropy = None  # None: -action_size (Haarnoja et al. 2018b)
  c.autotune_alpha = True  # False: alpha stays init_alpha
  c.policy_delay = 1  # actor and alpha step every d-th gradient step
  return c


def check_config(c: ml_collections.ConfigDict) -> None:
  offpolicy.check_config(c)
  require(c.init_alpha > 0, f"'config.init_alpha' must be > 0, got {c.init_alpha}")
  require(c.policy_delay >= 1, f"'config.policy_delay' must be >= 1, got {c.policy_delay}")


class SAC(offpolicy.OffPolicy):
  """SAC for one seed. ``jax.vmap`` its methods (or the instance) to train many seeds."""

  actor_class = nets.GaussianActor
  target_keys = ("critic",)

  def __init__(self, config: ml_collections.ConfigDict, env: Env):
    super().__init__(config, env)
    # The temperature is one scalar: plain Adam whatever config.optimizer says (a Kronecker
    # preconditioner of a scalar is a scalar step size, and weight decay would pull α to 1).
    self.alpha_tx = optim.make_optimizer("adam", config.alpha_lr).tx
    self.target_entropy = (-float(self.action_size) if config.target_entropy is None
                           else float(config.target_entropy))

  def _extra_params(self, key):
    del key
    return {"log_alpha": jnp.log(jnp.asarray(self.config.init_alpha, jnp.float32))}

  def _extra_opt_state(self, params):
    return {"alpha": self.alpha_tx.init(params["log_alpha"])}

  # --- acting -------------------------------------------------------------------------------

  def _sample(self, actor_params, stats, obs, key):
    """Reparameterised sample: (action [..., A] in (-1, 1), log-prob [...])."""
    dist = self.actor(actor_params, stats, obs)
    raw = dist.sample_raw(key)
    return dist.squash(raw), dist.log_prob(raw)

  def _explore(self, params, stats, obs, key, noise_std):
    k_sample, k_noise = jax.random.split(key)
    action, _ = self._sample(params["actor"], stats, obs, k_sample)
    # Extra Gaussian noise only when LEAST's adaptive schedule raises it (spec §3.3 item 2).
    noise = noise_std * jax.random.normal(k_noise, action.shape)
    return jnp.clip(action + noise, -1.0, 1.0)

  def _greedy(self, params, stats, obs):
    dist = self.actor(params["actor"], stats, obs)
    return dist.squash(dist.mode_raw())

  # --- losses -------------------------------------------------------------------------------

  def _td_target(self, learner, stats, reward, terminated, next_obs, key):
    """``losses.sac_target`` with a' ~ π(s') and the target critics; [B]."""
    c = self.config
    next_action, next_logp = self._sample(learner.params["actor"], stats, next_obs, key)
    next_q = self.critic(learner.target["critic"], stats, next_obs, next_action)
    return losses.sac_target(reward, terminated, next_q, next_logp,
                             jnp.exp(learner.params["log_alpha"]), gamma=c.gamma,
                             reward_scaling=c.reward_scaling)

  def _actor_loss(self, actor_params, learner, stats, batch, key, perturbations=None):
    """``losses.sac_actor_loss`` with a ~ π(s) reparameterised; the log-probs go to α."""
    dist, features = self.actor(actor_params, stats, batch.obs, return_features=True,
                                perturbations=perturbations)
    raw = dist.sample_raw(key)
    action, logp = dist.squash(raw), dist.log_prob(raw)
    q = self.critic(learner.params["critic"], stats, batch.obs, action)
    loss, metrics = losses.sac_actor_loss(logp, q, jnp.exp(learner.params["log_alpha"]))
    return loss, ({**metrics, "_logp": logp}, features)

  # --- one gradient step --------------------------------------------------------------------

  def _gradient_step(self, learner, stats, batch, key):
    c = self.config
    k_critic, k_actor = jax.random.split(key)
    learner, metrics = self._critic_step(learner, stats, batch, k_critic)

    # Actor and temperature, every policy_delay-th step.
    def _actor_and_alpha(operand):
      learner, stats, batch, key, _ = operand
      params, opt_state, m = self._actor_step(learner, stats, batch, key)
      logp = m.pop("_logp")
      if c.autotune_alpha:
        alpha_loss, g_alpha = jax.value_and_grad(
            lambda log_alpha: losses.sac_temperature_loss(log_alpha, logp, self.target_entropy))(
                params["log_alpha"])
        updates, opt_state["alpha"] = self.alpha_tx.update(g_alpha, opt_state["alpha"])
        params["log_alpha"] = optax.apply_updates(params["log_alpha"], updates)
        m["loss/alpha"] = alpha_loss
      m["actor/updates"] = jnp.ones((), jnp.float32)
      learner = learner.replace(params=params, opt_state=opt_state,
                                actor_steps=learner.actor_steps + 1)
      return learner, stats, batch, key, m

    learner, actor_metrics = self._every_policy_delay(_actor_and_alpha, learner, stats, batch,
                                                      k_actor)
    metrics.update(actor_metrics)
    metrics["alpha"] = jnp.exp(learner.params["log_alpha"])

    # Targets follow the online critics at every step.
    target = dict(learner.target)
    target["critic"] = offpolicy.polyak(target["critic"], learner.params["critic"], c.tau)
    return learner.replace(target=target), metrics


TRAINER, make_train = env_trainer.declare("sac", SAC, default_config, check_config)
