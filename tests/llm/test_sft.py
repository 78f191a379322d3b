"""The SFT trainer: it learns held-out arithmetic, resumes exactly, and runs from the launcher.

The in-process tests use the shipped chain_sum split with the questions shortened to their
expression ("State the final answer ...: 4 - 1 - 7 =" -> "4-1-7="): the same tasks and the same
disjoint train/held-out split, at 1/7 of the sequence length, so a learning run fits in ~15 s.
The full-length questions are what ``configs/llm/sft_tiny.py`` trains on (minutes).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxlab.core import loop
from jaxlab.core import config as config_lib
from jaxlab.core.errors import DataError
from jaxlab.llm.evaluation import TaskAccuracy
from jaxlab.core.mesh import make_mesh
from jaxlab.llm import data as data_lib
from jaxlab.llm import sft, tasks
from jaxlab.models.decoder import params as checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "data", "llm")


@pytest.fixture(scope="module")
def compact_data(tmp_path_factory):
  d = tmp_path_factory.mktemp("compact")
  out = {}
  for split in ("train", "eval"):
    rows = tasks.load_jsonl(os.path.join(DATA, f"chain_sum_{split}.jsonl"))
    for r in rows:
      r["question"] = r["question"].split(":", 1)[1].replace(" ", "")
    out[split] = str(d / f"{split}.jsonl")
    tasks.write_jsonl(rows, out[split])
  return out


def _config(data, **overrides):
  c = sft.default_config()
  c.data.train_files = (data["train"],)
  c.data.eval_files = (data["eval"],)
  c.data.completion_format = "{answer}"
  c.model.update(dict(hidden_size=64, intermediate_size=256, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=16))
  c.dtype = "float32"
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 20
  c.eval.max_new_tokens = 4
  config_lib.set_dotted(c, overrides)
  loop.validate(sft.TRAINER, c)
  return c


def _deterministic(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in f]


@pytest.mark.optimized  # a learning threshold (tests/conftest.py)
def test_learns_held_out_chain_sum(compact_data, tmp_path):
  """800 steps of a 0.1M-parameter decoder: >= 80% exact answers on 200 held-out problems
  (measured 0.90-0.96 over seeds 0-2); an untrained model gets ~0%."""
  c = _config(compact_data, steps=800, batch_size=64, log_every=100, **{
      "eval.every": 400, "checkpoint.every": 0, "eval.num_examples": 200})
  summary = sft.run(c, str(tmp_path / "run"), make_mesh(), progress=False)
  records = _deterministic(str(tmp_path / "run"))
  assert records[0]["train/loss"] > 2 * records[-1]["train/loss"]
  assert summary["eval/accuracy"] >= 0.8, records
  samples = [json.loads(line) for line in open(tmp_path / "run" / "eval_samples.jsonl")]
  assert len(samples) == 200
  assert np.mean([s["correct"] for s in samples]) == pytest.approx(summary["eval/accuracy"])
  # The exported Hugging Face directory is the trained model: loaded back, it gives the same
  # held-out completions.
  model, tok = checkpoint.from_pretrained(summary["hf_model"])
  evaluator = TaskAccuracy.from_config(c, tok, data_lib.load_rows([compact_data["eval"]]), None)
  assert evaluator.completions(model) == [s["completion"] for s in samples]
  # ... and config.model.init fine-tunes it (weights and tokenizer from that directory): a
  # few steps at a tiny learning rate keep its accuracy, which a fresh model would not have.
  tuned = _config(compact_data, steps=4, batch_size=64, log_every=2, **{
      "model.init": summary["hf_model"], "optim.learning_rate": 1e-7, "optim.warmup_steps": 0,
      "eval.every": 0, "checkpoint.every": 0, "eval.num_examples": 200})
  again = sft.run(tuned, str(tmp_path / "tuned"), make_mesh(), progress=False)
  assert abs(again["eval/accuracy"] - summary["eval/accuracy"]) <= 0.02
  assert not os.path.exists(tmp_path / "tuned" / "tokenizer")  # the init dir's was used


def test_resume_equals_uninterrupted(compact_data, tmp_path):
  small = {"model.hidden_size": 32, "model.intermediate_size": 64, "model.num_layers": 1,
           "model.head_dim": 8, "eval.every": 10, "eval.num_examples": 16,
           "eval.batch_size": 16, "checkpoint.every": 10}
  c = _config(compact_data, steps=30, batch_size=16, log_every=5, **small)
  full, part = str(tmp_path / "full"), str(tmp_path / "part")
  sft.run(c, full, make_mesh(), progress=False)
  # Interrupted after step 15: its last checkpoint is step 10, and the metrics it logged for
  # step 15 must be dropped on resume.
  stopped = sft.run(c, part, make_mesh(), progress=False, stop_at=15)
  assert stopped["stopped_at"] == 15
  assert [r["step"] for r in _deterministic(part)] == [5, 10, 15]
  assert not os.path.exists(os.path.join(part, "hf_model"))
  sft.run(c, part, make_mesh(), progress=False)
  assert _deterministic(part) == _deterministic(full)
  a = load_file(os.path.join(part, "hf_model", "model.safetensors"))
  b = load_file(os.path.join(full, "hf_model", "model.safetensors"))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  with open(os.path.join(part, "eval_samples.jsonl")) as f1, \
       open(os.path.join(full, "eval_samples.jsonl")) as f2:
    assert f1.read() == f2.read()


def _launch(module, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


TINY = ["--config=configs/llm/sft_tiny.py", "--config.steps=4", "--config.log_every=2",
        "--config.eval.every=4", "--config.checkpoint.every=4", "--config.eval.num_examples=8",
        "--config.eval.batch_size=8", "--config.model.hidden_size=32",
        "--config.model.intermediate_size=64", "--config.model.num_layers=1",
        "--config.model.head_dim=8", "--config.data.max_train_rows=64",
        "--config.batch_size=8"]


def test_launcher_trains_exports_and_generate_reads_it(tmp_path):
  workdir = str(tmp_path / "run")
  proc = _launch("launch.train", *TINY, f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in records] == [2, 4] and "eval/accuracy" in records[-1]
  hf = os.path.join(workdir, "hf_model")
  assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(hf))
  question = tasks.load_jsonl(os.path.join(DATA, "chain_sum_eval.jsonl"), limit=1)[0]["question"]
  gen = _launch("launch.generate", f"--model={hf}", f"--prompt={question}",
                "--max_new_tokens=4")
  assert gen.returncode == 0, gen.stderr[-3000:]
  assert len(gen.stdout.splitlines()) == 1  # one completion for the one prompt


@pytest.mark.parametrize("extra, message", [
    (["--config.grad_accum=3"], "'config.grad_accum'=3 must divide 'config.batch_size'=8"),
    (["--config.data.eval_files=('missing.jsonl',)"], "'config.data.eval_files': file "
     "'missing.jsonl' does not exist; the config file's docstring gives the command"),
    (["--config.optim.schedule=step"], "'config.optim.schedule'='step' is not one of"),
    (["--config.layout=zigzag"], "'config.layout'='zigzag' is not one of"),
])
def test_launcher_rejects_bad_config_in_one_line(tmp_path, extra, message):
  proc = _launch("launch.train", *TINY, *extra, f"--workdir={tmp_path / 'run'}")
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
  assert len(lines) == 1 and message in lines[0], proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr


def test_bad_training_row_is_reported_with_file_and_line(tmp_path):
  bad = tmp_path / "bad.jsonl"
  good = open(os.path.join(DATA, "chain_sum_train.jsonl")).readline()
  bad.write_text(good + '{"task": "chain_sum", "question": "1 + 1 =", "seed": 0}\n')
  c = sft.default_config()
  c.data.train_files = (str(bad),)
  with pytest.raises(DataError, match=f"{bad}:2: missing field 'answer'"):
    sft.run(c, str(tmp_path / "run"), make_mesh(), progress=False)


def test_non_finite_loss_stops_with_step_and_checkpoint(compact_data, tmp_path):
  # An absurd learning rate overflows the weights within a few steps.
  c = _config(compact_data, steps=20, batch_size=16, log_every=2, **{
      "optim.learning_rate": 1e30, "optim.warmup_steps": 0, "optim.max_grad_norm": 0.0,
      "eval.every": 0, "checkpoint.every": 2, "model.num_layers": 1, "eval.batch_size": 16})
  with pytest.raises(loop.NonFiniteError,
                     match=r"non-finite 'train/loss'=nan at step \d+ \(logged over steps "
                           r"\d+-\d+\); last good checkpoint: (none|.*checkpoints/\d+)"):
    sft.run(c, str(tmp_path / "run"), make_mesh(), progress=False)
