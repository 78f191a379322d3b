r"""Sample a completion from a local Hugging Face-format model directory.

  python -m launch.generate --model=DIR --prompt="2+3=" [--max_new_tokens=64] \
      [--temperature=0.7 --top_p=0.9 --top_k=0 --seed=0] [--chat]

Prints the completion (without the prompt). A bad model directory (missing config.json,
weights or tokenizer, unsupported architecture) is reported in one line, exit status 2.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

_MODEL = flags.DEFINE_string("model", None, "model directory (config.json, safetensors, "
                             "tokenizer files)", required=True)
_PROMPT = flags.DEFINE_multi_string("prompt", None, "prompt text; repeat for a batch",
                                    required=True)
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "tokens to generate")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 for greedy decoding")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass (1: off)")
_TOP_K = flags.DEFINE_integer("top_k", 0, "keep the k most likely tokens (0: off)")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed")
_CHAT = flags.DEFINE_bool("chat", False, "wrap the prompt in the tokenizer's chat template")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Keep stderr to the one error line (jax logs its backend probing at INFO).
  logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxlab.core.errors import JaxlabError  # pylint: disable=g-import-not-at-top
  from jaxlab import models  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
  from jaxlab.models import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top

  try:
    # The registry picks the model family from the directory's config.json.
    model, tok = models.from_pretrained(_MODEL.value, dtype=jnp.dtype(_DTYPE.value))
    prompts = tok_lib.encode_prompts(tok, _PROMPT.value, chat=_CHAT.value)
    stop = set(model.config.stop_token_ids)
    if tok.eos_token_id is not None:
      stop.add(int(tok.eos_token_id))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    params = sampling.SamplingParams(
        max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value, top_k=_TOP_K.value,
        top_p=_TOP_P.value, stop_tokens=tuple(sorted(stop)), pad_id=int(pad_id))
    tokens, mask = sampling.left_pad(prompts, pad_id=int(pad_id))
    out = sampling.generate(model, tokens, mask, jax.random.key(_SEED.value), params)
  except (JaxlabError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  out_tokens = np.asarray(out.tokens)
  lengths = np.asarray(out.lengths)
  for row, n in zip(out_tokens, lengths):
    print(tok.decode(row[:n].tolist(), skip_special_tokens=True))


if __name__ == "__main__":
  app.run(main)
