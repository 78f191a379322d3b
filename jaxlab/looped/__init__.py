"""Mechanistic analysis of looped (recurrent-depth) language models (spec §1.5).

  convergence  per-slot fixed points: relative step sizes, contraction rate, token classes,
               distinctness of the slots' limit states
  trajectory   PCA of a token's states over (iteration, slot): the closed R-gon
  replay       runs the model's own blocks again over captured states to expose what the
               forward does not return (each block's input, attention probabilities)
  attention    attention-row stability, head entropy, BOS-sink scores, local mixing
  stages       matrix entropy and BOS norm along the unrolled depth (stages of inference)
  lens         logit lens and coda lens per (iteration, slot)
  jacobian     spectral radius / norm of a map's Jacobian by power iteration (jvp / vjp)
  ablation     core slots deleted or swapped, as a new model with permuted core parameters
  plots        the PNGs
  analyze      ``analyze`` (arrays in, files out) and ``run_analysis`` (model dir in)

Submodules are imported explicitly (``from jaxlab.looped import convergence``).
"""
