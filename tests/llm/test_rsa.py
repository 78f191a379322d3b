"""RSA (jaxlab/llm/rsa.py, launch/rsa.py): aggregation sets, islands, invariance to problem
order and batching, resume, a scripted aggregator with a closed-form step-1 accuracy, metrics by
hand, the overflow policy and the one-line errors of the command line."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy import stats

from jaxlab.core import config as config_lib
from jaxlab.core.errors import ConfigError
from jaxlab.llm import rsa
from jaxlab.llm import tasks as tasks_lib
from tests.models.decoder.tiny_hf import save_tiny_char_decoder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WRONG = "#"


class ScriptedGenerator:
  """A "model" with closed-form behaviour, on characters as tokens.

  Step 0: each character of the reference answer is right with probability ``p`` (else
  ``#``), independently, from the request's key. Aggregation: the per-position majority of
  the candidate strings (ties keep the first candidate's character).
  """

  def __init__(self, p: float):
    self.p = p
    self.calls = []

  def encode_prompt(self, text):
    return [ord(ch) for ch in text]

  encode_text = encode_prompt

  def decode(self, ids):
    return "".join(chr(i) for i in ids)

  def __call__(self, requests):
    self.calls.append(len(requests))
    first = [r for r in requests if r.candidates is None]
    draws = {}
    if first:
      length = max(len(r.row["answer"]) for r in first)
      u = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (length,)))(
          np.stack([r.key for r in first])))
      draws = {id(r): u[j] for j, r in enumerate(first)}
    out = []
    for r in requests:
      if r.candidates is None:
        ans = r.row["answer"]
        text = "".join(ch if draws[id(r)][i] < self.p else WRONG for i, ch in enumerate(ans))
      else:
        cols = zip(*r.candidates)
        text = "".join(max(col, key=lambda ch, col=col: (col.count(ch), ch == col[0]))
                       for col in cols)
      out.append(self.encode_prompt(text))
    return out


def _rows(n, answer="abc"):
  return [{"task": "spell_backward", "question": f"Spell item {i} backward", "answer": answer,
           "seed": 0} for i in range(n)]


def _config(**kw):
  c = rsa.default_config()
  c.prompt.aggregate = "{question}|{candidates}|"
  c.prompt.refine = "{question}|{candidates}|"
  c.generation.max_prompt_tokens = 256
  for k, v in kw.items():
    rsa.config_lib.set_dotted(c, {k: v})
  rsa.validate(c)
  return c


# -- aggregation sets and islands -------------------------------------------------------------------


def test_sets_hold_k_distinct_members_of_their_island_self_allowed():
  for island_size, k in ((4, 2),):
    sets, _ = rsa.step_randomness(3, list(range(50)), 2, 16, k, island_size)
    assert sets.shape == (50, 16, k)
    assert all(len(set(s)) == k for s in sets.reshape(-1, k).tolist())
    island = (np.arange(16) // island_size)[None, :, None]
    np.testing.assert_array_equal(sets // island_size, np.broadcast_to(island, sets.shape))
  # Sets come from the whole island, the new member's own predecessor included (spec §3.1):
  # with island 4 and K=2 that happens half of the time, and members are drawn uniformly.
  own = np.mean(np.any(sets == np.arange(16)[None, :, None], axis=-1))
  assert 0.4 < own < 0.6
  counts = np.bincount(sets.reshape(-1), minlength=16)
  assert stats.chisquare(counts).pvalue > 1e-3


def test_keys_depend_on_problem_step_and_member_only():
  _, a = rsa.step_randomness(1, [7, 9], 3, 4)
  _, b = rsa.step_randomness(1, [9, 7, 11], 3, 4)
  np.testing.assert_array_equal(a[0], b[1])
  np.testing.assert_array_equal(a[1], b[0])
  _, c = rsa.step_randomness(1, [7], 4, 4)
  _, d = rsa.step_randomness(1, [7], 3, 4, stream=1)
  assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])
  assert len({tuple(x) for x in b.reshape(-1, 2).tolist()}) == 12


def test_island_schedule_merges_pairwise_at_even_steps():
  assert [rsa.islands_at(t, 4, 9) for t in range(9)] == [4, 4, 4, 2, 2, 2, 1, 1, 1]
  assert [rsa.islands_at(t, 1, 5) for t in range(5)] == [1] * 5
  assert [rsa.islands_at(t, 2, 4) for t in range(4)] == [2, 2, 1, 1]


# -- metrics --------------------------------------------------------------------------------------


def test_population_metrics_by_hand():
  task = tasks_lib.get_task("chain_sum")
  texts = ["so 6", "6.0", "12/2", "7", "7", "7", "no number", "5"]
  lengths = [4, 3, 4, 1, 1, 1, 9, 1]
  m = rsa.population_metrics(task, "6", texts, lengths)
  assert m["accuracy"] == pytest.approx(3 / 8)
  assert m["majority"] == 0.5  # {6, 6.0, 12/2} ties {7, 7, 7}: half credit
  assert m["pass_at_n"] == 1.0
  assert m["distinct_answers"] == 3  # 6, 7, 5; "no number" has no answer
  assert m["no_answer"] == pytest.approx(1 / 8)
  assert m["tokens"] == 24 and m["length_mean"] == 3.0 and m["length_median"] == 2.0
  assert m["length_q25"] == 1.0 and m["length_q75"] == 4.0
  m = rsa.population_metrics(task, "5", texts[3:], lengths[3:])
  assert (m["accuracy"], m["majority"], m["pass_at_n"]) == (0.2, 0.0, 1.0)
  m = rsa.population_metrics(task, "5", ["x", "y"], [1, 1])
  assert (m["majority"], m["distinct_answers"], m["pass_at_n"]) == (0.0, 0.0, 0.0)


def test_curve_tokens_and_sampling_baseline_match_token_budgets():
  c = _config(population=4, k=2, steps=3)
  rows = _rows(5)
  gen = ScriptedGenerator(0.5)
  states = rsa.run(c, rows, gen)
  cv = rsa.curve(rows, states)
  # Every member is len("abc") = 3 tokens: 12 per problem and step.
  assert [pt["overall"]["tokens_cum"] for pt in cv] == [12.0, 24.0, 36.0]
  assert cv[-1]["overall"]["tokens_cum_total"] == 36.0 * 5
  pool = rsa.sampling_pool(c, rows, gen, states[0])
  assert [len(p) for p in pool] == [12] * 5
  assert pool[0][:4] == states[0]["problems"][0]["ids"]  # step 0 is shared
  sc = rsa.sampling_curve(rows, pool, cv, gen.decode)
  assert [pt["overall"]["samples"] for pt in sc] == [4.0, 8.0, 12.0]
  assert [pt["overall"]["tokens_cum"] for pt in sc] == [12.0, 24.0, 36.0]
  assert sc[0]["overall"]["accuracy"] == cv[0]["overall"]["accuracy"]


# -- the scripted aggregator: closed form ---------------------------------------------------------


def test_scripted_majority_aggregator_matches_closed_form():
  p, k, length, n, problems = 0.7, 3, 3, 8, 300
  c = _config(population=n, k=k, steps=2)
  gen = ScriptedGenerator(p)
  states = rsa.run(c, _rows(problems, "abc"), gen)
  # One batched call per step, for all problems.
  assert gen.calls == [n * problems, n * problems]
  cv = rsa.curve(_rows(problems, "abc"), states)
  # Members of distinct indices of an i.i.d. population are i.i.d.: each position of the
  # aggregate is right when at least 2 of 3 draws are.
  q = p ** 3 + 3 * p ** 2 * (1 - p)
  for step, want in ((0, p ** length), (1, q ** length)):
    acc = np.asarray([m["accuracy"] for m in cv[step]["per_problem"]])
    se = acc.std(ddof=1) / np.sqrt(problems)
    assert abs(acc.mean() - want) < 3 * se, (step, acc.mean(), want, se)


# -- resume and invariance ------------------------------------------------------------------------


def test_resume_equals_uninterrupted_and_islands_never_mix_before_their_merge(tmp_path):
  c = _config(population=8, k=2, steps=4, islands=2)
  rows = _rows(7)
  full = rsa.run(c, rows, ScriptedGenerator(0.6), str(tmp_path / "a"))
  assert [s["islands"] for s in full] == [2, 2, 1, 1]
  for state in full[1:]:
    size = 8 // state["islands"]
    for prob in state["problems"]:
      sets = np.asarray(prob["sets"])
      np.testing.assert_array_equal(sets // size,
                                    np.broadcast_to((np.arange(8) // size)[:, None], sets.shape))
  part = rsa.run(c, rows, ScriptedGenerator(0.6), str(tmp_path / "b"), max_steps=2)
  assert len(part) == 2
  gen = ScriptedGenerator(0.6)
  resumed = rsa.run(c, rows, gen, str(tmp_path / "b"))
  assert len(gen.calls) == 2  # only the missing steps were generated
  assert [s["problems"] for s in resumed] == [s["problems"] for s in full]
  # A different config in the same workdir is refused, not mixed in.
  c2 = _config(population=8, k=3, steps=4, islands=2)
  with pytest.raises(rsa.WorkdirError, match="another config"):
    rsa.run(c2, rows, ScriptedGenerator(0.6), str(tmp_path / "b"))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
  return save_tiny_char_decoder(str(tmp_path_factory.mktemp("rsa_model")),
                                "0123456789+-= abcdefghijklmnopqrstuvwxyz|?.:[]")


def _short_rows(n):
  rows = tasks_lib.load_jsonl(os.path.join(REPO, "data", "llm", "chain_sum_eval.jsonl"), n)
  return [dict(r, question=r["question"].split(": ")[-1]) for r in rows]


def test_same_populations_under_other_problem_order_and_batch_size(tiny_model_dir):
  from jaxlab import models
  model, tok = models.from_pretrained(tiny_model_dir)
  rows = _short_rows(2)
  c = _config(population=4, k=2, steps=2, **{"generation.max_new_tokens": 4,
                                             "generation.max_prompt_tokens": 128})
  make = lambda bs: rsa.SamplerGenerator(model, tok, 4, 128, batch_size=bs)
  a = rsa.run(c, rows, make(0))
  b = rsa.run(c, rows[::-1], make(3))
  for sa, sb in zip(a, b):
    by_id = {p["id"]: p for p in sb["problems"]}
    for p in sa["problems"]:
      assert p == by_id[p["id"]]
  assert len({tuple(x) for p in a[1]["problems"] for x in p["ids"]}) > 1


# -- overflow -------------------------------------------------------------------------------------


def test_overflow_shortens_to_the_budget_or_stops_with_a_line():
  gen = ScriptedGenerator(0.5)
  prompts = rsa.Prompts(aggregate="{question}|{candidates}|", candidate="<{text}>",
                        separator="")
  row = _rows(1)[0]
  cands = [gen.encode_text("x" * 30 + "abc"), gen.encode_text("y" * 5 + "abd")]
  overhead = len(row["question"]) + 2 + 4  # "|", "|" and two "<>"
  ids, texts, cut = rsa.build_prompt(gen, prompts, row, cands, overhead + 20, "shorten", 1)
  assert len(ids) <= overhead + 20 and cut == 1
  assert texts == ("x" * 7 + "abc", "y" * 5 + "abd")  # the end (with the answer) is kept
  ids, texts, cut = rsa.build_prompt(gen, prompts, row, cands, 200, "shorten", 1)
  assert cut == 0 and texts == ("x" * 30 + "abc", "yyyyyabd")
  with pytest.raises(rsa.RsaError, match=r"step 1, problem \d+ .*over 'config.generation."
                     r"max_prompt_tokens'=40"):
    rsa.build_prompt(gen, prompts, row, cands, 40, "error", 1)
  with pytest.raises(rsa.RsaError, match="no room for K=2"):
    rsa.build_prompt(gen, prompts, row, cands, overhead, "shorten", 1)


def test_run_with_error_policy_stops_at_the_first_long_aggregation_prompt():
  c = _config(population=4, k=2, steps=2, overflow="error",
              **{"generation.max_prompt_tokens": 36})
  with pytest.raises(rsa.RsaError, match="step 1"):
    rsa.run(c, _rows(2), ScriptedGenerator(0.5))


# -- config rules and the command line ------------------------------------------------------------


@pytest.mark.parametrize("overrides,needle", [
    ({"k": 5, "population": 4}, "'config.k'=5 exceeds 'config.population'=4"),
    ({"k": 0}, "'config.k'=0 must be >= 1"),
    ({"steps": 0}, "'config.steps'=0 must be >= 1"),
    ({"islands": 3}, "'config.islands'=3 must be a power of two"),
    ({"islands": 4, "steps": 10}, "'config.steps'=10 is not divisible by"),
    ({"islands": 8, "population": 16, "k": 4, "steps": 12}, "exceeds the island size 2"),
    ({"overflow": "truncate"}, "'config.overflow'='truncate' is not one of"),
    ({"prompt.candidate": "{idx} {text}"}, "'config.prompt.candidate' does not format"),
])
def test_config_rules(overrides, needle):
  c = rsa.default_config()
  rsa.config_lib.set_dotted(c, overrides)
  with pytest.raises(ConfigError, match=None) as e:
    rsa.validate(c)
  assert needle in str(e.value)


def _cli(capsys, *args):
  from launch import rsa as launch_rsa
  code = launch_rsa.cli(["launch.rsa", *args])
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
  return code, err


def test_help_prints_usage_and_flags(capsys):
  from launch import rsa as launch_rsa
  assert launch_rsa.cli(["launch.rsa", "--help"]) == 0
  out = capsys.readouterr().out
  assert "python -m launch.rsa --model=DIR --task=" in out and "--rl_data" in out


def _config_file(tmp_path, body):
  path = tmp_path / "rsa_test_config.py"
  path.write_text("from jaxlab.llm import rsa\n\ndef get_config():\n  c = rsa.default_config()\n"
                  "  c.num_problems = 2\n  c.population = 4\n  c.k = 2\n  c.steps = 2\n"
                  "  c.generation.max_new_tokens = 4\n  c.generation.max_prompt_tokens = 128\n"
                  "  c.prompt.aggregate = '{question}|{candidates}|'\n"
                  "  c.prompt.refine = '{question}|{candidates}|'\n" + body + "  return c\n")
  return str(path)


@pytest.mark.parametrize("args,needle", [
    (("--config.k=9",), "'config.k'=9 exceeds 'config.population'=4"),
    (("--config.k=0",), "'config.k'=0 must be >= 1"),
    (("--config.steps=0",), "'config.steps'=0 must be >= 1"),
    (("--config.islands=3",), "power of two"),
    (("--config.islands=2", "--config.steps=3"), "not divisible by log2"),
    (("--task=no_such_task",), "--task='no_such_task' is neither a known task"),
    (("--config.generation.max_prompt_tokens=30",),
     "the question prompt has 72 tokens, over 'config.generation.max_prompt_tokens'=30"),
    (("--config.overflow=error", "--config.prompt.candidate=[Attempt {index} of the set]: {text}"),
     "step 1, problem"),
    (("--config.trials=3",), "unknown config key 'config.trials'"),
])
def test_cli_bad_input_is_one_error_line(capsys, tmp_path, tiny_model_dir, args, needle):
  task = [] if any(a.startswith("--task=") for a in args) else ["--task=chain_sum"]
  argv = [f"--model={tiny_model_dir}", *task, f"--workdir={tmp_path / 'w'}",
          f"--config={_config_file(tmp_path, '')}", *args]
  code, err = _cli(capsys, *argv)
  assert code == 2
  # Progress lines may come first; the failure is one line, the last.
  assert [ln for ln in err if ln.startswith("error:")] == err[-1:], err
  assert needle in err[-1], err


def test_cli_runs_and_writes_results_and_plots(capsys, tmp_path, tiny_model_dir):
  task_file = tmp_path / "short.jsonl"
  tasks_lib.write_jsonl(_short_rows(2), str(task_file))
  args = [f"--model={tiny_model_dir}", f"--task={task_file}",
          f"--config={_config_file(tmp_path, '')}", f"--workdir={tmp_path / 'run'}"]
  code, err = _cli(capsys, *args)
  assert code == 0, err
  with open(tmp_path / "run" / "results.json") as f:
    res = json.load(f)
  assert set(res) >= {"config", "problems", "rsa", "self_refine", "sampling"}
  assert [s["step"] for s in res["rsa"]["steps"]] == [0, 1]
  assert len(res["rsa"]["steps"][1]["per_problem"]) == 2
  plots = os.listdir(tmp_path / "run" / "plots" / "by_tokens")
  assert "accuracy.png" in plots and "majority.png" in plots
  # The real entry point: exit status 2 and one line.
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  bad = subprocess.run([sys.executable, "-m", "launch.rsa", *args[:3],
                        f"--workdir={tmp_path / 'bad'}", "--config.k=7"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  err = [ln for ln in bad.stderr.splitlines() if ln.strip()]
  assert bad.returncode == 2 and len(err) == 1 and "'config.k'=7" in err[0], bad.stderr


# -- aggregation-aware RL data --------------------------------------------------------------------


def test_aggregation_rl_rows_mix_standard_and_reference_candidate_prompts(tmp_path):
  from jaxlab.llm import data as data_lib
  c = _config(population=8, k=3, steps=2)
  rows = _rows(10)
  out = rsa.aggregation_rl_rows(c, rows, ScriptedGenerator(0.6))
  forms = [r["metadata"]["rsa_form"] for r in out]
  assert forms == ["standard", "aggregation"] * 10
  for std, agg, row in zip(out[::2], out[1::2], rows):
    assert std["question"] == row["question"] and std["answer"] == agg["answer"] == "abc"
    cands = agg["question"].split("|")[1].split("[Attempt ")[1:]
    assert len(cands) == 3 and agg["question"].startswith(row["question"] + "|")
    texts = [t.split("]\n", 1)[1].strip() for t in cands]
    assert agg["metadata"]["candidates"] == texts
    assert agg["metadata"]["candidates_correct"] == [t == "abc" for t in texts]
    assert agg["metadata"]["source_question"] == row["question"]
  path = str(tmp_path / "agg.jsonl")
  tasks_lib.write_jsonl(out, path)
  assert [r for _, _, r in data_lib.load_rows([path])] == out  # what llm_rl reads
  # Candidates differ across problems and members (independent keys).
  assert 0 < np.mean([x for r in out[1::2] for x in r["metadata"]["candidates_correct"]]) < 1


def test_default_config_file_is_valid():
  c = config_lib.load_file(os.path.join(REPO, "configs", "rsa", "default.py"))
  rsa.validate(c)
  assert (c.population, c.k, c.steps) == (16, 4, 10)  # spec §3.3


def test_default_templates_refine_with_one_candidate_and_aggregate_with_several():
  """Spec §3.2: K = 1 uses the self-refinement prompt with its single block, K > 1 the
  aggregation prompt with numbered, stripped candidates in the given order."""
  p = rsa.Prompts()
  row = {"question": "Spell 'cat' backward."}
  one = p.aggregation(row, ["  tac  "])
  assert one.startswith("Here is a problem and one earlier attempt")
  assert "[Attempt]\ntac" in one and "[Attempt 1]" not in one
  assert "Spell 'cat' backward." in one and "inside <answer></answer> tags" in one
  two = p.aggregation(row, [" tac\n", "atc"])
  assert two.startswith("Here is a problem followed by 2 attempted solutions")
  assert two.index("[Attempt 1]\ntac") < two.index("[Attempt 2]\natc")
  assert "one earlier attempt" not in two
