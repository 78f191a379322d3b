"""Tests for jaxlab.nets.mlp: layouts, features, layer graph, init, presets, errors."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab import nets


def _np_params(model):
  """Nested dict of numpy float64 parameters, keyed like nnx.state(model)."""
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), pure)


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _np_linear(p, x):
  return x @ p["kernel"] + p["bias"]


def _np_layernorm(p, x, eps=nets.mlp.LAYERNORM_EPSILON):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _relu(x):
  return np.maximum(x, 0.0)


def _randomise_norms(model, seed):
  """Gives LayerNorm parameters and biases non-trivial values, so that a hand-written forward
  pass that misplaced or skipped them would disagree."""
  rng = np.random.default_rng(seed)

  def perturb(path, x):
    if {str(getattr(entry, "key", "")) for entry in path} & {"bias", "scale"}:
      return x + jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype)
    return x

  nnx.update(model, jax.tree_util.tree_map_with_path(perturb, nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("kind", nets.KINDS)
@pytest.mark.parametrize("use_layernorm", [False, True])
@pytest.mark.parametrize("out_features", [None, 3])
def test_shapes_dtypes_and_feature_keys(kind, use_layernorm, out_features):
  model = nets.MLP(4, width=6, depth=2, kind=kind, use_layernorm=use_layernorm,
                   out_features=out_features, rngs=nnx.Rngs(0))
  x = jnp.ones((2, 5, 4))
  y, feats = model(x, return_features=True)
  out = 6 if out_features is None else out_features
  chex.assert_shape(y, (2, 5, out))
  assert y.dtype == jnp.float32
  assert model.output_size == out
  links = model.layer_graph()
  assert list(feats) == [link.name for link in links]
  for link in links:
    kernel = _get(nnx.state(model), link.path)["kernel"]
    chex.assert_shape(feats[link.name], (2, 5, kernel.shape[1]))
  chex.assert_trees_all_close(model(x), y)


def test_bfloat16_compute_dtype():
  model = nets.MLP(4, width=6, depth=2, kind="multiskip", use_layernorm=True,
                   out_features=3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  y = model(jnp.ones((5, 4), jnp.bfloat16))
  assert y.dtype == jnp.bfloat16
  assert nnx.state(model)["out"]["kernel"].dtype == jnp.float32


@pytest.mark.parametrize("depth", [1, 3])
def test_plain_has_depth_hidden_layers_and_matches_hand_forward(depth):
  model = nets.MLP(4, width=6, depth=depth, kind="plain", use_layernorm=True, out_features=3,
                   rngs=nnx.Rngs(1))
  _randomise_norms(model, 2)
  assert len(model.hidden) == depth
  x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
  y, feats = model(jnp.asarray(x), return_features=True)
  assert list(feats) == [f"hidden.{i}" for i in range(depth)] + ["out"]

  p = _np_params(model)
  h = x.astype(np.float64)
  for i in range(depth):
    h = _relu(_np_layernorm(p["hidden_norms"][i], _np_linear(p["hidden"][i], h)))
    np.testing.assert_allclose(feats[f"hidden.{i}"], h, rtol=1e-4, atol=1e-4)
  expect = _np_layernorm(p["out_norm"], _np_linear(p["out"], h))
  np.testing.assert_allclose(y, expect, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(feats["out"], y)


def test_multiskip_is_residual_plus_global_skip_after_every_block():
  kw = dict(width=6, depth=2, use_layernorm=True, out_features=3)
  res = nets.MLP(4, kind="residual", rngs=nnx.Rngs(0), **kw)
  _randomise_norms(res, 1)
  skip = nets.MLP(4, kind="multiskip", rngs=nnx.Rngs(5), **kw)
  nnx.update(skip, nnx.state(res, nnx.Param))  # Same weights, different wiring.

  x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
  p = _np_params(res)

  def by_hand(global_skip):
    g = _np_layernorm(p["input_norm"], _np_linear(p["input"], x))
    s = g
    for b in p["blocks"].values():
      h = _relu(_np_layernorm(b["norm0"], _np_linear(b["fc0"], _relu(s))))
      s = s + _np_layernorm(b["norm1"], _np_linear(b["fc1"], h))
      if global_skip:
        s = s + g
    return _np_layernorm(p["out_norm"], _np_linear(p["out"], s))

  y_res = np.asarray(res(jnp.asarray(x)))
  y_skip = np.asarray(skip(jnp.asarray(x)))
  np.testing.assert_allclose(y_res, by_hand(False), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(y_skip, by_hand(True), rtol=1e-4, atol=1e-4)
  assert np.abs(y_res - y_skip).max() > 1e-2  # The skip really changes the function.


def test_residual_without_output_layer_returns_stream():
  model = nets.MLP(4, width=6, depth=2, kind="multiskip", rngs=nnx.Rngs(0))
  y, feats = model(jnp.ones((5, 4)), return_features=True)
  # Stream after the last block = g + sum of branches + depth * g.
  expect = feats["input"] * 3 + feats["blocks.0.fc1"] + feats["blocks.1.fc1"]
  np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", nets.KINDS)
def test_perturbation_gradients_are_feature_gradients(kind):
  model = nets.MLP(4, width=6, depth=2, kind=kind, out_features=3, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (5, 4))
  _, feats = model(x, return_features=True)
  zeros = {k: jnp.zeros_like(v) for k, v in feats.items()}
  chex.assert_trees_all_close(model(x, perturbations=zeros), model(x))

  grads = jax.grad(lambda e: jnp.sum(model(x, perturbations=e)))(zeros)
  # The output layer is linear without LN, so dL/d(its input) = kernel row sums, per example.
  w_out = nnx.state(model)["out"]["kernel"][...]
  last = "hidden.1" if kind == "plain" else "blocks.1.fc1"
  expect = jnp.broadcast_to(w_out.sum(axis=1), (5, 6))
  np.testing.assert_allclose(grads[last], expect, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grads["out"], jnp.ones((5, 3)))


@pytest.mark.parametrize("kind", nets.KINDS)
def test_layer_graph_consumers_are_complete(kind):
  """Zeroing neuron j's input rows in all its consumers makes the output independent of it."""
  model = nets.MLP(4, width=6, depth=3, kind=kind, out_features=3, activation="tanh",
                   rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  x = jax.random.normal(jax.random.key(1), (5, 4))
  links = {link.name: link for link in model.layer_graph()}
  j = 2

  def grad(p):
    return jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x) ** 2))(p)

  for link in links.values():
    if not link.consumers:
      assert link.name == "out"
      continue
    before = _get(grad(params), link.path)
    assert jnp.abs(before["kernel"][:, j]).max() > 1e-6
    cut = jax.tree_util.tree_map(lambda a: a, params)  # A copy with fresh Variables.
    for name in link.consumers:
      _get(cut, links[name].path)["kernel"][j, :] = 0.0
    after = _get(grad(cut), link.path)
    np.testing.assert_allclose(after["kernel"][:, j], 0.0, atol=1e-7, err_msg=link.name)
    np.testing.assert_allclose(after["bias"][j], 0.0, atol=1e-7, err_msg=link.name)
    assert jnp.abs(after["kernel"][...]).max() > 1e-6  # Other neurons still matter.


