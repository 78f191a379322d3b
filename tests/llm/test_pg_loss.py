"""Unit tests of the KL estimators, the advantage estimators and the policy-gradient loss.

Hand-computed values and numpy reference loops; the exact expected-gradient identities of
every KL configuration live in ``test_kl_exact.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core.errors import ConfigError
from jaxlab.llm import kl as kl_lib
from jaxlab.llm import pg_loss as pg


# -- KL configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(kl_lib.TABLE))
def test_kl_config_names_round_trip(name):
  overrides = {} if name == "none" else {"coef": 0.1}
  config = kl_lib.KLConfig.from_name(name, **overrides)
  assert config.name == name
  assert config.describe().startswith(f"KL {name} ")
  assert kl_lib.KLConfig.from_mapping({"name": name, **overrides}) == config
  # Spelled out field by field, it is recognised as the same row.
  fields = {k: getattr(config, k) for k in ("estimator", "placement", "level", "reward_credit",
                                            "importance_weight", "straight_through")}
  assert kl_lib.KLConfig.from_mapping(fields).name == name


def test_kl_config_equivalent_spellings_and_errors():
  assert kl_lib.KLConfig(estimator="k1", placement="reward", level="sequence").name == "R1"
  assert kl_lib.KLConfig(estimator="k3", placement="loss", reward_credit="to_go").name == "L3"
  assert kl_lib.KLConfig(estimator="k2", placement="both", reward_credit="to_go").name == "custom"
  bad = [
      dict(estimator="k4"),
      dict(placement="critic"),
      dict(coef=-0.1),
      dict(placement="reward", level="sequence", estimator="k3", reward_credit="to_go"),
      dict(placement="reward", straight_through=True),
      dict(placement="loss", level="sequence", importance_weight=True),
      dict(placement="loss", clamp_value=0.0),
  ]
  for fields in bad:
    with pytest.raises(ConfigError):
      kl_lib.KLConfig(**fields)
  with pytest.raises(ConfigError, match="kl.name"):
    kl_lib.KLConfig.from_name("R9")
  with pytest.raises(ConfigError, match="conflicts"):
    kl_lib.KLConfig.from_mapping({"name": "B3", "estimator": "k1"})
  with pytest.raises(ConfigError, match="kl.beta"):
    kl_lib.KLConfig.from_mapping({"name": "B3", "beta": 0.1})


def test_pg_config_from_mapping():
  c = pg.PGLossConfig.from_mapping({"advantage": "grpo", "aggregation": "seq-mean-token-sum",
                                    "kl": {"name": "L3", "coef": 0.04}})
  assert c.kl.name == "L3" and c.kl.coef == 0.04 and c.aggregation == "token-sum"
  hash(c)  # a valid jit static argument
  with pytest.raises(ConfigError, match="pg.advantages"):
    pg.PGLossConfig.from_mapping({"advantages": "rloo"})
  for bad in (dict(advantage="ppo"), dict(aggregation="mean"), dict(clip_eps_low=1.0),
              dict(dual_clip=0.5), dict(entropy_coef=-1.0), dict(lam=1.5)):
    with pytest.raises(ConfigError):
      pg.PGLossConfig(**bad)


# -- estimators -----------------------------------------------------------------------------------


def test_k3_is_nonnegative_near_zero_in_float32():
  """Spec §1.5 item 8: expm1 keeps k3 ≥ 0 where the naive formula goes negative."""
  tiny = np.concatenate([np.linspace(-1e-6, 1e-6, 20001), np.geomspace(1e-12, 1e-6, 2000),
                         -np.geomspace(1e-12, 1e-6, 2000)]).astype(np.float32)
  ell = jnp.asarray(tiny)
  assert ell.dtype == jnp.float32
  assert bool(jnp.all(kl_lib.k3(ell) >= 0))
  naive = jnp.exp(-ell) - 1 + ell
  assert bool(jnp.any(naive < 0))  # the trap is real (Tunix #2315)
  big = jnp.linspace(-20.0, 20.0, 4001, dtype=jnp.float32)
  assert bool(jnp.all(jnp.isfinite(kl_lib.k3(big)))) and bool(jnp.all(kl_lib.k3(big) >= 0))
  # d k3 / dℓ = 1 − e^{−ℓ}.
  x = jnp.linspace(-3.0, 3.0, 13)
  np.testing.assert_allclose(jax.vmap(jax.grad(kl_lib.k3))(x), 1 - np.exp(-np.asarray(x)),
                             rtol=1e-5, atol=1e-6)


def test_estimator_values_and_clamps():
  ell = jnp.array([-30.0, -1.0, 0.0, 0.5, 30.0])
  np.testing.assert_allclose(kl_lib.estimate(ell, "k1"), ell)
  np.testing.assert_allclose(kl_lib.estimate(ell, "k2"), 0.5 * ell**2)
  np.testing.assert_allclose(kl_lib.estimate(ell, "abs"), jnp.abs(ell))
  np.testing.assert_allclose(kl_lib.estimate(ell[1:4], "k3"),
                             np.exp(-np.asarray(ell[1:4])) - 1 + ell[1:4], rtol=1e-6)
  # Clamps are off by default ...
  assert float(kl_lib.estimate(ell, "k3")[0]) > 1e12
  # ... and bias the gradient where active.
  clamped = kl_lib.estimate(ell, "k3", clamp_log_ratio=20.0)
  np.testing.assert_allclose(clamped[0], float(kl_lib.k3(jnp.float32(-20.0))), rtol=1e-6)
  g = jax.grad(lambda x: jnp.sum(kl_lib.estimate(x, "k3", clamp_value=10.0)))(ell)
  assert float(g[0]) == 0.0 and float(g[-1]) == 0.0 and float(g[1]) != 0.0
  np.testing.assert_allclose(np.asarray(kl_lib.estimate(ell, "k1", clamp_value=10.0))[[0, -1]],
                             [-10, 10])


def test_straight_through_has_value_of_estimator_and_gradient_of_k2():
  ell = jnp.array([-0.7, 0.1, 1.3])
  f = lambda x: kl_lib.estimate(x, "k3", straight_through=True)
  np.testing.assert_allclose(f(ell), kl_lib.k3(ell), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(f(x)))(ell), ell, rtol=1e-6)


def test_sequence_level_estimate_sits_on_last_token():
  mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
  logp = jnp.array([[-0.1, -0.2, -0.3, jnp.nan], [-1.0, jnp.nan, 5.0, 7.0]])
  ref = jnp.array([[-0.4, -0.2, -0.1, 3.0], [-0.5, 1.0, jnp.nan, 0.0]])
  c = kl_lib.KLConfig(estimator="k3", placement="loss", level="sequence")
  out = kl_lib.kl_per_token(c, logp, ref, mask, for_loss=True)
  seq = np.array([0.3 + 0.0 - 0.2, -0.5])
  want = np.zeros((2, 4))
  want[0, 2], want[1, 0] = np.expm1(-seq) + seq
  np.testing.assert_allclose(out, want, rtol=1e-4)


# -- advantages -----------------------------------------------------------------------------------


def test_rloo_and_grpo_values():
  r = jnp.array([1.0, 0.0, 0.0, 1.0, 0.2, 0.4, 0.6, 0.8])
  np.testing.assert_allclose(pg.rloo_advantage(r, 4),
                             [2 / 3, -2 / 3, -2 / 3, 2 / 3, -0.4, -2 / 15, 2 / 15, 0.4],
                             rtol=1e-6)
  adv, scale = pg.grpo_advantage(r, 4, std_normalize=True, eps=0.0)
  g = np.asarray(r).reshape(2, 4)
  want = (g - g.mean(1, keepdims=True)) / g.std(1, ddof=1, keepdims=True)
  np.testing.assert_allclose(adv, want.reshape(-1), rtol=1e-6)
  np.testing.assert_allclose(scale, np.repeat(1 / g.std(1, ddof=1), 4), rtol=1e-6)
  adv, scale = pg.grpo_advantage(r, 4, std_normalize=False)
  np.testing.assert_allclose(adv, (g - g.mean(1, keepdims=True)).reshape(-1), atol=1e-7)
  np.testing.assert_allclose(scale, 1.0)
  # All-equal rewards: zero advantage, no NaN (the eps).
  adv, _ = pg.grpo_advantage(jnp.ones(4), 4)
  np.testing.assert_allclose(adv, 0.0)
  with pytest.raises(ConfigError):
    pg.rloo_advantage(r, 3)
  with pytest.raises(ConfigError):
    pg.rloo_advantage(r, 1)


def _right_padded(lengths, T):
  return jnp.asarray(np.arange(T)[None, :] < np.asarray(lengths)[:, None])


def _gae_loop(rewards, values, lengths, gamma, lam):
  b, t = rewards.shape
  adv = np.zeros((b, t))
  for i in range(b):
    last = 0.0
    for s in reversed(range(lengths[i])):
      nxt = values[i, s + 1] if s + 1 < lengths[i] else 0.0
      delta = rewards[i, s] + gamma * nxt - values[i, s]
      last = delta + gamma * lam * last
      adv[i, s] = last
  return adv


def test_gae_matches_a_loop_and_ignores_padding():
  rng = np.random.default_rng(0)
  lengths = [5, 1, 3, 0]
  mask = _right_padded(lengths, 5)
  rewards = rng.normal(size=(4, 5))
  values = rng.normal(size=(4, 5))
  want = _gae_loop(rewards, values, lengths, 0.9, 0.7)
  junk_v = np.where(mask, values, np.nan)  # padding may hold NaN
  junk_r = np.where(mask, rewards, 1e6)
  adv, ret = pg.gae_advantages(jnp.asarray(junk_r), jnp.asarray(junk_v), mask, 0.9, 0.7)
  np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ret, np.where(mask, want + values, 0.0), rtol=1e-5, atol=1e-6)


def test_kl_reward_credit():
  """The penalty's credit (spec §1.2 R1/R2/R3), with RLOO and G = 2, by hand."""
  mask = _right_padded([3, 2], 3)
  old = jnp.array([[-1.0, -2.0, -0.5], [-0.3, -0.2, 9.0]])
  ref = jnp.array([[-1.5, -1.0, -0.5], [-0.1, -0.6, 9.0]])
  beta = 0.5
  p = beta * np.array([[0.5, -1.0, 0.0], [-0.2, 0.4, 0.0]])  # β·k1 per token
  R = jnp.array([1.0, 0.0])

  def adv(name, advantage="rloo"):
    c = pg.PGLossConfig(advantage=advantage, kl=kl_lib.KLConfig.from_name(name, coef=beta))
    return pg.compute_advantages(c, R, mask, old, ref, group_size=2)

  seq = np.array([1.0, 0.0]) - p.sum(1)
  a_seq = np.array([seq[0] - seq[1], seq[1] - seq[0]])
  m = np.asarray(mask)
  np.testing.assert_allclose(adv("R1").advantages, np.where(m, a_seq[:, None], 0), rtol=1e-6)
  np.testing.assert_allclose(adv("R1").kl_penalty, p, rtol=1e-6, atol=1e-7)
  to_go = a_seq[:, None] + np.cumsum(p, 1) - p
  np.testing.assert_allclose(adv("R2").advantages, np.where(m, to_go, 0), rtol=1e-6, atol=1e-7)
  imm = np.array([1.0, -1.0])[:, None] - p
  np.testing.assert_allclose(adv("R3").advantages, np.where(m, imm, 0), rtol=1e-6, atol=1e-7)
  # Reward-to-go returns of the shaped token rewards (critic targets).
  np.testing.assert_allclose(adv("R2").returns[0], [1 - p[0].sum(), 1 - p[0, 1:].sum(), 1.0],
                             rtol=1e-6)
  # GAE with γ = λ = 1 and no critic: every token's return-to-go minus nothing.
  g = adv("R2", "gae").advantages
  np.testing.assert_allclose(g[0], [1 - p[0].sum(), 1 - p[0, 1:].sum(), 1.0], rtol=1e-6)
  np.testing.assert_allclose(adv("R1", "gae").advantages[1], [seq[1], seq[1], 0.0], rtol=1e-6)
  # No KL in the reward: the penalty is zero even with a coefficient.
  c = pg.PGLossConfig(kl=kl_lib.KLConfig.from_name("L3", coef=beta))
  np.testing.assert_allclose(pg.compute_advantages(c, R, mask, old, ref, group_size=2).kl_penalty,
                             0.0)


