"""The looped-LM synthetic tasks: seeded generators, their verifiers, held-out disjointness,
hand-computed examples, the command line, and the committed files under data/looped/."""

import os
import random
import re
import subprocess
import sys

import pytest

from jaxlab.llm import tasks
from jaxlab.looped import tasks as lt

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "data", "looped")


# -- independent solvers, written from the task definitions -------------------------------------


def solve_pointer(question):
  m = re.fullmatch(r"((?:[a-z]>[a-z];)+)\?([a-z])\^(\d+)=", question)
  assert m, question
  edges = dict(pair.split(">") for pair in m.group(1).rstrip(";").split(";"))
  x = m.group(2)
  for _ in range(int(m.group(3))):
    x = edges[x]
  return x


def solve_chain(question):
  m = re.fullmatch(r"(\d(?:[-+*]\d)*) mod (\d+)=", question)
  assert m, question
  expr, p = m.group(1), int(m.group(2))
  value = int(expr[0])
  for op, d in zip(expr[1::2], expr[2::2]):
    value = eval(f"{value}{op}{d}")  # left to right, one operator at a time
  return str(value % p)


def solve_question(question):
  m = re.fullmatch(r"S:[a-z .]+ Q:[a-z]+ has (\d+) [a-z]+((?:, [a-z]+ \d+)+)\. [a-z ?]+ A:",
                   question)
  assert m, question
  count = int(m.group(1))
  for verb, n in re.findall(r", ([a-z]+) (\d+)", m.group(2)):
    count += int(n) if verb in ("gets", "finds") else -int(n)
  return str(count)


SOLVERS = {"pointer_chase": solve_pointer, "modular_chain": solve_chain,
           "question_shaped": solve_question}


# -- generators ------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(SOLVERS))
def test_generators_are_seeded_and_answers_check(task):
  rows = lt.generate(task, 300, seed=5)
  assert rows == lt.generate(task, 300, seed=5)
  assert [r["question"] for r in rows] != [r["question"] for r in lt.generate(task, 300, 6)]
  assert len({r["question"] for r in rows}) == 300
  for r in rows:
    tasks.validate_row(r, task)
    assert SOLVERS[task](r["question"]) == r["answer"], r
    assert tasks.verify(task, r["answer"], r["answer"])
    # A row is a pure function of (seed, source_index): regenerated alone, it is the same.
    again = lt.GENERATORS[task](random.Random(f"5:{r['metadata']['source_index']}"))
    assert again[0] == r["question"] and again[1] == r["answer"]


def test_verifiers_reject_wrong_answers():
  assert tasks.verify("pointer_chase", "c", "c") and not tasks.verify("pointer_chase", "d", "c")
  assert tasks.verify("modular_chain", " 5", "5") and not tasks.verify("modular_chain", "6", "5")
  assert tasks.verify("question_shaped", "17", "17")
  assert not tasks.verify("question_shaped", "no idea", "17")


def test_hand_computed_examples():
  # c -> a -> d -> c: two hops from a land on c, three hops return to a.
  edges = {"c": "a", "a": "d", "d": "c"}
  assert lt.pointer_successor(edges, "a", 2) == "c"
  assert lt.pointer_successor(edges, "a", 3) == "a"
  assert solve_pointer("c>a;a>d;d>c;?a^2=") == "c"
  # ((3 + 5) * 2 - 4) mod 7 = 12 mod 7 = 5 (not 3 + 10 - 4 = 9 -> 2, as precedence would give).
  assert lt.modular_chain_value([3, 5, 2, 4], ["+", "*", "-"], 7) == 5
  assert lt.modular_chain_value([1, 4], ["-"], 7) == 4  # -3 mod 7
  assert solve_chain("3+5*2-4 mod 7=") == "5"
  # Pointer questions: a single cycle through all symbols, so hops 1..K-1 never return.
  q, a, meta = lt.pointer_chase_row(random.Random(0), symbols=5, min_hops=5, max_hops=5)
  assert a == q[q.index("?") + 1] and meta == {"hops": 5}
  q, a, _ = lt.pointer_chase_row(random.Random(0), symbols=5, min_hops=2, max_hops=2)
  assert a != q[q.index("?") + 1]
  # The question-shaped segments cover the prompt in order: system, question, answer marker.
  q, _, meta = lt.question_shaped_row(random.Random(3))
  seg = meta["segments"]
  assert q[slice(*seg["system"])].startswith("S:") and q[slice(*seg["question"])].startswith("Q:")
  assert q[slice(*seg["answer"])] == "A:" and seg["answer"][1] == len(q)
  assert seg["system"][1] == seg["question"][0] and seg["question"][1] == seg["answer"][0]


