"""Task files: validation errors name file:line; verifiers; the shipped data is correct."""

import json
import os
import re

import numpy as np
import pytest

from jaxlab.llm import tasks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOOD = {"task": "chain_sum", "question": "State the final answer: 1 + 2 =", "answer": "3",
        "seed": 0}


def _write(path, lines):
  with open(path, "w") as f:
    for line in lines:
      f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
  return str(path)


@pytest.mark.parametrize("bad, message", [
    ({k: v for k, v in GOOD.items() if k != "answer"}, "missing field 'answer'"),
    (dict(GOOD, seed="7"), "field 'seed' must be int, got str"),
    (dict(GOOD, seed=True), "field 'seed' must be int, got bool"),
    (dict(GOOD, answer=3), "field 'answer' must be str, got int"),
    (dict(GOOD, task="sudoku"), "field 'task'='sudoku' is not a known task"),
    (dict(GOOD, question="  "), "field 'question' is empty"),
    (dict(GOOD, metadata=[1]), "field 'metadata' must be an object"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"task": "chain_sum",', "invalid JSON"),
])
def test_bad_row_names_file_line_and_field(tmp_path, bad, message):
  # Line 1 good, line 2 blank (skipped but counted), line 3 good, line 4 bad.
  path = _write(tmp_path / "t.jsonl", [GOOD, "", GOOD, bad])
  with pytest.raises(ValueError) as err:
    tasks.load_jsonl(path)
  assert str(err.value).startswith(f"{path}:4: ")
  assert message in str(err.value)


def test_missing_and_empty_files(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    tasks.load_jsonl(str(tmp_path / "nope.jsonl"))
  with pytest.raises(ValueError, match="no rows"):
    tasks.load_jsonl(_write(tmp_path / "e.jsonl", [""]))
  rows = tasks.load_jsonl(_write(tmp_path / "ok.jsonl", [GOOD, dict(GOOD, metadata={"a": 1})]))
  assert len(rows) == 2 and rows[1]["metadata"] == {"a": 1}


@pytest.mark.parametrize("completion, ok", [
    (" 15", True), ("15", True), ("15.0", True), ("+15", True), ("30/2", True),
    ("3 + 12 = 15", True), ("The answer is <answer>15</answer>.", True), (" 15\n", True),
    ("-15", False), ("150", False), ("1 5", False), ("", False), ("fifteen", False),
    ("<answer>14</answer> 15", False),  # the tagged answer wins over later text
])
def test_numeric_verifier(completion, ok):
  assert tasks.verify("chain_sum", completion, "15") is ok
  assert tasks.verify("basic_arithmetic", completion, "15") is ok


def test_negative_and_word_answers():
  assert tasks.verify("chain_sum", " -4", "-4")
  assert not tasks.verify("chain_sum", " 4", "-4")
  assert tasks.extract_answer("chain_sum", "no digits here") is None
  assert tasks.verify("spell_backward", " ssilb", "ssilb")
  assert tasks.verify("spell_backward", "<answer>ssilb</answer>", "ssilb")
  assert not tasks.verify("spell_backward", " ssil", "ssilb")
  assert not tasks.verify("spell_backward", " Ssilb", "ssilb")
  assert tasks.accuracy([dict(GOOD), dict(GOOD, task="spell_backward", answer="ab")],
                        [" 3", "ba"]) == {"chain_sum": 1.0, "spell_backward": 0.0, "all": 0.5}


def _expression(question):
  return question.split(":", 1)[1].rstrip("= ").strip()


def test_shipped_data_is_valid_disjoint_and_correct():
  """The files the tiny SFT config trains and evaluates on: every answer equals the question's
  arithmetic, held-out questions never occur in training, and the files stay small."""
  data = os.path.join(REPO, "data", "llm")
  train = tasks.load_jsonl(os.path.join(data, "chain_sum_train.jsonl"))
  held_out = tasks.load_jsonl(os.path.join(data, "chain_sum_eval.jsonl"))
  assert len(train) >= 2000 and len(held_out) >= 200
  for row in train + held_out:
    expr = _expression(row["question"])
    assert re.fullmatch(r"\d( [+-] \d){1,2}", expr), row
    assert int(eval(expr)) == int(row["answer"]), row  # pylint: disable=eval-used
    assert tasks.verify(row["task"], " " + row["answer"], row["answer"])
  assert not {r["question"] for r in held_out} & {r["question"] for r in train}
  assert len({r["question"] for r in train}) == len(train)
  total = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data))
  assert total < 3_000_000  # the noisy RL reference set (8,000 rows) is the largest part


