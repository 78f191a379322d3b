"""The reference policy of the LLM RL studies (configs/kl_estimators, configs/asyppo), in two stages.

    python -m launch.train --config=configs/llm/sft_rl_reference.py:clean --workdir=runs/rl_reference_clean
    python -m launch.train --config=configs/llm/sft_rl_reference.py:noisy --workdir=runs/rl_reference

Stage "clean": a 0.6M-parameter Qwen3-style decoder (as configs/llm/sft_tiny.py) trained from
scratch on reasoning-gym chain_sum written compactly ("8 + 0 + 7 =" -> " 15").
Stage "noisy": the clean model fine-tuned on the same questions with 36% of the answers moved
by ±1..3 (the "noisy solution stream" of spec llm_rl.md §6.2). The reference then samples a
wrong neighbour of the answer about a third of the time while its mode stays right, so RL can
raise the reward by a direction that is the same for every question (undo the noise), and a KL
term has something to hold back. The RL configs read ``runs/rl_reference/hf_model``.

Data: data/llm/chain_sum_rl_train.jsonl (clean) and chain_sum_rl_sft_noisy.jsonl (noisy copy),
held-out chain_sum_rl_eval.jsonl; 2-3 single-digit terms (commands in data/llm/README.md).
Expected and time: docs/reproductions/kl_estimators.md.
"""

from jaxlab.llm import sft


def get_config(stage: str = "noisy"):
  if stage not in ("clean", "noisy"):
    raise ValueError(f"configs/llm/sft_rl_reference.py: stage {stage!r} is not clean or noisy")
  c = sft.default_config()
  c.data.train_files = ("data/llm/chain_sum_rl_train.jsonl",)
  c.data.eval_files = ("data/llm/chain_sum_rl_eval.jsonl",)
  c.data.prompt_format = "{metadata[expression]} ="
  c.data.completion_format = " {answer}"
  sft.tiny_decoder(c)
  c.steps = 1000
  c.batch_size = 64
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 50
  c.optim.schedule = "cosine"
  c.optim.min_lr_ratio = 0.1
  c.log_every = 50
  c.eval.every = 250
  c.eval.num_examples = 200
  c.eval.max_new_tokens = 6
  c.checkpoint.every = 250
  if stage == "noisy":
    c.data.train_files = ("data/llm/chain_sum_rl_sft_noisy.jsonl",)
    c.model.init = "runs/rl_reference_clean/hf_model"
    c.steps = 400
    c.optim.learning_rate = 3e-4
    c.optim.warmup_steps = 20
    c.optim.schedule = "constant"
    c.eval.every = 100
    c.checkpoint.every = 100
  return c
