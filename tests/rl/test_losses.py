"""jaxlab.rl.losses on hand-built batches: every number below is worked out by hand in the
comments (PPO's clip boundary and value clipping, Q(λ) tables, SAC's soft target and
temperature, TD3's target smoothing)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.rl import losses

f32 = lambda x: jnp.asarray(x, jnp.float32)


def _ppo(**overrides):
  m = len(overrides.get("log_prob", [0.0] * 3))
  kwargs = dict(log_prob=f32([0.0] * m), value=f32([0.0] * m), entropy=f32([0.0] * m),
                old_log_prob=f32([0.0] * m), old_value=f32([0.0] * m),
                advantage=f32([0.0] * m), target=f32([0.0] * m),
                cfg=losses.PPOLossConfig(clip_eps=0.2, vf_coef=0.0, ent_coef=0.0,
                                         normalize_advantages=False))
  kwargs.update(overrides)
  return kwargs


# ---------------------------------------------------------------------------------------------
# PPO.


def test_ppo_clip_boundary_decides_which_samples_get_gradient():
  # ε = 0.2. Ratios just inside / outside [0.8, 1.2], with advantages of both signs:
  #   ρ     Â   min(ρÂ, clip(ρ)Â)   branch     ∂surrogate/∂log π = ρÂ or 0
  #  1.19  +1        1.19          unclipped   1.19
  #  1.21  +1        1.20          clipped     0      (left the region the way Â favours)
  #  0.81  -1       -0.81          unclipped  -0.81
  #  0.79  -1       -0.80          clipped     0
  #  1.21  -1       -1.21          unclipped  -1.21   (moving the wrong way is never clipped)
  #  0.79  +1        0.79          unclipped   0.79
  ratio = np.array([1.19, 1.21, 0.81, 0.79, 1.21, 0.79])
  adv = f32([1, 1, -1, -1, -1, 1])
  loss_fn = lambda lp: losses.ppo_loss(**_ppo(log_prob=lp, advantage=adv))
  (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(f32(np.log(ratio)))
  chex.assert_shape(grad, (6,))
  chex.assert_type(loss, jnp.float32)
  # -mean(surrogate) = -(1.19 + 1.2 - 0.81 - 0.8 - 1.21 + 0.79) / 6 = -0.36 / 6
  np.testing.assert_allclose(loss, -0.06, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss/policy"], -0.06, rtol=1e-5)
  np.testing.assert_allclose(grad, -np.array([1.19, 0, -0.81, 0, -1.21, 0.79]) / 6, rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(metrics["loss/clip_fraction"], 4 / 6, rtol=1e-6)


def test_ppo_advantage_normalisation():
  # ρ = 1 everywhere; Â = [1, 2, 3, 4] has mean 2.5 and std sqrt(1.25), so the normalised
  # advantages are ±0.4472, ±1.3416 and the policy loss is -mean = 0.
  adv = f32([1, 2, 3, 4])
  norm = (np.array([1, 2, 3, 4]) - 2.5) / np.sqrt(1.25)
  for normalize, want in ((True, norm), (False, np.array([1, 2, 3, 4.0]))):
    cfg = losses.PPOLossConfig(vf_coef=0.0, ent_coef=0.0, normalize_advantages=normalize)
    loss_fn = lambda lp: losses.ppo_loss(**_ppo(log_prob=lp, advantage=adv, cfg=cfg))[0]
    loss, grad = jax.value_and_grad(loss_fn)(f32([0.0] * 4))
    np.testing.assert_allclose(loss, -want.mean(), atol=1e-6)
    np.testing.assert_allclose(grad, -want / 4, rtol=1e-5, atol=1e-6)


def test_ppo_value_clipping():
  # ε_V = 0.5, V_old = 0:
  #   V     V^targ  (V - V^targ)²  V_clip  (V_clip - V^targ)²  max
  #  1.0     2.0       1.00         0.5        2.25           2.25 (clipped: no gradient)
  #  0.3     1.0       0.49         0.3        0.49           0.49 (inside: same branch)
  # -2.0    -1.0       1.00        -0.5        0.25           1.00 (unclipped is pessimistic)
  value, target = f32([1.0, 0.3, -2.0]), f32([2.0, 1.0, -1.0])
  for eps, errs, dv in ((0.5, [2.25, 0.49, 1.0], [0.0, -0.7, -1.0]),
                        (0.0, [1.0, 0.49, 1.0], [-1.0, -0.7, -1.0])):
    cfg = losses.PPOLossConfig(value_clip_eps=eps, vf_coef=1.0, ent_coef=0.0,
                               normalize_advantages=False)
    loss_fn = lambda v: losses.ppo_loss(**_ppo(value=v, target=target, cfg=cfg))
    (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(value)
    np.testing.assert_allclose(metrics["loss/value"], 0.5 * np.mean(errs), rtol=1e-5)
    np.testing.assert_allclose(loss, 0.5 * np.mean(errs), rtol=1e-5)  # zero advantages
    # ∂/∂V of ½ mean (V - V^targ)² = (V - V^targ) / 3 on the active branch
    np.testing.assert_allclose(grad, np.array(dv) / 3, rtol=1e-5, atol=1e-7)


def test_ppo_total_combines_terms_and_rewards_entropy():
  # ρ = 1, Â = [1, -1, 3] (policy loss -1), V - V^targ = [1, 0, -1]
  # (value loss ½ · 2/3 = 1/3) and entropies [0.5, 1.5, 1.0] (mean 1):
  # L = -1 + 0.5 · 1/3 - 0.01 · 1.
  cfg = losses.PPOLossConfig(vf_coef=0.5, ent_coef=0.01, normalize_advantages=False)
  kwargs = _ppo(advantage=f32([1, -1, 3]), value=f32([1, 0, -1]), cfg=cfg)
  loss_fn = lambda h: losses.ppo_loss(**{**kwargs, "entropy": h})
  (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(f32([0.5, 1.5, 1.0]))
  np.testing.assert_allclose(loss, -1 + 0.5 / 3 - 0.01, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss/entropy"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss/approx_kl"], 0.0, atol=1e-7)
  np.testing.assert_allclose(grad, np.full(3, -0.01 / 3), rtol=1e-5)  # more entropy: lower L


# ---------------------------------------------------------------------------------------------
# PQN: Q(λ) targets and the TD loss.


# Two envs, four steps, γ = 0.5. Env 0 terminates at step 1; env 1 is truncated at step 1
# (done, not terminated). Rows after step 1 belong to new episodes. The last row bootstraps
# from its own next state.
Q_REWARDS = [[1, 1], [2, 1], [3, 1], [4, 1]]
Q_NEXT = [[10, 2], [20, 4], [30, 6], [40, 8]]
Q_DONE = [[0, 0], [1, 1], [0, 0], [0, 0]]
Q_TERM = [[0, 0], [1, 0], [0, 0], [0, 0]]
Q_TABLE = {
    # λ = 0: G_t = r_t + γ (1 - term_t) max Q(s'_t): env 0 [1+5, 2+0, 3+15, 4+20];
    # env 1 [1+1, 1+2, 1+3, 1+4].
    0.0: [[6, 2], [2, 3], [18, 4], [24, 5]],
    # λ = 1: G_3 = r + γ Q(s'_3) = 24 | 5; G_2 = r + γ G_3 = 15 | 3.5; G_1 ends the episode:
    # 2 (terminated) | 1 + 0.5 · 4 = 3 (truncated: bootstraps); G_0 = 1 + 0.5 G_1 = 2 | 2.5.
    1.0: [[2, 2.5], [2, 3], [15, 3.5], [24, 5]],
    # λ = ½: G_2 = 3 + 0.5 (0.5 · 30 + 0.5 · 24) = 16.5 | 1 + 0.5 (0.5 · 6 + 0.5 · 5) = 3.75;
    # G_0 = 1 + 0.5 (0.5 · 10 + 0.5 · 2) = 4 | 1 + 0.5 (0.5 · 2 + 0.5 · 3) = 2.25.
    0.5: [[4, 2.25], [2, 3], [16.5, 3.75], [24, 5]],
}


@pytest.mark.parametrize("lam", sorted(Q_TABLE))
def test_q_lambda_targets_hand_table(lam):
  got = losses.q_lambda_targets(f32(Q_REWARDS), f32(Q_NEXT), jnp.asarray(Q_TERM, bool),
                                jnp.asarray(Q_DONE, bool), 0.5, lam)
  chex.assert_shape(got, (4, 2))
  chex.assert_type(got, jnp.float32)
  np.testing.assert_allclose(got, Q_TABLE[lam], rtol=1e-6)


def _lambda_return_by_definition(r, nq, term, done, gamma, lam):
  """G_t = (1-λ) Σ_{n<H} λ^{n-1} G^(n) + λ^{H-1} G^(H), H = steps to the episode's or the
  unroll's end; G^(n) = n rewards + γ^n (1 - term) max Q at the n-th reached state."""
  t_len, n_env = r.shape
  out = np.zeros_like(r)
  for i in range(n_env):
    for t in range(t_len):
      horizon = t_len - t
      for j in range(t, t_len):
        if done[j, i]:
          horizon = j - t + 1
          break
      def n_step(n):
        ret = sum(gamma ** k * r[t + k, i] for k in range(n))
        last = t + n - 1
        return ret + gamma ** n * (1 - term[last, i]) * nq[last, i]
      g = sum((1 - lam) * lam ** (n - 1) * n_step(n) for n in range(1, horizon))
      out[t, i] = g + lam ** (horizon - 1) * n_step(horizon)
  return out