def test_rl_data_noisy_copy_and_compact_prompts():
  """The RL sets: prompts are the compact expression, the noisy SFT copy keeps the true answer
  and corrupts about 35% of its 8,000 rows by 1..3, never the held-out questions."""
  data = os.path.join(REPO, "data", "llm")
  train = tasks.load_jsonl(os.path.join(data, "chain_sum_rl_train.jsonl"))
  held_out = tasks.load_jsonl(os.path.join(data, "chain_sum_rl_eval.jsonl"))
  noisy = tasks.load_jsonl(os.path.join(data, "chain_sum_rl_sft_noisy.jsonl"))
  assert len(train) == 2000 and len(held_out) == 200 and len(noisy) == 8000
  for row in train + held_out:
    assert _expression(row["question"]) == row["metadata"]["expression"]
    assert int(eval(row["metadata"]["expression"])) == int(row["answer"])  # pylint: disable=eval-used
  moved = [abs(int(r["answer"]) - int(r["metadata"]["true_answer"])) for r in noisy]
  assert 0.3 < np.mean([m > 0 for m in moved]) < 0.4
  assert set(moved) <= {0, 1, 2, 3}
  assert {r["question"] for r in noisy} == {r["question"] for r in train}
  assert not {r["question"] for r in held_out} & {r["question"] for r in train}


def test_countdown_verifier():
  want = "94*4 - 61 - 6"  # = 309 with the numbers 94, 4, 61, 6
  assert tasks.verify("countdown", "94*4 - 6 - 61", want)
  assert tasks.verify("countdown", "<answer>(94 * 4) - (61 + 6)</answer>", want)
  assert tasks.verify("countdown", "some words\n94*4 - 61 - 6 = 309", want)
  assert not tasks.verify("countdown", "94*4 - 61 - 5", want)  # wrong value
  assert not tasks.verify("countdown", "94*4 - 61 - 6 + 4 - 4", want)  # right value, 4 reused
  assert not tasks.verify("countdown", "309", want)  # a number not given
  assert not tasks.verify("countdown", "__import__('os').getcwd()", want)  # not arithmetic
  assert not tasks.verify("countdown", "1/0", "1")
  assert tasks.evaluate_expression("7/2 - 1/2") == 3
  for row in tasks.load_jsonl(os.path.join(REPO, "data", "llm", "countdown_eval.jsonl")):
    assert tasks.verify("countdown", row["answer"], row["answer"]), row


def test_generation_is_deterministic_and_excludes(tmp_path):
  pytest.importorskip("reasoning_gym")
  diff = dict(min_terms=2, max_terms=3, max_digits=1)
  a = tasks.generate("chain_sum", 20, seed=11, **diff)
  assert a == tasks.generate("chain_sum", 20, seed=11, **diff)
  for row in a:
    expr = _expression(row["question"])
    assert int(eval(expr)) == int(row["answer"])  # pylint: disable=eval-used
  b = tasks.generate("chain_sum", 20, seed=11, exclude_questions=[r["question"] for r in a[:5]],
                     **diff)
  assert not {r["question"] for r in a[:5]} & {r["question"] for r in b}
  # The command line writes loadable rows; spell_backward and basic_arithmetic work too.
  out = str(tmp_path / "sb.jsonl")
  assert tasks.main(["--task=spell_backward", "--n=5", "--seed=1", f"--out={out}",
                     "--difficulty=max_word_len=5"]) == 0
  rows = tasks.load_jsonl(out)
  assert all(r["answer"] == r["metadata"]["word"][::-1] for r in rows)
  ba = tasks.generate("basic_arithmetic", 5, seed=2, max_terms=3, max_digits=2)
  assert all(tasks.verify("basic_arithmetic", r["answer"], r["answer"]) for r in ba)
  with pytest.raises(tasks.TaskDataError, match="only"):
    tasks.generate("chain_sum", 500, seed=0, min_terms=2, max_terms=2, max_digits=1)
  assert tasks.main(["--task=chain_sum", "--n=2", "--seed=1", f"--out={out}",
                     "--difficulty=bogus=1"]) == 2
