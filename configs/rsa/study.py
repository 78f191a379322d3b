"""The RSA reproduction (docs/reproductions/rsa.md) on spell_backward, 7-8-letter words.

One file, one argument per stage (all run by ``configs/rsa/study.sh SEED``):

    python -m launch.train --config=configs/rsa/study.py:base --workdir=runs/rsa_study/s0/base
    python -m launch.rsa --model=runs/rsa_study/s0/base/hf_model \
        --task=data/llm/spell_backward_rsa_train.jsonl --config=configs/rsa/study.py:rsa \
        --rl_data=runs/rsa_study/s0/agg_rows.jsonl      # candidates from the base, once
    python -m jaxlab.llm.rsa_study teacher --rows=runs/rsa_study/s0/agg_rows.jsonl \
        --out=runs/rsa_study/s0/agg_sft.jsonl
    python -m launch.train --config=configs/rsa/study.py:agg --workdir=runs/rsa_study/s0/agg
    python -m launch.train --config=configs/rsa/study.py:rl_plain ...
    python -m launch.train --config=configs/rsa/study.py:rl_agg ...
    python -m launch.rsa --model=.../hf_model --task=data/llm/spell_backward_rsa_eval.jsonl \
        --config=configs/rsa/study.py:rsa --workdir=...

Stages:
  base: a 0.6M-parameter char-level decoder trained from scratch on "<word>=" -> " <reversed>"
    with every letter of the target replaced with probability 0.4 (six noisy copies of 3,000
    words; ``python -m jaxlab.llm.tasks --corrupt_mode=letters``). Its samples are right letter
    by letter ~60% of the time and whole-word ~2%: majority voting over whole answers is weak,
    while a per-position vote over a few candidates is strong. It never sees an aggregation
    prompt: the control arm.
  agg: the base fine-tuned on the same noisy plain rows plus aggregation prompts
    ("c1 c2 c3 c4 <word>=", four of the base's own samples per training word, drawn once)
    whose target is the candidates' per-position plurality (``jaxlab.llm.rsa_study``): an
    aggregator taught by a scripted teacher that never sees the true answer.
  rl_plain / rl_agg: RLOO from ``agg`` (initial policy and frozen reference), 100 steps of 16
    prompts x 8 samples; rl_plain on the plain prompts, rl_agg on the spec §3.6 mix (each
    training word as a plain prompt and as an aggregation prompt over K = 4 candidates sampled
    once from the frozen ``agg`` model, ``launch.rsa --rl_data``). Reward: the verifier.
  rl_plain_short / rl_agg_short: the same, stopped after 10 steps. Plain RL removes the base's
    letter noise fast (seed 0's training reward: 0.18, 0.51, 0.66, 0.81, 0.90 at steps 10, 20,
    30, 50, 100), so after 100 steps both RL arms sample nearly noise-free and RSA has little
    left to add; at 10 steps single samples are still mostly wrong.
  rsa: N = 16, K = 4, T = 6 at temperature 1 on the 64 held-out words, with the K = 1 and
    equal-token sampling baselines; the compact prompts above.

The study directory is ``runs/rsa_study/s<seed>/``; ``--config.seed`` seeds every stage.
Time (2 CPU cores): see docs/reproductions/rsa.md.
"""

import os

from jaxlab.llm import rl, rsa, sft

NOISY = "runs/rsa_study/data/spell_backward_rsa_sft_noisy.jsonl"
TRAIN = "data/llm/spell_backward_rsa_train.jsonl"
EVAL = "data/llm/spell_backward_rsa_eval.jsonl"


def _dir(seed: int, name: str) -> str:
  return os.path.join("runs", "rsa_study", f"s{seed}", name)


def _sft(seed: int):
  c = sft.default_config()
  c.seed = seed
  c.data.train_files = (NOISY,)
  c.data.eval_files = (EVAL,)
  c.data.prompt_format = "{question}"
  c.data.completion_format = " {answer}"
  sft.tiny_decoder(c)
  c.steps = 1500
  c.batch_size = 64
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 50
  c.optim.schedule = "cosine"
  c.optim.min_lr_ratio = 0.1
  c.log_every = 100
  c.eval.every = 500
  c.eval.num_examples = 64
  c.eval.max_new_tokens = 10
  c.checkpoint.every = 500
  return c


def _rl(seed: int, train_file: str):
  c = rl.default_config()
  c.seed = seed
  c.model.init = os.path.join(_dir(seed, "agg"), "hf_model")
  c.data.train_files = (train_file,)
  c.data.eval_files = (EVAL,)
  c.steps = 100
  c.prompts_per_step = 16
  c.group_size = 8
  c.sampling.max_new_tokens = 10
  c.eval.max_new_tokens = 10
  c.eval.num_examples = 64
  c.eval.batch_size = 64
  c.optim.learning_rate = 3e-4
  c.log_every = 10
  c.eval.every = 50
  c.checkpoint.every = 50
  return c


def _rsa(seed: int):
  c = rsa.default_config()
  c.seed = seed
  c.population, c.k, c.steps = 16, 4, 6
  c.generation.max_new_tokens = 10
  c.generation.max_prompt_tokens = 64
  c.prompt.aggregate = "{candidates} {question}"
  c.prompt.refine = "{candidates} {question}"
  c.prompt.candidate = "{text}"
  c.prompt.refine_candidate = "{text}"
  c.prompt.separator = " "
  return c


def get_config(arg: str = "rsa"):
  stage, _, seed_text = arg.partition(",")
  seed = int(seed_text or 0)
  if stage == "base":
    return _sft(seed)
  if stage == "agg":
    c = _sft(seed)
    c.data.train_files = (NOISY, os.path.join(_dir(seed, ""), "agg_sft.jsonl"))
    c.model.init = os.path.join(_dir(seed, "base"), "hf_model")
    c.steps = 1000
    c.optim.learning_rate = 1e-3
    return c
  rl_stage, short, _ = stage.partition("_short")
  if rl_stage in ("rl_plain", "rl_agg"):
    c = _rl(seed, TRAIN if rl_stage == "rl_plain" else
            os.path.join(_dir(seed, ""), "rl_rows.jsonl"))
    if short:  # stopped while plain RL's single samples are still mostly wrong
      c.steps = 10
      c.eval.every = c.checkpoint.every = 10
    return c
  if stage == "rsa":
    return _rsa(seed)
  raise ValueError(f"configs/rsa/study.py: stage {stage!r} is not base, agg, rl_plain, rl_agg, "
                   "rl_plain_short, rl_agg_short or rsa")
