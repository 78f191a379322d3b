"""Hugging Face checkpoints <-> our decoder: config.json + safetensors, tensor by tensor.

The name/layout map is one table (:func:`hf_param_map`): each of our parameters has one HF
tensor; linear weights are stored by HF as ``[out, in]`` and by us as ``[in, out...]`` (so
``x @ w`` needs no transpose), everything else only changes shape. Loading reads one tensor
at a time with ``safetensors.safe_open`` and places it straight onto its devices, so peak host
memory is one tensor, not the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import re
from typing import Any, Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxlab.core import files
from jaxlab.models.decoder import sharding as sharding_lib
from jaxlab.models.decoder.config import DecoderConfig
from jaxlab.models.decoder.modeling import Decoder, abstract_decoder
from jaxlab.models import read_json_object
from jaxlab.models.errors import ModelConfigError
from jaxlab.models.paths import path_str

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointFormatError(ModelConfigError):
  """A model directory's weights are missing, misnamed or of the wrong shape (a ValueError)."""


@dataclasses.dataclass(frozen=True)
class HFTensor:
  """Where one of our parameters lives in a HF checkpoint.

  Attributes:
    name: the safetensors key, e.g. ``model.layers.0.self_attn.q_proj.weight``.
    shape: its shape in the HF file.
    linear: True for ``nn.Linear`` weights, stored ``[out, in]`` by HF; ours is the transpose,
      with ``out`` split into named axes (e.g. ``[D, N, H]`` for q).
  """
  name: str
  shape: tuple[int, ...]
  linear: bool = False

  def to_ours(self, w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return (w.T if self.linear else w).reshape(shape)

  def to_hf(self, w: np.ndarray) -> np.ndarray:
    if self.linear:
      # Back to [in, out], then transpose; the copy makes the bytes C-contiguous for writing.
      return np.ascontiguousarray(w.reshape(self.shape[::-1]).T)
    return np.ascontiguousarray(w.reshape(self.shape))


def hf_param_map(config: DecoderConfig) -> dict[str, HFTensor]:
  """Our parameter paths (``"layers/0/attn/q_dnh"``) -> their HF tensors."""
  c = config
  d, f, v = c.hidden_size, c.intermediate_size, c.vocab_size
  nh, kh = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
  out = {"embedding_vd": HFTensor("model.embed_tokens.weight", (v, d)),
         "final_norm/scale": HFTensor("model.norm.weight", (d,))}
  if not c.tie_word_embeddings:
    out["lm_head_dv"] = HFTensor("lm_head.weight", (v, d), linear=True)
  for i in range(c.num_layers):
    ours, hf = f"layers/{i}", f"model.layers.{i}"
    out.update({
        f"{ours}/input_norm/scale": HFTensor(f"{hf}.input_layernorm.weight", (d,)),
        f"{ours}/post_attn_norm/scale": HFTensor(f"{hf}.post_attention_layernorm.weight", (d,)),
        f"{ours}/attn/q_dnh": HFTensor(f"{hf}.self_attn.q_proj.weight", (nh, d), True),
        f"{ours}/attn/k_dkh": HFTensor(f"{hf}.self_attn.k_proj.weight", (kh, d), True),
        f"{ours}/attn/v_dkh": HFTensor(f"{hf}.self_attn.v_proj.weight", (kh, d), True),
        f"{ours}/attn/o_nhd": HFTensor(f"{hf}.self_attn.o_proj.weight", (d, nh), True),
        f"{ours}/mlp/gate_df": HFTensor(f"{hf}.mlp.gate_proj.weight", (f, d), True),
        f"{ours}/mlp/up_df": HFTensor(f"{hf}.mlp.up_proj.weight", (f, d), True),
        f"{ours}/mlp/down_fd": HFTensor(f"{hf}.mlp.down_proj.weight", (d, f), True),
    })
    if c.attention_bias:
      out.update({
          f"{ours}/attn/q_bias_nh": HFTensor(f"{hf}.self_attn.q_proj.bias", (nh,)),
          f"{ours}/attn/k_bias_kh": HFTensor(f"{hf}.self_attn.k_proj.bias", (kh,)),
          f"{ours}/attn/v_bias_kh": HFTensor(f"{hf}.self_attn.v_proj.bias", (kh,)),
      })
    if c.attention_out_bias:
      out[f"{ours}/attn/o_bias_d"] = HFTensor(f"{hf}.self_attn.o_proj.bias", (d,))
    if c.qk_norm:
      out[f"{ours}/attn/q_norm/scale"] = HFTensor(f"{hf}.self_attn.q_norm.weight", (c.head_dim,))
      out[f"{ours}/attn/k_norm/scale"] = HFTensor(f"{hf}.self_attn.k_norm.weight", (c.head_dim,))
  return out


def read_hf_config(path: str, overrides: dict[str, Any]
                   ) -> tuple[dict[str, Any], str, dict[str, Any]]:
  """``(config.json as a dict, its path, overrides)`` of the model directory ``path``, with
  generation_config.json's eos ids added to the overrides unless one is given. Every model
  family reads its directory through here."""
  if not os.path.isdir(path):
    raise ModelConfigError(f"{path}: model directory does not exist")
  cfg_path = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(cfg_path):
    raise ModelConfigError(f"{cfg_path}: missing (a model directory needs config.json)")
  d = read_json_object(cfg_path)
  overrides = dict(overrides)
  gen_path = os.path.join(path, GENERATION_CONFIG_FILE)
  if os.path.isfile(gen_path) and "eos_token_id" not in overrides:
    # generate() stops on generation_config's eos ids (Llama 3 instruct lists several there).
    gen_eos = read_json_object(gen_path).get("eos_token_id")
    if gen_eos is not None:
      overrides["eos_token_id"] = tuple(gen_eos) if isinstance(gen_eos, list) else gen_eos
  return d, cfg_path, overrides


def load_config(path: str, **overrides: Any) -> DecoderConfig:
  """Reads ``path/config.json`` (and eos ids from ``generation_config.json`` if present)."""
  d, cfg_path, overrides = read_hf_config(path, overrides)
  return DecoderConfig.from_hf_dict(d, cfg_path, **overrides)


def load_unsharded(path: str, family: str, load_config: Callable[..., Any],
                   load_params: Callable[[str, Any], Any], dtype: Any, param_dtype: Any,
                   tokenizer: bool, unused: dict[str, Any]) -> tuple[Any, Any]:
  """``(model, tokenizer or None)`` of a family that loads onto one device: the body of the
  ``from_pretrained`` of every family without sharding rules yet. Options of other families
  (``mesh``, ``layout``, ``remat``, ...) must be unset; one is an error naming the directory.
  """
  given = sorted(k for k, v in unused.items() if v not in (None, False))
  if given:
    raise ModelConfigError(f"{path}: {family} models do not support {', '.join(given)} yet")
  config = load_config(path, dtype=jnp.dtype(dtype).name,
                       param_dtype=jnp.dtype(param_dtype or dtype).name)
  tok = None
  if tokenizer:
    from jaxlab.models.tokenizer import load_tokenizer  # pylint: disable=g-import-not-at-top
    tok = load_tokenizer(path)
  return load_params(path, config), tok


def weight_files(path: str) -> tuple[dict[str, str], str]:
  """Tensor name -> file path, and the file that lists them (the index or the single file)."""
  index_path = os.path.join(path, INDEX_FILE)
  single = os.path.join(path, SINGLE_FILE)
  if os.path.isfile(index_path):
    weight_map = read_json_object(index_path).get("weight_map")
    if not isinstance(weight_map, dict):
      raise CheckpointFormatError(f"{index_path}: no 'weight_map' object")
    files = {n: os.path.join(path, f) for n, f in weight_map.items()}
    for f in sorted(set(files.values())):
      if not os.path.isfile(f):
        raise CheckpointFormatError(f"{f}: listed in {index_path} but missing")
    return files, index_path
  if os.path.isfile(single):
    with safe_open(single, framework="numpy") as f:
      return {n: single for n in f.keys()}, single
  raise CheckpointFormatError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE} in the model directory")


