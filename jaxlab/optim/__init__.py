"""One optimizer builder for every trainer: optimizers by name, schedules, clipping (spec rl.md
§2.3, §6).

    tx, lr = make_optimizer("radam", 2.5e-4, schedule="linear", total_steps=n, max_grad_norm=10)
    tx, lr = optim.from_config(c, total_steps=n)   # c.optimizer, c.learning_rate, ...
    tx, lr = optim.from_group(c.optimizer, c.critic_lr, max_grad_norm=c.max_grad_norm)
    tx, lr = make_optimizer("adamw", 1e-3, schedule="cosine", warmup_steps=100,
                            total_steps=n, min_lr_ratio=0.1, weight_decay=0.1,
                            decay_mask="matrices")   # the LLM trainers' AdamW

``name`` is one of ``adam``, ``adamw``, ``radam`` (optax) or ``kron`` (``jaxlab.optim.psgd``, our
PSGD Kron). The Kron learning-rate rule of the papers' code (spec §2.3: "lr = default lr / 3",
following the kron_torch README) is applied here, as ``kron_lr_scale`` (default 1/3) times the
configured learning rate, so an experiment switches optimizer by changing ``name`` alone; the
returned schedule is the effective one (log it). Schedules (:func:`make_schedule`): an optional
linear warmup, then constant, or a linear or cosine decay to ``min_lr_ratio`` of the peak.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import ml_collections
import optax

from jaxlab.core.config import require, require_choice
from jaxlab.optim.psgd import KronState
from jaxlab.optim.psgd import kron
from jaxlab.optim.psgd import precond_update_prob_schedule
from jaxlab.optim.psgd import scale_by_kron

OPTIMIZERS = ("adam", "adamw", "radam", "kron")
SCHEDULES = ("constant", "linear", "cosine")
DECAY_MASKS = ("all", "matrices")
KRON_LR_SCALE = 1.0 / 3.0  # spec §2.3: Kron runs use the base algorithm's lr divided by 3


class Optimizer(NamedTuple):
  """``tx``: the optax transformation (clipping included); ``lr``: step -> effective lr."""
  tx: optax.GradientTransformation
  lr: optax.Schedule


def make_schedule(learning_rate: float, schedule: str = "constant", *,
                  total_steps: int | None = None, warmup_steps: int = 0,
                  min_lr_ratio: float = 0.0) -> optax.Schedule:
  """The learning rate as a function of the optimizer step.

  A linear warmup over ``warmup_steps`` (step 0 gets ``1 / warmup_steps`` of the peak rather
  than 0, so the first update is not wasted; the peak is reached at step ``warmup_steps - 1``),
  then until ``total_steps``: "constant" at the peak, or a "linear" or "cosine" decay from the
  peak to ``min_lr_ratio * learning_rate``; after ``total_steps`` the final value.

  Args:
    learning_rate: the peak learning rate.
    schedule: "constant" | "linear" | "cosine".
    total_steps: optimizer steps of the run, the end of the decay (needed unless the schedule
      is constant without warmup).
    warmup_steps: length of the linear ramp (0: none).
    min_lr_ratio: the final rate as a fraction of the peak (RL's "linear": 0).

  Returns:
    ``step -> learning rate``.

  Raises:
    ValueError: unknown schedule, negative warmup, missing or non-positive ``total_steps``.
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"lr schedule={schedule!r} is not valid; expected one of "
                     f"{', '.join(SCHEDULES)}")
  if warmup_steps < 0:
    raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
  if total_steps is None:
    if schedule != "constant" or warmup_steps:
      raise ValueError(f"a {schedule} lr schedule with {warmup_steps} warmup steps needs "
                       "total_steps")
    return optax.constant_schedule(learning_rate)
  if total_steps < 1:
    raise ValueError(f"total_steps={total_steps} must be >= 1")
  peak, end = learning_rate, learning_rate * min_lr_ratio
  warmup = min(warmup_steps, total_steps)
  decay_steps = max(total_steps - warmup, 1)
  if schedule == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=min_lr_ratio)
  elif schedule == "linear":
    after = optax.linear_schedule(peak, end, decay_steps)
  else:
    after = optax.constant_schedule(peak)
  if warmup == 0:
    return after
  ramp = optax.linear_schedule(peak / warmup, peak, warmup - 1) if warmup > 1 else (
      optax.constant_schedule(peak))
  return optax.join_schedules([ramp, after], [warmup])