def test_layer_graph_paths_and_shapes():
  model = nets.MLP(4, width=6, depth=2, kind="residual", use_layernorm=True, out_features=3,
                   rngs=nnx.Rngs(0))
  state = nnx.state(model)
  links = {link.name: link for link in model.layer_graph()}
  assert [n for n, link in links.items() if link.activated] == ["blocks.0.fc0", "blocks.1.fc0"]
  assert links["input"].consumers == ("blocks.0.fc0", "blocks.1.fc0", "out")
  assert links["blocks.0.fc1"].consumers == ("blocks.1.fc0", "out")
  for link in links.values():
    out = _get(state, link.path)["kernel"].shape[1]
    assert _get(state, link.norm_path)["scale"].shape == (out,)
    for name in link.consumers:
      assert _get(state, links[name].path)["kernel"].shape[0] == out

  plain = nets.MLP(4, width=6, depth=3, rngs=nnx.Rngs(0))
  assert [(link.name, link.consumers) for link in plain.layer_graph()] == [
    ("hidden.0", ("hidden.1",)), ("hidden.1", ("hidden.2",)), ("hidden.2", ())]
  assert plain.layer_graph()[0].norm_path is None


def test_orthogonal_init_and_zero_bias():
  # [4, 6] kernels have orthonormal rows, [6, 6] and [6, 3] orthonormal columns.
  model = nets.MLP(4, width=6, depth=2, kind="multiskip", out_features=3, rngs=nnx.Rngs(0))
  state = nnx.state(model)
  for link in model.layer_graph():
    layer = _get(state, link.path)
    w = np.asarray(layer["kernel"][...], np.float64)
    n_in, n_out = w.shape
    gram = w.T @ w if n_in >= n_out else w @ w.T  # The orthonormal side of a [in, out] kernel.
    np.testing.assert_allclose(gram, 2.0 * np.eye(min(n_in, n_out)), atol=1e-5,
                               err_msg=link.name)
    np.testing.assert_array_equal(layer["bias"][...], 0.0)


def test_activations():
  x = jnp.linspace(-3.0, 3.0, 20).reshape(5, 4)
  results = {}
  for name in nets.ACTIVATIONS:
    model = nets.MLP(4, width=6, depth=1, activation=name, rngs=nnx.Rngs(0))
    pre = nnx.state(model)["hidden"][0]
    z = x @ pre["kernel"][...] + pre["bias"][...]
    results[name] = model(x)
    expect = {"relu": jax.nn.relu(z), "tanh": jnp.tanh(z), "silu": z * jax.nn.sigmoid(z),
              "leaky_relu": jnp.where(z > 0, z, 0.01 * z),
              "gelu": 0.5 * z * (1 + jax.scipy.special.erf(z / math.sqrt(2)))}[name]
    np.testing.assert_allclose(results[name], expect, rtol=1e-5, atol=1e-6, err_msg=name)


