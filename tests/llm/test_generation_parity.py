"""Greedy generation with the KV-cache sampler equals transformers' ``generate`` on left-padded
batches (the decoder's logit parity is in tests/models/decoder/test_parity.py)."""

import jax
import numpy as np
import pytest

from jaxlab.llm import sampling
from jaxlab.models.decoder import params as checkpoint
from tests.models.decoder.tiny_hf import left_padded_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("name", ["llama3", "qwen2", "qwen3_tied", "qwen3_untied"])
def test_greedy_generation_matches_transformers(hf_dirs, name):
  ref, path = hf_dirs[name]
  model, _ = checkpoint.from_pretrained(path, tokenizer=False)
  tokens, mask, _ = left_padded_batch(seed=1)
  n = 32
  with torch.no_grad():
    # eos=2 is a stop token on both sides: HF pads finished rows with pad_token_id (0).
    want = ref.generate(torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                        max_new_tokens=n, do_sample=False, pad_token_id=0,
                        eos_token_id=2).numpy()[:, tokens.shape[1]:]
  want = np.pad(want, ((0, 0), (0, n - want.shape[1])))  # all rows may stop before n
  params = sampling.SamplingParams(max_new_tokens=n, temperature=0.0, stop_tokens=(2,), pad_id=0)
  out = sampling.generate(model, tokens, mask, jax.random.key(0), params)
  np.testing.assert_array_equal(np.asarray(out.tokens), want)
  stops = want == 2
  want_len = np.where(stops.any(1), stops.argmax(1) + 1, n)
  np.testing.assert_array_equal(np.asarray(out.lengths), want_len)
