"""A single-seed JAX algorithm in the chunked shape, run by the loop over many seeds at once.

PPO, PQN, SAC, TD3 and the non-stationary supervised benchmark are written for ONE seed, as
pure functions (PureJaxRL's shape):

* ``algo.init(key) -> state`` and ``algo.chunk(state) -> (state, metrics)``, where a chunk is
  ``config.log_every`` updates compiled as one ``lax.scan``;
* ``algo.evaluate(state, key) -> metrics``;
* ``algo.shard(state, mesh) -> state`` placing a seed-batched state on the mesh;
* ``algo.num_updates`` and ``algo.steps_per_update`` (env steps, or samples, per update).

:class:`ChunkedRun` turns such an algorithm into a :class:`jaxlab.core.loop.Run`: it vmaps
these functions over ``config.num_seeds`` (seed ``i`` is ``prng.seed_keys(seed, n)[i]``),
compiles one chunk with the state donated, and evaluates with keys that depend on the seed
and the step only, so a resumed run evaluates exactly as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from jaxlab.core import batching
from jaxlab.core import prng


class ChunkedAlgorithm(Protocol):
  config: ml_collections.ConfigDict
  num_updates: int
  steps_per_update: int

  def init(self, key: jax.Array) -> Any: ...

  def chunk(self, state: Any) -> tuple[Any, dict]: ...

  def evaluate(self, state: Any, key: jax.Array) -> dict: ...

  def shard(self, state: Any, mesh: Mesh) -> Any: ...


def init_seeds(algo: ChunkedAlgorithm, keys: jax.Array) -> Any:
  """``algo.init`` for each key, stacked on a leading seed axis.

  One seed at a time (``jaxlab.core.batching.sequential``): batched QR decompositions
  (orthogonal initialisers under vmap) were seen to deadlock XLA:CPU here, and init runs once,
  so its sequential cost is nil.
  """
  return jax.jit(jax.vmap(batching.sequential(algo.init)))(keys)


def train_whole(algo: ChunkedAlgorithm, key: jax.Array) -> tuple[Any, Any]:
  """The whole run of one seed as one pure function: ``init``, then every chunk in one
  ``lax.scan``; metrics are stacked over chunks. ``jax.vmap`` it over keys for many seeds."""
  state = algo.init(key)
  n_chunks = algo.num_updates // algo.config.log_every
  return jax.lax.scan(lambda s, _: algo.chunk(s), state, None, length=n_chunks)


def over_seeds(fn: Callable[..., Any], num_seeds: int) -> Callable[..., Any]:
  """``jax.vmap(fn)`` over the leading seed axis; with one seed, ``fn`` on the squeezed axis.

  Same inputs and outputs either way (the seed axis stays in the state and the metrics), but
  a size-1 vmap is not free on XLA:CPU: batched matmuls with a batch of one took ~1.8x the
  time of plain ones in the SAC update (benchmarks/sac_vs_brax.py), so single-seed runs skip it.
  """
  if num_seeds > 1:
    return jax.vmap(fn)

  def single(*args):
    out = fn(*jax.tree.map(lambda x: x[0], args))
    return jax.tree.map(lambda x: jnp.asarray(x)[None], out)

  return single


def eval_keys(seed: int, num_seeds: int, step: int) -> jax.Array:
  """``[num_seeds]`` evaluation keys after ``step`` updates: a function of (seed, step) only."""
  root = jax.random.fold_in(prng.seed_key(seed), 0x5EED)
  return jax.random.split(jax.random.fold_in(root, step), num_seeds)


class ChunkedRun:
  """A :class:`ChunkedAlgorithm` vmapped over ``config.num_seeds``, as the loop's ``Run``.

  Metrics come back per seed (``[num_seeds]`` arrays); ``metrics.jsonl`` stores them as lists.
  """

  def __init__(self, algo: ChunkedAlgorithm, config: ml_collections.ConfigDict, mesh: Mesh, *,
               progress_keys: Mapping[str, str] | None = None,
               plot_keys: Sequence[str] = ("eval/episode_return", "train/episode_return"),
               target_key: str = "eval/episode_return"):
    self.algo, self.config, self.mesh = algo, config, mesh
    self.total_steps = algo.num_updates
    self.units_per_step = algo.steps_per_update
    self.unit_name = getattr(algo, "unit_name", None)  # the loop's default when None
    self.progress_keys = dict(progress_keys if progress_keys is not None else {
        "train/episode_return": "train/episode_return",
        "eval/episode_return": "eval/episode_return"})
    self.plot_keys = tuple(plot_keys)
    self.target = (target_key, config.get("target_return"))
    n = config.num_seeds
    self._chunk = jax.jit(over_seeds(algo.chunk, n), donate_argnums=0)
    self._evaluate = jax.jit(over_seeds(algo.evaluate, n))

  def init(self) -> Any:
    keys = prng.seed_keys(self.config.seed, self.config.num_seeds)
    return self.algo.shard(init_seeds(self.algo, keys), self.mesh)

  def train(self, state: Any, step: int, num_steps: int) -> tuple[Any, dict]:
    if num_steps != self.config.log_every:
      raise ValueError(f"a chunk is config.log_every={self.config.log_every} updates, asked for "
                       f"{num_steps} (num_updates={self.total_steps} is a multiple of it)")
    return self._chunk(state)

  def evaluate(self, state: Any, step: int) -> dict:
    c = self.config
    return self._evaluate(state, eval_keys(c.seed, c.num_seeds, step))

  def finish(self, state: Any, metrics: dict) -> dict:
    del state, metrics
    return {}

  def policy(self, state: Any, index: int = 0) -> "Policy":
    """Seed ``index``'s trained policy (needs ``algo.greedy(state, obs) -> actions``)."""
    if not 0 <= index < self.config.num_seeds:
      raise IndexError(f"seed index {index} is not in [0, {self.config.num_seeds})")
    return Policy(self.algo, jax.tree.map(lambda x: x[index], state))


class Policy:
  """One seed's trained policy: greedy actions, and the algorithm's own evaluation."""

  def __init__(self, algo: Any, state: Any):
    self.algo, self.state = algo, state
    self._act = jax.jit(algo.greedy)
    self._evaluate = jax.jit(algo.evaluate)

  def act(self, obs: Any) -> jax.Array:
    """Deterministic actions for raw observations ``[..., *obs_shape]``."""
    return self._act(self.state, jnp.asarray(obs))

  def evaluate(self, key: jax.Array) -> dict[str, jax.Array]:
    """``algo.evaluate`` on this seed: mean first-episode return of ``eval.num_envs`` envs."""
    return self._evaluate(self.state, key)
