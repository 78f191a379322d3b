"""Resumable, batched generation for benchmark harnesses: one output text per keyed prompt.

A harness hands over ``(key, prompt text)`` pairs; this module encodes them, runs the jaxlab
sampler in fixed-size batches and appends each finished batch to ``outputs.jsonl``
(:func:`jaxlab.core.files.append_jsonl`). A run killed at any moment loses at most the batch in
flight: the next call reads the file back, skips every key already there and generates only
the rest. Keys are unique, so re-running never produces a second record for an item.

Outputs do not depend on how items are batched or on which items were already done:

  * every prompt is left-padded to one length ``P`` for the whole item list (the longest
    prompt rounded up to ``pad_multiple``), so each batch runs the same compiled program on
    rows laid out the same way, whatever else is in the batch;
  * the last, partial batch is filled with copies of its own rows (dropped afterwards);
  * each row's PRNG key is ``fold_in(key(seed), stable_hash(item key))``, so sampled
    (temperature > 0) outputs are a function of the item and the seed, not of its batch.

Greedy decoding (temperature 0, the default) is the reproducible setting; sampling is seeded.

Vision-language models (the ``qwen_vl`` family, recognised by the sampler's test: a model with
``prepare_prompt``) take, per prompt, a list of PIL images (empty for a text-only prompt). The
prompt text must already hold one ``<|image_pad|>`` per image, in image order (bare or inside
``<|vision_start|>...<|vision_end|>``; :func:`jaxlab.evals.kaleidoscope.render` writes them).
Encoding is :func:`jaxlab.models.qwen_vl.inputs.encode` with the model directory's image
processor config, which expands each placeholder to its image's merged patches, so:

  * the padded length ``P`` counts the image tokens too. It is fixed before the first batch by
    encoding every prompt once (pixels discarded), which reads and preprocesses every image
    once per call; the images are then encoded again, batch by batch, for the sampler. Pass a
    lazy sequence (images opened on ``__getitem__``) to keep memory flat on a large run;
  * a batch's ``pixel_values`` hold only its own rows' images (the filler copies' too), so
    the patch count varies from batch to batch. Each row's result still depends only on its
    own row: the vision tower attends within one image at a time, and each image's embeddings
    are spliced into the row whose placeholders they fill.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable, Sequence

import numpy as np

from jaxlab.core import files
from jaxlab.core.errors import ConfigError, DataError

OUTPUTS_FILE = "outputs.jsonl"


@dataclasses.dataclass(frozen=True)
class Decoding:
  """How a harness decodes (defaults: greedy).

  Attributes:
    max_new_tokens: generation budget per item.
    temperature: 0 for greedy; else sampling at this temperature.
    top_p: nucleus mass (1.0: off).
    seed: the PRNG seed of sampled decoding (unused when greedy).
  """
  max_new_tokens: int = 1024
  temperature: float = 0.0
  top_p: float = 1.0
  seed: int = 0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ConfigError(f"max_new_tokens={self.max_new_tokens}: expected >= 1")
    if self.temperature < 0:
      raise ConfigError(f"temperature={self.temperature}: expected >= 0")
    if not 0.0 < self.top_p <= 1.0:
      raise ConfigError(f"top_p={self.top_p}: expected a value in (0, 1]")


def stable_hash(key: str) -> int:
  """A 31-bit integer of ``key`` that is the same in every process (unlike ``hash``)."""
  return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "little") >> 1


def read_outputs(path: str) -> dict[str, dict[str, Any]]:
  """``key -> record`` of an outputs file (empty if there is none); the first record of a key
  wins, so a duplicated line can never count twice."""
  if not os.path.exists(path):
    return {}
  try:
    records = files.read_jsonl(path)
  except ValueError as err:
    raise DataError(str(err)) from None
  out: dict[str, dict[str, Any]] = {}
  for i, r in enumerate(records):
    if not isinstance(r, dict) or "key" not in r or "output" not in r:
      raise DataError(f"{path}: record {i + 1}: expected an object with 'key' and 'output'")
    out.setdefault(r["key"], r)
  return out


def padded_length(lengths: Sequence[int], multiple: int) -> int:
  """The longest length rounded up to a multiple of ``multiple`` (at least ``multiple``)."""
  longest = max(lengths) if len(lengths) else 1
  return max(multiple, -(-longest // multiple) * multiple)


def _encode_images(model: Any, tokenizer: Any, image_config: Any, texts: Sequence[str],
                   images: Sequence[Sequence[Any]]) -> tuple[list[list[int]], Any, Any]:
  """``qwen_vl.inputs.encode`` of prompts that are already chat-templated."""
  from jaxlab.models.qwen_vl import inputs  # pylint: disable=import-outside-toplevel
  return inputs.encode(tokenizer, model.config, image_config, texts,
                       [list(ims) for ims in images], add_special_tokens=False)


def generate_outputs(model: Any, tokenizer: Any, prompts: Sequence[tuple[str, str]],
                     path: str, *, decoding: Decoding = Decoding(), batch_size: int = 16,
                     pad_multiple: int = 64, mesh: Any = None,
                     progress: Callable[[int, int], None] | None = None,
                     images: Sequence[Sequence[Any]] | None = None,
                     image_config: Any = None) -> dict[str, dict[str, Any]]:
  """Generates an output for every ``(key, prompt)`` not yet in ``path``; returns all records.

  Args:
    model: a jaxlab causal LM (any family the sampler takes).
    tokenizer: its tokenizer; prompts are encoded as given (apply any chat template first).
    prompts: ``(item key, model-ready prompt text)``; keys must be unique.
    path: the outputs JSONL (appended batch by batch; read back on resume).
    decoding: see :class:`Decoding`.
    batch_size: prompts per sampler call.
    pad_multiple: prompts are left-padded to the longest prompt rounded up to this.
    mesh: shard each batch over the mesh's data axes (None: one device).
    progress: called as ``progress(done, total)`` after each batch.
    images: vision-language models only: per prompt, its PIL images in placeholder order
      (possibly empty); any sequence, e.g. one that opens the images on access. None: no
      images (a vision-language model then reads text-only prompts).
    image_config: the model directory's
      :class:`~jaxlab.models.qwen_vl.processor.ImageProcessorConfig`; required with a
      vision-language model.

  Returns:
    ``key -> {"key", "output", "prompt_tokens", "new_tokens"}`` for every prompt.

  Raises:
    DataError: duplicate keys, an outputs file that is not ours, or prompt images that do
      not fit (a list per prompt, one placeholder per image).
    ConfigError: images for a model without a vision tower, or a vision-language model
      without ``image_config``.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from jaxlab.llm import sampling  # pylint: disable=import-outside-toplevel
  from jaxlab.models.tokenizer import encode_prompts  # pylint: disable=import-outside-toplevel

  keys = [k for k, _ in prompts]
  if len(set(keys)) != len(keys):
    seen: set[str] = set()
    dup = next(k for k in keys if k in seen or seen.add(k))
    raise DataError(f"item key {dup!r} occurs twice; keys must be unique")
  if batch_size < 1:
    raise ConfigError(f"batch_size={batch_size}: expected >= 1")
  multimodal = sampling.takes_images(model)
  if images is not None and not multimodal:
    raise ConfigError(f"images were given but {type(model).__name__} has no vision tower")
  if multimodal and image_config is None:
    raise ConfigError(f"{type(model).__name__} is a vision-language model: pass image_config "
                      "(the model directory's ImageProcessorConfig)")
  if images is not None and len(images) != len(prompts):
    raise DataError(f"got {len(prompts)} prompts but image lists for {len(images)}; expected "
                    "one (possibly empty) list per prompt")
  texts = [p for _, p in prompts]
  done = read_outputs(path)
  if multimodal:
    # One prompt at a time: only the ids are kept (the pixels are encoded again per batch).
    ids = [_encode_images(model, tokenizer, image_config, [t],
                          [images[i] if images is not None else []])[0][0]
           for i, t in enumerate(texts)]
  else:
    ids = encode_prompts(tokenizer, texts, add_special_tokens=False)
  length = padded_length([len(x) for x in ids], pad_multiple)
  todo = [i for i, k in enumerate(keys) if k not in done]
  params = sampling.params_for(model, tokenizer, decoding.max_new_tokens,
                               temperature=decoding.temperature, top_p=decoding.top_p)
  pad_id = params.pad_id
  base = jax.random.key(decoding.seed)
  total = len(keys)
  for s in range(0, len(todo), batch_size):
    rows = todo[s:s + batch_size]
    filled = [rows[j % len(rows)] for j in range(batch_size)]
    tokens, mask = sampling.left_pad([ids[i] for i in filled], pad_id=pad_id, length=length)
    row_keys = jax.vmap(lambda h: jax.random.fold_in(base, h))(
        np.asarray([stable_hash(keys[i]) for i in filled], np.uint32))
    vision = {}
    if multimodal:
      batch_ids, pixel_values, grid = _encode_images(
          model, tokenizer, image_config, [texts[i] for i in filled],
          [images[i] if images is not None else [] for i in filled])
      if batch_ids != [ids[i] for i in filled]:
        raise DataError(f"the images of item {keys[rows[0]]!r}'s batch changed between two "
                        "reads; expected the same images every time")
      vision = dict(pixel_values=pixel_values, grid_thw=grid)
    out = sampling.generate(model, tokens, mask, row_keys, params, mesh=mesh, **vision)
    toks, lens = np.asarray(out.tokens), np.asarray(out.lengths)
    records = []
    for j, i in enumerate(rows):
      n = int(lens[j])
      records.append({"key": keys[i], "output": tokenizer.decode(toks[j, :n].tolist(),
                                                                 skip_special_tokens=True),
                      "prompt_tokens": len(ids[i]), "new_tokens": n})
    files.append_jsonl(path, records, ensure_ascii=False)
    for r in records:
      done[r["key"]] = r
    if progress is not None:
      progress(len(done), total)
  return {k: done[k] for k in keys}

