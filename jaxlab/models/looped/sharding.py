"""Sharding rules of the looped family, as data: the decoder's tables plus the looped extras.

The looped model reuses the decoder's blocks, so its block parameters have the decoder's path
endings (``core/0/attn/q_dnh``, ``prelude/0/mlp/down_fd``, ``embedding_vd``) and the decoder's
rules (:mod:`jaxlab.models.decoder.sharding`, matched at the end of a path) place them. What
the decoder lacks: the injection adapter ``adapter_2dd`` ``[2D, D]`` and HRM's attention-output
gate ``gate_dnh`` ``[D, N, H]``; they are split like the matrices beside them (D over
``fsdp``, heads over ``tensor``). Norm weights, biases, the initial inner state and the exit
gate are tiny and stay replicated by the tables' catch-all.
"""

from __future__ import annotations

from jax.sharding import PartitionSpec as P

from jaxlab.models.decoder import sharding as decoder_sharding

_EXTRA = {
    "replicated": (),
    "fsdp": ((r"adapter_2dd$", P(None, "fsdp")),
             (r"attn/gate_dnh$", P("fsdp", None, None))),
    "tp": ((r"attn/gate_dnh$", P(None, "tensor", None)),
           (r"attn/gate_bias_nh$", P("tensor", None))),
    "fsdp_tp": ((r"adapter_2dd$", P(None, "fsdp")),
                (r"attn/gate_dnh$", P("fsdp", "tensor", None)),
                (r"attn/gate_bias_nh$", P("tensor", None))),
}

# The same layout names as the decoder's, so ``config.layout`` means one thing for both.
RULES: dict[str, decoder_sharding.Rules] = {
    name: tuple(_EXTRA[name]) + tuple(rules) for name, rules in decoder_sharding.RULES.items()}
