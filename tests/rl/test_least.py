"""LEAST (spec rl.md §3): thresholds are per-step medians over the window, ω weights them,
stops end episodes as truncations (bootstrapped, not terminal), and a TD3 run stops episodes
and stores them so."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import envs
from jaxlab.core import config as config_lib
from jaxlab.envs.from_config import make_from_config
from jaxlab.rl import least, td3

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(**overrides):
  c = least.default_config()
  c.enabled = True
  for k, v in overrides.items():
    c[k] = v
  return c


def test_stop_rule_threshold_and_omega():
  rule = lambda q, g, eps, gm, n=10, **kw: bool(least.stop_rule(  # noqa: E731
      jnp.float32(q), jnp.float32(g), jnp.float32(eps), jnp.float32(gm), jnp.int32(n),
      min_episodes=5, **kw))
  # ω = 1 (G equals its median): stop exactly below the median ε, for both signs of ε.
  assert rule(9.9, 1.0, 10.0, 1.0) and not rule(10.1, 1.0, 10.0, 1.0)
  assert rule(-10.1, 1.0, -10.0, 1.0) and not rule(-9.9, 1.0, -10.0, 1.0)
  # A large TD loss (novel state, ω = 0.25 < 1) relaxes the threshold: no stop at 9.
  assert not rule(9.0, 4.0, 10.0, 1.0)
  assert rule(2.4, 4.0, 10.0, 1.0) and not rule(2.6, 4.0, 10.0, 1.0)  # threshold 2.5
  # A small TD loss (ω = 4 > 1) tightens it: Q = 30 < 40 stops.
  assert rule(30.0, 0.25, 10.0, 1.0)
  # Negative ε: ε / ω, so ω > 1 still tightens (moves the threshold up towards 0).
  assert rule(-3.0, 0.25, -10.0, 1.0) and not rule(-2.0, 0.25, -10.0, 1.0)  # threshold -2.5
  assert not rule(-30.0, 4.0, -10.0, 1.0) and rule(-41.0, 4.0, -10.0, 1.0)  # threshold -40
  # Without ω only the median counts; omega_scale multiplies ω.
  assert not rule(30.0, 0.25, 10.0, 1.0, use_omega=False)
  assert rule(19.0, 1.0, 10.0, 1.0, omega_scale=2.0)
  # Too few stored episodes at this step: never stop.
  assert not rule(-100.0, 1.0, 10.0, 1.0, n=4)


def test_medians_over_the_window():
  c = _cfg(window=3, max_window=5, min_episodes=1)
  state = least.init(c, num_envs=1, max_len=4)
  rng = np.random.default_rng(0)
  episodes = []
  for e in range(7):
    length = 4 if e != 5 else 2  # one short episode: its missing steps stay NaN
    q = np.full(4, np.nan, np.float32)
    g = np.full(4, np.nan, np.float32)
    q[:length] = rng.normal(size=length)
    g[:length] = rng.uniform(size=length)
    episodes.append((q, g))
    state = state.replace(q_row=jnp.asarray(q)[None], g_row=jnp.asarray(g)[None])
    slots = least._ring_slots(jnp.array([True]), state.next_row, 5)
    state = state.replace(q_hist=state.q_hist.at[slots].set(state.q_row, mode="drop"),
                          g_hist=state.g_hist.at[slots].set(state.g_row, mode="drop"),
                          next_row=(state.next_row + 1) % 5, pushed=state.pushed + 1)
    state = least.refresh(c, state)
    window = episodes[-3:]
    qs = np.stack([w[0] for w in window])
    gs = np.stack([w[1] for w in window])
    np.testing.assert_allclose(state.eps, np.nanmedian(qs, 0), rtol=1e-6)
    np.testing.assert_allclose(state.g_med, np.nanmedian(gs, 0), rtol=1e-6)
    np.testing.assert_array_equal(state.count, (~np.isnan(qs)).sum(0))


def test_observe_stops_as_truncation_and_records():
  env = envs.make("gymnax/Pendulum-v1", episode_length=50)
  n, max_len = 4, 50
  c = _cfg(window=8, max_window=8, min_episodes=1)
  state = least.init(c, n, max_len)
  # Past episodes had Q = 0 at every step: any negative Q̂ with G at its median stops.
  state = state.replace(eps=jnp.zeros(max_len), g_med=jnp.ones(max_len),
                        count=jnp.full(max_len, 8, jnp.int32))
  prev = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), n))
  prev = jax.vmap(env.step)(prev, jnp.zeros((n, 1)))  # one step in: episode_length = 1
  new = jax.vmap(env.step)(prev, jnp.zeros((n, 1)))
  q_hat = jnp.array([-1.0, 1.0, -1.0, 1.0])
  g_hat = jnp.ones(n)
  observe = jax.jit(lambda *a: least.observe(c, a[0], env, *a[1:]))

  _, not_active, m = observe(state, prev, new, q_hat, g_hat, jnp.array(False))
  assert float(m["least/stops"]) == 0 and not np.any(not_active.done)

  out_state, out, m = observe(state, prev, new, q_hat, g_hat, jnp.array(True))
  stopped = np.array([True, False, True, False])
  np.testing.assert_array_equal(out.truncated, stopped)
  assert not np.any(out.terminated)  # a stop is never terminal: the critic bootstraps
  np.testing.assert_allclose(out.final_obs, new.obs)  # the reached state, for the bootstrap
  assert not np.allclose(out.obs[stopped], new.obs[stopped])  # a new episode started...
  np.testing.assert_allclose(out.obs[~stopped], new.obs[~stopped])  # ...only where stopped
  np.testing.assert_array_equal(out.episode_length, [0, 2, 0, 2])
  np.testing.assert_allclose(out.done_return[stopped], new.episode_return[stopped])
  np.testing.assert_array_equal(out.done_length, [2, 0, 2, 0])
  assert float(m["least/stops"]) == 2 and float(m["least/stop_step_sum"]) == 4
  np.testing.assert_array_equal(m["least/stop_quarter"], [2, 0, 0, 0])
  # The stopped episodes' rows (Q̂ at step index 1) went into the history; the others wait.
  assert int(out_state.pushed) == 2
  np.testing.assert_allclose(out_state.q_hist[:2, 1], [-1.0, -1.0])
  assert np.all(np.isnan(out_state.q_row[stopped])) and np.all(out_state.q_row[~stopped, 1] == 1)
  # And the medians were refreshed from the new history (2 episodes, Q = -1 at step 1).
  assert float(out_state.eps[1]) == -1.0 and int(out_state.count[1]) == 2


def test_adaptive_noise_rises_with_early_stops():
  c = _cfg(adaptive_noise=True, noise_max=0.3, noise_episodes=4, window=4, max_window=4)
  state = least.init(c, 1, 10, noise_std=0.1)
  state = state.replace(early=jnp.array([1.0, 1.0, 1.0, 1.0]))
  assert float(least.refresh(c, state).noise_std) > 0.29
  state = state.replace(early=jnp.array([0.0, 0.0, 0.0, jnp.nan]))
  assert abs(float(least.refresh(c, state).noise_std) - 0.1) < 0.01


def test_adaptive_window_grows_when_entropy_rises():
  c = _cfg(adaptive_window=True, window=4, max_window=8, window_step=2, entropy_every=1)
  state = least.init(c, 1, 6)
  state = state.replace(q_hist=state.q_hist.at[:4].set(1.0), pushed=jnp.int32(4),
                        next_row=jnp.int32(4), entropy_ref=jnp.float32(0.1))
  state = state.replace(q_hist=state.q_hist.at[:4, :3].set(0.0))  # two-valued: H = log 2
  grown = least.refresh(c, state)
  assert int(grown.window) == 6 and float(grown.entropy_ref) > 0.1
  shrunk = least.refresh(c, grown.replace(entropy_ref=jnp.float32(5.0), pushed=jnp.int32(5)))
  assert int(shrunk.window) == 4  # never below the initial window


def test_td3_run_stops_episodes_as_truncations():
  c = config_lib.load_file(os.path.join(REPO, "configs", "td3", "pendulum.py"))
  c.total_env_steps = 4000
  c.learning_starts = 1000
  c.log_every = 100
  c.eval.every = c.checkpoint.every = 0
  c.least.enabled = True
  c.least.window = 8
  c.least.max_window = 16
  c.least.min_episodes = 4
  c.least.start_fraction = 0.5
  c.least.adaptive_noise = True
  c.least.low_reward = -2.0
  trainer = td3.make_train(c, make_from_config(c.env))
  state, m = jax.jit(trainer.train)(jax.random.PRNGKey(0))
  active = np.asarray(m["least/active"]) > 0
  assert not np.any(active[:4]) and np.all(active[5:])  # t_start = 2000 env steps
  assert float(m["least/stops"][~active].sum()) == 0
  assert float(m["least/stops"].sum()) > 0
  rates = np.asarray(m["least/stop_rate"])[active]
  assert np.all((rates[np.isfinite(rates)] >= 0) & (rates[np.isfinite(rates)] <= 1))
  data = state.replay.data
  # Pendulum never terminates and its time limit is 200: every truncation at another step is a
  # LEAST stop, stored as truncated (bootstrapped), not terminated.
  assert not np.any(data.terminated)
  rows = int(state.replay.rows_filled)
  assert int(data.truncated[:rows].sum()) > (rows // 200) * c.num_envs
  # replay/low_reward_share_recent: the share among each chunk's transitions (rows in insertion
  # order, the buffer does not wrap); replay/low_reward_share: the whole buffer's.
  assert rows * c.num_envs == c.total_env_steps
  low = np.asarray(data.reward[:rows] < -2.0)
  per_chunk = low.reshape(len(active), -1).mean(axis=1)
  np.testing.assert_allclose(np.asarray(m["replay/low_reward_share_recent"]), per_chunk,
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(m["replay/low_reward_share"])[-1], low.mean(), atol=1e-6)


def test_low_reward_share_counts_written_rows_only():
  from jaxlab.rl import offpolicy, replay  # pylint: disable=import-outside-toplevel
  example = replay.Transition(
      obs=jnp.zeros((1,)), action=jnp.zeros((1,)), reward=jnp.zeros(()),
      terminated=jnp.zeros((), bool), truncated=jnp.zeros((), bool), next_obs=jnp.zeros((1,)))
  buf = replay.init(example, capacity=8, width=2)  # 4 rows of 2
  row = lambda r: jax.tree.map(  # noqa: E731
      lambda x: jnp.zeros((2,) + x.shape, x.dtype), example).replace(reward=jnp.asarray(r))
  buf = replay.add(buf, row([-5.0, 0.0]))
  buf = replay.add(buf, row([-3.0, -1.0]))
  # Unwritten rows hold reward 0 and must not count: 2 of the 4 stored rewards are < -2.
  assert float(offpolicy.low_reward_share(buf, -2.0)) == pytest.approx(0.5)
  assert float(offpolicy.low_reward_share(buf, -4.0)) == pytest.approx(0.25)

