"""Representation and plasticity diagnostics (spec rl.md §4.1, §4.2, §5).

Every function is pure and traceable: use it inside ``jit``, ``vmap`` over seeds and ``scan``.
Inputs are

* features: ``{layer name: [..., H]}`` as returned by ``MLP(x, return_features=True)``; all
  leading axes are batch axes (expectations over x are means over them);
* feature gradients: the same dict of per-sample gradients of the loss, from :func:`probe`;
* parameter gradients: the ``grads`` pytree the update already computed (same structure as
  the params), addressed through ``NeuronLayer.path`` (see ``layers.py``).

Conventions
-----------
* Neuron scores are normalised by their layer mean, ``s_i = q_i / (mean_k q_k + 1e-9)``
  (spec §4.1 and §4.2; 1e-9 is the reference code's guard, and makes an all-zero layer score 0
  everywhere instead of NaN).
* A neuron is flagged when ``s_i <= tau`` (the spec's ``≤``, both for dormancy and for GraMa).
  At ``tau = 0`` this flags exactly the neurons whose statistic is exactly zero: a ReLU unit
  that outputs 0 on the whole batch, or one whose every per-sample gradient is exactly 0. We do
  not use the ``isclose(s, 0)`` tolerance of the JAX logging port (§4.2): a strict ``<`` would
  flag nothing at ``tau = 0``, and a tolerance would flag alive-but-small units. Exact zeros are
  what ReLU produces (its output and derivative are exactly 0 for negative inputs), so the
  exact test is reliable in float32.
* Ratios are fractions in [0, 1] (papers report %). Network ratios pool the neurons of all
  scored layers (flagged neurons / neurons).

GraMa, two named forms (spec §4.2)
----------------------------------
* ``grama`` (paper, Eq. 2): ``q_i = E_x |δ_i(x)|`` with δ_i the per-sample gradient of the loss
  at neuron i's pre-activation, i.e. at the input of its nonlinearity. This reading is the one
  for which the paper's proposition holds (a τ=0-dormant ReLU unit has δ = ReLU'(·) ∂L/∂h = 0);
  the gradient at the post-activation output ∂L/∂h is generally non-zero for a dead unit (it is
  what flows *past* it). ``MLP`` taps post-activation features, so :func:`probe` obtains ∂L/∂h by
  differentiating zero perturbations and maps it back through the activation, whose derivative
  it recovers from the activation's output (ReLU, leaky ReLU, tanh). For layers without their
  own activation (residual stream writers, "out") δ = ∂L/∂h. With LayerNorm, δ is taken after
  the norm (at the activation input), not at the Linear output.
* ``grama_w`` (official code): ``q_i = mean over incoming weights of |∂L/∂W|``, i.e.
  ``mean(|g|, axis=all but last)`` of the kernel gradient ([in, out] Linear, [kh, kw, in, out]
  Conv). It needs no extra pass. ∂L/∂W = Σ_b x_b δ_b sums over the batch before the absolute
  value, and with LayerNorm its δ is the gradient at the Linear output (before the norm), which
  LayerNorm couples across units: a unit whose post-norm ReLU is dead still receives a weight
  gradient, so on LN networks the τ=0 subset property of the paper form does not hold for this
  form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlab.core import batching
from jaxlab.representations.layers import NeuronLayer
from jaxlab.representations.layers import flatten
from jaxlab.representations.layers import get

SCORE_EPS = 1e-9

# Activations whose derivative is a function of their output, so that δ = act'(u) ∂L/∂h can be
# formed from the tapped (post-activation) feature h = act(u) alone.
_DERIVATIVE_FROM_OUTPUT: dict[str, Callable[[jax.Array], jax.Array]] = {
  # jax.nn.relu has derivative 0 at u = 0; h > 0 iff u > 0, so this matches it exactly.
  "relu": lambda h: (h > 0).astype(h.dtype),
  # jax.nn.leaky_relu is where(u >= 0, u, 0.01 u): h >= 0 iff u >= 0.
  "leaky_relu": lambda h: jnp.where(h >= 0, 1.0, 0.01).astype(h.dtype),
  "tanh": lambda h: 1.0 - h * h,
}


# ---------------------------------------------------------------------------------------------
# Neuron scores and ratios.


def _batch_mean_abs(x: jax.Array) -> jax.Array:
  """[..., H] -> [H]: mean of |x| over all leading (batch) axes."""
  return jnp.mean(jnp.abs(x.reshape(-1, x.shape[-1])), axis=0)


def normalize_scores(q: jax.Array, eps: float = SCORE_EPS) -> jax.Array:
  """[H] -> [H]: ``q_i / (mean_k q_k + eps)`` (spec §4.1 denominator)."""
  return q / (jnp.mean(q) + eps)


def flagged(scores: jax.Array, tau: float) -> jax.Array:
  """[H] -> bool [H]: ``scores <= tau`` (see the module docstring for why ``<=``)."""
  return scores <= tau


def ratio(scores: jax.Array, tau: float) -> jax.Array:
  """Fraction of neurons with ``score <= tau``; scalar in [0, 1]."""
  return jnp.mean(flagged(scores, tau).astype(jnp.float32))


def dormant_scores(h: jax.Array) -> jax.Array:
  """ReDo τ-dormant scores (spec §4.1).

  Args:
    h: [..., H] post-activation feature of one layer over a batch.

  Returns:
    [H] ``E|h_i| / mean_k E|h_k|``.
  """
  return normalize_scores(_batch_mean_abs(h))


def dormant_ratio(h: jax.Array, tau: float = 0.02) -> jax.Array:
  """Fraction of τ-dormant neurons of one layer; h: [..., H] -> scalar."""
  return ratio(dormant_scores(h), tau)


def grama_scores(delta: jax.Array) -> jax.Array:
  """GraMa scores, paper form (Eq. 2).

  Args:
    delta: [..., H] per-sample gradients of the loss at the layer's pre-activations (the
      ``feature_grads`` of :func:`probe`).

  Returns:
    [H] ``E|δ_i| / mean_k E|δ_k|``.
  """
  return normalize_scores(_batch_mean_abs(delta))


def grama_weight_scores(kernel_grad: jax.Array) -> jax.Array:
  """GraMa scores, official-code form (spec §4.2): from the kernel gradient.

  Args:
    kernel_grad: [..., in, out] gradient of a Linear ([in, out]) or Conv ([kh, kw, in, out])
      kernel.

  Returns:
    [out] ``mean_{incoming}|∂L/∂W| / (mean over neurons + 1e-9)``.
  """
  q = jnp.mean(jnp.abs(kernel_grad.reshape(-1, kernel_grad.shape[-1])), axis=0)
  return normalize_scores(q)


def active_fraction(h: jax.Array) -> jax.Array:
  """FAU (spec §5, LEAST): share of units with post-activation > 0, averaged over the batch.

  Args:
    h: [..., H] post-activation feature.

  Returns:
    scalar ``mean_{b, i} 1[h_{b,i} > 0]``.
  """
  return jnp.mean((h > 0).astype(jnp.float32))


def preactivation_grad(h: jax.Array, dh: jax.Array, activation: str | None) -> jax.Array:
  """δ = act'(u) ∂L/∂h from the activation output h = act(u) (see module docstring).

  Args:
    h: [..., H] the layer's feature (post-activation if ``activation`` is set).
    dh: [..., H] ∂L/∂h, per sample.
    activation: the activation that produced h, or None (then δ = dh).

  Returns:
    [..., H] δ.

  Raises:
    ValueError: for activations whose derivative is not a function of their output (silu,
      gelu); use the weight form ``grama_w`` for those nets.
  """
  if activation is None:
    return dh
  if activation not in _DERIVATIVE_FROM_OUTPUT:
    raise ValueError(
      f"the paper-form GraMa needs the pre-activation gradient, which cannot be recovered "
      f"from the output of {activation!r}; supported: {sorted(_DERIVATIVE_FROM_OUTPUT)}. Use "
      "the weight-gradient form (grama_weight_scores / regrama_weight_masks) instead.")
  return _DERIVATIVE_FROM_OUTPUT[activation](h) * dh


# ---------------------------------------------------------------------------------------------
# Probing a network: features and per-sample feature gradients from one forward/backward pass.


class Probe(NamedTuple):
  """Result of :func:`probe` (a pytree: return it from jitted code).

  Attributes:
    loss: the scalar loss.
    features: ``{name: [..., H]}`` per-layer features.
    output_grads: ``{name: [..., H]}`` ∂L/∂feature per sample (gradient past the neuron).
    feature_grads: ``{name: [..., H]}`` δ, ∂L/∂(pre-activation) per sample (paper GraMa input),
      for the probed layers only; equal to ``output_grads`` for layers without an activation.
    aux: whatever ``fn`` returned besides the features (``has_aux=True``), else None.
  """
  loss: jax.Array
  features: dict[str, jax.Array]
  output_grads: dict[str, jax.Array]
  feature_grads: dict[str, jax.Array]
  aux: Any


def probe(fn: Callable[[Mapping[str, jax.Array] | None], Any], layers: Sequence[NeuronLayer],
          *, has_aux: bool = False) -> Probe:
  """Features and per-sample feature gradients from one forward and one backward pass.

  ``fn(perturbations)`` must run the network with ``perturbations`` passed to
  ``MLP.__call__(..., return_features=True, perturbations=...)`` and return ``(loss,
  features)``, or ``(loss, (features, aux))`` with ``has_aux=True`` (e.g. the trunk output as the
  representation). It must accept ``None``: it is traced once abstractly (``jax.eval_shape``, no
  computation) to learn the feature shapes.

  Args:
    fn: see above.
    layers: the network's ``NeuronLayer``s. Their activations map ∂L/∂h back to δ
      (``preactivation_grad``); ``feature_grads`` holds only these layers, since for any other
      feature the activation is unknown. Use the same layers for ``regrama_masks`` and
      ``reset_neurons``.
    has_aux: whether ``fn`` returns ``(loss, (features, aux))``.

  Returns:
    A :class:`Probe`.
  """
  return _probe(lambda _, p: fn(p), None, layers, has_aux)[0]


def probe_and_grads(loss_fn: Callable[[Any, Mapping[str, jax.Array] | None], Any], params: Any,
                    layers: Sequence[NeuronLayer], *,
                    has_aux: bool = False) -> tuple[Probe, Any]:
  """:func:`probe` plus the parameter gradients, from the same forward/backward pass.

  For an update step that logs health: replace ``jax.value_and_grad(loss)(params)`` by this
  and use ``grads`` for the optimizer; the diagnostics then cost no extra pass.

  Args:
    loss_fn: ``loss_fn(params, perturbations) -> (loss, features)`` (or ``(loss, (features,
      aux))`` with ``has_aux``); must accept ``perturbations=None``.
    params: the parameters to differentiate.
    layers: as in :func:`probe`.
    has_aux: as in :func:`probe`.

  Returns:
    ``(Probe, grads)`` with ``grads`` shaped like ``params``.
  """
  return _probe(loss_fn, params, layers, has_aux)


def _probe(loss_fn, params, layers, has_aux):
  def split(out):
    loss, rest = out
    return (loss,) + (tuple(rest) if has_aux else (rest, None))

  shapes = split(jax.eval_shape(lambda: loss_fn(params, None)))[1]
  zeros = {name: jnp.zeros(s.shape, s.dtype) for name, s in shapes.items()}

  def wrapped(params, perturbations):
    loss, features, aux = split(loss_fn(params, perturbations))
    return loss, (dict(features), aux)

  (loss, (features, aux)), (grads, output_grads) = jax.value_and_grad(
    wrapped, argnums=(0, 1), has_aux=True)(params, zeros)
  output_grads = dict(output_grads)
  feature_grads = {
    layer.name: preactivation_grad(features[layer.name], output_grads[layer.name],
                                   layer.activation)
    for layer in layers if layer.name in output_grads}
  return Probe(loss, features, output_grads, feature_grads, aux), grads


# ---------------------------------------------------------------------------------------------
# Ranks of a feature matrix (spec §5). phi: [..., d]; leading axes are flattened into n rows.


# Under vmap (seeds, arms) one SVD per batch element, in sequence: two batched SVDs at once
# (e.g. the SVDs of two metrics) hung XLA:CPU on 2 cores (see jaxlab.core.batching).
_svdvals = batching.sequential(lambda a: jnp.linalg.svd(a, compute_uv=False))


def singular_values(phi: jax.Array) -> jax.Array:
  """[..., d] -> [min(n, d)] singular values, descending, of the [n, d] feature matrix."""
  phi = phi.reshape(-1, phi.shape[-1]).astype(jnp.float32)
  return _svdvals(phi)


def _smallest_k_reaching(values: jax.Array, fraction: float) -> jax.Array:
  """Smallest k with ``sum(values[:k]) >= fraction * sum(values)`` (values descending)."""
  c = jnp.cumsum(values)
  return (jnp.sum(c < fraction * c[-1]) + 1).astype(jnp.int32)


def srank(phi: jax.Array, delta: float = 0.01) -> jax.Array:
  """Kumar et al. 2020: smallest k with Σ_{i≤k} σ_i ≥ (1 − δ) Σ_i σ_i (int32 scalar)."""
  return _smallest_k_reaching(singular_values(phi), 1.0 - delta)


def pca_rank(phi: jax.Array, explained: float = 0.99) -> jax.Array:
  """Number of components explaining ``explained`` of Σσ² (int32 scalar)."""
  return _smallest_k_reaching(singular_values(phi) ** 2, explained)


def effective_rank(phi: jax.Array) -> jax.Array:
  """Roy & Vetterli: exp(−Σ p log p), p = σ / Σσ (0 log 0 = 0; the zero matrix gives 1)."""
  s = singular_values(phi)
  p = s / jnp.maximum(jnp.sum(s), jnp.finfo(s.dtype).tiny)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return jnp.exp(entropy)


def feature_rank(phi: jax.Array, threshold: float = 0.01) -> jax.Array:
  """Lyle et al. 2022: #{i : σ_i / √n > threshold} (int32 scalar)."""
  n = phi.reshape(-1, phi.shape[-1]).shape[0]
  return jnp.sum(singular_values(phi) / jnp.sqrt(float(n)) > threshold).astype(jnp.int32)