def test_whitening_and_advantage_clip():
  mask = _right_padded([3, 1, 2, 2], 3)
  r = jnp.array([1.0, 0.0, 3.0, 0.5])
  c = pg.PGLossConfig(advantage="reinforce", whiten_advantages=True, advantage_clip=1.2)
  a = np.asarray(pg.compute_advantages(c, r, mask).advantages)
  m = np.asarray(mask)
  raw = np.broadcast_to(np.asarray(r)[:, None], m.shape)[m]
  w = (raw - raw.mean()) / (raw.std() + 1e-8)
  np.testing.assert_allclose(a[m], np.clip(w, -1.2, 1.2), rtol=1e-5)
  assert np.all(a[~m] == 0)


# -- aggregation and the loss ---------------------------------------------------------------------


def test_aggregation_modes():
  mask = _right_padded([2, 4, 1], 4)
  x = jnp.array([[1.0, 2.0, 100, 100], [1.0, 1.0, 1.0, 5.0], [3.0, -7, jnp.nan, 1]])
  agg = lambda mode, **kw: float(pg.aggregate(x, mask, mode, **kw))
  np.testing.assert_allclose(agg("token-sum"), (3 + 8 + 3) / 3, rtol=1e-6)
  np.testing.assert_allclose(agg("seq-mean-token-sum"), (3 + 8 + 3) / 3, rtol=1e-6)
  np.testing.assert_allclose(agg("seq-mean-token-mean"), (1.5 + 2 + 3) / 3, rtol=1e-6)
  np.testing.assert_allclose(agg("token-mean"), 14 / 7, rtol=1e-6)
  np.testing.assert_allclose(agg("seq-mean-token-sum-norm"), 14 / (3 * 4), rtol=1e-6)
  np.testing.assert_allclose(agg("seq-mean-token-sum-norm", norm_length=8), 14 / 24, rtol=1e-6)
  np.testing.assert_allclose(agg("token-mean", normalizer=28.0), 0.5, rtol=1e-6)


