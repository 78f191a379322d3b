"""What SAC and TD3 share: config groups, state, the collector, health and resets, the loop.

An *iteration* (one "update" for ``jaxlab.core.loop``) is: one step of all ``num_envs`` envs,
the LEAST stop rule if enabled (``jaxlab.rl.least``), one row added to the replay buffer, then
``utd`` gradient steps on batches sampled from it. A chunk is ``log_every`` iterations in one
``lax.scan``. Actions are uniform in [-1, 1] for the first ``learning_starts`` env steps, and
no gradient step runs before then.

An algorithm (``sac.SAC``, ``td3.TD3``) subclasses :class:`OffPolicy` and provides the actor,
its exploration and greedy actions, the TD target and the actor loss (the pure losses are in
``jaxlab.rl.losses``; the twin-critic loss is shared here); the base class wires the
representation diagnostics (``network_health`` every ``health.every`` gradient steps) and
neuron resets (ReDo / ReGraMa every ``reset.every`` gradient steps, spec rl.md §4.3) around
the algorithm's gradient step.

Work that is due only now and then (learning after warm-up, health, resets, TD3's delayed
actor step, LEAST's median refresh) goes through :func:`gated`. A plain ``lax.cond`` would not
do: the loop vmaps every method over seeds, the counters are per-seed arrays, and a ``cond``
with a batched predicate runs both branches at every step.

Critics (``network.critic``) and actors (``network.actor``) are ``jaxlab.nets`` networks
(``TwinCritic``; ``GaussianActor`` for SAC, ``DeterministicActor`` for TD3) on one of the
trunks ``nets.TRUNKS``: "mlp", "layernorm" or "bronet" (BRO's residual LN network, spec §4.4).
``network.*_depth`` is the number of hidden layers (MLPs) or of residual blocks (BroNet).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx, struct

from jaxlab import nets
from jaxlab import optim
from jaxlab import representations as rep
from jaxlab.core import batching
from jaxlab.core import loop
from jaxlab.core import mesh as mesh_lib
from jaxlab.core.chunked import train_whole
from jaxlab.core import running_stats
from jaxlab.core.config import require, require_choice
from jaxlab.core.errors import ConfigError
from jaxlab.envs import _common
from jaxlab.envs.base import Env, EnvState
from jaxlab.envs.evaluation import first_episode_returns
from jaxlab.rl import least as least_lib
from jaxlab.rl import losses
from jaxlab.rl import replay as replay_lib

RESET_METHODS = ("none", "redo", "regrama", "regrama_w")
RESET_NETWORKS = ("both", "critic", "actor")
# Default thresholds per reset method (spec §4.4): ReDo τ 0.02, ReGraMa τ 0.01.
DEFAULT_RESET_TAU = {"redo": 0.02, "regrama": 0.01, "regrama_w": 0.01}


# ---------------------------------------------------------------------------------------------
# Gating.


def gated(pred: jax.Array, fn: Callable[[Any], Any], operand: Any) -> Any:
  """``fn(operand) if pred else operand``, computing ``fn`` only when some seed needs it.

  A thin name for ``jaxlab.envs._common.maybe_apply`` (the rule auto-reset uses): under
  ``vmap`` over seeds it runs the batched ``fn`` once if any seed's ``pred`` holds and selects
  per seed. All seeds share their counters, so due work runs once and other steps cost nothing.
  ``fn`` must map ``operand`` to the same structure and must not close over traced values; put
  placeholders for its outputs (e.g. NaN metrics) inside ``operand``.
  """
  return _common.maybe_apply(pred, fn, operand)


# ---------------------------------------------------------------------------------------------
# Networks (in jaxlab.nets) and their neuron layers in this trainer's parameter tree.


def critic_layers(critic: nets.TwinCritic, outgoing: str) -> tuple[rep.NeuronLayer, ...]:
  """Both critics' layers under ``params["critic"]``, named "q1/<layer>" and "q2/<layer>"."""
  out = ()
  for name in ("q1", "q2"):
    net = getattr(critic, name)
    out += rep.trunk_layers(net.trunk, ("critic", name, "trunk"), ("critic", name, "head"),
                            net.head, outgoing, rename=name + "/")
  return out


def actor_layers(actor: nnx.Module, outgoing: str) -> tuple[rep.NeuronLayer, ...]:
  """The actor's trunk layers under ``params["actor"]``."""
  return rep.trunk_layers(actor.trunk, ("actor", "trunk"), ("actor", "head"), actor.head,
                          outgoing)


