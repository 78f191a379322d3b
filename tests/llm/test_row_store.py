"""Lazy task rows (``jaxlab.llm.data.RowStore``) and SFT's per-process batches built from them
(and llm_rl's start-up pass over them).

A store indexes its JSONL files by line offsets without parsing; a row is parsed (and
validated, naming ``file:line`` and the field) only when asked for. SFT builds each batch from
the rows it needs, and must give exactly the batches of tokenizing every row up front.
"""

import json
import os
import tempfile

import numpy as np
import pytest

from jaxlab.core import loop
from jaxlab.core import mesh as mesh_lib
from jaxlab.core.errors import DataError
from jaxlab.core.mesh import make_mesh
from jaxlab.llm import data as data_lib
from jaxlab.llm import sft, tasks
from jaxlab.llm import train as train_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "data", "llm", "chain_sum_train.jsonl")


def _row(i, **extra):
  return {"task": "chain_sum", "question": f"{i} + 1 =", "answer": str(i + 1), "seed": i,
          **extra}


def _write(path, lines):
  path.write_text("".join(line + "\n" for line in lines))
  return str(path)


def test_rows_are_indexed_without_parsing_and_parsed_once_when_asked(tmp_path):
  a = _write(tmp_path / "a.jsonl", [json.dumps(_row(0)), "", "  ", json.dumps(_row(1)),
                                    json.dumps(_row(2))])
  b = _write(tmp_path / "b.jsonl", [json.dumps(_row(10)), json.dumps(_row(11))])
  store = data_lib.RowStore([a, b])
  assert len(store) == 5 and store.parsed == 0
  assert [store.where(i) for i in range(5)] == [(a, 1), (a, 2), (a, 3), (b, 1), (b, 2)]
  got = store.rows([3, 1, 3])
  assert got == [(b, 1, _row(10)), (a, 2, _row(1)), (b, 1, _row(10))]
  assert store.parsed == 2  # each asked row once
  store.rows([1, 3])
  assert store.parsed == 2  # cached
  store.rows([1], cache=False)
  assert store.parsed == 3
  # The same rows, numbers and limits as reading every row.
  assert data_lib.load_rows([a, b]) == store.rows(range(5))
  assert [r for _, _, r in data_lib.load_rows([a, b], limit=2)] == [_row(0), _row(1), _row(10),
                                                                    _row(11)]
  assert len(data_lib.RowStore([a, b], limit=2)) == 4
  assert [r for _, _, r in data_lib.load_rows([TRAIN])] == tasks.load_jsonl(TRAIN)


def test_least_recently_used_rows_leave_the_cache(tmp_path):
  a = _write(tmp_path / "a.jsonl", [json.dumps(_row(i)) for i in range(4)])
  store = data_lib.RowStore([a], cache_size=2)
  store.rows([0, 1])
  store.rows([0])  # 0 is now the most recent
  store.rows([2])  # drops 1
  assert store.parsed == 3
  store.rows([0, 2])
  assert store.parsed == 3
  store.rows([1])
  assert store.parsed == 4


@pytest.mark.parametrize("bad, message", [
    ('{"task": "chain_sum", "question": "1 + 1 =", "seed": 0}', ":4: missing field 'answer'"),
    ('{"task": "chain_sum", "question": "1 =", "answer": 2, "seed": 0}',
     ":4: field 'answer' must be str, got int 2"),
    ('{"task": "chain_sum", "question": ', ":4: invalid JSON"),
])
def test_a_bad_row_is_named_by_file_line_and_field_when_parsed(tmp_path, bad, message):
  path = _write(tmp_path / "bad.jsonl", [json.dumps(_row(0)), "", json.dumps(_row(1)), bad])
  store = data_lib.RowStore([path])  # indexing does not parse
  assert len(store) == 3 and store.where(2) == (path, 3)  # row 3 is on line 4
  store.rows([0, 1])
  with pytest.raises(DataError, match=path + message) as raised:
    store.rows([2])
  with pytest.raises(DataError) as whole:  # the message of reading every row
    tasks.load_jsonl(path)
  assert str(raised.value) == str(whole.value)


def test_missing_or_empty_files(tmp_path):
  with pytest.raises(DataError, match="nope.jsonl: task file does not exist"):
    data_lib.RowStore([str(tmp_path / "nope.jsonl")])
  empty = _write(tmp_path / "empty.jsonl", ["", " "])
  with pytest.raises(DataError, match="empty.jsonl: no rows"):
    data_lib.RowStore([empty])


def _config(train, **data):
  c = sft.default_config()
  c.data.train_files = (train,)
  c.data.update(data)
  c.batch_size = 8
  c.model.update(dict(hidden_size=32, intermediate_size=64, num_layers=1, head_dim=8))
  c.dtype = "float32"
  loop.validate(sft.TRAINER, c)
  return c


