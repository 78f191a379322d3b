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
  # The noisy RL reference set (8,000 rows) is the largest part, then the RSA study's words.
  assert total < 3_500_000


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


def test_rsa_study_words_are_compact_reversals_and_disjoint():
  """The RSA study's sets (data/llm/README.md): 7-8-letter words asked as "<word>=", the
  answer the reversed word, held-out words never in training."""
  data = os.path.join(REPO, "data", "llm")
  train = tasks.load_jsonl(os.path.join(data, "spell_backward_rsa_train.jsonl"))
  held_out = tasks.load_jsonl(os.path.join(data, "spell_backward_rsa_eval.jsonl"))
  assert len(train) == 3000 and len(held_out) == 64
  for row in train + held_out:
    word = row["metadata"]["word"]
    assert row["question"] == word + "=" and row["answer"] == word[::-1], row
    assert 7 <= len(word) <= 8
  assert not {r["question"] for r in held_out} & {r["question"] for r in train}


def test_letter_corruption_replaces_each_letter_at_the_rate():
  rows = [{"task": "spell_backward", "question": f"w{i}=", "answer": "tuobnruT", "seed": 0}
          for i in range(2000)]
  out = tasks.corrupt_letters(rows, 0.4, seed=3)
  assert out == tasks.corrupt_letters(rows, 0.4, seed=3)
  flips = np.asarray([[a != b for a, b in zip(r["answer"], "tuobnruT")] for r in out])
  assert abs(flips.mean() - 0.4) < 0.02  # per letter, independently
  assert abs(np.mean(flips.sum(1) == 0) - 0.6 ** 8) < 0.01
  assert all(r["metadata"]["true_answer"] == "tuobnruT" for r in out)
  assert all(r["answer"][-1].isupper() and r["answer"][:-1].islower() for r in out)  # case kept
  with pytest.raises(tasks.TaskDataError, match="row 1: answer '42' has no letters"):
    tasks.corrupt_letters([dict(rows[0], answer="42")], 0.4, seed=0)


def test_question_format_rewrites_and_names_a_missing_field(tmp_path, capsys):
  pytest.importorskip("reasoning_gym")
  out = str(tmp_path / "sb.jsonl")
  common = ["--task=spell_backward", "--n=4", "--seed=1", f"--out={out}",
            "--difficulty=max_word_len=5"]
  assert tasks.main(common + ["--metadata_keys=word", "--question_format={metadata[word]}=",
                              "--corrupt=0.5", "--corrupt_mode=letters"]) == 0
  rows = tasks.load_jsonl(out)
  assert all(r["question"] == r["metadata"]["word"] + "=" for r in rows)
  assert all(r["metadata"]["true_answer"] == r["metadata"]["word"][::-1] for r in rows)
  # Exclusion compares the rewritten questions.
  out2 = str(tmp_path / "sb2.jsonl")
  assert tasks.main([*common[:3], f"--out={out2}", common[4], f"--exclude={out}",
                     "--question_format={metadata[word]}="]) == 0
  assert not {r["question"] for r in rows} & {r["question"] for r in tasks.load_jsonl(out2)}
  assert tasks.main(common + ["--question_format={metadata[noun]}="]) == 2
  assert "--question_format='{metadata[noun]}=' does not format reasoning-gym item 0" in (
      capsys.readouterr().err)


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


def test_task_accuracy_reports_each_eval_file(tmp_path):
  """Rows from two files (an in-domain and an out-of-domain split of one task) get one
  accuracy each beside the pooled one; rows of one file get none."""
  from jaxlab.llm import data as data_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.llm.evaluation import TaskAccuracy  # pylint: disable=import-outside-toplevel
  from jaxlab.models.tokenizer import train_char_tokenizer  # pylint: disable=import-outside-toplevel
  root = os.path.join(os.path.dirname(__file__), "..", "..", "data", "llm")
  files = [os.path.join(root, "chain_sum_rl_eval.jsonl"),
           os.path.join(root, "chain_sum_rl_ood.jsonl")]
  located = data_lib.load_rows(files, 3)
  rows = [r for _, _, r in located]
  tok = train_char_tokenizer([r["question"] + r["answer"] for r in rows])
  ev = TaskAccuracy("{question}", tok, rows, batch_size=6, max_new_tokens=4,
                    files=[f for f, _, _ in located])
  # Right answers for the first in-domain row and every out-of-domain row.
  texts = [" " + r["answer"] if i == 0 or i >= 3 else " x" for i, r in enumerate(rows)]
  ev.completions = lambda model: texts
  metrics, _ = ev(None)
  assert metrics == {"eval/accuracy": pytest.approx(4 / 6),
                     "eval/accuracy_file/chain_sum_rl_eval": pytest.approx(1 / 3),
                     "eval/accuracy_file/chain_sum_rl_ood": 1.0}
  one = TaskAccuracy("{question}", tok, rows[:3], 6, 4, files=[f for f, _, _ in located[:3]])
  one.completions = lambda model: texts[:3]
  assert one(None)[0] == {"eval/accuracy": pytest.approx(1 / 3)}
  with pytest.raises(ValueError, match="2 file names for 3 rows"):
    TaskAccuracy("{question}", tok, rows[:3], 6, 4, files=files)