def polyak(target: Any, online: Any, tau: float) -> Any:
  """``tau * online + (1 - tau) * target``, leaf by leaf (soft target update)."""
  return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


# ---------------------------------------------------------------------------------------------
# Config.


def default_config(trainer: str) -> ml_collections.ConfigDict:
  """Keys shared by SAC and TD3 (each adds its own)."""
  c = loop.base_config(trainer, log_every=1000, eval_every=5000, checkpoint_every=0,
                       checkpoint_keep=2)  # every: iterations; log_every: iterations per chunk
  c.eval.num_envs = 8
  c.env = ml_collections.ConfigDict(dict(
      name="gymnax/Pendulum-v1", episode_length=200, action_repeat=1, impl="jax", backend=""))
  c.total_env_steps = 1_000_000
  c.num_envs = 1  # parallel envs stepped per iteration
  c.utd = 1  # gradient steps per iteration; replay ratio per transition = utd / num_envs
  c.learning_starts = 5000  # env steps of uniform random actions before any gradient step
  c.batch_size = 256
  c.gamma = 0.99
  c.tau = 0.005  # Polyak rate of the target networks
  c.actor_lr = 3e-4
  c.critic_lr = 3e-4
  c.max_grad_norm = 0.0  # 0 disables clipping
  # The actor's and the critics' optimizer (each with its lr above): adam | adamw | radam |
  # kron; the defaults are optax.adam's. Kron applies its lr / 3 rule (spec §2.3).
  c.optimizer = optim.default_config("adam", eps=1e-8)
  c.reward_scaling = 1.0
  c.normalize_observations = False
  c.replay = ml_collections.ConfigDict(dict(capacity=1_000_000, max_gb=4.0))
  c.network = ml_collections.ConfigDict(dict(
      actor="mlp", actor_width=256, actor_depth=2,
      critic="mlp", critic_width=256, critic_depth=2, activation="relu"))
  # Representation health (spec §4.6): every N gradient steps, one probe pass on the batch.
  c.health = ml_collections.ConfigDict(dict(every=0, dormant_tau=0.02, grama_tau=0.01,
                                            per_layer=False))
  # Neuron resets (spec §4.3): method none | redo | regrama (paper form, dL/dh) | regrama_w
  # (official-code form, kernel gradients); tau None = method default; max_fraction < 1
  # caps the share of a layer reset at once (5% on Humanoid); outgoing zero | none | auto.
  c.reset = ml_collections.ConfigDict(dict(method="none", every=1000, tau=None,
                                           max_fraction=1.0, outgoing="auto",
                                           networks="both"))
  c.least = least_lib.default_config()
  c.target_return = None
  return c


def check_config(c: ml_collections.ConfigDict) -> None:
  """Rules shared by SAC and TD3; each failure names its key."""
  for key in ("num_envs", "utd", "batch_size", "total_env_steps"):
    require(c[key] >= 1, f"'config.{key}' must be >= 1, got {c[key]}")
  optim.check_group(c)
  for key in ("actor_lr", "critic_lr"):
    require(c[key] > 0, f"'config.{key}' must be > 0, got {c[key]}")
  require(c.learning_starts >= 0, f"'config.learning_starts' must be >= 0, got "
          f"{c.learning_starts}")
  require(0 < c.gamma <= 1, f"'config.gamma' must be in (0, 1], got {c.gamma}")
  require(0 < c.tau <= 1, f"'config.tau' must be in (0, 1], got {c.tau}")
  require(c.replay.capacity >= c.batch_size,
          f"'config.replay.capacity'={c.replay.capacity} must be >= config.batch_size="
          f"{c.batch_size}")
  require(c.replay.max_gb > 0, f"'config.replay.max_gb' must be > 0, got {c.replay.max_gb}")
  for key in ("actor", "critic"):
    require_choice(c, f"network.{key}", nets.TRUNKS)
    for dim in ("width", "depth"):
      value = c.network[f"{key}_{dim}"]
      require(value >= 1, f"'config.network.{key}_{dim}' must be >= 1, got {value}")
  require_choice(c, "network.activation", nets.ACTIVATIONS)
  require(c.health.every >= 0, f"'config.health.every' must be >= 0, got {c.health.every}")
  require_choice(c, "reset.method", RESET_METHODS)
  require_choice(c, "reset.outgoing", rep.OUTGOING_MODES)
  require_choice(c, "reset.networks", RESET_NETWORKS)
  require(c.reset.every >= 1, f"'config.reset.every' must be >= 1, got {c.reset.every}")
  require(0 < c.reset.max_fraction <= 1,
          f"'config.reset.max_fraction' must be in (0, 1], got {c.reset.max_fraction}")
  if c.reset.method in ("redo", "regrama") or c.health.every:
    # The paper forms need the pre-activation gradient from the activation's output.
    require(c.network.activation in ("relu", "leaky_relu", "tanh"),
            f"'config.network.activation'={c.network.activation!r}: health metrics and "
            "redo/regrama resets need relu, leaky_relu or tanh; use reset.method='regrama_w'")
  require(c.total_env_steps >= steps_per_update(c),
          f"'config.total_env_steps'={c.total_env_steps} is less than one iteration "
          f"({steps_per_update(c)} env steps)")
  least_lib.check_config(c.least, num_envs=c.num_envs)


