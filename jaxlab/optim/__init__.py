"""Optimizers by name, for every trainer's ``config.optimizer`` group (spec rl.md §2.3, §6).

    tx, lr = make_optimizer("radam", 2.5e-4, schedule="linear", total_steps=n, max_grad_norm=10)
    tx, lr = optim.from_config(c, total_steps=n)   # c.optimizer, c.learning_rate, ...

``name`` is one of ``adam``, ``adamw``, ``radam`` (optax) or ``kron`` (``jaxlab.optim.psgd``, our
PSGD Kron). The Kron learning-rate rule of the papers' code (spec §2.3: "lr = default lr / 3",
following the kron_torch README) is applied here, as ``kron_lr_scale`` (default 1/3) times the
configured learning rate, so an experiment switches optimizer by changing ``name`` alone; the
returned schedule is the effective one (log it).
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections
import optax

from jaxlab.core.config import require, require_choice
from jaxlab.optim.psgd import KronState
from jaxlab.optim.psgd import kron
from jaxlab.optim.psgd import precond_update_prob_schedule
from jaxlab.optim.psgd import scale_by_kron

OPTIMIZERS = ("adam", "adamw", "radam", "kron")
SCHEDULES = ("constant", "linear")
KRON_LR_SCALE = 1.0 / 3.0  # spec §2.3: Kron runs use the base algorithm's lr divided by 3


class Optimizer(NamedTuple):
  """``tx``: the optax transformation (clipping included); ``lr``: step -> effective lr."""
  tx: optax.GradientTransformation
  lr: optax.Schedule


def make_optimizer(name: str, learning_rate: float, *, schedule: str = "constant",
                   total_steps: int | None = None, max_grad_norm: float = 0.0,
                   eps: float = 1e-8, b1: float = 0.9, b2: float = 0.999,
                   weight_decay: float = 0.0, kron_lr_scale: float = KRON_LR_SCALE,
                   kron_kwargs: dict | None = None) -> Optimizer:
  """Builds ``[clip_by_global_norm] -> optimizer`` with a constant or linearly decaying lr.

  Args:
    name: "adam" | "adamw" | "radam" | "kron".
    learning_rate: the base learning rate (for "kron", multiplied by ``kron_lr_scale``).
    schedule: "constant", or "linear" from the lr to 0 over ``total_steps``.
    total_steps: optimizer steps of the run (needed by "linear").
    max_grad_norm: global-norm clipping threshold; 0 disables (Kron keeps clipping, spec §2.3).
    eps: Adam-family epsilon (PPO's 1e-5, spec §2.5).
    b1: first-moment / momentum coefficient (all optimizers).
    b2: second-moment coefficient (Adam family; Kron has none).
    weight_decay: decoupled weight decay ("adamw", "kron"); must be 0 for adam/radam.
    kron_lr_scale: the Kron lr rule (default 1/3).
    kron_kwargs: extra arguments of ``scale_by_kron`` (preconditioner settings).

  Returns:
    :class:`Optimizer` ``(tx, lr)``.

  Raises:
    ValueError: unknown name or schedule, a linear schedule without ``total_steps``, weight
      decay on an optimizer without it.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer name={name!r} is not valid; expected one of "
                     f"{', '.join(OPTIMIZERS)}")
  if schedule not in SCHEDULES:
    raise ValueError(f"lr schedule={schedule!r} is not valid; expected one of "
                     f"{', '.join(SCHEDULES)}")
  if weight_decay and name in ("adam", "radam"):
    raise ValueError(f"weight_decay={weight_decay} needs a decoupled-decay optimizer "
                     f"(adamw or kron), not {name}")
  base = learning_rate * (kron_lr_scale if name == "kron" else 1.0)
  if schedule == "linear":
    if not total_steps:
      raise ValueError("a linear lr schedule needs total_steps")
    lr = optax.linear_schedule(base, 0.0, total_steps)
  else:
    lr = optax.constant_schedule(base)
  if name == "adam":
    opt = optax.adam(lr, b1=b1, b2=b2, eps=eps)
  elif name == "adamw":
    opt = optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
  elif name == "radam":
    opt = optax.radam(lr, b1=b1, b2=b2, eps=eps)
  else:
    opt = kron(lr, b1=b1, weight_decay=weight_decay, **(kron_kwargs or {}))
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
          update_prob_min=0.03,          # refit schedule: 1 for flat_start steps, then
          update_prob_decay=0.001,       # exp(-decay (t - flat_start)) down to min
          update_prob_flat_start=500,
      )),
  ))


def check_config(c: ml_collections.ConfigDict) -> None:
  """Checks ``config.optimizer`` (and the top-level lr keys); failures name the key."""
  require_choice(c, "optimizer.name", OPTIMIZERS)
  require_choice(c, "lr_schedule", SCHEDULES)
  o = c.optimizer
  require(c.learning_rate > 0, f"'config.learning_rate' must be > 0, got {c.learning_rate}")
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


def from_config(c: ml_collections.ConfigDict, total_steps: int) -> Optimizer:
  """:func:`make_optimizer` from ``c.optimizer``, ``c.learning_rate``, ``c.lr_schedule`` and
  ``c.max_grad_norm``; ``total_steps`` is the number of optimizer steps of the run."""
  o, k = c.optimizer, c.optimizer.kron
  kron_kwargs = dict(
      preconditioner_update_probability=precond_update_prob_schedule(
          1.0, k.update_prob_min, k.update_prob_decay, k.update_prob_flat_start),
      max_size_triangular=k.max_size_triangular, min_ndim_triangular=k.min_ndim_triangular,
      memory_save_mode=k.memory_save_mode or None, preconditioner_lr=k.precond_lr,
      preconditioner_init_scale=k.init_scale)
  return make_optimizer(o.name, c.learning_rate, schedule=c.lr_schedule, total_steps=total_steps,
                        max_grad_norm=c.max_grad_norm, eps=o.eps, b1=o.b1, b2=o.b2,
                        weight_decay=o.weight_decay, kron_lr_scale=k.lr_scale,
                        kron_kwargs=kron_kwargs)


__all__ = ["KRON_LR_SCALE", "KronState", "OPTIMIZERS", "Optimizer", "check_config",
           "default_config", "from_config", "kron", "make_optimizer",
           "precond_update_prob_schedule", "scale_by_kron"]
