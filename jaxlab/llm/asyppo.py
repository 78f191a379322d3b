"""AsyPPO's pure pieces: critic-ensemble statistics, uncertainty masks, the critics' data split.

AsyPPO (spec ``specs/llm_rl.md`` §2) trains M small critics, each on a disjoint part of every
prompt's response group (§2.2), averages them for GAE, and uses the per-token disagreement
``σ_t = std_m V_m(s_t)`` to reshape the policy loss (§2.3):

* **advantage mask** ``I^A_t = 0`` on the tokens whose σ is among the lowest ``k`` fraction
  (critics agree: little signal, overfitting risk under data reuse): those tokens are dropped
  from the *policy-gradient* term;
* **entropy filter** ``I^H_t = 0`` on the tokens whose σ is among the highest ``h`` fraction
  (critics disagree: the state is weakly coupled to the outcome): those tokens are dropped from
  the *entropy bonus*.

Both masks are computed once per rollout batch, from the critics' values *before* this step's
critic update (spec §2.4, step 5), and enter :func:`jaxlab.llm.pg_loss.policy_loss` as
``adv_mask`` / ``entropy_mask``. They are rank operations, not differentiable: nothing here
carries a gradient except :func:`critic_loss`.

**Exact counting.** Only valid tokens are ranked and counted: a mask touches exactly
``n = ⌊f · N⌋`` tokens, ``N`` the number of valid tokens in the scope (the whole rollout batch
by default, or each sequence), ``f`` = k or h. To keep decimal fractions exact, ``f`` is first
read as the nearest fraction with denominator ≤ 10⁴ (0.29 is 29/100, so 0.29 · 100 gives 29,
not the 28 that binary floating point would), and the floor is taken in integer arithmetic.
Ties in σ are broken by flat token position: the advantage mask takes the earliest of tied
tokens, the entropy filter the latest, so the two masks are disjoint whenever
``⌊k·N⌋ + ⌊h·N⌋ ≤ N``. This is the exact-index selection of the community implementation
(spec §2.7), not a quantile threshold, which would touch more than n tokens under ties.

Shape letters: M critics, B responses (groups of G contiguous rows per prompt, P prompts),
T response positions.
"""

from __future__ import annotations

import fractions

import jax
import jax.numpy as jnp

from jaxlab.core.errors import ConfigError

SCOPES = ("batch", "sequence")
SPLIT_MODES = ("responses", "prompts")

_MAX_DENOMINATOR = 10_000


# -- ensemble statistics --------------------------------------------------------------------------


def ensemble_mean(values: jax.Array) -> jax.Array:
  """``V̄(s_t) = (1/M) Σ_m V_m(s_t)``, the value GAE uses (mean beat min, spec §2.2).

  Args:
    values: ``[M, B, T]``.

  Returns:
    ``[B, T]``.
  """
  return jnp.mean(values, axis=0)


def ensemble_std(values: jax.Array) -> jax.Array:
  """``σ_t = std_m V_m(s_t)``, population std (ddof = 0): ``|V_1 − V_2| / 2`` for M = 2.

  Args:
    values: ``[M, B, T]``.

  Returns:
    ``[B, T]``.
  """
  return jnp.std(values, axis=0)


# -- exact rank selection -------------------------------------------------------------------------


def _as_fraction(f: float, name: str) -> fractions.Fraction:
  if not 0.0 <= f <= 1.0:
    raise ConfigError(f"asyppo.{name}={f} must be a fraction in [0, 1] (0.2 means 20%)")
  return fractions.Fraction(f).limit_denominator(_MAX_DENOMINATOR)


