"""Tokenizers: the checkpoint's own (via transformers, no torch needed), or a tiny char-level one.

The char-level tokenizer is for models trained from scratch here on procedurally generated
tasks: a vocabulary of the characters seen in the training texts plus four special tokens,
saved in Hugging Face format (tokenizer.json + tokenizer_config.json) so that the same
:func:`load_tokenizer` path loads it as a real checkpoint's tokenizer.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

from jaxlab.models.errors import ModelConfigError

# Files any one of which makes a directory loadable by transformers' tokenizers.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")

# A minimal chat template for from-scratch models: role-tagged turns ended by eos.
CHAR_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}")


class TokenizerError(ModelConfigError):
  """The tokenizer files of a model directory are missing or unreadable (a ValueError)."""


def load_tokenizer(path: str):
  """The checkpoint's transformers tokenizer, from a local directory (never the hub).

  Raises:
    TokenizerError: no tokenizer files in ``path``, or they fail to load; the message names the
      directory and the files looked for.
  """
  if not any(os.path.isfile(os.path.join(path, f)) for f in _TOKENIZER_FILES):
    raise TokenizerError(f"{path}: no tokenizer files (looked for {', '.join(_TOKENIZER_FILES)});"
                         " pass tokenizer=False to load the model without one")
  try:
    tok = _tokenizer_class(path).from_pretrained(path, local_files_only=True)
  except Exception as e:  # transformers raises many types; report them as one line
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise TokenizerError(f"{path}: cannot load tokenizer: {msg}") from None
  if tok.pad_token_id is None and tok.eos_token_id is not None:
    # Left-padded batches need some pad id; its embedding is never attended to.
    tok.pad_token = tok.eos_token
  return tok


def _tokenizer_class(path: str):
  """The class that loads ``path``: transformers' plain fast tokenizer when
  ``tokenizer_config.json`` names it (as the char-level tokenizer and many checkpoints do), else
  ``AutoTokenizer``, which picks a model-specific class. Both give the same object for a plain
  fast tokenizer, but ``AutoTokenizer`` imports torch (through the model configs; ~2 s of CPU per
  process here) and the plain class does not: it is the start-up cost of every LLM launcher that
  reads a model directory or resumes a run."""
  import transformers  # pylint: disable=g-import-not-at-top
  try:
    with open(os.path.join(path, "tokenizer_config.json")) as f:
      name = json.load(f).get("tokenizer_class")
  except (OSError, ValueError, AttributeError):
    name = None
  plain = transformers.PreTrainedTokenizerFast
  # (v5 renamed the class TokenizersBackend and kept the old name for it)
  if (name in ("PreTrainedTokenizerFast", plain.__name__)
      and os.path.isfile(os.path.join(path, "tokenizer.json"))):
    return plain
  return transformers.AutoTokenizer


def encode_prompts(tokenizer: Any, prompts: Sequence[str] | Sequence[Sequence[dict[str, str]]],
                   chat: bool = False, add_special_tokens: bool = True) -> list[list[int]]:
  """Token ids per prompt; with ``chat=True`` each prompt (a string or a list of messages) goes
  through the tokenizer's chat template with the generation prompt appended.
  """
  out = []
  for p in prompts:
    if chat:
      messages = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
      if not getattr(tokenizer, "chat_template", None):
        raise TokenizerError("the tokenizer has no chat_template; drop --chat or add one")
      ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
      if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in some versions
        ids = ids["input_ids"]
      out.append(list(ids))
    else:
      out.append(list(tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"]))
  return out


def train_char_tokenizer(texts: Iterable[str], path: str | None = None, *,
                         extra_chars: str = "", add_bos: bool = True,
                         chat_template: str | None = CHAR_CHAT_TEMPLATE):
  """A character-level tokenizer over the characters of ``texts``, in HF format.

  Ids: ``<pad>=0, <bos>=1, <eos>=2, <unk>=3``, then the sorted characters (and any chat role
  tags of ``chat_template``, added as single tokens).

  Args:
    texts: training texts; their characters form the vocabulary.
    path: if given, ``tokenizer.json`` and ``tokenizer_config.json`` are written there.
    extra_chars: characters to include even if absent from ``texts``.
    add_bos: prepend ``<bos>`` when encoding with special tokens.
    chat_template: a Jinja chat template, or None.

  Returns:
    a transformers fast tokenizer (loadable again with :func:`load_tokenizer`).
  """
  # pylint: disable-next=g-import-not-at-top
  from tokenizers import Tokenizer, decoders, models, processors
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top

  specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
  chars = set(extra_chars)
  for t in texts:
    chars.update(t)
  vocab = {s: i for i, s in enumerate(specials)}
  for ch in sorted(chars):
    vocab.setdefault(ch, len(vocab))
  # BPE with no merges splits a string into its characters and maps unseen ones to <unk>; with
  # no pre-tokenizer spaces and newlines are ordinary characters.
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
  tok.decoder = decoders.Fuse()  # join characters without the default spaces between tokens
  role_tags = ["<|system|>", "<|user|>", "<|assistant|>"] if chat_template else []
  tok.add_special_tokens(specials + role_tags)
  if add_bos:
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])])
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                 pad_token="<pad>", unk_token="<unk>")
  if chat_template:
    fast.chat_template = chat_template
  if path is not None:
    os.makedirs(path, exist_ok=True)
    fast.save_pretrained(path)
  return fast
