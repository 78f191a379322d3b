"""A tiny Qwen2.5-VL model directory that the whole stack reads: a random transformers
``Qwen2_5_VLForConditionalGeneration`` (the builder of ``test_parity``), a char-level tokenizer
whose vision tokens carry the model's ids, and a ``preprocessor_config.json`` with small pixel
bounds so that images stay a few merged patches."""

import json
import os

from tests.models.qwen_vl.test_parity import END, IMAGE, START, VIDEO, VOCAB, _build

from jaxlab.models import tokenizer as tok_lib
from jaxlab.models.qwen_vl import inputs, processor

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 ?.,:"
# Image area bounds: 56x56 to 28*28*20 pixels, i.e. 4 to 20 merged patches per image.
MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 20


def write_vl_tokenizer(path: str):
  """A char tokenizer (<pad>=0, <bos>=1, <eos>=2, <unk>=3, then characters) whose vision
  tokens sit at the tiny model's ids (START, IMAGE, VIDEO, END), with the chat role tags of
  the project's char chat template after them; saved to ``path`` in HF format."""
  # pylint: disable-next=import-outside-toplevel
  from tokenizers import Tokenizer, decoders, models, processors
  from transformers import PreTrainedTokenizerFast  # pylint: disable=import-outside-toplevel

  specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
  vocab = {s: i for i, s in enumerate(specials)}
  for ch in ALPHABET:
    vocab[ch] = len(vocab)
  fillers = [f"<|unused_{i}|>" for i in range(len(vocab), START)]
  for f in fillers:
    vocab[f] = len(vocab)
  vision = {START: inputs.VISION_START, IMAGE: inputs.IMAGE_TOKEN, VIDEO: "<|video_pad|>",
            END: inputs.VISION_END}
  for i in sorted(vision):
    assert len(vocab) == i
    vocab[vision[i]] = i
  roles = ["<|system|>", "<|user|>", "<|assistant|>"]
  for r in roles:
    vocab[r] = len(vocab)
  assert len(vocab) <= VOCAB
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
  tok.decoder = decoders.Fuse()
  # Fillers and role tags are not special, so that a random model's output (which favours
  # some of them) decodes to visible text; the role tags still match as whole tokens.
  tok.add_special_tokens(specials + [vision[i] for i in sorted(vision)])
  tok.add_tokens(roles)
  tok.post_processor = processors.TemplateProcessing(
      single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)])
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                 pad_token="<pad>", unk_token="<unk>")
  fast.chat_template = tok_lib.CHAR_CHAT_TEMPLATE
  fast.save_pretrained(path)
  return fast


def save_tiny_vl(path: str, tied: bool = True, seed: int = 0):
  """Writes the model (``save_pretrained``), tokenizer and image processor config to ``path``;
  returns the torch reference model."""
  model = _build(tied, seed)
  model.save_pretrained(path)
  write_vl_tokenizer(path)
  cfg = processor.ImageProcessorConfig(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
  with open(os.path.join(path, processor.PREPROCESSOR_FILE), "w") as f:
    json.dump(cfg.to_dict(), f)
  return model


def sft_config(train_file: str, eval_file: str, prompt_format: str, completion_format: str, *,
               steps: int, eval_rows: int, max_new_tokens: int, log_every: int,
               overrides: dict | None = None):
  """A validated ``llm_sft`` config that trains a very small Qwen2.5-VL from scratch on image
  rows (field ``image``) for a few steps of 4 rows, evaluating once at the end."""
  # pylint: disable=import-outside-toplevel
  from jaxlab.core import config as config_lib
  from jaxlab.core import loop
  from jaxlab.llm import sft
  c = sft.default_config()
  c.model.family = "qwen_vl"
  c.data.train_files = (train_file,)
  c.data.eval_files = (eval_file,)
  c.data.image_field = "image"
  c.data.prompt_format = prompt_format
  c.data.completion_format = completion_format
  c.model.update(dict(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=16))
  c.model.vision.update(dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2,
                             fullatt_block_indexes=(1,)))
  c.dtype = "float32"
  c.steps, c.batch_size, c.log_every = steps, 4, log_every
  c.checkpoint.every = 0
  c.eval.update({"every": steps, "num_examples": eval_rows, "batch_size": eval_rows,
                 "max_new_tokens": max_new_tokens})
  config_lib.set_dotted(c, overrides or {})
  loop.validate(sft.TRAINER, c)
  return c