def rankme(phi: jax.Array, eps: float = 1e-6) -> jax.Array:
  """RankMe-style (spec §5): λ = eig(ΦᵀΦ/n) = σ²/n, p = λ/Σλ + eps, exp(H(p))."""
  n = phi.reshape(-1, phi.shape[-1]).shape[0]
  lam = singular_values(phi) ** 2 / n
  p = lam / jnp.maximum(jnp.sum(lam), jnp.finfo(lam.dtype).tiny) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))


def feature_norm(phi: jax.Array) -> jax.Array:
  """mean_b ‖φ_b‖₂ over the batch; phi: [..., d] -> scalar."""
  phi = phi.reshape(-1, phi.shape[-1]).astype(jnp.float32)
  return jnp.mean(jnp.linalg.norm(phi, axis=-1))


# ---------------------------------------------------------------------------------------------
# Gradients per layer and churn.


def kernel_grads(grads: Any, layers: Sequence[NeuronLayer]) -> dict[str, jax.Array]:
  """``{layer name: kernel gradient}`` from a grads pytree shaped like the params.

  The compact thing a trainer carries to the next logging step for :func:`grad_cosine`.
  """
  flat = flatten(grads)
  return {layer.name: get(flat, layer.path + ("kernel",), "kernel gradient")
          for layer in layers}


