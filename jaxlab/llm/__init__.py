"""The LLM stack: one Llama 3 / Qwen2 / Qwen3 decoder in NNX and everything around it.

  config      DecoderConfig (named sizes) <-> Hugging Face config.json
  modeling    Decoder, KVCache, RoPE (default / linear / llama3), forward
  checkpoint  from_pretrained / save_pretrained: local HF dirs, safetensors tensor by tensor
  sharding    FSDP / tensor-parallel layouts as (path pattern -> PartitionSpec) tables
  tokenizer   AutoTokenizer from a model dir, chat templates, a char-level tokenizer
  sampling    compiled prefill + decode loop: greedy / temperature / top-k / top-p, log-probs
  train       masked causal-LM loss, AdamW + schedules, the sharded, accumulating train step
  tasks       reasoning-gym tasks as JSONL (generate, load + validate) and their verifiers
  sft         the "llm_sft" trainer: SFT from JSONL tasks with held-out evaluation

Submodules are imported explicitly (``from jaxlab.llm import sampling``) so that importing the
package does not pull in transformers.
"""
