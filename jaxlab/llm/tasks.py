r"""Procedurally generated reasoning tasks (reasoning-gym) as JSONL files, and their verifiers.

Generating needs the ``reasoning-gym`` package; training and evaluation do not: tasks are
written once to JSONL and read back with :func:`load_jsonl`, so runs and tests only need the
files (the small ones the tiny SFT config uses ship under ``data/llm/``).

    python -m jaxlab.llm.tasks --task=chain_sum --n=2000 --seed=1 --out=data/llm/x.jsonl \
        --difficulty=min_terms=2,max_terms=3,max_digits=1 [--exclude=held_out.jsonl]

One row per line: ``{"task": str, "question": str, "answer": str, "seed": int,
"metadata": {...}}`` (metadata optional). ``seed`` is the reasoning-gym dataset seed;
``metadata.source_index`` the row's index in that dataset, so a row can be regenerated.

A verifier turns a model's completion into an answer (:func:`extract_answer`) and compares it
with the reference (:func:`verify`): numerically for the arithmetic tasks, exactly for
spell_backward.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import sys
from fractions import Fraction
from typing import Any, Callable, Iterable, Sequence

from jaxlab.core import files
from jaxlab.core.errors import DataError

REQUIRED_FIELDS = {"task": str, "question": str, "answer": str, "seed": int}


class TaskDataError(DataError, ValueError):
  """A task file or row is malformed; the message starts with ``file:line``."""


# -- answer extraction and verification -----------------------------------------------------------

# An optional sign, digits, an optional fraction part; thousands separators are not produced by
# these tasks and are not accepted (they would make "1,2" ambiguous).
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:/\d+)?")
_TAGGED = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _tagged_or_whole(text: str) -> str:
  """The content of the last ``<answer>...</answer>`` if there is one, else the text."""
  found = _TAGGED.findall(text)
  return found[-1] if found else text


def extract_number(text: str) -> str | None:
  """The last number in the completion (or in its ``<answer>`` tag), or None.

  The last, not the first: a model that shows work ("3 + 4 = 7") ends with its result.
  """
  found = _NUMBER.findall(_tagged_or_whole(text))
  return found[-1] if found else None


def extract_word(text: str) -> str | None:
  """The first whitespace-separated word of the completion (or of its ``<answer>`` tag)."""
  words = _tagged_or_whole(text).split()
  return words[0] if words else None


def _as_fraction(s: str) -> Fraction | None:
  try:
    return Fraction(s.strip())
  except (ValueError, ZeroDivisionError):
    return None


def numbers_equal(got: str | None, want: str) -> bool:
  """Exact rational comparison: ``"6"``, ``"+6"``, ``"6.0"`` and ``"12/2"`` all equal 6."""
  if got is None:
    return False
  a, b = _as_fraction(got), _as_fraction(want)
  return a is not None and b is not None and a == b


def extract_expression(text: str) -> str | None:
  """The arithmetic expression of a completion: its ``<answer>`` tag, else its last non-empty
  line, with a trailing ``= value`` dropped."""
  lines = [ln.strip() for ln in _tagged_or_whole(text).strip().splitlines() if ln.strip()]
  if not lines:
    return None
  return lines[-1].split("=")[0].strip() or None


_INT = re.compile(r"\d+")


def evaluate_expression(expr: str) -> Fraction | None:
  """Exact value of an expression of integers, + - * / and parentheses (None if it is not one,
  or divides by zero). Parsed with ``ast``; nothing is executed."""
  import ast  # pylint: disable=g-import-not-at-top
  ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
         ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}

  def ev(node):
    if isinstance(node, ast.Expression):
      return ev(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
      return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in ops:
      return ops[type(node.op)](ev(node.left), ev(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
      v = ev(node.operand)
      return -v if isinstance(node.op, ast.USub) else v
    raise ValueError("not arithmetic")

  if len(expr) > 200:
    return None
  try:
    return ev(ast.parse(expr.replace("×", "*").replace("÷", "/"), mode="eval"))
  except (SyntaxError, ValueError, ZeroDivisionError, TypeError):
    return None


def countdown_equal(got: str | None, want: str) -> bool:
  """Countdown: ``got`` uses each number of the reference expression ``want`` at most once
  (as a multiset; no other numbers) and has the same value (reasoning-gym's references use
  exactly the given numbers, so they define both the numbers and the target)."""
  if got is None:
    return False
  value, target = evaluate_expression(got), evaluate_expression(want)
  if value is None or target is None or value != target:
    return False
  allowed = collections.Counter(_INT.findall(want))
  used = collections.Counter(_INT.findall(got))
  return all(allowed[k] >= n for k, n in used.items())


@dataclasses.dataclass(frozen=True)
class Task:
  """A reasoning-gym task: how to generate it and how to check a completion.

  Attributes:
    name: the reasoning-gym dataset name (also the ``task`` field of rows).
    extract: completion text -> the answer string (or None when there is none).
    equal: (extracted answer, reference answer) -> correct?
    defaults: generation settings used unless overridden (reasoning-gym config fields).
  """
  name: str
  extract: Callable[[str], str | None]
  equal: Callable[[str | None, str], bool]
  defaults: dict[str, Any] = dataclasses.field(default_factory=dict)


def _exact(got: str | None, want: str) -> bool:
  return got is not None and got.strip() == want.strip()


def extract_choice(text: str) -> str | None:
  """The option letter of a multiple-choice completion (``{"choice": "B"}`` or
  ``<ANSWER> B </ANSWER>``), read by the benchmark harness's own rules
  (:mod:`jaxlab.evals.mcq`), or None."""
  from jaxlab.evals import mcq  # pylint: disable=import-outside-toplevel
  ctx = mcq.Context(num_options=len(mcq.LETTERS))
  for rules in (mcq.DIRECT_RULES, mcq.COT_RULES):
    found = mcq.extract(text, rules, ctx)
    if found.letter is not None:
      return found.letter
  return None


def _same_choice(got: str | None, want: str) -> bool:
  """The reference of a multiple-choice row is a whole completion; compare letters."""
  return got is not None and got == extract_choice(want)


def extract_point(text: str) -> str | None:
  """The point a GUI-grounding completion clicks, as ``"x,y"`` (resized-frame pixels), read
  as the benchmarks' evaluation reads it (:func:`jaxlab.grounding.answer.parse` with its
  two-integer fallback); None when no point can be read."""
  from jaxlab.grounding import answer  # pylint: disable=import-outside-toplevel
  point = answer.parse(text, fallback=True).point
  return None if point is None else f"{point[0]},{point[1]}"


def point_in_box(got: str | None, want: str) -> bool:
  """``got`` (``"x,y"``) lies inside the closed box ``want`` (the JSON ``[x1, y1, x2, y2]``,
  corners in any order); False for no point or an unreadable box."""
  if got is None:
    return False
  try:
    x, y = (float(v) for v in got.split(","))
    box = json.loads(want)
    x1, y1, x2, y2 = (float(v) for v in box)
  except (ValueError, TypeError):
    return False
  return min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2)


TASKS: dict[str, Task] = {
    "chain_sum": Task("chain_sum", extract_number, numbers_equal),
    # Integer results only: reasoning-gym's "/" may otherwise yield long decimals.
    "basic_arithmetic": Task("basic_arithmetic", extract_number, numbers_equal,
                             {"operators": ("+", "-", "*")}),
    "spell_backward": Task("spell_backward", extract_word, _exact),
    "countdown": Task("countdown", extract_expression, countdown_equal),
    # Multiple-choice exams made here (jaxlab.evals.kaleidoscope_synthetic); not reasoning-gym.
    "multiple_choice": Task("multiple_choice", extract_choice, _same_choice),
    # The looped-LM reproduction's synthetic tasks (jaxlab.looped.tasks); not reasoning-gym.
    "pointer_chase": Task("pointer_chase", extract_word, _exact),
    "modular_chain": Task("modular_chain", extract_number, numbers_equal),
    "question_shaped": Task("question_shaped", extract_number, numbers_equal),
    # The vision-language SFT image task (jaxlab.llm.image_tasks): the first word, exactly.
    "shapes": Task("shapes", extract_word, _exact),
    # GUI grounding (jaxlab.grounding.schema.task_row): the answer is the target box's JSON
    # in the resized frame; correct = the clicked point inside it (closed).
    "groundcua": Task("groundcua", extract_point, point_in_box),
}


def get_task(name: str) -> Task:
  if name not in TASKS:
    raise TaskDataError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
  return TASKS[name]


def extract_answer(task: str, completion: str) -> str | None:
  """The answer a completion gives for ``task`` (None if it gives none)."""
  return get_task(task).extract(completion)


def verify(task: str, completion: str, answer: str) -> bool:
  """Whether ``completion`` answers correctly, given the reference ``answer``."""
  t = get_task(task)
  return bool(t.equal(t.extract(completion), answer))


def accuracy(rows: Sequence[dict[str, Any]], completions: Sequence[str]) -> dict[str, float]:
  """Mean correctness overall (``"all"``) and per task."""
  if len(rows) != len(completions):
    raise ValueError(f"{len(rows)} rows but {len(completions)} completions")
  per: dict[str, list[bool]] = {}
  for row, text in zip(rows, completions):
    per.setdefault(row["task"], []).append(verify(row["task"], text, row["answer"]))
  out = {name: sum(v) / len(v) for name, v in per.items()}
  flat = [x for v in per.values() for x in v]
  out["all"] = sum(flat) / max(len(flat), 1)
  return out


# -- generation (needs reasoning-gym) -------------------------------------------------------------


def generate(task: str, n: int, seed: int, exclude_questions: Iterable[str] = (),
             keep_metadata: bool = True, question_format: str = "",
             **difficulty: Any) -> list[dict[str, Any]]:
  """``n`` rows of ``task`` from reasoning-gym's dataset with this ``seed``.

  Args:
    task: a key of :data:`TASKS`.
    n: rows wanted.
    seed: the reasoning-gym dataset seed (recorded in each row).
    exclude_questions: questions to skip (e.g. a held-out set, so that train and test are
      disjoint); duplicates within the output are skipped too.
    keep_metadata: keep reasoning-gym's metadata (always keeps ``source_index``).
    question_format: rewrite each question with this ``str.format`` template over the row
      (e.g. ``"{metadata[word]}="``; "" keeps reasoning-gym's text); exclusion and
      de-duplication compare the rewritten questions.
    **difficulty: reasoning-gym config fields (``min_terms``, ``max_digits``, ...), on top of
      the task's defaults.

  Raises:
    TaskDataError: fewer than ``n`` distinct questions exist under these settings.
  """
  try:
    import reasoning_gym  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise TaskDataError("generating tasks needs reasoning-gym: pip install reasoning-gym==0.1.25"
                        " (training from the shipped JSONL files does not)") from None
  t = get_task(task)
  settings = {**t.defaults, **difficulty}
  seen = set(exclude_questions)
  rows: list[dict[str, Any]] = []
  # The dataset is indexable and deterministic per (seed, index); ask for more than n so that
  # skipped duplicates can be replaced, and give up once a large budget yields nothing new.
  budget = max(4 * n, 1000)
  ds = reasoning_gym.create_dataset(task, seed=seed, size=budget, **settings)
  for i in range(budget):
    entry = ds[i]
    meta = _jsonable(dict(entry.get("metadata") or {}))
    row = {"task": task, "question": entry["question"], "answer": str(entry["answer"]),
           "seed": int(seed), "metadata": meta}
    if question_format:
      row["question"] = _format_question(question_format, row, i)
    if row["question"] in seen:
      continue
    seen.add(row["question"])
    row["metadata"] = dict(meta if keep_metadata else {}, source_index=i)
    rows.append(row)
    if len(rows) == n:
      return rows
  raise TaskDataError(f"{task} with {settings}: only {len(rows)} distinct questions in "
                      f"{budget} draws (wanted {n}); widen the difficulty or ask for fewer")


def corrupt_answers(rows: Sequence[dict[str, Any]], rate: float, seed: int
                    ) -> list[dict[str, Any]]:
  """A noisy copy of numeric rows: a ``rate`` fraction of answers moved by ±1..3.

  Supervised training on such rows gives a reference policy that puts about ``rate`` of its
  mass on wrong answers while its mode stays right: the "60-70%-correct noisy solution stream"
  of the KL-estimator reproduction (spec llm_rl.md §6.2), where RL can raise the reward by
  sharpening and a KL term has something to resist. The true answer is kept in
  ``metadata.true_answer``; rows are chosen with ``numpy.random.default_rng(seed)``.

  Raises:
    TaskDataError: an answer is not an integer, or ``rate`` is outside [0, 1].
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  if not 0 <= rate <= 1:
    raise TaskDataError(f"corruption rate {rate} must lie in [0, 1]")
  rng = np.random.default_rng(seed)
  out = []
  for i, row in enumerate(rows):
    row = dict(row, metadata=dict(row.get("metadata") or {}))
    row["metadata"]["true_answer"] = row["answer"]
    if rng.random() < rate:
      try:
        value = int(row["answer"])
      except ValueError:
        raise TaskDataError(f"row {i + 1}: answer {row['answer']!r} is not an integer; only "
                            "numeric tasks can be corrupted") from None
      row["answer"] = str(value + int(rng.choice([-3, -2, -1, 1, 2, 3])))
    out.append(row)
  return out


def corrupt_letters(rows: Sequence[dict[str, Any]], rate: float, seed: int
                    ) -> list[dict[str, Any]]:
  """A noisy copy of word rows: every ASCII letter of every answer independently replaced, with
  probability ``rate``, by a different letter of the same case drawn uniformly.

  Supervised training on several such copies of each row gives a policy whose samples are
  right letter by letter with probability about ``1 - rate`` but whole-word right only about
  ``(1 - rate) ** len`` of the time, with wrong answers that rarely coincide: the RSA
  reproduction's base model (docs/reproductions/rsa.md), where majority voting over whole
  answers is weak and a right answer can be assembled position by position. The true answer
  is kept in ``metadata.true_answer``; draws come from ``numpy.random.default_rng(seed)``.

  Raises:
    TaskDataError: an answer has no letters, or ``rate`` is outside [0, 1].
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  if not 0 <= rate <= 1:
    raise TaskDataError(f"corruption rate {rate} must lie in [0, 1]")
  rng = np.random.default_rng(seed)

  def replace(ch: str, offset: int) -> str:  # 1..25 letters on, in the same case
    if not (ch.isascii() and ch.isalpha()):
      return ch
    base = ord("a") if ch.islower() else ord("A")
    return chr(base + (ord(ch) - base + offset) % 26)

  out = []
  for i, row in enumerate(rows):
    answer = row["answer"]
    if not any(ch.isascii() and ch.isalpha() for ch in answer):
      raise TaskDataError(f"row {i + 1}: answer {answer!r} has no letters; "
                          "--corrupt_mode=letters is for word tasks such as spell_backward")
    flip = rng.random(len(answer)) < rate
    offsets = rng.integers(1, 26, size=len(answer))  # never the same letter
    new = "".join(replace(ch, int(o)) if f else ch for ch, f, o in zip(answer, flip, offsets))
    out.append(dict(row, answer=new,
                    metadata=dict(row.get("metadata") or {}, true_answer=answer)))
  return out


def _format_question(template: str, row: dict[str, Any], index: int) -> str:
  try:
    return template.format(**row)
  except (KeyError, IndexError, ValueError) as e:
    raise TaskDataError(f"--question_format={template!r} does not format reasoning-gym item "
                        f"{index} ({type(e).__name__} {e}); it reads the row's fields and "
                        "reasoning-gym's metadata") from None


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (str, int, float, bool)) or x is None:
    return x
  return str(x)


def write_jsonl(rows: Iterable[dict[str, Any]], path: str) -> None:
  """Writes rows atomically (a temporary file, then a rename)."""
  files.write_jsonl(path, rows, sort_keys=True, separators=(",", ":"))


# -- loading and validation -----------------------------------------------------------------------


def validate_row(row: Any, where: str) -> dict[str, Any]:
  """Checks one parsed row; ``where`` (``file:line``) starts every error message."""
  if not isinstance(row, dict):
    raise TaskDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
  for field, typ in REQUIRED_FIELDS.items():
    if field not in row:
      raise TaskDataError(f"{where}: missing field {field!r} (required: "
                          f"{', '.join(REQUIRED_FIELDS)})")
    value = row[field]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
      raise TaskDataError(f"{where}: field {field!r} must be {typ.__name__}, got "
                          f"{type(value).__name__} {value!r}")
  if row["task"] not in TASKS:
    raise TaskDataError(f"{where}: field 'task'={row['task']!r} is not a known task "
                        f"({', '.join(sorted(TASKS))})")
  if not row["question"].strip():
    raise TaskDataError(f"{where}: field 'question' is empty")
  if not row["answer"].strip():
    raise TaskDataError(f"{where}: field 'answer' is empty")
  if "metadata" in row and not isinstance(row["metadata"], dict):
    raise TaskDataError(f"{where}: field 'metadata' must be an object, got "
                        f"{type(row['metadata']).__name__}")
  return row


def load_jsonl(path: str, limit: int | None = None) -> list[dict[str, Any]]:
  """Reads and validates a task file (blank lines are skipped).

  Raises:
    TaskDataError: (a ``ValueError``) naming ``file:line`` and the bad field, for a missing
      file, invalid JSON, a missing/mistyped field or an unknown task.
  """
  if not os.path.isfile(path):
    raise TaskDataError(f"{path}: task file does not exist")
  rows = []
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise TaskDataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
      rows.append(validate_row(row, where))
      if limit is not None and len(rows) >= limit:
        break
  if not rows:
    raise TaskDataError(f"{path}: no rows")
  return rows


def load_files(paths: Sequence[str], limit: int | None = None) -> list[dict[str, Any]]:
  """Rows of several task files, in order (``limit`` applies to each file)."""
  out: list[dict[str, Any]] = []
  for p in paths:
    out.extend(load_jsonl(p, limit))
  return out


# -- command line ---------------------------------------------------------------------------------


def _parse_value(s: str) -> Any:
  for conv in (int, float):
    try:
      return conv(s)
    except ValueError:
      pass
  if s.lower() in ("true", "false"):
    return s.lower() == "true"
  if "|" in s:  # a tuple, e.g. operators=+|-
    return tuple(s.split("|"))
  return s


def parse_difficulty(spec: str) -> dict[str, Any]:
  """``"min_terms=2,max_digits=1,operators=+|-"`` -> a dict of typed values."""
  out: dict[str, Any] = {}
  for part in filter(None, (p.strip() for p in spec.split(","))):
    if "=" not in part:
      raise TaskDataError(f"--difficulty: {part!r} is not key=value")
    k, v = part.split("=", 1)
    out[k.strip()] = _parse_value(v.strip())
  return out


def main(argv: Sequence[str] | None = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m jaxlab.llm.tasks",
                                   description="Pre-generate reasoning-gym tasks as JSONL.")
  parser.add_argument("--task", required=True, choices=sorted(TASKS))
  parser.add_argument("--n", type=int, required=True, help="rows to write")
  parser.add_argument("--seed", type=int, required=True, help="reasoning-gym dataset seed")
  parser.add_argument("--out", required=True, help="output .jsonl file")
  parser.add_argument("--difficulty", default="",
                      help="reasoning-gym config overrides, e.g. min_terms=2,max_digits=1")
  parser.add_argument("--exclude", action="append", default=[],
                      help="a JSONL file whose questions must not appear (repeatable)")
  parser.add_argument("--no_metadata", action="store_true",
                      help="drop reasoning-gym's metadata (keeps source_index); smaller files")
  parser.add_argument("--metadata_keys", default="",
                      help="keep only these comma-separated metadata fields (and source_index)")
  parser.add_argument("--question_format", default="",
                      help="rewrite each question with this str.format template over the row "
                      "(reasoning-gym's metadata included), e.g. '{metadata[word]}=' for "
                      "compact prompts; --exclude compares the rewritten questions")
  parser.add_argument("--corrupt", type=float, default=0.0,
                      help="noisy SFT data: with --corrupt_mode=shift, move this fraction of "
                      "(integer) answers by +-1..3; with letters, replace each letter of a word "
                      "answer with this probability")
  parser.add_argument("--corrupt_mode", choices=("shift", "letters"), default="shift")
  parser.add_argument("--corrupt_seed", type=int, default=0)
  parser.add_argument("--corrupt_copies", type=int, default=1,
                      help="write each row this many times, each copy corrupted independently "
                      "(a noise stream: the model learns the noise rate, not wrong answers)")
  args = parser.parse_args(argv)
  try:
    excluded = [r["question"] for p in args.exclude for r in load_jsonl(p)]
    rows = generate(args.task, args.n, args.seed, excluded, keep_metadata=not args.no_metadata,
                    question_format=args.question_format, **parse_difficulty(args.difficulty))
    if args.metadata_keys:
      keep = set(args.metadata_keys.split(",")) | {"source_index"}
      rows = [dict(r, metadata={k: v for k, v in r["metadata"].items() if k in keep})
              for r in rows]
    if args.corrupt:
      corrupt = corrupt_letters if args.corrupt_mode == "letters" else corrupt_answers
      rows = corrupt(rows * args.corrupt_copies, args.corrupt, args.corrupt_seed)
  except (TaskDataError, TypeError) as e:  # TypeError: an unknown reasoning-gym config field
    print(f"error: {e}", file=sys.stderr)
    return 2
  write_jsonl(rows, args.out)
  print(f"wrote {len(rows)} {args.task} rows to {args.out}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
