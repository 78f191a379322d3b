"""A tiny decoder trained from scratch to answer reasoning-gym chain_sum questions (draft)."""

from jaxlab.llm import sft


def get_config():
  c = sft.default_config()
  c.data.train_files = ("data/llm/chain_sum_train.jsonl",)
  c.data.eval_files = ("data/llm/chain_sum_eval.jsonl",)
  c.dtype = "float32"
  c.steps = 600
  c.batch_size = 64
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 50
  c.log_every = 50
  c.eval.every = 100
  c.checkpoint.every = 200
  c.target_accuracy = 0.8
  return c
