"""Tests for jaxlab.representations.metrics: scores, GraMa forms, ranks, gradients, churn."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from flax import nnx

from jaxlab import nets
from jaxlab import representations as rep
from jaxlab.representations.layers import normalize_path

N_IN, WIDTH, N_OUT, BATCH = 8, 32, 4, 64


def _set(state, path, fn):
  """Returns ``state`` with the leaf at ``path`` replaced by ``fn(leaf)``."""
  found = []

  def edit(kp, leaf):
    if normalize_path(kp) == tuple(path):
      found.append(path)
      return fn(leaf)
    return leaf

  out = jax.tree_util.tree_map_with_path(edit, state)
  assert found, f"no leaf at {path}"
  return out


def _data(seed=1):
  kx, kt = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, (BATCH, N_IN)), jax.random.normal(kt, (BATCH, N_OUT))


def _model(activation="relu", use_layernorm=False, depth=3, seed=0):
  m = nets.MLP(N_IN, width=WIDTH, depth=depth, out_features=N_OUT, activation=activation,
               use_layernorm=use_layernorm, rngs=nnx.Rngs(seed))
  graphdef, state = nnx.split(m)
  return m, graphdef, state


def _loss_fn(graphdef, x, t):
  def loss(state, perturbations=None):
    y, feats = nnx.merge(graphdef, state)(x, return_features=True, perturbations=perturbations)
    return jnp.mean((y - t) ** 2), (feats, y)
  return loss


def _probe_and_grads(graphdef, state, layers, x, t):
  loss = _loss_fn(graphdef, x, t)
  pr = rep.probe(lambda p: loss(state, p), layers, has_aux=True)
  grads = jax.grad(lambda s: loss(s)[0])(state)
  return pr, grads


def _kill_units(state, depth, rng, fraction=0.4):
  """Makes ``fraction`` of each hidden layer's ReLU units dead on any input (bias -100)."""
  dead = {}
  for i in range(depth):
    idx = rng.choice(WIDTH, int(fraction * WIDTH), replace=False)
    dead[f"hidden.{i}"] = idx
    state = _set(state, ("hidden", i, "bias"), lambda b, idx=idx: b.at[idx].set(-100.0))
  return state, dead


# --------------------------------------------------------------------------------------------
# Scores and the tau convention.


def test_dormant_scores_match_numpy_and_tau_zero_counts_exact_zeros_only():
  rng = np.random.default_rng(0)
  h = rng.standard_normal((5, 7, 6)).astype(np.float32)
  h[..., 0] = 0.0      # dead
  h[..., 1] = 1e-12    # alive but tiny: not flagged at tau = 0
  q = np.abs(h.reshape(-1, 6)).mean(0)
  np.testing.assert_allclose(rep.dormant_scores(h), q / (q.mean() + 1e-9), rtol=1e-6)
  assert float(rep.dormant_ratio(h, 0.0)) == pytest.approx(1 / 6)
  # A neuron exactly at tau is flagged (<=): scores here are 0, 2/3, 4/3, 2 (up to 1e-9).
  h2 = np.tile(np.array([0.0, 1.0, 2.0, 3.0], np.float32), (3, 1))
  scores = rep.dormant_scores(h2)
  assert float(rep.ratio(scores, float(scores[1]))) == pytest.approx(0.5)


def test_active_fraction_matches_numpy():
  h = np.maximum(np.random.default_rng(1).standard_normal((10, 4, 9)), 0).astype(np.float32)
  assert float(rep.active_fraction(h)) == pytest.approx(float((h > 0).mean()))


def test_grama_weight_scores_linear_and_conv_average_incoming_axes():
  rng = np.random.default_rng(2)
  g = rng.standard_normal((5, 3)).astype(np.float32)
  q = np.abs(g).mean(0)
  np.testing.assert_allclose(rep.grama_weight_scores(g), q / (q.mean() + 1e-9), rtol=1e-6)
  gc = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
  qc = np.abs(gc).mean(axis=(0, 1, 2))
  np.testing.assert_allclose(rep.grama_weight_scores(gc), qc / (qc.mean() + 1e-9), rtol=1e-6)


@pytest.mark.parametrize("activation,use_layernorm", [
  ("relu", False), ("leaky_relu", False), ("tanh", False), ("relu", True)])