def kernel_grad_norms(grads: Any, prefix: str = "") -> dict[str, jax.Array]:
  """Frobenius norm of every kernel gradient in a pytree, keyed by its module path.

  Needs no ``NeuronLayer`` list, so it works for any network (CNN encoders, heads) whose weight
  leaves are named "kernel" (flax Linear / Conv). Biases and norm parameters are left out, as in
  spec §5 ("weights only").

  Args:
    grads: gradients shaped like the params (nnx State or nested dicts).
    prefix: prepended to every name.

  Returns:
    ``{"<prefix><path joined by '/'>": scalar}``, e.g. ``"trunk/hidden/0"``.
  """
  out = {}
  for path, g in flatten(grads).items():
    if path and path[-1] == "kernel":
      out[prefix + "/".join(str(p) for p in path[:-1])] = grad_norm(g)
  return out


def grad_norm(g: jax.Array) -> jax.Array:
  """Frobenius norm of one weight gradient (spec §5)."""
  return jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))


def grad_cosine(g: jax.Array, g_prev: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Cosine between this and the previous step's gradient of one layer (0 if either is 0)."""
  g, g_prev = g.astype(jnp.float32).ravel(), g_prev.astype(jnp.float32).ravel()
  return jnp.dot(g, g_prev) / jnp.maximum(grad_norm(g) * grad_norm(g_prev), eps)


def churn(before: jax.Array, after: jax.Array) -> jax.Array:
  """Mean absolute change of a network's outputs on a fixed batch, e.g. values or Q-values.

  Args:
    before: [..., K] (or [...]) outputs of the network before an update.
    after: the same outputs after it.

  Returns:
    scalar ``mean |after − before|`` over every batch and output entry.
  """
  return jnp.mean(jnp.abs(after.astype(jnp.float32) - before.astype(jnp.float32)))


def argmax_churn(before: jax.Array, after: jax.Array) -> jax.Array:
  """Fraction of states whose greedy action changes (spec §5, churn in the code).

  Args:
    before: [..., A] logits or Q-values before an update.
    after: [..., A] after it.

  Returns:
    scalar in [0, 1].
  """
  changed = jnp.argmax(before, axis=-1) != jnp.argmax(after, axis=-1)
  return jnp.mean(changed.astype(jnp.float32))


# ---------------------------------------------------------------------------------------------
# Everything at once, for trainers.


def network_health(net: str, layers: Sequence[NeuronLayer], *,
                   features: Mapping[str, jax.Array] | None = None,
                   feature_grads: Mapping[str, jax.Array] | None = None,
                   grads: Any = None, prev_kernel_grads: Mapping[str, jax.Array] | None = None,
                   representation: jax.Array | None = None, dormant_tau: float = 0.02,
                   grama_tau: float = 0.01, per_layer: bool = True,
                   prefix: str = "health") -> dict[str, jax.Array]:
  """Flat dict of scalar diagnostics of one network; each group is computed if its input is given.

  Typical use in a jitted update, every N updates (``when_due`` on the step, or at log time).
  The critic loss gets a ``perturbations`` argument that it forwards to its trunk and returns
  the trunk's features (and, as aux, the trunk output)::

    critic = nnx.merge(critic_def, params["value"])   # static structure only
    layers = rep.mlp_layers(critic.trunk, prefix=("value", "trunk"),
                            output_consumers=rep.linear_paths(critic.head, ("value", "head")))
    pr, grads = rep.probe_and_grads(critic_loss, params, layers, has_aux=True)
    metrics |= rep.network_health("value", layers, features=pr.features,
                                  feature_grads=pr.feature_grads, grads=grads,
                                  prev_kernel_grads=prev, representation=pr.aux)
    prev = rep.kernel_grads(grads, layers)  # carried to the next logging step

  Args:
    net: network name used in metric names ("policy", "value", "q").
    layers: the network's ``NeuronLayer``s (paths must match ``grads``).
    features: ``{name: [..., H]}`` per-layer features on a batch.
    feature_grads: ``{name: [..., H]}`` per-sample pre-activation gradients (``Probe``).
    grads: the update's parameter gradients (pytree shaped like the params the layers index).
    prev_kernel_grads: ``kernel_grads(previous grads, layers)`` for the gradient cosine.
    representation: [..., d] the representation the head reads (trunk output) for ranks/norm.
    dormant_tau: τ of the dormant ratio (ReDo: 0.02).
    grama_tau: τ of the GraMa ratios (ReGraMa: 0.01).
    per_layer: also emit per-layer values.
    prefix: metric-name prefix.

  Returns:
    ``{name: scalar}`` with, where inputs allow (fractions in [0, 1]):
    ``{prefix}/dormant_ratio/{net}`` (activated layers only), ``{prefix}/fau/{net}``,
    ``{prefix}/grama_ratio/{net}`` (paper form), ``{prefix}/grama_w_ratio/{net}`` (code form),
    ``{prefix}/grad_norm/{net}`` (over kernels), ``{prefix}/srank/{net}``,
    ``{prefix}/effective_rank/{net}``, ``{prefix}/feature_rank/{net}``,
    ``{prefix}/feature_norm/{net}``; per-layer versions append ``/{layer}``, plus
    ``{prefix}/grad_norm/{net}/{layer}`` and ``{prefix}/grad_cosine/{net}/{layer}``.
  """
  out: dict[str, jax.Array] = {}

  def name(metric: str, layer: str | None = None) -> str:
    base = f"{prefix}/{metric}/{net}"
    return base if layer is None else f"{base}/{layer}"

  def pooled(metric: str, scores: dict[str, jax.Array], tau: float) -> None:
    if not scores:
      return
    flags = {k: flagged(s, tau) for k, s in scores.items()}
    total = sum(f.size for f in flags.values())
    out[name(metric)] = sum(jnp.sum(f) for f in flags.values()).astype(jnp.float32) / total
    if per_layer:
      for k, f in flags.items():
        out[name(metric, k)] = jnp.mean(f.astype(jnp.float32))

  if features is not None:
    activated = [layer.name for layer in layers
                 if layer.activation is not None and layer.name in features]
    pooled("dormant_ratio", {k: dormant_scores(features[k]) for k in activated}, dormant_tau)
    if activated:
      units = sum(features[k].shape[-1] for k in activated)
      out[name("fau")] = sum(active_fraction(features[k]) * features[k].shape[-1]
                             for k in activated) / units
      if per_layer:
        for k in activated:
          out[name("fau", k)] = active_fraction(features[k])
  if feature_grads is not None:
    pooled("grama_ratio", {layer.name: grama_scores(feature_grads[layer.name])
                           for layer in layers if layer.name in feature_grads}, grama_tau)
  if grads is not None:
    kg = kernel_grads(grads, layers)
    pooled("grama_w_ratio", {k: grama_weight_scores(g) for k, g in kg.items()}, grama_tau)
    norms = {k: grad_norm(g) for k, g in kg.items()}
    out[name("grad_norm")] = jnp.sqrt(sum(jnp.square(v) for v in norms.values()))
    if per_layer:
      for k, v in norms.items():
        out[name("grad_norm", k)] = v
    if prev_kernel_grads is not None:
      for k, g in kg.items():
        out[name("grad_cosine", k)] = grad_cosine(g, prev_kernel_grads[k])
  if representation is not None:
    out[name("srank")] = srank(representation).astype(jnp.float32)
    out[name("effective_rank")] = effective_rank(representation)
    out[name("feature_rank")] = feature_rank(representation).astype(jnp.float32)
    out[name("feature_norm")] = feature_norm(representation)
  return out


def when_due(step: jax.Array, every: int, fn: Callable[..., Any], *args: Any,
             fill: float = float("nan")) -> Any:
  """``fn(*args)`` if ``step % every == 0`` else the same structure filled with ``fill``.

  ``lax.cond`` skips the work (SVDs, the probe pass) on other steps when ``step`` is not
  batched; under ``vmap`` with a batched step both branches run (a select).

  Args:
    step: int scalar, the update counter.
    every: the period N (static).
    fn: returns a pytree of arrays (e.g. :func:`network_health`'s dict).
    *args: its arguments.
    fill: value of every leaf on steps that are not due (NaN: "not measured").

  Returns:
    ``fn(*args)`` or its filled stand-in.
  """
  shapes = jax.eval_shape(fn, *args)

  def skip(*_):
    return jax.tree_util.tree_map(lambda s: jnp.full(s.shape, fill, s.dtype), shapes)

  return jax.lax.cond(step % every == 0, fn, skip, *args)
