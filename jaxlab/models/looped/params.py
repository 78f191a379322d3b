"""HrmText checkpoints <-> our looped model: config.json + safetensors, tensor by tensor.

transformers' ``HrmTextForCausalLM`` keeps two weight-tied stacks, ``model.L_module`` (our
``inner``) and ``model.H_module`` (our ``core``), the low-level initial state
``model.z_L_init`` (our ``inner_init_d``), the embedding and the head. Its norms have no
weights, so no norm tensors exist. On disk (``save_pretrained``, and the upstream checkpoints
it converts from) each block's gate/q/k/v weights are one fused ``attn.gqkv_proj`` and its
gate/up weights one ``mlp.gate_up_proj``; we read that and transformers' unfused names, and
write the fused form. Linear weights are ``[out, in]`` there and ``[in, out...]`` here, as in
the decoder's map (:class:`jaxlab.models.decoder.params.HFTensor`).

Huginn (Raven) and Ouro checkpoints are read by :mod:`jaxlab.models.looped.formats`
(format-compatible, not verified against upstream weights); :func:`load_params` and
:func:`from_pretrained` dispatch on the config's architecture. HrmText is written for
HrmText-shaped layouts; every other layout (the trained prelude / core / coda models of the
reproduction) is written in our native format (``JaxlabLoopedForCausalLM``: the config's fields
under ``"looped"`` in config.json, each parameter a tensor named by its path, ``core.0.attn.
q_dnh``), which only we read.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open

from jaxlab.models.decoder import params as decoder_params
from jaxlab.models.decoder.params import (CheckpointFormatError, HFTensor, read_hf_config,
                                          weight_files, write_checkpoint)
from jaxlab.models.looped import formats
from jaxlab.models.looped.config import NATIVE_ARCHITECTURE, LoopedConfig
from jaxlab.models.looped.modeling import LoopedLM, abstract_looped
from jaxlab.models.paths import path_str


@dataclasses.dataclass(frozen=True)
class Source:
  """Where one of our parameters lives in an HrmText checkpoint.

  Attributes:
    tensor: its unfused tensor (transformers' in-memory name, e.g.
      ``model.H_module.layers.0.self_attn.q_proj.weight``, and shape).
    fused: the on-disk tensor it is a row block of (transformers' ``save_pretrained`` and the
      upstream checkpoints store ``attn.gqkv_proj`` = [gate; q; k; v] and
      ``mlp.gate_up_proj`` = [gate; up]), or None when stored as is.
    part, parts: which of the ``parts`` equal row blocks of ``fused`` it is.
  """
  tensor: HFTensor
  fused: str | None = None
  part: int = 0
  parts: int = 1


def _block_map(c: LoopedConfig, ours: str, hf: str) -> dict[str, Source]:
  d, f = c.hidden_size, c.intermediate_size
  nh = c.num_heads * c.head_dim
  gqkv, gate_up = f"{hf}.attn.gqkv_proj.weight", f"{hf}.mlp.gate_up_proj.weight"
  out = {
      f"{ours}/attn/gate_dnh": Source(HFTensor(f"{hf}.self_attn.gate_proj.weight", (nh, d), True),
                                      gqkv, 0, 4),
      f"{ours}/attn/q_dnh": Source(HFTensor(f"{hf}.self_attn.q_proj.weight", (nh, d), True),
                                   gqkv, 1, 4),
      f"{ours}/attn/k_dkh": Source(HFTensor(f"{hf}.self_attn.k_proj.weight", (nh, d), True),
                                   gqkv, 2, 4),
      f"{ours}/attn/v_dkh": Source(HFTensor(f"{hf}.self_attn.v_proj.weight", (nh, d), True),
                                   gqkv, 3, 4),
      f"{ours}/attn/o_nhd": Source(HFTensor(f"{hf}.attn.o_proj.weight", (d, nh), True)),
      f"{ours}/mlp/gate_df": Source(HFTensor(f"{hf}.mlp.gate_proj.weight", (f, d), True),
                                    gate_up, 0, 2),
      f"{ours}/mlp/up_df": Source(HFTensor(f"{hf}.mlp.up_proj.weight", (f, d), True),
                                  gate_up, 1, 2),
      f"{ours}/mlp/down_fd": Source(HFTensor(f"{hf}.mlp.down_proj.weight", (d, f), True)),
  }
  if c.attention_bias:
    # transformers fuses only the weights; biases keep their unfused names on disk.
    for name, ours_name in (("q", "q_bias_nh"), ("k", "k_bias_kh"), ("v", "v_bias_kh"),
                            ("gate", "gate_bias_nh")):
      out[f"{ours}/attn/{ours_name}"] = Source(HFTensor(f"{hf}.self_attn.{name}_proj.bias",
                                                        (nh,)))
    out[f"{ours}/attn/o_bias_d"] = Source(HFTensor(f"{hf}.attn.o_proj.bias", (d,)))
  return out


def hf_param_map(config: LoopedConfig) -> dict[str, Source]:
  """Our parameter paths (``"core/0/attn/q_dnh"``) -> their place in an HrmText checkpoint.

  Raises:
    LoopedConfigError: the config is not HrmText-shaped.
  """
  c = config
  c.to_hf_dict()  # raises, naming the field, if the layout has no HrmText equivalent
  d, v = c.hidden_size, c.vocab_size
  out = {"embedding_vd": Source(HFTensor("model.embed_tokens.weight", (v, d))),
         "inner_init_d": Source(HFTensor("model.z_L_init", (d,)))}
  if not c.tie_word_embeddings:
    out["lm_head_dv"] = Source(HFTensor("lm_head.weight", (v, d), linear=True))
  for i in range(c.n_core):
    out.update(_block_map(c, f"inner/{i}", f"model.L_module.layers.{i}"))
    out.update(_block_map(c, f"core/{i}", f"model.H_module.layers.{i}"))
  return out


def _aliases(name: str) -> tuple[str, ...]:
  """On-disk spellings of an unfused name: transformers' ``self_attn.o_proj`` is ``attn.o_proj``
  in saved files; accept both."""
  alt = (name.replace(".attn.o_proj.", ".self_attn.o_proj.") if ".attn.o_proj." in name
         and ".self_attn." not in name else None)
  return (name,) if alt is None else (name, alt)


def load_config(path: str, **overrides: Any) -> LoopedConfig:
  """Reads ``path/config.json`` (and eos ids from ``generation_config.json`` if present)."""
  d, cfg_path, overrides = read_hf_config(path, overrides)
  return LoopedConfig.from_hf_dict(d, cfg_path, **overrides)


def load_params(path: str, config: LoopedConfig) -> LoopedLM:
  """The looped model with weights read from ``path``'s safetensors file(s).

  Raises:
    CheckpointFormatError: a tensor is missing or has the wrong shape (naming file, tensor,
      expected and actual shape).
  """
  if config.architecture in formats.PARAM_MAPS:  # Huginn / Ouro
    return formats.load_params(path, config)
  if config.architecture == NATIVE_ARCHITECTURE:
    return _load_native(path, config)
  files, listing = weight_files(path)
  table = hf_param_map(config)
  pd = jnp.dtype(config.param_dtype)
  graphdef, abstract = nnx.split(abstract_looped(config))

  with contextlib.ExitStack() as stack:
    handles: dict[str, Any] = {}

    def get(name):
      fname = files[name]
      if fname not in handles:
        handles[fname] = stack.enter_context(safe_open(fname, framework="numpy"))
      return fname, handles[fname].get_tensor(name)

    def read(keypath, leaf):
      p = path_str(keypath)
      if p not in table:
        raise CheckpointFormatError(f"{path}: our parameter {p!r} has no HrmText tensor")
      src = table[p]
      t = src.tensor
      if src.fused is not None and src.fused in files:
        fname, w = get(src.fused)
        want = (t.shape[0] * src.parts,) + t.shape[1:]
        if tuple(w.shape) != want:
          raise CheckpointFormatError(f"{fname}: tensor {src.fused!r} has shape "
                                      f"{list(w.shape)}, expected {list(want)}")
        w = np.split(w, src.parts, axis=0)[src.part]
      else:
        names = [n for n in _aliases(t.name) if n in files]
        if not names:
          where = f"{src.fused!r} or {t.name!r}" if src.fused else repr(t.name)
          raise CheckpointFormatError(f"{listing}: missing tensor {where} (expected shape "
                                      f"{list(t.shape)} for {t.name!r})")
        fname, w = get(names[0])
        if tuple(w.shape) != t.shape:
          raise CheckpointFormatError(f"{fname}: tensor {names[0]!r} has shape "
                                      f"{list(w.shape)}, expected {list(t.shape)}")
      return jnp.asarray(t.to_ours(w, leaf.shape).astype(pd))

    state = jax.tree_util.tree_map_with_path(read, abstract)
  return nnx.merge(graphdef, state)


def from_pretrained(path: str, dtype: Any = jnp.float32, tokenizer: bool = True,
                    param_dtype: Any = None, **unused: Any):
  """Loads a local HrmText, Huginn (Raven) or Ouro model directory into
  ``(LoopedLM, tokenizer or None)``.

  Args:
    path: directory with config.json, safetensors weights and (optionally) tokenizer files.
    dtype: compute dtype of matmuls.
    tokenizer: False to skip the tokenizer.
    param_dtype: storage dtype (default: ``dtype``).
    **unused: options of other families (``mesh``, ``layout``, ``remat``) are not supported
      yet and must be left unset.
  """
  return decoder_params.load_unsharded(path, "looped", load_config, load_params, dtype,
                                       param_dtype, tokenizer, unused)


def iter_hf_tensors(model: LoopedLM, dtype: Any = None) -> Iterator[tuple[str, np.ndarray]]:
  """``(name, array)`` as transformers saves them (fused where it fuses), in natural order."""
  table = hf_param_map(model.config)

  def place(param_path):
    src = table[param_path]
    if src.fused is None:
      return src.tensor.name, None, src.tensor.to_hf
    return src.fused, src.part, src.tensor.to_hf

  return decoder_params.hf_tensors(model, dtype, place)


def native_name(param_path: str) -> str:
  """The tensor name of one of our parameters in the native format (``core.0.attn.q_dnh``)."""
  return param_path.replace("/", ".")


def iter_native_tensors(model: LoopedLM, dtype: Any = None
                        ) -> Iterator[tuple[str, np.ndarray]]:
  """``(name, array)`` of every parameter, in our layout, named by :func:`native_name`."""
  return decoder_params.hf_tensors(model, dtype, lambda p: (native_name(p), None, lambda w: w))


def _load_native(path: str, config: LoopedConfig) -> LoopedLM:
  """The looped model from a native-format directory (tensors named by our paths)."""
  files, listing = weight_files(path)
  pd = jnp.dtype(config.param_dtype)
  graphdef, abstract = nnx.split(abstract_looped(config))
  with contextlib.ExitStack() as stack:
    handles: dict[str, Any] = {}

    def read(keypath, leaf):
      name = native_name(path_str(keypath))
      if name not in files:
        raise CheckpointFormatError(f"{listing}: missing tensor {name!r} (expected shape "
                                    f"{list(leaf.shape)})")
      fname = files[name]
      if fname not in handles:
        handles[fname] = stack.enter_context(safe_open(fname, framework="numpy"))
      w = handles[fname].get_tensor(name)
      if tuple(w.shape) != tuple(leaf.shape):
        raise CheckpointFormatError(f"{fname}: tensor {name!r} has shape {list(w.shape)}, "
                                    f"expected {list(leaf.shape)}")
      return jnp.asarray(w.astype(pd))

    state = jax.tree_util.tree_map_with_path(read, abstract)
  return nnx.merge(graphdef, state)


def save_format(config: LoopedConfig) -> str:
  """"hrm_text" when the layout is HrmText's (transformers reads it back), else "native"."""
  return "hrm_text" if not config.hrm_mismatches() and not config.exit_gate else "native"