def test_probe_feature_grads_are_preactivation_gradients(activation, use_layernorm):
  """δ from the probe equals dL/d(activation input), computed by an independent forward pass
  that adds the perturbation *before* the activation (after the LayerNorm)."""
  m, graphdef, state = _model(activation, use_layernorm, depth=2)
  layers = rep.mlp_layers(m)
  state = _set(state, ("hidden", 0, "bias"), lambda b: b.at[:5].set(-3.0))  # some inactive
  x, t = _data()
  pr, _ = _probe_and_grads(graphdef, state, layers, x, t)
  p = nnx.to_pure_dict(state)
  act = nets.activation_fn(activation)

  def layernorm(q, z):
    mu = z.mean(-1, keepdims=True)
    var = ((z - mu) ** 2).mean(-1, keepdims=True)
    return (z - mu) / jnp.sqrt(var + nets.mlp.LAYERNORM_EPSILON) * q["scale"] + q["bias"]

  def loss(eps):
    h = x
    for i in range(2):
      u = h @ p["hidden"][i]["kernel"] + p["hidden"][i]["bias"]
      if use_layernorm:
        u = layernorm(p["hidden_norms"][i], u)
      h = act(u + eps[i])
    y = h @ p["out"]["kernel"] + p["out"]["bias"]
    if use_layernorm:
      y = layernorm(p["out_norm"], y)
    return jnp.mean((y - t) ** 2)

  ref = jax.grad(loss)([jnp.zeros((BATCH, WIDTH))] * 2)
  for i in range(2):
    got, want = np.asarray(pr.feature_grads[f"hidden.{i}"]), np.asarray(ref[i])
    # flax's LayerNorm computes its variance differently in float32: loose relative tolerance,
    # but exact zeros (inactive ReLU units) must agree exactly.
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6 * np.abs(want).max())
    if activation == "relu":
      np.testing.assert_array_equal(got == 0, want == 0)
  # The output layer has no activation: its δ is the plain feature gradient.
  np.testing.assert_array_equal(pr.feature_grads["out"], pr.output_grads["out"])


def test_preactivation_grad_rejects_activations_not_invertible_from_output():
  with pytest.raises(ValueError, match="weight-gradient form"):
    rep.preactivation_grad(jnp.ones(3), jnp.ones(3), "silu")


# --------------------------------------------------------------------------------------------
# ReDo vs GraMa: the subset property and where it breaks (spec §4.1-4.2).


def test_relu_mlp_tau0_dormant_set_is_subset_of_grama_inactive_set():
  m, graphdef, state = _model("relu", depth=3)
  layers = rep.mlp_layers(m)
  state, dead = _kill_units(state, 3, np.random.default_rng(0))
  x, t = _data()
  pr, grads = _probe_and_grads(graphdef, state, layers, x, t)
  kgrads = rep.kernel_grads(grads, layers)
  total_dormant = 0
  for i in range(3):
    name = f"hidden.{i}"
    dormant = np.asarray(rep.dormant_scores(pr.features[name]) <= 0)
    paper = np.asarray(rep.grama_scores(pr.feature_grads[name]) <= 0)
    code = np.asarray(rep.grama_weight_scores(kgrads[name]) <= 0)
    assert set(dead[name]) <= set(np.flatnonzero(dormant))
    assert not np.any(dormant & ~paper), name
    assert not np.any(dormant & ~code), name
    total_dormant += dormant.sum()
    # Negative control: the gradient *past* a dead unit (at its output) is not zero, so a GraMa
    # computed from post-activation gradients would miss the dead units.
    past = np.asarray(rep.grama_scores(pr.output_grads[name]) <= 0)
    assert np.any(dormant & ~past), name
  assert total_dormant >= 3 * int(0.4 * WIDTH)


