"""Representation diagnostics and neuron resets (spec rl.md §4, §5, §6).

* ``layers``: ``NeuronLayer`` (where a layer's neurons live and who reads them) and
  ``mlp_layers`` / ``bronet_layers`` / ``trunk_layers`` to derive them from ``jaxlab.nets``
  trunks.
* ``metrics``: dormant ratio (ReDo), GraMa ratio (paper and code forms), FAU, srank, effective
  rank, feature rank, feature norm, per-layer gradient norm and cosine, churn; ``probe`` (one
  forward/backward pass for features and per-sample feature gradients) and ``network_health``
  (all of it as a flat dict of scalars for logging).
* ``sigreg``: the SIGReg statistic (spec §1.3 LeJEPA form, §1.4 RL form), an auxiliary loss
  that pushes a representation towards N(0, I).
* ``resets``: ReDo / ReGraMa masks, the reset engine (parameters and optax moments) and
  ``maybe_reset`` for jitted loops.
"""

from jaxlab.representations.layers import NeuronLayer
from jaxlab.representations.layers import bronet_layers
from jaxlab.representations.layers import OUTGOING_MODES
from jaxlab.representations.layers import linear_paths
from jaxlab.representations.layers import mlp_layers
from jaxlab.representations.layers import trunk_layers
from jaxlab.representations.metrics import Probe
from jaxlab.representations.metrics import active_fraction
from jaxlab.representations.metrics import argmax_churn
from jaxlab.representations.metrics import churn
from jaxlab.representations.metrics import dormant_ratio
from jaxlab.representations.metrics import dormant_scores
from jaxlab.representations.metrics import effective_rank
from jaxlab.representations.metrics import feature_norm
from jaxlab.representations.metrics import feature_rank
from jaxlab.representations.metrics import grad_cosine
from jaxlab.representations.metrics import grad_norm
from jaxlab.representations.metrics import grama_scores
from jaxlab.representations.metrics import grama_weight_scores
from jaxlab.representations.metrics import kernel_grad_norms
from jaxlab.representations.metrics import kernel_grads
from jaxlab.representations.metrics import network_health
from jaxlab.representations.metrics import pca_rank
from jaxlab.representations.metrics import preactivation_grad
from jaxlab.representations.metrics import probe
from jaxlab.representations.metrics import probe_and_grads
from jaxlab.representations.metrics import rankme
from jaxlab.representations.metrics import ratio
from jaxlab.representations.metrics import singular_values
from jaxlab.representations.metrics import srank
from jaxlab.representations.metrics import when_due
from jaxlab.representations.resets import MOMENT_FIELDS
from jaxlab.representations.resets import cap_mask
from jaxlab.representations.resets import fresh_layer_params
from jaxlab.representations.resets import mask_counts
from jaxlab.representations.resets import maybe_reset
from jaxlab.representations.resets import redo_masks
from jaxlab.representations.resets import regrama_masks
from jaxlab.representations.resets import regrama_weight_masks
from jaxlab.representations.resets import reset_neurons
from jaxlab.representations.sigreg import SIGRegOut
from jaxlab.representations.sigreg import sigreg_loss
from jaxlab.representations.sigreg import sigreg_statistic

__all__ = [
  "MOMENT_FIELDS",
  "NeuronLayer",
  "OUTGOING_MODES",
  "Probe",
  "SIGRegOut",
  "active_fraction",
  "argmax_churn",
  "bronet_layers",
  "cap_mask",
  "churn",
  "dormant_ratio",
  "dormant_scores",
  "effective_rank",
  "feature_norm",
  "feature_rank",
  "fresh_layer_params",
  "grad_cosine",
  "grad_norm",
  "grama_scores",
  "grama_weight_scores",
  "kernel_grad_norms",
  "kernel_grads",
  "linear_paths",
  "mask_counts",
  "maybe_reset",
  "mlp_layers",
  "network_health",
  "pca_rank",
  "preactivation_grad",
  "probe",
  "probe_and_grads",
  "rankme",
  "ratio",
  "redo_masks",
  "regrama_masks",
  "regrama_weight_masks",
  "reset_neurons",
  "sigreg_loss",
  "sigreg_statistic",
  "singular_values",
  "srank",
  "trunk_layers",
  "when_due",
]
