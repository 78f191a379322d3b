"""GAE against a direct Python transcription of its definition."""

import jax.numpy as jnp
import numpy as np

from jaxlab.rl.gae import gae, lambda_td_advantages


def _reference(r, v, nv, term, done, gamma, lam):
  T, B = r.shape
  adv = np.zeros((T, B))
  for b in range(B):
    running = 0.0
    for t in reversed(range(T)):
      delta = r[t, b] + gamma * (1 - term[t, b]) * nv[t, b] - v[t, b]
      running = delta + gamma * lam * (1 - done[t, b]) * running
      adv[t, b] = running
  return adv


def test_gae_matches_reference_with_truncation_and_termination():
  rng = np.random.default_rng(0)
  T, B = 7, 5
  r, v, nv = (rng.normal(size=(T, B)) for _ in range(3))
  term = rng.random((T, B)) < 0.15
  trunc = (rng.random((T, B)) < 0.15) & ~term
  done = term | trunc
  adv, target = gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv), jnp.asarray(term),
                    jnp.asarray(done), 0.97, 0.9)
  ref = _reference(r, v, nv, term, done, 0.97, 0.9)
  np.testing.assert_allclose(adv, ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(target, ref + v, rtol=1e-5, atol=1e-5)


def test_truncation_bootstraps_but_termination_does_not():
  # One step, value of the reached state 10: truncated -> r + gamma*10, terminated -> r.
  r = jnp.ones((1, 2))
  v = jnp.zeros((1, 2))
  nv = jnp.full((1, 2), 10.0)
  term = jnp.asarray([[False, True]])
  done = jnp.asarray([[True, True]])
  adv, _ = gae(r, v, nv, term, done, 0.5, 0.95)
  np.testing.assert_allclose(adv, [[6.0, 1.0]])


def _lambda_return(r, v_boot, t, end, gamma, lam):
  """G^λ_t from its definition: the (1 - λ) λ^(n-1)-weighted average of n-step returns, the
  weight of every n past the episode's last step ``end`` falling on the longest return."""
  n_max = end - t + 1
  def n_step(n):
    disc = sum(gamma**i * r[t + i] for i in range(n))
    return disc + gamma**n * v_boot[t + n - 1]
  weights = [(1 - lam) * lam**(n - 1) for n in range(1, n_max)] + [lam**(n_max - 1)]
  return sum(w * n_step(n) for w, n in zip(weights, range(1, n_max + 1)))


def test_advantage_is_the_lambda_return_minus_the_value():
  """An independent definition: A_t = G^λ_t - V(s_t), with n-step returns that bootstrap from
  the value of the state reached (zero when it is terminal) and stop at the episode's end."""
  rng = np.random.default_rng(3)
  T = 9
  r = rng.normal(size=T)
  v = rng.normal(size=T + 1)  # V(s_0..s_T); s_{t+1} is what step t reached
  term = np.zeros(T, bool)
  trunc = np.zeros(T, bool)
  term[3], trunc[6] = True, True  # episodes: steps 0-3 (terminal), 4-6 (cut), 7-8 (rollout end)
  done = term | trunc
  nv = v[1:].copy()
  nv[3], nv[6] = 5.0, -2.0  # the reached states' values (not the next episode's first state)
  v_boot = np.where(term, 0.0, nv)
  gamma, lam = 0.9, 0.8
  adv, target = gae(*(jnp.asarray(a[:, None]) for a in (r, v[:T], nv, term, done)), gamma, lam)
  ends = [3, 3, 3, 3, 6, 6, 6, 8, 8]
  want = np.array([_lambda_return(r, v_boot, t, ends[t], gamma, lam) - v[t] for t in range(T)])
  np.testing.assert_allclose(np.asarray(adv)[:, 0], want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(target)[:, 0], want + v[:T], rtol=1e-5, atol=1e-5)


def test_value_targets_equal_brax_and_its_policy_advantage_is_not_gae():
  """Against brax.training's own ``compute_gae`` (the peer of benchmarks/ppo_vs_brax.py), on
  rollouts without truncation (brax drops truncated steps; ours bootstraps them, tested above):
  the value targets are the same λ-returns, but brax's policy advantage is the one-step TD error
  of those targets, ``r_t + γ (1 - d_t) v^λ_{t+1} - V(s_t)``, i.e. δ_t + Σ_k γ^k λ^(k-1) δ_{t+k},
  which equals GAE(λ) only at λ = 1."""
  from brax.training.agents.ppo import losses as brax_losses  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  T, B, gamma = 9, 6, 0.97
  r, v = rng.normal(size=(T, B)), rng.normal(size=(T, B))
  bootstrap = rng.normal(size=B)
  term = (rng.random((T, B)) < 0.15).astype(np.float64)
  nv = np.concatenate([v[1:], bootstrap[None]])
  for lam in (0.95, 1.0):
    adv, target = gae(*(jnp.asarray(x, jnp.float32) for x in (r, v, nv)), jnp.asarray(term > 0),
                      jnp.asarray(term > 0), gamma, lam)
    vs, brax_adv = brax_losses.compute_gae(
        truncation=jnp.zeros((T, B), jnp.float32), termination=jnp.asarray(term, jnp.float32),
        rewards=jnp.asarray(r, jnp.float32), values=jnp.asarray(v, jnp.float32),
        bootstrap_value=jnp.asarray(bootstrap, jnp.float32), lambda_=lam, discount=gamma)
    np.testing.assert_allclose(target, vs, rtol=1e-5, atol=1e-5)
    vs_next = np.concatenate([np.asarray(vs)[1:], bootstrap[None]])
    np.testing.assert_allclose(brax_adv, r + gamma * (1 - term) * vs_next - v, rtol=1e-5,
                               atol=1e-5)
    ours_lambda_td = lambda_td_advantages(
        *(jnp.asarray(x, jnp.float32) for x in (r, v, nv)), jnp.asarray(term > 0),
        jnp.asarray(term > 0), target, gamma)
    np.testing.assert_allclose(ours_lambda_td, brax_adv, rtol=1e-5, atol=1e-5)
    gap = np.abs(np.asarray(adv) - np.asarray(brax_adv)).max()
    if lam == 1.0:
      assert gap < 1e-5
    else:
      assert gap > 1e-2


def test_lambda_td_advantage_in_td_errors_and_at_episode_ends():
  """``lambda_td_advantages`` = δ_t + Σ_k γ^k λ^(k-1) δ_{t+k} within an episode (a sum written
  from its definition, independent of the recursion), and at a truncated step the bootstrap
  r + γ V(final_obs) - V, at a terminated one r - V: the sum stops at the episode's end."""
  rng = np.random.default_rng(5)
  T = 8
  r, v = rng.normal(size=T), rng.normal(size=T)
  term, trunc = np.zeros(T, bool), np.zeros(T, bool)
  term[2], trunc[5] = True, True  # episodes: steps 0-2 (terminal), 3-5 (cut), 6-7 (rollout end)
  done = term | trunc
  nv = np.concatenate([v[1:], [0.7]])
  nv[2], nv[5] = 4.0, -3.0  # the reached states' values
  gamma, lam = 0.9, 0.7
  delta = r + gamma * (1 - term) * nv - v
  ends = [2, 2, 2, 5, 5, 5, 7, 7]
  want = np.array([delta[t] + sum(gamma**k * lam**(k - 1) * delta[t + k]
                                  for k in range(1, ends[t] - t + 1)) for t in range(T)])
  col = lambda a: jnp.asarray(a[:, None])
  _, targets = gae(col(r), col(v), col(nv), col(term), col(done), gamma, lam)
  got = lambda_td_advantages(col(r), col(v), col(nv), col(term), col(done), targets, gamma)
  np.testing.assert_allclose(np.asarray(got)[:, 0], want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[2, 0], r[2] - v[2], rtol=1e-6)
  np.testing.assert_allclose(got[5, 0], r[5] + gamma * -3.0 - v[5], rtol=1e-6)
