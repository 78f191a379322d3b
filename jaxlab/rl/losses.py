"""RL losses and targets as pure functions: PPO, PQN's Q(λ), SAC and TD3.

Every function here takes arrays (network outputs already computed, and a batch) and a few
numbers, never a trainer or a config object, so it can be tested with a hand-built batch. The
trainers (``ppo``, ``pqn``, ``sac``, ``td3``) apply their networks and call these; because the
networks run outside, a trainer can run them with ``perturbations=`` / ``return_features=``
(the health and reset probes of ``offpolicy.OffPolicy``, SIGReg on a trunk output) and
differentiate the same loss with respect to the features as well as the parameters.

Shapes: ``[T, B]`` time-major unrolls (steps, parallel envs); ``[M]`` a minibatch of flattened
steps; ``[B]`` a batch of replayed transitions; ``[2, B]`` the Q-values of twin critics
(``nets.TwinCritic``); ``[..., A]`` per-action values. Booleans (``terminated``, ``done``)
may be bool or 0/1 floats. Targets are wrapped in ``stop_gradient``.

Truncation vs termination: only ``terminated`` (the MDP ended) zeroes the bootstrap. A
truncated transition (time limit, LEAST stop) bootstraps from the state it reached, which the
collectors store as ``final_obs`` / ``next_obs``; so the targets below take no ``truncated``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Metrics = dict[str, jax.Array]


# ---------------------------------------------------------------------------------------------
# PPO (Schulman et al. 2017).


@dataclasses.dataclass(frozen=True)
class PPOLossConfig:
  """The knobs of :func:`ppo_loss`.

  Attributes:
    clip_eps: ε of the clipped surrogate (ratio clipped to [1 - ε, 1 + ε]).
    value_clip_eps: ε_V of the clipped value loss; 0 disables value clipping.
    vf_coef: weight c_1 of the value loss.
    ent_coef: weight c_2 of the entropy bonus.
    normalize_advantages: standardise the advantages over the minibatch first.
  """
  clip_eps: float = 0.2
  value_clip_eps: float = 0.0
  vf_coef: float = 0.5
  ent_coef: float = 0.01
  normalize_advantages: bool = True


def ppo_loss(*, log_prob: jax.Array, value: jax.Array, entropy: jax.Array,
             old_log_prob: jax.Array, old_value: jax.Array, advantage: jax.Array,
             target: jax.Array, cfg: PPOLossConfig) -> tuple[jax.Array, Metrics]:
  """PPO's loss ``L = -L^CLIP + c_1 L^V - c_2 H`` (Schulman et al. 2017, Eqs. 7 and 9).

  ``L^CLIP = mean min(ρ Â, clip(ρ, 1 - ε, 1 + ε) Â)`` with ``ρ = exp(log π - log π_old)``:
  a sample whose ratio has left the trust region in the direction its advantage favours
  (ρ > 1 + ε with Â > 0, ρ < 1 - ε with Â < 0) takes the clipped, constant branch and gets no
  gradient; moving the other way is never clipped. ``L^V = ½ mean (V - V^targ)²``, or with
  ``value_clip_eps`` ε_V > 0 the pessimistic ``½ mean max((V - V^targ)², (V_clip - V^targ)²)``
  with ``V_clip = V_old + clip(V - V_old, -ε_V, ε_V)``. ``H`` is the mean entropy.

  Args:
    log_prob: [M] log π(a|s) under the parameters being trained.
    value: [M] V(s) under them.
    entropy: [M] entropy (or an estimate of it) of π(·|s).
    old_log_prob: [M] log π_old(a|s) of the behaviour policy.
    old_value: [M] V_old(s) at collection (only read with value clipping).
    advantage: [M] Â (normalised here if ``cfg.normalize_advantages``).
    target: [M] value targets V^targ (GAE returns).
    cfg: :class:`PPOLossConfig`.

  Returns:
    ``(loss, metrics)``: metrics ``loss/policy`` (-L^CLIP), ``loss/value`` (L^V),
    ``loss/entropy`` (H), ``loss/approx_kl`` (mean (ρ - 1) - log ρ) and
    ``loss/clip_fraction`` (share of samples with |ρ - 1| > ε).
  """
  log_ratio = log_prob - old_log_prob
  ratio = jnp.exp(log_ratio)
  adv = advantage
  if cfg.normalize_advantages:
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
  surrogate = jnp.minimum(ratio * adv,
                          jnp.clip(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv)
  policy_loss = -surrogate.mean()

  value_err = jnp.square(value - target)
  if cfg.value_clip_eps > 0:
    clipped = old_value + jnp.clip(value - old_value, -cfg.value_clip_eps, cfg.value_clip_eps)
    value_err = jnp.maximum(value_err, jnp.square(clipped - target))
  value_loss = 0.5 * value_err.mean()

  entropy = entropy.mean()
  loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
  metrics = {
      "loss/policy": policy_loss, "loss/value": value_loss, "loss/entropy": entropy,
      "loss/approx_kl": ((ratio - 1) - log_ratio).mean(),
      "loss/clip_fraction": (jnp.abs(ratio - 1) > cfg.clip_eps).mean(),
  }
  return loss, metrics


# ---------------------------------------------------------------------------------------------
# PQN (Gallici et al. 2024): Q(λ) targets and the TD regression.


def q_lambda_targets(rewards: jax.Array, next_q: jax.Array, terminated: jax.Array,
                     done: jax.Array, gamma: float, lam: float) -> jax.Array:
  """Peng's Q(λ) returns over one unroll, computed backwards.

  ``G_t = r_t + γ (1 − term_t) [(1 − λ) max_a Q(s'_t, a) + λ G_{t+1}]``, where the λ-continuation
  ``G_{t+1}`` is used only while the episode goes on: after a step that ended the episode
  (``done_t``) the next row of the unroll belongs to a new episode, so the bracket is just
  ``max_a Q(s'_t, a)`` (a truncated episode bootstraps from its final observation; a terminated
  one gets ``r_t``). The last row bootstraps from its own next state.

  Args:
    rewards: [T, B] (already scaled).
    next_q: [T, B] ``max_a Q(final_obs_t, a)``, the value of the state each step reached.
    terminated: [T, B] bool.
    done: [T, B] bool, terminated or truncated.
    gamma: discount.
    lam: λ (0: one-step Q-learning targets; 1: Monte-Carlo returns within the unroll).

  Returns:
    [T, B] targets G_t.
  """
  def body(g_next, x):
    r, nq, term, d = x
    cont = jnp.where(d, nq, (1.0 - lam) * nq + lam * g_next)
    g = r + gamma * (1.0 - term.astype(r.dtype)) * cont
    return g, g

  _, targets = jax.lax.scan(body, next_q[-1], (rewards, next_q, terminated, done), reverse=True)
  return targets


def q_learning_loss(q: jax.Array, action: jax.Array,
                    target: jax.Array) -> tuple[jax.Array, Metrics]:
  """``½ mean (Q(s, a) − G)²``: regression of the taken action's Q-value onto its target.

  Args:
    q: [M, A] Q(s, ·) for every action.
    action: [M] int, the action taken.
    target: [M] G (e.g. :func:`q_lambda_targets`, flattened).

  Returns:
    ``(loss, metrics)``: metrics ``loss/td`` (the loss) and ``q_mean`` (mean Q(s, a)).
  """
  q_taken = jnp.take_along_axis(q, action[..., None], axis=-1)[..., 0]
  td = 0.5 * jnp.mean(jnp.square(q_taken - target))
  return td, {"loss/td": td, "q_mean": q_taken.mean()}


# ---------------------------------------------------------------------------------------------
# Off-policy actor-critic (SAC, TD3): targets and losses of twin critics.


def bellman_target(reward: jax.Array, terminated: jax.Array, next_value: jax.Array, *,
                   gamma: float, reward_scaling: float = 1.0) -> jax.Array:
  """``y = s r + γ (1 − terminated) V(s')``; truncated transitions bootstrap (module docstring).

  Args:
    reward: [B] rewards as collected.
    terminated: [B] bool.
    next_value: [B] the value of the reached state s'.
    gamma: discount γ.
    reward_scaling: s, multiplies the reward.

  Returns:
    [B] targets, without gradient.
  """
  y = reward * reward_scaling + gamma * (1.0 - terminated.astype(jnp.float32)) * next_value
  return jax.lax.stop_gradient(y)


def sac_target(reward: jax.Array, terminated: jax.Array, next_q: jax.Array,
               next_log_prob: jax.Array, alpha: jax.Array, *, gamma: float,
               reward_scaling: float = 1.0) -> jax.Array:
  """SAC's soft Bellman target (Haarnoja et al. 2018b) over the clipped double Q of TD3:

  ``y = s r + γ (1 − terminated) (min_j Q̄_j(s', a') − α log π(a'|s'))``, a' ~ π(·|s').

  Args:
    reward: [B].
    terminated: [B] bool.
    next_q: [2, B] the target critics Q̄_j at (s', a').
    next_log_prob: [B] log π(a'|s') of the sampled next action.
    alpha: () the entropy temperature α.
    gamma: discount γ.
    reward_scaling: s.

  Returns:
    [B] targets, without gradient.
  """
  soft_value = next_q.min(axis=0) - alpha * next_log_prob
  return bellman_target(reward, terminated, soft_value, gamma=gamma,
                        reward_scaling=reward_scaling)


def td3_target(reward: jax.Array, terminated: jax.Array, next_q: jax.Array, *, gamma: float,
               reward_scaling: float = 1.0) -> jax.Array:
  """TD3's clipped double-Q target (Fujimoto et al. 2018, §4.2):

  ``y = s r + γ (1 − terminated) min_j Q̄_j(s', ã)``, ã from :func:`smoothed_target_action`.

  Args:
    reward: [B].
    terminated: [B] bool.
    next_q: [2, B] the target critics at (s', ã).
    gamma: discount γ.
    reward_scaling: s.

  Returns:
    [B] targets, without gradient.
  """
  return bellman_target(reward, terminated, next_q.min(axis=0), gamma=gamma,
                        reward_scaling=reward_scaling)


def smoothed_target_action(action: jax.Array, noise: jax.Array, *, policy_noise: float,
                           noise_clip: float) -> jax.Array:
  """TD3's target policy smoothing (Fujimoto et al. 2018, §5.3):

  ``ã = clip(μ̄(s') + clip(σ ε, −c, c), −1, 1)``, ε ~ N(0, I).

  Args:
    action: [B, A] the target actor's action μ̄(s'), in [-1, 1].
    noise: [B, A] standard normal draws ε.
    policy_noise: σ.
    noise_clip: c.

  Returns:
    [B, A] smoothed actions in [-1, 1].
  """
  noise = jnp.clip(policy_noise * noise, -noise_clip, noise_clip)
  return jnp.clip(action + noise, -1.0, 1.0)


def twin_critic_loss(q: jax.Array, target: jax.Array) -> tuple[jax.Array, Metrics]:
  """``Σ_j mean_B (Q_j(s, a) − y)²``: each critic regresses onto the shared target.

  Args:
    q: [2, B] both critics at the replayed (s, a).
    target: [B] y (:func:`sac_target`, :func:`td3_target`).

  Returns:
    ``(loss, metrics)``: metrics ``loss/critic`` (the loss) and ``q/mean``.
  """
  loss = jnp.mean(jnp.square(q - target), axis=1).sum()
  return loss, {"loss/critic": loss, "q/mean": q.mean()}


def sac_actor_loss(log_prob: jax.Array, q: jax.Array,
                   alpha: jax.Array) -> tuple[jax.Array, Metrics]:
  """SAC's policy loss ``E[α log π(a|s) − min_j Q_j(s, a)]`` (Haarnoja et al. 2018b).

  The actions must be reparameterised samples of π (so the gradient reaches the policy through
  ``q`` and ``log_prob``); α is held fixed (no gradient).

  Args:
    log_prob: [B] log π(a|s) of the sampled actions.
    q: [2, B] both online critics at (s, a).
    alpha: () the temperature α.

  Returns:
    ``(loss, metrics)``: metrics ``loss/actor`` and ``entropy`` (−mean log π).
  """
  q = q.min(axis=0)
  alpha = jax.lax.stop_gradient(alpha)
  loss = jnp.mean(alpha * log_prob - q)
  return loss, {"loss/actor": loss, "entropy": -log_prob.mean()}


def sac_temperature_loss(log_alpha: jax.Array, log_prob: jax.Array,
                         target_entropy: float) -> jax.Array:
  """``−log α · mean(log π + H̄)`` (Haarnoja et al. 2018b, Eq. 18, in log α).

  Its gradient ``−mean(log π + H̄)`` is negative when the entropy ``−log π`` is below the
  target H̄, so gradient descent raises α; above the target it lowers α.

  Args:
    log_alpha: () log α, the parameter.
    log_prob: [B] log π(a|s) of actions sampled from the current policy (no gradient).
    target_entropy: H̄ (SAC's default: −action size).

  Returns:
    () the loss.
  """
  return -jnp.mean(log_alpha * jax.lax.stop_gradient(log_prob + target_entropy))


def td3_actor_loss(q: jax.Array) -> tuple[jax.Array, Metrics]:
  """TD3's deterministic policy gradient loss ``−mean Q_1(s, μ(s))`` (Fujimoto et al. 2018):
  through the first critic only.

  Args:
    q: [2, B] both online critics at (s, μ(s)).

  Returns:
    ``(loss, metrics)``: metrics ``loss/actor``.
  """
  loss = -q[0].mean()
  return loss, {"loss/actor": loss}
