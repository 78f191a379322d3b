"""BroNet, the twin critics and the continuous actors: shapes, features, perturbations, and
neuron layers whose paths and consumers match the parameter tree."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab import nets
from jaxlab import representations as rep
from jaxlab.representations.layers import flatten


def test_bronet_features_and_perturbations():
  net = nets.BroNet(5, width=8, depth=2, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5))
  y, features = net(x, return_features=True)
  chex.assert_shape(y, (3, 8))
  assert list(features) == ["input", "blocks.0.fc0", "blocks.0.fc1", "blocks.1.fc0",
                            "blocks.1.fc1"]
  # The stream is x0 + the two branch outputs.
  np.testing.assert_allclose(y, features["input"] + features["blocks.0.fc1"]
                             + features["blocks.1.fc1"], rtol=1e-5, atol=1e-6)
  # A perturbation of the last branch output moves the output by exactly that much.
  delta = jnp.full((3, 8), 0.25)
  np.testing.assert_allclose(net(x, perturbations={"blocks.1.fc1": delta}), y + delta,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", nets.TRUNKS)
def test_twin_critic_and_actors(kind):
  obs = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
  act = jax.random.uniform(jax.random.PRNGKey(2), (4, 2), minval=-1, maxval=1)
  critic = nets.TwinCritic(3, 2, kind, 16, 2, "relu", rngs=nnx.Rngs(0))
  q, features = critic(obs, act, return_features=True)
  chex.assert_shape(q, (2, 4))
  assert all(k.startswith(("q1/", "q2/")) for k in features)
  assert not np.allclose(q[0], q[1])  # two independent networks
  first = sorted(k for k in features if k.startswith("q2/"))[0]
  bumped = critic(obs, act, perturbations={first: jnp.ones_like(features[first])})
  np.testing.assert_array_equal(bumped[0], q[0])  # "q2/..." perturbs only the second critic
  assert not np.allclose(bumped[1], q[1])

  dist = nets.GaussianActor(3, 2, kind, 16, 2, "relu", rngs=nnx.Rngs(0))(obs)
  a = dist.squash(dist.sample_raw(jax.random.PRNGKey(3)))
  chex.assert_shape(a, (4, 2))
  mu = nets.DeterministicActor(3, 2, kind, 16, 2, "relu", rngs=nnx.Rngs(0))(obs)
  chex.assert_shape(mu, (4, 2))
  assert np.all(np.abs(a) < 1) and np.all(np.abs(mu) < 1)


@pytest.mark.parametrize("kind", nets.TRUNKS)
def test_trunk_layers_index_the_parameter_tree(kind):
  actor = nets.GaussianActor(3, 2, kind, 16, 2, "relu", rngs=nnx.Rngs(0))
  params = {"actor": nnx.state(actor)}
  layers = rep.trunk_layers(actor.trunk, ("actor", "trunk"), ("actor", "head"), actor.head,
                            "auto")
  flat = flatten(params)
  _, features = actor(jnp.zeros((1, 3)), return_features=True)
  assert [layer.name for layer in layers] == list(features)
  for layer in layers:
    kernel = flat[layer.path + ("kernel",)]
    assert kernel.shape[-1] == 16
    assert layer.consumers, layer.name
    for consumer in layer.consumers:
      assert flat[consumer + ("kernel",)].shape[-2] == 16
  if kind == "bronet":
    writers = [layer for layer in layers if not layer.name.endswith("fc0")]
    assert not any(layer.zero_outgoing for layer in writers)  # stream writers: incoming only
    assert all(layer.zero_outgoing for layer in layers if layer.name.endswith("fc0"))
