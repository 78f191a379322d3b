"""AsyPPO's pure pieces (spec §2.2-2.3): exact-count uncertainty masks and the critics' split."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core.errors import ConfigError
from jaxlab.llm import asyppo
from jaxlab.llm import kl as kl_lib
from jaxlab.llm import pg_loss as pg


def _batch(seed, B=6, T=9, M=2, ties=False):
  """Critic values [M, B, T], a right-padded valid mask with an empty row, and junk (NaN)
  values on padding."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, T + 1, size=B)
  lengths[rng.integers(B)] = 0
  valid = np.arange(T)[None] < lengths[:, None]
  values = rng.normal(size=(M, B, T))
  if ties:  # many exactly equal σ (e.g. critics that agree exactly)
    values = np.round(values, 0)
  values = np.where(valid[None], values, np.nan)
  return jnp.asarray(values), jnp.asarray(valid)


def test_ensemble_statistics():
  v = jnp.array([[[1.0, 2.0]], [[3.0, -2.0]]])
  np.testing.assert_allclose(asyppo.ensemble_std(v), [[1.0, 2.0]])  # |V1 − V2| / 2
  np.testing.assert_allclose(asyppo.ensemble_mean(v), [[2.0, 0.0]])


@pytest.mark.parametrize("n,f,want", [(100, 0.29, 29), (7, 0.2, 1), (10, 0.2, 2), (0, 0.2, 0),
                                      (5, 1.0, 5), (5, 0.0, 0), (3, 1 / 3, 1),
                                      (10_000_019, 0.2, 2_000_003), (2**31 - 1, 0.37, 794568949)])
def test_rounding_rule(n, f, want):
  assert int(asyppo.num_selected(n, f)) == want


@pytest.mark.parametrize("scope", ["batch", "sequence"])
@pytest.mark.parametrize("ties", [False, True])
def test_masks_touch_exactly_k_and_h_of_valid_tokens(scope, ties):
  """Over random batches (variable lengths, an empty row, NaN on padding) and fractions, each
  mask drops exactly ⌊f·N⌋ valid tokens, never a padding token, and the right ones."""
  masks = jax.jit(asyppo.uncertainty_masks, static_argnums=(2, 3, 4))
  for seed in range(6):
    values, valid = _batch(seed, ties=ties)
    v = np.asarray(valid)
    for k, h in ((0.2, 0.2), (0.05, 0.37), (0.0, 1.0), (0.5, 0.5), (1.0, 0.0)):
      keep_a, keep_h, sigma, metrics = masks(values, valid, k, h, scope)
      keep_a, keep_h, s = np.asarray(keep_a), np.asarray(keep_h), np.asarray(sigma)
      drop_a, drop_h = v & ~keep_a, v & ~keep_h
      assert not np.any(keep_a & ~v) and not np.any(keep_h & ~v)
      rows = [slice(None)] if scope == "batch" else [i for i in range(v.shape[0])]
      for r in rows:
        n = int(v[r].sum())
        flat = n > 0 and s[r][v[r]].max() == s[r][v[r]].min()  # nothing to rank by
        for f, drop in ((k, drop_a), (h, drop_h)):
          want = int(np.floor(f * n + 1e-9))
          assert drop[r].sum() == (0 if flat and want < n else want), (seed, f, r)
        # Lowest σ dropped from the PG term, highest σ from the entropy term.
        if drop_a[r].any() and (v[r] & keep_a[r]).any():
          assert s[r][drop_a[r]].max() <= s[r][v[r] & keep_a[r]].min()
        if drop_h[r].any() and (v[r] & keep_h[r]).any():
          assert s[r][drop_h[r]].min() >= s[r][v[r] & keep_h[r]].max()
        if int(np.floor(k * n + 1e-9)) + int(np.floor(h * n + 1e-9)) <= n:
          assert not np.any(drop_a[r] & drop_h[r])  # disjoint, even under ties
      if scope == "batch" and s[v].max() > s[v].min():
        np.testing.assert_allclose(float(metrics["asyppo/adv_masked_frac"]),
                                   np.floor(k * v.sum() + 1e-9) / v.sum(), rtol=1e-6)


