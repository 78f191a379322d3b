"""The looped family: prelude / recurrent core / coda language models (HRM-text, Huginn and
Ouro layouts) built from the decoder's blocks.

  config     LoopedConfig (layout and training options) <-> HrmText / Huginn / Ouro config.json
  modeling   LoopedLM, LoopedCache, LoopStates, LoopBlock; the recurrence as a lax.scan;
             truncated backprop, sampled recurrence, convergence exit, Ouro's exit gate
  params     from_pretrained / save_pretrained: HrmText checkpoints (safetensors), and our
             native format for any layout (config fields under "looped", tensors by path)
  sharding   rule tables for the looped parameters (the decoder's, plus the adapter / gates)
  formats    Huginn (Raven) and Ouro checkpoint readers (format-compatible, not verified
             against upstream weights)

Submodules are imported explicitly (``from jaxlab.models.looped import modeling``).
"""