def test_layernorm_breaks_the_subset_property_for_the_weight_form_and_rescales_activations():
  m, graphdef, state = _model("relu", use_layernorm=True, depth=2)
  layers = rep.mlp_layers(m)
  # Unit 3: LN bias -10 keeps its post-norm ReLU at 0 for every input (|LN(z)| <= sqrt(H-1)).
  # Unit 5: LN scale 1e-3 shrinks its activations but not its ability to learn.
  state = _set(state, ("hidden_norms", 0, "bias"), lambda b: b.at[3].set(-10.0))
  state = _set(state, ("hidden_norms", 0, "scale"), lambda s: s.at[5].set(1e-3))
  x, t = _data()
  pr, grads = _probe_and_grads(graphdef, state, layers, x, t)
  dormant = rep.dormant_scores(pr.features["hidden.0"])
  paper = rep.grama_scores(pr.feature_grads["hidden.0"])
  code = rep.grama_weight_scores(rep.kernel_grads(grads, layers)["hidden.0"])
  # Unit 3 is τ=0 dormant; LayerNorm couples it to the other units, so its incoming weights
  # still get gradient: not GraMa-inactive in the code form even at ReGraMa's tau 0.01.
  # The paper form takes δ after the norm (at the ReLU input), which is 0: it does flag it.
  assert float(dormant[3]) == 0.0
  assert float(code[3]) > 0.01
  assert float(paper[3]) == 0.0
  # Unit 5 is ReDo-dormant (tau 0.02) but its gradient is of the layer's order: GraMa-active.
  assert float(dormant[5]) <= 0.02
  assert float(paper[5]) > 0.1
  assert float(code[5]) > 0.01


def test_leaky_relu_near_zero_activation_is_not_dead():
  """Unit 3 of hidden.0 has a constant small negative pre-activation (zero kernel column, bias
  -0.5) and large outgoing weights. With ReLU it is dead for both metrics; with leaky ReLU ReDo
  still calls it dormant, while its gradient (slope 0.01 x large upstream gradient) is typical."""
  flags = {}
  for activation in ("relu", "leaky_relu"):
    m, graphdef, state = _model(activation, depth=2)
    layers = rep.mlp_layers(m)
    state = _set(state, ("hidden", 0, "kernel"), lambda k: k.at[:, 3].set(0.0))
    state = _set(state, ("hidden", 0, "bias"), lambda b: b.at[3].set(-0.5))
    state = _set(state, ("hidden", 1, "kernel"), lambda k: k.at[3, :].multiply(100.0))
    x, t = _data()
    pr, grads = _probe_and_grads(graphdef, state, layers, x, t)
    flags[activation] = (
      bool(rep.dormant_scores(pr.features["hidden.0"])[3] <= 0.02),
      bool(rep.grama_scores(pr.feature_grads["hidden.0"])[3] <= 0.01),
      bool(rep.grama_weight_scores(rep.kernel_grads(grads, layers)["hidden.0"])[3] <= 0.01))
  assert flags["relu"] == (True, True, True)
  assert flags["leaky_relu"] == (True, False, False)


def test_active_unit_without_outgoing_weights_is_grama_inactive_but_not_dormant():
  m, graphdef, state = _model("relu", depth=2)
  layers = rep.mlp_layers(m)
  state = _set(state, ("hidden", 0, "bias"), lambda b: b.at[7].set(5.0))   # always on
  state = _set(state, ("hidden", 1, "kernel"), lambda k: k.at[7, :].set(0.0))
  x, t = _data()
  pr, grads = _probe_and_grads(graphdef, state, layers, x, t)
  assert float(rep.dormant_scores(pr.features["hidden.0"])[7]) > 1.0
  assert float(rep.grama_scores(pr.feature_grads["hidden.0"])[7]) == 0.0
  assert float(rep.grama_weight_scores(rep.kernel_grads(grads, layers)["hidden.0"])[7]) == 0.0


# --------------------------------------------------------------------------------------------
# Ranks on known matrices.


def _with_singular_values(s, n=48, d=12, seed=0):
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.standard_normal((n, d)))
  v, _ = np.linalg.qr(rng.standard_normal((d, d)))
  return (u * np.asarray(s, np.float64)) @ v.T


def _np_ranks(phi):
  s = scipy.linalg.svdvals(phi)
  n = phi.shape[0]
  c = np.cumsum(s)
  c2 = np.cumsum(s ** 2)
  lam = s ** 2 / n
  p_lam = lam / lam.sum() + 1e-6
  return {
    "srank": int(np.argmax(c >= 0.99 * c[-1]) + 1),
    "pca_rank": int(np.argmax(c2 >= 0.99 * c2[-1]) + 1),
    "effective_rank": float(np.exp(scipy.stats.entropy(s / s.sum()))),
    "feature_rank": int(np.sum(s / np.sqrt(n) > 0.01)),
    "rankme": float(np.exp(-np.sum(p_lam * np.log(p_lam)))),
    "feature_norm": float(np.linalg.norm(phi, axis=1).mean()),
  }