def save_pretrained(model: LoopedLM, path: str, tokenizer: Any = None, dtype: Any = None,
                    max_shard_bytes: int = 5 * 2**30, fmt: str = "hrm_text") -> None:
  """Writes ``config.json`` and safetensors that we (and, for HrmText, transformers) read back.

  Args:
    fmt: "hrm_text" (transformers' ``HrmTextForCausalLM``), "native" (our format, any layout:
      :data:`~jaxlab.models.looped.config.NATIVE_ARCHITECTURE`), or "auto"
      (:func:`save_format`).

  Raises:
    LoopedConfigError: ``fmt="hrm_text"`` and the model's layout is not HrmText's (names the
      field).
  """
  if fmt not in ("hrm_text", "native", "auto"):
    raise ValueError(f"save_pretrained: fmt={fmt!r} is not 'hrm_text', 'native' or 'auto'")
  fmt = save_format(model.config) if fmt == "auto" else fmt
  dtype_name = jnp.dtype(dtype or model.config.param_dtype).name
  if fmt == "native":
    write_checkpoint(path, model.config.to_native_dict(torch_dtype=dtype_name),
                     iter_native_tensors(model, dtype), tokenizer, max_shard_bytes)
    return
  hf_config = model.config.to_hf_dict(torch_dtype=dtype_name)  # raises for non-HrmText layouts
  write_checkpoint(path, hf_config, iter_hf_tensors(model, dtype), tokenizer, max_shard_bytes)
