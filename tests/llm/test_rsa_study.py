"""The RSA study's own pieces: the plurality teacher and the per-seed table."""

import json
import os

import numpy as np
import pytest

from jaxlab.core import stats
from jaxlab.llm import rsa_study, tasks


def test_plurality_votes_length_then_each_position():
  rng = np.random.default_rng(0)
  assert rsa_study.plurality(["abcd", "abxd", "zbcd"], rng) == "abcd"
  # Length by vote (4 twice), then positions over the words that reach them.
  assert rsa_study.plurality(["abcd", "abce", "ab", "abcd"], rng) == "abcd"
  # A tie is drawn, and only among the tied characters.
  draws = {rsa_study.plurality(["ax", "ay"], np.random.default_rng(s)) for s in range(40)}
  assert draws == {"ax", "ay"}
  with pytest.raises(ValueError):
    rsa_study.plurality([], rng)


def _agg_row(word, cands, form="aggregation"):
  meta = {"rsa_form": form, "word": word, "source_question": word + "="}
  if form == "aggregation":
    meta["candidates"] = cands
  return {"task": "spell_backward", "question": " ".join(cands) + f" {word}=",
          "answer": word[::-1], "seed": 0, "metadata": meta}


def test_teacher_targets_the_candidates_never_the_answer(tmp_path, capsys):
  rows = [_agg_row("abcd", [], form="standard"),
          _agg_row("abcd", [" dcbx", " dcbx", "dcba", " qqqq"]),  # the plurality is wrong
          _agg_row("wxyz", [" zyxw", " zyaw", " zbxw", " zyxc"]),
          _agg_row("abab", ["", " ", "", ""])]  # no answers: nothing to teach
  out = rsa_study.teacher_rows(rows)
  assert [r["answer"] for r in out] == ["dcbx", "zyxw"]
  assert [r["metadata"]["true_answer"] for r in out] == ["dcba", "zyxw"]
  assert out == rsa_study.teacher_rows(rows)  # ties are keyed on the row, not on a global rng
  src = str(tmp_path / "rows.jsonl")
  tasks.write_jsonl(rows, src)
  assert rsa_study.main(["teacher", f"--rows={src}", f"--out={tmp_path / 'sft.jsonl'}"]) == 0
  assert "wrote 2 plurality-target rows" in capsys.readouterr().err
  bad = dict(rows[1], metadata={"rsa_form": "aggregation"})
  with pytest.raises(tasks.TaskDataError, match="rows.jsonl:1: an aggregation row without"):
    rsa_study.teacher_rows([bad], where="rows.jsonl")


def _point(step, acc, maj, tokens):
  overall = {"accuracy": acc, "majority": maj, "pass_at_n": min(1.0, 2 * acc),
             "distinct_answers": 3.0, "tokens_cum": tokens}
  return {"step": step, "overall": overall}


def test_table_reads_every_seed_and_model(tmp_path):
  for seed, lift in ((0, 0.5), (1, 0.6)):
    d = tmp_path / f"s{seed}" / "agg_rsa"
    d.mkdir(parents=True)
    results = {"problems": [{"answer": "abcd"}],
               "rsa": {"steps": [_point(0, 0.1, 0.2, 16), _point(1, lift, 0.7, 32)]},
               "self_refine": {"steps": [_point(0, 0.1, 0.2, 16), _point(1, 0.15, 0.2, 32)]},
               "sampling": {"steps": [_point(0, 0.1, 0.2, 16), _point(1, 0.1, 0.3, 32)]}}
    (d / "results.json").write_text(json.dumps(results))
    if seed == 0:  # the step files give per-position accuracy
      (d / "rsa").mkdir()
      for step, texts in ((0, [" abcx", " zzzz"]), (1, [" abcd", "abcd\n"])):
        state = {"problems": [{"texts": texts}]}
        (d / "rsa" / f"step_{step:04d}.json").write_text(json.dumps(state))
  crit, curves = rsa_study.collect(str(tmp_path))
  assert crit[0]["step0_letter_accuracy"] == 3 / 8 and crit[0]["final_letter_accuracy"] == 1
  assert "final_letter_accuracy" not in crit[1]
  assert [(r["arm"], r["seed"]) for r in crit] == [("agg", 0), ("agg", 1)]
  assert crit[1]["gain"] == pytest.approx(0.5) and crit[1]["rsa_minus_majority"] == 0.3
  assert crit[0]["self_refine_final_accuracy"] == 0.15 and crit[0]["tokens_per_problem"] == 32
  assert len(curves) == 2 * 3 * 2
  export = tmp_path / "export"
  assert rsa_study.main(["table", f"--study={tmp_path}", f"--export={export}",
                         f"--plot={tmp_path / 'img' / 'rsa.png'}"]) == 0
  columns, rows = stats.read_seed_rows(str(export / "criteria.csv"))
  assert tuple(columns) == rsa_study.COLUMNS and len(rows) == 2
  assert os.path.getsize(tmp_path / "img" / "rsa.png") > 1000
  assert rsa_study.main(["table", f"--study={tmp_path / 'none'}", f"--export={export}"]) == 2
