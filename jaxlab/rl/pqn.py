"""PQN: parallel Q-learning with Q(λ) targets, LayerNorm, no replay and no target network.

The algorithm of Gallici et al. (purejaxql) that the SIGReg and Stable-Gradients papers build on
(spec rl.md §1.5, §2.5, §6): many parallel envs collect a short unroll with an ε-greedy policy
of the current network, Q(λ) returns are computed backwards over it from the same network, and
the network regresses onto them for a few epochs of minibatches. LayerNorm in the network is
what makes learning stable without a target network.

Reading order follows execution: ``_rollout`` (a scan of env steps), ``_targets``
(``losses.q_lambda_targets``, one reverse scan), ``_update_epoch`` / ``_update_minibatch`` (a
scan of SGD steps over a shuffled batch), ``_loss`` (``losses.q_learning_loss``). ``make_train(config, env)`` returns a :class:`PQN` whose methods are pure
functions of one seed's state, in the shape of ``jaxlab.rl.ppo``: ``train(key)`` is the whole
run as one ``lax.scan``, and the launcher (``jaxlab.core.loop``) vmaps ``init`` / ``chunk`` over
seeds and logs, evaluates and checkpoints between chunks.

Conventions: time-major arrays ``[T, N]`` (unroll length, parallel envs). Episodes that end by
``truncated`` (time limit) bootstrap from the Q-value of ``final_obs``; purejaxql treats every
end as terminal.

Options from the papers, all config: ``network.encoder`` (MinAtar / Atari CNN), the trunk kind
and ``preset`` (multi-skip, spec §2.2), ``optimizer.name="kron"`` (spec §2.3) and
``aux.sigreg.weight`` (SIGReg on the trunk output, spec §1.4).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx, struct

from jaxlab import nets
from jaxlab import optim
from jaxlab import representations as rep
from jaxlab.core import loop
from jaxlab.core import mesh as mesh_lib
from jaxlab.core.chunked import train_whole
from jaxlab.core.config import require
from jaxlab.envs.base import Env, EnvSpec, EnvState
from jaxlab.envs.evaluation import first_episode_returns
from jaxlab.rl import auxiliary
from jaxlab.rl import env_trainer
from jaxlab.rl import losses
from jaxlab.rl import networks


def default_config() -> ml_collections.ConfigDict:
  """Every key a PQN experiment may set; defaults follow purejaxql's MinAtar config (spec §6)."""
  c = loop.base_config("pqn", log_every=10, eval_every=50, checkpoint_every=50,
                       checkpoint_keep=3)  # every: updates; log_every: updates per chunk
  c.eval.num_envs = 16
  c.eval.epsilon = 0.0
  c.env = ml_collections.ConfigDict(dict(
      name="gymnax/Breakout-MinAtar", episode_length=1000, action_repeat=1, impl="jax",
      backend=""))
  c.total_env_steps = 10_000_000
  c.num_envs = 128
  c.unroll_length = 32
  c.num_minibatches = 32
  c.num_epochs = 2
  c.learning_rate = 5e-4
  c.lr_schedule = "linear"  # or "constant"
  c.max_grad_norm = 10.0  # 0 disables clipping
  c.optimizer = optim.default_config("radam", eps=1e-8)  # PQN's optimiser (spec §1.5, §2.5)
  c.gamma = 0.99
  c.q_lambda = 0.65
  c.reward_scaling = 1.0
  c.exploration = ml_collections.ConfigDict(dict(
      eps_start=1.0, eps_finish=0.05,
      eps_decay=0.1))  # fraction of the run over which ε goes linearly from start to finish
  c.network = ml_collections.ConfigDict(dict(
      kind="plain", activation="relu", layernorm=True, width=128, depth=1,
      q_head_gain=0.01,  # orthogonal gain of the Q head (spec §2.2: Q-head std 0.01)
      **networks.network_defaults()))  # encoder, cnn_layernorm, preset, trunk_out
  c.aux = auxiliary.default_config()  # SIGReg on the trunk output (spec §1.4); off
  # Representation health on the envs' current observations, once per chunk (spec §1.7, §5).
  c.health = ml_collections.ConfigDict(dict(enabled=False, dormant_tau=0.0))
  c.target_return = None  # optional: the run reports when eval return first reaches it
  return c


