r"""The synthetic tasks of the looped-LM reproduction (spec §1.7), as task JSONL rows.

Three seeded, pure-python generators write the project's task rows (``{"task", "question",
"answer", "seed", "metadata"}``, :mod:`jaxlab.llm.tasks`), which the SFT trainer reads and the
tasks' verifiers (registered in :data:`jaxlab.llm.tasks.TASKS`) score:

* ``pointer_chase`` (needs depth): a random cyclic permutation of ``symbols`` distinct
  letters (one cycle through all of them, so hops 1..symbols-1 from a symbol all land on
  different symbols and no answer is a fixed point), its edges listed in random order as
  ``x>y;``, then the query ``?x^h=`` asking for the h-hop successor of ``x``:
  ``c>a;a>d;d>c;?a^2=`` -> ``c`` (a -> d -> c). Trained on hops 1..8, the extrapolation file
  asks 9..16.
* ``modular_chain``: ``L`` digits joined by ``+ - *``, evaluated LEFT TO RIGHT (each operator
  applies to the running value, so the chain has depth L - 1; no precedence), the result
  reduced modulo ``p``: ``3+5*2-4 mod 7=`` -> ``((3 + 5) * 2 - 4) mod 7 = 12 mod 7 = 5``.
* ``question_shaped`` (token groups for the analysis): a small probabilistic grammar writes a
  system segment, a word problem and an answer marker (``S:be brief. Q:ann has 3 pens, gets
  2. how many? A:``), answered with a number. ``metadata.segments`` gives the character spans
  of the system segment, the question and the answer marker, so per-group statistics need no
  re-parsing.

Every row is a pure function of ``(task, seed, index, settings)`` (its own ``random.Random``),
recorded as ``metadata.source_index``; questions in ``exclude`` (a held-out file) and
duplicates are skipped, so training and held-out files are disjoint. The CPU-small defaults:
8 symbols (questions of 37-38 characters), chains of 2-6 digits modulo 7 (10-18), and 1-2
operations per word problem (44-63); every character is one of 51 (lower-case letters,
digits, ``S Q A`` and `` >;?^=+-*:,.``), so a char vocabulary stays under 64 symbols.

    python -m jaxlab.looped.tasks --task=pointer_chase --n=200 --seed=1000 \
        --out=data/looped/pointer_chase_eval.jsonl
    python -m jaxlab.looped.tasks --task=pointer_chase --n=2000 --seed=1 \
        --out=data/looped/pointer_chase_train.jsonl --exclude=data/looped/pointer_chase_eval.jsonl
    python -m jaxlab.looped.tasks --task=pointer_chase --n=200 --seed=1001 \
        --difficulty=min_hops=9,max_hops=16 --out=data/looped/pointer_chase_extrap.jsonl

(all the files: data/looped/README.md).
"""

from __future__ import annotations

import inspect
import random
import string
import sys
from typing import Any, Callable, Iterable, Sequence

from jaxlab.llm import tasks as tasks_lib
from jaxlab.llm.tasks import TaskDataError

OPS = "+-*"


# -- the three generators (one row from its own rng) ----------------------------------------------


def pointer_successor(edges: dict[str, str], start: str, hops: int) -> str:
  """Follows ``edges`` from ``start`` ``hops`` times."""
  x = start
  for _ in range(hops):
    x = edges[x]
  return x


def pointer_chase_row(rng: random.Random, symbols: int = 8, min_hops: int = 1,
                      max_hops: int = 8) -> tuple[str, str, dict[str, Any]]:
  """``(question, answer, metadata)`` of one pointer-chasing problem."""
  nodes = rng.sample(string.ascii_lowercase, symbols)  # in cycle order
  edges = {a: nodes[(i + 1) % symbols] for i, a in enumerate(nodes)}
  listed = nodes[:]
  rng.shuffle(listed)
  start = rng.choice(nodes)
  hops = rng.randint(min_hops, max_hops)
  question = "".join(f"{a}>{edges[a]};" for a in listed) + f"?{start}^{hops}="
  return question, pointer_successor(edges, start, hops), {"hops": hops}


def modular_chain_value(digits: Sequence[int], ops: Sequence[str], modulus: int) -> int:
  """Left-to-right value of ``d0 op0 d1 op1 d2 ...`` modulo ``modulus`` (result in [0, p))."""
  value = digits[0] % modulus
  for op, d in zip(ops, digits[1:]):
    value = {"+": value + d, "-": value - d, "*": value * d}[op] % modulus
  return value


def modular_chain_row(rng: random.Random, modulus: int = 7, min_len: int = 2,
                      max_len: int = 6) -> tuple[str, str, dict[str, Any]]:
  """``(question, answer, metadata)`` of one modular chain of ``min_len..max_len`` digits."""
  length = rng.randint(min_len, max_len)
  digits = [rng.randrange(min(modulus, 10)) for _ in range(length)]
  ops = [rng.choice(OPS) for _ in range(length - 1)]
  expr = str(digits[0]) + "".join(f"{o}{d}" for o, d in zip(ops, digits[1:]))
  answer = modular_chain_value(digits, ops, modulus)
  return f"{expr} mod {modulus}=", str(answer), {"length": length}


# The grammar of question_shaped: each symbol expands to one of its alternatives, drawn with the
# given weights; <n> is a number drawn by the generator (the arithmetic must stay >= 0).
SYSTEMS = (("be brief.", 3), ("answer fast.", 2), ("think.", 1))
NAMES = ("ann", "bob", "eve", "tom", "sue")
OBJECTS = ("pens", "cups", "eggs", "keys")
CHANGES = (("gets", 1), ("finds", 1), ("loses", -1), ("gives", -1))
ASKS = (("how many?", 2), ("total?", 1))