def _loss_grad(config, logp, old, adv, mask, **kw):
  ref = kw.pop("ref", None)
  f = lambda lp, **k: pg.policy_loss(config, lp, old, ref, adv, mask, **k)[0]
  if "entropy" in kw:
    return jax.grad(lambda lp, ent: f(lp, entropy=ent, **{k: v for k, v in kw.items()
                                                         if k != "entropy"}),
                    argnums=(0, 1))(logp, kw["entropy"])
  return jax.grad(lambda lp: f(lp, **kw))(logp)


def test_asymmetric_clipping_and_dual_clip():
  """Per-token gradient of the clipped surrogate, token-sum over one sequence."""
  ratios = np.array([1.25, 1.25, 0.75, 1.3, 1.5, 1.0])
  adv = np.array([1.0, 1.0, -1.0, -1.0, -1.0, 2.0])
  old = jnp.zeros((1, 6))
  logp = jnp.log(jnp.asarray(ratios))[None]
  mask = jnp.ones((1, 6), bool)
  A = jnp.asarray(adv)[None]
  sym = pg.PGLossConfig(clip_eps_low=0.2, clip_eps_high=0.2)
  g = np.asarray(_loss_grad(sym, logp, old, A, mask))[0]
  # d/dlogp of −ρA is −ρA where the unclipped branch is the min, 0 where clipping is active.
  np.testing.assert_allclose(g, [0, 0, 0, 1.3, 1.5, -2.0], rtol=1e-6)
  asym = pg.PGLossConfig(clip_eps_low=0.2, clip_eps_high=0.28)
  g = np.asarray(_loss_grad(asym, logp, old, A, mask))[0]
  np.testing.assert_allclose(g, [-1.25, -1.25, 0, 1.3, 1.5, -2.0], rtol=1e-6)
  dual = pg.PGLossConfig(clip_eps_low=0.2, clip_eps_high=0.28, dual_clip=1.4)
  loss, metrics = pg.policy_loss(dual, logp, old, None, A, mask)
  g = np.asarray(_loss_grad(dual, logp, old, A, mask))[0]
  np.testing.assert_allclose(g, [-1.25, -1.25, 0, 1.3, 0, -2.0], rtol=1e-6)
  np.testing.assert_allclose(float(loss), -1.25 - 1.25 + 0.8 + 1.3 + 1.4 - 2.0, rtol=1e-6)
  np.testing.assert_allclose(float(metrics["pg/clip_frac"]), 1 / 6, rtol=1e-6)