def check_config(c: ml_collections.ConfigDict) -> None:
  """PQN's consistency rules; each failure names its key."""
  for key in ("num_envs", "unroll_length", "num_minibatches", "num_epochs", "total_env_steps"):
    require(c[key] >= 1, f"'config.{key}' must be >= 1, got {c[key]}")
  optim.check_config(c)
  networks.check_config(c, ("width", "depth"))
  auxiliary.check_config(c)
  batch = c.num_envs * c.unroll_length
  require(batch % c.num_minibatches == 0,
          f"'config.num_minibatches'={c.num_minibatches} must divide the batch of "
          f"num_envs*unroll_length={batch} transitions")
  require(c.total_env_steps >= steps_per_update(c),
          f"'config.total_env_steps'={c.total_env_steps} is less than one update "
          f"({steps_per_update(c)} env steps)")
  require(0 < c.gamma <= 1.0, f"'config.gamma' must be in (0, 1], got {c.gamma}")
  require(0 <= c.q_lambda <= 1.0, f"'config.q_lambda' must be in [0, 1], got {c.q_lambda}")
  e = c.exploration
  for key in ("eps_start", "eps_finish"):
    require(0 <= e[key] <= 1, f"'config.exploration.{key}' must be in [0, 1], got {e[key]}")
  require(0 < e.eps_decay <= 1, f"'config.exploration.eps_decay' must be in (0, 1] (a fraction "
          f"of the run), got {e.eps_decay}")
  require(0 <= c.eval.epsilon <= 1, f"'config.eval.epsilon' must be in [0, 1], got "
          f"{c.eval.epsilon}")


def steps_per_update(c: ml_collections.ConfigDict) -> int:
  """Env steps (counting action repeats) consumed by one update."""
  return c.num_envs * c.unroll_length * c.env.action_repeat


