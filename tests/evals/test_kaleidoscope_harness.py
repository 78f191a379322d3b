"""The Kaleidoscope harness end to end: model directory + release -> outputs -> metrics.

Scripted outputs (the generation step replaced by known answers) pin the plumbing from
extraction to results.json; a tiny random decoder runs the real sampler path for resume and
determinism; one subprocess runs ``launch.eval --benchmark=kaleidoscope``.
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from jaxlab import evals
from jaxlab.core import files
from jaxlab.core.errors import ConfigError
from jaxlab.evals import benchmark, generation, kaleidoscope, mcq
from tests.evals.test_kaleidoscope_data import IMAGES, PARQUET
from tests.models.decoder.tiny_hf import save_tiny_char_decoder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  alphabet = "0123456789ABCD{}\":. choiceANSWER<>/?abcdefghijklmnopqrstuvwxyz"
  return save_tiny_char_decoder(str(tmp_path_factory.mktemp("kscope_model")), alphabet)


def _args(model_dir, workdir, **kw):
  base = dict(model=model_dir, data=PARQUET, workdir=str(workdir), images=IMAGES,
              text_only=True, limit=3, batch_size=4, max_new_tokens=6)
  base.update(kw)
  return evals.BenchmarkArgs(**base)


def _scripted(answer_for):
  """A stand-in for generation.generate_outputs that answers each prompt by its key."""
  def fake(model, tokenizer, prompts, path, **kw):
    out = {k: {"key": k, "output": answer_for(k), "prompt_tokens": 1, "new_tokens": 1}
           for k, _ in prompts}
    files.write_jsonl(path, out.values())
    return out
  return fake


def test_scripted_outputs_give_hand_computed_metrics(model_dir, tmp_path, monkeypatch):
  items = {it.key: it for it in kaleidoscope.load(PARQUET).items}
  # Right answers in JSON for every language but Russian, whose items get a wrong letter, and
  # Hindi, whose items get prose (a format error).
  def answer(key):
    it = items[key]
    if it.language == "ru":
      return '{"choice": "%s"}' % "ABCD"[(it.answer + 1) % 4]
    if it.language == "hi":
      return "मुझे नहीं पता"
    return '{"choice": "%s"}' % "ABCD"[it.answer]
  monkeypatch.setattr(generation, "generate_outputs", _scripted(answer))
  res = kaleidoscope.evaluate(_args(model_dir, tmp_path))
  head = res["results"]["kaleidoscope_direct"]
  by_lang = res["breakdowns"]["language"]
  n_lang = len(by_lang)
  assert by_lang["ru"]["total_accuracy"] == 0.0 and by_lang["ru"]["valid_accuracy"] == 0.0
  assert by_lang["hi"]["format_error_rate"] == 1.0 and by_lang["hi"]["valid_accuracy"] is None
  assert by_lang["es"]["total_accuracy"] == 1.0
  assert head["total_accuracy,macro_language"] == pytest.approx((n_lang - 2) / n_lang)
  n_items = sum(v["n"] for v in by_lang.values())
  wrong = by_lang["ru"]["n"] + by_lang["hi"]["n"]
  assert head["total_accuracy,micro"] == pytest.approx((n_items - wrong) / n_items)
  assert head["format_error_rate,micro"] == pytest.approx(by_lang["hi"]["n"] / n_items)
  samples = files.read_jsonl(os.path.join(tmp_path, mcq.SAMPLES_FILE))
  text_only = [it for it in items.values() if not it.is_multimodal]
  per_language = {lang: min(3, sum(it.language == lang for it in text_only))
                  for lang in kaleidoscope.LANGUAGES}
  assert len(samples) == n_items == sum(per_language.values())
  assert {k: v["n"] for k, v in by_lang.items()} == {k: v for k, v in per_language.items() if v}
  rules_fired = {s["language"]: s["rule"] for s in samples}
  assert rules_fired["es"] == "json_choice" and rules_fired["hi"] is None
  assert set(res["breakdowns"]) >= {"language", "modality", "domain", "script", "resource"}
  assert os.path.isfile(os.path.join(tmp_path, mcq.PLOT_FILE))
  table = benchmark.results_table(res).splitlines()
  assert len(table) == 2 + n_lang + 2  # header, groups, macro and micro
  assert f"| es | {by_lang['es']['n']} | 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000] |" in (
      "\n".join(table))
  assert any(row.startswith("| hi |") and "| — |" in row for row in table)


def test_image_items_need_a_vlm_or_text_only(model_dir, tmp_path):
  with pytest.raises(ConfigError, match="--text_only"):
    kaleidoscope.evaluate(_args(model_dir, tmp_path, text_only=False))
  with pytest.raises(ConfigError, match="--multimodal_only needs a vision-language model"):
    kaleidoscope.evaluate(_args(model_dir, tmp_path, text_only=False, multimodal_only=True))
  with pytest.raises(ConfigError, match="pass one"):
    kaleidoscope.evaluate(_args(model_dir, tmp_path, multimodal_only=True))
  with pytest.raises(ConfigError, match="unknown language"):
    kaleidoscope.evaluate(_args(model_dir, tmp_path, languages=("xx",)))
  with pytest.raises(ConfigError, match="regime"):
    kaleidoscope.evaluate(_args(model_dir, tmp_path, regime="fewshot"))


def test_multimodal_only_selects_the_headline_items():
  """The paper's headline set: the items with images, the per-language limit after it."""
  with kaleidoscope.load(PARQUET, images=IMAGES) as ds:
    items = ds.items
  args = evals.BenchmarkArgs(model="m", data=PARQUET, workdir="w", multimodal_only=True,
                             limit=2)
  got = kaleidoscope._select(items, args, kaleidoscope.VLM_FAMILY)  # pylint: disable=protected-access
  assert got and all(it.is_multimodal for it in got)
  want = kaleidoscope.first_per_language([it for it in items if it.is_multimodal], 2)
  assert [it.key for it in got] == [it.key for it in want]
  every = kaleidoscope._select(items, dataclasses.replace(args, multimodal_only=False, limit=0),  # pylint: disable=protected-access
                               kaleidoscope.VLM_FAMILY)
  assert len(every) == len(items) > sum(it.is_multimodal for it in items)