def test_entropy_bonus_and_asyppo_masks():
  """I^A removes only the PG term (the KL-in-loss term stays); I^H only the entropy term;
  denominators (1/|o|) do not change."""
  mask = _right_padded([3, 2], 3)
  logp = jnp.array([[-1.0, -0.5, -2.0], [-0.3, -0.7, 0.0]])
  ref = logp + 0.3
  adv = jnp.array([[1.0, -2.0, 0.5], [0.7, 0.7, 0.0]])
  ent = jnp.array([[1.1, 0.4, 0.9], [0.2, 0.6, 0.0]])
  keep_a = jnp.array([[True, False, True], [True, True, False]])
  keep_h = jnp.array([[False, True, True], [True, False, False]])
  c = pg.PGLossConfig(aggregation="seq-mean-token-mean", entropy_coef=0.01,
                      kl=kl_lib.KLConfig.from_name("L2", coef=0.1))
  g_lp, g_ent = jax.jit(lambda *a: _loss_grad(c, *a, ref=ref, entropy=ent, adv_mask=keep_a,
                                               entropy_mask=keep_h))(logp, logp, adv, mask)
  n = np.array([[3.0], [2.0]])
  m = np.asarray(mask)
  # PG: −A on kept tokens; KL (L2: ℓ) everywhere valid; all / (|o|·B).
  want_lp = (-np.asarray(adv) * np.asarray(keep_a) + 0.1 * (-0.3)) / (n * 2)
  np.testing.assert_allclose(g_lp, np.where(m, want_lp, 0), rtol=1e-5, atol=1e-7)
  want_ent = -0.01 * np.asarray(keep_h) / (n * 2)
  np.testing.assert_allclose(g_ent, np.where(m, want_ent, 0), rtol=1e-5, atol=1e-9)
  with pytest.raises(ValueError, match="entropy"):
    pg.policy_loss(c, logp, logp, ref, adv, mask)


