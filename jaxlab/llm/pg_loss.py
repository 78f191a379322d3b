"""The LLM policy-gradient loss as a pure function of per-token log-probs.

One core serves RLOO, GRPO (with or without std normalisation), REINFORCE and PPO/AsyPPO with a
critic (GAE): the advantage estimator, the KL estimator and its placement
(:class:`jaxlab.llm.kl.KLConfig`), the clip range, the loss aggregation and the entropy bonus
are fields of :class:`PGLossConfig`, not separate trainers (``DESIGN.md``: "paper features are
options of shared pieces").

A training step uses two functions, in this order:

1. :func:`compute_advantages`, once per rollout batch, on detached inputs: task rewards plus
   the KL-in-reward penalty (computed from the *behaviour* log-probs that sampled the batch,
   as verl/OpenRLHF/TRL do) become per-token advantages and returns.
2. :func:`policy_loss`, per (mini-)batch and epoch, differentiable in ``logp`` (and
   ``entropy``): the clipped importance-ratio surrogate, plus the KL-in-loss term, minus the
   entropy bonus, each laid out per token and aggregated by one rule.

:func:`pg_loss` is the two chained (the one-update-per-batch, on-policy case). The tests drive
exactly this code with a tabular policy (``tests/llm/test_kl_exact.py``).

Shape letters: B sequences (responses; rows of a group are contiguous), T response positions,
G responses per prompt, V vocabulary. All ``[B, T]`` arrays are aligned so that position ``t``
holds the quantity for response token ``y_t`` (its log-prob given ``s_t = (x, y_<t)``, the
critic's ``V(s_t)``, the entropy of ``π(·|s_t)``), right-padded with ``mask[b, t] = 0`` after
the response. Padding may hold anything (NaN included): it never reaches a loss or a gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from jaxlab.core.errors import ConfigError
from jaxlab.llm import kl as kl_lib
from jaxlab.rl.gae import gae

ADVANTAGES = ("rloo", "grpo", "reinforce", "gae")
AGGREGATIONS = ("token-sum", "seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
# verl's name for "token-sum".
_AGG_ALIASES = {"seq-mean-token-sum": "token-sum"}

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class PGLossConfig:
  """Everything that decides the policy-gradient loss (hashable: usable as a jit static arg).

  Attributes:
    advantage: "rloo" (leave-one-out mean baseline over the G responses of a prompt),
      "grpo" (group mean, optionally divided by the group std), "reinforce" (no baseline),
      "gae" (critic values, ``gamma``/``lam``).
    grpo_std_normalize: GRPO divides by the group std (Bessel-corrected, ddof=1, as TRL/verl)
      plus ``std_eps``; False gives Dr.GRPO's mean-only centring.
    std_eps: added to the group std.
    gamma, lam: GAE discount and λ (γ = λ = 1 with zero values is reward-to-go).
    whiten_advantages: normalise advantages to zero mean / unit std over the valid tokens of
      the batch (ROLL's ``whiten_advantages``); off by default: it rescales β.
    advantage_clip: clip advantages to ``[−c, c]`` after whitening (None: off).
    clip_eps_low, clip_eps_high: the ratio is clipped to ``[1 − low, 1 + high]``; different
      values give DAPO-style asymmetric ("clip-higher") clipping.
    dual_clip: for negative advantages bound the per-token loss by ``−c·A`` (c > 1; None: off).
    aggregation: how per-token loss terms become one scalar; see :func:`aggregate`.
    norm_length: the constant length of "seq-mean-token-sum-norm" (default: the padded T).
    entropy_coef: β_H ≥ 0, weight of the entropy bonus (subtracted from the loss).
    kl: the KL estimator / placement / level / coefficient.
  """
  advantage: str = "rloo"
  grpo_std_normalize: bool = True
  std_eps: float = 1e-6
  gamma: float = 1.0
  lam: float = 1.0
  whiten_advantages: bool = False
  advantage_clip: float | None = None
  clip_eps_low: float = 0.2
  clip_eps_high: float = 0.2
  dual_clip: float | None = None
  aggregation: str = "token-sum"
  norm_length: int | None = None
  entropy_coef: float = 0.0
  kl: kl_lib.KLConfig = kl_lib.KLConfig()

  def __post_init__(self):
    if self.advantage not in ADVANTAGES:
      raise ConfigError(f"pg.advantage={self.advantage!r} is not one of {ADVANTAGES}")
    agg = _AGG_ALIASES.get(self.aggregation, self.aggregation)
    if agg not in AGGREGATIONS:
      raise ConfigError(f"pg.aggregation={self.aggregation!r} is not one of {AGGREGATIONS}")
    object.__setattr__(self, "aggregation", agg)
    if not (0 <= self.clip_eps_low < 1 and self.clip_eps_high >= 0):
      raise ConfigError(f"pg.clip_eps_low={self.clip_eps_low}, pg.clip_eps_high="
                        f"{self.clip_eps_high}: need 0 <= low < 1 and high >= 0")
    if self.dual_clip is not None and not self.dual_clip > 1:
      raise ConfigError(f"pg.dual_clip={self.dual_clip} must be > 1 (or None)")
    if self.entropy_coef < 0:
      raise ConfigError(f"pg.entropy_coef={self.entropy_coef} must be >= 0")
    if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
      raise ConfigError(f"pg.gamma={self.gamma}, pg.lam={self.lam} must lie in [0, 1]")
    if isinstance(self.kl, Mapping):
      object.__setattr__(self, "kl", kl_lib.KLConfig.from_mapping(self.kl))

  @classmethod
  def from_mapping(cls, m: Mapping[str, Any]) -> "PGLossConfig":
    """From a dict / ConfigDict; ``kl`` may be a nested mapping (``{"name": "B3", ...}``)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(m) - fields)
    if unknown:
      raise ConfigError(f"pg.{unknown[0]} is not a policy-loss option; expected one of "
                        f"{sorted(fields)}")
    values = dict(m)
    if "kl" in values and not isinstance(values["kl"], kl_lib.KLConfig):
      values["kl"] = kl_lib.KLConfig.from_mapping(values["kl"])
    return cls(**values)