def _placement(mesh: Mesh | None, shardings: Any, layout: str | None
               ) -> Callable[[str, tuple[int, ...]], Any]:
  """Path, shape -> a ``jax.sharding.Sharding`` (or None for the default device)."""
  if shardings is not None:
    if callable(shardings):
      return shardings
    flat = shardings
    return lambda p, shape: flat[p]
  if mesh is None:
    return lambda p, shape: None
  rules = sharding_lib.RULES[layout or "fsdp"]
  return lambda p, shape: NamedSharding(mesh, sharding_lib.spec_for(p, shape, rules, mesh))


def load_params(path: str, config: DecoderConfig, mesh: Mesh | None = None,
                shardings: Any = None, layout: str | None = None) -> Decoder:
  """The decoder with weights read from ``path``'s safetensors file(s).

  Args:
    path: a model directory.
    config: its config (see :func:`load_config`).
    mesh: if given, each tensor is placed with ``NamedSharding(mesh, spec)`` from the sharding
      ``layout`` rules (default "fsdp").
    shardings: overrides ``mesh``: a dict path -> Sharding, or a callable (path, shape) ->
      Sharding.
    layout: a key of :data:`jaxlab.models.decoder.sharding.RULES`.

  Raises:
    CheckpointFormatError: a tensor is missing or has the wrong shape (one line naming the
      file, the tensor, the expected and the actual shape).
  """
  files, listing = weight_files(path)
  table = hf_param_map(config)
  pd = jnp.dtype(config.param_dtype)
  place = _placement(mesh, shardings, layout)
  graphdef, abstract = nnx.split(abstract_decoder(config))

  with contextlib.ExitStack() as stack:
    handles: dict[str, Any] = {}

    def read(keypath, leaf):
      p = path_str(keypath)
      if p not in table:
        raise CheckpointFormatError(f"{path}: our parameter {p!r} has no HF tensor mapping")
      t = table[p]
      if t.name not in files:
        raise CheckpointFormatError(f"{listing}: missing tensor {t.name!r} (expected shape "
                                    f"{list(t.shape)})")
      fname = files[t.name]
      if fname not in handles:
        handles[fname] = stack.enter_context(safe_open(fname, framework="numpy"))
      try:
        w = handles[fname].get_tensor(t.name)
      except Exception as e:  # safetensors raises SafetensorError for a key listed but absent
        raise CheckpointFormatError(f"{fname}: cannot read tensor {t.name!r}: {e}") from None
      if tuple(w.shape) != t.shape:
        raise CheckpointFormatError(f"{fname}: tensor {t.name!r} has shape {list(w.shape)}, "
                                    f"expected {list(t.shape)}")
      w = t.to_ours(w, leaf.shape).astype(pd)
      sharding = place(p, leaf.shape)
      return jax.device_put(w, sharding) if sharding is not None else jnp.asarray(w)

    state = jax.tree_util.tree_map_with_path(read, abstract)
  return nnx.merge(graphdef, state)


