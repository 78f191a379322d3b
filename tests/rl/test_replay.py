"""Replay ring buffer: wraparound, size, sampling only written entries, vmap, memory check,
and sharded add/sample equal to unsharded."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core.errors import ConfigError
from jaxlab.rl import replay

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _example():
  return replay.Transition(
      obs=jnp.zeros((3,)), action=jnp.zeros((2,)), reward=jnp.zeros(()),
      terminated=jnp.zeros((), bool), truncated=jnp.zeros((), bool), next_obs=jnp.zeros((3,)))


def _rows(step, width=2):
  """Row `step`: every leaf holds the step number (ids 1, 2, ...), columns distinguishable."""
  value = jnp.float32(step) + jnp.arange(width, dtype=jnp.float32) / 10
  return replay.Transition(
      obs=jnp.repeat(value[:, None], 3, 1), action=jnp.repeat(value[:, None], 2, 1),
      reward=value, terminated=jnp.full((width,), step % 2 == 0),
      truncated=jnp.full((width,), step % 3 == 0), next_obs=jnp.repeat(value[:, None], 3, 1))


def test_add_size_and_wraparound():
  buf = replay.init(_example(), capacity=9, width=2)  # rounded down to 4 rows x 2
  assert (buf.rows, buf.width) == (4, 2)
  add = jax.jit(replay.add)
  for step in range(1, 4):
    buf = add(buf, _rows(step))
    assert int(replay.size(buf)) == 2 * step
  np.testing.assert_allclose(buf.data.reward[:3, 0], [1, 2, 3])
  for step in range(4, 7):  # rows 4, 5, 6: 5 and 6 overwrite the two oldest
    buf = add(buf, _rows(step))
  assert int(replay.size(buf)) == 8
  assert int(buf.position) == 2
  np.testing.assert_allclose(buf.data.reward[:, 0], [5, 6, 3, 4])
  np.testing.assert_allclose(buf.data.reward[:, 1], [5.1, 6.1, 3.1, 4.1], rtol=1e-6)
  # terminated and truncated are stored separately.
  np.testing.assert_array_equal(buf.data.terminated[:, 0], [False, True, False, True])
  np.testing.assert_array_equal(buf.data.truncated[:, 0], [False, True, True, False])


def test_sampling_only_returns_written_items():
  buf = replay.init(_example(), capacity=100, width=2)
  for step in range(1, 4):
    buf = replay.add(buf, _rows(step))
  batch = jax.jit(replay.sample, static_argnums=2)(buf, jax.random.PRNGKey(0), 4096)
  chex.assert_shape(batch.obs, (4096, 3))
  written = {1.0, 1.1, 2.0, 2.1, 3.0, 3.1}
  seen = set(np.round(np.asarray(batch.reward, np.float64), 3).tolist())
  assert seen == written  # all six, and nothing unwritten (zeros)
  # Items stay whole: every field of a sampled item comes from the same transition.
  np.testing.assert_allclose(batch.obs[:, 0], batch.reward)
  np.testing.assert_allclose(batch.next_obs[:, 2], batch.reward)


def test_vmap_over_seeds():
  width = 2
  bufs = jax.vmap(lambda _: replay.init(_example(), 8, width))(jnp.arange(3))
  add = jax.jit(jax.vmap(replay.add))
  for step in range(1, 6):
    shifted = [jax.tree.map(lambda v, s=s: v + 100 * s, _rows(step)) for s in range(3)]
    per_seed = jax.tree.map(lambda *x: jnp.stack(x), *shifted)
    bufs = add(bufs, per_seed)
  np.testing.assert_array_equal(jax.vmap(replay.size)(bufs), [8, 8, 8])
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  batch = jax.jit(jax.vmap(replay.sample, in_axes=(0, 0, None)), static_argnums=2)(bufs, keys, 64)
  chex.assert_shape(batch.reward, (3, 64))
  for s in range(3):
    r = np.asarray(batch.reward[s]) - 100 * s
    assert np.all((r >= 2) & (r < 6))  # rows 2..5 survive in a 4-row ring


def test_memory_check_names_the_keys():
  big = replay.Transition(
      obs=jax.ShapeDtypeStruct((1000,), jnp.float32),
      action=jax.ShapeDtypeStruct((8,), jnp.float32),
      reward=jax.ShapeDtypeStruct((), jnp.float32), terminated=jax.ShapeDtypeStruct((), bool),
      truncated=jax.ShapeDtypeStruct((), bool), next_obs=jax.ShapeDtypeStruct((1000,), jnp.float32))
  assert replay.bytes_per_item(big) == 4 * 2000 + 32 + 4 + 2
  with pytest.raises(ConfigError) as err:
    replay.check_memory(big, 1_000_000, 16, copies=4, max_gb=4.0)
  msg = str(err.value)
  assert "'config.replay.capacity'=1000000" in msg and "config.replay.max_gb" in msg
  assert "32.15 GB" in msg and "\n" not in msg
  assert replay.check_memory(big, 1000, 16, copies=1, max_gb=4.0) == 992 * 8038


def test_memory_check_against_the_device():
  """Under max_gb but over what the device has: one line naming the key; the real query
  returns a positive number on this host."""
  ex = _example()  # 38 bytes per item
  with pytest.raises(ConfigError) as err:
    replay.check_memory(ex, 1_000_000, 4, copies=2, max_gb=1.0, available_bytes=50_000_000)
  msg = str(err.value)
  assert "'config.replay.capacity'=1000000" in msg and "0.08 GB" in msg and "\n" not in msg
  assert replay.check_memory(ex, 1_000_000, 4, copies=2, max_gb=1.0,
                             available_bytes=100_000_000) == 76_000_000
  assert replay.check_memory(ex, 1_000_000, 4, copies=2, max_gb=1.0, available_bytes=None)
  assert replay.available_memory_bytes() > 0


SHARDED = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {repo!r})
    from tests.rl.test_replay import _example, _rows
    from jaxlab.core import mesh as mesh_lib
    from jaxlab.rl import replay
    out = {{}}
    for n in (1, 4):
      mesh = mesh_lib.make_mesh(devices=jax.devices()[:n])
      buf = replay.init(_example(), 64, 4)
      buf = buf.replace(data=mesh_lib.shard_batch(buf.data, mesh, 1))
      add = jax.jit(replay.add)
      for step in range(1, 20):
        buf = add(buf, mesh_lib.shard_batch(_rows(step, 4), mesh, 0))
      assert len(buf.data.obs.sharding.device_set) == n
      batch = jax.jit(replay.sample, static_argnums=2)(buf, jax.random.PRNGKey(0), 32)
      out[n] = np.asarray(batch.reward)
    np.testing.assert_array_equal(out[1], out[4])
    print("SHARDED_OK")
""")


def test_sharded_buffer_matches_single_device():
  result = subprocess.run([sys.executable, "-c", SHARDED.format(repo=REPO)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
  assert "SHARDED_OK" in result.stdout, result.stderr[-3000:]
