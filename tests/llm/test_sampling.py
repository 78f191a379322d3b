"""The KV cache and the compiled sampler: cache == recompute, filters, keys, stops, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.llm import sampling
from jaxlab.models.decoder import modeling
from jaxlab.models.decoder import params as checkpoint
from jaxlab.models.decoder.modeling import KVCache
from tests.models.decoder.tiny_hf import left_padded_batch


@pytest.fixture(scope="module")
def model(hf_dirs):
  m, _ = checkpoint.from_pretrained(hf_dirs["qwen3_untied"][1], tokenizer=False)
  return m


def test_cached_logits_equal_full_recompute_at_every_step(model):
  tokens, mask, _ = left_padded_batch(seed=2)
  b, p = tokens.shape
  steps = 6
  cache = KVCache.init(model.config, b, p + steps)
  logits, cache = sampling.forward_with_cache(model, tokens, mask, cache)
  seq, seq_mask = tokens, mask
  full = np.asarray(modeling.forward(model, seq, seq_mask))
  np.testing.assert_allclose(np.asarray(logits)[mask], full[mask], atol=1e-5, rtol=1e-5)
  nxt = np.asarray(jnp.argmax(logits[:, -1], -1))
  for _ in range(steps):
    step_logits, cache = sampling.forward_with_cache(model, nxt[:, None],
                                                     np.ones((b, 1), bool), cache)
    seq = np.concatenate([seq, nxt[:, None]], 1)
    seq_mask = np.concatenate([seq_mask, np.ones((b, 1), bool)], 1)
    full = np.asarray(modeling.forward(model, seq, seq_mask))[:, -1]
    np.testing.assert_allclose(np.asarray(step_logits)[:, 0], full, atol=1e-5, rtol=1e-5)
    nxt = np.asarray(jnp.argmax(step_logits[:, 0], -1))
  assert int(cache.index) == p + steps


def test_cache_overflow_is_an_error(model):
  tokens, mask, _ = left_padded_batch()
  cache = KVCache.init(model.config, tokens.shape[0], tokens.shape[1])
  _, cache = sampling.forward_with_cache(model, tokens, mask, cache)
  with pytest.raises(ValueError, match="overflows the KV cache length"):
    sampling.forward_with_cache(model, tokens[:, :1], mask[:, :1], cache)


def _gen(model, tokens, mask, key, **kw):
  params = sampling.SamplingParams(**{"max_new_tokens": 16, **kw})
  return jax.tree.map(np.asarray, sampling.generate(model, tokens, mask, key, params))


def test_top_k_one_and_tiny_top_p_equal_greedy(model):
  tokens, mask, _ = left_padded_batch(seed=3)
  key = jax.random.key(7)
  greedy = _gen(model, tokens, mask, key, temperature=0.0)
  top1 = _gen(model, tokens, mask, key, temperature=1.5, top_k=1)
  nucleus = _gen(model, tokens, mask, key, temperature=1.5, top_p=1e-6)
  both = _gen(model, tokens, mask, key, temperature=1.5, top_k=5, top_p=1e-6)
  for out in (top1, nucleus, both):
    np.testing.assert_array_equal(out.tokens, greedy.tokens)
    # One token left: the sampling distribution is a point mass.
    np.testing.assert_allclose(out.logprobs, 0.0, atol=1e-6)
    np.testing.assert_allclose(out.model_logprobs, greedy.model_logprobs, atol=1e-5)


def test_per_sequence_keys_are_reproducible_and_independent(model):
  tokens, mask, _ = left_padded_batch(seed=4, lengths=(5, 5, 5, 5))
  tokens[:] = tokens[0]  # one prompt, four times
  keys = jax.random.split(jax.random.key(0), 4)
  keys = jnp.stack([keys[0], keys[0], keys[1], keys[2]])
  a = _gen(model, tokens, mask, keys, temperature=1.0)
  b = _gen(model, tokens, mask, keys, temperature=1.0)
  np.testing.assert_array_equal(a.tokens, b.tokens)  # reproducible
  np.testing.assert_array_equal(a.tokens[0], a.tokens[1])  # same key, same prompt
  assert (a.tokens[0] != a.tokens[2]).any() and (a.tokens[2] != a.tokens[3]).any()
  # A row's draws depend on its own key only, not on its neighbours.
  c = _gen(model, tokens[2:3], mask[2:3], keys[2:3], temperature=1.0)
  np.testing.assert_array_equal(c.tokens[0], a.tokens[2])


def test_logprobs_match_a_full_forward(model):
  tokens, mask, _ = left_padded_batch(seed=5)
  out = _gen(model, tokens, mask, jax.random.key(1), temperature=1.0)
  # Untempered, unfiltered sampling: both log-probs are the model's.
  np.testing.assert_allclose(out.logprobs, out.model_logprobs, atol=1e-5)
  seq = np.concatenate([tokens, out.tokens], 1)
  seq_mask = np.concatenate([mask, np.ones_like(out.tokens, bool)], 1)
  lp = jax.nn.log_softmax(modeling.forward(model, seq, seq_mask), -1)
  p = tokens.shape[1]
  want = np.take_along_axis(np.asarray(lp[:, p - 1:-1]), out.tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(out.model_logprobs, want, atol=1e-4)
  hot = _gen(model, tokens, mask, jax.random.key(1), temperature=2.0, top_k=10)
  assert (hot.logprobs > np.log(1 / 10) - 1e-3).mean() > 0.3  # flattened, renormalised over 10
  assert np.all(hot.logprobs <= 0) and np.all(hot.logprobs >= np.log(1e-12))


def test_stop_tokens_give_correct_lengths_and_padding(model):
  tokens, mask, _ = left_padded_batch(seed=6)
  free = _gen(model, tokens, mask, jax.random.key(3), temperature=1.0, pad_id=-1)
  # Stop on the token each row emits at step 3 (or earlier if it occurred before).
  stop_ids = tuple(int(t) for t in free.tokens[:, 3])
  out = _gen(model, tokens, mask, jax.random.key(3), temperature=1.0, pad_id=-1,
             stop_tokens=stop_ids)
  for row_free, row, n in zip(free.tokens, out.tokens, out.lengths):
    first = min(i for i, t in enumerate(row_free) if t in stop_ids)
    assert n == first + 1
    np.testing.assert_array_equal(row[:n], row_free[:n])  # same keys, same draws until the stop
    assert np.all(row[n:] == -1)
  assert np.all(out.lengths <= 4)
  assert np.all(out.logprobs[np.arange(16)[None] >= out.lengths[:, None]] == 0)
  assert np.all(free.lengths == 16)


def test_prompt_too_long_for_cache(model):
  tokens, mask, _ = left_padded_batch()
  params = sampling.SamplingParams(max_new_tokens=8)
  with pytest.raises(ValueError, match=r"prompt length 12 \+ max_new_tokens 8 = 20 exceeds the KV "
                                       r"cache length 16"):
    sampling.generate(model, tokens, mask, jax.random.key(0), params, cache_len=16)
  with pytest.raises(ValueError, match="longer than the padded length"):
    sampling.left_pad([[1, 2, 3]], length=2)


def test_no_recompile_for_same_shapes(model):
  tokens, mask, _ = left_padded_batch(seed=7)
  params = sampling.SamplingParams(max_new_tokens=4, temperature=0.7, top_p=0.9)
  sampling.generate(model, tokens, mask, jax.random.key(0), params)
  size = sampling._generate_jit._cache_size()  # pylint: disable=protected-access
  sampling.generate(model, tokens + 1, mask, jax.random.key(1), params)
  assert sampling._generate_jit._cache_size() == size  # pylint: disable=protected-access


def test_filter_logits():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  k2 = np.asarray(sampling.filter_logits(logits, top_k=2))
  assert np.isfinite(k2[0, :2]).all() and np.isneginf(k2[0, 2:]).all()
  p = np.asarray(sampling.filter_logits(logits, top_p=0.75))  # 0.5 + 0.3 reaches 0.75
  assert np.isfinite(p[0, :2]).all() and np.isneginf(p[0, 2:]).all()
  p = np.asarray(sampling.filter_logits(logits, top_p=0.81))
  assert np.isfinite(p[0, :3]).all() and np.isneginf(p[0, 3])


def test_greedy_pick_equals_argmax_and_log_softmax_bit_for_bit():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 1000)).astype(np.float32) * 4
  logits[1, [10, 500]] = logits[1].max() + 1.0  # a tie: the first index wins
  logits[2, [700, 30]] = np.nan  # NaN counts as the maximum, first one wins
  logits[3] = -np.inf  # every token masked
  logits[4, 999] = np.inf
  logits[5] = 0.0  # all equal
  tok, lp = jax.jit(sampling.greedy_pick)(jnp.asarray(logits))
  want_tok = jnp.argmax(logits, axis=-1)
  want_lp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), want_tok[:, None], -1)[:, 0]
  np.testing.assert_array_equal(np.asarray(tok), np.asarray(want_tok))
  assert np.asarray(tok).tolist()[:3] == [int(np.argmax(logits[0])), 10, 30]
  np.testing.assert_array_equal(np.asarray(lp), np.asarray(want_lp))  # NaNs in the same places
  assert tok.dtype == jnp.int32


@pytest.mark.parametrize("top_p", [0.999, 0.95, 0.5, 0.05])
def test_filters_equal_transformers_warpers_without_ties(top_p):
  """Temperature, top-k and top-p as transformers chains its warpers, on float32 logits with
  no exact ties (with ties ours keeps every tied token; see filter_logits), p near 1 included,
  where the head's mass cannot be resolved in float32 and the tail's can."""
  torch = pytest.importorskip("torch")
  from transformers.generation import logits_process as lp  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(7)
  rows = []
  for scale in (0.5, 1, 2, 3, 4, 8):  # a Qwen-sized vocabulary
    row = np.unique((rng.standard_normal(160_000) * scale).astype(np.float32))[:151_936]
    rows.append(rng.permutation(row))
  x = np.stack(rows)
  for temperature, top_k in ((1.0, 0), (0.7, 0), (1.3, 50)):
    chain = [lp.TemperatureLogitsWarper(temperature)]
    if top_k:
      chain.append(lp.TopKLogitsWarper(top_k))
    chain.append(lp.TopPLogitsWarper(top_p))
    ref = torch.from_numpy(x.copy())
    for warper in chain:
      ref = warper(None, ref)
    want = np.isfinite(ref.numpy())
    got = np.isfinite(np.asarray(jax.jit(
        lambda v, t=temperature, k=top_k: sampling.filter_logits(v / t, top_k=k, top_p=top_p))(x)))
    np.testing.assert_array_equal(got, want, err_msg=f"T={temperature} k={top_k}")


def _nucleus_numpy(x, top_p):
  """Reference: sort each row, keep the prefix whose mass before each token is < top_p."""
  keep = np.zeros(x.shape, bool)
  for r, row in enumerate(x.astype(np.float64)):
    order = np.argsort(-row, kind="stable")
    probs = np.exp(row - row.max())
    probs /= probs.sum()
    before = np.cumsum(probs[order]) - probs[order]
    keep[r] = row >= row[order][before < top_p].min()
  return keep


@pytest.mark.parametrize("top_p", [0.95, 0.5, 0.1, 1e-6])
def test_nucleus_filter_equals_a_sorted_reference(top_p):
  rng = np.random.default_rng(1)
  x = (rng.standard_normal((6, 3000)) * np.array([[0.3], [1], [2], [4], [8], [1]])).astype(
      np.float32)
  x[5, :7] = x[5].max() + 2.0  # seven tied top logits: all kept, whatever top_p
  got = np.isfinite(np.asarray(jax.jit(lambda v: sampling.filter_logits(v, top_p=top_p))(x)))
  np.testing.assert_array_equal(got, _nucleus_numpy(x, top_p))
  assert got[5, :7].all()
  # After top-k the mass is over every token top-k kept, ties at the k-th logit included.
  x[4, :40] = np.sort(x[4])[-20]
  k = np.asarray(sampling.filter_logits(jnp.asarray(x), top_k=20))
  got = np.isfinite(np.asarray(sampling.filter_logits(jnp.asarray(x), top_k=20, top_p=top_p)))
  np.testing.assert_array_equal(got, _nucleus_numpy(k, top_p))


def test_sample_step_draws_what_jax_random_categorical_draws():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.standard_normal((8, 500)).astype(np.float32) * 3)
  keys = jax.random.split(jax.random.key(3), 8)
  for params in (sampling.SamplingParams(4, temperature=1.0),
                 sampling.SamplingParams(4, temperature=0.7, top_k=50, top_p=0.9)):
    tok, lp, model_lp = jax.jit(lambda x, k: sampling.sample_step(x, k, jnp.int32(2), params))(
        logits, keys)
    scaled = sampling.filter_logits(logits / params.temperature, params.top_k, params.top_p)
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 2)
    want = jax.vmap(jax.random.categorical)(step_keys, scaled)
    np.testing.assert_array_equal(np.asarray(tok), np.asarray(want))
    pick = lambda v: np.take_along_axis(np.asarray(jax.nn.log_softmax(v)),
                                        np.asarray(want)[:, None], 1)[:, 0]
    np.testing.assert_allclose(np.asarray(lp), pick(scaled), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model_lp), pick(logits), rtol=0, atol=1e-6)
    assert tok.dtype == jnp.int32 and lp.shape == model_lp.shape == (8,)
