"""Qwen2.5-VL checkpoints <-> our model: config.json + safetensors, tensor by tensor.

Two key layouts exist. The checkpoints published with Qwen2.5-VL (and what transformers 5.25's
``save_pretrained`` writes, through its key conversion) name the tower ``visual.*`` and the
text model ``model.*``; transformers 5's in-memory names are ``model.visual.*`` and
``model.language_model.*``. Both have ``lm_head.*`` (absent when tied). Each of our parameters
is looked up under its name in either layout; we write the ``model.visual`` /
``model.language_model`` layout, which transformers loads directly.

The text tensors are the decoder family's (:func:`jaxlab.models.decoder.params.hf_param_map`,
renamed). In the tower, ``attn.qkv`` stores q, k and v as three row blocks of one tensor (we
keep them apart), and the patch embedding is a Conv3d kernel ``[Dv, C, T, P, P]`` (ours is the
linear map ``[C*T*P*P, Dv]``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from safetensors import safe_open

from jaxlab.models.decoder import params as decoder_params
from jaxlab.models.decoder.params import (CheckpointFormatError, HFTensor, read_hf_config,
                                          weight_files, write_checkpoint)
from jaxlab.models.paths import path_str
from jaxlab.models.qwen_vl.config import QwenVLConfig
from jaxlab.models.qwen_vl import sharding as sharding_lib
from jaxlab.models.qwen_vl.modeling import QwenVL, abstract_qwen_vl


@dataclasses.dataclass(frozen=True)
class Source:
  """Where one of our parameters lives in a Qwen2.5-VL checkpoint.

  Attributes:
    tensor: the HF tensor in the layout we write (its ``name`` and the shape of the part that
      is ours, as the decoder's map describes it).
    hub_name: its name in the hub layout.
    parts, part: it is row block ``part`` of ``parts`` equal blocks of the stored tensor.
    stored_shape: the stored tensor's shape when it is not ``tensor.shape`` times ``parts``
      (the Conv3d kernel of the patch embedding).
  """
  tensor: HFTensor
  hub_name: str
  parts: int = 1
  part: int = 0
  stored_shape: tuple[int, ...] | None = None

  @property
  def shape_on_disk(self) -> tuple[int, ...]:
    if self.stored_shape is not None:
      return self.stored_shape
    return (self.tensor.shape[0] * self.parts,) + self.tensor.shape[1:]


def _text_name(hf_name: str) -> str:
  """The decoder map's name (hub layout) in the transformers 5 layout."""
  if hf_name.startswith("model."):
    return "model.language_model." + hf_name[len("model."):]
  return hf_name


def hf_param_map(config: QwenVLConfig) -> dict[str, Source]:
  """Our parameter paths (``"visual/blocks/0/attn/q_dnh"``) -> their checkpoint tensors."""
  out: dict[str, Source] = {}
  for ours, t in decoder_params.hf_param_map(config.text).items():
    out[f"text/{ours}"] = Source(dataclasses.replace(t, name=_text_name(t.name)), t.name)
  v = config.vision
  dv, f, wide = v.hidden_size, v.intermediate_size, v.hidden_size * v.merge_unit

  def add(ours, name, shape, linear=False, **kw):
    out[f"visual/{ours}"] = Source(HFTensor(f"model.visual.{name}", shape, linear),
                                   f"visual.{name}", **kw)

  add("patch_embed_pd", "patch_embed.proj.weight", (dv, v.patch_dim), True,
      stored_shape=(dv, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size))
  for i in range(v.depth):
    ours, hf = f"blocks/{i}", f"blocks.{i}"
    add(f"{ours}/norm1/scale", f"{hf}.norm1.weight", (dv,))
    add(f"{ours}/norm2/scale", f"{hf}.norm2.weight", (dv,))
    for part, (w, b) in enumerate((("q_dnh", "q_bias_nh"), ("k_dkh", "k_bias_kh"),
                                   ("v_dkh", "v_bias_kh"))):
      add(f"{ours}/attn/{w}", f"{hf}.attn.qkv.weight", (dv, dv), True, parts=3, part=part)
      add(f"{ours}/attn/{b}", f"{hf}.attn.qkv.bias", (dv,), parts=3, part=part)
    add(f"{ours}/attn/o_nhd", f"{hf}.attn.proj.weight", (dv, dv), True)
    add(f"{ours}/attn/o_bias_d", f"{hf}.attn.proj.bias", (dv,))
    for name, ours_w, ours_b, shape in (("gate_proj", "gate_df", "gate_bias_f", (f, dv)),
                                        ("up_proj", "up_df", "up_bias_f", (f, dv)),
                                        ("down_proj", "down_fd", "down_bias_d", (dv, f))):
      add(f"{ours}/mlp/{ours_w}", f"{hf}.mlp.{name}.weight", shape, True)
      add(f"{ours}/mlp/{ours_b}", f"{hf}.mlp.{name}.bias", shape[:1])
  add("merger/norm/scale", "merger.ln_q.weight", (dv,))
  add("merger/fc1_ww", "merger.mlp.0.weight", (wide, wide), True)
  add("merger/fc1_bias_w", "merger.mlp.0.bias", (wide,))
  add("merger/fc2_wd", "merger.mlp.2.weight", (v.out_hidden_size, wide), True)
  add("merger/fc2_bias_d", "merger.mlp.2.bias", (v.out_hidden_size,))
  return out


def load_config(path: str, **overrides: Any) -> QwenVLConfig:
  """Reads ``path/config.json`` (and eos ids from ``generation_config.json`` if present)."""
  d, cfg_path, overrides = read_hf_config(path, overrides)
  return QwenVLConfig.from_hf_dict(d, cfg_path, **overrides)


def load_params(path: str, config: QwenVLConfig, mesh: Mesh | None = None,
                shardings: Any = None, layout: str | None = None) -> QwenVL:
  """The model with weights read from ``path``'s safetensors file(s), in either key layout.

  Args:
    path: a model directory.
    config: its config (see :func:`load_config`).
    mesh: if given, each tensor is placed with ``NamedSharding(mesh, spec)`` from the sharding
      ``layout`` rules (default "fsdp") as it is read.
    shardings: overrides ``mesh``: a dict path -> Sharding, or a callable (path, shape) ->
      Sharding.
    layout: a key of :data:`jaxlab.models.qwen_vl.sharding.RULES` (the decoder's names).

  Raises:
    CheckpointFormatError: a tensor is missing or has the wrong shape (naming the file, the
      tensor, the expected and the actual shape).
  """
  files, listing = weight_files(path)
  table = hf_param_map(config)
  pd = jnp.dtype(config.text.param_dtype)
  place = sharding_lib.placement(mesh, shardings, layout)
  graphdef, abstract = nnx.split(abstract_qwen_vl(config))

  with contextlib.ExitStack() as stack:
    handles: dict[str, Any] = {}
    cache: dict[str, np.ndarray] = {}  # the fused qkv tensor of the block being read

    def get(name: str) -> tuple[str, np.ndarray]:
      fname = files[name]
      if name not in cache:
        if fname not in handles:
          handles[fname] = stack.enter_context(safe_open(fname, framework="numpy"))
        cache.clear()
        cache[name] = handles[fname].get_tensor(name)
      return fname, cache[name]

    def read(keypath, leaf):
      p = path_str(keypath)
      if p not in table:
        raise CheckpointFormatError(f"{path}: our parameter {p!r} has no checkpoint tensor")
      src = table[p]
      t = src.tensor
      name = next((n for n in (t.name, src.hub_name) if n in files), None)
      want = src.shape_on_disk
      if name is None:
        raise CheckpointFormatError(f"{listing}: missing tensor {t.name!r} (or {src.hub_name!r}"
                                    f"; expected shape {list(want)})")
      fname, w = get(name)
      if tuple(w.shape) != want:
        raise CheckpointFormatError(f"{fname}: tensor {name!r} has shape {list(w.shape)}, "
                                    f"expected {list(want)}")
      if src.parts > 1:
        w = np.split(w, src.parts, axis=0)[src.part]
      w = t.to_ours(w.reshape(t.shape), leaf.shape).astype(pd)
      where = place(p, leaf.shape)
      return jax.device_put(w, where) if where is not None else jnp.asarray(w)

    state = jax.tree_util.tree_map_with_path(read, abstract)
  return nnx.merge(graphdef, state)


def from_pretrained(path: str, mesh: Mesh | None = None, dtype: Any = jnp.float32,
                    shardings: Any = None, tokenizer: bool = True, param_dtype: Any = None,
                    layout: str | None = None, remat: bool = False):
  """Loads a local Qwen2.5-VL model directory into ``(QwenVL, tokenizer or None)``.

  The options are the decoder family's (:func:`jaxlab.models.decoder.params.from_pretrained`).

  Args:
    path: directory with config.json, safetensors weights (one file or shards with an index)
      and, unless ``tokenizer=False``, tokenizer files.
    mesh: place weights on this mesh following the sharding ``layout`` (default "fsdp").
    dtype: compute dtype of matmuls.
    shardings: explicit placement, overriding ``mesh`` (see :func:`load_params`).
    tokenizer: False to skip the tokenizer.
    param_dtype: storage dtype (default: ``dtype``).
    layout: a key of :data:`jaxlab.models.qwen_vl.sharding.RULES` ("replicated", "fsdp",
      "tp", "fsdp_tp").
    remat: recompute the text layers' and vision blocks' activations in the backward pass.

  Raises:
    ValueError: (``ModelConfigError`` / ``CheckpointFormatError`` / ``TokenizerError``) with
      one line naming the offending file and field/tensor; an unknown ``layout``.
  """
  if shardings is None and mesh is not None:
    sharding_lib.rules_for(layout or "fsdp")  # an unknown layout fails before any read
  config = load_config(path, dtype=jnp.dtype(dtype).name,
                       param_dtype=jnp.dtype(param_dtype or dtype).name, remat=remat)
  tok = None
  if tokenizer:
    # The tokenizer first: its error is cheaper to hit than loading every tensor.
    from jaxlab.models.tokenizer import load_tokenizer  # pylint: disable=g-import-not-at-top
    tok = load_tokenizer(path)
  return load_params(path, config, mesh=mesh, shardings=shardings, layout=layout), tok


def iter_hf_tensors(model: QwenVL, dtype: Any = None) -> Iterator[tuple[str, np.ndarray]]:
  """``(name, array)`` in the transformers 5 layout (q/k/v fused back), in natural order."""
  table = hf_param_map(model.config)

  def place(param_path):
    src = table[param_path]
    if src.parts > 1:
      return src.tensor.name, src.part, src.tensor.to_hf
    return src.tensor.name, None, lambda w: np.ascontiguousarray(
        src.tensor.to_hf(w).reshape(src.shape_on_disk))

  return decoder_params.hf_tensors(model, dtype, place)


def save_pretrained(model: QwenVL, path: str, tokenizer: Any = None, dtype: Any = None,
                    max_shard_bytes: int = 5 * 2**30, image_config: Any = None) -> None:
  """Writes ``config.json`` (nested layout) and safetensors (``model.visual`` /
  ``model.language_model`` names) that transformers' ``Qwen2_5_VLForConditionalGeneration``
  and :func:`from_pretrained` read back; the tokenizer if given; and ``image_config`` (a
  :class:`~jaxlab.models.qwen_vl.processor.ImageProcessorConfig`) as
  ``preprocessor_config.json`` if given, atomically."""
  dtype_name = jnp.dtype(dtype or model.config.text.param_dtype).name
  write_checkpoint(path, model.config.to_hf_dict(torch_dtype=dtype_name),
                   iter_hf_tensors(model, dtype), tokenizer, max_shard_bytes)
  if image_config is not None:
    import os  # pylint: disable=import-outside-toplevel
    from jaxlab.core import files  # pylint: disable=import-outside-toplevel
    from jaxlab.models.qwen_vl import processor  # pylint: disable=import-outside-toplevel
    files.write_json(os.path.join(path, processor.PREPROCESSOR_FILE), image_config.to_dict(),
                     indent=2)