def from_pretrained(path: str, mesh: Mesh | None = None, dtype: Any = jnp.float32,
                    shardings: Any = None, tokenizer: bool = True, param_dtype: Any = None,
                    layout: str | None = None, remat: bool = False):
  """Loads a local Hugging Face model directory into ``(model, tokenizer)``.

  Args:
    path: directory with config.json, ``model.safetensors`` (or sharded
      ``model-0000x-of-0000y.safetensors`` + ``model.safetensors.index.json``) and tokenizer
      files.
    mesh: place weights on this mesh following the sharding ``layout`` (default "fsdp").
    dtype: compute dtype of matmuls (float32 or bfloat16).
    shardings: explicit placement, overriding ``mesh`` (see :func:`load_params`).
    tokenizer: False to skip loading the tokenizer (then the second element is None).
    param_dtype: storage dtype of the parameters (default: ``dtype``).
    layout: a key of :data:`jaxlab.models.decoder.sharding.RULES`.
    remat: recompute layer activations in the backward pass.

  Returns:
    ``(Decoder, tokenizer or None)``.

  Raises:
    ValueError: (``ModelConfigError`` / ``CheckpointFormatError`` / ``TokenizerError``) with
      one line naming the offending file and field/tensor.
  """
  dtype_name = jnp.dtype(dtype).name
  param_name = jnp.dtype(param_dtype or dtype).name
  config = load_config(path, dtype=dtype_name, param_dtype=param_name, remat=remat)
  tok = None
  if tokenizer:
    # The tokenizer first: its error is cheaper to hit than loading every tensor.
    from jaxlab.models.tokenizer import load_tokenizer  # pylint: disable=g-import-not-at-top
    tok = load_tokenizer(path)
  model = load_params(path, config, mesh=mesh, shardings=shardings, layout=layout)
  return model, tok


