"""Value models: a decoder body with a scalar head, and M of them stacked for critic ensembles.

Shape letters: B batch, T tokens, D hidden, M value models.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlab.models.decoder.config import DecoderConfig
from jaxlab.models.decoder.modeling import Decoder


class ValueModel(nnx.Module):
  """A decoder body with a scalar value head on its final hidden states.

  ``V(s_t)`` for response token ``t`` is read at the position that predicts ``y_t`` (the last
  prompt token for t = 0), the same alignment as the policy's log-probs. The head starts at
  zero, so every value is 0 before training.
  """

  def __init__(self, body: Decoder, *, rngs: nnx.Rngs):
    self.body = body
    self.head = nnx.Linear(body.config.hidden_size, 1, kernel_init=nnx.initializers.zeros,
                           bias_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, tokens_bt: jax.Array, mask_bt: jax.Array) -> jax.Array:
    """Float32 values ``[B, T]``."""
    h, _ = self.body.hidden(tokens_bt, mask_bt)
    return self.head(h.astype(jnp.float32))[..., 0]


def stacked_value_models(policy: Decoder, num_models: int, seed: int,
                         body_config: DecoderConfig | None = None):
  """``(graphdef, params)`` of ``num_models`` identical value models, params stacked ``[M, ...]``.

  Every copy starts from the same weights, so any diversity between them comes from the data
  each one is trained on.

  Args:
    policy: the decoder whose vocabulary (and, by default, weights) the bodies start from.
    num_models: M, the size of the leading axis.
    seed: seeds the body (when fresh) and the head's initialisation.
    body_config: None for a body that copies ``policy``'s config and weights; otherwise a fresh,
      randomly initialised body of this config (e.g. a smaller critic).
  """
  if body_config is None:
    body = Decoder(policy.config, rngs=nnx.Rngs(seed))
    nnx.update(body, nnx.state(policy))
  else:
    body = Decoder(body_config, rngs=nnx.Rngs(seed))
  graphdef, params = nnx.split(ValueModel(body, rngs=nnx.Rngs(seed)))
  stacked = jax.tree.map(lambda x: jnp.stack([x] * num_models), params)
  return graphdef, stacked