class Advantages(NamedTuple):
  """Output of :func:`compute_advantages` (all detached, zero on padding).

  Attributes:
    advantages: ``[B, T]`` per-token advantage.
    returns: ``[B, T]`` value targets: ``advantages + values`` (the λ-return) for GAE, the
      undiscounted reward-to-go of ``token_rewards`` for the outcome estimators.
    token_rewards: ``[B, T]`` task reward minus the KL penalty as credited (see
      ``KLConfig.reward_credit``); for "immediate" credit the penalty is not in it.
    kl_penalty: ``[B, T]`` ``β·k_t`` of the KL-in-reward term as estimated (0 if none).
    metrics: scalar diagnostics.
  """
  advantages: jax.Array
  returns: jax.Array
  token_rewards: jax.Array
  kl_penalty: jax.Array
  metrics: dict


# -- helpers --------------------------------------------------------------------------------------


def _masked(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.where(mask, x, jnp.zeros_like(x))


def last_token_mask(mask: jax.Array) -> jax.Array:
  """``[B, T]`` bool, True at each row's last valid (right-padded) position."""
  return kl_lib._last_token(mask.astype(bool))  # pylint: disable=protected-access


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(_masked(x, mask)) / jnp.maximum(jnp.sum(mask), 1)


def entropy_from_logits(logits: jax.Array) -> jax.Array:
  """Full-vocabulary entropy ``H = logsumexp(z) − Σ softmax(z)·z`` in float32.

  Args:
    logits: ``[..., V]``.

  Returns:
    ``[...]`` entropies in nats.
  """
  z = logits.astype(jnp.float32)
  return jax.nn.logsumexp(z, axis=-1) - jnp.sum(jax.nn.softmax(z, axis=-1) * z, axis=-1)


def aggregate(per_token: jax.Array, mask: jax.Array, mode: str, *,
              normalizer: jax.Array | float | None = None, norm_length: int | None = None
              ) -> jax.Array:
  """Reduces per-token loss terms to a scalar.

  Modes (``n_b`` = valid tokens of row b, ``N = Σ_b n_b``):

  * "token-sum" (verl "seq-mean-token-sum"): ``(1/B) Σ_b Σ_t x_bt``. The only mode under which
    a per-sequence sum of gradient terms (RLOO's ``A·Σ_t ψ_t``, a KL sum) keeps its
    expectation: the unbiased rows of the KL table (R1, R2, L2s, B1, B3) need it.
  * "seq-mean-token-mean" (GRPO's 1/|o|, AsyPPO): ``(1/B) Σ_b (1/n_b) Σ_t x_bt``: weighs
    each sequence's terms by ``1/n_b``, a different functional when lengths vary (spec §1.2).
  * "token-mean" (DAPO, TRL "dapo"): ``(1/N) Σ_bt x_bt``: a batch-dependent constant scale.
  * "seq-mean-token-sum-norm" (Dr.GRPO): ``(1/(B·L)) Σ_bt x_bt`` with the constant
    ``L = norm_length`` (default the padded T).

  Args:
    per_token: ``[B, T]``.
    mask: ``[B, T]`` valid tokens.
    mode: one of :data:`AGGREGATIONS`.
    normalizer: replaces the outer denominator (``B`` for the "seq" modes and "token-sum",
      ``N`` for "token-mean"): gradient accumulation over micro-batches passes the whole
      batch's count.
    norm_length: ``L`` of "seq-mean-token-sum-norm".

  Returns:
    scalar.
  """
  mode = _AGG_ALIASES.get(mode, mode)
  mask = mask.astype(bool)
  x = _masked(per_token, mask)
  b, t = mask.shape
  if mode == "token-sum":
    total, denom = jnp.sum(x), b
  elif mode == "seq-mean-token-mean":
    n = jnp.maximum(jnp.sum(mask, axis=1), 1).astype(x.dtype)
    total, denom = jnp.sum(jnp.sum(x, axis=1) / n), b
  elif mode == "token-mean":
    total, denom = jnp.sum(x), jnp.maximum(jnp.sum(mask), 1).astype(x.dtype)
  elif mode == "seq-mean-token-sum-norm":
    total, denom = jnp.sum(x) / (norm_length or t), b
  else:
    raise ConfigError(f"aggregation={mode!r} is not one of {AGGREGATIONS}")
  return total / (denom if normalizer is None else normalizer)


# -- advantages -----------------------------------------------------------------------------------


def _grouped(x: jax.Array, group_size: int) -> jax.Array:
  if group_size is None or group_size < 2:
    raise ConfigError(f"group_size={group_size}: RLOO/GRPO need at least 2 responses per prompt")
  if x.shape[0] % group_size:
    raise ConfigError(f"batch of {x.shape[0]} responses is not a multiple of group_size="
                      f"{group_size}")
  return x.reshape(-1, group_size)


def rloo_advantage(returns: jax.Array, group_size: int) -> jax.Array:
  """``A_i = R_i − mean_{j≠i} R_j`` within each group (unbiased: the baseline does not depend
  on ``y_i``; spec §1.4 step 5).

  Args:
    returns: ``[B]`` sequence returns, groups of ``group_size`` contiguous rows.

  Returns:
    ``[B]``.
  """
  r = _grouped(returns, group_size)
  g = group_size
  baseline = (jnp.sum(r, axis=1, keepdims=True) - r) / (g - 1)
  return (r - baseline).reshape(-1)


def grpo_advantage(returns: jax.Array, group_size: int, std_normalize: bool = True,
                   eps: float = 1e-6) -> tuple[jax.Array, jax.Array]:
  """GRPO: ``A_i = (R_i − mean_j R_j) / (std_j R_j + eps)`` (or mean-only centring).

  The mean includes ``R_i``, so even without the std the gradient is ``(G−1)/G`` times the
  RLOO one; the std makes β effectively ``β/std`` per prompt (spec §1.2, interaction effects).

  Args:
    returns: ``[B]`` sequence returns, groups of ``group_size`` contiguous rows.
    group_size: G.
    std_normalize: divide by the Bessel-corrected group std plus ``eps``.
    eps: see above.

  Returns:
    ``([B] advantages, [B] the scale applied: 1/(std + eps), or 1)``.
  """
  r = _grouped(returns, group_size)
  centred = r - jnp.mean(r, axis=1, keepdims=True)
  if std_normalize:
    scale = 1.0 / (jnp.std(r, axis=1, ddof=1, keepdims=True) + eps)
  else:
    scale = jnp.ones_like(centred[:, :1])
  scale = jnp.broadcast_to(scale, r.shape)
  return (centred * scale).reshape(-1), scale.reshape(-1)


def gae_advantages(token_rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float,
                   lam: float) -> tuple[jax.Array, jax.Array]:
  """GAE over response tokens: ``δ_t = r_t + γV(s_{t+1}) − V(s_t)``, ``A_t = Σ_l (γλ)^l δ_{t+l}``.

  The response ends at its last valid token (terminal: no bootstrap after it). Built on the
  shared :func:`jaxlab.rl.gae.gae` (time-major, termination-aware).

  Args:
    token_rewards: ``[B, T]`` (the task reward sits on the last valid token).
    values: ``[B, T]`` ``V(s_t)``.
    mask: ``[B, T]`` valid tokens, right-padded.
    gamma, lam: discount and λ.

  Returns:
    ``([B, T] advantages, [B, T] returns = advantages + values)``, zero on padding.
  """
  mask = mask.astype(bool)
  r = _masked(token_rewards, mask)
  v = _masked(values, mask)
  next_v = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], axis=1)
  last = last_token_mask(mask)
  # Padding rows are "done" too, so nothing after the end flows back into the response.
  done = last | ~mask
  adv, ret = gae(r.T, v.T, next_v.T, last.T, done.T, gamma, lam)
  return _masked(adv.T, mask), _masked(ret.T, mask)


