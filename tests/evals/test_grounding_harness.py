"""The grounding harness end to end: model directory + fixture release -> outputs -> scores ->
results.json, samples.jsonl, per-group plot and overlays.

Scripted outputs (generation replaced by known answers) pin the plumbing from prompt to
results; the tiny random Qwen2.5-VL model runs the real sampler path (a random model scores
about 0: the test checks files, schema and resume); one subprocess runs ``launch.eval``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxlab import evals
from jaxlab.core import files
from jaxlab.core.errors import ConfigError
from jaxlab.evals import generation, grounding, grounding_formats as gf
from jaxlab.grounding import answer, frames
from jaxlab.models.qwen_vl import processor
from tests.evals.grounding_fixtures import ROOT

pytest.importorskip("torch")  # the tiny model is written by transformers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  from tests.models.qwen_vl.tiny import save_tiny_vl  # pylint: disable=import-outside-toplevel
  path = str(tmp_path_factory.mktemp("grounding_vl"))
  save_tiny_vl(path)
  return path


def _args(model_dir, name, workdir, **kw):
  base = dict(model=model_dir, data=os.path.join(ROOT, name), workdir=str(workdir),
              batch_size=4, max_new_tokens=4)
  base.update(kw)
  return evals.BenchmarkArgs(**base)


def test_scripted_answers_give_the_scores_and_files(model_dir, tmp_path, monkeypatch):
  cfg = processor.ImageProcessorConfig.from_dir(model_dir)
  items = gf.read("mmbench_gui", os.path.join(ROOT, "mmbench_gui"), image_config=cfg)
  seen = {}

  def answer_for(i, it):
    b = it.region.bounds()
    if i % 3 == 0:
      return answer.format_answer(int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2))
    return "no idea" if i % 3 == 1 else answer.format_answer(0, it.frame.resized_height - 1)

  def fake(model, tokenizer, prompts, path, **kw):
    seen["prompts"], seen["images"] = dict(prompts), kw["images"]
    out = {it.key: {"key": it.key, "output": answer_for(i, it), "prompt_tokens": 1,
                    "new_tokens": 1} for i, it in enumerate(items)}
    files.write_jsonl(path, out.values())
    return out

  monkeypatch.setattr(generation, "generate_outputs", fake)
  texts = tmp_path / "texts.json"
  texts.write_text(json.dumps({"user": "Find: {instruction}"}))
  res = grounding.evaluate("mmbench_gui", _args(model_dir, "mmbench_gui", tmp_path / "w",
                                                texts=str(texts)))
  ref = grounding.score_items(items, {it.key: answer_for(i, it) for i, it in enumerate(items)},
                              macro_by="grounding_type")
  head = res["results"]["mmbench_gui"]
  assert head["total_accuracy,micro"] == ref["micro"]["total_accuracy"] > 0
  assert head["total_accuracy,macro_grounding_type"] == ref["macro"]["total_accuracy"]
  assert head["format_error_rate,micro"] == pytest.approx(3 / 8)
  assert set(res["breakdowns"]) == set(grounding.SPECS["mmbench_gui"].breakdowns)
  with open(tmp_path / "w" / grounding.RESULTS_FILE) as f:
    assert json.load(f) == json.loads(json.dumps(res))
  # The prompt: our system text with the resized size, the image span, the user's own text.
  it = items[0]
  prompt = seen["prompts"][it.key]
  w, h = it.frame.resized_size
  assert f"{w}x{h} pixels" in prompt and f"Find: {it.instruction}" in prompt
  assert prompt.count("<|image_pad|>") == 1 and prompt.index("<|image_pad|>") < prompt.index(
      "Find:")
  assert [im.size for im in seen["images"][0]] == [(it.frame.width, it.frame.height)]
  samples = files.read_jsonl(tmp_path / "w" / grounding.SAMPLES_FILE)
  assert [s["key"] for s in samples] == [it.key for it in items]
  assert samples[1]["point"] is None and samples[1]["valid"] is False
  assert samples[0]["correct"] is True and samples[0]["target"]["kind"] == "box"
  assert samples[0]["grounding_type"] == ["basic"] and samples[0]["resized_size"] == [w, h]
  # Overlays: the predicted point is drawn (red) at its place in ORIGINAL pixels.
  overlays = sorted(os.listdir(tmp_path / "w" / grounding.OVERLAY_DIR))
  assert overlays == ["00.png", "01.png", "02.png", "03.png"]
  x, y = frames.point_to_original(samples[0]["point"], it.frame)
  im = Image.open(tmp_path / "w" / grounding.OVERLAY_DIR / "00.png").convert("RGB")
  assert im.size == (it.frame.width, it.frame.height)
  r, g, b = im.getpixel((int(round(x)), int(round(y))))
  assert r > 200 and g < 50 and b < 50
  assert os.path.getsize(tmp_path / "w" / grounding.PLOT_FILE) > 0


def test_tiny_vlm_end_to_end_with_resume(model_dir, tmp_path):
  # Sampled decoding: the random model's greedy output is one token repeated, so equal greedy
  # outputs would prove little about resume.
  kw = dict(limit=4, temperature=1.0, seed=3, max_new_tokens=6, batch_size=2)
  whole = tmp_path / "whole"
  ref = grounding.evaluate("osworld_g", _args(model_dir, "osworld_g", whole, **kw))
  head = ref["results"]["osworld_g"]
  assert 0.0 <= head["total_accuracy,micro"] <= 1.0
  assert ref["n-samples"]["osworld_g"]["effective"] == 4
  assert set(ref["breakdowns"]) == {"bucket", "box_type"}
  samples = files.read_jsonl(whole / grounding.SAMPLES_FILE)
  assert len(samples) == 4 and len({s["output"] for s in samples}) > 1
  assert {"key", "point", "valid", "correct", "output", "target", "bucket"} <= set(samples[0])
  records = files.read_jsonl(whole / generation.OUTPUTS_FILE)
  # 256x160 under the tiny processor (max 28*28*20 pixels): 140x84, 5x3 merged patches.
  first = [r for r in records if r["key"] == samples[0]["key"]][0]
  assert samples[0]["resized_size"] == [140, 84] and first["prompt_tokens"] > 15
  # Killed after one batch and half a line, then resumed (the batch size may not change the
  # outputs: generation's own tests; the same size here reuses the compiled program).
  cut = tmp_path / "cut"
  os.makedirs(cut)
  lines = (whole / generation.OUTPUTS_FILE).read_text().splitlines(True)
  (cut / generation.OUTPUTS_FILE).write_text("".join(lines[:2]) + lines[2][:10])
  (cut / "run.json").write_text((whole / "run.json").read_text())
  resumed = grounding.evaluate("osworld_g", _args(model_dir, "osworld_g", cut, **kw))
  assert files.read_jsonl(cut / grounding.SAMPLES_FILE) == samples
  assert resumed["results"] == ref["results"] and resumed["breakdowns"] == ref["breakdowns"]
  assert len(files.read_jsonl(cut / generation.OUTPUTS_FILE)) == 4
  with pytest.raises(ConfigError, match="max_new_tokens"):
    grounding.evaluate("osworld_g", _args(model_dir, "osworld_g", cut,
                                          **{**kw, "max_new_tokens": 7}))


def test_options_that_do_not_apply_and_bad_texts(model_dir, tmp_path):
  for bad in (dict(regime="cot"), dict(languages=("en",)), dict(text_only=True)):
    with pytest.raises(ConfigError, match="does not apply|one prompting regime"):
      grounding.evaluate("ui_vision", _args(model_dir, "ui_vision", tmp_path, **bad))
  texts = tmp_path / "t.json"
  texts.write_text(json.dumps({"sytem": "x"}))
  with pytest.raises(ConfigError, match="unknown key 'sytem'"):
    grounding.evaluate("ui_vision", _args(model_dir, "ui_vision", tmp_path, texts=str(texts)))
  assert not os.path.exists(tmp_path / "run.json")


def test_launch_eval_cli(model_dir, tmp_path):
  def run(*flags, workdir=True):
    out = [f"--workdir={tmp_path / 'out'}"] if workdir else []
    # From tmp_path, so that a default workdir (runs/eval/...) lands there, not in the repo.
    return subprocess.run([sys.executable, "-m", "launch.eval", f"--model={model_dir}", *out,
                           *flags], cwd=tmp_path, env={**os.environ, "PYTHONPATH": REPO},
                          capture_output=True, text=True, timeout=300)
  ok = run("--benchmark=screenspot_v2", f"--data={os.path.join(ROOT, 'screenspot_v2')}",
           "--limit=1", "--batch_size=1", "--max_new_tokens=1", workdir=False)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "screenspot_v2 micro: total_accuracy=" in ok.stdout
  assert "platform=" in ok.stdout
  # Without --workdir: runs/eval/<benchmark>/<model dir name>, which the same command resumes.
  default = tmp_path / "runs" / "eval" / "screenspot_v2" / os.path.basename(model_dir)
  assert str(default.relative_to(tmp_path)) in ok.stderr, ok.stderr
  with open(default / grounding.RESULTS_FILE) as f:
    assert json.load(f)["n-samples"]["screenspot_v2"]["effective"] == 1
  for flags, words, workdir in (
      (["--benchmark=screenspot", f"--data={ROOT}"], "unknown benchmark 'screenspot'", True),
      (["--benchmark=ui_vision", f"--data={ROOT}"], "not a UI-Vision release", True),
      ([], "--workdir is required", False)):
    bad = run(*flags, workdir=workdir)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert words in bad.stderr, bad.stderr


def test_overlay_of_a_polygon_and_a_refusal(tmp_path):
  items = gf.read("osworld_g", os.path.join(ROOT, "osworld_g"))[6:9]
  rows = [{"point": [-1, -1], "correct": False}, {"point": None, "correct": False},
          {"point": [-1, -1], "correct": True}]
  paths = grounding.write_overlays(str(tmp_path), items, rows)
  assert len(paths) == 3
  im = np.asarray(Image.open(paths[0]).convert("RGB")).astype(int)
  green = (im[..., 1] > 150) & (im[..., 0] < 50) & (im[..., 2] < 50)
  assert green.any()  # the triangle's outline
