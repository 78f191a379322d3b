"""What the next model families build on: input embeddings in place of ids, and the residual
stream after every layer, inside jit and inside a scan over decode steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab import models
from jaxlab.models.decoder import modeling
from jaxlab.models.decoder.config import DecoderConfig
from jaxlab.models.decoder.modeling import KVCache
from tests.models.decoder.tiny_hf import left_padded_batch

CFG = DecoderConfig(vocab_size=128, hidden_size=32, intermediate_size=48, num_layers=3,
                    num_heads=4, num_kv_heads=2, head_dim=8, architecture="Qwen3ForCausalLM",
                    qk_norm=True, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def model():
  m = modeling.init_decoder(CFG, seed=0)
  # Norm scales away from 1 so that a skipped norm cannot hide.
  _, state = nnx.split(m)
  keys = iter(jax.random.split(jax.random.key(1), 64))
  state = jax.tree_util.tree_map_with_path(
      lambda kp, x: x + 0.3 * jax.random.normal(next(keys), x.shape)
      if "scale" in jax.tree_util.keystr(kp) else x, state)
  nnx.update(m, state)
  return m


def _by_hand(model, tokens, mask):
  """Embeddings, then each Block called directly, then the final norm: ``(states, h)``."""
  c = model.config
  mask = jnp.asarray(mask, bool)
  t = tokens.shape[1]
  cos, sin = modeling.rope_cos_sin(c, modeling.positions_from_mask(mask))
  allowed = jnp.tril(jnp.ones((t, t), bool))[None] & mask[:, None, :]
  x = model.embedding_vd[...][jnp.asarray(tokens)]
  states = [x]
  for layer in model.layers:
    x, _, _ = layer(x, cos, sin, allowed, None, None, None)
    states.append(x)
  return np.stack([np.asarray(s) for s in states]), np.asarray(model.final_norm(x))


def test_hidden_states_inside_jit_equal_calling_each_block(model):
  tokens, mask, _ = left_padded_batch(seed=3)
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, tokens, mask):
    m = nnx.merge(graphdef, state)
    logits, cache, states = m(tokens, mask, return_hidden_states=True)
    h, _ = m.hidden(tokens, mask)
    return logits, cache, states, h

  logits, cache, states, h = run(state, jnp.asarray(tokens), jnp.asarray(mask))
  assert cache is None
  assert states.shape == (CFG.num_layers + 1, *tokens.shape, CFG.hidden_size)
  want_states, want_h = _by_hand(model, tokens, mask)
  np.testing.assert_allclose(np.asarray(states)[:, mask], want_states[:, mask], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(h)[mask], want_h[mask], rtol=1e-5, atol=1e-5)
  # The flag adds an output and changes nothing else.
  np.testing.assert_array_equal(np.asarray(logits),
                                np.asarray(modeling.forward(model, tokens, mask)))
  # Layers really differ (the test would not notice a repeated state otherwise).
  assert np.abs(want_states[1:] - want_states[:-1])[:, mask].max() > 1e-2


def test_hidden_states_match_transformers_output_hidden_states(hf_dirs):
  torch = pytest.importorskip("torch")
  ref, path = hf_dirs["llama3"]
  ours, _ = models.from_pretrained(path, tokenizer=False)
  tokens, mask, positions = left_padded_batch()
  with torch.no_grad():
    out = ref(torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
              position_ids=torch.tensor(positions), output_hidden_states=True)
  want = np.stack([s.numpy() for s in out.hidden_states])
  h, _, states = ours.hidden(jnp.asarray(tokens), jnp.asarray(mask), return_hidden_states=True)
  assert states.shape[0] == want.shape[0] == ours.config.num_layers + 1
  # transformers puts the final-normed state last; ours keeps the last block's raw output there.
  np.testing.assert_allclose(np.asarray(states)[:-1][:, mask], want[:-1][:, mask], atol=1e-4,
                             rtol=1e-4)
  np.testing.assert_allclose(np.asarray(h)[mask], want[-1][mask], atol=1e-4, rtol=1e-4)


def test_hidden_states_from_a_scan_over_decode_steps(model):
  tokens, mask, _ = left_padded_batch(seed=4)
  b, p = tokens.shape
  steps = 4
  nxt_sb = np.random.default_rng(0).integers(3, 128, (steps, b)).astype(np.int32)
  graphdef, state = nnx.split(model)

  @jax.jit
  def decode(state, tokens, mask, nxt_sb):
    m = nnx.merge(graphdef, state)
    _, cache = m(tokens, mask, cache=KVCache.init(m.config, b, p + steps))

    def step(cache, tok_b):
      m = nnx.merge(graphdef, state)
      logits, cache, states = m(tok_b[:, None], jnp.ones((b, 1), bool), cache=cache,
                                return_hidden_states=True)
      return cache, (logits[:, 0], states[:, :, 0])

    return jax.lax.scan(step, cache, nxt_sb)[1]

  logits_sbv, states_slbd = decode(state, jnp.asarray(tokens), jnp.asarray(mask), nxt_sb)
  assert states_slbd.shape == (steps, CFG.num_layers + 1, b, CFG.hidden_size)
  # The same steps one eager call at a time.
  _, cache = model(jnp.asarray(tokens), jnp.asarray(mask), cache=KVCache.init(CFG, b, p + steps))
  for s in range(steps):
    logits, cache, states = model(jnp.asarray(nxt_sb[s])[:, None], jnp.ones((b, 1), bool),
                                  cache=cache, return_hidden_states=True)
    np.testing.assert_allclose(np.asarray(states_slbd[s]), np.asarray(states[:, :, 0]),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits_sbv[s]), np.asarray(logits[:, 0]), rtol=1e-5,
                               atol=1e-5)
  # And the last step's states equal a full recompute of the whole sequence.
  seq = np.concatenate([tokens, nxt_sb.T], axis=1)
  seq_mask = np.concatenate([mask, np.ones((b, steps), bool)], axis=1)
  full_states, _ = _by_hand(model, seq, seq_mask)
  np.testing.assert_allclose(np.asarray(states_slbd[-1]), full_states[:, :, -1], rtol=1e-4,
                             atol=1e-5)


def test_embeddings_of_the_ids_give_the_logits_of_the_ids(model):
  tokens, mask, _ = left_padded_batch(seed=5)
  embeds = model.embedding_vd[...][jnp.asarray(tokens)]
  np.testing.assert_array_equal(np.asarray(modeling.forward(model, inputs_embeds_btd=embeds,
                                                            mask_bt=mask)),
                                np.asarray(modeling.forward(model, tokens, mask)))
  np.testing.assert_array_equal(np.asarray(model.embed(jnp.asarray(tokens))), np.asarray(embeds))
  # Splicing other vectors in changes the logits from that position on, not before it (pad
  # rows attend to everything, so compare real tokens).
  spliced = embeds.at[:, 9].set(jnp.ones((CFG.hidden_size,)))
  a = np.asarray(modeling.forward(model, tokens, mask))
  s = np.asarray(modeling.forward(model, inputs_embeds_btd=spliced, mask_bt=mask))
  before = mask[:, :9]
  np.testing.assert_array_equal(a[:, :9][before], s[:, :9][before])
  assert np.abs(a[:, 9:] - s[:, 9:]).max() > 1e-3


def test_embeddings_with_a_cache_decode_like_ids(model):
  tokens, mask, _ = left_padded_batch(seed=6)
  b, p = tokens.shape
  nxt = np.random.default_rng(1).integers(3, 128, (3, b)).astype(np.int32)
  table = model.embedding_vd[...]
  cache_ids = cache_emb = KVCache.init(CFG, b, p + 3)
  la, cache_ids = model(jnp.asarray(tokens), jnp.asarray(mask), cache=cache_ids)
  lb, cache_emb = model(inputs_embeds_btd=table[jnp.asarray(tokens)], mask_bt=jnp.asarray(mask),
                        cache=cache_emb)
  np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))
  for tok_b in nxt:
    la, cache_ids = model(jnp.asarray(tok_b)[:, None], cache=cache_ids)
    lb, cache_emb = model(inputs_embeds_btd=table[jnp.asarray(tok_b)][:, None], cache=cache_emb)
    np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))
  jax.tree.map(np.testing.assert_array_equal, cache_ids, cache_emb)


def test_exactly_one_of_ids_and_embeddings(model):
  tokens = jnp.zeros((2, 3), jnp.int32)
  embeds = jnp.zeros((2, 3, CFG.hidden_size))
  with pytest.raises(ValueError, match="exactly one of tokens_bt .* got both"):
    model(tokens, inputs_embeds_btd=embeds)
  with pytest.raises(ValueError, match="got neither"):
    model()
  with pytest.raises(ValueError, match="got neither"):
    modeling.forward(model)
  with pytest.raises(ValueError, match=r"inputs_embeds_btd must be \[B, T, D=32\], got shape "
                     r"\[2, 3, 7\]"):
    model(inputs_embeds_btd=jnp.zeros((2, 3, 7)))
  with pytest.raises(ValueError, match=r"positions must be .* got shape \[2, 4\]"):
    model(tokens, positions_bt=jnp.zeros((2, 4), jnp.int32))


def test_long_causal_call_by_query_blocks_equals_one_block(model, monkeypatch):
  """A cache-free call over >= 2 * CAUSAL_BLOCK tokens attends by query blocks, each over the
  keys up to its end: logits and gradients of real tokens equal those of one block over all
  keys (to float32 rounding), with left padding that fills a whole first block of one row."""
  assert modeling.causal_blocks(300) == [(0, 128), (128, 256), (256, 300)]
  assert modeling.causal_blocks(255) == [(0, 255)]
  assert modeling.causal_blocks(4096) == [(i, i + 512) for i in range(0, 4096, 512)]
  tokens, mask, _ = left_padded_batch(seed=7, lengths=(300, 150, 37))
  labels = jnp.asarray(np.roll(tokens, -1, axis=1))

  def logits_and_grads():
    def loss(state):
      logits = nnx.merge(graphdef, state)(jnp.asarray(tokens), jnp.asarray(mask))[0]
      logp = jax.nn.log_softmax(logits, axis=-1)
      picked = jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
      return -jnp.sum(jnp.where(jnp.asarray(mask), picked, 0.0)), logits
    graphdef, state = nnx.split(model)
    # A fresh jit: causal_blocks is read when the call is traced.
    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(state)
    return np.asarray(logits), jax.tree.map(np.asarray, grads)

  blocked = logits_and_grads()
  monkeypatch.setattr(modeling, "CAUSAL_BLOCK", 10_000)  # one block: every key
  whole = logits_and_grads()
  np.testing.assert_allclose(blocked[0][mask], whole[0][mask], rtol=1e-5, atol=1e-5)
  assert np.abs(blocked[0][mask]).max() > 0.1
  # Gradients of a loss summed over ~500 tokens: rounding is relative to each leaf's scale
  # (1e-6 absolute at entries ~1e-3 of a leaf whose largest is ~2 is below float32 noise).
  for g_blocked, g_whole in zip(jax.tree.leaves(blocked[1]), jax.tree.leaves(whole[1])):
    np.testing.assert_allclose(g_blocked, g_whole, rtol=1e-4,
                               atol=1e-5 * max(np.abs(g_whole).max(), 1e-3))
