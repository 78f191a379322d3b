"""Qwen2.5-VL: vision tower, merger, M-RoPE and the image processor.

  config     QwenVLConfig (the decoder's text config + VisionConfig + image token ids) <->
             config.json, nested (transformers 5) or flat (published checkpoints)
  vision     VisionTower: patch embedding, 2-D RoPE, windowed / full attention blocks, merger
  modeling   QwenVL: image embeddings spliced into the text decoder, M-RoPE positions
             (rope_index), prefill and decode steps on the decoder's KV cache
  params     from_pretrained / save_pretrained; both checkpoint key layouts
  processor  images -> pixel_values and grid_thw (numpy/PIL), placeholder expansion

Submodules are imported explicitly (``from jaxlab.models.qwen_vl import modeling``).
"""
