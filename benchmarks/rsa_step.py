r"""The cost of one RSA step against plain sampling of the same number of completions.

One aggregation step of RSA (jaxlab/llm/rsa.py) generates N completions per problem from
prompts that hold K earlier completions, so its prompts are longer than the question prompts
of plain sampling; the completions themselves have the same length. This measures both on
one random decoder through the same compiled sampler (``jaxlab.llm.sampling.generate``, the
call ``rsa.SamplerGenerator`` makes), all prompts of a step in one batch:

  plain:  B = problems x N prompts of ``question_tokens``, ``new_tokens`` sampled each
  RSA:    B prompts of question + K candidates of ``new_tokens`` + template tokens, same output

Prints the time of each (best of ``--repeats`` after a warm-up), their ratio, and the ratio
of tokens each processes (prompt + generated): RSA costs no more than the extra prompt tokens
it reads when ``time ratio <= token ratio``. The last line is ``ratio=<rsa/plain time>``.

  python -m benchmarks.rsa_step                       # CPU: a 4-layer, 256-wide decoder
  python -m benchmarks.rsa_step --layers=28 --hidden=2048 --heads=16 --kv_heads=8 \
      --head_dim=128 --intermediate=6144 --vocab=151936 --dtype=bfloat16   # Qwen3-1.7B shape
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags

from launch import cli

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_PROBLEMS = flags.DEFINE_integer("problems", 4, "problems per step")
_N = flags.DEFINE_integer("population", 16, "N, completions per problem")
_K = flags.DEFINE_integer("k", 4, "K, candidates per aggregation prompt")
_QUESTION = flags.DEFINE_integer("question_tokens", 32, "question prompt length")
_TEMPLATE = flags.DEFINE_integer("template_tokens", 64, "aggregation template length")
_NEW = flags.DEFINE_integer("new_tokens", 64, "tokens generated per completion")
_LAYERS = flags.DEFINE_integer("layers", 4, "decoder layers")
_HIDDEN = flags.DEFINE_integer("hidden", 256, "hidden size")
_HEADS = flags.DEFINE_integer("heads", 4, "query heads")
_KV_HEADS = flags.DEFINE_integer("kv_heads", 2, "key/value heads")
_HEAD_DIM = flags.DEFINE_integer("head_dim", 64, "per-head width")
_INTERMEDIATE = flags.DEFINE_integer("intermediate", 768, "SwiGLU width")
_VOCAB = flags.DEFINE_integer("vocab", 4096, "vocabulary size")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed calls per side (the best is reported)")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder.config import DecoderConfig  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder.modeling import init_decoder  # pylint: disable=g-import-not-at-top

  config = DecoderConfig(vocab_size=_VOCAB.value, hidden_size=_HIDDEN.value,
                         intermediate_size=_INTERMEDIATE.value, num_layers=_LAYERS.value,
                         num_heads=_HEADS.value, num_kv_heads=_KV_HEADS.value,
                         head_dim=_HEAD_DIM.value, dtype=_DTYPE.value,
                         max_position_embeddings=8192)
  model = init_decoder(config)
  batch = _PROBLEMS.value * _N.value
  new = _NEW.value
  lengths = {"plain": _QUESTION.value,
             "rsa": _QUESTION.value + _TEMPLATE.value + _K.value * new}
  # No stop token: every row generates exactly ``new`` tokens on both sides.
  params = sampling.SamplingParams(max_new_tokens=new, temperature=1.0, stop_tokens=())
  rng = np.random.default_rng(0)
  times = {}
  for name, length in lengths.items():
    prompts = [list(rng.integers(3, _VOCAB.value, size=length)) for _ in range(batch)]
    tokens, mask = sampling.left_pad(prompts, 0)
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    run = lambda: jax.block_until_ready(  # pylint: disable=cell-var-from-loop
        sampling.generate(model, tokens, mask, keys, params).tokens)
    run()  # compile
    best = float("inf")
    for _ in range(_REPEATS.value):
      t0 = time.perf_counter()
      run()
      best = min(best, time.perf_counter() - t0)
    times[name] = best
    print(f"{name}: {batch} prompts of {length} tokens + {new} generated: {best:.3f} s, "
          f"{batch * new / best:,.0f} generated tokens/s")
  token_ratio = (lengths["rsa"] + new) / (lengths["plain"] + new)
  ratio = times["rsa"] / times["plain"]
  print(f"device: {jax.devices()[0].device_kind}; load average "
        f"{os.getloadavg()[0]:.2f}")
  print(f"tokens processed rsa/plain = {token_ratio:.2f}; time rsa/plain = {ratio:.2f} "
        f"({'within' if ratio <= token_ratio else 'above'} the extra prompt tokens)")
  print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
  cli.run(main)
