"""Proximal Policy Optimisation, in one compiled program per chunk of updates.

Reading order follows execution. One ``update`` is four phases, each a pure method that can be
compiled and timed alone (``benchmarks/ppo_vs_brax.py --phases``): ``collect`` (``_rollout``, a
scan of env steps), ``advantages`` (``_advantages``, GAE with bootstrap on truncation),
``learn`` (``_update_epoch`` / ``_update_minibatch``, a scan of SGD steps over a shuffled
batch; ``_loss`` applies the networks and calls ``losses.ppo_loss``) and ``finish``
(observation statistics, metrics). ``make_train(config, env)`` returns a :class:`PPO` whose
methods are pure functions of one seed's state; ``train(key)`` runs the whole thing as one
``lax.scan`` and ``jax.vmap(make_train(config, env))(keys)`` trains many seeds at once.

The launcher (``jaxlab.core.loop``) uses the chunked form instead: ``init`` once, then
``chunk`` (``config.log_every`` updates in one compiled call) between which it logs, evaluates
and checkpoints.

Conventions: time-major arrays ``[T, N]`` (unroll length, parallel envs); continuous actions are
sampled pre-tanh (``raw``) and squashed before the env sees them, so the log-probabilities of the
behaviour policy are exact.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx, struct

from jaxlab import optim
from jaxlab.core import loop
from jaxlab.core import mesh as mesh_lib
from jaxlab.core import running_stats
from jaxlab.core.chunked import train_whole
from jaxlab.core.config import require, require_choice
from jaxlab.envs.base import Env, EnvState
from jaxlab.envs.evaluation import first_episode_returns
from jaxlab.rl import auxiliary
from jaxlab.rl import env_trainer
from jaxlab.rl import losses
from jaxlab.rl import networks
from jaxlab.rl.gae import gae, lambda_td_advantages


def default_config() -> ml_collections.ConfigDict:
  """Every key a PPO experiment may set, with defaults close to brax's PPO."""
  c = loop.base_config("ppo", log_every=10, eval_every=50, checkpoint_every=50,
                       checkpoint_keep=3)  # every: updates; log_every: updates per chunk
  c.eval.num_envs = 16
  c.env = ml_collections.ConfigDict(dict(
      name="playground/CartpoleBalance",
      episode_length=1000,
      action_repeat=1,
      impl="jax",  # Playground physics: "jax" (fast on CPU) or "warp"
      backend="",  # Brax physics pipeline ("" = jaxlab's default for the env)
  ))
  c.total_env_steps = 1_000_000
  c.num_envs = 256
  c.unroll_length = 30
  c.unrolls_per_update = 1  # sequential unrolls of num_envs envs gathered per update
  c.num_minibatches = 8
  c.num_epochs = 4
  c.learning_rate = 3e-4
  c.lr_schedule = "constant"  # or "linear" (to 0 at the last update)
  c.max_grad_norm = 0.0  # 0 disables clipping
  c.optimizer = optim.default_config("adam", eps=1e-5)  # name: adam | adamw | radam | kron
  c.gamma = 0.99
  c.gae_lambda = 0.95
  # "gae": GAE(λ) (PPO's paper, PureJaxRL); "lambda_td": brax.training's PPO advantage, the
  # one-step TD error of the λ-return targets (the same value targets either way).
  c.advantage_estimator = "gae"
  # What a minibatch is made of: "transition" (shuffled transitions: PPO's paper, PureJaxRL)
  # or "sequence" (whole unroll sequences, num_envs * unrolls_per_update of them: brax.training).
  c.minibatch_unit = "transition"
  # When advantages, value targets and old values are computed: "update" (once, from the critic
  # that collected: PPO's paper, PureJaxRL), "epoch" (over the whole batch from the current
  # critic at the start of every epoch, as Andrychowicz et al. 2021 recommend) or "minibatch"
  # (over each minibatch's sequences from the current critic at every SGD step; needs
  # minibatch_unit="sequence"; with it, brax.training's learner). "epoch" is the default since
  # 2026-12-07, by a rule registered before its runs (README, "Against brax.training PPO"): at
  # brax's tuned schedule it lifted the final return on all three DM Control tasks tried (+530,
  # +80, +37) and hurt in none of the five settings run; it costs ~0.83x env-steps/s. Configs
  # that follow PureJaxRL, and those whose recorded numbers were run before, pin "update".
  c.advantage_refresh = "epoch"
  c.clip_eps = 0.2
  c.value_clip_eps = 0.0  # 0 disables value clipping
  c.vf_coef = 0.5
  c.ent_coef = 0.01
  c.normalize_advantages = True
  c.reward_scaling = 1.0
  c.normalize_observations = True
  # When an update's unrolls enter the observation statistics: "after" its SGD steps (the
  # learner normalises as the behaviour policy did, so the first step's ratio is 1) or
  # "before" its advantages and SGD steps (brax.training's PPO).
  c.obs_stats_timing = "after"
  c.network = ml_collections.ConfigDict(dict(
      kind="plain", activation="silu", layernorm=False,
      policy_width=32, policy_depth=4, value_width=256, value_depth=5,
      # "orthogonal" (spec §2.2 gains) | "lecun_uniform" (brax.training's PPO networks);
      # see jaxlab.rl.networks.
      init="orthogonal",
      **networks.network_defaults()))  # encoder, cnn_layernorm, preset, trunk_out
  c.aux = auxiliary.default_config()  # SIGReg on each trunk output (spec rl.md §1.4); off
  c.target_return = None  # optional: the run reports when eval return first reaches it
  return c


