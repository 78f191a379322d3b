"""jaxlab.optim's schedules and AdamW against the builder the LLM trainers used before
(jaxlab.llm.train.make_optimizer): the same updates to the bit over several steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import optim
from jaxlab.llm import rl as llm_rl
from jaxlab.llm import sft
from jaxlab.llm import train


def _params():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  return {"kernel": jax.random.normal(k1, (4, 3)), "scale": jax.random.normal(k2, (3,)),
          "embed": jax.random.normal(k3, (2, 5, 3)), "gain": jnp.float32(0.7)}


def _run(tx, steps=6):
  params = _params()
  state = tx.init(params)
  out = []
  for i in range(steps):
    g = jax.tree.map(lambda x, i=i: jnp.sin(x * (i + 1)) * 3.0, params)  # large: clipping acts
    updates, state = jax.jit(tx.update)(g, state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    out.append(params)
  return out


def _assert_same(old, new, total):
  (tx_old, lr_old), (tx_new, lr_new) = old, new
  for step in range(total + 3):
    assert float(lr_old(step)) == float(lr_new(step)), step
  for a, b in zip(_run(tx_old), _run(tx_new)):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_adamw_matches_the_former_llm_builder(schedule, warmup):
  kwargs = dict(learning_rate=0.05, schedule=schedule, warmup_steps=warmup, min_lr_ratio=0.2,
                weight_decay=0.3, b1=0.8, b2=0.9, eps=1e-6, max_grad_norm=1.0)
  old = train.make_optimizer(train.OptimConfig(total_steps=8, **kwargs))
  new = optim.make_optimizer("adamw", total_steps=8, decay_mask="matrices", **kwargs)
  _assert_same(old, new, 8)


def test_the_llm_call_sites_keep_their_numbers():
  # sft.run and llm.rl.run: the policy optimizer from config.optim, and the critics' AdamW.
  for c, total in ((sft.default_config(), 40), (llm_rl.default_config(), 12)):
    old = train.make_optimizer(train.OptimConfig.from_mapping(c.optim, total_steps=total))
    new = optim.make_optimizer("adamw", total_steps=total, decay_mask="matrices", **c.optim)
    _assert_same(old, new, total)
  c = llm_rl.default_config()
  old = train.make_optimizer(train.OptimConfig(
      learning_rate=c.critic.learning_rate, schedule="constant", warmup_steps=0, total_steps=1,
      weight_decay=0.0, b1=0.9, b2=0.999, max_grad_norm=c.critic.max_grad_norm))
  new = optim.make_optimizer("adamw", c.critic.learning_rate, decay_mask="matrices",
                             max_grad_norm=c.critic.max_grad_norm)
  _assert_same(old, new, 5)
