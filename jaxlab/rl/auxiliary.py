"""Auxiliary representation losses that any trainer adds through ``config.aux`` (spec rl.md §1).

Today one: SIGReg (spec §1.4) on a network's representation, the trunk output that its head
reads. The trainer computes its representations in the same forward pass as its RL loss (so the
gradient of ``weight * L_SIG`` flows through the trunk and encoder, as in the paper's code),
passes them here with a fresh key per minibatch, and adds the returned term to its loss::

    c.aux = auxiliary.default_config()        # in the trainer's default_config()
    auxiliary.check_config(c)                 # in its check_config()
    term, metrics = auxiliary.sigreg_term({"q": z}, key, c.aux.sigreg)
    loss = rl_loss + term                     # term is already weighted; 0 when weight == 0

``λ`` is relative to the paper's own loss: a trainer whose RL loss is a multiple of the
paper's (PQN's ½ MSE against the reference's MSE) scales the term the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections

from jaxlab.core.config import require, require_choice
from jaxlab.representations import sigreg as sigreg_lib


def default_config() -> ml_collections.ConfigDict:
  """The ``config.aux`` group: every auxiliary loss, off by default."""
  return ml_collections.ConfigDict(dict(sigreg=ml_collections.ConfigDict(dict(
      weight=0.0,      # λ in L = L_RL + λ L_SIG; the paper sweeps {0, 0.2, 1.0} (spec §1.4)
      form="rl",       # "rl" (spec §1.4, the paper's RL code) or "lejepa" (spec §1.3)
      num_slices=16,   # random unit directions, redrawn every minibatch
      num_t=0,         # points on the t grid; 0 = the form's default (8 for rl, 17 for lejepa)
      t_max=0.0,       # grid bound; 0 = the form's default (5 for rl, 3 for lejepa)
  ))))


def check_config(c: ml_collections.ConfigDict) -> None:
  """Checks ``config.aux``; a SIGReg weight also needs a network with a trunk."""
  s = c.aux.sigreg
  require(s.weight >= 0, f"'config.aux.sigreg.weight' must be >= 0, got {s.weight}")
  require_choice(c, "aux.sigreg.form", sigreg_lib.FORMS)
  require(s.num_slices >= 1, f"'config.aux.sigreg.num_slices' must be >= 1, got {s.num_slices}")
  require(s.num_t == 0 or s.num_t >= 2,
          f"'config.aux.sigreg.num_t' must be 0 (the form's default) or >= 2, got {s.num_t}")
  require(s.t_max >= 0, f"'config.aux.sigreg.t_max' must be >= 0 (0: the form's default), got "
          f"{s.t_max}")
  if s.weight > 0:
    require(c.network.kind != "none",
            f"'config.aux.sigreg.weight'={s.weight} regularises the trunk output, but "
            f"'config.network.kind'='none' builds no trunk; choose plain/residual/multiskip or "
            f"set the weight to 0")
    # Spec §1.4: in RL, Z is the trunk's output layer before any activation. Without an
    # output layer the representation is the last hidden layer after its activation (ReLU
    # features cannot be an isotropic Gaussian), or a residual stream.
    require(s.get("after_activation", False) or c.network.get("trunk_out", 0) > 0,
            f"'config.aux.sigreg.weight'={s.weight} regularises the trunk's output layer "
            f"(before the activation, spec §1.4), but 'config.network.trunk_out'=0 gives none; "
            f"set it (the paper: 512) or the weight to 0")


def sigreg_term(representations: Mapping[str, jax.Array], key: jax.Array,
                cfg: ml_collections.ConfigDict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """``weight * Σ_nets L_SIG(z_net)`` and its metrics, each net with its own fresh directions.

  A network with one shared trunk passes one representation. PPO's separate actor and critic
  trunks pass two; each then receives the same gradient ``λ ∇L_SIG`` as the shared trunk does in
  the paper's code, which is why the terms are summed, not averaged.

  Args:
    representations: ``{net name: z [..., D]}``; leading axes are the minibatch.
    key: PRNG key, fresh for this minibatch (spec §1.4 step 1).
    cfg: the ``config.aux.sigreg`` group.

  Returns:
    ``(term, metrics)``: the weighted scalar to add to the loss (exactly 0.0 when the weight is
    0, without computing anything), and ``{"loss/sigreg": mean over nets of L_SIG,
    "loss/sigreg_real", "loss/sigreg_imag", "loss/sigreg/<net>" per net}`` (empty when off).
  """
  if cfg.weight == 0:
    return jnp.zeros((), jnp.float32), {}
  keys = jax.random.split(key, len(representations))
  outs = {name: sigreg_lib.sigreg_loss(z, k, form=cfg.form, num_slices=cfg.num_slices,
                                       num_t=cfg.num_t or None, t_max=cfg.t_max or None)
          for (name, z), k in zip(sorted(representations.items()), keys)}
  total = sum(o.loss for o in outs.values())
  n = len(outs)
  metrics = {
      "loss/sigreg": total / n,
      "loss/sigreg_real": sum(o.real for o in outs.values()) / n,
      "loss/sigreg_imag": sum(o.imag for o in outs.values()) / n,
  }
  if n > 1:
    metrics.update({f"loss/sigreg/{name}": o.loss for name, o in outs.items()})
  return cfg.weight * total, metrics