def steps_per_update(c: ml_collections.ConfigDict) -> int:
  """Env steps (counting action repeats) of one iteration."""
  return c.num_envs * c.env.action_repeat


def num_updates(c: ml_collections.ConfigDict) -> int:
  """Iterations in the run, rounded up to whole chunks of ``log_every``."""
  n = -(-c.total_env_steps // steps_per_update(c))
  return -(-n // c.log_every) * c.log_every


# ---------------------------------------------------------------------------------------------
# State.


@struct.dataclass
class Learner:
  """Parameters and optimizer state of one seed.

  Attributes:
    params: {"actor": nnx.State, "critic": nnx.State (TwinCritic)} plus algorithm extras
      (SAC: "log_alpha").
    target: target copies (SAC: {"critic"}; TD3: {"actor", "critic"}).
    opt_state: {"actor", "critic"[, "alpha"]}; each optimizer is initialised on
      ``{name: params[name]}`` so its moments have the same paths as the reset layers.
    grad_steps: () int32 gradient steps done.
    actor_steps: () int32 actor updates done (TD3: grad_steps // policy_delay).
  """
  params: Any
  target: Any
  opt_state: Any
  grad_steps: jax.Array
  actor_steps: jax.Array


@struct.dataclass
class TrainState:
  """Everything one seed's next iteration reads; checkpointed whole (replay included)."""
  learner: Learner
  replay: replay_lib.ReplayBuffer
  env_state: EnvState  # batched [num_envs]
  obs_stats: running_stats.RunningStats
  least: Any  # least.LeastState, or None when LEAST is off
  key: jax.Array
  update: jax.Array  # () int32 iterations done


# ---------------------------------------------------------------------------------------------
# The trainer skeleton.


class OffPolicy:
  """Collector, learning schedule, health, resets, eval and sharding for one seed.

  Subclasses set ``actor_class`` and ``target_keys`` and implement ``_extra_params``,
  ``_explore``, ``_greedy``, ``_td_target``, ``_actor_loss`` and ``_gradient_step`` (see
  ``sac.py`` for the reference); the critic loss is shared.
  """

  actor_class: type = nets.GaussianActor
  target_keys: tuple[str, ...] = ("critic",)

  def __init__(self, config: ml_collections.ConfigDict, env: Env):
    if env.spec.discrete or len(env.spec.obs_shape) != 1:
      raise ConfigError(f"'config.env.name'={config.env.name!r}: {config.trainer} needs a "
                        "continuous action space and flat observations")
    self.config, self.env, self.spec = config, env, env.spec
    self.num_updates = num_updates(config)
    self.steps_per_update = steps_per_update(config)
    self.obs_size, self.action_size = env.spec.obs_shape[0], env.spec.action_size
    actor, critic = self._networks(nnx.Rngs(0))  # structure only; init() draws real weights
    self._actor_def, _ = nnx.split(actor)
    self._critic_def, _ = nnx.split(critic)
    self.actor_layers = actor_layers(actor, config.reset.outgoing)
    self.critic_layers = critic_layers(critic, config.reset.outgoing)
    self.actor_tx = optim.from_group(config.optimizer, config.actor_lr,
                                     max_grad_norm=config.max_grad_norm).tx
    self.critic_tx = optim.from_group(config.optimizer, config.critic_lr,
                                      max_grad_norm=config.max_grad_norm).tx
    # Replay memory is checked here, before init() allocates anything (issue: no silent
    # multi-GB allocation).
    self._example = replay_lib.Transition(
        obs=jax.ShapeDtypeStruct(env.spec.obs_shape, jnp.float32),
        action=jax.ShapeDtypeStruct((self.action_size,), jnp.float32),
        reward=jax.ShapeDtypeStruct((), jnp.float32),
        terminated=jax.ShapeDtypeStruct((), jnp.bool_),
        truncated=jax.ShapeDtypeStruct((), jnp.bool_),
        next_obs=jax.ShapeDtypeStruct(env.spec.obs_shape, jnp.float32))
    self.replay_bytes = replay_lib.check_memory(
        self._example, config.replay.capacity, config.num_envs, config.num_seeds,
        config.replay.max_gb)
    self.least_start = int(config.least.start_fraction * config.total_env_steps)

  def _networks(self, rngs: nnx.Rngs):
    n = self.config.network
    actor = self.actor_class(self.obs_size, self.action_size, n.actor, n.actor_width,
                             n.actor_depth, n.activation, rngs=rngs)
    critic = nets.TwinCritic(self.obs_size, self.action_size, n.critic, n.critic_width,
                        n.critic_depth, n.activation, rngs=rngs)
    return actor, critic

  # --- network application (observations normalised here, so the buffer keeps raw ones) ----

  def _normalize(self, stats, obs):
    if not self.config.normalize_observations:
      return obs
    return running_stats.normalize(stats, obs)

  def actor(self, actor_params, stats, obs, **kwargs):
    """The actor's output (SAC: TanhNormal; TD3: actions) for raw observations [..., O]."""
    return nnx.merge(self._actor_def, actor_params)(self._normalize(stats, obs), **kwargs)

  def critic(self, critic_params, stats, obs, action, **kwargs):
    """Q-values [2, ...] of both critics for raw observations [..., O] and actions [..., A]."""
    return nnx.merge(self._critic_def, critic_params)(self._normalize(stats, obs), action,
                                                      **kwargs)

  # --- to be provided by the algorithm -------------------------------------------------------

  def _extra_params(self, key) -> dict:
    return {}

  def _extra_opt_state(self, params) -> dict:
    return {}

  def _explore(self, params, stats, obs, key, noise_std):
    raise NotImplementedError

  def _greedy(self, params, stats, obs):
    raise NotImplementedError

  def _td_target(self, learner, stats, reward, terminated, next_obs, key):
    raise NotImplementedError

  def _critic_loss(self, critic_params, learner, stats, batch, key, perturbations=None):
    """``losses.twin_critic_loss`` of both critics on the algorithm's ``_td_target``.

    Returns:
      ``(loss, (metrics, features))``: the features of both critics for the health and reset
      probes (``perturbations`` are added to them).
    """
    y = self._td_target(learner, stats, batch.reward, batch.terminated, batch.next_obs, key)
    q, features = self.critic(critic_params, stats, batch.obs, batch.action,
                              return_features=True, perturbations=perturbations)
    loss, metrics = losses.twin_critic_loss(q, y)
    return loss, (metrics, features)

  def _actor_loss(self, actor_params, learner, stats, batch, key, perturbations=None):
    """-> (loss, (metrics, features))."""
    raise NotImplementedError

  def _gradient_step(self, learner, stats, batch, key):
    """-> (learner, metrics) for one batch [B]; must increment ``grad_steps``."""
    raise NotImplementedError

  # --- pieces both algorithms' gradient steps use ----------------------------------------------

  def _critic_step(self, learner, stats, batch, key):
    """One critic update on ``_critic_loss`` that counts a gradient step.

    Returns:
      ``(learner, metrics)``.
    """
    params, opt_state = dict(learner.params), dict(learner.opt_state)
    (_, (metrics, _)), grads = jax.value_and_grad(self._critic_loss, has_aux=True)(
        params["critic"], learner, stats, batch, key)
    updates, opt_state["critic"] = self.critic_tx.update(
        {"critic": grads}, opt_state["critic"], {"critic": params["critic"]})
    params["critic"] = optax.apply_updates({"critic": params["critic"]}, updates)["critic"]
    return learner.replace(params=params, opt_state=opt_state,
                           grad_steps=learner.grad_steps + 1), metrics

  def _actor_step(self, learner, stats, batch, key):
    """One actor update on ``_actor_loss``.

    Returns:
      ``(params, opt_state, metrics)``: new dicts with the updated actor entries.
    """
    params, opt_state = dict(learner.params), dict(learner.opt_state)
    (_, (m, _)), grads = jax.value_and_grad(self._actor_loss, has_aux=True)(
        params["actor"], learner, stats, batch, key)
    updates, opt_state["actor"] = self.actor_tx.update(
        {"actor": grads}, opt_state["actor"], {"actor": params["actor"]})
    params["actor"] = optax.apply_updates({"actor": params["actor"]}, updates)["actor"]
    return params, opt_state, m

  def _every_policy_delay(self, fn, learner, stats, batch, key):
    """``fn`` on every ``policy_delay``-th gradient step (every step when the delay is 1).

    ``fn((learner, stats, batch, key, metrics)) -> (learner, stats, batch, key, metrics)``;
    on skipped steps its metrics are zeros of the same structure.

    Returns:
      ``(learner, metrics)``.
    """
    placeholder = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype),
        jax.eval_shape(fn, (learner, stats, batch, key, None))[4])
    operand = (learner, stats, batch, key, placeholder)
    if self.config.policy_delay == 1:
      learner, _, _, _, metrics = fn(operand)
    else:
      due = learner.grad_steps % self.config.policy_delay == 0
      learner, _, _, _, metrics = gated(due, fn, operand)
    return learner, metrics

  def _exploration_noise(self) -> float:
    """Initial std of the Gaussian noise added to exploratory actions (LEAST adapts it)."""
    return 0.0

  # --- init ---------------------------------------------------------------------------------

  def init(self, key: jax.Array) -> TrainState:
    """A fresh state for one seed."""
    c = self.config
    k_net, k_env, key = jax.random.split(key, 3)
    # Orthogonal inits draw QRs: run them per seed under the loop's vmap (jaxlab.core.batching).
    learner = batching.sequential(self._init_learner)(k_net)
    env_state = jax.vmap(self.env.reset)(jax.random.split(k_env, c.num_envs))
    least = None
    if c.least.enabled:
      least = least_lib.init(c.least, c.num_envs, self.spec.episode_length,
                             self._exploration_noise())
    return TrainState(
        learner=learner,
        replay=replay_lib.init(self._example, c.replay.capacity, c.num_envs),
        env_state=env_state, obs_stats=running_stats.init(self.spec.obs_shape), least=least,
        key=key, update=jnp.zeros((), jnp.int32))

  def _init_learner(self, key: jax.Array) -> Learner:
    k_net, k_extra = jax.random.split(key)
    actor, critic = self._networks(nnx.Rngs(k_net))
    params = {"actor": nnx.state(actor), "critic": nnx.state(critic),
              **self._extra_params(k_extra)}
    opt_state = {"actor": self.actor_tx.init({"actor": params["actor"]}),
                 "critic": self.critic_tx.init({"critic": params["critic"]}),
                 **self._extra_opt_state(params)}
    target = {k: params[k] for k in self.target_keys}
    return Learner(params=params, target=target, opt_state=opt_state,
                   grad_steps=jnp.zeros((), jnp.int32), actor_steps=jnp.zeros((), jnp.int32))

  # --- one iteration ------------------------------------------------------------------------

  def _act(self, state: TrainState, key):
    """Uniform random actions during warm-up, exploratory policy actions after. [N, A]."""
    k_random, k_policy = jax.random.split(key)
    obs = state.env_state.obs
    noise = (state.least.noise_std if state.least is not None
             else jnp.asarray(self._exploration_noise(), jnp.float32))
    policy_action = self._explore(state.learner.params, state.obs_stats, obs, k_policy, noise)
    random_action = jax.random.uniform(k_random, policy_action.shape, minval=-1.0, maxval=1.0)
    warmup = state.update * self.steps_per_update < self.config.learning_starts
    return jnp.where(warmup, random_action, policy_action)

  def _td_stats(self, learner, stats, obs, action, reward, terminated, next_obs, key):
    """LEAST's per-step signals (spec §3.2) for [N] transitions: Q̂ = min of the twins at
    (s, a), and G = the TD loss (mean over the twins of (Q_j(s, a) - y)^2)."""
    q = self.critic(learner.params["critic"], stats, obs, action)
    y = self._td_target(learner, stats, reward, terminated, next_obs, key)
    return q.min(axis=0), jnp.mean(jnp.square(q - y), axis=0)

  def _collect(self, state: TrainState, key):
    """One step of all envs (+ LEAST), stored in the buffer. Returns (state, metrics)."""
    k_act, k_td = jax.random.split(key)
    prev = state.env_state
    action = self._act(state, k_act)
    env_state = jax.vmap(self.env.step)(prev, action)
    metrics = {}
    least = state.least
    if least is not None:
      q_hat, g_hat = self._td_stats(state.learner, state.obs_stats, prev.obs, action,
                                    env_state.reward, env_state.terminated,
                                    env_state.final_obs, k_td)
      env_steps = (state.update + 1) * self.steps_per_update
      active = env_steps >= max(self.least_start, self.config.learning_starts)
      least, env_state, metrics = least_lib.observe(
          self.config.least, least, self.env, prev, env_state, q_hat, g_hat, active)
    # LEAST stops arrive here as truncated=True with next_obs = the reached state.
    transition = replay_lib.Transition(
        obs=prev.obs, action=action, reward=env_state.reward,
        terminated=env_state.terminated, truncated=env_state.truncated,
        next_obs=env_state.final_obs)
    obs_stats = state.obs_stats
    if self.config.normalize_observations:
      obs_stats = running_stats.update(obs_stats, prev.obs)
    metrics["train/episodes"] = env_state.done.sum()
    metrics["train/return_sum"] = jnp.where(env_state.done, env_state.done_return, 0.0).sum()
    if self.config.least.low_reward is not None:
      metrics["replay/low_reward_recent"] = jnp.mean(
          (transition.reward < self.config.least.low_reward).astype(jnp.float32))
    state = state.replace(replay=replay_lib.add(state.replay, transition), env_state=env_state,
                          obs_stats=obs_stats, least=least)
    return state, metrics

  def _learn(self, state: TrainState, key):
    """``utd`` gradient steps once warm-up is over. Returns (learner, metrics, performed)."""
    c = self.config
    k_sample, k_steps = jax.random.split(key)
    batches = jax.vmap(lambda k: replay_lib.sample(state.replay, k, c.batch_size))(
        jax.random.split(k_sample, c.utd))  # [utd, B, ...]
    env_steps = (state.update + 1) * self.steps_per_update
    ready = ((env_steps >= c.learning_starts)
             & (replay_lib.size(state.replay) >= c.batch_size))

    def _steps(operand):
      learner, stats, batches, key, _ = operand

      def body(learner, xs):
        batch, k = xs
        return self._gradient_step_with_upkeep(learner, stats, batch, k)

      learner, metrics = jax.lax.scan(body, learner, (batches, jax.random.split(key, c.utd)))
      return learner, stats, batches, key, _reduce_steps(metrics)

    placeholder = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype),
        jax.eval_shape(_steps, (state.learner, state.obs_stats, batches, k_steps, None))[4])
    learner, _, _, _, metrics = gated(
        ready, _steps, (state.learner, state.obs_stats, batches, k_steps, placeholder))
    metrics = {k: (jnp.where(ready, v, jnp.nan) if k.startswith("health/") else v)
               for k, v in metrics.items()}
    return learner, metrics, ready

  def update(self, state: TrainState):
    """One iteration: collect, store, learn. Returns (state, per-iteration metrics)."""
    key, k_collect, k_learn = jax.random.split(state.key, 3)
    state, metrics = self._collect(state, k_collect)
    learner, learn_metrics, performed = self._learn(state, k_learn)
    metrics.update(learn_metrics)
    metrics["train/performed"] = performed.astype(jnp.float32)
    return state.replace(learner=learner, key=key, update=state.update + 1), metrics

  def chunk(self, state: TrainState):
    """``config.log_every`` iterations in one scan, with metrics aggregated over them."""
    state, m = jax.lax.scan(lambda s, _: self.update(s), state, None,
                            length=self.config.log_every)
    return state, self._aggregate(state, m)

  def _aggregate(self, state, m: dict) -> dict:
    performed = m.pop("train/performed")
    out = {}
    episodes = m.pop("train/episodes").sum()
    return_sum = m.pop("train/return_sum").sum()
    out["train/episode_return"] = jnp.where(episodes > 0, return_sum / episodes, jnp.nan)
    out["train/episodes"] = episodes
    if "replay/low_reward_recent" in m:
      # The share among the transitions collected in this chunk (every iteration adds
      # num_envs of them), beside the cumulative share of the buffer below.
      out["replay/low_reward_share_recent"] = m.pop("replay/low_reward_recent").mean()
    if "least/stops" in m:
      out.update(least_lib.summarize({k: m.pop(k) for k in list(m) if k.startswith("least/")}))
      out["least/window"] = state.least.window.astype(jnp.float32)
      out["least/noise_std"] = state.least.noise_std
    actor_updates = m.get("actor/updates")
    for k, v in m.items():
      if k.startswith("health/"):
        out[k] = jnp.nanmean(v)  # NaN when not measured in this chunk
      elif k.startswith("reset/") or k == "actor/updates":
        out[k] = v.sum()
      elif actor_updates is not None and k in ACTOR_KEYS:
        out[k] = _weighted_mean(v, actor_updates * performed)
      else:  # losses and other per-step means: over the iterations that learned
        out[k] = _weighted_mean(v, performed)
    out["train/grad_steps"] = state.learner.grad_steps.astype(jnp.float32)
    out["train/replay_size"] = replay_lib.size(state.replay).astype(jnp.float32)
    if self.config.least.low_reward is not None:
      out["replay/low_reward_share"] = low_reward_share(state.replay,
                                                         self.config.least.low_reward)
    return out

  # --- health and resets around a gradient step ---------------------------------------------

  def _gradient_step_with_upkeep(self, learner, stats, batch, key):
    """The algorithm's step, then health every ``health.every`` and resets every
    ``reset.every`` gradient steps (counted after the step, spec §4.3)."""
    c = self.config
    k_step, k_health, k_reset = jax.random.split(key, 3)
    learner, metrics = self._gradient_step(learner, stats, batch, k_step)
    if c.health.every:
      def _health(operand):
        learner, stats, batch, key, _ = operand
        return learner, stats, batch, key, self.health(learner, stats, batch, key)

      nan = jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), jax.eval_shape(
          lambda *a: self.health(*a), learner, stats, batch, k_health))
      due = learner.grad_steps % c.health.every == 0
      metrics.update(gated(due, _health, (learner, stats, batch, k_health, nan))[4])
    if c.reset.method != "none":
      def _reset(operand):
        learner, stats, batch, key, _ = operand
        learner, counts = self.reset(learner, stats, batch, key)
        return learner, stats, batch, key, counts

      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(
          lambda *a: self.reset(*a)[1], learner, stats, batch, k_reset))
      due = learner.grad_steps % c.reset.every == 0
      learner, _, _, _, counts = gated(due, _reset, (learner, stats, batch, k_reset, zeros))
      metrics.update(counts)
    return learner, metrics

  def _probe(self, net: str, learner, stats, batch, key):
    """One forward/backward pass of ``net``'s loss: (Probe, grads {net: ...})."""
    loss = self._critic_loss if net == "critic" else self._actor_loss
    layers = self.critic_layers if net == "critic" else self.actor_layers

    def loss_fn(params, perturbations):
      value, (_, features) = loss(params[net], learner, stats, batch, key, perturbations)
      return value, features

    return rep.probe_and_grads(loss_fn, {net: learner.params[net]}, layers)

  def health(self, learner, stats, batch, key) -> dict:
    """``health/{dormant_ratio,fau,grama_ratio,grama_w_ratio,grad_norm}/{actor,critic}``."""
    h = self.config.health
    out = {}
    for net, layers in (("critic", self.critic_layers), ("actor", self.actor_layers)):
      probe, grads = self._probe(net, learner, stats, batch, key)
      out.update(rep.network_health(net, layers, features=probe.features,
                                    feature_grads=probe.feature_grads, grads=grads,
                                    dormant_tau=h.dormant_tau, grama_tau=h.grama_tau,
                                    per_layer=h.per_layer))
    return out

  def reset(self, learner, stats, batch, key):
    """ReDo / ReGraMa on the configured networks. Returns (learner, reset counts).

    Masks come from one probe pass of each network's loss on ``batch`` (features for ReDo,
    dL/dh for ReGraMa, kernel gradients for ``regrama_w``); ``rep.reset_neurons`` then
    re-initialises the flagged neurons and zeroes their Adam moments. Target networks are not
    reset: they follow the online ones through Polyak averaging.
    """
    return batching.sequential(self._reset)(learner, stats, batch, key)

  def _reset(self, learner, stats, batch, key):
    r = self.config.reset
    tau = DEFAULT_RESET_TAU[r.method] if r.tau is None else r.tau
    cap = None if r.max_fraction >= 1 else r.max_fraction
    nets_ = ("critic", "actor") if r.networks == "both" else (r.networks,)
    params, opt_state = dict(learner.params), dict(learner.opt_state)
    counts = {}
    for i, net in enumerate(nets_):
      layers = self.critic_layers if net == "critic" else self.actor_layers
      probe, grads = self._probe(net, learner, stats, batch, key)
      if r.method == "redo":
        masks = rep.redo_masks(probe.features, tau, layers=layers, max_fraction=cap)
      elif r.method == "regrama":
        masks = rep.regrama_masks(probe.feature_grads, tau, max_fraction=cap)
      else:
        masks = rep.regrama_weight_masks(grads, layers, tau, max_fraction=cap)
      new, opt_state[net] = rep.reset_neurons(
          {net: params[net]}, opt_state[net], masks, jax.random.fold_in(key, i), layers)
      params[net] = new[net]
      counts[f"reset/neurons/{net}"] = sum(jnp.sum(m) for m in masks.values()).astype(
          jnp.float32)
    counts["reset/events"] = jnp.ones((), jnp.float32)
    return learner.replace(params=params, opt_state=opt_state), counts

  # --- evaluation ---------------------------------------------------------------------------

  def greedy(self, state: TrainState, obs: jax.Array) -> jax.Array:
    """The greedy policy's actions [N, A] for raw observations [N, O]."""
    return self._greedy(state.learner.params, state.obs_stats, obs)

  def evaluate(self, state: TrainState, key: jax.Array):
    """Mean return of the first episode of ``eval.num_envs`` fresh envs, greedy policy (no
    LEAST stops: the return is the task's)."""
    return first_episode_returns(self.env, lambda obs, _: self.greedy(state, obs), key,
                                 self.config.eval.num_envs)

  def shard(self, state: TrainState, mesh) -> TrainState:
    """Places a seed-batched state: the env axis of the env states (axis 1), of the replay
    columns (axis 2) and of LEAST's current-episode rows split over the data devices; the
    rest (parameters, optimizer, LEAST history) replicated."""
    return mesh_lib.place_state(state, mesh, {"env_state": 1, "replay.data": 2,
                                              "least.q_row": 1, "least.g_row": 1})

  # --- the PureJaxRL shape ------------------------------------------------------------------

  def train(self, key: jax.Array):
    """The whole run as one pure function (PureJaxRL's shape): ``(state, metrics [chunks])``."""
    return train_whole(self, key)

  __call__ = train