def _weighted(rng: random.Random, options: Sequence[tuple[str, int]]) -> str:
  return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def question_shaped_row(rng: random.Random, min_ops: int = 1, max_ops: int = 2,
                        max_value: int = 9) -> tuple[str, str, dict[str, Any]]:
  """``(question, answer, metadata)`` of one question-shaped prompt.

  Grammar: ``prompt -> "S:" system " Q:" name " has " n object clause+ ". " ask " A:"``,
  ``clause -> ", " change " " n`` (``min_ops..max_ops`` clauses); a losing change never takes
  more than is held, so the answer is the count after every clause, >= 0.
  """
  system = _weighted(rng, SYSTEMS)
  count = rng.randint(1, max_value)
  parts = [f"{rng.choice(NAMES)} has {count} {rng.choice(OBJECTS)}"]
  for _ in range(rng.randint(min_ops, max_ops)):
    verb = rng.choice(CHANGES)
    amount = rng.randint(1, max_value) if verb[1] > 0 else rng.randint(0, count)
    count += verb[1] * amount
    parts.append(f", {verb[0]} {amount}")
  head = f"S:{system} "
  body = "Q:" + "".join(parts) + f". {_weighted(rng, ASKS)} "
  question = head + body + "A:"
  segments = {"system": [0, len(head)], "question": [len(head), len(head) + len(body)],
              "answer": [len(question) - 2, len(question)]}
  return question, str(count), {"segments": segments}


GENERATORS: dict[str, Callable[..., tuple[str, str, dict[str, Any]]]] = {
    "pointer_chase": pointer_chase_row,
    "modular_chain": modular_chain_row,
    "question_shaped": question_shaped_row,
}


def _check_settings(task: str, settings: dict[str, Any]) -> None:
  """Names and ranges of a generator's settings; one line naming the field."""
  def need(ok: bool, what: str):
    if not ok:
      raise TaskDataError(f"{task}: {what}")

  params = inspect.signature(GENERATORS[task]).parameters
  unknown = sorted(set(settings) - set(list(params)[1:]))
  need(not unknown, f"unknown setting {unknown[0] if unknown else ''!r}; known: "
       f"{', '.join(list(params)[1:])}")
  for key, value in settings.items():
    need(isinstance(value, int) and not isinstance(value, bool),
         f"setting {key}={value!r} must be an int")
  s = {k: p.default for k, p in list(params.items())[1:]} | settings
  lo, hi = {"pointer_chase": ("min_hops", "max_hops"), "modular_chain": ("min_len", "max_len"),
            "question_shaped": ("min_ops", "max_ops")}[task]
  need(s[lo] >= 1, f"setting {lo}={s[lo]} must be >= 1")
  need(s[lo] <= s[hi], f"setting {lo}={s[lo]} must be <= {hi}={s[hi]}")
  if task == "pointer_chase":
    need(2 <= s["symbols"] <= 26, f"setting symbols={s['symbols']} must lie in [2, 26] "
         "(lower-case letters)")
  if task == "modular_chain":
    need(s["modulus"] >= 2, f"setting modulus={s['modulus']} must be >= 2")
  if task == "question_shaped":
    need(s["max_value"] >= 1, f"setting max_value={s['max_value']} must be >= 1")


def generate(task: str, n: int, seed: int, exclude_questions: Iterable[str] = (),
             **settings: Any) -> list[dict[str, Any]]:
  """``n`` distinct rows of ``task``; row ``i`` is drawn from ``random.Random(f"{seed}:{i}")``.

  Raises:
    TaskDataError: unknown task, a bad setting (naming it), or fewer than ``n`` distinct
      questions found.
  """
  if task not in GENERATORS:
    raise TaskDataError(f"unknown looped task {task!r}; known: {', '.join(sorted(GENERATORS))}")
  _check_settings(task, settings)
  make = GENERATORS[task]
  seen = set(exclude_questions)
  rows: list[dict[str, Any]] = []
  budget = max(20 * n, 1000)
  for i in range(budget):
    question, answer, meta = make(random.Random(f"{seed}:{i}"), **settings)
    if question in seen:
      continue
    seen.add(question)
    rows.append({"task": task, "question": question, "answer": answer, "seed": int(seed),
                 "metadata": {**meta, "source_index": i}})
    if len(rows) == n:
      return rows
  raise TaskDataError(f"{task} with {settings}: only {len(rows)} distinct questions in {budget} "
                      f"draws (wanted {n}); widen the settings or ask for fewer")


def main(argv: Sequence[str] | None = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m jaxlab.looped.tasks",
                                   description="Write the looped-LM synthetic tasks as JSONL.")
  parser.add_argument("--task", required=True, choices=sorted(GENERATORS))
  parser.add_argument("--n", type=int, required=True, help="rows to write")
  parser.add_argument("--seed", type=int, required=True)
  parser.add_argument("--out", required=True, help="output .jsonl file")
  parser.add_argument("--difficulty", default="",
                      help="generator settings, e.g. min_hops=9,max_hops=16 or modulus=11")
  parser.add_argument("--exclude", action="append", default=[],
                      help="a JSONL file whose questions must not appear (repeatable)")
  args = parser.parse_args(argv)
  try:
    if args.n < 1:
      raise TaskDataError(f"--n={args.n}: expected >= 1")
    excluded = [r["question"] for p in args.exclude for r in tasks_lib.load_jsonl(p)]
    rows = generate(args.task, args.n, args.seed, excluded,
                    **tasks_lib.parse_difficulty(args.difficulty))
  except TaskDataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  tasks_lib.write_jsonl(rows, args.out)
  print(f"wrote {len(rows)} {args.task} rows to {args.out}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