def test_selection_ignores_padding_values_and_breaks_ties_by_position():
  sigma = jnp.array([[0.5, 0.5, 0.5, -100.0], [0.5, 0.5, jnp.nan, jnp.inf], [0.7, 0, 0, 0]])
  valid = jnp.array([[True, True, True, False], [True, True, False, False],
                     [True, False, False, False]])
  low = np.asarray(asyppo.select_extreme(sigma, valid, 0.4, "lowest"))
  high = np.asarray(asyppo.select_extreme(sigma, valid, 0.4, "highest"))
  # ⌊0.4·6⌋ = 2 among five tied 0.5s and one 0.7: the earliest 0.5s; the 0.7 and the latest.
  np.testing.assert_array_equal(low, [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(high, [[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]])
  with pytest.raises(ConfigError):
    asyppo.advantage_mask(sigma, valid, 20)  # a percentage, not a fraction


def test_identical_critics_mask_nothing():
  """At the first step critics that start from one checkpoint agree exactly (σ = 0): the masks
  then have nothing to rank by and keep every valid token (a fraction of 1 still takes all)."""
  values = jnp.zeros((2, 3, 5))
  valid = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
  for scope in ("batch", "sequence"):
    keep_a, keep_h, _, _ = asyppo.uncertainty_masks(values, valid, 0.2, 0.2, scope)
    np.testing.assert_array_equal(keep_a, valid)
    np.testing.assert_array_equal(keep_h, valid)
  all_low = asyppo.select_extreme(values[0], valid, 1.0, "lowest")
  np.testing.assert_array_equal(all_low, valid)


@pytest.mark.parametrize("P,G,M", [(3, 8, 2), (4, 6, 3), (1, 4, 4), (2, 4, 1)])
def test_group_split_is_disjoint_and_covers_each_group(P, G, M):
  ids = np.asarray(asyppo.group_split(jax.random.key(0), P, G, M))
  assert ids.shape == (P * G,)
  shards = np.asarray(asyppo.shard_masks(jnp.asarray(ids), M))
  assert shards.shape == (M, P * G)
  np.testing.assert_array_equal(shards.sum(0), 1)  # disjoint, and they cover the batch
  per_prompt = shards.reshape(M, P, G).sum(-1)
  np.testing.assert_array_equal(per_prompt, G // M)  # every critic sees every prompt, G/M each


def test_group_split_is_random_per_prompt_and_has_flags():
  ids = np.asarray(asyppo.group_split(jax.random.key(1), 50, 8, 2)).reshape(50, 8)
  assert len({tuple(r) for r in ids}) > 10  # a fresh permutation per prompt
  other = np.asarray(asyppo.group_split(jax.random.key(2), 50, 8, 2)).reshape(50, 8)
  assert np.any(ids != other)
  fixed = np.asarray(asyppo.group_split(jax.random.key(1), 2, 4, 2, shuffle=False))
  np.testing.assert_array_equal(fixed, [0, 0, 1, 1, 0, 0, 1, 1])
  by_prompt = np.asarray(asyppo.group_split(jax.random.key(3), 6, 4, 3, mode="prompts"))
  groups = by_prompt.reshape(6, 4)
  assert np.all(groups == groups[:, :1])  # a prompt's responses all go to one critic
  np.testing.assert_array_equal(np.bincount(groups[:, 0], minlength=3), [2, 2, 2])
  with pytest.raises(ConfigError, match="num_critics"):
    asyppo.group_split(jax.random.key(0), 2, 5, 2)
  with pytest.raises(ConfigError, match="num_critics"):
    asyppo.group_split(jax.random.key(0), 3, 4, 2, mode="prompts")


def test_critic_loss_sees_only_its_shard():
  rng = np.random.default_rng(4)
  M, B, T = 2, 4, 3
  values = jnp.asarray(rng.normal(size=(M, B, T)))
  returns = jnp.asarray(rng.normal(size=(B, T)))
  mask = jnp.asarray(np.arange(T)[None] < np.array([3, 2, 3, 1])[:, None])
  shards = asyppo.shard_masks(jnp.array([0, 1, 1, 0]), M)
  (total, per), grad = jax.value_and_grad(asyppo.critic_loss, has_aux=True)(
      values, returns, mask, shards)
  g, m, s = np.asarray(grad), np.asarray(mask), np.asarray(shards)
  for c in range(M):
    assert np.all(g[c][~s[c]] == 0)  # no gradient from the other critic's responses
    assert np.all(g[c][s[c]][m[s[c]]] != 0)
    w = s[c][:, None] & m
    want = np.sum((np.asarray(values[c]) - np.asarray(returns))[w] ** 2) / w.sum()
    np.testing.assert_allclose(float(per[c]), want, rtol=1e-6)
  np.testing.assert_allclose(float(total), float(per.sum()), rtol=1e-6)


def test_masks_plug_into_the_policy_loss():
  """Tokens dropped by I^A get no policy-gradient; tokens dropped by I^H no entropy gradient."""
  values, valid = _batch(7, B=4, T=6)
  keep_a, keep_h, _, _ = asyppo.uncertainty_masks(values, valid, 0.2, 0.2)
  rng = np.random.default_rng(7)
  logp = jnp.asarray(-rng.uniform(0.1, 2.0, size=valid.shape))
  ent = jnp.asarray(rng.uniform(0.1, 2.0, size=valid.shape))
  adv = pg.compute_advantages(pg.PGLossConfig(advantage="gae", lam=0.95), jnp.ones(4), valid,
                              values=asyppo.ensemble_mean(values)).advantages
  c = pg.PGLossConfig(advantage="gae", aggregation="seq-mean-token-mean", entropy_coef=1e-3,
                      kl=kl_lib.KLConfig())
  f = lambda lp, h: pg.policy_loss(c, lp, jax.lax.stop_gradient(lp), None, adv, valid,
                                   entropy=h, adv_mask=keep_a, entropy_mask=keep_h)[0]
  g_lp, g_h = jax.jit(jax.grad(f, argnums=(0, 1)))(logp, ent)
  v = np.asarray(valid)
  assert np.all(np.asarray(g_lp)[v & ~np.asarray(keep_a)] == 0)
  assert np.all(np.asarray(g_h)[v & ~np.asarray(keep_h)] == 0)
  assert np.all(np.asarray(g_h)[np.asarray(keep_h)] < 0)