def test_greedy_results_survive_interruption_and_batch_size(model_dir, tmp_path):
  whole = tmp_path / "whole"
  ref = kaleidoscope.evaluate(_args(model_dir, whole, languages=("en", "ru", "ar"), limit=3,
                                    batch_size=4))
  ref_samples = files.read_jsonl(os.path.join(whole, mcq.SAMPLES_FILE))
  # "Killed" after four items: the outputs file holds only them (and an unfinished line).
  cut = tmp_path / "cut"
  lines = open(os.path.join(whole, generation.OUTPUTS_FILE)).read().splitlines(True)
  os.makedirs(cut)
  assert len(lines) >= 6
  with open(os.path.join(cut, generation.OUTPUTS_FILE), "w") as f:
    f.write("".join(lines[:4]) + lines[4][:10])
  resumed = kaleidoscope.evaluate(_args(model_dir, cut, languages=("en", "ru", "ar"), limit=3,
                                        batch_size=4))
  assert json.dumps(resumed, sort_keys=True) == json.dumps(ref, sort_keys=True)
  assert files.read_jsonl(os.path.join(cut, mcq.SAMPLES_FILE)) == ref_samples
  assert len(files.read_jsonl(os.path.join(cut, generation.OUTPUTS_FILE))) == len(ref_samples)
  other = tmp_path / "other"
  kaleidoscope.evaluate(_args(model_dir, other, languages=("en", "ru", "ar"), limit=3, batch_size=3))
  assert ([s["output"] for s in files.read_jsonl(os.path.join(other, mcq.SAMPLES_FILE))]
          == [s["output"] for s in ref_samples])
  with pytest.raises(ConfigError, match="regime='direct', now regime='cot'"):
    kaleidoscope.evaluate(_args(model_dir, whole, languages=("en", "ru", "ar"), limit=3, regime="cot"))


def test_launch_eval_benchmark_cli(model_dir, tmp_path):
  def run(*flags):
    return subprocess.run([sys.executable, "-m", "launch.eval", "--benchmark=kaleidoscope",
                           f"--model={model_dir}", f"--workdir={tmp_path / 'out'}", *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  ok = run(f"--data={PARQUET}", "--text_only", "--limit=1", "--languages=en,es",
           "--max_new_tokens=4", "--regime=cot")
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "kaleidoscope_cot macro_language: total_accuracy=" in ok.stdout
  assert os.path.isfile(tmp_path / "out" / mcq.RESULTS_FILE)
  bad = run(f"--data={tmp_path / 'missing'}", "--text_only")
  assert bad.returncode == 2
  assert bad.stderr.strip().count("\n") == 0 and "missing" in bad.stderr, bad.stderr
