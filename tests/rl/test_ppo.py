"""PPO learns, vmaps over seeds, and matches itself when the env batch is sharded."""

import copy
import os
import subprocess
import sys
import textwrap

import chex
import jax
import ml_collections
import numpy as np
import pytest

from jaxlab.core import config as config_lib
from jaxlab.core import running_stats
from jaxlab.envs.from_config import make_from_config
from jaxlab.rl import ppo
from jaxlab.rl.gae import gae, lambda_td_advantages

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(**overrides):
  c = config_lib.load_file(os.path.join(REPO, "configs", "ppo", "cartpole_gymnax.py"))
  for key, value in overrides.items():
    c[key] = value
  return c


@pytest.mark.optimized  # a learning threshold (tests/conftest.py)
@pytest.mark.parametrize("refresh", ["update", "epoch"])  # the config's learner, PPO's default
def test_ppo_learns_gymnax_cartpole(refresh):
  """Like brax's train_test: a short run must clear a stated return (max is 500)."""
  c = _config(total_env_steps=100_000, advantage_refresh=refresh)
  trainer = ppo.make_train(c, make_from_config(c.env))
  state, metrics = jax.jit(trainer.train)(jax.random.PRNGKey(0))
  chex.assert_shape(metrics["train/episode_return"], (trainer.num_updates // c.log_every,))
  final = jax.jit(trainer.evaluate)(state, jax.random.PRNGKey(1))
  assert float(final["eval/episode_return"]) >= 400.0, final
  assert int(state.update) == trainer.num_updates


def test_vmap_over_seeds_equals_separate_runs():
  # Two updates only: discrete action sampling turns float rounding differences between the
  # batched and unbatched programs into different trajectories after a few more updates.
  c = _config(total_env_steps=2 * 32 * 64, log_every=1)
  trainer = ppo.make_train(c, make_from_config(c.env))
  keys = jax.random.split(jax.random.PRNGKey(3), 2)
  states, metrics = jax.jit(jax.vmap(trainer.train))(keys)
  chex.assert_shape(metrics["loss/total"], (2, trainer.num_updates // c.log_every))
  for i in range(2):
    single, _ = jax.jit(trainer.train)(keys[i])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=2e-4, atol=2e-5),
                 states.params, single.params)
  # Different seeds learn different parameters.
  leaf = jax.tree.leaves(states.params)[0]
  assert not np.allclose(leaf[0], leaf[1])


def test_truncated_steps_bootstrap_from_final_obs():
  """A time limit of 5 steps: every 5th step is truncated, none terminated by the limit."""
  c = _config(total_env_steps=320, num_envs=4, unroll_length=16, log_every=1)
  c.env.episode_length = 5
  c.eval.every = 0
  c.checkpoint.every = 0
  trainer = ppo.make_train(c, make_from_config(c.env))
  state = trainer.init(jax.random.PRNGKey(0))
  _, traj = jax.jit(trainer._rollout)(state)  # pylint: disable=protected-access
  done = np.asarray(traj.done)
  assert done[4::5].all() and not np.asarray(traj.terminated).any()
  # final_obs of a truncated step is the reached state, not the reset one.
  assert not np.allclose(np.asarray(traj.final_obs)[4], np.asarray(traj.obs)[5])
  # The advantages bootstrap from V(final_obs) there: the same GAE with V(obs[t + 1]) in its
  # place (the next episode's first state) gives other values on the truncated rows.
  adv, targets, values = jax.jit(trainer._advantages)(state, traj)  # pylint: disable=protected-access
  value = lambda o: np.asarray(trainer.value(state.params, state.obs_stats, o))
  v_final = value(traj.final_obs)
  want, _ = gae(traj.reward * c.reward_scaling, values, v_final, traj.terminated, traj.done,
                c.gamma, c.gae_lambda)
  np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(targets, np.asarray(want) + np.asarray(values), rtol=1e-5,
                             atol=1e-6)
  v_reset = np.concatenate([value(traj.obs)[1:], v_final[-1:]])
  wrong, _ = gae(traj.reward * c.reward_scaling, values, v_reset, traj.terminated, traj.done,
                 c.gamma, c.gae_lambda)
  assert not np.allclose(np.asarray(wrong)[4::5], np.asarray(adv)[4::5], atol=1e-4)
  # brax's estimator (config.advantage_estimator="lambda_td"): the same value targets, its
  # advantages from them and the same bootstrap.
  c.advantage_estimator = "lambda_td"
  ppo.check_config(c)
  trainer = ppo.make_train(c, make_from_config(c.env))
  adv_td, targets_td, _ = jax.jit(trainer._advantages)(state, traj)  # pylint: disable=protected-access
  np.testing.assert_allclose(targets_td, targets, rtol=1e-6, atol=1e-6)
  want_td = lambda_td_advantages(traj.reward * c.reward_scaling, values, v_final,
                                 traj.terminated, traj.done, targets, c.gamma)
  np.testing.assert_allclose(adv_td, want_td, rtol=1e-5, atol=1e-6)
  assert not np.allclose(adv_td, adv, atol=1e-3)
  c.advantage_estimator = "brax"
  with pytest.raises(config_lib.ConfigError, match="'config.advantage_estimator'='brax'"):
    ppo.check_config(c)


def _recompute_setup(**overrides):
  c = _config(total_env_steps=2 * 4 * 8 * 3, num_envs=4, unroll_length=8, unrolls_per_update=3,
              log_every=1, **overrides)
  c.eval.every = c.checkpoint.every = 0
  trainer = ppo.make_train(c, make_from_config(c.env))
  state = trainer.init(jax.random.PRNGKey(0))
  state, traj = jax.jit(trainer.collect)(state)
  return c, trainer, state, traj


@pytest.mark.parametrize("unit, refresh", [("sequence", "update"), ("sequence", "minibatch"),
                                           ("transition", "epoch"), ("sequence", "epoch")])
def test_learners_with_one_minibatch_are_the_once_per_update_learner(unit, refresh):
  """One epoch of one minibatch: the advantages come from the collecting critic in every
  learner and the loss is a mean over the same transitions, so all take the same step as
  the config's learner (shuffled transitions, advantages once per update)."""
  c, trainer, state, traj = _recompute_setup(num_minibatches=1, num_epochs=1)
  adv, targets, values = trainer.advantages(state, traj)
  once, _ = jax.jit(trainer.learn)(state, trainer.batch(traj, adv, targets, values))
  c.minibatch_unit, c.advantage_refresh = unit, refresh
  ppo.check_config(c)
  learner = ppo.make_train(c, make_from_config(c.env))
  batch = {"update": lambda: learner.batch(traj, adv, targets, values, unit),
           "minibatch": lambda: learner.sequences(traj), "epoch": lambda: traj}[refresh]()
  new, _ = jax.jit(learner.learn)(state, batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               new.params, once.params)


@pytest.mark.parametrize("recompute", [False, True])
def test_sequence_minibatches_hold_whole_sequences(recompute):
  """Two epochs of two minibatches of whole unroll sequences (traj[u, :, n]), written out
  here step by step: with ``advantage_refresh="minibatch"`` every SGD step's advantages are
  GAE over its sequences under that step's critic, otherwise the collecting critic's, sliced."""
  import optax  # pylint: disable=g-import-not-at-top
  c, trainer, state, traj = _recompute_setup(
      num_minibatches=2, num_epochs=2, minibatch_unit="sequence",
      advantage_refresh="minibatch" if recompute else "update")
  ppo.check_config(c)
  collected = trainer.advantages(state, traj)  # [U, T, N] each, from the collecting critic
  got, _ = jax.jit(trainer.learn)(
      state, trainer.sequences(traj) if recompute
      else trainer.batch(traj, *collected, "sequence"))
  u, t, n = traj.reward.shape
  # Sequence s is env s % n of unroll s // n, all T steps: [T, M] time-major.
  pick = lambda x, part: np.stack([np.asarray(x)[s // n, :, s % n] for s in part], axis=1)  # noqa: E731
  # The learner's keys, as learn / _update_epoch / _update_minibatch split them.
  _, key = jax.random.split(state.key)
  params, opt_state = state.params, state.opt_state
  for _ in range(2):
    key, k_perm = jax.random.split(key)
    perm = np.asarray(jax.random.permutation(k_perm, u * n))
    for part in perm.reshape(2, -1):
      seqs = jax.tree.map(lambda x, part=part: pick(x, part), traj)
      if recompute:
        adv, targets, values = trainer._advantages_with(params, state.obs_stats, seqs)  # pylint: disable=protected-access
      else:
        adv, targets, values = (pick(x, part) for x in collected)
      flat = lambda x: np.asarray(x).reshape((-1,) + np.shape(x)[2:])  # noqa: E731
      batch = {"obs": flat(seqs.obs), "raw_action": flat(seqs.raw_action),
               "log_prob": flat(seqs.log_prob), "advantage": flat(adv),
               "target": flat(targets), "value": flat(values)}
      key, k_loss = jax.random.split(key)
      grads = jax.grad(lambda p, batch=batch, k=k_loss: trainer._loss(p, state.obs_stats,  # pylint: disable=protected-access
                                                                       batch, k)[0])(params)
      updates, opt_state = trainer.optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
               got.params, params)
  # ``update`` (collect, then this learner) takes the same step.
  updated, _ = jax.jit(trainer.update)(trainer.init(jax.random.PRNGKey(0)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               updated.params, got.params)
  # And it is not the config's learner (shuffled transitions).
  c.minibatch_unit, c.advantage_refresh = "transition", "update"
  default, _ = jax.jit(ppo.make_train(c, make_from_config(c.env)).learn)(
      state, trainer.batch(traj, *collected))
  assert not np.allclose(jax.tree.leaves(default.params)[0], jax.tree.leaves(got.params)[0])
  c.minibatch_unit = "sequence"
  c.num_minibatches = 8  # 12 sequences
  with pytest.raises(config_lib.ConfigError, match="must divide the num_envs\\*unrolls_per_update=12"):
    ppo.check_config(c)


def test_epoch_refresh_recomputes_from_each_epochs_critic():
  """``advantage_refresh="epoch"``: at the start of every epoch, GAE over the whole batch under
  that epoch's critic, then shuffled transitions, written out here epoch by epoch with the
  once-per-update learner's own pieces (its advantages phase and one-epoch step)."""
  c, trainer, state, traj = _recompute_setup(num_minibatches=2, num_epochs=3,
                                             advantage_refresh="epoch")
  ppo.check_config(c)
  got, _ = jax.jit(trainer.learn)(state, traj)
  _, key = jax.random.split(state.key)  # as learn splits it
  params, opt_state = state.params, state.opt_state
  d = copy.deepcopy(c)
  d.advantage_refresh = "update"  # each epoch as the once-per-update learner runs it
  default_epoch = jax.jit(ppo.make_train(d, make_from_config(d.env))._update_epoch)  # pylint: disable=protected-access
  for _ in range(3):
    batch = trainer.batch(traj, *trainer.advantages(state.replace(params=params), traj))
    (params, opt_state, _, key), _ = default_epoch((params, opt_state, state.obs_stats, key),
                                                   batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
               got.params, params)
  # And from the second epoch on it is not the once-per-update learner.
  default, _ = jax.jit(ppo.make_train(d, make_from_config(d.env)).learn)(
      state, trainer.batch(traj, *trainer.advantages(state, traj)))
  assert not np.allclose(jax.tree.leaves(default.params)[0], jax.tree.leaves(got.params)[0])
  # ``update`` takes the same step as collect + this learner.
  updated, _ = jax.jit(trainer.update)(trainer.init(jax.random.PRNGKey(0)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               updated.params, got.params)


def test_minibatch_refresh_needs_sequence_minibatches():
  c = _config(advantage_refresh="minibatch")
  with pytest.raises(config_lib.ConfigError,
                     match="'config.advantage_refresh'='minibatch' .* 'config.minibatch_unit'='sequence'"):
    ppo.check_config(c)
  for key, bad in (("minibatch_unit", "episode"), ("advantage_refresh", "step")):
    with pytest.raises(config_lib.ConfigError, match=f"'config.{key}'='{bad}'"):
      ppo.check_config(_config(**{key: bad}))


def test_trainer_keeps_its_own_copy_of_the_config():
  """A sweep that edits one config between runs must not reach a trainer already built: the
  algorithm reads its config again whenever it traces (e.g. ``advantage_refresh`` in update)."""
  c = _config()
  c.eval.num_envs = ml_collections.FieldReference(4)
  trainer = ppo.make_train(c, make_from_config(c.env))
  c.advantage_refresh, c.num_epochs, c.eval.num_envs = "epoch", 7, 9
  assert trainer.config is not c
  assert (trainer.config.advantage_refresh, trainer.config.num_epochs) == ("update", 4)
  assert trainer.config.eval.num_envs == 4


def test_obs_stats_before_learning_is_brax_order():
  """``obs_stats_timing="before"``: the update's unrolls enter the statistics before its
  advantages and SGD steps (brax.training), written out here phase by phase; the statistics
  at the end are the same as by default, the parameters are not."""
  c = _config(total_env_steps=2 * 4 * 8 * 3, num_envs=4, unroll_length=8, unrolls_per_update=3,
              num_minibatches=2, num_epochs=2, log_every=1, obs_stats_timing="before",
              normalize_observations=True)
  c.eval.every = c.checkpoint.every = 0
  ppo.check_config(c)
  trainer = ppo.make_train(c, make_from_config(c.env))
  state0 = trainer.init(jax.random.PRNGKey(0))
  got, _ = jax.jit(trainer.update)(state0)
  collected, traj = jax.jit(trainer.collect)(state0)
  stats = running_stats.update(collected.obs_stats, traj.obs)
  seen = collected.replace(obs_stats=stats)
  learned, _ = jax.jit(trainer.learn)(seen, trainer.batch(traj, *trainer.advantages(seen, traj)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               got.params, learned.params)
  c.obs_stats_timing = "after"
  default, _ = jax.jit(ppo.make_train(c, make_from_config(c.env)).update)(state0)
  jax.tree.map(np.testing.assert_array_equal, got.obs_stats, default.obs_stats)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got.obs_stats, stats)
  assert not np.allclose(jax.tree.leaves(default.params)[0], jax.tree.leaves(got.params)[0])
  c.obs_stats_timing = "during"
  with pytest.raises(config_lib.ConfigError, match="'config.obs_stats_timing'='during'"):
    ppo.check_config(c)


SHARDED = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, numpy as np
    sys.path.insert(0, {repo!r})
    from tests.rl.test_ppo import _config
    from jaxlab.envs.from_config import make_from_config
    from jaxlab.core import mesh as mesh_lib
    from jaxlab.rl import ppo
    assert jax.device_count() == 8
    c = _config(total_env_steps=2 * 5 * 32 * 64)
    trainer = ppo.make_train(c, make_from_config(c.env))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    out = {{}}
    for n in (1, 8):
      mesh = mesh_lib.make_mesh(devices=jax.devices()[:n])
      state = trainer.shard(jax.jit(jax.vmap(trainer.init))(keys), mesh)
      assert len(state.env_state.obs.sharding.device_set) == n
      chunk = jax.jit(jax.vmap(trainer.chunk))
      for _ in range(2):
        state, metrics = chunk(state)
      out[n] = (jax.tree.leaves(mesh_lib.gather(state.params)),
                np.asarray(metrics["loss/total"]))
    for a, b in zip(out[1][0], out[8][0]):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(out[1][1], out[8][1], rtol=1e-3, atol=1e-4)
    print("SHARDED_OK")
""")


def test_sharded_env_batch_matches_single_device():
  code = SHARDED.format(repo=REPO)
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
  assert "SHARDED_OK" in result.stdout, result.stderr[-3000:]
