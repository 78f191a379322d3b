"""The training step: masked causal-LM loss, gradient accumulation, schedules, mixed precision."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab import optim
from jaxlab.llm import train
from jaxlab.models.decoder import modeling
from jaxlab.models.decoder.config import DecoderConfig

CFG = DecoderConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=8, architecture="Qwen3ForCausalLM",
                    qk_norm=True, tie_word_embeddings=True)


def _batch(rows=8, t=12, seed=0):
  """Random tokens with a prompt/completion split that differs per row, right padding, and
  uneven completion lengths (so the per-micro-batch target counts differ)."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, CFG.vocab_size, (rows, t)).astype(np.int32)
  loss_mask = np.zeros((rows, t), np.int32)
  for i in range(rows):
    prompt = int(rng.integers(2, 6))
    end = int(rng.integers(prompt + 1, t + 1))
    loss_mask[i, prompt:end] = 1
    tokens[i, end:] = 0  # right padding
  return tokens, loss_mask


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_is_cross_entropy_over_completion_tokens_only():
  model = modeling.init_decoder(CFG, seed=0)
  tokens, loss_mask = _batch()
  loss, count = train.lm_loss(model, jnp.asarray(tokens), jnp.asarray(loss_mask))
  logits = np.asarray(modeling.forward(model, tokens), np.float64)
  logp = _log_softmax(logits)
  total, n = 0.0, 0
  for b in range(tokens.shape[0]):
    for t in range(1, tokens.shape[1]):
      if loss_mask[b, t]:
        total -= logp[b, t - 1, tokens[b, t]]
        n += 1
  assert int(count) == n == loss_mask[:, 1:].sum()
  np.testing.assert_allclose(float(loss), total / n, rtol=1e-5)

  # Prompt tokens contribute nothing: d loss / d logits is exactly zero at every position
  # whose next token is a prompt (or padding) token, and non-zero elsewhere.
  def from_logits(lg):
    nll = train.token_nll(lg, jnp.asarray(tokens))
    w = jnp.asarray(loss_mask[:, 1:], jnp.float32)
    return jnp.sum(nll * w) / jnp.sum(w)
  g = np.asarray(jax.grad(from_logits)(jnp.asarray(logits, jnp.float32)))
  predicts_prompt = np.zeros(tokens.shape, bool)
  predicts_prompt[:, :-1] = loss_mask[:, 1:] == 0
  predicts_prompt[:, -1] = True  # the last position predicts nothing
  assert np.abs(g[predicts_prompt]).max() == 0.0
  assert np.abs(g[~predicts_prompt]).max() > 0.0


def test_padding_after_the_completion_does_not_change_the_loss():
  model = modeling.init_decoder(CFG, seed=1)
  tokens, loss_mask = _batch(seed=3)
  other = tokens.copy()
  last_target = np.array([np.nonzero(m)[0].max() for m in loss_mask])
  for i, end in enumerate(last_target):
    other[i, end + 1:] = 7  # different filler after each row's last target
  a, _ = train.lm_loss(model, jnp.asarray(tokens), jnp.asarray(loss_mask))
  b, _ = train.lm_loss(model, jnp.asarray(other), jnp.asarray(loss_mask))
  assert float(a) == pytest.approx(float(b), abs=1e-6)


def _one_step(grad_accum, tokens, loss_mask, compute_dtype="float32", seed=0, hlo=None):
  model = modeling.init_decoder(CFG, seed=seed)
  tx, schedule = _adamw(learning_rate=1e-2, warmup_steps=0, total_steps=10, eps=1e-3)
  graphdef, state = train.init_train_state(model, tx, compute_dtype=compute_dtype)
  step = train.make_train_step(graphdef, tx, schedule, grad_accum=grad_accum)
  batch = {"tokens": jnp.asarray(tokens), "loss_mask": jnp.asarray(loss_mask)}
  if hlo is not None:
    hlo.append(step.jitted.lower(state, batch).as_text())
  state, metrics = step(state, batch)
  return state, jax.device_get(metrics)


