"""Tests for jaxlab.nets.cnn: the Atari and MinAtar encoders of spec rl.md §2.2."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab import nets
from jaxlab.nets import cnn as cnn_lib


def _np_conv(x, kernel, bias, stride):
  """VALID convolution, channels last: x [B, H, W, C], kernel [k, k, C, O]."""
  k = kernel.shape[0]
  b, h, w, _ = x.shape
  ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
  out = np.zeros((b, ho, wo, kernel.shape[-1]))
  for i in range(ho):
    for j in range(wo):
      patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
      out[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, kernel)
  return out + bias


def _np_forward(model, x, strides):
  """The encoder written out in numpy float64 from the module's parameters."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                             nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  h = np.asarray(x, np.float64) * model.input_scale
  for i, s in enumerate(strides):
    h = _np_conv(h, p["convs"][i]["kernel"], p["convs"][i]["bias"], s)
    if model.use_layernorm:
      flat = h.reshape(h.shape[0], -1)
      mu = flat.mean(-1, keepdims=True)
      var = ((flat - mu) ** 2).mean(-1, keepdims=True)
      flat = (flat - mu) / np.sqrt(var + nets.mlp.LAYERNORM_EPSILON)
      h = (flat * p["norms"][i]["scale"] + p["norms"][i]["bias"]).reshape(h.shape)
    h = np.maximum(h, 0.0)
  return h.reshape(h.shape[0], -1)


def _randomise(model, seed):
  """Non-trivial biases and LN parameters, so a forward pass that skipped them would differ."""
  rng = np.random.default_rng(seed)

  def perturb(path, a):
    if {str(getattr(e, "key", "")) for e in path} & {"bias", "scale"}:
      return a + jnp.asarray(0.3 * rng.standard_normal(a.shape), a.dtype)
    return a

  nnx.update(model, jax.tree_util.tree_map_with_path(perturb, nnx.state(model, nnx.Param)))


def test_atari_sizes_match_the_paper():
  """84 -> 20 -> 9 -> 7 and 3136 flattened features (spec §2.2)."""
  abstract = nnx.eval_shape(lambda: nets.CNN((84, 84, 4), kind="atari_cnn", rngs=nnx.Rngs(0)))
  assert abstract.output_size == 3136
  assert abstract.feature_shapes == ((20, 20, 32), (9, 9, 64), (7, 7, 64))
  assert cnn_lib.conv_output_hw(84, 84, "atari_cnn") == (7, 7)
  assert nets.CNN((10, 10, 4), kind="minatar_cnn", rngs=nnx.Rngs(0)).output_size == 8 * 8 * 16


@pytest.mark.parametrize("kind,shape,strides", [
    ("atari_cnn", (36, 36, 2), (4, 2, 1)),   # 36 -> 8 -> 3 -> 1: the smallest valid frame
    ("minatar_cnn", (10, 10, 4), (1,)),
])
@pytest.mark.parametrize("use_layernorm", [False, True])
def test_forward_matches_numpy(kind, shape, strides, use_layernorm):
  model = nets.CNN(shape, kind=kind, use_layernorm=use_layernorm, rngs=nnx.Rngs(1))
  _randomise(model, 2)
  scale = 255.0 if kind == "atari_cnn" else 1.0
  x = jax.random.uniform(jax.random.key(3), (3,) + shape) * scale
  y, feats = model(x, return_features=True)
  np.testing.assert_allclose(y, _np_forward(model, x, strides), rtol=2e-4, atol=2e-4)
  assert list(feats) == [f"conv.{i}" for i in range(len(strides))]
  for name, fshape in zip(feats, model.feature_shapes):
    chex.assert_shape(feats[name], (3,) + fshape)
  np.testing.assert_allclose(feats[f"conv.{len(strides) - 1}"].reshape(3, -1), y)


def test_pixels_are_divided_by_255_for_atari_only():
  atari = nets.CNN((36, 36, 1), kind="atari_cnn", rngs=nnx.Rngs(0))
  minatar = nets.CNN((10, 10, 1), kind="minatar_cnn", rngs=nnx.Rngs(0))
  assert atari.input_scale == pytest.approx(1 / 255)
  assert minatar.input_scale == 1.0
  frame = jnp.full((36, 36, 1), 255, jnp.uint8)  # uint8 pixels are cast, not wrapped
  np.testing.assert_allclose(atari(frame), atari(jnp.ones((36, 36, 1)) * 255.0), rtol=1e-6)
  # bool MinAtar frames work as 0/1.
  grid = jax.random.bernoulli(jax.random.key(0), 0.3, (10, 10, 1))
  np.testing.assert_allclose(minatar(grid), minatar(grid.astype(jnp.float32)))


def test_orthogonal_sqrt2_init_and_zero_bias():
  model = nets.CNN((84, 84, 4), kind="atari_cnn", rngs=nnx.Rngs(0))
  for conv in model.convs:
    k = np.asarray(conv.kernel[...], np.float64)
    mat = k.reshape(-1, k.shape[-1])  # [kh*kw*in, out], fan-in >= out for all three layers
    np.testing.assert_allclose(mat.T @ mat, 2.0 * np.eye(k.shape[-1]), atol=1e-4)
    assert np.all(np.asarray(conv.bias[...]) == 0)


def test_leading_axes_and_jit_vmap():
  model = nets.CNN((10, 10, 3), kind="minatar_cnn", use_layernorm=True, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  x = jax.random.uniform(jax.random.key(1), (2, 5, 10, 10, 3))
  y = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))(params, x)
  chex.assert_shape(y, (2, 5, 1024))
  np.testing.assert_allclose(y[1, 3], model(x[1, 3]), rtol=1e-5, atol=1e-6)
  y_single = model(x[0, 0])
  chex.assert_shape(y_single, (1024,))


def test_perturbations_give_layer_output_gradients():
  model = nets.CNN((10, 10, 2), kind="minatar_cnn", rngs=nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(1), (4, 10, 10, 2))
  zero = {"conv.0": jnp.zeros((4, 8, 8, 16))}
  g = jax.grad(lambda p: jnp.sum(model(x, perturbations=p) ** 2))(zero)["conv.0"]
  # d/dh sum(h^2) = 2 h at the (post-activation) output.
  np.testing.assert_allclose(g, 2 * model(x, return_features=True)[1]["conv.0"], rtol=1e-5)


@pytest.mark.parametrize("args,match", [
    (dict(obs_shape=(4,), kind="atari_cnn"), "needs image observations"),
    (dict(obs_shape=(10, 10, 4), kind="atari_cnn"), "at least 36x36"),
    (dict(obs_shape=(10, 10, 4), kind="resnet"), "encoder kind='resnet'"),
    (dict(obs_shape=(10, 10, 4), kind="minatar_cnn", activation="swish"), "activation='swish'"),
])
def test_bad_arguments_one_line(args, match):
  with pytest.raises(ValueError, match=match) as err:
    nets.CNN(rngs=nnx.Rngs(0), **args)
  assert "\n" not in str(err.value)


def test_wrong_input_shape_is_named():
  model = nets.CNN((10, 10, 4), kind="minatar_cnn", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"expected \(10, 10, 4\)"):
    model(jnp.zeros((2, 10, 10, 3)))


