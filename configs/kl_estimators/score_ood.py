"""Post-hoc scoring of the KL-estimator sweep (docs/reproductions/kl_estimators.md, issue 16).

    python configs/kl_estimators/score_ood.py runs/kl_sweep/R1_b0.05_s0 [more run dirs]
    python configs/kl_estimators/score_ood.py --model=runs/rl_reference/hf_model \
        --out=runs/kl_sweep/reference.json

The RL trainer scores one held-out set (``config.data.eval_files`` are pooled into one
``eval/accuracy``), so the out-of-domain split is scored here, after training, from each run's
exported policy (``<run>/hf_model``, written when the run finishes). For every model it writes
(``<run>/ood.json``, or ``--out``):

* ``in_domain/greedy``: greedy accuracy on data/llm/chain_sum_rl_eval.jsonl (200 prompts of
  2-3 terms; the same number as the run's final ``eval/accuracy``, a consistency check);
* ``ood/greedy``: greedy accuracy on data/llm/chain_sum_rl_ood.jsonl (200 prompts of 4-5
  terms, longer chains than any training prompt), and per term count
  (``ood/greedy/4_terms``, ``ood/greedy/5_terms``);
* ``in_domain/sampled``, ``ood/sampled``: mean verifier reward of 8 samples per prompt at
  temperature 1 (the RL sampling setting; key fixed, so reruns agree).

Prompts are the compact expressions (``{metadata[expression]} =``) of the RL configs; at most
6 new tokens, as the trainer's evaluation. A run without ``hf_model`` (unfinished) is skipped
with a message; one that already has ``ood.json`` is skipped unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import numpy as np

IN_DOMAIN = "data/llm/chain_sum_rl_eval.jsonl"
OOD = "data/llm/chain_sum_rl_ood.jsonl"
PROMPT = "{metadata[expression]} ="
MAX_NEW = 6
SAMPLES = 8


def _terms(row) -> int:
  return len(re.findall(r"\d+", row["metadata"]["expression"]))


def score_model(model_dir: str) -> dict[str, float]:
  """The metrics of one Hugging Face-format policy directory."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import data as data_lib  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  from jaxlab.llm.evaluation import TaskAccuracy  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder import params as hf_ckpt  # pylint: disable=g-import-not-at-top
  from jaxlab.models.tokenizer import load_tokenizer  # pylint: disable=g-import-not-at-top

  tokenizer = load_tokenizer(model_dir)
  model, _ = hf_ckpt.from_pretrained(model_dir, mesh=None, dtype="float32",
                                     param_dtype="float32", tokenizer=False)
  out: dict[str, float] = {}
  for name, path in (("in_domain", IN_DOMAIN), ("ood", OOD)):
    rows = [r for _, _, r in data_lib.load_rows([path])]
    ev = TaskAccuracy(PROMPT, tokenizer, rows, batch_size=len(rows), max_new_tokens=MAX_NEW)
    texts = ev.completions(model)
    right = np.asarray([tasks_lib.verify(r["task"], t, r["answer"]) for r, t in zip(rows, texts)],
                       np.float64)
    out[f"{name}/greedy"] = float(right.mean())
    if name == "ood":
      terms = np.asarray([_terms(r) for r in rows])
      for k in sorted(set(terms.tolist())):
        out[f"ood/greedy/{k}_terms"] = float(right[terms == k].mean())
    # Temperature-1 samples: SAMPLES per prompt, one batch.
    idx = np.repeat(np.arange(len(rows)), SAMPLES)
    params = sampling.SamplingParams(
        max_new_tokens=MAX_NEW, temperature=1.0, stop_tokens=(int(tokenizer.eos_token_id),),
        pad_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0))
    res = sampling.generate(model, ev.tokens[idx], ev.mask[idx], jax.random.key(1234), params)
    toks, lens = np.asarray(res.tokens), np.asarray(res.lengths)
    samples = [tokenizer.decode(t[:k].tolist(), skip_special_tokens=True)
               for t, k in zip(toks, lens)]
    out[f"{name}/sampled"] = float(np.mean(
        [tasks_lib.verify(rows[i]["task"], s, rows[i]["answer"]) for i, s in zip(idx, samples)]))
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("runs", nargs="*", help="run directories (each scored from its hf_model)")
  p.add_argument("--model", help="score this model directory instead (with --out)")
  p.add_argument("--out", help="with --model: the JSON file to write")
  p.add_argument("--force", action="store_true", help="rescore runs that have ood.json")
  a = p.parse_args(argv)
  jobs = []
  if a.model:
    if not a.out:
      p.error("--model needs --out")
    jobs.append((a.model, a.out))
  for run in a.runs:
    model = os.path.join(run, "hf_model")
    out = os.path.join(run, "ood.json")
    if not os.path.isfile(os.path.join(model, "config.json")):
      print(f"score_ood: {run}: no hf_model yet (unfinished run), skipped", file=sys.stderr)
      continue
    if os.path.isfile(out) and not a.force:
      continue
    jobs.append((model, out))
  for model, out in jobs:
    metrics = score_model(model)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"model": model, **metrics}, f, indent=2)
    os.replace(tmp, out)
    print(f"score_ood: {out}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()),
          flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