def num_updates(c: ml_collections.ConfigDict) -> int:
  """Updates in the whole run, rounded up to whole chunks of ``log_every``."""
  n = c.total_env_steps // steps_per_update(c)
  return -(-n // c.log_every) * c.log_every


class QNetwork(nnx.Module):
  """[Encoder] -> [trunk MLP] -> Q head (spec §1.4 "PQN": head = act -> Linear(D -> |A|))."""

  def __init__(self, spec: EnvSpec, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    self.obs_ndim = len(spec.obs_shape)
    self.encoder, self.trunk, size = networks.build_torso(spec, cfg, width=cfg.width,
                                                          depth=cfg.depth, rngs=rngs)
    self.head = nets.CategoricalHead(size, spec.action_size,
                                     input_activation=networks.head_activation(cfg),
                                     kernel_gain=cfg.q_head_gain, rngs=rngs)

  def __call__(self, obs: jax.Array, return_features: bool = False):
    """obs: [..., *obs_shape] -> Q-values [..., A] (and features, see ``networks.represent``)."""
    z, features = networks.represent(self, obs)
    q = self.head(z)
    if return_features:
      return q, features
    return q


@struct.dataclass
class TrainState:
  """Everything one seed's next update reads. A pytree of arrays; checkpointed whole."""
  params: Any  # nnx.State of the QNetwork
  opt_state: Any
  env_state: EnvState  # batched [num_envs]
  key: jax.Array
  update: jax.Array  # () int32, updates done


@struct.dataclass
class Transition:
  """One step of the rollout, batched [T, N] by the scan."""
  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  terminated: jax.Array
  done: jax.Array
  final_obs: jax.Array
  done_return: jax.Array


class PQN:
  """PQN for one seed. ``jax.vmap`` its methods (or the instance) to train many seeds."""

  def __init__(self, config: ml_collections.ConfigDict, env: Env):
    require(env.spec.discrete, f"PQN needs discrete actions; 'config.env.name'="
            f"{env.spec.name!r} has a continuous action space")
    self.config, self.env, self.spec = config, env, env.spec
    self.num_updates = num_updates(config)
    self.steps_per_update = steps_per_update(config)
    self._q_def, _ = networks.split(QNetwork(self.spec, config.network, rngs=nnx.Rngs(0)))
    total_sgd_steps = self.num_updates * config.num_epochs * config.num_minibatches
    # [clip] -> RAdam (or kron with the papers' lr / 3, spec §2.3).
    self.optimizer, self.lr_schedule = optim.from_config(config, total_sgd_steps)
    e = config.exploration
    self.epsilon = optax.linear_schedule(e.eps_start, e.eps_finish,
                                         max(1, int(e.eps_decay * self.num_updates)))

  # --- network and policy -------------------------------------------------------------------

  def q_values(self, params, obs, return_features: bool = False):
    """Q(obs, ·) [..., A] for observations [..., *obs_shape] (and features)."""
    return networks.apply(self._q_def, params, obs, return_features=return_features)

  def act(self, params, obs, key, epsilon):
    """ε-greedy actions [...] for observations [..., *obs_shape]; each env draws its own coin."""
    q = self.q_values(params, obs)
    greedy = jnp.argmax(q, axis=-1)
    k_coin, k_rand = jax.random.split(key)
    explore = jax.random.uniform(k_coin, greedy.shape) < epsilon
    random = jax.random.randint(k_rand, greedy.shape, 0, self.spec.action_size)
    return jnp.where(explore, random, greedy)

  # --- init ---------------------------------------------------------------------------------

  def init(self, key: jax.Array) -> TrainState:
    k_net, k_env, key = jax.random.split(key, 3)
    _, params = networks.split(QNetwork(self.spec, self.config.network, rngs=nnx.Rngs(k_net)))
    env_state = jax.vmap(self.env.reset)(jax.random.split(k_env, self.config.num_envs))
    return TrainState(params=params, opt_state=self.optimizer.init(params), env_state=env_state,
                      key=key, update=jnp.zeros((), jnp.int32))

  # --- one update ---------------------------------------------------------------------------

  def _rollout(self, state: TrainState):
    """``unroll_length`` ε-greedy steps of all envs. Returns (state, Transition [T, N])."""
    epsilon = self.epsilon(state.update)

    def _env_step(carry, _):
      env_state, key = carry
      key, k_act = jax.random.split(key)
      obs = env_state.obs
      action = self.act(state.params, obs, k_act, epsilon)
      env_state = jax.vmap(self.env.step)(env_state, action)
      t = Transition(obs=obs, action=action, reward=env_state.reward,
                     terminated=env_state.terminated, done=env_state.done,
                     final_obs=env_state.final_obs, done_return=env_state.done_return)
      return (env_state, key), t

    (env_state, key), traj = jax.lax.scan(_env_step, (state.env_state, state.key), None,
                                          length=self.config.unroll_length)
    return state.replace(env_state=env_state, key=key), traj

  def _targets(self, params, traj: Transition) -> jax.Array:
    """Q(λ) targets [T, N] from the network that collected the unroll (no target network)."""
    c = self.config
    next_q = jnp.max(self.q_values(params, traj.final_obs), axis=-1)
    return losses.q_lambda_targets(traj.reward * c.reward_scaling, next_q, traj.terminated,
                                   traj.done, c.gamma, c.q_lambda)

  def _loss(self, params, batch, key):
    """``losses.q_learning_loss``: ½ mean (Q(s, a) − G)² [+ ½ λ_SIG · SIGReg(trunk output)].

    The paper's code weighs SIGReg against the full mean squared TD error, ``MSE + λ L_SIG``;
    ours is half of it (PureJaxRL's PQN), so SIGReg enters at ``½ λ``: the loss is
    ``½ (MSE + λ L_SIG)``, the reference's gradient at half its size, and a given λ means what
    it means in the paper (before 2026-12-07 it weighed twice as much).

    batch: dict of flat [M] arrays: obs [M, *obs_shape], action, target.
    """
    sig = self.config.aux.sigreg
    sigreg_on = sig.weight > 0
    q = self.q_values(params, batch["obs"], return_features=sigreg_on)
    if sigreg_on:
      q, features = q
    loss, metrics = losses.q_learning_loss(q, batch["action"], batch["target"])
    if sigreg_on:
      # The same forward pass feeds the TD loss and SIGReg (spec §1.4 "PQN").
      term, aux_metrics = auxiliary.sigreg_term({"q": features["representation"]}, key, sig)
      loss = loss + 0.5 * term
      metrics.update(aux_metrics)
    return loss, metrics

  def _update_minibatch(self, carry, batch):
    params, opt_state, key = carry
    key, k_loss = jax.random.split(key)
    (loss, metrics), grads = jax.value_and_grad(self._loss, has_aux=True)(params, batch, k_loss)
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics["loss/total"] = loss
    metrics["grad_norm"] = optax.tree.norm(grads)
    if self.config.health.enabled:
      # Per-layer weight-gradient norms (spec §2.8): cheap reductions, averaged over the chunk.
      metrics.update(rep.kernel_grad_norms(grads, prefix="health/grad_norm/"))
    return (params, opt_state, key), metrics

  def _update_epoch(self, carry, batch):
    """One pass over ``batch`` (flat [T*N] arrays) in ``num_minibatches`` shuffled parts."""
    params, opt_state, key = carry
    key, k_perm = jax.random.split(key)
    size = batch["target"].shape[0]
    perm = jax.random.permutation(k_perm, size)
    m = self.config.num_minibatches
    minibatches = jax.tree.map(lambda x: x[perm].reshape((m, size // m) + x.shape[1:]), batch)
    return jax.lax.scan(self._update_minibatch, (params, opt_state, key), minibatches)

  def update(self, state: TrainState):
    """Collect one unroll, compute Q(λ) targets, then ``num_epochs`` epochs of minibatch SGD.

    Returns (state, metrics) with scalar metrics for this update.
    """
    c = self.config
    epsilon = self.epsilon(state.update)
    state, traj = self._rollout(state)
    targets = self._targets(state.params, traj)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # [T, N, ...] -> [T*N, ...]
    batch = {"obs": flat(traj.obs), "action": flat(traj.action), "target": flat(targets)}
    key, k_epochs = jax.random.split(state.key)
    (params, opt_state, _), metrics = jax.lax.scan(
        lambda carry, _: self._update_epoch(carry, batch),
        (state.params, state.opt_state, k_epochs), None, length=c.num_epochs)
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["target_mean"] = targets.mean()
    metrics["train/episodes"] = traj.done.sum()
    metrics["train/return_sum"] = jnp.where(traj.done, traj.done_return, 0.0).sum()
    metrics["lr"] = self.lr_schedule(state.update * c.num_epochs * c.num_minibatches)
    metrics["epsilon"] = epsilon
    state = state.replace(params=params, opt_state=opt_state, key=key, update=state.update + 1)
    return state, metrics

  def health(self, state: TrainState) -> dict[str, jax.Array]:
    """Representation diagnostics on the envs' current observations [num_envs] (spec §5).

    Dormant ratio (units with mean |post-activation| ≤ τ × the layer mean; τ = 0: exactly dead
    ReLUs), pooled over the encoder's convolutions and the trunk's activated layers; effective
    rank, srank, feature rank and norm of the representation (trunk output).
    """
    _, features = self.q_values(state.params, state.env_state.obs, return_features=True)
    z = features["representation"]
    out = {"health/effective_rank": rep.effective_rank(z),
           "health/srank": rep.srank(z).astype(jnp.float32),
           "health/feature_rank": rep.feature_rank(z).astype(jnp.float32),
           "health/feature_norm": rep.feature_norm(z)}
    activated = [k for k in features if k.startswith("encoder/") or (
        k.startswith("trunk/hidden.") or k.endswith(".fc0"))]
    if activated:
      tau = self.config.health.dormant_tau
      flags = [rep.dormant_scores(features[k]) <= tau for k in activated]
      out["health/dormant_ratio"] = (sum(f.sum() for f in flags)
                                     / sum(f.size for f in flags)).astype(jnp.float32)
    return out

  def chunk(self, state: TrainState):
    """``config.log_every`` updates in one scan; metrics averaged over them (episode return
    averaged over the episodes that ended in the chunk, NaN when none did)."""
    state, metrics = jax.lax.scan(lambda s, _: self.update(s), state, None,
                                  length=self.config.log_every)
    episodes = metrics.pop("train/episodes").sum()
    return_sum = metrics.pop("train/return_sum").sum()
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["train/episode_return"] = jnp.where(episodes > 0, return_sum / episodes, jnp.nan)
    metrics["train/episodes"] = episodes
    if self.config.health.enabled:
      metrics.update(self.health(state))
    return state, metrics

  # --- evaluation ---------------------------------------------------------------------------

  def greedy(self, state: TrainState, obs: jax.Array) -> jax.Array:
    """Greedy actions ``argmax_a Q(obs, a)`` [N] for observations [N, *obs_shape]."""
    return jnp.argmax(self.q_values(state.params, obs), axis=-1)

  def evaluate(self, state: TrainState, key: jax.Array):
    """Mean return of the first episode of ``eval.num_envs`` fresh envs, ε = ``eval.epsilon``."""
    eps = self.config.eval.epsilon
    return first_episode_returns(self.env, lambda obs, k: self.act(state.params, obs, k, eps),
                                 key, self.config.eval.num_envs)

  def shard(self, state: TrainState, mesh) -> TrainState:
    """Places a seed-batched state: env batch (axis 1) split over devices, the rest replicated."""
    return mesh_lib.place_state(state, mesh, {"env_state": 1})

  # --- the PureJaxRL shape ------------------------------------------------------------------

  def train(self, key: jax.Array):
    """The whole run as one pure function (PureJaxRL's shape): ``(state, metrics [chunks])``."""
    return train_whole(self, key)

  __call__ = train


TRAINER, make_train = env_trainer.declare("pqn", PQN, default_config, check_config, evaluators=("jax_env",))