def test_exclusion_makes_held_out_disjoint():
  held = lt.generate("modular_chain", 100, seed=1, max_len=3)
  train = lt.generate("modular_chain", 100, seed=1, exclude_questions=[r["question"] for r in held],
                      max_len=3)
  # The same seed: without the exclusion the two would share their first rows.
  assert held[0] == lt.generate("modular_chain", 1, seed=1, max_len=3)[0]
  assert not {r["question"] for r in held} & {r["question"] for r in train}


@pytest.mark.parametrize("task, settings, message", [
    ("pointer_chase", {"symbols": 30}, "symbols=30 must lie in [2, 26]"),
    ("pointer_chase", {"min_hops": 5, "max_hops": 2}, "min_hops=5 must be <= max_hops=2"),
    ("modular_chain", {"modulus": 1}, "modulus=1 must be >= 2"),
    ("modular_chain", {"max_len": "3"}, "max_len='3' must be an int"),
    ("question_shaped", {"colour": 2}, "unknown setting"),
    ("modular_chain", {"max_len": 1}, "min_len=2 must be <= max_len=1"),
])
def test_bad_settings_fail_in_one_line(task, settings, message):
  with pytest.raises(tasks.TaskDataError, match=re.escape(message)):
    lt.generate(task, 4, 0, **settings)


def test_too_few_distinct_questions_is_an_error():
  # Digits 0-1 and three operators: 2 * 3 * 2 = 12 chains of length 2.
  with pytest.raises(tasks.TaskDataError, match="only 12 distinct questions"):
    lt.generate("modular_chain", 20, 0, modulus=2, min_len=2, max_len=2)


def test_command_line_writes_rows_and_excludes(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO)
  held, out = tmp_path / "held.jsonl", tmp_path / "train.jsonl"
  run = lambda *a: subprocess.run([sys.executable, "-m", "jaxlab.looped.tasks", *a], cwd=REPO,
                                  env=env, capture_output=True, text=True, timeout=120)
  assert run("--task=pointer_chase", "--n=20", "--seed=3", f"--out={held}",
             "--difficulty=symbols=3,max_hops=4").returncode == 0
  proc = run("--task=pointer_chase", "--n=10", "--seed=4", f"--out={out}",
             "--difficulty=symbols=3,max_hops=4", f"--exclude={held}")
  assert proc.returncode == 0, proc.stderr
  a, b = tasks.load_jsonl(str(held)), tasks.load_jsonl(str(out))
  assert len(a) == 20 and len(b) == 10
  assert not {r["question"] for r in a} & {r["question"] for r in b}
  bad = run("--task=pointer_chase", "--n=5", "--seed=0", f"--out={out}",
            "--difficulty=symbols=40")
  assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
  assert "symbols=40" in bad.stderr


# -- the committed files ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(SOLVERS))
def test_committed_files_are_valid_small_and_disjoint(task):
  train = tasks.load_jsonl(os.path.join(DATA, f"{task}_train.jsonl"))
  held = tasks.load_jsonl(os.path.join(DATA, f"{task}_eval.jsonl"))
  assert not {r["question"] for r in train} & {r["question"] for r in held}
  for name in (f"{task}_train.jsonl", f"{task}_eval.jsonl"):
    assert os.path.getsize(os.path.join(DATA, name)) < 300_000
  for r in train[:200] + held:
    assert r["task"] == task and SOLVERS[task](r["question"]) == r["answer"]
  # The files are what the README's commands write (same seed, same exclusion).
  assert held == lt.generate(task, len(held), 1000)
  assert train == lt.generate(task, len(train), 1, [r["question"] for r in held])
  if task == "pointer_chase":
    extrap = tasks.load_jsonl(os.path.join(DATA, "pointer_chase_extrap.jsonl"))
    assert {r["metadata"]["hops"] for r in extrap} <= set(range(9, 17))
    assert max(r["metadata"]["hops"] for r in train) <= 8
