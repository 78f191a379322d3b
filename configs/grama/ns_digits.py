"""GraMa / ReGraMa vs ReDo on non-stationary digits (spec rl.md §4, §7.1 item 3c; issue 16).

    python -m launch.train --config=configs/grama/ns_digits.py --workdir=runs/grama/ns_digits
    python -m launch.ns_phases --workdir=runs/grama/ns_digits \
        --label="ns_digits@sigreg=0,lr=0.001,reset=none:no reset" \
        --label="ns_digits@sigreg=0,lr=0.001,reset=redo:ReDo" \
        --label="ns_digits@sigreg=0,lr=0.001,reset=regrama:ReGraMa"

The plasticity setting of configs/stable_gradients/ns_digits.py:plain12 (a plain ReLU MLP of 12
hidden layers, width 256, 64-d trunk output; sklearn's digits with labels re-permuted every 10
epochs, 60 epochs, Adam 1e-3, batch 128), where the network measurably loses plasticity, with
three arms trained side by side in one program (same initial parameters and minibatches per
seed): no reset, ReDo (dormant score <= 0.02) and ReGraMa (GraMa score <= 0.01), resets of the
trunk's neurons every 50 SGD steps (5 epochs); the classifier layer is never reset. 5 seeds
vmapped. Part (variant after the colon): ``plain12`` (default) or ``plain8``.
Pre-registered criteria and results: docs/reproductions/grama.md.
"""

import os

from jaxlab.core.config import load_file


def get_config(variant: str = "plain12"):
  if variant not in ("plain12", "plain8"):
    raise ValueError(f"unknown variant {variant!r}; choose plain12 or plain8")
  # Loaded by path, so the file works wherever the launcher or a test imports it from.
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "stable_gradients", "ns_digits.py")
  c = load_file(path, variant)
  c.arms.reset_methods = ("none", "redo", "regrama")
  c.reset.every = 50
  c.reset.redo_tau = 0.02
  c.reset.regrama_tau = 0.01
  c.num_seeds = 5
  return c