def test_padding_is_inert_even_when_nan():
  rng = np.random.default_rng(1)
  lengths = [4, 2, 3, 1]
  mask = _right_padded(lengths, 4)
  m = np.asarray(mask)
  clean = {k: jnp.asarray(np.where(m, rng.normal(size=(4, 4)) - 1.0, 0.0))
           for k in ("logp", "old", "ref", "values")}
  clean["entropy"] = jnp.abs(clean["values"])
  dirty = {k: jnp.where(mask, v, jnp.nan) for k, v in clean.items()}
  rewards = jnp.array([1.0, 0.0, 0.5, 1.0])
  cases = (("B3", "rloo"), ("R2", "gae"), ("L3s", "grpo"), ("L3-IS", "rloo"))

  @jax.jit
  def all_cases(d):
    out = {}
    for name, adv in cases:
      c = pg.PGLossConfig(advantage=adv, entropy_coef=0.01,
                          kl=kl_lib.KLConfig.from_name(name, coef=0.2))
      f = lambda lp, ent, c=c: pg.pg_loss(c, lp, d["old"], d["ref"], rewards, mask,
                                          group_size=2, values=d["values"], entropy=ent)[0]
      out[name] = jax.value_and_grad(f, argnums=(0, 1))(d["logp"], d["entropy"])
    return out
  got_clean, got_dirty = all_cases(clean), all_cases(dirty)
  for name, _ in cases:
    (lc, gc), (ld, gd) = got_clean[name], got_dirty[name]
    assert np.isfinite(float(ld)), name
    np.testing.assert_allclose(float(ld), float(lc), rtol=1e-6)
    for a, b in zip(gd, gc):
      assert np.all(np.isfinite(a)) and np.all(np.asarray(a)[~m] == 0), name
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_on_policy_gradient_is_minus_advantage_times_score():
  """ρ = 1 on-policy: ∇loss = −Σ_t A_t ψ_t / B (token-sum), whatever the clip range."""
  mask = _right_padded([2, 3], 3)
  logp = jnp.array([[-1.0, -0.2, 0.0], [-0.4, -0.9, -1.3]])
  adv = jnp.array([[0.5, 0.5, 0.0], [-1.0, -1.0, -1.0]])
  c = pg.PGLossConfig(clip_eps_low=0.1, clip_eps_high=0.3)
  g = _loss_grad(c, logp, jax.lax.stop_gradient(logp), adv, mask)
  np.testing.assert_allclose(g, -np.asarray(adv) / 2, rtol=1e-6)