def test_gradient_accumulation_equals_the_big_batch_step():
  tokens, loss_mask = _batch(rows=8, seed=5)
  big, m1 = _one_step(1, tokens, loss_mask)
  acc, m4 = _one_step(4, tokens, loss_mask)
  assert m1["tokens"] == m4["tokens"] == loss_mask[:, 1:].sum()
  np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
  np.testing.assert_allclose(m4["grad_norm"], m1["grad_norm"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(acc.params), jax.tree.leaves(big.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  # The update really moved the parameters.
  _, init = train.init_train_state(modeling.init_decoder(CFG, seed=0), optax_tx())
  moved = jax.tree.map(lambda p, q: float(np.abs(np.asarray(p) - np.asarray(q)).max()),
                       big.params, init.params)
  assert max(jax.tree.leaves(moved)) > 1e-3
  assert int(acc.step) == 1
  with pytest.raises(ValueError, match="grad_accum=3"):
    _one_step(3, tokens, loss_mask)


def _adamw(**overrides):
  """The SFT optimizer (AdamW, decay on matrices) with the former llm.train defaults."""
  kwargs = dict(learning_rate=1e-3, schedule="cosine", warmup_steps=100, total_steps=1000,
                min_lr_ratio=0.1, weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8,
                max_grad_norm=1.0)
  kwargs.update(overrides)
  return optim.make_optimizer("adamw", decay_mask="matrices", **kwargs)


def optax_tx():
  return _adamw()[0]


def test_bf16_compute_keeps_float32_masters_and_close_loss():
  tokens, loss_mask = _batch(rows=4, seed=7)
  s32, m32 = _one_step(2, tokens, loss_mask, "float32")
  hlo = []
  s16, m16 = _one_step(2, tokens, loss_mask, "bfloat16", hlo=hlo)
  # The matmuls themselves run in bf16, not just bf16-rounded weights in f32 matmuls: the 7
  # projections per layer forward and their 2 backward products all take bf16 operands; only
  # the backward products of the two f32-accumulated einsums (logits, attention scores) run
  # in f32.
  dots = [ln for ln in hlo[0].splitlines() if "dot_general" in ln]
  f32_only = [ln for ln in dots if "bf16" not in ln]
  assert len(dots) - len(f32_only) >= 3 * 7 * CFG.num_layers
  assert len(f32_only) <= 2 + 2 * CFG.num_layers, f32_only
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(s16.params))
  assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(s16.opt_state))
  assert m16["loss"] == pytest.approx(m32["loss"], rel=2e-2)
  assert m16["loss"] != m32["loss"]  # the compute really ran in bf16


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedules_warm_up_then_decay(schedule):
  lr = optim.make_schedule(1.0, schedule, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
  assert float(lr(0)) == pytest.approx(0.1)  # 1/warmup of the peak, not 0
  assert float(lr(9)) == pytest.approx(1.0)
  assert float(lr(10)) == pytest.approx(1.0)
  mid, end = float(lr(60)), float(lr(110))
  if schedule == "cosine":
    assert mid == pytest.approx(0.55) and end == pytest.approx(0.1)
  elif schedule == "linear":
    assert mid == pytest.approx(0.55) and end == pytest.approx(0.1)
  else:
    assert mid == end == pytest.approx(1.0)
  with pytest.raises(ValueError, match="schedule"):
    optim.make_schedule(1.0, "step", total_steps=10)


def test_weight_decay_skips_norms_and_clipping_bounds_the_update():
  model = modeling.init_decoder(CFG, seed=0)
  tx, _ = _adamw(learning_rate=0.1, warmup_steps=0, weight_decay=0.5, max_grad_norm=1.0)
  _, state = train.init_train_state(model, tx)
  zero = jax.tree.map(jnp.zeros_like, state.params)
  updates, _ = tx.update(zero, state.opt_state, state.params)
  # With zero gradients only weight decay moves parameters: matrices shrink, norms do not.
  assert np.abs(np.asarray(updates["final_norm"]["scale"][...])).max() == 0.0
  w = np.asarray(state.params["embedding_vd"][...])
  np.testing.assert_allclose(np.asarray(updates["embedding_vd"][...]), -0.1 * 0.5 * w,
                             rtol=1e-6)
  # A huge gradient is clipped to norm 1 before Adam (whose first step is then ~ sign(g)).
  big = jax.tree.map(lambda x: jnp.full_like(x, 1e6), state.params)
  clipped = optax.clip_by_global_norm(1.0).update(big, None)[0]
  assert float(optax.tree.norm(clipped)) == pytest.approx(1.0, rel=1e-5)


def test_flops_per_token_counts_matmul_weights_and_attention():
  c = CFG
  n = train.count_params(train.init_train_state(modeling.init_decoder(c), optax_tx())[1].params)
  norms = c.num_layers * (2 * c.hidden_size + 2 * c.head_dim) + c.hidden_size
  matmul = n - norms  # tied: the embedding is the head's matmul
  attention_per_key = 6 * c.num_layers * c.num_heads * c.head_dim  # causal: half of 12 L n h
  assert train.train_flops_per_token(c, 1) == pytest.approx(6 * matmul + attention_per_key)
  assert train.train_flops_per_token(c, 100) == pytest.approx(6 * matmul + 100 * attention_per_key)