SPECTRA = [
  np.r_[np.ones(5), np.zeros(7)],                              # flat rank 5
  np.r_[10.0, 5.0, 2.0, 1.0, 0.5, 0.1, 0.03, 1e-3, np.zeros(4)],  # decaying
  np.geomspace(1.0, 1e-4, 12),
]


@pytest.mark.parametrize("spectrum", SPECTRA, ids=["flat5", "decay", "geom"])
def test_ranks_match_numpy_scipy_on_known_spectra(spectrum):
  phi = _with_singular_values(spectrum)
  ref = _np_ranks(phi)
  phi32 = jnp.asarray(phi, jnp.float32)
  np.testing.assert_allclose(rep.singular_values(phi32), np.sort(spectrum)[::-1], atol=1e-5)
  assert int(rep.srank(phi32)) == ref["srank"]
  assert int(rep.pca_rank(phi32)) == ref["pca_rank"]
  assert int(rep.feature_rank(phi32)) == ref["feature_rank"]
  assert float(rep.effective_rank(phi32)) == pytest.approx(ref["effective_rank"], rel=1e-4)
  assert float(rep.rankme(phi32)) == pytest.approx(ref["rankme"], rel=1e-3)
  assert float(rep.feature_norm(phi32)) == pytest.approx(ref["feature_norm"], rel=1e-5)


def test_ranks_analytic_values_and_jit_vmap():
  # Flat spectrum of k ones: every rank is k (srank: 0.99 k needs all k values).
  flat5 = _with_singular_values(SPECTRA[0])
  assert int(rep.srank(flat5)) == 5
  assert float(rep.effective_rank(flat5)) == pytest.approx(5.0, rel=1e-5)
  assert int(rep.feature_rank(flat5)) == 5
  # Decaying spectrum by hand: sum = 18.631; 0.99 * sum = 18.445 -> needs 5 values (18.5).
  assert int(rep.srank(_with_singular_values(SPECTRA[1]))) == 5
  # jit + vmap over a stack of matrices (e.g. seeds) gives the per-matrix values.
  stack = jnp.asarray(np.stack([_with_singular_values(s) for s in SPECTRA]), jnp.float32)
  batched = jax.jit(jax.vmap(lambda p: (rep.srank(p), rep.effective_rank(p))))(stack)
  for i, phi in enumerate(stack):
    assert int(batched[0][i]) == int(rep.srank(phi))
    assert float(batched[1][i]) == pytest.approx(float(rep.effective_rank(phi)), rel=1e-5)


# --------------------------------------------------------------------------------------------
# Gradients and churn.


def test_per_layer_grad_norm_and_cosine_match_numpy():
  m, graphdef, state = _model("relu", depth=2)
  layers = rep.mlp_layers(m)
  x1, t1 = _data(1)
  x2, t2 = _data(2)
  g1 = jax.grad(lambda s: _loss_fn(graphdef, x1, t1)(s)[0])(state)
  g2 = jax.grad(lambda s: _loss_fn(graphdef, x2, t2)(s)[0])(state)
  k1, k2 = rep.kernel_grads(g1, layers), rep.kernel_grads(g2, layers)
  health = rep.network_health("q", layers, grads=g2, prev_kernel_grads=k1)
  for name in k1:
    a, b = np.asarray(k2[name], np.float64).ravel(), np.asarray(k1[name], np.float64).ravel()
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert float(health[f"health/grad_cosine/q/{name}"]) == pytest.approx(cos, abs=1e-5)
    assert float(health[f"health/grad_norm/q/{name}"]) == pytest.approx(np.linalg.norm(a),
                                                                       rel=1e-5)
  g = k1["hidden.0"]
  assert float(rep.grad_cosine(g, g)) == pytest.approx(1.0, abs=1e-6)
  assert float(rep.grad_cosine(g, -g)) == pytest.approx(-1.0, abs=1e-6)
  assert float(rep.grad_cosine(jnp.array([1.0, 0.0]), jnp.array([0.0, 2.0]))) == 0.0
  assert float(rep.grad_cosine(g, jnp.zeros_like(g))) == 0.0