def num_selected(num_valid: jax.Array, fraction: float) -> jax.Array:
  """``⌊fraction · num_valid⌋`` exactly (the rounding rule in the module docstring).

  Args:
    num_valid: integer array, any shape.
    fraction: in [0, 1], read as the nearest fraction with denominator ≤ 10⁴.

  Returns:
    int32 array like ``num_valid``.
  """
  q = _as_fraction(fraction, "fraction")
  p, d = q.numerator, q.denominator
  n = jnp.asarray(num_valid, jnp.int32)
  # ⌊n·p/d⌋ without overflowing int32: n = a·d + b gives a·p + ⌊b·p/d⌋ with b·p < d² ≤ 10⁸.
  return (n // d) * p + ((n % d) * p) // d


def _ranks(scores: jax.Array, valid: jax.Array) -> jax.Array:
  """Rank of each flat entry among the valid ones (ascending score, ties by position);
  invalid entries rank after every valid one."""
  pos = jnp.arange(scores.shape[0])
  order = jnp.lexsort((pos, scores, ~valid))  # last key is the primary one
  return jnp.zeros_like(pos).at[order].set(pos)


def _select_flat(scores: jax.Array, valid: jax.Array, fraction: float, which: str
                 ) -> jax.Array:
  ranks = _ranks(scores, valid)
  n_valid = jnp.sum(valid)
  n = num_selected(n_valid, fraction)
  # Equal scores on every valid token (critics that start identical: σ = 0 everywhere at the
  # first step) rank nothing, so a partial selection takes none; ties broken by position
  # would mask whichever rows come first.
  spread = (jnp.max(jnp.where(valid, scores, -jnp.inf))
            > jnp.min(jnp.where(valid, scores, jnp.inf)))
  n = jnp.where(spread | (n == n_valid), n, 0)
  if which == "lowest":
    chosen = ranks < n
  else:
    chosen = ranks >= n_valid - n
  return chosen & valid


def select_extreme(scores: jax.Array, valid: jax.Array, fraction: float, which: str,
                   scope: str = "batch") -> jax.Array:
  """Exactly ``⌊fraction · N⌋`` valid tokens with the lowest (or highest) scores; none when
  every valid token has the same score and the fraction leaves some out (no ranking to act
  on: identical critics, σ = 0).

  Args:
    scores: ``[B, T]`` (σ).
    valid: ``[B, T]`` bool; invalid tokens are never selected nor counted.
    fraction: in [0, 1].
    which: "lowest" or "highest".
    scope: "batch" (rank all valid tokens of the batch together; the default of spec §2.4)
      or "sequence" (each row on its own, ``N`` its own count).

  Returns:
    ``[B, T]`` bool, True on the selected tokens.
  """
  if which not in ("lowest", "highest"):
    raise ValueError(f"which={which!r} must be 'lowest' or 'highest'")
  if scope not in SCOPES:
    raise ConfigError(f"asyppo.scope={scope!r} is not one of {SCOPES}")
  _as_fraction(fraction, "fraction")
  scores = jax.lax.stop_gradient(scores)
  valid = valid.astype(bool)
  if scope == "batch":
    return _select_flat(scores.reshape(-1), valid.reshape(-1), fraction,
                        which).reshape(scores.shape)
  return jax.vmap(lambda s, v: _select_flat(s, v, fraction, which))(scores, valid)


def advantage_mask(sigma: jax.Array, valid: jax.Array, k: float, scope: str = "batch"
                   ) -> jax.Array:
  """``I^A``: False on the lowest-``k`` fraction of σ among valid tokens (and on padding).

  Multiply it into the policy-gradient term only (``policy_loss(adv_mask=...)``); the KL and
  entropy terms of those tokens stay.

  Args:
    sigma: ``[B, T]`` critic disagreement.
    valid: ``[B, T]`` bool.
    k: fraction in [0, 1] (the paper's best k = 20% is 0.2).
    scope: "batch" or "sequence".

  Returns:
    ``[B, T]`` bool keep-mask: ``valid & ~lowest``.
  """
  _as_fraction(k, "k")
  return valid.astype(bool) & ~select_extreme(sigma, valid, k, "lowest", scope)


def entropy_mask(sigma: jax.Array, valid: jax.Array, h: float, scope: str = "batch"
                 ) -> jax.Array:
  """``I^H``: False on the highest-``h`` fraction of σ among valid tokens (and on padding).

  Multiply it into the entropy bonus only (``policy_loss(entropy_mask=...)``).

  Args:
    sigma: ``[B, T]`` critic disagreement.
    valid: ``[B, T]`` bool.
    h: fraction in [0, 1] (the paper's best h = 20% is 0.2).
    scope: "batch" or "sequence".

  Returns:
    ``[B, T]`` bool keep-mask: ``valid & ~highest``.
  """
  _as_fraction(h, "h")
  return valid.astype(bool) & ~select_extreme(sigma, valid, h, "highest", scope)


def uncertainty_masks(values: jax.Array, valid: jax.Array, k: float, h: float,
                      scope: str = "batch") -> tuple[jax.Array, jax.Array, jax.Array, dict]:
  """σ from the critics' values, then both masks (spec §2.4, steps 5-6).

  Args:
    values: ``[M, B, T]`` every critic's ``V_m(s_t)`` (pre-update snapshot).
    valid: ``[B, T]`` bool.
    k, h: fractions for :func:`advantage_mask` / :func:`entropy_mask`.
    scope: "batch" or "sequence".

  Returns:
    ``(I^A [B, T], I^H [B, T], σ [B, T], metrics)``.
  """
  valid = valid.astype(bool)
  sigma = jax.lax.stop_gradient(ensemble_std(values))
  adv_keep = advantage_mask(sigma, valid, k, scope)
  ent_keep = entropy_mask(sigma, valid, h, scope)
  n = jnp.maximum(jnp.sum(valid), 1)
  metrics = {
      "asyppo/sigma_mean": jnp.sum(jnp.where(valid, sigma, 0.0)) / n,
      "asyppo/adv_masked_frac": jnp.sum(valid & ~adv_keep) / n,
      "asyppo/ent_masked_frac": jnp.sum(valid & ~ent_keep) / n,
  }
  return adv_keep, ent_keep, sigma, metrics


# -- the critics' data split ----------------------------------------------------------------------


def group_split(key: jax.Array, num_prompts: int, group_size: int, num_critics: int,
                mode: str = "responses", shuffle: bool = True) -> jax.Array:
  """Which critic trains on each response: group-level non-overlap (spec §2.2).

  "responses" (the method text; default): within every prompt's group of G responses, a
  random permutation splits them into M equal parts of G/M, so every critic sees every prompt
  but different responses. "prompts" (the abstract's reading; a flag): the P prompts are split
  into M equal parts, all G responses of a prompt going to one critic.

  Args:
    key: PRNG key (ignored when ``shuffle`` is False).
    num_prompts: P.
    group_size: G; batch rows ``p·G .. p·G + G − 1`` are prompt ``p``'s responses.
    num_critics: M; must divide G ("responses") or P ("prompts").
    mode: "responses" or "prompts".
    shuffle: random assignment (True) or contiguous blocks (False).

  Returns:
    ``[B]`` int32 critic index per response, ``B = P·G``.
  """
  if mode not in SPLIT_MODES:
    raise ConfigError(f"asyppo.split={mode!r} is not one of {SPLIT_MODES}")
  units = group_size if mode == "responses" else num_prompts
  if num_critics < 1 or units % num_critics:
    what = f"groups of {group_size} responses" if mode == "responses" else (
        f"{num_prompts} prompts")
    raise ConfigError(f"asyppo.num_critics={num_critics} cannot split {what} into equal parts")
  part = units // num_critics
  block = jnp.arange(units, dtype=jnp.int32) // part  # position -> critic, before shuffling
  if mode == "responses":
    if shuffle:
      keys = jax.random.split(key, num_prompts)
      ids = jax.vmap(lambda k_: jax.random.permutation(k_, block))(keys)
    else:
      ids = jnp.broadcast_to(block, (num_prompts, group_size))
    return ids.reshape(-1)
  ids = jax.random.permutation(key, block) if shuffle else block
  return jnp.repeat(ids, group_size)


def shard_masks(critic_ids: jax.Array, num_critics: int) -> jax.Array:
  """``[M, B]`` bool, ``m_shard[m, i]`` = response i belongs to critic m (spec §2.8)."""
  return critic_ids[None, :] == jnp.arange(num_critics)[:, None]


def critic_loss(values: jax.Array, returns: jax.Array, mask: jax.Array, shards: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
  """``Σ_m mean_{(i,t) ∈ D_m} (V_m(s_t) − R_t)²``, each critic on its own shard (spec §2.2).

  All critics run on the full batch (stacked parameters); the shard mask, not slicing,
  keeps critic m's gradient free of the other shards.

  Args:
    values: ``[M, B, T]`` critic predictions (differentiable).
    returns: ``[B, T]`` targets (constants), e.g. ``Advantages.returns``.
    mask: ``[B, T]`` valid tokens.
    shards: ``[M, B]`` bool from :func:`shard_masks`.

  Returns:
    ``(total loss, [M] per-critic losses)``.
  """
  w = shards[:, :, None] & mask.astype(bool)[None]
  err = jnp.where(w, values - jax.lax.stop_gradient(returns)[None], 0.0)
  per_critic = jnp.sum(jnp.square(err), axis=(1, 2)) / jnp.maximum(jnp.sum(w, axis=(1, 2)), 1)
  return jnp.sum(per_critic), per_critic
