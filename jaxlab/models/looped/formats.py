"""Huginn-0125 (Raven / ``recpre``) and Ouro checkpoints -> our looped model (read only).

Neither format has a class in any pip package (their modeling code lives in model-hub remote
code), so these maps are our reading of the equations and key layouts of the looped-LM spec
(``specs/looped_grounding_kaleidoscope.md`` §1.4.2-1.4.3): FORMAT-COMPATIBLE, NOT VERIFIED
AGAINST UPSTREAM WEIGHTS. Their tests compare against an independent numpy forward written
from the same equations, on synthetic checkpoints.

Huginn / Raven (``RavenForCausalLM``), keys under ``transformer.``:

  wte.weight                       [V, D]    token embedding (V = padded vocabulary)
  {prelude,core_block,coda}.{i}.   a sandwich block:
    norm_1 .. norm_4.weight        [D]       x <- n2(x + attn(n1(x))); x <- n4(x + mlp(n3(x)))
    attn.Wqkv.weight               [(N + 2K) H, D]  q, k, v stacked by rows
    attn.qk_bias                   [2, 1, N, H]     q and k biases (when ``qk_bias``)
    attn.proj.weight               [D, N H]
    mlp.fc.weight                  [2F, D]   gate rows, then up rows (silu(gate) * up)
    mlp.proj.weight                [D, F]
  adapter.weight                   [D, 2D]   u = W [s; e]
  ln_f.weight                      [D]       before the coda and after it
  lm_head.weight                   [V, D]    (absent / ignored when embeddings are tied)

Its RoPE turns adjacent channel pairs (2i, 2i + 1); ours turns (i, i + H/2). Permuting the
rows of every head of W_q and W_k (and of the q/k biases) by ``even channels, then odd`` turns
one into the other and leaves every attention score unchanged (q and k move together). Our
attention has v and output biases whenever it has q/k biases; Huginn has none, so they load
as zeros.

Ouro (``OuroForCausalLM``), Llama-style keys:

  model.embed_tokens.weight, lm_head.weight, model.norm.weight (the per-pass norm, whose
  output feeds the next pass and the head), model.early_exit_gate.{weight [1, D], bias [1]},
  model.layers.{i}.self_attn.{q,k,v,o}_proj.weight, model.layers.{i}.mlp.{gate,up,down}_proj
  .weight, and four norms per block: input_layernorm (before attention),
  input_layernorm_2 (on the attention output), post_attention_layernorm (before the MLP),
  post_attention_layernorm_2 (on the MLP output).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open

from jaxlab.models.decoder.params import CheckpointFormatError, weight_files
from jaxlab.models.looped.config import (OURO_ARCHITECTURE, RAVEN_ARCHITECTURE,
                                         LoopedConfig)
from jaxlab.models.looped.modeling import LoopedLM, abstract_looped
from jaxlab.models.paths import path_str


@dataclasses.dataclass(frozen=True)
class Entry:
  """One of our parameters in a checkpoint.

  Attributes:
    name: the stored tensor it is read from, or None when the format has no such tensor
      (the parameter is then zeros).
    shape: the stored tensor's shape.
    convert: stored array -> our array (before the reshape to our parameter's shape).
  """
  name: str | None
  shape: tuple[int, ...] = ()
  convert: Callable[[np.ndarray], np.ndarray] = lambda w: w


def _linear(rows: slice | None = None, perm: np.ndarray | None = None):
  """A ``[out, in]`` weight (optionally a row block, then a row permutation) -> ``[in, out]``."""
  def convert(w):
    w = w if rows is None else w[rows]
    w = w if perm is None else w[perm]
    return w.T
  return convert


def pair_to_half_perm(heads: int, head_dim: int) -> np.ndarray:
  """Row order taking per-head interleaved RoPE channels to the rotate-half layout: within
  each head, new channel ``i < H/2`` is old ``2i`` and new ``i + H/2`` is old ``2i + 1``."""
  one = np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])
  return (np.arange(heads)[:, None] * head_dim + one[None]).reshape(-1)


def _raven_block(c: LoopedConfig, ours: str, hf: str) -> dict[str, Entry]:
  d, f, h = c.hidden_size, c.intermediate_size, c.head_dim
  nh, kh = c.num_heads * h, c.num_kv_heads * h
  qkv = (nh + 2 * kh, d)
  out = {
      f"{ours}/attn_in_norm/scale": Entry(f"{hf}.norm_1.weight", (d,)),
      f"{ours}/attn_out_norm/scale": Entry(f"{hf}.norm_2.weight", (d,)),
      f"{ours}/mlp_in_norm/scale": Entry(f"{hf}.norm_3.weight", (d,)),
      f"{ours}/mlp_out_norm/scale": Entry(f"{hf}.norm_4.weight", (d,)),
      f"{ours}/attn/q_dnh": Entry(f"{hf}.attn.Wqkv.weight", qkv, _linear(
          slice(0, nh), pair_to_half_perm(c.num_heads, h))),
      f"{ours}/attn/k_dkh": Entry(f"{hf}.attn.Wqkv.weight", qkv, _linear(
          slice(nh, nh + kh), pair_to_half_perm(c.num_kv_heads, h))),
      f"{ours}/attn/v_dkh": Entry(f"{hf}.attn.Wqkv.weight", qkv,
                                  _linear(slice(nh + kh, nh + 2 * kh))),
      f"{ours}/attn/o_nhd": Entry(f"{hf}.attn.proj.weight", (d, nh), _linear()),
      f"{ours}/mlp/gate_df": Entry(f"{hf}.mlp.fc.weight", (2 * f, d), _linear(slice(0, f))),
      f"{ours}/mlp/up_df": Entry(f"{hf}.mlp.fc.weight", (2 * f, d), _linear(slice(f, 2 * f))),
      f"{ours}/mlp/down_fd": Entry(f"{hf}.mlp.proj.weight", (d, f), _linear()),
  }
  if c.attention_bias:
    bias_shape = (2, 1, c.num_heads, h)
    half = np.concatenate([np.arange(0, h, 2), np.arange(1, h, 2)])
    out[f"{ours}/attn/q_bias_nh"] = Entry(f"{hf}.attn.qk_bias", bias_shape,
                                          lambda w: w[0, 0][:, half])
    out[f"{ours}/attn/k_bias_kh"] = Entry(f"{hf}.attn.qk_bias", bias_shape,
                                          lambda w: w[1, 0][:, half])
    out[f"{ours}/attn/v_bias_kh"] = Entry(None)
    out[f"{ours}/attn/o_bias_d"] = Entry(None)
  return out


def raven_param_map(config: LoopedConfig) -> dict[str, Entry]:
  """Our parameter paths -> tensors of a Huginn / Raven checkpoint (see the module doc)."""
  c = config
  d, v = c.hidden_size, c.vocab_size
  out = {"embedding_vd": Entry("transformer.wte.weight", (v, d)),
         "adapter_2dd": Entry("transformer.adapter.weight", (d, 2 * d), _linear()),
         "final_norm/scale": Entry("transformer.ln_f.weight", (d,))}
  if not c.tie_word_embeddings:
    out["lm_head_dv"] = Entry("lm_head.weight", (v, d), _linear())
  for part, hf, n in (("prelude", "prelude", c.n_prelude), ("core", "core_block", c.n_core),
                      ("coda", "coda", c.n_coda)):
    for i in range(n):
      out.update(_raven_block(c, f"{part}/{i}", f"transformer.{hf}.{i}"))
  return out


def ouro_param_map(config: LoopedConfig) -> dict[str, Entry]:
  """Our parameter paths -> tensors of an Ouro checkpoint (see the module doc)."""
  c = config
  d, f, v = c.hidden_size, c.intermediate_size, c.vocab_size
  nh, kh = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
  out = {"embedding_vd": Entry("model.embed_tokens.weight", (v, d)),
         "iter_norm/scale": Entry("model.norm.weight", (d,)),
         "exit_gate_d": Entry("model.early_exit_gate.weight", (1, d)),
         "exit_gate_bias": Entry("model.early_exit_gate.bias", (1,))}
  if not c.tie_word_embeddings:
    out["lm_head_dv"] = Entry("lm_head.weight", (v, d), _linear())
  for i in range(c.n_core):
    ours, hf = f"core/{i}", f"model.layers.{i}"
    out.update({
        f"{ours}/attn_in_norm/scale": Entry(f"{hf}.input_layernorm.weight", (d,)),
        f"{ours}/attn_out_norm/scale": Entry(f"{hf}.input_layernorm_2.weight", (d,)),
        f"{ours}/mlp_in_norm/scale": Entry(f"{hf}.post_attention_layernorm.weight", (d,)),
        f"{ours}/mlp_out_norm/scale": Entry(f"{hf}.post_attention_layernorm_2.weight", (d,)),
        f"{ours}/attn/q_dnh": Entry(f"{hf}.self_attn.q_proj.weight", (nh, d), _linear()),
        f"{ours}/attn/k_dkh": Entry(f"{hf}.self_attn.k_proj.weight", (kh, d), _linear()),
        f"{ours}/attn/v_dkh": Entry(f"{hf}.self_attn.v_proj.weight", (kh, d), _linear()),
        f"{ours}/attn/o_nhd": Entry(f"{hf}.self_attn.o_proj.weight", (d, nh), _linear()),
        f"{ours}/mlp/gate_df": Entry(f"{hf}.mlp.gate_proj.weight", (f, d), _linear()),
        f"{ours}/mlp/up_df": Entry(f"{hf}.mlp.up_proj.weight", (f, d), _linear()),
        f"{ours}/mlp/down_fd": Entry(f"{hf}.mlp.down_proj.weight", (d, f), _linear()),
    })
  return out


PARAM_MAPS = {RAVEN_ARCHITECTURE: raven_param_map, OURO_ARCHITECTURE: ouro_param_map}


def load_params(path: str, config: LoopedConfig) -> LoopedLM:
  """The looped model with weights read from a Huginn or Ouro checkpoint in ``path``.

  Raises:
    CheckpointFormatError: a tensor is missing (one line naming the first missing tensor and
      how many more are missing) or has the wrong shape (naming file, tensor and shapes).
  """
  if config.architecture not in PARAM_MAPS:
    raise CheckpointFormatError(f"{path}: no Huginn/Ouro tensor map for architecture "
                                f"{config.architecture!r}")
  table = PARAM_MAPS[config.architecture](config)
  files, listing = weight_files(path)
  missing = sorted({e.name for e in table.values() if e.name is not None and e.name not in files})
  if missing:
    want = next(e for e in table.values() if e.name == missing[0])
    more = f"; {len(missing) - 1} more missing" if len(missing) > 1 else ""
    raise CheckpointFormatError(f"{listing}: missing tensor {missing[0]!r} (expected shape "
                                f"{list(want.shape)} for {config.architecture}){more}")
  pd = jnp.dtype(config.param_dtype)
  graphdef, abstract = nnx.split(abstract_looped(config))

  with contextlib.ExitStack() as stack:
    handles: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}

    def get(name, shape):
      if name not in arrays:
        fname = files[name]
        if fname not in handles:
          handles[fname] = stack.enter_context(safe_open(fname, framework="numpy"))
        w = handles[fname].get_tensor(name)
        if tuple(w.shape) != tuple(shape):
          raise CheckpointFormatError(f"{fname}: tensor {name!r} has shape {list(w.shape)}, "
                                      f"expected {list(shape)}")
        arrays[name] = w
      return arrays[name]

    def read(keypath, leaf):
      p = path_str(keypath)
      if p not in table:
        raise CheckpointFormatError(f"{path}: our parameter {p!r} has no "
                                    f"{config.architecture} tensor")
      e = table[p]
      if e.name is None:
        return jnp.zeros(leaf.shape, pd)
      w = np.asarray(e.convert(get(e.name, e.shape)), np.float32)
      return jnp.asarray(w.reshape(leaf.shape).astype(pd))

    state = jax.tree_util.tree_map_with_path(read, abstract)
  return nnx.merge(graphdef, state)