ADVANTAGE_ESTIMATORS = ("gae", "lambda_td")
MINIBATCH_UNITS = ("transition", "sequence")
ADVANTAGE_REFRESHES = ("update", "epoch", "minibatch")
OBS_STATS_TIMINGS = ("after", "before")


def check_config(c: ml_collections.ConfigDict) -> None:
  """PPO's consistency rules; each failure names its key."""
  for key in ("num_envs", "unroll_length", "unrolls_per_update", "num_minibatches", "num_epochs",
              "total_env_steps"):
    require(c[key] >= 1, f"'config.{key}' must be >= 1, got {c[key]}")
  optim.check_config(c)
  networks.check_config(c, ("policy_width", "policy_depth", "value_width", "value_depth"))
  auxiliary.check_config(c)
  batch = c.num_envs * c.unroll_length * c.unrolls_per_update
  require(batch % c.num_minibatches == 0,
          f"'config.num_minibatches'={c.num_minibatches} must divide the batch of "
          f"num_envs*unroll_length*unrolls_per_update={batch} transitions")
  require(c.total_env_steps >= steps_per_update(c),
          f"'config.total_env_steps'={c.total_env_steps} is less than one update "
          f"({steps_per_update(c)} env steps)")
  require(c.gamma <= 1.0 and c.gamma > 0, f"'config.gamma' must be in (0, 1], got {c.gamma}")
  require_choice(c, "advantage_estimator", ADVANTAGE_ESTIMATORS)
  require_choice(c, "minibatch_unit", MINIBATCH_UNITS)
  require_choice(c, "obs_stats_timing", OBS_STATS_TIMINGS)
  require_choice(c, "advantage_refresh", ADVANTAGE_REFRESHES)
  require(c.advantage_refresh != "minibatch" or c.minibatch_unit == "sequence",
          "'config.advantage_refresh'='minibatch' recomputes advantages over whole unroll "
          "sequences: set 'config.minibatch_unit'='sequence' too (brax.training's learner)")
  sequences = c.num_envs * c.unrolls_per_update
  require(c.minibatch_unit != "sequence" or sequences % c.num_minibatches == 0,
          f"'config.num_minibatches'={c.num_minibatches} must divide the "
          f"num_envs*unrolls_per_update={sequences} unroll sequences that "
          f"'config.minibatch_unit'='sequence' shuffles")


def steps_per_update(c: ml_collections.ConfigDict) -> int:
  """Env steps (counting action repeats) consumed by one update."""
  return c.num_envs * c.unroll_length * c.unrolls_per_update * c.env.action_repeat


