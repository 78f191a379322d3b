"""The char-level tokenizer in HF format and chat templates, loaded back from a model directory."""

import os

from jaxlab.models import tokenizer as tok_lib


def test_char_tokenizer_round_trips_through_autotokenizer(tmp_path):
  texts = ["What is 12+7?\nAnswer: 19", "abc def"]
  trained = tok_lib.train_char_tokenizer(texts, str(tmp_path))
  assert {"tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(tmp_path))
  tok = tok_lib.load_tokenizer(str(tmp_path))
  assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
  ids = tok(texts[0])["input_ids"]
  assert ids[0] == tok.bos_token_id and len(ids) == len(texts[0]) + 1
  assert ids == trained(texts[0])["input_ids"]
  assert tok.decode(ids, skip_special_tokens=True) == texts[0]
  assert tok("Z")["input_ids"][1] == tok.unk_token_id  # unseen character
  len_vocab = len(set("".join(texts))) + 4 + 3  # chars, specials, chat role tags
  assert len(tok) == len_vocab


def test_chat_template(tmp_path):
  tok_lib.train_char_tokenizer(["hi there"], str(tmp_path))
  tok = tok_lib.load_tokenizer(str(tmp_path))
  (ids,) = tok_lib.encode_prompts(tok, ["hi"], chat=True)
  assert tok.decode(ids) == "<|user|>hi<eos><|assistant|>"
  (plain,) = tok_lib.encode_prompts(tok, ["hi"])
  assert tok.decode(plain) == "<bos>hi"