@pytest.mark.parametrize("lam", [0.0, 0.65, 1.0])
def test_q_lambda_targets_match_the_definition(lam):
  rng = np.random.default_rng(0)
  t_len, n_env = 9, 5
  r = rng.standard_normal((t_len, n_env))
  nq = rng.standard_normal((t_len, n_env))
  done = rng.random((t_len, n_env)) < 0.25
  term = done & (rng.random((t_len, n_env)) < 0.5)  # the others are truncations
  got = losses.q_lambda_targets(r, nq, term, done, 0.9, lam)
  want = _lambda_return_by_definition(r, nq, term.astype(float), done, 0.9, lam)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  if lam == 0.0:  # one-step Q-learning targets
    np.testing.assert_allclose(got, r + 0.9 * (1 - term) * nq, rtol=1e-5, atol=1e-6)


def test_q_learning_loss_regresses_the_taken_action():
  # Q = [[1, 2, 3], [4, 5, 6]], actions [2, 0] -> Q(s, a) = [3, 4]; targets [2, 4]:
  # ½ mean(1², 0²) = 0.25; only the taken actions get gradient ((Q - G) / M).
  q = f32([[1, 2, 3], [4, 5, 6]])
  (loss, metrics), grad = jax.value_and_grad(losses.q_learning_loss, has_aux=True)(
      q, jnp.array([2, 0]), f32([2, 4]))
  np.testing.assert_allclose(loss, 0.25, rtol=1e-6)
  np.testing.assert_allclose(metrics["q_mean"], 3.5, rtol=1e-6)
  np.testing.assert_allclose(grad, [[0, 0, 0.5], [0, 0, 0]], atol=1e-7)


