"""Resumable batched generation: outputs independent of batching and of interruptions."""

import json
import os

import pytest

from jaxlab.core import files
from jaxlab.core.errors import ConfigError, DataError
from jaxlab.evals import benchmark, generation
from tests.models.decoder.tiny_hf import save_tiny_char_decoder

ALPHABET = "0123456789+= abcdefghijklmnopqrstuvwxyz?АБВГ{}\":"


@pytest.fixture(scope="module")
def tiny():
  import tempfile  # pylint: disable=import-outside-toplevel
  from jaxlab import models  # pylint: disable=import-outside-toplevel
  path = save_tiny_char_decoder(tempfile.mkdtemp(prefix="gen_model_"), ALPHABET)
  return models.from_pretrained(path)


def _prompts(n=7):
  return [(f"item{i}", "q" * (1 + (3 * i) % 11) + f" {i}+{i}=") for i in range(n)]


def _run(tiny, path, prompts, batch_size, decoding=generation.Decoding(max_new_tokens=6)):
  model, tok = tiny
  return generation.generate_outputs(model, tok, prompts, path, decoding=decoding,
                                     batch_size=batch_size, pad_multiple=16)


def test_outputs_do_not_depend_on_batch_size_or_interruption(tiny, tmp_path):
  prompts = _prompts()
  whole = _run(tiny, str(tmp_path / "a.jsonl"), prompts, batch_size=4)
  assert list(whole) == [k for k, _ in prompts]
  other = _run(tiny, str(tmp_path / "b.jsonl"), prompts, batch_size=3)
  assert {k: r["output"] for k, r in whole.items()} == {k: r["output"] for k, r in other.items()}
  # An interrupted run: the first 3 items done, then a half-written line from the kill.
  path = str(tmp_path / "c.jsonl")
  _run(tiny, path, prompts[:3], batch_size=2)
  with open(path, "a") as f:
    f.write('{"key": "item3", "outp')
  resumed = _run(tiny, path, prompts, batch_size=4)
  assert resumed == whole
  keys = [r["key"] for r in files.read_jsonl(path)]
  assert sorted(keys) == sorted(k for k, _ in prompts)  # every item exactly once


def test_sampled_outputs_are_a_function_of_item_and_seed(tiny, tmp_path):
  prompts = _prompts(5)
  d = generation.Decoding(max_new_tokens=6, temperature=1.0, seed=3)
  a = _run(tiny, str(tmp_path / "a.jsonl"), prompts, 2, d)
  b = _run(tiny, str(tmp_path / "b.jsonl"), prompts[::-1], 5, d)
  assert {k: r["output"] for k, r in a.items()} == {k: r["output"] for k, r in b.items()}
  c = _run(tiny, str(tmp_path / "c.jsonl"), prompts, 2,
           generation.Decoding(max_new_tokens=6, temperature=1.0, seed=4))
  assert any(a[k]["output"] != c[k]["output"] for k in a)


def test_bad_inputs(tiny, tmp_path):
  with pytest.raises(DataError, match="occurs twice"):
    _run(tiny, str(tmp_path / "a.jsonl"), [("x", "1"), ("x", "2")], 2)
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"key": "a"}\n')
  with pytest.raises(DataError, match="'key' and 'output'"):
    generation.read_outputs(str(bad))
  with pytest.raises(ConfigError, match="top_p"):
    generation.Decoding(top_p=0.0)


def test_pinned_settings_refuse_a_different_resume(tmp_path):
  wd = str(tmp_path)
  benchmark.pin_settings(wd, {"regime": "direct", "languages": ("es",), "batch_size": 4})
  benchmark.pin_settings(wd, {"regime": "direct", "languages": ["es"], "batch_size": 8})
  with pytest.raises(ConfigError, match="regime='direct', now regime='cot'"):
    benchmark.pin_settings(wd, {"regime": "cot", "languages": ["es"], "batch_size": 8})
  with open(os.path.join(wd, benchmark.RUN_FILE)) as f:
    assert json.load(f)["regime"] == "direct"


def test_read_jsonl_drops_only_an_unfinished_last_line(tmp_path):
  p = str(tmp_path / "x.jsonl")
  files.append_jsonl(p, [{"a": 1}, {"a": 2}])
  with open(p, "a") as f:
    f.write('{"a": 3')
  assert files.read_jsonl(p) == [{"a": 1}, {"a": 2}]
  with open(p, "w") as f:
    f.write('{"a": 1}\nnot json\n{"a": 2}\n')
  with pytest.raises(ValueError, match="x.jsonl:2"):
    files.read_jsonl(p)
