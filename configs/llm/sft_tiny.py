"""A tiny decoder trained from scratch to answer reasoning-gym chain_sum questions.

    python -m launch.train --config=configs/llm/sft_tiny.py --workdir=runs/sft_tiny
    python -m launch.generate --model=runs/sft_tiny/hf_model \
        --prompt="State the final answer to the following arithmetic problem: 7 + 8 - 2 ="

Task: reasoning-gym's chain_sum with 2-3 single-digit terms joined by + / -, asked verbatim
("State the final answer to the following arithmetic problem: 4 - 1 - 7 ="); the model answers
" -4" and stops. 2,500 training questions and 200 held-out ones that never occur in training
(``data/llm/``, made with ``python -m jaxlab.llm.tasks``; regenerate them with the commands in
``data/llm/README.md``).

Model: a 0.6M-parameter Qwen3-style decoder (3 layers, width 128, 4 query / 2 kv heads,
char-level tokenizer built from the training text), float32 on CPU; 1000 steps of 64
questions with AdamW (peak 3e-3, 50 warmup steps, cosine to 3e-4).

Expected: held-out greedy exact-match accuracy >= 0.90 at the end (measured 0.985 with seed 0
and 0.96 with seed 1; at steps 200/400/600/800: 0.17/0.45/0.77/0.935 and 0.13/0.41/0.71/0.95).
Time: about 4 minutes on an idle 2-core CPU (~4.3 steps/s, ~7 CPU-minutes in all, compilation
included). With other jobs loading the same 2 cores it measured 10.8 and 16.3 minutes wall.
On a GPU set ``--config.dtype=bfloat16`` (float32 master weights either way).
"""

from jaxlab.llm import sft


def get_config():
  c = sft.default_config()
  c.data.train_files = ("data/llm/chain_sum_train.jsonl",)
  c.data.eval_files = ("data/llm/chain_sum_eval.jsonl",)
  c.data.prompt_format = "{question}"
  c.data.completion_format = " {answer}"
  sft.tiny_decoder(c)  # from scratch, float32 (bf16 matmuls are no faster on CPU)
  c.model.architecture = "Qwen3ForCausalLM"
  c.steps = 1000
  c.batch_size = 64
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 50
  c.optim.schedule = "cosine"
  c.optim.min_lr_ratio = 0.1
  c.log_every = 50
  c.eval.every = 200
  c.eval.num_examples = 200
  c.eval.max_new_tokens = 8
  c.checkpoint.every = 200
  c.target_accuracy = 0.9
  return c