def _reverse_cumsum(x: jax.Array) -> jax.Array:
  """``y_t = Σ_{s≥t} x_s`` along axis 1."""
  return jnp.flip(jnp.cumsum(jnp.flip(x, axis=1), axis=1), axis=1)


def compute_advantages(config: PGLossConfig, rewards: jax.Array, mask: jax.Array,
                       old_logp: jax.Array | None = None, ref_logp: jax.Array | None = None, *,
                       group_size: int | None = None, values: jax.Array | None = None
                       ) -> Advantages:
  """Per-token advantages from task rewards and the KL-in-reward penalty (all detached).

  The KL penalty is ``p_t = β·k_t`` from ``KLConfig`` (``k`` of ``log μ − log π_ref`` with
  the behaviour log-probs ``old_logp``; on-policy ``μ = π_θ``, the spec's ``sg(ℓ)``). Its credit:

  * "sequence": the sequence return is ``R − Σ_t p_t`` (GAE: the sum sits on the last token);
  * "to_go": token ``t`` sees the return ``R − Σ_{s≥t} p_s`` (GAE: ``p_t`` is the reward of
    token t). For RLOO/GRPO/REINFORCE: ``A_t = A(R − Σ_s p_s) + scale·Σ_{s<t} p_s``: the added
    prefix sum depends only on ``y_<t`` (zero-mean against ``ψ_t``, spec (F2)), and the
    baseline/std come from whole-sequence returns;
  * "immediate": ``A_t = A(R) − p_t`` (GAE: ``GAE(R) − p_t``), i.e. γ = 0 for the KL (row R3).

  Outcome estimators (rloo, grpo, reinforce) are undiscounted: ``gamma``/``lam`` are GAE's.

  Args:
    config: the loss config (``advantage``, ``kl``, whitening, GAE γ/λ).
    rewards: ``[B]`` sequence task rewards, or ``[B, T]`` per-token task rewards (summed for
      the outcome estimators, as verl does).
    mask: ``[B, T]`` valid response tokens (right-padded).
    old_logp: ``[B, T]`` behaviour log-probs; needed iff the KL is in the reward.
    ref_logp: ``[B, T]`` reference log-probs; needed iff the KL is in the reward.
    group_size: G, for rloo / grpo (groups are contiguous rows).
    values: ``[B, T]`` critic ``V(s_t)`` for "gae" (None: zeros, i.e. Monte-Carlo returns).

  Returns:
    :class:`Advantages`.
  """
  mask = mask.astype(bool)
  kc = config.kl
  rewards = jnp.asarray(rewards)
  dtype = jnp.result_type(rewards.dtype, float)
  if rewards.ndim == 1:
    task = jnp.where(last_token_mask(mask), sg(rewards)[:, None], 0.0).astype(dtype)
  else:
    task = _masked(sg(rewards), mask).astype(dtype)

  if kc.in_reward and kc.coef > 0:
    if old_logp is None or ref_logp is None:
      raise ValueError("KL in the reward needs old_logp and ref_logp")
    pen = kc.coef * kl_lib.kl_per_token(kc, sg(old_logp), sg(ref_logp), mask, for_loss=False)
    credit = kc.reward_credit
  else:
    pen = jnp.zeros_like(task)
    credit = "none"

  if credit == "sequence":
    # The whole-sequence penalty sits on the last token: Σ_t r_t = R − Σ_t p_t.
    r = task - jnp.where(last_token_mask(mask), jnp.sum(pen, axis=1, keepdims=True), 0.0)
  elif credit == "to_go":
    r = task - pen
  else:  # "immediate" or no KL in the reward
    r = task

  if config.advantage == "gae":
    v = jnp.zeros_like(task) if values is None else _masked(sg(values), mask)
    adv, returns = gae_advantages(r, v, mask, config.gamma, config.lam)
    scale = 1.0
  else:
    seq_return = jnp.sum(r, axis=1)
    if config.advantage == "rloo":
      seq_adv, scale = rloo_advantage(seq_return, group_size), 1.0
    elif config.advantage == "grpo":
      seq_adv, scale = grpo_advantage(seq_return, group_size, config.grpo_std_normalize,
                                      config.std_eps)
      scale = scale[:, None]
    else:  # reinforce
      seq_adv, scale = seq_return, 1.0
    adv = jnp.broadcast_to(seq_adv[:, None], mask.shape)
    if credit == "to_go":
      # G_t − G_0 = Σ_{s<t} p_s: the penalties of earlier tokens leave token t's return.
      prefix = jnp.cumsum(pen, axis=1) - pen
      adv = adv + scale * prefix
    returns = _reverse_cumsum(r)
  if credit == "immediate":
    adv = adv - pen
  adv = _masked(adv, mask)

  if config.whiten_advantages:
    mu = masked_mean(adv, mask)
    sd = jnp.sqrt(masked_mean(jnp.square(adv - mu), mask))
    adv = _masked((adv - mu) / (sd + 1e-8), mask)
  if config.advantage_clip is not None:
    adv = jnp.clip(adv, -config.advantage_clip, config.advantage_clip)

  seq_reward = jnp.sum(task, axis=1)
  metrics = {
      "reward/mean": jnp.mean(seq_reward),
      "reward/kl_penalty": jnp.mean(jnp.sum(pen, axis=1)),
      "adv/mean": masked_mean(adv, mask),
      "adv/abs_mean": masked_mean(jnp.abs(adv), mask),
  }
  return Advantages(sg(adv), sg(_masked(returns, mask)), sg(_masked(r, mask)), sg(pen), metrics)