def matrices(params: Any) -> Any:
  """Weight-decay mask: True for leaves with ndim >= 2 (kernels, embeddings), False for
  vectors and scalars (norm scales, biases: shrinking them toward zero changes the function,
  not its complexity)."""
  return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(name: str, learning_rate: float, *, schedule: str = "constant",
                   total_steps: int | None = None, warmup_steps: int = 0,
                   min_lr_ratio: float = 0.0, max_grad_norm: float = 0.0,
                   eps: float = 1e-8, b1: float = 0.9, b2: float = 0.999,
                   weight_decay: float = 0.0, decay_mask: str = "all",
                   kron_lr_scale: float = KRON_LR_SCALE,
                   kron_kwargs: dict | None = None) -> Optimizer:
  """Builds ``[clip_by_global_norm] -> optimizer`` with the lr schedule of :func:`make_schedule`.

  Args:
    name: "adam" | "adamw" | "radam" | "kron".
    learning_rate: the base (peak) learning rate (for "kron", multiplied by ``kron_lr_scale``).
    schedule: "constant", "linear" or "cosine" (:func:`make_schedule`).
    total_steps: optimizer steps of the run (needed by a decay or a warmup).
    warmup_steps: linear warmup steps (0: none).
    min_lr_ratio: the rate at ``total_steps`` as a fraction of the peak (0: decay to 0).
    max_grad_norm: global-norm clipping threshold; 0 disables (Kron keeps clipping, spec §2.3).
    eps: Adam-family epsilon (PPO's 1e-5, spec §2.5).
    b1: first-moment / momentum coefficient (all optimizers).
    b2: second-moment coefficient (Adam family; Kron has none).
    weight_decay: decoupled weight decay ("adamw", "kron"); must be 0 for adam/radam.
    decay_mask: which leaves weight decay applies to: "all", or "matrices" (:func:`matrices`).
    kron_lr_scale: the Kron lr rule (default 1/3).
    kron_kwargs: extra arguments of ``scale_by_kron`` (preconditioner settings).

  Returns:
    :class:`Optimizer` ``(tx, lr)``.

  Raises:
    ValueError: unknown name, schedule or decay mask, a schedule without the ``total_steps``
      it needs, weight decay on an optimizer without it.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer name={name!r} is not valid; expected one of "
                     f"{', '.join(OPTIMIZERS)}")
  if decay_mask not in DECAY_MASKS:
    raise ValueError(f"decay_mask={decay_mask!r} is not valid; expected one of "
                     f"{', '.join(DECAY_MASKS)}")
  if weight_decay and name in ("adam", "radam"):
    raise ValueError(f"weight_decay={weight_decay} needs a decoupled-decay optimizer "
                     f"(adamw or kron), not {name}")
  base = learning_rate * (kron_lr_scale if name == "kron" else 1.0)
  lr = make_schedule(base, schedule, total_steps=total_steps, warmup_steps=warmup_steps,
                     min_lr_ratio=min_lr_ratio)
  mask = matrices if decay_mask == "matrices" else None
  if name == "adam":
    opt = optax.adam(lr, b1=b1, b2=b2, eps=eps)
  elif name == "adamw":
    opt = optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
  elif name == "radam":
    opt = optax.radam(lr, b1=b1, b2=b2, eps=eps)
  else:
    opt = kron(lr, b1=b1, weight_decay=weight_decay, weight_decay_mask=mask,
               **(kron_kwargs or {}))
  chain = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm > 0 else []
  return Optimizer(optax.chain(*chain, opt), lr)


def default_config(name: str = "adam", eps: float = 1e-8) -> ml_collections.ConfigDict:
  """The ``config.optimizer`` group (the lr, its schedule and clipping stay top-level keys)."""
  return ml_collections.ConfigDict(dict(
      name=name, eps=eps, b1=0.9, b2=0.999, weight_decay=0.0,
      kron=ml_collections.ConfigDict(dict(
          lr_scale=KRON_LR_SCALE,        # spec §2.3: lr / 3
          precond_lr=0.1,
          init_scale=1.0,
          max_size_triangular=8192,
          min_ndim_triangular=2,
          memory_save_mode="",           # "", "one_diag", "all_diag"
          merge_dims=True,               # conv kernels as kron_torch 0.3.1+'s matrices
          update_prob_min=0.03,          # refit schedule: 1 for flat_start steps, then
          update_prob_decay=0.001,       # exp(-decay (t - flat_start)) down to min
          update_prob_flat_start=500,
      )),
  ))


def check_group(c: ml_collections.ConfigDict) -> None:
  """Checks the ``config.optimizer`` group alone; failures name the key."""
  require_choice(c, "optimizer.name", OPTIMIZERS)
  o = c.optimizer
  require(o.eps > 0, f"'config.optimizer.eps' must be > 0, got {o.eps}")
  for key in ("b1", "b2"):
    require(0 <= o[key] < 1, f"'config.optimizer.{key}' must be in [0, 1), got {o[key]}")
  require(o.weight_decay >= 0, f"'config.optimizer.weight_decay' must be >= 0, got "
          f"{o.weight_decay}")
  require(o.weight_decay == 0 or o.name in ("adamw", "kron"),
          f"'config.optimizer.weight_decay'={o.weight_decay} needs optimizer.name adamw or kron, "
          f"got {o.name!r}")
  k = o.kron
  require_choice(c, "optimizer.kron.memory_save_mode", ("", "one_diag", "all_diag"))
  require(k.lr_scale > 0, f"'config.optimizer.kron.lr_scale' must be > 0, got {k.lr_scale}")
  require(k.precond_lr > 0, f"'config.optimizer.kron.precond_lr' must be > 0, got "
          f"{k.precond_lr}")
  require(0 < k.update_prob_min <= 1, f"'config.optimizer.kron.update_prob_min' must be in "
          f"(0, 1], got {k.update_prob_min}")
  require(k.max_size_triangular >= 1, "'config.optimizer.kron.max_size_triangular' must be >= 1")


def check_config(c: ml_collections.ConfigDict) -> None:
  """Checks ``config.optimizer`` and the top-level lr keys of :func:`from_config`."""
  check_group(c)
  require_choice(c, "lr_schedule", SCHEDULES)
  require(c.learning_rate > 0, f"'config.learning_rate' must be > 0, got {c.learning_rate}")


def from_group(o: ml_collections.ConfigDict, learning_rate: float,
               **schedule_and_clipping: Any) -> Optimizer:
  """:func:`make_optimizer` from a ``config.optimizer`` group (:func:`default_config`).

  Args:
    o: the group.
    learning_rate: the base learning rate (trainers with several optimizers, e.g. SAC's actor
      and critic, pass each its own).
    **schedule_and_clipping: ``schedule``, ``total_steps``, ``warmup_steps``,
      ``min_lr_ratio``, ``max_grad_norm`` of :func:`make_optimizer`.
  """
  k = o.kron
  kron_kwargs = dict(
      preconditioner_update_probability=precond_update_prob_schedule(
          1.0, k.update_prob_min, k.update_prob_decay, k.update_prob_flat_start),
      max_size_triangular=k.max_size_triangular, min_ndim_triangular=k.min_ndim_triangular,
      memory_save_mode=k.memory_save_mode or None, preconditioner_lr=k.precond_lr,
      preconditioner_init_scale=k.init_scale, merge_dims=k.merge_dims)
  return make_optimizer(o.name, learning_rate, eps=o.eps, b1=o.b1, b2=o.b2,
                        weight_decay=o.weight_decay, kron_lr_scale=k.lr_scale,
                        kron_kwargs=kron_kwargs, **schedule_and_clipping)


def from_config(c: ml_collections.ConfigDict, total_steps: int) -> Optimizer:
  """:func:`from_group` on ``c.optimizer`` with ``c.learning_rate``, ``c.lr_schedule`` and
  ``c.max_grad_norm``; ``total_steps`` is the number of optimizer steps of the run."""
  return from_group(c.optimizer, c.learning_rate, schedule=c.lr_schedule,
                    total_steps=total_steps, max_grad_norm=c.max_grad_norm)


__all__ = ["DECAY_MASKS", "KRON_LR_SCALE", "KronState", "OPTIMIZERS", "Optimizer", "SCHEDULES",
           "check_config", "check_group", "default_config", "from_config", "from_group", "kron",
           "make_optimizer", "make_schedule", "matrices", "precond_update_prob_schedule",
           "scale_by_kron"]
