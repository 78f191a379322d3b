"""The LLM stack around the model families of :mod:`jaxlab.models`: sampling, tasks, trainers.

  sampling    compiled prefill + decode loop: greedy / temperature / top-k / top-p, log-probs
  train       masked causal-LM loss, AdamW + schedules, the sharded, accumulating train step
  tasks       reasoning-gym tasks as JSONL (generate, load + validate) and their verifiers
  image_tasks a generated image task (one coloured shape) for vision-language SFT
  data        task rows, batch order, and the images of rows (read, padded, packed)
  sft         the "llm_sft" trainer: SFT from JSONL tasks (decoder, looped or Qwen2.5-VL
              families; image rows) with held-out evaluation
  kl, pg_loss, asyppo   KL estimators, the policy-gradient loss, AsyPPO's critic ensemble
  rl          the "llm_rl" trainer: RLOO / GRPO / PPO rollouts scored by task verifiers

The decoder itself (config, modeling, HF checkpoint I/O, sharding rules) lives in
:mod:`jaxlab.models.decoder`, the tokenizer in :mod:`jaxlab.models.tokenizer`. Submodules are
imported explicitly (``from jaxlab.llm import sampling``) so that importing the package does not
pull in transformers.
"""