def low_reward_share(buffer: replay_lib.ReplayBuffer, threshold: float) -> jax.Array:
  """() share of the stored transitions whose reward is below ``threshold``."""
  reward = buffer.data.reward  # [rows, width]
  filled = (jnp.arange(reward.shape[0]) < buffer.rows_filled)[:, None]
  low = jnp.sum(filled & (reward < threshold))
  return low / jnp.maximum(jnp.sum(filled) * reward.shape[1], 1)


def _weighted_mean(v: jax.Array, w: jax.Array) -> jax.Array:
  """Mean of ``v`` over the entries with weight ``w`` (0 when the weights sum to 0)."""
  return jnp.sum(jnp.where(w > 0, v * w, 0.0)) / jnp.maximum(jnp.sum(w), 1.0)


def _reduce_steps(metrics: dict) -> dict:
  """[utd] per-gradient-step metrics -> one value per iteration.

  Health values are means over the steps that measured them (NaN if none); reset counts are
  summed; the actor's metrics (keys under ``ACTOR_KEYS``, only produced on actor steps) are
  averaged over actor steps and ``actor/updates`` counts those steps.
  """
  out = {}
  updates = metrics.get("actor/updates")
  for k, v in metrics.items():
    if k.startswith("health/"):
      out[k] = jnp.nanmean(v)
    elif k.startswith("reset/") or k == "actor/updates":
      out[k] = v.sum()
    elif updates is not None and k in ACTOR_KEYS:
      out[k] = _weighted_mean(v, updates)
    else:
      out[k] = v.mean()
  return out


# Metrics an algorithm produces only on (possibly delayed) actor steps.
ACTOR_KEYS = ("loss/actor", "loss/alpha", "entropy")

