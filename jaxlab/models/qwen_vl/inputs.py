"""Host-side model inputs of Qwen2.5-VL: prompt texts with image placeholders + PIL images ->
token ids per prompt, ``pixel_values`` and ``grid_thw``.

A prompt marks each image with ``<|image_pad|>`` (the chat template of a Qwen2.5-VL tokenizer
writes ``<|vision_start|><|image_pad|><|vision_end|>`` for an image turn; a bare placeholder is
wrapped the same way here). The images of all prompts go through :func:`processor.preprocess`
in prompt order, so that ``pixel_values`` and ``grid_thw`` list them in the order the model
splices them in; each placeholder is then repeated as many times as its image has merged
patches (:func:`processor.expand_image_placeholders`) before the text is tokenized, with the
chat template when asked. Prompts may hold 0, 1 or more images of different sizes.

The ids come back unpadded: left padding is the sampler's (``jaxlab.llm.sampling.left_pad``),
which a model directory's loader must not import.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
from PIL import Image

from jaxlab.core.errors import DataError
from jaxlab.models import tokenizer as tok_lib
from jaxlab.models.qwen_vl import processor
from jaxlab.models.qwen_vl.config import QwenVLConfig

VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_TOKEN = processor.IMAGE_TOKEN
# An image as the chat template writes it.
IMAGE_SPAN = VISION_START + IMAGE_TOKEN + VISION_END
_BARE = re.compile(r"(?<!" + re.escape(VISION_START) + r")" + re.escape(IMAGE_TOKEN)
                   + r"(?!" + re.escape(VISION_END) + r")")


def count_placeholders(text: str) -> int:
  """``<|image_pad|>`` placeholders in a (not yet expanded) prompt text."""
  return text.count(IMAGE_TOKEN)


def image_prompt(text: str, num_images: int) -> str:
  """``text`` after ``num_images`` image spans: the images first, as in a chat user turn."""
  return IMAGE_SPAN * num_images + text


def wrap_placeholders(text: str) -> str:
  """Each bare ``<|image_pad|>`` (not already between ``<|vision_start|>`` and
  ``<|vision_end|>``) becomes a whole image span."""
  return _BARE.sub(IMAGE_SPAN, text)


def encode(tokenizer: Any, config: QwenVLConfig, image_config: processor.ImageProcessorConfig,
           texts: Sequence[str], images: Sequence[Sequence[Image.Image]], *, chat: bool = False,
           add_special_tokens: bool = True
           ) -> tuple[list[list[int]], np.ndarray | None, np.ndarray | None]:
  """Token ids per prompt and the images' patches, ready for left padding and the sampler.

  Args:
    tokenizer: the checkpoint's tokenizer; ``<|image_pad|>`` must be one token with the model's
      ``image_token_id``.
    config: the model's config (image token id, merge size).
    image_config: the directory's image processor config.
    texts: prompts; the k-th placeholder of a prompt stands for its k-th image.
    images: per prompt, its PIL images (an empty list for a text-only prompt).
    chat: wrap each prompt in the tokenizer's chat template as one user turn.
    add_special_tokens: let the tokenizer add its special tokens (bos) to plain prompts;
      False for texts already rendered by a chat template.

  Returns:
    ``(ids, pixel_values, grid_thw)``: ``pixel_values`` ``[N, patch_dim]`` float32 and
    ``grid_thw`` ``[num_images, 3]`` int64 over all prompts in order, or both None without
    images.

  Raises:
    DataError: a prompt's placeholder count differs from its image count (both named), an image
      the processor rejects, a merge size that disagrees with the model, or a tokenizer that
      does not map the placeholder to the model's image token.
  """
  if len(images) != len(texts):
    raise DataError(f"got {len(texts)} prompt(s) but image lists for {len(images)}; expected "
                    "one (possibly empty) list per prompt")
  for i, (text, ims) in enumerate(zip(texts, images)):
    if count_placeholders(text) != len(ims):
      raise DataError(f"prompt {i} has {count_placeholders(text)} {IMAGE_TOKEN} placeholder(s) "
                      f"but {len(ims)} image(s); expected one placeholder per image")
  merge = config.vision.spatial_merge_size
  if image_config.merge_size != merge or image_config.patch_size != config.vision.patch_size:
    raise DataError(f"{processor.PREPROCESSOR_FILE}: merge_size={image_config.merge_size}, "
                    f"patch_size={image_config.patch_size}; the model expects {merge} and "
                    f"{config.vision.patch_size}")
  flat = [im for ims in images for im in ims]
  pixel_values = grid = None
  expanded = []
  if flat:
    pixel_values, grid = processor.preprocess(flat, image_config)
  start = 0
  for text, ims in zip(texts, images):
    grids = grid[start:start + len(ims)] if ims else np.zeros((0, 3), np.int64)
    start += len(ims)
    expanded.append(processor.expand_image_placeholders(wrap_placeholders(text), grids,
                                                        IMAGE_TOKEN, merge))
  ids = tok_lib.encode_prompts(tokenizer, expanded, chat=chat,
                               add_special_tokens=add_special_tokens)
  want = 0 if grid is None else sum(processor.num_image_tokens(g, merge) for g in grid)
  got = sum(int(np.sum(np.asarray(r) == config.image_token_id)) for r in ids)
  if got != want:
    raise DataError(f"the tokenizer turned the prompts' {IMAGE_TOKEN} placeholders into {got} "
                    f"tokens of id {config.image_token_id} (the model's image_token_id); "
                    f"expected {want}, one per merged patch")
  return ids, pixel_values, grid