def test_churn_is_mean_output_change_on_a_fixed_batch():
  m, graphdef, state = _model("relu", depth=2)
  x, t = _data()
  grads = jax.grad(lambda s: _loss_fn(graphdef, x, t)(s)[0])(state)
  new_state = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, state, grads)
  before = nnx.merge(graphdef, state)(x)
  after = nnx.merge(graphdef, new_state)(x)
  b, a = np.asarray(before, np.float64), np.asarray(after, np.float64)
  assert float(rep.churn(before, after)) == pytest.approx(np.abs(a - b).mean(), rel=1e-5)
  assert float(rep.churn(before, after)) > 0
  assert float(rep.churn(before, before)) == 0.0
  assert float(rep.argmax_churn(before, after)) == pytest.approx(
    np.mean(b.argmax(-1) != a.argmax(-1)))
  assert float(rep.argmax_churn(jnp.eye(4), jnp.eye(4)[::-1])) == 1.0


# --------------------------------------------------------------------------------------------
# network_health: jit + vmap over seeds, keys and consistency with the pieces.


def test_network_health_jit_vmap_over_seeds():
  seeds = 3
  m, graphdef, _ = _model("relu", depth=2)
  states = [nnx.split(_model("relu", depth=2, seed=s)[0])[1] for s in range(seeds)]
  stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)
  layers = rep.mlp_layers(m)
  x, t = _data()

  def health(state):
    pr, grads = _probe_and_grads(graphdef, state, layers, x, t)
    return rep.network_health("q", layers, features=pr.features,
                              feature_grads=pr.feature_grads, grads=grads,
                              prev_kernel_grads=rep.kernel_grads(grads, layers),
                              representation=pr.features["hidden.1"])

  batched = jax.jit(jax.vmap(health))(stacked)
  expected = {f"health/{k}/q" for k in (
    "dormant_ratio", "fau", "grama_ratio", "grama_w_ratio", "grad_norm", "srank",
    "effective_rank", "feature_rank", "feature_norm")}
  assert expected <= set(batched)
  assert "health/grad_cosine/q/hidden.0" in batched
  assert "health/dormant_ratio/q/out" not in batched  # "out" has no activation
  assert "health/grama_ratio/q/out" in batched
  for v in batched.values():
    assert v.shape == (seeds,) and np.all(np.isfinite(v))
  one = health(states[1])
  for k, v in one.items():
    np.testing.assert_allclose(batched[k][1], v, rtol=1e-4, atol=1e-6, err_msg=k)
  pr, _ = _probe_and_grads(graphdef, states[1], layers, x, t)
  assert float(one["health/effective_rank/q"]) == pytest.approx(
    float(rep.effective_rank(pr.features["hidden.1"])), rel=1e-5)
  dormant = sum(int(jnp.sum(rep.dormant_scores(pr.features[f"hidden.{i}"]) <= 0.02))
                for i in range(2))
  assert float(one["health/dormant_ratio/q"]) == pytest.approx(dormant / (2 * WIDTH))
  assert float(one["health/grad_cosine/q/hidden.1"]) == pytest.approx(1.0, abs=1e-5)


def test_when_due_fills_nan_between_logging_steps():
  f = jax.jit(lambda step, x: rep.when_due(step, 3, lambda x: {"a": jnp.sum(x)}, x))
  assert float(f(6, jnp.ones(4))["a"]) == 4.0
  assert math.isnan(float(f(7, jnp.ones(4))["a"]))


def test_probe_and_grads_share_one_pass_and_match_separate_calls():
  m, graphdef, state = _model("relu", depth=2)
  layers = rep.mlp_layers(m, exclude=("out",))
  x, t = _data()
  loss = _loss_fn(graphdef, x, t)
  pr, grads = jax.jit(lambda s: rep.probe_and_grads(loss, s, layers, has_aux=True))(state)
  ref_pr, ref_grads = _probe_and_grads(graphdef, state, layers, x, t)
  # Only the probed layers get pre-activation gradients ("out" was excluded).
  assert set(pr.feature_grads) == {"hidden.0", "hidden.1"}
  assert set(pr.output_grads) == {"hidden.0", "hidden.1", "out"}
  for name in pr.feature_grads:
    np.testing.assert_allclose(pr.feature_grads[name], ref_pr.feature_grads[name], atol=1e-7)
  for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(pr.aux, ref_pr.aux, atol=1e-6)