def test_pg_loss_jits_and_reports_metrics():
  mask = _right_padded([3, 2, 3, 1], 3)
  rng = np.random.default_rng(2)
  logp = jnp.asarray(np.where(np.asarray(mask), -rng.uniform(0.1, 2, size=(4, 3)), 0.0))
  ref = logp + jnp.asarray(0.2 * rng.normal(size=(4, 3)))
  rewards = jnp.array([1.0, 0.0, 1.0, 1.0])
  c = pg.PGLossConfig(kl=kl_lib.KLConfig.from_name("B3", coef=0.1))
  run = lambda c_, lp: pg.pg_loss(c_, lp, jax.lax.stop_gradient(lp), ref, rewards, mask,
                                  group_size=2)
  eager = run(c, logp)
  jitted = jax.jit(run, static_argnums=0)(c, logp)
  np.testing.assert_allclose(float(jitted[0]), float(eager[0]), rtol=1e-6)
  metrics = jitted[1]
  ell = np.where(np.asarray(mask), np.asarray(logp - ref), 0.0)
  np.testing.assert_allclose(float(metrics["kl/k1"]), ell.sum(1).mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["kl/k3"]),
                             np.where(np.asarray(mask), np.expm1(-ell) + ell, 0).sum(1).mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(float(metrics["reward/kl_penalty"]), 0.1 * float(metrics["kl/k3"]),
                             rtol=1e-5)
  np.testing.assert_allclose(float(metrics["pg/ratio_mean"]), 1.0)
  assert {"loss/total", "loss/pg", "loss/kl", "adv/mean", "pg/clip_frac"} <= set(metrics)


def test_entropy_from_logits():
  z = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, 7)) * 3)
  p = np.exp(np.asarray(z, np.float64))
  p /= p.sum(-1, keepdims=True)
  np.testing.assert_allclose(pg.entropy_from_logits(z), -(p * np.log(p)).sum(-1), rtol=1e-5,
                             atol=1e-6)
