"""The decoder family: Llama 3 / Qwen2 / Qwen2.5 / Qwen3 in Flax NNX.

  config     DecoderConfig (named sizes) <-> Hugging Face config.json
  modeling   Decoder, KVCache, blocks (RMSNorm, Attention, MLP, Block), RoPE / M-RoPE, forward
  params     from_pretrained / save_pretrained: local HF dirs, safetensors tensor by tensor
  sharding   FSDP / tensor-parallel layouts as (path pattern -> PartitionSpec) tables
  value      ValueModel (decoder body + scalar head) and stacks of them for critics

Submodules are imported explicitly (``from jaxlab.models.decoder import modeling``); the
other families (vision-language, looped) build on these blocks.
"""