def test_sft_batches_from_lazy_rows_equal_tokenizing_every_row(tmp_path):
  c = _config(TRAIN, max_train_rows=40)
  run = sft.SFTRun(c, str(tmp_path / "run"), make_mesh())
  rows = data_lib.load_rows(c.data.train_files, c.data.max_train_rows)
  pairs = [sft.format_row(c, r) for _, _, r in rows]
  tokenizer = sft._build_tokenizer(c, str(tmp_path / "whole"), [p + q for p, q in pairs])
  assert tokenizer.get_vocab() == run.tokenizer.get_vocab()
  tokens, mask = sft.encode_sft(tokenizer, [p for p, _ in pairs], [q for _, q in pairs])
  assert (run.num_rows, run.seq_len) == tokens.shape
  for step in (0, 4, 5):  # 5 crosses into the second epoch
    idx = data_lib.batch_indices(step, c.batch_size, run.num_rows, c.seed)
    got = run.host_batch(step)
    np.testing.assert_array_equal(got["tokens"], tokens[idx])
    np.testing.assert_array_equal(got["loss_mask"], mask[idx])
    part = run.host_batch(step, np.array([1, 6]))
    np.testing.assert_array_equal(part["tokens"], tokens[idx[[1, 6]]])
  # One process holds every row of the batch, placed as a whole batch would be.
  rows_mine = train_lib.process_rows(run.mesh, (c.batch_size, run.seq_len))
  np.testing.assert_array_equal(rows_mine, np.arange(c.batch_size))
  placed = train_lib.shard_batch(run.host_batch(0, rows_mine), run.mesh, rows_mine,
                                 c.batch_size)
  np.testing.assert_array_equal(np.asarray(placed["tokens"]), tokens[
      data_lib.batch_indices(0, c.batch_size, run.num_rows, c.seed)])


def test_sft_start_checks_every_row(tmp_path):
  lines = [json.dumps(_row(i)) for i in (0, 1, 2, 30, 4)]
  good = _write(tmp_path / "good.jsonl", lines)
  bad = _write(tmp_path / "bad.jsonl", lines[:3] + [json.dumps({"task": "chain_sum"})]
               + lines[3:])
  tokenizer = sft._build_tokenizer(_config(good), tempfile.mkdtemp(), ["0123456789 +="])
  with pytest.raises(DataError, match=f"{bad}:4: missing field 'question'"):
    sft._job_seq_len(_config(bad), data_lib.RowStore([bad]), tokenizer)
  with pytest.raises(DataError, match=f"{bad}:4: missing field 'question'"):
    sft._job_chars(_config(bad), data_lib.RowStore([bad]))
  c = _config(good, completion_format=" {answer}")
  # The longest row: bos + "30 + 1 =" + " 31" + eos = 13 tokens (the others have 11).
  assert sft._job_seq_len(c, data_lib.RowStore([good]), tokenizer) == 13
  c = _config(good, completion_format=" {answer}", max_len=12)
  with pytest.raises(DataError, match=f"{good}:4: 13 tokens, longer than "
                                      "'config.data.max_len'=12"):
    sft._job_seq_len(c, data_lib.RowStore([good]), tokenizer)
  c = _config(good)
  c.data.prompt_format = "{question} {extra}"  # check_config reads the first row only
  with pytest.raises(DataError, match=f"{good}:1: .* field the row does not have"):
    sft._job_seq_len(c, data_lib.RowStore([good]), tokenizer)


def test_rl_start_checks_every_row_and_measures_the_prompts(tmp_path):
  """llm_rl's start-up pass (rl._job_prompt_len): Tp is the longest prompt (what tokenizing
  every row up front gives); the first bad or over-long row is named as before."""
  from jaxlab.llm import rl  # pylint: disable=import-outside-toplevel
  lines = [json.dumps(_row(i)) for i in (0, 1, 2, 300, 4)]
  good = _write(tmp_path / "good.jsonl", lines)
  bad = _write(tmp_path / "bad.jsonl", lines[:3] + [json.dumps({"task": "chain_sum"})]
               + lines[3:])
  tokenizer = sft._build_tokenizer(_config(good), tempfile.mkdtemp(), ["0123456789 +="])
  c = rl.default_config()
  c.data.train_files = (good,)
  store = data_lib.RowStore([good])
  from jaxlab.models.tokenizer import encode_prompts  # pylint: disable=import-outside-toplevel
  whole = encode_prompts(tokenizer, [c.data.prompt_format.format(**r)
                                     for _, _, r in data_lib.load_rows([good])])
  assert rl._job_prompt_len(c, store, tokenizer) == max(map(len, whole)) == 1 + len("300 + 1 =")
  assert store.parsed == 5 and not store._cache  # every row once, none kept
  with pytest.raises(DataError, match=f"{bad}:4: missing field 'question'"):
    rl._job_prompt_len(c, data_lib.RowStore([bad]), tokenizer)
  c.data.max_prompt_len = 9
  with pytest.raises(DataError, match=f"{good}:4: the prompt has 10 tokens, longer than "
                                      "'config.data.max_prompt_len'=9"):
    rl._job_prompt_len(c, store, tokenizer)
  c.data.max_prompt_len = 0
  c.data.prompt_format = "{question} {extra}"
  with pytest.raises(DataError, match=f"{good}:1: 'config.data.prompt_format' read a field"):
    rl._job_prompt_len(c, store, tokenizer)


def test_put_rows_of_every_row_is_put():
  mesh = make_mesh()
  sharding = train_lib.batch_sharding(mesh, (8, 3))
  rows = mesh_lib.local_rows(sharding, (8, 3))
  np.testing.assert_array_equal(rows, np.arange(8))
  x = np.arange(24, dtype=np.int32).reshape(8, 3)
  got = mesh_lib.put_rows(x, rows, (8, 3), sharding)
  assert got.sharding == sharding
  np.testing.assert_array_equal(np.asarray(got), x)