# ---------------------------------------------------------------------------------------------
# SAC.


# Three transitions, γ = 0.9, reward scale 2. Row 1 terminated; row 2 truncated (a time limit:
# the collector stores it with terminated = False and next_obs = the state reached, so the
# target sees only terminated, and a truncated row is a live one).
REWARD = f32([1.0, 2.0, 0.5])
TERMINATED = jnp.array([False, True, False])
NEXT_Q = f32([[3.0, 1.0, -1.0], [2.0, 5.0, 0.0]])  # [2, B]; min over twins [2, 1, -1]
NEXT_LOGP = f32([-1.0, 0.5, 2.0])


def test_sac_target_soft_value_termination_and_truncation():
  # α = 0.2: soft value min Q - α log π = [2 + 0.2, 1 - 0.1, -1 - 0.4] = [2.2, 0.9, -1.4];
  # y = 2 r + 0.9 (1 - term) soft = [2 + 1.98, 4 + 0, 1 - 1.26] = [3.98, 4, -0.26].
  y = losses.sac_target(REWARD, TERMINATED, NEXT_Q, NEXT_LOGP, f32(0.2), gamma=0.9,
                        reward_scaling=2.0)
  chex.assert_shape(y, (3,))
  chex.assert_type(y, jnp.float32)
  np.testing.assert_allclose(y, [3.98, 4.0, -0.26], rtol=1e-5)
  # The truncated row bootstraps: its target is not the bare scaled reward 2 * 0.5.
  assert float(y[2]) != 2 * float(REWARD[2])
  # The entropy term is α log π: at α = 1 it is [-1, 0.5, 2] instead of 0.2 times that, so
  # the live rows move by -0.9 · 0.8 · log π = [0.72, -, -1.44]; the terminated row does not.
  y1 = losses.sac_target(REWARD, TERMINATED, NEXT_Q, NEXT_LOGP, f32(1.0), gamma=0.9,
                         reward_scaling=2.0)
  np.testing.assert_allclose(y1 - y, [0.72, 0.0, -1.44], rtol=1e-5, atol=1e-6)
  # No gradient flows through a target.
  g = jax.grad(lambda q: losses.sac_target(REWARD, TERMINATED, q, NEXT_LOGP, f32(0.2),
                                           gamma=0.9).sum())(NEXT_Q)
  np.testing.assert_array_equal(g, np.zeros((2, 3)))


