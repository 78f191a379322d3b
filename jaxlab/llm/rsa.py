r"""Recursive self-aggregation (RSA, spec llm_rl.md §3) on the jaxlab sampler.

A population of ``N`` completions per problem is refined for ``T`` steps. Step 0 is plain
sampling from the question prompt; at every later step each member ``i`` is replaced by a
completion of an *aggregation prompt* showing the question and ``K`` distinct members of the
previous population (``K = 1``: self-refinement). ``T`` counts step 0, so a run makes ``N * T``
generations per problem (the paper's ``--loops``).

Randomness is a pure function of ``(seed, problem, step, member)``: the member key is
``fold_in(fold_in(fold_in(seed_key(seed), problem_id), step), member)``, split into a key that
draws the aggregation set (``permutation(key, island_size)[:K]``; the member itself may be drawn,
as sets are sampled from the whole population) and a key that drives its generation. The
``problem_id`` is a hash of the task and question, so a run does not depend on the order of the
problems, on how prompts are batched, or on how the batch is sharded.

Islands (``M``, a power of two): the population is cut into ``M`` contiguous islands that
aggregate only within themselves; neighbouring islands merge pairwise at evenly spaced steps,
so ``T`` splits into ``log2(M) + 1`` stages of equal length and stage ``s`` has ``M / 2**s``
islands.

The generator is injectable (:class:`Generator`): :class:`SamplerGenerator` runs a decoder
through :func:`jaxlab.llm.sampling.generate`, one batched call for every prompt of a step (all
problems at once); tests plug in scripted "models" with known behaviour.

Aggregation prompts that would not fit ``max_prompt_tokens`` follow ``overflow``:
``"shorten"`` keeps the last ``budget`` tokens of each over-long candidate (the end holds the
final answer), with ``budget`` the room left by the template divided by ``K``; ``"error"``
stops with one line naming the step and problem. Nothing is cut silently: the number of
shortened candidates is a metric of every step.

A run directory holds one state file per finished step (``<arm>/step_0003.json``, written
atomically: the population as token ids and text, with the step index and seed from which every
key is re-derived); a rerun with the same config resumes after the last complete step, and the
metrics are always recomputed from those files, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import math
import os
from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlab.core import config as config_lib
from jaxlab.core import files
from jaxlab.core import prng
from jaxlab.core.errors import ConfigError, JaxlabError, WorkdirError
from jaxlab.llm import tasks as tasks_lib


class RsaError(JaxlabError):
  """An aggregation or question prompt does not fit, or a run directory does not match."""


# -- prompts --------------------------------------------------------------------------------------

# Our own wording, with the structure of spec §3.2: what the task is and how to answer, the
# question, numbered candidates, a closing instruction; a separate form for K = 1.
AGGREGATE_TEMPLATE = (
    "Here is a {kind} followed by {count} attempted solutions. Any of them may contain "
    "mistakes. Compare them, keep the steps that hold up, repair or discard the rest, and "
    "write one solution of your own. Where they disagree, work out which is right; if none is "
    "right, solve it another way. Give the final answer {answer_format}.\n"
    "Problem:\n{question}\n"
    "Attempted solutions (possibly wrong):\n{candidates}\n"
    "Now write a single, better solution with clear reasoning, and give the final answer "
    "{answer_format}.")
REFINE_TEMPLATE = (
    "Here is a {kind} and one earlier attempt at solving it. The attempt may be unfinished or "
    "wrong. Improve it into a better solution; if its approach does not work, start over "
    "with a different one. Give the final answer {answer_format}.\n"
    "Problem:\n{question}\n"
    "Earlier attempt (possibly wrong):\n{candidates}\n"
    "Now write the improved solution with clear reasoning, and give the final answer "
    "{answer_format}.")
CANDIDATE_TEMPLATE = "[Attempt {index}]\n{text}"
REFINE_CANDIDATE_TEMPLATE = "[Attempt]\n{text}"


@dataclasses.dataclass(frozen=True)
class Prompts:
  """Prompt texts, all ``str.format`` templates.

  Attributes:
    question: the step-0 prompt, over a row's fields (``{question}``, ``{metadata[...]}``; never
      ``{answer}``, which would show the reference).
    aggregate: the K >= 2 prompt; fields ``kind``, ``answer_format``, ``question`` (the
      formatted step-0 text), ``candidates`` (the joined blocks), ``count`` (K).
    refine: the K = 1 prompt, same fields.
    candidate: one numbered block of ``aggregate``: ``index`` (1-based), ``text``.
    refine_candidate: the single block of ``refine``: ``text``.
    separator: joins the candidate blocks.
    kind: e.g. "math problem", "problem".
    answer_format: how the answer must be written, e.g. "inside <answer></answer> tags".
  """
  question: str = "{question}"
  aggregate: str = AGGREGATE_TEMPLATE
  refine: str = REFINE_TEMPLATE
  candidate: str = CANDIDATE_TEMPLATE
  refine_candidate: str = REFINE_CANDIDATE_TEMPLATE
  separator: str = "\n"
  kind: str = "problem"
  answer_format: str = "inside <answer></answer> tags"

  @classmethod
  def from_config(cls, c: ml_collections.ConfigDict) -> "Prompts":
    return cls(**{f.name: c[f.name] for f in dataclasses.fields(cls)})

  def plain(self, row: dict[str, Any]) -> str:
    try:
      return self.question.format(**row)
    except (KeyError, IndexError) as e:
      raise RsaError(f"'config.prompt.question'={self.question!r} needs field {e} that the "
                     f"row of question {row.get('question', '')[:40]!r} does not have") from None

  def aggregation(self, row: dict[str, Any], candidates: Sequence[str]) -> str:
    """The aggregation prompt of ``row`` showing ``candidates`` (stripped, in the given order)."""
    if len(candidates) == 1:
      blocks = self.refine_candidate.format(text=candidates[0].strip())
      template = self.refine
    else:
      blocks = self.separator.join(self.candidate.format(index=i + 1, text=c.strip())
                                   for i, c in enumerate(candidates))
      template = self.aggregate
    return template.format(kind=self.kind, answer_format=self.answer_format,
                           question=self.plain(row), candidates=blocks, count=len(candidates))


def check_prompts(c: ml_collections.ConfigDict) -> None:
  """Every template formats with its fields; a bad one is one line naming its key."""
  row = {"task": "t", "question": "q", "answer": "a", "seed": 0, "metadata": {}}
  p = Prompts.from_config(c)
  tries = {"question": lambda: p.plain(row),
           "candidate": lambda: p.candidate.format(index=1, text="x"),
           "refine_candidate": lambda: p.refine_candidate.format(text="x"),
           "aggregate": lambda: p.aggregation(row, ["x", "y"]),
           "refine": lambda: p.aggregation(row, ["x"])}
  for key, fn in tries.items():
    try:
      fn()
    except (KeyError, IndexError, ValueError, AttributeError) as e:
      raise ConfigError(f"'config.prompt.{key}' does not format: {type(e).__name__} {e}; "
                        "see jaxlab/llm/rsa.py Prompts for its fields") from None
  if "{candidates}" not in c.aggregate or "{candidates}" not in c.refine:
    raise ConfigError("'config.prompt.aggregate' and 'config.prompt.refine' must contain "
                      "{candidates}")


# -- config ---------------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
  """Every key of an RSA run, with the defaults of spec §3.3 except the generation budget."""
  c = ml_collections.ConfigDict()
  c.seed = 1234
  c.population = 16  # N
  c.k = 4  # aggregation-set size K (1: self-refinement)
  c.steps = 10  # T, counting the plain-sampling step 0
  c.islands = 1  # M, a power of two; T divisible by log2(M) + 1
  c.overflow = "shorten"  # or "error"
  c.num_problems = 0  # first rows of the task file (0: all)
  c.generation = ml_collections.ConfigDict(dict(
      max_new_tokens=64, temperature=1.0, top_p=1.0, top_k=0,
      max_prompt_tokens=1024,  # every prompt is left-padded to this (one compiled shape)
      batch_size=0,  # prompts per sampler call (0: every prompt of a step in one call)
      chat=False,  # wrap prompts in the tokenizer's chat template (instruct checkpoints)
      dtype="float32"))
  c.prompt = ml_collections.ConfigDict(
      {f.name: f.default for f in dataclasses.fields(Prompts)})
  c.baselines = ml_collections.ConfigDict(dict(
      sampling=True,  # plain samples + majority vote / pass@n at equal generated tokens
      self_refine=True))  # the same run with K = 1
  return c


def validate(c: ml_collections.ConfigDict) -> None:
  """Unknown keys, types and the RSA rules; each failure is one ConfigError line."""
  config_lib.check_against_defaults(c, default_config())
  req = config_lib.require
  req(c.population >= 1, f"'config.population'={c.population} must be >= 1")
  req(c.k >= 1, f"'config.k'={c.k} must be >= 1 (1 is self-refinement)")
  req(c.k <= c.population, f"'config.k'={c.k} exceeds 'config.population'={c.population}: "
      "an aggregation set holds K distinct members")
  req(c.steps >= 1, f"'config.steps'={c.steps} must be >= 1 (1 is plain sampling)")
  m = c.islands
  req(m >= 1 and (m & (m - 1)) == 0, f"'config.islands'={m} must be a power of two")
  req(c.population % m == 0, f"'config.population'={c.population} is not divisible by "
      f"'config.islands'={m}")
  req(c.k <= c.population // m, f"'config.k'={c.k} exceeds the island size "
      f"{c.population // m} ('config.population' / 'config.islands')")
  stages = int(math.log2(m)) + 1
  req(c.steps % stages == 0, f"'config.steps'={c.steps} is not divisible by log2("
      f"'config.islands')+1={stages}: islands merge pairwise at evenly spaced steps")
  config_lib.require_choice(c, "overflow", ("shorten", "error"))
  g = c.generation
  req(g.max_new_tokens >= 1, f"'config.generation.max_new_tokens'={g.max_new_tokens} must be "
      ">= 1")
  req(g.max_prompt_tokens >= 1, "'config.generation.max_prompt_tokens' must be >= 1")
  req(g.batch_size >= 0, f"'config.generation.batch_size'={g.batch_size} must be >= 0")
  req(g.temperature >= 0, f"'config.generation.temperature'={g.temperature} must be >= 0")
  req(0 < g.top_p <= 1, f"'config.generation.top_p'={g.top_p} must be in (0, 1]")
  req(c.num_problems >= 0, f"'config.num_problems'={c.num_problems} must be >= 0")
  config_lib.require_choice(c, "generation.dtype", ("float32", "bfloat16"))
  check_prompts(c.prompt)


# -- problems -------------------------------------------------------------------------------------


def load_problems(task: str, num_problems: int = 0) -> list[dict[str, Any]]:
  """Rows of ``task``: a JSONL task file, or the name of a task of :mod:`jaxlab.llm.tasks`
  (its shipped held-out file ``data/llm/<name>_eval.jsonl``); the first ``num_problems``
  (0: all).

  Raises:
    TaskDataError: an unknown task name, a missing file or a malformed row (one line).
  """
  from jaxlab.llm import data as data_lib  # pylint: disable=g-import-not-at-top
  if task.endswith(".jsonl") or os.path.sep in task:
    return tasks_lib.load_jsonl(data_lib.resolve_path(task), num_problems or None)
  if task not in tasks_lib.TASKS:
    raise tasks_lib.TaskDataError(
        f"--task={task!r} is neither a known task ({', '.join(sorted(tasks_lib.TASKS))}) nor "
        "a .jsonl task file")
  path = data_lib.resolve_path(os.path.join("data", "llm", f"{task}_eval.jsonl"))
  if not os.path.isfile(path):
    raise tasks_lib.TaskDataError(
        f"--task={task!r}: no problem file data/llm/{task}_eval.jsonl; write one with "
        f"python -m jaxlab.llm.tasks --task={task} ... and pass its path")
  return tasks_lib.load_jsonl(path, num_problems or None)


# -- keys, islands and aggregation sets -----------------------------------------------------------


def problem_id(row: dict[str, Any]) -> int:
  """A 31-bit id of a problem from its task and question (not its position in a file)."""
  digest = hashlib.sha256(f"{row['task']}\n{row['question']}".encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def islands_at(step: int, islands: int, steps: int) -> int:
  """Islands in force at ``step``: ``M`` halves at each of ``log2(M)`` evenly spaced merges."""
  stage_len = steps // (int(math.log2(islands)) + 1)
  return max(islands >> (step // stage_len), 1)


@functools.partial(jax.jit, static_argnames=("n", "island_size", "k"))
def _problem_randomness(root, pid, step, n: int, island_size: int, k: int):
  """One problem's ``(sets [N, K], generate_keys [N, 2])``; compiled once per (N, island, K),
  whatever the number of problems."""
  step_key = jax.random.fold_in(jax.random.fold_in(root, pid), step)
  keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(step_key, i)))(
      jnp.arange(n, dtype=jnp.uint32))
  select, generate = keys[:, 0], keys[:, 1]
  if not k:
    return jnp.zeros((n, 0), jnp.int32), generate
  start = (jnp.arange(n) // island_size) * island_size  # first member of each one's island
  sets = jax.vmap(lambda key: jax.random.permutation(key, island_size)[:k])(select)
  return sets + start[:, None], generate


def step_randomness(seed: int, pids: Sequence[int], step: int, n: int, k: int = 0,
                    island_size: int = 0, stream: int = 0
                    ) -> tuple[np.ndarray | None, np.ndarray]:
  """``(sets, generate_keys)`` of ``step`` for every problem.

  Member ``i`` of problem ``pid`` gets ``fold_in(fold_in(fold_in(root, pid), step), i)``, split
  into a selection key and a generation key. With ``k > 0`` its aggregation set is ``K``
  distinct members of its own island (members ``[g * island_size, (g + 1) * island_size)``),
  uniform without replacement: ``permutation(selection_key, island_size)[:K]`` (spec §3.7).

  Args:
    seed: the run's seed; ``stream`` separates independent uses of it (0: RSA; 1: the
      sampling baseline's extra samples).
    pids: problem ids (:func:`problem_id`).

  Returns:
    ``sets`` ``[P, N, K]`` int (None when ``k == 0``) and ``generate_keys`` ``[P, N, 2]``
    uint32.
  """
  root = prng.seed_key(seed)
  if stream:
    root = jax.random.fold_in(root, stream)
  island_size = island_size or n
  outs = [_problem_randomness(root, jnp.uint32(pid), jnp.int32(step), n=n,
                              island_size=island_size, k=k) for pid in pids]
  sets = np.stack([np.asarray(s) for s, _ in outs]) if k else None
  keys = np.stack([np.asarray(g) for _, g in outs])
  return sets, keys


# -- generators -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
  """One generation: the prompt as ids, the row's key, and what the prompt was built from.

  Attributes:
    row: the problem row.
    prompt_ids: the full prompt (after any chat template).
    key: ``uint32[2]`` generation key of this (problem, step, member).
    candidates: the candidate texts shown (None at step 0).
  """
  row: dict[str, Any]
  prompt_ids: tuple[int, ...]
  key: np.ndarray
  candidates: tuple[str, ...] | None = None


class Generator(Protocol):
  """What RSA needs from a model: text <-> ids, and completions for a batch of requests.

  ``__call__`` returns the completion ids of each request (including a stop token, if any);
  each completion must depend only on its own request, never on the rest of the batch.
  """

  def encode_prompt(self, text: str) -> list[int]: ...

  def encode_text(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...

  def __call__(self, requests: Sequence[Request]) -> list[list[int]]: ...


class SamplerGenerator:
  """A decoder behind :func:`jaxlab.llm.sampling.generate`.

  Prompts are left-padded to ``max_prompt_tokens`` so every call of a run has one shape;
  ``batch_size`` 0 generates all requests in one call, else in fixed-size chunks (the last one
  filled with copies of its first request, discarded).
  """

  def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int, max_prompt_tokens: int,
               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
               batch_size: int = 0, chat: bool = False, mesh: Any = None):
    from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
    self.model, self.tokenizer, self.mesh = model, tokenizer, mesh
    self.max_prompt_tokens, self.batch_size, self.chat = max_prompt_tokens, batch_size, chat
    self.params = sampling.params_for(model, tokenizer, max_new_tokens,
                                      temperature=temperature, top_k=top_k, top_p=top_p)
    self.pad_id = self.params.pad_id

  def encode_prompt(self, text: str) -> list[int]:
    from jaxlab.models.tokenizer import encode_prompts  # pylint: disable=g-import-not-at-top
    return encode_prompts(self.tokenizer, [text], chat=self.chat)[0]

  def encode_text(self, text: str) -> list[int]:
    return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

  def decode(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode(list(ids), skip_special_tokens=True)

  def __call__(self, requests: Sequence[Request]) -> list[list[int]]:
    from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
    tokens, mask = sampling.left_pad([r.prompt_ids for r in requests], self.pad_id,
                                     length=self.max_prompt_tokens)
    keys = np.stack([np.asarray(r.key, np.uint32) for r in requests])
    n = len(requests)
    size = self.batch_size or n
    out: list[list[int]] = []
    for s in range(0, n, size):
      idx = np.arange(s, s + size)
      idx = np.where(idx < n, idx, s)  # pad the last chunk with copies of its first row
      res = sampling.generate(self.model, tokens[idx], mask[idx], jnp.asarray(keys[idx]),
                              self.params, mesh=self.mesh)
      toks, lens = np.asarray(res.tokens), np.asarray(res.lengths)
      out.extend(toks[j, :lens[j]].tolist() for j in range(min(size, n - s)))
    return out


# -- prompt building under the overflow policy ----------------------------------------------------


def _where(step: int, row: dict[str, Any]) -> str:
  q = " ".join(row["question"].split())
  return f"step {step}, problem {problem_id(row)} ({q[:40]!r})"


def build_prompt(gen: Generator, prompts: Prompts, row: dict[str, Any],
                 candidates: Sequence[Sequence[int]] | None, budget: int, overflow: str,
                 step: int) -> tuple[tuple[int, ...], tuple[str, ...] | None, int]:
  """``(prompt ids, candidate texts shown, candidates shortened)`` within ``budget`` tokens.

  Raises:
    RsaError: the prompt is too long and the policy is ``"error"``, or even the template with
      empty candidates does not fit, or the question prompt alone does not.
  """
  if candidates is None:
    ids = gen.encode_prompt(prompts.plain(row))
    if len(ids) > budget:
      raise RsaError(f"{_where(step, row)}: the question prompt has {len(ids)} tokens, over "
                     f"'config.generation.max_prompt_tokens'={budget}")
    return tuple(ids), None, 0
  texts = [gen.decode(c) for c in candidates]
  ids = gen.encode_prompt(prompts.aggregation(row, texts))
  if len(ids) <= budget:
    return tuple(ids), tuple(texts), 0
  k = len(candidates)
  if overflow == "error":
    raise RsaError(f"{_where(step, row)}: the aggregation prompt with K={k} candidates has "
                   f"{len(ids)} tokens, over 'config.generation.max_prompt_tokens'={budget}; "
                   "raise it, lower 'config.k' or 'config.generation.max_new_tokens', or set "
                   "'config.overflow'='shorten'")
  cand_ids = [gen.encode_text(t) for t in texts]
  room = budget - len(gen.encode_prompt(prompts.aggregation(row, [""] * k)))
  per = room // k
  for _ in range(8):  # re-tokenising the joined text can differ by a few tokens: tighten
    if per < 1:
      break
    short = [c if len(c) <= per else c[len(c) - per:] for c in cand_ids]
    texts = [gen.decode(c) for c in short]
    ids = gen.encode_prompt(prompts.aggregation(row, texts))
    if len(ids) <= budget:
      return tuple(ids), tuple(texts), sum(len(c) > per for c in cand_ids)
    per -= max(1, -(-(len(ids) - budget) // k))
  raise RsaError(f"{_where(step, row)}: no room for K={k} candidates in "
                 f"'config.generation.max_prompt_tokens'={budget} (the template and question "
                 f"alone take {budget - room} tokens)")


# -- metrics --------------------------------------------------------------------------------------


def cluster_answers(task: tasks_lib.Task, answers: Sequence[str | None]) -> list[list[int]]:
  """Members grouped by the task verifier's equivalence (``"6"`` and ``"6.0"`` together); the
  first member of a group is its representative; members without an answer are left out."""
  clusters: list[list[int]] = []
  for i, a in enumerate(answers):
    if a is None:
      continue
    for c in clusters:
      if task.equal(a, answers[c[0]]):
        c.append(i)
        break
    else:
      clusters.append([i])
  return clusters


def population_metrics(task: tasks_lib.Task, reference: str, texts: Sequence[str],
                       lengths: Sequence[int]) -> dict[str, float]:
  """Metrics of one problem's population.

  ``accuracy`` is the mean correctness (Pass@1); ``majority`` the correctness of the largest
  answer cluster, averaged over tied largest clusters (the expected result of a uniform tie
  break; 0 when no member gives an answer); ``pass_at_n`` whether any member is right;
  ``distinct_answers`` the number of clusters; lengths are generated tokens per member.
  """
  answers = [task.extract(t) for t in texts]
  correct = np.asarray([bool(task.equal(a, reference)) for a in answers], np.float64)
  clusters = cluster_answers(task, answers)
  if clusters:
    top = max(len(c) for c in clusters)
    majority = float(np.mean([correct[c[0]] for c in clusters if len(c) == top]))
  else:
    majority = 0.0
  lens = np.asarray(lengths, np.float64)
  return {"accuracy": float(correct.mean()), "majority": majority,
          "pass_at_n": float(correct.max()), "distinct_answers": float(len(clusters)),
          "no_answer": float(np.mean([a is None for a in answers])),
          "accuracy_std": float(correct.std()),
          "length_mean": float(lens.mean()), "length_median": float(np.median(lens)),
          "length_q25": float(np.quantile(lens, 0.25)),
          "length_q75": float(np.quantile(lens, 0.75)), "tokens": float(lens.sum())}


def overall(per_problem: Sequence[dict[str, float]]) -> dict[str, float]:
  """Means over problems of every per-problem metric, and the total of ``tokens_cum``."""
  out = {k: float(np.mean([p[k] for p in per_problem])) for k in per_problem[0]}
  if "tokens_cum" in per_problem[0]:
    out["tokens_cum_total"] = float(np.sum([p["tokens_cum"] for p in per_problem]))
  return out


# -- state files ----------------------------------------------------------------------------------


def step_path(arm_dir: str, step: int) -> str:
  """The state file of ``step`` of the run in ``arm_dir`` (``<workdir>/<arm>``)."""
  return os.path.join(arm_dir, f"step_{step:04d}.json")


def fingerprint(c: ml_collections.ConfigDict, pids: Sequence[int]) -> str:
  """What a resumed run must share with the interrupted one: the config and the problems."""
  d = c.to_dict()
  d.pop("baselines", None)  # baselines do not change the RSA populations
  blob = json.dumps(d, sort_keys=True, default=str) + json.dumps(list(pids))
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_steps(arm_dir: str, fp: str) -> list[dict[str, Any]]:
  """The complete step files of a run, in order (a gap ends the list)."""
  out = []
  for step in range(len(glob.glob(os.path.join(arm_dir, "step_*.json")))):
    path = step_path(arm_dir, step)
    if not os.path.isfile(path):
      break
    with open(path) as f:
      state = json.load(f)
    if state.get("fingerprint") != fp:
      raise WorkdirError(f"{path}: written by a run with another config or problem set; use a "
                         "new --workdir (or delete it) to start over")
    out.append(state)
  return out


# -- the loop -------------------------------------------------------------------------------------


def _requests_for_step(gen: Generator, c: ml_collections.ConfigDict, prompts: Prompts,
                       rows: Sequence[dict[str, Any]], pids: Sequence[int], step: int,
                       population: list[list[list[int]]] | None, k: int
                       ) -> tuple[list[Request], np.ndarray | None, list[int]]:
  n = c.population
  if step == 0:
    sets, gen_keys = step_randomness(c.seed, pids, step, n)
  else:
    sets, gen_keys = step_randomness(c.seed, pids, step, n, k,
                                     n // islands_at(step, c.islands, c.steps))
  requests, shortened = [], []
  for p, row in enumerate(rows):
    cut = 0
    for i in range(n):
      cands = None if sets is None else [population[p][j] for j in sets[p, i]]
      ids, texts, s = build_prompt(gen, prompts, row, cands, c.generation.max_prompt_tokens,
                                   c.overflow, step)
      cut += s
      requests.append(Request(row=row, prompt_ids=ids, key=gen_keys[p, i], candidates=texts))
    shortened.append(cut)
  return requests, sets, shortened


def run(c: ml_collections.ConfigDict, rows: Sequence[dict[str, Any]], gen: Generator,
        workdir: str | None = None, arm: str = "rsa", max_steps: int | None = None,
        log: Callable[[str], None] | None = None, initial: dict[str, Any] | None = None
        ) -> list[dict[str, Any]]:
  """Runs (or resumes) RSA on ``rows``; returns the per-step states (see module doc).

  Args:
    c: a validated config (:func:`default_config`); ``c.k`` is the aggregation-set size.
    rows: task rows (``task``, ``question``, ``answer``).
    gen: the model (:class:`Generator`).
    workdir: where ``<arm>/step_XXXX.json`` are written and resumed from (None: in memory).
    arm: the run's name inside ``workdir``.
    max_steps: stop after this many steps in total (to test resuming); None: ``c.steps``.
    log: called with one line per finished step.
    initial: a step-0 state to reuse (step 0 depends only on the seed, the problems and the
      generation settings, so the K = 1 baseline starts from RSA's own step 0).

  Returns:
    one dict per step: ``step``, ``islands``, and per problem ``id``, ``ids`` (``[N]`` token
    id lists), ``texts``, ``lengths``, ``sets`` (``[N][K]`` or None), ``shortened``.
  """
  pids = [problem_id(r) for r in rows]
  if len(set(pids)) != len(pids):
    raise RsaError("the task file holds the same question twice; RSA keys problems by their "
                   "question text, so each must be unique")
  fp = fingerprint(c, pids)
  arm_dir = os.path.join(workdir, arm) if workdir else None
  states = _load_steps(arm_dir, fp) if arm_dir else []
  states = states[:c.steps]
  prompts = Prompts.from_config(c.prompt)
  last = c.steps if max_steps is None else min(max_steps, c.steps)
  if not states and initial is not None and last > 0:
    states = [dict(initial, fingerprint=fp)]
    if arm_dir:
      files.write_json(step_path(arm_dir, 0), states[0])
  for step in range(len(states), last):
    population = None if step == 0 else [p["ids"] for p in states[-1]["problems"]]
    requests, sets, shortened = _requests_for_step(gen, c, prompts, rows, pids, step,
                                                   population, c.k)
    outputs = gen(requests)
    if len(outputs) != len(requests):
      raise ValueError(f"the generator returned {len(outputs)} completions for "
                       f"{len(requests)} prompts")
    n = c.population
    problems = []
    for p, pid in enumerate(pids):
      ids = [list(map(int, o)) for o in outputs[p * n:(p + 1) * n]]
      problems.append({"id": pid, "ids": ids, "texts": [gen.decode(o) for o in ids],
                       "lengths": [len(o) for o in ids],
                       "sets": None if sets is None else sets[p].tolist(),
                       "shortened": shortened[p]})
    state = {"step": step, "seed": c.seed, "fingerprint": fp,
             "islands": islands_at(step, c.islands, c.steps) if step else c.islands,
             "problems": problems}
    if arm_dir:
      files.write_json(step_path(arm_dir, step), state)
    states.append(state)
    if log:
      m = overall(step_metrics(rows, state, None))
      log(f"{arm} step {step + 1}/{c.steps}: accuracy {m['accuracy']:.3f} majority "
          f"{m['majority']:.3f} pass@n {m['pass_at_n']:.3f} distinct "
          f"{m['distinct_answers']:.2f} length {m['length_mean']:.1f}")
  return states


def step_metrics(rows: Sequence[dict[str, Any]], state: dict[str, Any],
                 cum_tokens: Sequence[float] | None) -> list[dict[str, float]]:
  """Per-problem metrics of one step; ``cum_tokens`` (per problem, before this step) adds
  ``tokens_cum``."""
  out = []
  for p, (row, prob) in enumerate(zip(rows, state["problems"])):
    m = population_metrics(tasks_lib.get_task(row["task"]), row["answer"], prob["texts"],
                           prob["lengths"])
    m["shortened"] = float(prob.get("shortened", 0))
    if cum_tokens is not None:
      m["tokens_cum"] = float(cum_tokens[p]) + m["tokens"]
    out.append(m)
  return out


def curve(rows: Sequence[dict[str, Any]], states: Sequence[dict[str, Any]]
          ) -> list[dict[str, Any]]:
  """``[{"step", "islands", "overall", "per_problem"}]`` over the steps of one run."""
  cum = np.zeros(len(rows))
  out = []
  for state in states:
    per = step_metrics(rows, state, cum)
    cum = np.asarray([m["tokens_cum"] for m in per])
    out.append({"step": state["step"], "islands": state["islands"], "overall": overall(per),
                "per_problem": per})
  return out


# -- baseline: plain sampling at equal generated tokens -------------------------------------------


def sampling_pool(c: ml_collections.ConfigDict, rows: Sequence[dict[str, Any]], gen: Generator,
                  first: dict[str, Any], workdir: str | None = None) -> list[list[list[int]]]:
  """``N * T`` plain samples per problem: RSA's step-0 population, then ``N * (T - 1)`` more
  (keys of stream 1), generated in one call; cached in ``workdir/sampling_pool.json``."""
  pids = [problem_id(r) for r in rows]
  fp = fingerprint(c, pids)
  path = os.path.join(workdir, "sampling_pool.json") if workdir else None
  if path and os.path.isfile(path):
    with open(path) as f:
      cached = json.load(f)
    if cached.get("fingerprint") == fp:
      return cached["pool"]
  extra = c.population * (c.steps - 1)
  pool = [list(p["ids"]) for p in first["problems"]]
  if extra:
    _, keys = step_randomness(c.seed, pids, 0, extra, stream=1)
    prompts = Prompts.from_config(c.prompt)
    requests = []
    for p, row in enumerate(rows):
      ids, _, _ = build_prompt(gen, prompts, row, None, c.generation.max_prompt_tokens,
                               c.overflow, 0)
      requests.extend(Request(row=row, prompt_ids=ids, key=keys[p, j]) for j in range(extra))
    outputs = gen(requests)
    for p in range(len(rows)):
      pool[p].extend(list(map(int, o)) for o in outputs[p * extra:(p + 1) * extra])
  if path:
    files.write_json(path, {"fingerprint": fp, "pool": pool})
  return pool


def sampling_curve(rows: Sequence[dict[str, Any]], pool: Sequence[Sequence[Sequence[int]]],
                   rsa_curve: Sequence[dict[str, Any]], decode: Callable[[Sequence[int]], str]
                   ) -> list[dict[str, Any]]:
  """Plain sampling matched to RSA's generated tokens: at each RSA step, per problem, the
  shortest prefix of the pool whose tokens reach RSA's cumulative tokens (all of the pool if it
  never does), scored by mean accuracy, majority vote and pass@m."""
  texts = [[decode(s) for s in p] for p in pool]
  out = []
  for point in rsa_curve:
    per = []
    for p, row in enumerate(rows):
      lens = np.asarray([len(s) for s in pool[p]])
      target = point["per_problem"][p]["tokens_cum"]
      m = int(min(np.searchsorted(np.cumsum(lens), target) + 1, len(lens)))
      met = population_metrics(tasks_lib.get_task(row["task"]), row["answer"], texts[p][:m],
                               lens[:m])
      met["samples"] = float(m)
      met["tokens_cum"] = float(lens[:m].sum())
      per.append(met)
    out.append({"step": point["step"], "overall": overall(per), "per_problem": per})
  return out


# -- results and plots ----------------------------------------------------------------------------


def _records(curve_: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  keys = ("accuracy", "majority", "pass_at_n", "distinct_answers")
  return [{"step": pt["step"], "tokens": pt["overall"]["tokens_cum"],
           **{k: [m[k] for m in pt["per_problem"]] for k in keys}} for pt in curve_]


def write_results(workdir: str, c: ml_collections.ConfigDict, rows: Sequence[dict[str, Any]],
                  curves: dict[str, Sequence[dict[str, Any]]]) -> tuple[str, list[str]]:
  """``workdir/results.json`` and PNG curves (vs step and vs mean cumulative tokens per problem;
  bands: 95% Student-t intervals over problems). Returns ``(results path, png paths)``."""
  from jaxlab.core import plotting  # pylint: disable=g-import-not-at-top
  results = {
      "config": json.loads(config_lib.to_json(c)),
      "problems": [{"id": problem_id(r), "task": r["task"], "question": r["question"],
                    "answer": r["answer"]} for r in rows],
      **{name: {"steps": list(cv)} for name, cv in curves.items()}}
  path = os.path.join(workdir, "results.json")
  files.write_json(path, results)
  runs = {name: _records(cv) for name, cv in curves.items()}
  keys = ("accuracy", "majority", "pass_at_n", "distinct_answers")
  pngs = plotting.plot_runs(runs, keys, os.path.join(workdir, "plots", "by_step"), x_key="step")
  pngs += plotting.plot_runs(runs, keys, os.path.join(workdir, "plots", "by_tokens"),
                             x_key="tokens")
  return path, pngs


def run_all(c: ml_collections.ConfigDict, rows: Sequence[dict[str, Any]], gen: Generator,
            workdir: str, log: Callable[[str], None] | None = None
            ) -> tuple[dict[str, list[dict[str, Any]]], str, list[str]]:
  """RSA, then the baselines the config asks for; writes results and plots.

  Returns:
    ``({"rsa": curve, "self_refine": ..., "sampling": ...}, results path, png paths)``.
  """
  states = run(c, rows, gen, workdir, "rsa", log=log)
  curves = {"rsa": curve(rows, states)}
  if c.baselines.self_refine and c.k > 1 and c.steps > 1:
    c1 = ml_collections.ConfigDict(c.to_dict())
    c1.k = 1
    curves["self_refine"] = curve(rows, run(c1, rows, gen, workdir, "self_refine", log=log,
                                            initial=states[0]))
  if c.baselines.sampling:
    pool = sampling_pool(c, rows, gen, states[0], workdir)
    curves["sampling"] = sampling_curve(rows, pool, curves["rsa"], gen.decode)
  path, pngs = write_results(workdir, c, rows, curves)
  return curves, path, pngs


# -- aggregation-aware RL data (spec §3.6) --------------------------------------------------------


def aggregation_rl_rows(c: ml_collections.ConfigDict, rows: Sequence[dict[str, Any]],
                        reference: Generator) -> list[dict[str, Any]]:
  """Training rows for aggregation-aware RL: each problem twice, as a standard prompt and as
  an aggregation prompt over ``c.k`` candidates sampled once from the frozen ``reference``
  (the 50/50 mix of spec §3.6; the candidates are never regenerated during training).

  Rows are task rows (:func:`jaxlab.llm.tasks.validate_row`) whose ``question`` is the full
  prompt text, so the ``llm_rl`` trainer reads them with ``data.prompt_format="{question}"``
  and scores them with the task's verifier against ``answer``. ``metadata.rsa_form`` is
  ``"standard"`` or ``"aggregation"``; aggregation rows also keep ``source_question``, ``k``,
  the candidate texts as shown (``candidates``) and which were right (``candidates_correct``).
  Candidates use keys of stream 2, one batched call for all problems; over-long prompts follow
  ``c.overflow``.
  """
  prompts = Prompts.from_config(c.prompt)
  budget = c.generation.max_prompt_tokens
  pids = [problem_id(r) for r in rows]
  _, keys = step_randomness(c.seed, pids, 0, c.k, stream=2)
  requests = []
  for p, row in enumerate(rows):
    ids, _, _ = build_prompt(reference, prompts, row, None, budget, c.overflow, 0)
    requests.extend(Request(row=row, prompt_ids=ids, key=keys[p, j]) for j in range(c.k))
  outputs = reference(requests)
  out = []
  for p, row in enumerate(rows):
    meta = dict(row.get("metadata") or {})
    out.append(dict(row, question=prompts.plain(row),
                    metadata=dict(meta, rsa_form="standard")))
    cands = [list(map(int, o)) for o in outputs[p * c.k:(p + 1) * c.k]]
    _, texts, _ = build_prompt(reference, prompts, row, cands, budget, c.overflow, 1)
    task = tasks_lib.get_task(row["task"])
    correct = [bool(task.equal(task.extract(t), row["answer"])) for t in texts]
    out.append(dict(row, question=prompts.aggregation(row, texts),
                    metadata=dict(meta, rsa_form="aggregation", k=c.k,
                                  source_question=row["question"], candidates=list(texts),
                                  candidates_correct=correct)))
  return out
