"""Playground with impl="warp": MJX-warp shares contact buffers across a batch.

Those leaves have no batch axis (``jax.vmap(reset)`` returns them once), so the per-env
selects of AutoReset and ActionRepeat must leave them alone. Checked against impl="jax",
whose physics is the same MuJoCo model.
"""

import jax
import numpy as np

import jaxlab.envs as envs
from jaxlab.envs import _common

from ._checks import assert_valid_state, rollout


def test_warp_matches_jax_through_resets_and_action_repeat():
  trajectories = {}
  for impl in ('warp', 'jax'):
    # Episodes of 3 agent steps (6 physics steps) force auto-resets within the rollout.
    env = envs.make('playground/CartpoleBalance', impl=impl, episode_length=3, action_repeat=2)
    _, last, traj = rollout(env, 2, 7)(jax.random.PRNGKey(0))
    shared = _common.shared_leaves(env)
    if impl == 'warp':
      assert shared is not None and any(jax.tree.leaves(shared.backend))
    else:
      assert shared is None
    assert_valid_state(last, env.spec, (2,), shared=shared)
    np.testing.assert_array_equal(np.asarray(traj.truncated).any(axis=1),
                                  [False, False, True, False, False, True, False])
    trajectories[impl] = traj
  warp, jax_ = trajectories['warp'], trajectories['jax']
  np.testing.assert_allclose(warp.obs, jax_.obs, atol=1e-4)
  np.testing.assert_allclose(warp.final_obs, jax_.final_obs, atol=1e-4)
  np.testing.assert_allclose(warp.reward, jax_.reward, atol=1e-4)
