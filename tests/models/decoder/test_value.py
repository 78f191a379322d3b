"""Value models: a decoder body with a zero-initialised scalar head, stacked M times."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab.models.decoder import modeling, value
from jaxlab.models.decoder.config import DecoderConfig

CFG = DecoderConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=8, architecture="Qwen3ForCausalLM",
                    qk_norm=True)


def _batch():
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(3, 40, (3, 7)), jnp.int32)
  mask = jnp.asarray(np.arange(7)[None] >= np.array([[0], [2], [5]]))  # left padding
  return tokens, mask


def test_stack_copies_the_policy_and_reads_values_from_its_hidden_states():
  policy = modeling.init_decoder(CFG, seed=3)
  graphdef, params = value.stacked_value_models(policy, 3, seed=1)
  leaves = jax.tree.leaves(params)
  assert all(x.shape[0] == 3 for x in leaves)
  tokens, mask = _batch()
  values = jax.vmap(lambda p: nnx.merge(graphdef, p)(tokens, mask))(params)
  assert values.shape == (3, 3, 7) and values.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(values), 0.0)  # zero head
  # With a non-zero head, every copy gives head(policy's final hidden state).
  w = jnp.asarray(np.random.default_rng(1).normal(size=(32, 1)), jnp.float32)
  model = nnx.merge(graphdef, jax.tree.map(lambda x: x[2], params))
  model.head.kernel[...] = w
  model.head.bias[...] = jnp.ones((1,))
  h, _ = policy.hidden(tokens, mask)
  np.testing.assert_allclose(np.asarray(model(tokens, mask)), np.asarray(h @ w)[..., 0] + 1.0,
                             rtol=1e-6, atol=1e-6)


def test_a_fresh_body_of_another_size_starts_from_its_own_seed():
  policy = modeling.init_decoder(CFG, seed=3)
  small = CFG.replace(hidden_size=16, intermediate_size=24, num_layers=1, num_heads=2,
                      num_kv_heads=1)
  graphdef, params = value.stacked_value_models(policy, 2, seed=5, body_config=small)
  model = nnx.merge(graphdef, jax.tree.map(lambda x: x[1], params))
  assert model.body.config == small
  want = nnx.state(modeling.init_decoder(small, seed=5))
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model.body), want)
  tokens, mask = _batch()
  assert model(tokens, mask).shape == (3, 7)