def num_updates(c: ml_collections.ConfigDict) -> int:
  """Updates in the whole run, rounded up to whole chunks of ``log_every``."""
  n = c.total_env_steps // steps_per_update(c)
  return -(-n // c.log_every) * c.log_every


@struct.dataclass
class TrainState:
  """Everything one seed's next update reads. A pytree of arrays; checkpointed whole."""
  params: Any  # {"policy": nnx.State, "value": nnx.State}
  opt_state: Any
  obs_stats: running_stats.RunningStats
  env_state: EnvState  # batched [num_envs]
  key: jax.Array
  update: jax.Array  # () int32, updates done


@struct.dataclass
class Transition:
  """One step of the rollout, batched [T, N] by the scan."""
  obs: jax.Array
  raw_action: jax.Array
  log_prob: jax.Array
  reward: jax.Array
  terminated: jax.Array
  done: jax.Array
  final_obs: jax.Array
  done_return: jax.Array


def _same_bits(a: jax.Array, b: jax.Array) -> jax.Array:
  """Elementwise: ``a`` and ``b`` hold the same bits (so any function gives both the same
  result; unlike ``==``, -0.0 differs from 0.0 and a NaN matches itself)."""
  if jnp.issubdtype(a.dtype, jnp.floating):
    uint = jnp.dtype(f"uint{8 * a.dtype.itemsize}")
    a, b = jax.lax.bitcast_convert_type(a, uint), jax.lax.bitcast_convert_type(b, uint)
  return a == b


class PPO:
  """PPO for one seed. ``jax.vmap`` its methods (or the instance) to train many seeds."""

  def __init__(self, config: ml_collections.ConfigDict, env: Env):
    self.config, self.env, self.spec = config, env, env.spec
    self.num_updates = num_updates(config)
    self.steps_per_update = steps_per_update(config)
    rngs = nnx.Rngs(0)  # only for the graph structure; init() draws the real weights
    self._actor_def, _ = networks.split(networks.Actor(self.spec, config.network, rngs=rngs))
    self._critic_def, _ = networks.split(networks.Critic(self.spec, config.network, rngs=rngs))
    total_sgd_steps = self.num_updates * config.num_epochs * config.num_minibatches
    # [clip] -> optimizer; "kron" applies the papers' lr / 3 rule (spec §2.3).
    self.optimizer, self.lr_schedule = optim.from_config(config, total_sgd_steps)
    self.loss_config = losses.PPOLossConfig(
        clip_eps=config.clip_eps, value_clip_eps=config.value_clip_eps, vf_coef=config.vf_coef,
        ent_coef=config.ent_coef, normalize_advantages=config.normalize_advantages)

  # --- networks -----------------------------------------------------------------------------

  def _normalize(self, stats, obs):
    if not self.config.normalize_observations:
      return obs
    return running_stats.normalize(stats, obs)

  def policy(self, params, stats, obs, return_features: bool = False):
    """Action distribution for raw observations ``obs`` [..., *obs_shape].

    With ``return_features``: ``(distribution, features)``, see ``networks.represent``.
    """
    return networks.apply(self._actor_def, params["policy"], self._normalize(stats, obs),
                          return_features=return_features)

  def value(self, params, stats, obs, return_features: bool = False):
    """V(obs) [...] (and the features, as ``policy``)."""
    return networks.apply(self._critic_def, params["value"], self._normalize(stats, obs),
                          return_features=return_features)

  def act(self, params, stats, obs, key, deterministic: bool = False):
    """Returns (env action, raw action, log-prob). Deterministic = the distribution's mode."""
    dist = self.policy(params, stats, obs)
    if self.spec.discrete:
      action = dist.mode() if deterministic else dist.sample(key)
      return action, action, dist.log_prob(action)
    raw = dist.mode_raw() if deterministic else dist.sample_raw(key)
    return dist.squash(raw), raw, dist.log_prob(raw)

  # --- init ---------------------------------------------------------------------------------

  def init(self, key: jax.Array) -> TrainState:
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    _, actor = networks.split(networks.Actor(self.spec, self.config.network,
                                             rngs=nnx.Rngs(k_actor)))
    _, critic = networks.split(networks.Critic(self.spec, self.config.network,
                                               rngs=nnx.Rngs(k_critic)))
    params = {"policy": actor, "value": critic}
    env_keys = jax.random.split(k_env, self.config.num_envs)
    env_state = jax.vmap(self.env.reset)(env_keys)
    return TrainState(params=params, opt_state=self.optimizer.init(params),
                      obs_stats=running_stats.init(self.spec.obs_shape), env_state=env_state,
                      key=key, update=jnp.zeros((), jnp.int32))

  # --- one update ---------------------------------------------------------------------------

  def _rollout(self, state: TrainState):
    """``unroll_length`` steps of all envs. Returns (state, Transition [T, N])."""

    def _env_step(carry, _):
      env_state, key = carry
      key, k_act = jax.random.split(key)
      obs = env_state.obs
      action, raw, log_prob = self.act(state.params, state.obs_stats, obs, k_act)
      env_state = jax.vmap(self.env.step)(env_state, action)
      t = Transition(obs=obs, raw_action=raw, log_prob=log_prob, reward=env_state.reward,
                     terminated=env_state.terminated, done=env_state.done,
                     final_obs=env_state.final_obs, done_return=env_state.done_return)
      return (env_state, key), t

    (env_state, key), traj = jax.lax.scan(_env_step, (state.env_state, state.key), None,
                                          length=self.config.unroll_length)
    return state.replace(env_state=env_state, key=key), traj

  def _advantages(self, state: TrainState, traj: Transition):
    """GAE over one unroll (``config.advantage_estimator``) under ``state``'s critic."""
    return self._advantages_with(state.params, state.obs_stats, traj)

  def _advantages_with(self, params, stats, traj: Transition):
    """GAE over one unroll [T, N] (``config.advantage_estimator``) under ``params``' critic;
    bootstraps from V(final_obs) on truncation. Returns (advantages, targets, values) [T, N].

    ``final_obs[t]`` is ``obs[t + 1]`` unless an episode ended at step ``t`` (with the default
    wrappers), so one forward pass over ``obs`` and the last ``final_obs`` ([T + 1, N]) gives
    both V(obs) and V(final_obs); a second pass over all of ``final_obs`` runs only in an
    unroll where some pair differs (a vmapped ``lax.cond`` runs both branches). The values are
    those of separate passes over ``obs`` and ``final_obs`` (bit for bit on XLA:CPU, checked
    by tests/test_ppo_phases.py; a backend whose matmul rows depend on the batch size may
    differ in the last bits).
    """
    c = self.config
    value = lambda obs: self.value(params, stats, obs)
    values_ext = value(jnp.concatenate([traj.obs, traj.final_obs[-1:]]))
    values = values_ext[:-1]
    same = _same_bits(traj.final_obs[:-1], traj.obs[1:]).all()
    next_values = jax.lax.cond(same, lambda: values_ext[1:], lambda: value(traj.final_obs))
    rewards = traj.reward * c.reward_scaling
    adv, targets = gae(rewards, values, next_values, traj.terminated, traj.done,
                       c.gamma, c.gae_lambda)
    if c.advantage_estimator == "lambda_td":
      adv = lambda_td_advantages(rewards, values, next_values, traj.terminated, traj.done,
                                 targets, c.gamma)
    return adv, targets, values

  def _loss(self, params, stats, batch, key):
    """``losses.ppo_loss`` on this minibatch [+ λ SIGReg on both trunk outputs].

    batch: dict of flat [M] arrays: obs, raw_action, log_prob, advantage, target, value.
    """
    c = self.config
    # SIGReg reads the trunk outputs of this same forward pass (spec §1.4; the paper's code
    # recomputes them, which gives the same gradient at twice the trunk cost).
    sigreg_on = c.aux.sigreg.weight > 0
    dist = self.policy(params, stats, batch["obs"], return_features=sigreg_on)
    if sigreg_on:
      dist, policy_features = dist
    log_prob = dist.log_prob(batch["raw_action"])
    value = self.value(params, stats, batch["obs"], return_features=sigreg_on)
    if sigreg_on:
      value, value_features = value
    entropy = dist.entropy() if self.spec.discrete else dist.entropy(key)
    loss, metrics = losses.ppo_loss(
        log_prob=log_prob, value=value, entropy=entropy,
        old_log_prob=batch["log_prob"], old_value=batch["value"],
        advantage=batch["advantage"], target=batch["target"], cfg=self.loss_config)
    if sigreg_on:
      # Its own stream: `key` itself stays the entropy estimator's, as without SIGReg.
      term, aux_metrics = auxiliary.sigreg_term(
          {"policy": policy_features["representation"],
           "value": value_features["representation"]},
          jax.random.fold_in(key, 1), c.aux.sigreg)
      loss = loss + term
      metrics.update(aux_metrics)
    return loss, metrics

  def _update_minibatch(self, carry, batch):
    params, opt_state, stats, key = carry
    if self.config.advantage_refresh == "minibatch":  # batch: a Transition [M, T, ...]
      traj = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), batch)  # time-major [T, M, ...]
      adv, targets, values = self._advantages_with(params, stats, traj)
      batch = self.batch(jax.tree.map(lambda x: x[None], traj), adv[None], targets[None],
                         values[None])
    elif self.config.minibatch_unit == "sequence":  # batch: a dict of sequences [M, T, ...]
      batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
    key, k_loss = jax.random.split(key)
    (loss, metrics), grads = jax.value_and_grad(self._loss, has_aux=True)(
        params, stats, batch, k_loss)
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics["loss/total"] = loss
    metrics["grad_norm"] = optax.global_norm(grads)
    return (params, opt_state, stats, key), metrics

  def _update_epoch(self, carry, batch):
    """One pass over ``batch`` in ``num_minibatches`` shuffled parts: flat [U*T*N] transitions,
    or [U*N, T] sequences with ``config.minibatch_unit="sequence"``; with
    ``config.advantage_refresh="epoch"``, ``batch`` is the Transition [U, T, N] and is made
    into one here, from this epoch's critic."""
    params, opt_state, stats, key = carry
    if self.config.advantage_refresh == "epoch":
      batch = self.batch(batch, *self._advantages_of_unrolls(params, stats, batch),
                         self.config.minibatch_unit)
    key, k_perm = jax.random.split(key)
    size = jax.tree.leaves(batch)[0].shape[0]
    perm = jax.random.permutation(k_perm, size)
    m = self.config.num_minibatches
    minibatches = jax.tree.map(lambda x: x[perm].reshape((m, size // m) + x.shape[1:]), batch)
    (params, opt_state, stats, key), metrics = jax.lax.scan(
        self._update_minibatch, (params, opt_state, stats, key), minibatches)
    return (params, opt_state, stats, key), metrics

  # --- one update, phase by phase ----------------------------------------------------------
  # ``update`` is collect (rollout) -> advantages (GAE) -> learn (epochs x minibatches) ->
  # finish. Each phase is a pure function of arrays, so that benchmarks can compile and time
  # them one by one (benchmarks/ppo_vs_brax.py --phases) on exactly the code that trains.

  def collect(self, state: TrainState):
    """Rollout phase: ``unrolls_per_update`` unrolls. Returns (state, Transition [U, T, N])."""
    return jax.lax.scan(lambda state, _: self._rollout(state), state, None,
                        length=self.config.unrolls_per_update)

  def advantages(self, state: TrainState, traj: Transition):
    """GAE phase: ``_advantages`` of each unroll of ``traj`` [U, T, N] under ``state``'s
    networks. Returns (advantages, value targets, values), each [U, T, N]."""
    return self._advantages_of_unrolls(state.params, state.obs_stats, traj)

  def _advantages_of_unrolls(self, params, stats, traj: Transition):
    """``_advantages_with`` of each unroll of ``traj`` [U, T, N] under ``params``' critic."""
    return jax.lax.map(lambda t: self._advantages_with(params, stats, t), traj)

  @staticmethod
  def sequences(traj):
    """``traj`` [U, T, N, ...] (a Transition, or any tree of such arrays) as U*N unroll
    sequences [U*N, T, ...]: the learner's batch with ``config.advantage_refresh="minibatch"``
    (advantages come later, per minibatch)."""
    def seq(x):
      x = jnp.swapaxes(x, 1, 2)  # [U, N, T, ...]
      return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])
    return jax.tree.map(seq, traj)

  @staticmethod
  def batch(traj: Transition, adv: jax.Array, targets: jax.Array, values: jax.Array,
            unit: str = "transition"):
    """The learner's batch (see ``_loss``): a dict of flat [U*T*N, ...] transitions, or with
    ``unit="sequence"`` (``config.minibatch_unit``) of [U*N, T, ...] unroll sequences."""
    fields = {"obs": traj.obs, "raw_action": traj.raw_action, "log_prob": traj.log_prob,
              "advantage": adv, "target": targets, "value": values}  # each [U, T, N, ...]
    if unit == "sequence":
      return PPO.sequences(fields)
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[3:]), fields)

  def learn(self, state: TrainState, batch):
    """Update phase: ``num_epochs`` epochs of ``num_minibatches`` SGD steps on ``batch``
    (``batch(..., unit=config.minibatch_unit)``; with ``config.advantage_refresh`` "epoch" the
    Transition [U, T, N] itself, with "minibatch" ``sequences(traj)``).

    Returns (state with new params, optimizer state and key; metrics averaged over the SGD
    steps).
    """
    key, k_epochs = jax.random.split(state.key)
    (params, opt_state, _, _), metrics = jax.lax.scan(
        lambda carry, _: self._update_epoch(carry, batch),
        (state.params, state.opt_state, state.obs_stats, k_epochs), None,
        length=self.config.num_epochs)
    metrics = jax.tree.map(jnp.mean, metrics)
    return state.replace(params=params, opt_state=opt_state, key=key), metrics

  def observe(self, state: TrainState, traj: Transition) -> TrainState:
    """``traj``'s observations merged into the statistics (with
    ``config.normalize_observations``)."""
    if not self.config.normalize_observations:
      return state
    return state.replace(obs_stats=running_stats.update(state.obs_stats, traj.obs))

  def finish(self, state: TrainState, traj: Transition, metrics: dict):
    """Merges ``traj``'s observations into the statistics (``config.obs_stats_timing="after"``),
    adds the episode and lr metrics and counts the update. Returns (state, metrics)."""
    c = self.config
    # By default the statistics change after the SGD steps, so that the behaviour log-probs and
    # the learner's log-probs were computed under the same normalisation.
    if c.obs_stats_timing == "after":
      state = self.observe(state, traj)
    metrics["train/episodes"] = traj.done.sum()
    metrics["train/return_sum"] = jnp.where(traj.done, traj.done_return, 0.0).sum()
    metrics["lr"] = self.lr_schedule(state.update * c.num_epochs * c.num_minibatches)
    return state.replace(update=state.update + 1), metrics

  def update(self, state: TrainState):
    """Collect ``unrolls_per_update`` unrolls, then ``num_epochs`` epochs of minibatch SGD.

    Returns (state, metrics) with scalar metrics for this update.
    """
    state, traj = self.collect(state)
    if self.config.obs_stats_timing == "before":
      state = self.observe(state, traj)
    refresh = self.config.advantage_refresh
    if refresh == "minibatch":
      state, metrics = self.learn(state, self.sequences(traj))
    elif refresh == "epoch":
      state, metrics = self.learn(state, traj)
    else:
      adv, targets, values = self.advantages(state, traj)
      state, metrics = self.learn(state, self.batch(traj, adv, targets, values,
                                                    self.config.minibatch_unit))
    return self.finish(state, traj, metrics)

  def chunk(self, state: TrainState):
    """``config.log_every`` updates in one scan; metrics averaged over them (episode return
    averaged over the episodes that ended in the chunk, NaN when none did)."""

    def body(state, _):
      return self.update(state)

    state, metrics = jax.lax.scan(body, state, None, length=self.config.log_every)
    episodes = metrics.pop("train/episodes").sum()
    return_sum = metrics.pop("train/return_sum").sum()
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["train/episode_return"] = jnp.where(episodes > 0, return_sum / episodes, jnp.nan)
    metrics["train/episodes"] = episodes
    return state, metrics

  # --- evaluation ---------------------------------------------------------------------------

  def greedy(self, state: TrainState, obs: jax.Array) -> jax.Array:
    """The deterministic policy's env actions for raw observations ``obs`` [N, *obs_shape]."""
    return self.act(state.params, state.obs_stats, obs, state.key, deterministic=True)[0]

  def evaluate(self, state: TrainState, key: jax.Array):
    """Mean return of the first episode of ``eval.num_envs`` fresh envs, deterministic policy."""
    return first_episode_returns(self.env, lambda obs, _: self.greedy(state, obs), key,
                                 self.config.eval.num_envs)

  def shard(self, state: TrainState, mesh) -> TrainState:
    """Places a seed-batched state: env batch (axis 1) split over devices, the rest replicated."""
    return mesh_lib.place_state(state, mesh, {"env_state": 1})

  # --- the PureJaxRL shape ------------------------------------------------------------------

  def train(self, key: jax.Array):
    """The whole run as one pure function (PureJaxRL's shape): ``(state, metrics [chunks])``."""
    return train_whole(self, key)

  __call__ = train


TRAINER, make_train = env_trainer.declare("ppo", PPO, default_config, check_config)