def hf_tensors(model: Any, dtype: Any,
               place: Callable[[str], tuple[str, int | None, Callable[[np.ndarray], np.ndarray]]]
               ) -> Iterator[tuple[str, np.ndarray]]:
  """``(name, array)`` of a model's stored tensors in natural order (layer 2 before layer 10,
  the order files are written in), each parameter gathered to host only when its tensor is due.

  ``place(param_path)`` says where a parameter goes: ``(name, part, to_stored)``, with part None
  for a tensor of its own, else its row block's index in a tensor stored as the concatenation
  (axis 0) of its parts; ``to_stored`` turns our array (cast to ``dtype`` if given) into the
  stored layout. Every model family's ``iter_hf_tensors`` is this with its own map.
  """
  _, state = nnx.split(model)
  entries = []
  for kp, leaf in jax.tree_util.tree_leaves_with_path(state):
    name, part, to_stored = place(path_str(kp))
    entries.append((natural_key(name), -1 if part is None else part, name, to_stored, leaf))
  entries.sort(key=lambda e: e[:2])
  for name, group in itertools.groupby(entries, key=lambda e: e[2]):
    blocks, parts = [], []
    for _, part, _, to_stored, leaf in group:
      w = np.asarray(jax.device_get(leaf))
      blocks.append(to_stored(w if dtype is None else w.astype(jnp.dtype(dtype))))
      parts.append(part)
    yield name, blocks[0] if parts == [-1] else np.concatenate(blocks, axis=0)


def iter_hf_tensors(model: Decoder, dtype: Any = None) -> Iterator[tuple[str, np.ndarray]]:
  """``(hf_name, array in HF layout)`` for every parameter, gathered to host one at a time."""
  table = hf_param_map(model.config)
  return hf_tensors(model, dtype, lambda p: (table[p].name, None, table[p].to_hf))


def save_pretrained(model: Decoder, path: str, tokenizer: Any = None, dtype: Any = None,
                    max_shard_bytes: int = 5 * 2**30) -> None:
  """Writes ``config.json`` and safetensors with HF names and layouts (and the tokenizer).

  Loading the result with :func:`from_pretrained` (same dtype) gives back identical tensors,
  and transformers' ``AutoModelForCausalLM.from_pretrained`` reads it too.

  Args:
    model: the decoder.
    path: output directory (created).
    tokenizer: anything with ``save_pretrained(path)`` (a transformers tokenizer), optional.
    dtype: storage dtype (default: the parameters' dtype).
    max_shard_bytes: above this total, tensors go into ``model-0000x-of-0000y.safetensors``
      files with a ``model.safetensors.index.json``.
  """
  dtype_name = jnp.dtype(dtype or model.config.param_dtype).name
  write_checkpoint(path, model.config.to_hf_dict(torch_dtype=dtype_name),
                   iter_hf_tensors(model, dtype), tokenizer, max_shard_bytes)


def write_checkpoint(path: str, hf_config: dict[str, Any],
                     tensors: Iterable[tuple[str, np.ndarray]], tokenizer: Any = None,
                     max_shard_bytes: int = 5 * 2**30) -> None:
  """Writes a Hugging Face checkpoint directory: ``config.json``, the ``(name, array)``
  tensors in order as one ``model.safetensors`` or as shards of at most ``max_shard_bytes``
  with their index, and the tokenizer if given. Stale weight files are removed first, so the
  directory holds exactly one checkpoint. Every model family saves through here."""
  os.makedirs(path, exist_ok=True)
  files.write_text(os.path.join(path, CONFIG_FILE),
                   json.dumps(hf_config, indent=2, sort_keys=True))
  # Group tensors into shards greedily, in the given order, then write each shard.
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  total = 0
  for name, w in tensors:
    if shards[-1] and size + w.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = w
    size += w.nbytes
    total += w.nbytes
  for old in os.listdir(path):
    if old == SINGLE_FILE or old == INDEX_FILE or re.fullmatch(
        r"model-\d{5}-of-\d{5}\.safetensors", old):
      os.remove(os.path.join(path, old))
  meta = {"format": "pt"}  # transformers expects this tag on PyTorch-loadable files
  if len(shards) == 1:
    save_file(shards[0], os.path.join(path, SINGLE_FILE), metadata=meta)
  else:
    weight_map = {}
    for i, shard in enumerate(shards):
      fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      save_file(shard, os.path.join(path, fname), metadata=meta)
      weight_map.update({n: fname for n in shard})
    files.write_text(os.path.join(path, INDEX_FILE), json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2,
        sort_keys=True))
  if tokenizer is not None:
    tokenizer.save_pretrained(path)


def natural_key(name: str):
  return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]
