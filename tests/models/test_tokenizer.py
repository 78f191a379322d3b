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


def test_plain_fast_tokenizer_loads_as_autotokenizer_would_without_torch(tmp_path):
  """A directory whose tokenizer_config names the plain fast tokenizer loads through that
  class (the same object AutoTokenizer builds, without AutoTokenizer's import of torch); any
  other class name still goes through AutoTokenizer."""
  import json  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from transformers import AutoTokenizer  # pylint: disable=import-outside-toplevel
  texts = ["What is 12+7?\nAnswer: 19"]
  tok_lib.train_char_tokenizer(texts, str(tmp_path))
  ours, auto = tok_lib.load_tokenizer(str(tmp_path)), AutoTokenizer.from_pretrained(tmp_path)
  assert type(ours) is type(auto)
  messages = [{"role": "user", "content": "1+2"}]
  def encoded(tok):
    return (tok(texts[0])["input_ids"], tok.all_special_ids, tok.pad_token_id,
            tok.apply_chat_template(messages, add_generation_prompt=True))
  assert encoded(ours) == encoded(auto)
  def imports_torch(code):
    script = f"import sys; {code}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip() == "True"
  # Only where the fast tokenizer's own module does not import torch (transformers 5.2x does
  # not; 5.17, on the GPU machines, imports it through its GGUF helpers).
  if not imports_torch("import transformers.tokenization_utils_tokenizers"):
    assert not imports_torch("from jaxlab.models import tokenizer as t; "
                             "t.load_tokenizer(sys.argv[1])")

  with open(tmp_path / "tokenizer_config.json") as f:
    config = json.load(f)
  assert config["tokenizer_class"] in ("TokenizersBackend", "PreTrainedTokenizerFast")
  config["tokenizer_class"] = "LlamaTokenizerFast"  # model-specific: AutoTokenizer's choice
  with open(tmp_path / "tokenizer_config.json", "w") as f:
    json.dump(config, f)
  assert tok_lib._tokenizer_class(str(tmp_path)) is AutoTokenizer  # pylint: disable=protected-access