# -- the loss -------------------------------------------------------------------------------------


def policy_loss(config: PGLossConfig, logp: jax.Array, old_logp: jax.Array,
                ref_logp: jax.Array | None, advantages: jax.Array, mask: jax.Array, *,
                entropy: jax.Array | None = None, adv_mask: jax.Array | None = None,
                entropy_mask: jax.Array | None = None,
                normalizer: jax.Array | float | None = None
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The loss to *minimise*, differentiable in ``logp`` (and ``entropy``).

  Per token ``t`` of a valid position, with ``ρ_t = exp(logp_t − old_logp_t)``:

      pg_t  = −I^A_t · min(ρ_t A_t, clip(ρ_t, 1 − ε_low, 1 + ε_high) A_t)
              (dual clip: for A_t < 0, pg_t = min(pg_t, −c·A_t))
      kl_t  = β · k_t                        if the KL is in the loss (kl.py; not masked by I^A,
                                             not clipped: spec §1.2 "PPO ratio clipping")
      ent_t = −β_H · I^H_t · H_t             entropy bonus (AsyPPO's I^H, spec §2.3)
      loss  = aggregate(pg + kl + ent)       one aggregation rule for all terms (as verl)

  On-policy (``old_logp = sg(logp)``) ``ρ = 1`` and ``∇pg_t = −A_t ψ_t``: the REINFORCE/RLOO
  gradient of spec §1.4 step 6. Masks ``I^A``/``I^H`` multiply terms but do not change the
  aggregation's denominators (AsyPPO keeps 1/|o|).

  Args:
    config: the loss config.
    logp: ``[B, T]`` ``log π_θ(y_t|s_t)`` of the current parameters (differentiable).
    old_logp: ``[B, T]`` behaviour log-probs ``log μ`` (treated as constants).
    ref_logp: ``[B, T]`` reference log-probs (constants); may be None if the KL is not in the
      loss.
    advantages: ``[B, T]`` (constants), e.g. ``compute_advantages(...).advantages``.
    mask: ``[B, T]`` valid response tokens.
    entropy: ``[B, T]`` full-vocabulary entropies (differentiable); needed if
      ``entropy_coef > 0``; also logged when given.
    adv_mask: ``[B, T]`` AsyPPO's ``I^A`` (1 = keep the policy-gradient term); default all 1.
    entropy_mask: ``[B, T]`` AsyPPO's ``I^H`` (1 = keep the entropy term); default all 1.
    normalizer: outer denominator override, see :func:`aggregate`.

  Returns:
    ``(loss, metrics)``: a scalar and a dict of detached scalar diagnostics.
  """
  mask = mask.astype(bool)
  agg = lambda x: aggregate(x, mask, config.aggregation, normalizer=normalizer,
                            norm_length=config.norm_length)
  logp = _masked(logp, mask)
  old = sg(_masked(old_logp, mask))
  adv = sg(_masked(advantages, mask))

  log_ratio = logp - old
  ratio = jnp.exp(log_ratio)
  clipped = jnp.clip(ratio, 1.0 - config.clip_eps_low, 1.0 + config.clip_eps_high)
  pg = -jnp.minimum(ratio * adv, clipped * adv)
  if config.dual_clip is not None:
    pg = jnp.where(adv < 0, jnp.minimum(pg, -config.dual_clip * adv), pg)
  if adv_mask is not None:
    pg = jnp.where(adv_mask.astype(bool), pg, 0.0)
  pg = _masked(pg, mask)
  total = pg

  metrics = {}
  kc = config.kl
  if kc.in_loss and kc.coef > 0:
    if ref_logp is None:
      raise ValueError("KL in the loss needs ref_logp")
    kl_t = kc.coef * kl_lib.kl_per_token(kc, logp, sg(_masked(ref_logp, mask)), mask, old,
                                         for_loss=True)
    total = total + kl_t
    metrics["loss/kl"] = sg(agg(kl_t))
  if entropy is not None:
    ent = _masked(entropy, mask)
    metrics["entropy"] = sg(masked_mean(ent, mask))
    if config.entropy_coef > 0:
      if entropy_mask is not None:
        ent = jnp.where(entropy_mask.astype(bool), ent, 0.0)
      ent_t = -config.entropy_coef * ent
      total = total + ent_t
      metrics["loss/entropy"] = sg(agg(ent_t))
  elif config.entropy_coef > 0:
    raise ValueError("entropy_coef > 0 needs the per-token entropy")

  loss = agg(total)
  # The clipped branch is strictly smaller: min() picks it and the token has no PG gradient.
  clipped_tok = clipped * adv < ratio * adv
  metrics.update({
      "loss/total": sg(loss),
      "loss/pg": sg(agg(pg)),
      "pg/clip_frac": masked_mean(sg(clipped_tok).astype(logp.dtype), mask),
      "pg/ratio_mean": sg(masked_mean(ratio, mask)),
      # k3 of log(π/μ): how far the update has moved from the behaviour policy.
      "pg/approx_kl_old": sg(masked_mean(kl_lib.k3(log_ratio), mask)),
  })
  if ref_logp is not None:
    metrics.update(kl_lib.sequence_kl_stats(logp, _masked(ref_logp, mask), mask))
  return loss, metrics


def pg_loss(config: PGLossConfig, logp: jax.Array, old_logp: jax.Array,
            ref_logp: jax.Array | None, rewards: jax.Array, mask: jax.Array, *,
            group_size: int | None = None, values: jax.Array | None = None,
            entropy: jax.Array | None = None, adv_mask: jax.Array | None = None,
            entropy_mask: jax.Array | None = None,
            normalizer: jax.Array | float | None = None
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """:func:`compute_advantages` then :func:`policy_loss`, for one update on a fresh batch.

  The exact contract (what the tests pin down):

  * inputs: ``[B, T]`` per-token log-probs of the policy (``logp``, differentiable), the
    behaviour policy (``old_logp``; pass ``stop_gradient(logp)`` on-policy) and the reference
    (``ref_logp``); task ``rewards`` ``[B]`` (or ``[B, T]``); ``mask`` ``[B, T]``
    (right-padded, padding values are ignored); ``group_size`` for rloo/grpo; ``values``
    ``[B, T]`` for gae; ``entropy`` ``[B, T]`` when ``entropy_coef > 0``.
  * stop-gradient: advantages, the KL-in-reward penalty (from ``old_logp``), ``old_logp``,
    ``ref_logp`` and ``values`` are constants; gradients flow only through ``logp`` (ratio and
    KL-in-loss) and ``entropy``.
  * output: ``(loss, metrics)`` with ``loss`` the scalar to minimise; its gradient estimates
    ``−∇E[R] + β·g_KL`` where ``g_KL`` is the row of the KL table that ``config.kl`` names.

  Returns:
    ``(loss, metrics)``.
  """
  adv = compute_advantages(config, rewards, mask, old_logp, ref_logp, group_size=group_size,
                           values=values)
  loss, metrics = policy_loss(config, logp, old_logp, ref_logp, adv.advantages, mask,
                              entropy=entropy, adv_mask=adv_mask, entropy_mask=entropy_mask,
                              normalizer=normalizer)
  return loss, {**adv.metrics, **metrics}