def test_twin_critic_loss():
  # Q1 = [1, 2], Q2 = [0, 4], y = [1, 3]: mean errors 0.5 and 1 -> 1.5.
  loss, metrics = losses.twin_critic_loss(f32([[1, 2], [0, 4]]), f32([1, 3]))
  np.testing.assert_allclose(loss, 1.5, rtol=1e-6)
  np.testing.assert_allclose(metrics["q/mean"], 1.75, rtol=1e-6)


def test_sac_actor_loss_uses_the_smaller_critic_and_fixed_alpha():
  # log π = [-1, 0.5], min_j Q = [1, 0], α = 0.5: mean(-0.5 - 1, 0.25 - 0) = -0.625.
  logp, q = f32([-1.0, 0.5]), f32([[1.0, 3.0], [2.0, 0.0]])
  loss_fn = lambda logp, q, alpha: losses.sac_actor_loss(logp, q, alpha)
  (loss, metrics), (g_logp, g_q, g_alpha) = jax.value_and_grad(
      loss_fn, argnums=(0, 1, 2), has_aux=True)(logp, q, f32(0.5))
  np.testing.assert_allclose(loss, -0.625, rtol=1e-6)
  np.testing.assert_allclose(metrics["entropy"], 0.25, rtol=1e-6)
  np.testing.assert_allclose(g_logp, [0.25, 0.25], rtol=1e-6)  # α / B
  np.testing.assert_allclose(g_q, [[-0.5, 0.0], [0.0, -0.5]], rtol=1e-6)  # the min only
  assert float(g_alpha) == 0.0


@pytest.mark.parametrize("target_entropy,alpha_moves", [(-1.0, "down"), (5.0, "up")])
def test_sac_temperature_loss_sign(target_entropy, alpha_moves):
  # mean log π = -2 (entropy 2). ∂L/∂log α = -(mean log π + H̄): +3 for H̄ = -1 (entropy above
  # target: descent lowers α), -3 for H̄ = 5 (below target: descent raises α).
  logp = f32([-1.0, -3.0])
  loss, g = jax.value_and_grad(losses.sac_temperature_loss)(f32(0.3), logp, target_entropy)
  np.testing.assert_allclose(g, -(-2.0 + target_entropy), rtol=1e-6)
  np.testing.assert_allclose(loss, -0.3 * (-2.0 + target_entropy), rtol=1e-6)
  assert (float(g) > 0) == (alpha_moves == "down")
  # The log-probs are data here: no gradient reaches the policy through this loss.
  g_logp = jax.grad(lambda lp: losses.sac_temperature_loss(f32(0.3), lp, target_entropy))(logp)
  np.testing.assert_array_equal(g_logp, [0.0, 0.0])


# ---------------------------------------------------------------------------------------------
# TD3.


def test_td3_target_smoothing_clips_noise_then_action():
  # σ = 0.2, c = 0.5: σ ε = [[0.6, -0.02], [-0.8, -0.2]] -> clip ±0.5 -> [[0.5, -0.02],
  # [-0.5, -0.2]]; μ̄ + noise = [[1.3, -0.52], [-0.5, -1.15]] -> clip ±1 -> [[1, -0.52],
  # [-0.5, -1]].
  action = f32([[0.8, -0.5], [0.0, -0.95]])
  noise = f32([[3.0, -0.1], [-4.0, -1.0]])
  got = losses.smoothed_target_action(action, noise, policy_noise=0.2, noise_clip=0.5)
  chex.assert_shape(got, (2, 2))
  np.testing.assert_allclose(got, [[1.0, -0.52], [-0.5, -1.0]], rtol=1e-6)
  # Zero noise clip: the target action is μ̄(s') itself.
  np.testing.assert_allclose(
      losses.smoothed_target_action(action, noise, policy_noise=0.2, noise_clip=0.0), action)


def test_td3_target_and_actor_loss():
  # min_j Q̄ = [1, 0]; γ = 0.5; row 1 terminated: y = [1 + 0.5, 1].
  y = losses.td3_target(f32([1, 1]), jnp.array([0.0, 1.0]), f32([[1, 2], [3, 0]]), gamma=0.5)
  np.testing.assert_allclose(y, [1.5, 1.0], rtol=1e-6)
  # -mean Q1 = -(1 + 3) / 2; the second critic gets no gradient.
  q = f32([[1, 3], [100, -100]])
  (loss, _), g = jax.value_and_grad(losses.td3_actor_loss, has_aux=True)(q)
  np.testing.assert_allclose(loss, -2.0, rtol=1e-6)
  np.testing.assert_allclose(g, [[-0.5, -0.5], [0.0, 0.0]], rtol=1e-6)
