"""KL estimators and their placement in the LLM policy-gradient objective.

The objective is ``J(θ) = E_{y~π_θ}[R(y)] − β·KL(π_θ ‖ π_ref)``, the *sequence-level reverse* KL
(spec ``specs/llm_rl.md`` §1.1). What a trainer actually optimises depends on three choices,
which is why they are one config object here (:class:`KLConfig`) rather than separate code
paths:

* the **estimator** applied to the log-ratio ``ℓ = log π_θ − log π_ref``:
  ``k1 = ℓ``, ``k2 = ½ℓ²``, ``k3 = e^{−ℓ} − 1 + ℓ`` (computed as ``expm1(−ℓ) + ℓ``, see
  :func:`k3`), ``abs = |ℓ|``;
* the **level** it is applied at: ``token`` (``Σ_t k(ℓ_t)``) or ``sequence`` (``k(Σ_t ℓ_t)``);
* the **placement**: ``reward`` (a stop-gradient penalty subtracted from the return, so its
  gradient is only the score-function term), ``loss`` (added to the loss and differentiated
  pathwise through ``log π_θ``), or ``both`` (the sum: the total derivative). For the reward
  placement, ``reward_credit`` says which tokens' returns the per-token penalty enters: every
  token of the sequence (``sequence``), the tokens before it (``to_go``, reward-to-go), or only
  its own token (``immediate``, γ = 0).

Named configurations (spec §1.2; ``KLConfig.from_name``). "Expected gradient" is the on-policy
expectation of the KL part of the loss gradient divided by β; ``G* = ∇KL_rev``,
``P_rev``/``P_fwd`` are the per-state ("partial") reverse/forward gradients with the state
distribution frozen at π's (spec §1.1). Every row is checked by exact enumeration in
``tests/llm/test_kl_exact.py``; ``docs/kl_estimators_table.md`` names the test of each row.

======  =========  =========  ========  ==========  ====================================
name    estimator  placement  level     credit      expected gradient
======  =========  =========  ========  ==========  ====================================
none    —          none       —         —           no KL term
R1      k1         reward     token     sequence    G* (unbiased; the paper's recommendation)
R2      k1         reward     token     to_go       G* (unbiased, lower variance than R1)
R3      k1         reward     token     immediate   P_rev (= G* only when T = 1)
R4      k2         reward     token     sequence    ∇E[Σk2] − P_rev (biased)
R5      k3         reward     token     sequence    G* − P_fwd (biased; collapses in the paper)
R5s     k3         reward     sequence  sequence    G* − ∇KL_fwd (biased)
L1      k1         loss       token     —           0 (KL inactive in expectation, adds noise)
L1+     k1 (st)    loss       token     —           P_rev (value k1, gradient of k2)
L2      k2         loss       token     —           P_rev
L2s     k2         loss       sequence  —           G* (same per-sample estimator as R1)
L3      k3         loss       token     —           P_fwd (GRPO default; forward-KL-like)
L3+     k3 (st)    loss       token     —           P_rev (verl ``k3+`` straight-through)
L3s     k3         loss       sequence  —           ∇KL_fwd (sequence forward KL, exactly)
L2-IS   k2 (IS)    loss       token     —           biased off-policy (slime PR #1039)
L3-IS   k3 (IS)    loss       token     —           Σ_t E_{s_t~μ}[∇κ_t]; on-policy P_rev
B1      k1         both       token     sequence    G*
B2      k2         both       token     sequence    ∇E[Σk2] (biased: k2 is value-biased)
B3      k3         both       token     sequence    G* (unbiased: value-unbiased in both)
A       abs        loss       token     —           Σ_t E[sign(ℓ_t)ψ_t] (biased)
======  =========  =========  ========  ==========  ====================================

``(st)``: straight-through, the estimator's value with the gradient of k2 (verl's "+"
variants). ``(IS)``: multiplied by the token importance ratio ``r_t = π_θ/μ`` with the
gradient flowing through ``r_t`` (DeepSeek-V3.2 "unbiased KL"); ``μ`` is the behaviour policy
that sampled the batch. The names ``L1+``, ``L3+``, ``L2-IS``, ``L3-IS`` are ours: the spec lists
those variants without names.

Array conventions: ``[B, T]`` arrays are per response token, right-padded: ``mask[b, t]`` is 1
on the first ``n_b`` positions of row ``b`` and 0 after. Padding positions never contribute,
whatever values the log-prob arrays hold there (NaN included).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxlab.core.errors import ConfigError

ESTIMATORS = ("k1", "k2", "k3", "abs")
PLACEMENTS = ("none", "reward", "loss", "both")
LEVELS = ("token", "sequence")
CREDITS = ("sequence", "to_go", "immediate")


# -- estimators -----------------------------------------------------------------------------------


def k1(log_ratio: jax.Array) -> jax.Array:
  """``k1 = ℓ``: unbiased for the KL value, can be negative, high variance."""
  return log_ratio


def k2(log_ratio: jax.Array) -> jax.Array:
  """``k2 = ½ℓ²``: non-negative, low variance, biased for the value."""
  return 0.5 * jnp.square(log_ratio)


def k3(log_ratio: jax.Array) -> jax.Array:
  """``k3 = e^{−ℓ} − 1 + ℓ``: unbiased for the value (``E_π[e^{−ℓ}] = 1``) and ≥ 0.

  Computed as ``expm1(−ℓ) + ℓ``: the naive ``exp(−ℓ) − 1 + ℓ`` loses every significant digit
  of ``exp(−ℓ) − 1`` near ℓ = 0 and returns small *negative* numbers in float32 (spec §1.2
  "Numerics"; Tunix issue #2315). ``expm1`` keeps the ``ℓ²/2`` term, and adding ``ℓ`` to it is
  exact enough (Sterbenz) that the result stays ≥ 0.
  """
  return jnp.expm1(-log_ratio) + log_ratio


def kabs(log_ratio: jax.Array) -> jax.Array:
  """``|ℓ|`` (verl's ``abs``): not an estimator of the KL value; biased gradient."""
  return jnp.abs(log_ratio)


_ESTIMATOR_FNS = {"k1": k1, "k2": k2, "k3": k3, "abs": kabs}


def estimate(log_ratio: jax.Array, estimator: str, *, straight_through: bool = False,
             clamp_log_ratio: float | None = None, clamp_value: float | None = None
             ) -> jax.Array:
  """Applies a KL estimator elementwise to log-ratios ``ℓ = log π_θ − log π_ref``.

  Args:
    log_ratio: any shape.
    estimator: one of :data:`ESTIMATORS`.
    straight_through: forward value of ``estimator``, backward gradient of k2
      (``k2 − sg(k2) + sg(k)``), verl's ``k1+``/``k3+``.
    clamp_log_ratio: clip ``ℓ`` to ``[−c, c]`` first (verl clips the k3 exponent to ±20).
    clamp_value: clip the estimate to ``[−c, c]`` (verl ±10 for k3, OpenRLHF ±10 for all).
      Both clamps are off by default: where active they zero the gradient, i.e. bias it.

  Returns:
    the estimate, same shape as ``log_ratio``.
  """
  if estimator not in _ESTIMATOR_FNS:
    raise ConfigError(f"kl.estimator={estimator!r} is not one of {ESTIMATORS}")
  x = log_ratio
  if clamp_log_ratio is not None:
    x = jnp.clip(x, -clamp_log_ratio, clamp_log_ratio)
  value = _ESTIMATOR_FNS[estimator](x)
  if straight_through:
    sq = k2(x)
    value = sq - jax.lax.stop_gradient(sq) + jax.lax.stop_gradient(value)
  if clamp_value is not None:
    value = jnp.clip(value, -clamp_value, clamp_value)
  return value


# -- configuration --------------------------------------------------------------------------------

# name -> (fields that define it, expected on-policy gradient of the KL part / β).
# Fields not listed take their defaults (level="token", reward_credit="sequence", no IS, no
# straight-through). Keep in sync with the module docstring and docs/kl_estimators_table.md.
TABLE: dict[str, tuple[dict[str, Any], str]] = {
    "none": (dict(placement="none"), "no KL term"),
    "R1": (dict(estimator="k1", placement="reward"), "∇KL_rev (unbiased)"),
    "R2": (dict(estimator="k1", placement="reward", reward_credit="to_go"),
           "∇KL_rev (unbiased)"),
    "R3": (dict(estimator="k1", placement="reward", reward_credit="immediate"),
           "P_rev (partial; ∇KL_rev only when T=1)"),
    "R4": (dict(estimator="k2", placement="reward"), "∇E[Σk2] − P_rev (biased)"),
    "R5": (dict(estimator="k3", placement="reward"), "∇KL_rev − P_fwd (biased)"),
    "R5s": (dict(estimator="k3", placement="reward", level="sequence"),
            "∇KL_rev − ∇KL_fwd (biased)"),
    "L1": (dict(estimator="k1", placement="loss"), "0 (zero expected gradient)"),
    "L1+": (dict(estimator="k1", placement="loss", straight_through=True),
            "P_rev (partial)"),
    "L2": (dict(estimator="k2", placement="loss"), "P_rev (partial)"),
    "L2s": (dict(estimator="k2", placement="loss", level="sequence"), "∇KL_rev (unbiased)"),
    "L3": (dict(estimator="k3", placement="loss"), "P_fwd (per-state forward KL)"),
    "L3+": (dict(estimator="k3", placement="loss", straight_through=True), "P_rev (partial)"),
    "L3s": (dict(estimator="k3", placement="loss", level="sequence"),
            "∇KL_fwd (sequence forward KL)"),
    "L2-IS": (dict(estimator="k2", placement="loss", importance_weight=True),
              "biased (off-policy r·k2)"),
    "L3-IS": (dict(estimator="k3", placement="loss", importance_weight=True),
              "Σ_t E_{s_t~μ}[∇κ_t] (partial, states from μ)"),
    "B1": (dict(estimator="k1", placement="both"), "∇KL_rev (unbiased)"),
    "B2": (dict(estimator="k2", placement="both"), "∇E[Σk2] (biased)"),
    "B3": (dict(estimator="k3", placement="both"), "∇KL_rev (unbiased)"),
    "A": (dict(estimator="abs", placement="loss"), "Σ_t E[sign(ℓ_t)ψ_t] (biased)"),
}


@dataclasses.dataclass(frozen=True)
class KLConfig:
  """Which KL estimator, at which level, placed where (spec §1.2; names in the module table).

  Build it from a table name, ``KLConfig.from_name("B3", coef=0.1)``, from a config mapping
  (:meth:`from_mapping`: ``{"name": "B3", "coef": 0.1}`` or explicit fields), or field by field.
  :attr:`name` maps the fields back to the table name ("custom" if none matches), and
  :meth:`describe` is the line a trainer logs.

  Attributes:
    estimator: "k1" | "k2" | "k3" | "abs".
    placement: "none" | "reward" | "loss" | "both".
    coef: β ≥ 0. With "both", the same β weighs the reward and the loss term (B1/B3 are only
      unbiased with equal weights).
    level: "token" (``Σ_t k(ℓ_t)``) or "sequence" (``k(Σ_t ℓ_t)``; its value sits on the
      sequence's last valid token, so every aggregation mode sees it once per sequence).
    reward_credit: for the reward placement, where the penalty ``β·k_t`` of token ``t`` enters
      the return: "sequence" (subtracted from the sequence reward: every token's advantage
      sees the whole-sequence penalty, R1), "to_go" (token ``u`` sees ``Σ_{t≥u} β·k_t``,
      reward-to-go, R2), "immediate" (only token ``t`` sees ``β·k_t``, R3). With "sequence"
      level only "sequence" credit is defined.
    importance_weight: loss placement, token level: multiply ``k_t`` by
      ``r_t = exp(log π_θ − log μ)`` with the gradient through ``r_t`` (off-policy IS rows).
    straight_through: loss placement, token level: value of the estimator, gradient of k2.
    clamp_log_ratio, clamp_value: optional clamps, off by default (see :func:`estimate`).
  """
  estimator: str = "k1"
  placement: str = "none"
  coef: float = 0.0
  level: str = "token"
  reward_credit: str = "sequence"
  importance_weight: bool = False
  straight_through: bool = False
  clamp_log_ratio: float | None = None
  clamp_value: float | None = None

  def __post_init__(self):
    for key, value, choices in (("estimator", self.estimator, ESTIMATORS),
                                ("placement", self.placement, PLACEMENTS),
                                ("level", self.level, LEVELS),
                                ("reward_credit", self.reward_credit, CREDITS)):
      if value not in choices:
        raise ConfigError(f"kl.{key}={value!r} is not one of {choices}")
    if not self.coef >= 0:
      raise ConfigError(f"kl.coef={self.coef!r} must be >= 0")
    if (self.importance_weight or self.straight_through) and not self.in_loss:
      raise ConfigError("kl.importance_weight / kl.straight_through act on the loss term; "
                        f"kl.placement={self.placement!r} has none")
    if self.level == "sequence":
      if self.importance_weight or self.straight_through:
        raise ConfigError("kl.importance_weight / kl.straight_through need kl.level='token' "
                          "(they act on per-token terms)")
      if self.in_reward and self.reward_credit != "sequence":
        raise ConfigError(f"kl.reward_credit={self.reward_credit!r} needs kl.level='token': a "
                          "sequence-level estimate has no per-token values to credit")
    for key in ("clamp_log_ratio", "clamp_value"):
      c = getattr(self, key)
      if c is not None and not c > 0:
        raise ConfigError(f"kl.{key}={c!r} must be > 0 or None")

  @property
  def in_reward(self) -> bool:
    return self.placement in ("reward", "both")

  @property
  def in_loss(self) -> bool:
    return self.placement in ("loss", "both")

  @property
  def active(self) -> bool:
    return self.placement != "none" and self.coef > 0

  def _key(self) -> tuple:
    """The fields that decide the expected gradient, normalised so that equivalent spellings
    compare equal (k1 is the same at both levels; credit only matters in the reward)."""
    if self.placement == "none":
      return ("none",)
    level = "token" if self.estimator == "k1" else self.level
    credit = self.reward_credit if self.in_reward else None
    loss_opts = (self.importance_weight, self.straight_through) if self.in_loss else None
    return (self.estimator, self.placement, level, credit, loss_opts)

  @property
  def name(self) -> str:
    """The spec-table name of this configuration ("R1", "L3", "B3", ...) or "custom"."""
    for name, (fields, _) in TABLE.items():
      if KLConfig(**fields)._key() == self._key():
        return name
    return "custom"

  @property
  def expected_gradient(self) -> str:
    name = self.name
    return TABLE[name][1] if name in TABLE else "not tabulated"

  def describe(self) -> str:
    """One log line, e.g. ``KL B3 (k3 in both, token level, credit=sequence, β=0.1):
    expected gradient ∇KL_rev (unbiased)``."""
    if self.placement == "none":
      return "KL none (no KL term)"
    parts = [f"{self.estimator} in {self.placement}", f"{self.level} level"]
    if self.in_reward:
      parts.append(f"credit={self.reward_credit}")
    if self.in_loss and self.importance_weight:
      parts.append("IS-weighted")
    if self.in_loss and self.straight_through:
      parts.append("straight-through")
    for key in ("clamp_log_ratio", "clamp_value"):
      if getattr(self, key) is not None:
        parts.append(f"{key}={getattr(self, key)}")
    parts.append(f"β={self.coef}")
    return f"KL {self.name} ({', '.join(parts)}): expected gradient {self.expected_gradient}"

  @classmethod
  def from_name(cls, name: str, **overrides: Any) -> "KLConfig":
    """The table configuration ``name`` with ``overrides`` (typically ``coef`` and clamps).

    Raises:
      ConfigError: unknown name, or an override that turns it into a different row.
    """
    if name not in TABLE:
      raise ConfigError(f"kl.name={name!r} is not one of {tuple(TABLE)}")
    config = cls(**{**TABLE[name][0], **overrides})
    if config.name != name:
      raise ConfigError(f"kl.name={name!r} conflicts with {overrides}: that is {config.name!r}")
    return config

  @classmethod
  def from_mapping(cls, m: Mapping[str, Any]) -> "KLConfig":
    """From a dict / ConfigDict: either ``name`` (plus coef/clamps, and optionally fields
    that agree with it) or explicit fields. Unknown keys are an error naming the key."""
    fields = {f.name for f in dataclasses.fields(cls)}
    m = dict(m)
    name = m.pop("name", None)
    unknown = sorted(set(m) - fields)
    if unknown:
      raise ConfigError(f"kl.{unknown[0]} is not a KL option; expected name or one of "
                        f"{sorted(fields)}")
    if name:
      return cls.from_name(name, **m)
    return cls(**m)


# -- per-token terms used by the policy-gradient loss -------------------------------------------


def _last_token(mask: jax.Array) -> jax.Array:
  """``[B, T]`` bool, True on each row's last valid position (right-padded masks)."""
  nxt = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
  return mask & ~nxt


def _masked(x: jax.Array, mask: jax.Array) -> jax.Array:
  # `where`, not a product: padding may hold NaN/inf, and 0 * NaN = NaN (also in gradients).
  return jnp.where(mask, x, jnp.zeros_like(x))


def kl_per_token(config: KLConfig, logp: jax.Array, ref_logp: jax.Array, mask: jax.Array,
                 behaviour_logp: jax.Array | None = None, *, for_loss: bool) -> jax.Array:
  """The KL estimate laid out per token, ``[B, T]``, zero on padding; NOT multiplied by β.

  Token level: ``k(ℓ_t)`` at each valid token. Sequence level: ``k(Σ_t ℓ_t)`` on the last
  valid token and 0 elsewhere, so that summing a row gives that sequence's estimate.

  Args:
    config: the KL configuration.
    logp: ``[B, T]`` ``log π(y_t|s_t)``; for the loss the differentiable current policy, for
      the reward the (detached) behaviour log-probs.
    ref_logp: ``[B, T]`` ``log π_ref(y_t|s_t)``.
    mask: ``[B, T]`` bool, valid response tokens.
    behaviour_logp: ``[B, T]`` ``log μ``; needed when ``for_loss`` and
      ``config.importance_weight``.
    for_loss: apply the loss-only options (straight-through, importance weight).
  """
  mask = mask.astype(bool)
  ell = _masked(logp - ref_logp, mask)
  opts = dict(clamp_log_ratio=config.clamp_log_ratio, clamp_value=config.clamp_value)
  if config.level == "sequence":
    seq = estimate(jnp.sum(ell, axis=1), config.estimator, **opts)
    return jnp.where(_last_token(mask), seq[:, None], 0.0)
  per_token = estimate(ell, config.estimator,
                       straight_through=for_loss and config.straight_through, **opts)
  if for_loss and config.importance_weight:
    if behaviour_logp is None:
      raise ValueError("importance-weighted KL needs the behaviour log-probs")
    # r_t = π_θ/μ keeps its gradient: ∇(r_t k3_t) = r_t ℓ_t ψ_t (spec §1.2, IS row).
    per_token = per_token * jnp.exp(_masked(logp - behaviour_logp, mask))
  return _masked(per_token, mask)


def sequence_kl_stats(logp: jax.Array, ref_logp: jax.Array, mask: jax.Array
                      ) -> dict[str, jax.Array]:
  """Batch means of the per-sequence KL estimates ``Σ_t k1``, ``Σ_t k2``, ``Σ_t k3`` (detached)
  for logging; all estimate ``KL(π‖π_ref)`` of the sequence (k2 with a bias)."""
  mask = mask.astype(bool)
  ell = jax.lax.stop_gradient(_masked(logp - ref_logp, mask))
  return {f"kl/{name}": jnp.mean(jnp.sum(_masked(fn(ell), mask), axis=1))
          for name, fn in (("k1", k1), ("k2", k2), ("k3", k3))}
