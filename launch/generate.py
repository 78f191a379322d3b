r"""Sample a completion from a local Hugging Face-format model directory.

  python -m launch.generate --model=DIR --prompt="2+3=" [--max_new_tokens=64] \
      [--temperature=0.7 --top_p=0.9 --top_k=0 --seed=0] [--chat]
  python -m launch.generate --model=VL_DIR --image=cat.png --prompt="What is this?"

Prints the completion (without the prompt), one line per prompt. With a vision-language model
(Qwen2.5-VL), ``--image`` (repeatable) gives the images in the order of the prompts'
``<|image_pad|>`` placeholders; one prompt without placeholders gets its images first, in a
chat user turn. Bad input (missing config.json, weights or tokenizer, an unsupported
architecture, a tensor of the wrong shape, a missing or unreadable image, placeholders that do
not match the images) is reported in one line, exit status 2.
"""

from __future__ import annotations

from absl import flags, logging

from launch import cli
from launch.cli import fail

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
_IMAGE = flags.DEFINE_multi_string("image", [], "image file for a vision-language model; "
                                   "repeat in the order of the <|image_pad|> placeholders")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")


def _read_images(prompts: list[str], paths: list[str]) -> list:
  """The --image files, decoded, after checking them against the prompts' placeholders (before
  any model is loaded, so that bad input fails fast)."""
  from jaxlab.core.errors import DataError  # pylint: disable=g-import-not-at-top
  from jaxlab.models.qwen_vl import inputs, processor  # pylint: disable=g-import-not-at-top
  holes = sum(inputs.count_placeholders(p) for p in prompts)
  if holes and holes != len(paths):
    raise DataError(f"the prompts hold {holes} {inputs.IMAGE_TOKEN} placeholder(s) but "
                    f"{len(paths)} --image file(s) were given; expected one image per "
                    "placeholder")
  if paths and not holes and len(prompts) != 1:
    raise DataError(f"{len(paths)} --image file(s) and {len(prompts)} prompts without "
                    f"{inputs.IMAGE_TOKEN} placeholders; mark where each image goes")
  return [processor.load_image(p) for p in paths]


def _encode_multimodal(model, tok, images: list) -> tuple[list[list[int]], dict]:
  """Prompt ids and the ``pixel_values`` / ``grid_thw`` keywords of a vision-language model."""
  from jaxlab.models.qwen_vl import inputs, processor  # pylint: disable=g-import-not-at-top
  texts, chat = list(_PROMPT.value), _CHAT.value
  if images and not any(inputs.count_placeholders(t) for t in texts):
    # One prompt, images not placed: they open the user turn, as the chat template puts them.
    texts = [inputs.image_prompt(texts[0], len(images))]
    chat = chat or bool(getattr(tok, "chat_template", None))
  per_prompt, start = [], 0
  for t in texts:
    n = inputs.count_placeholders(t)
    per_prompt.append(images[start:start + n])
    start += n
  image_config = processor.ImageProcessorConfig.from_dir(_MODEL.value) if images else (
      processor.ImageProcessorConfig())
  ids, pixel_values, grid = inputs.encode(tok, model.config, image_config, texts, per_prompt,
                                          chat=chat)
  if pixel_values is None:
    return ids, {}
  return ids, {"pixel_values": pixel_values, "grid_thw": grid}


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])} (every option is a --flag)")
  # Keep stderr to the one error line (jax logs its backend probing at INFO).
  logging.set_verbosity(logging.WARNING)
  from jaxlab.core.errors import DataError, JaxlabError  # pylint: disable=g-import-not-at-top
  try:
    # Image files and placeholder counts first: such bad input fails before jax is imported.
    images = _read_images(_PROMPT.value, _IMAGE.value)
  except JaxlabError as e:
    fail(str(e))
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxlab import models  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
  from jaxlab.models import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top

  try:
    # The registry picks the model family from the directory's config.json.
    model, tok = models.from_pretrained(_MODEL.value, dtype=jnp.dtype(_DTYPE.value))
    params = sampling.params_for(model, tok, _MAX_NEW.value, temperature=_TEMPERATURE.value,
                                 top_k=_TOP_K.value, top_p=_TOP_P.value)
    pad_id = params.pad_id
    pixels = {}
    if sampling.takes_images(model):  # a vision-language family
      prompts, pixels = _encode_multimodal(model, tok, images)
    elif _IMAGE.value:
      raise DataError(f"{_MODEL.value}: --image needs a vision-language model; this "
                      f"{type(model).__name__} has no vision tower")
    else:
      prompts = tok_lib.encode_prompts(tok, _PROMPT.value, chat=_CHAT.value)
    tokens, mask = sampling.left_pad(prompts, pad_id=int(pad_id))
    out = sampling.generate(model, tokens, mask, jax.random.key(_SEED.value), params, **pixels)
  except (JaxlabError, ValueError) as e:
    fail(str(e))
  out_tokens = np.asarray(out.tokens)
  lengths = np.asarray(out.lengths)
  for row, n in zip(out_tokens, lengths):
    print(tok.decode(row[:n].tolist(), skip_special_tokens=True))


if __name__ == "__main__":
  cli.run(main)