def test_jit_vmap_and_feature_order_survive_tracing():
  model = nets.MLP(4, width=6, depth=11, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)

  @jax.jit
  def apply(params, x):
    return nnx.merge(graphdef, params)(x, return_features=True)

  y, feats = apply(params, jnp.ones((5, 4)))
  assert list(feats) == [f"hidden.{i}" for i in range(11)]  # Not sorted as strings.
  y_v = jax.vmap(lambda x: apply(params, x)[0])(jnp.ones((2, 5, 4)))
  chex.assert_shape(y_v, (2, 5, 6))
  np.testing.assert_allclose(y_v[0], y, rtol=1e-6)


# Table 1 of Castanyer et al. (millions of parameters, input 3136): rows = depth preset,
# columns = width preset.
_TABLE1 = {
  ("small", "small"): 2.39, ("small", "medium"): 11.9, ("small", "large"): 27.7,
  ("medium", "small"): 3.45, ("medium", "medium"): 21.35, ("medium", "large"): 53.93,
  ("large", "small"): 4.5, ("large", "medium"): 30.79, ("large", "large"): 80.15,
}


def _count_params(**kwargs):
  # eval_shape: counts an 80M-parameter net without running its orthogonal initialisers.
  abstract = nnx.eval_shape(lambda: nets.MLP(3136, rngs=nnx.Rngs(0), **kwargs))
  return sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(abstract, nnx.Param)))


@pytest.mark.parametrize("depth_name,width_name", sorted(_TABLE1))
def test_preset_parameter_counts_match_table1(depth_name, width_name):
  """Table 1 counts the 2k + 2 Linear layers (weights and biases) at width W, LN excluded.

  It matches an output layer W -> W (identical to the code's W -> 512 at W = 512). The
  small- and large-depth rows match to the table's two decimals; the medium-depth row is
  0.005-0.006M above ours in all three columns (3.4447 vs 3.45, 21.344 vs 21.35, 53.924 vs
  53.93), which no layout change reproduces, so it is checked to within 0.01M.
  """
  table = _TABLE1[(depth_name, width_name)]
  k, width = nets.preset(depth_name, width_name)
  plain_depth, _ = nets.preset(depth_name, width_name, kind="plain")
  assert plain_depth == 2 * k + 1
  counts = {kind: _count_params(kind=kind, depth=plain_depth if kind == "plain" else k,
                                width=width, out_features=width) for kind in nets.KINDS}
  assert len(set(counts.values())) == 1, counts  # Same Linear layers in all three layouts.
  millions = counts["plain"] / 1e6
  if depth_name == "medium":
    assert abs(millions - table) <= 0.01
  else:
    assert round(millions, 2) == pytest.approx(table)


def test_presets():
  assert nets.preset("small") == (1, 512)
  assert nets.preset("xlarge") == (10, 5120)
  assert nets.preset("large", "medium") == nets.MLPSize(depth=5, width=1536)
  assert nets.preset("medium", kind="plain") == (7, 1536)  # 2k + 2 = 8 Linear layers.


@pytest.mark.parametrize("kwargs,fragment", [
  (dict(depth=0), "depth=0"),
  (dict(depth=True), "depth=True"),
  (dict(depth=2.0), "depth=2.0"),
  (dict(width=0), "width=0"),
  (dict(out_features=0), "out_features=0"),
  (dict(kind="dense"), "kind='dense' is not valid; expected one of plain, residual, multiskip"),
  (dict(activation="swish"), "activation='swish' is not valid; expected one of relu, tanh"),
])
def test_bad_constructor_arguments(kwargs, fragment):
  args = dict(width=4, depth=1) | kwargs
  with pytest.raises(ValueError, match=None) as err:
    nets.MLP(3, rngs=nnx.Rngs(0), **args)
  assert fragment in str(err.value)
  assert "\n" not in str(err.value)


def test_bad_preset_and_call_arguments():
  with pytest.raises(ValueError, match="depth preset='huge' is not valid; expected one of small"):
    nets.preset("huge")
  with pytest.raises(ValueError, match="width preset='tiny'"):
    nets.preset("small", "tiny")
  with pytest.raises(ValueError, match="kind='mlp'"):
    nets.preset("small", kind="mlp")
  model = nets.MLP(3, width=4, depth=1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="expected in_features=3"):
    model(jnp.ones((2, 5)))
  with pytest.raises(ValueError, match=r"unknown layer names \['hiden.0'\]"):
    model(jnp.ones((2, 3)), perturbations={"hiden.0": jnp.zeros(4)})
