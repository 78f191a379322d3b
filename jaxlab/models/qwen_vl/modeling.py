"""Qwen2.5-VL in Flax NNX: the vision tower feeding the decoder family's text model.

A prompt holds, per image, ``<|vision_start|>``, one ``<|image_pad|>`` placeholder per merged
patch (``t * h * w / M^2`` of them, see :func:`jaxlab.models.qwen_vl.processor.
expand_image_placeholders`) and ``<|vision_end|>``. The model embeds the tokens with the text
embedding table, overwrites the placeholder rows with the tower's outputs (images in order,
row-major over the batch), and runs the text decoder (:class:`~jaxlab.models.decoder.modeling.
Decoder`, its blocks, head and :class:`KVCache`) with multimodal RoPE positions.

M-RoPE positions (:func:`rope_index`): each token carries three positions (temporal, height,
width). Text tokens have three equal positions counting on from the previous token; an image's
placeholders get ``start + (frame, row, column)`` of their merged patch, where ``start`` is the
position after the preceding text, and the text after the image resumes at ``start +
max(rows, columns)`` (in merged patches). Padding is skipped (LEFT-padded batches) and gets
position 0. Because images advance the position by less than their token count, each row ends
at ``rope_delta = max position + 1 - real tokens`` away from a plain count; generated tokens
continue from there: a new token's three positions are all ``real tokens before it +
rope_delta``.

API (``B`` batch, ``T`` tokens, ``N`` patches, ``V`` vocabulary):

  model(tokens_bt, mask_bt, pixel_values, grid_thw) -> logits [B, T, V] (float32), no cache.
      ``pixel_values`` may also be a padded :class:`~jaxlab.models.qwen_vl.vision.ImageBatch`
      (``grid_thw`` None): the images' layout is then data and one compiled program serves
      batches of any image sizes within its patch budget (training, evaluation).
  model.prefill(tokens_bt, mask_bt, pixel_values, grid_thw, cache) -> (logits, cache, deltas_b)
      writes the prompt into a cache from ``model.init_cache(B, max_len)``; ``deltas_b`` are
      the rows' rope deltas, to pass to every later step.
  model.step(tokens_bt, mask_bt, cache, deltas_b) -> (logits, cache)
      T more (text) tokens, e.g. one sampled token per row; jit-able (no host work). Positions
      default to the real tokens in the cache plus ``deltas_b`` (:func:`decode_positions`);
      ``positions_pbt=`` overrides them.
  model.hidden / model.logits split the head off as in the decoder, so a sampler can take the
  last column's logits only (``jaxlab.llm.sampling`` drives the decoder through ``hidden``,
  ``logits`` and ``__call__`` with a cache; a VLM sampler runs ``prefill`` on the host-side
  prompt, then ``step`` with the deltas inside its decode loop).

The prompt side (``rope_index``, the placeholder count check) needs concrete token ids and
grids: it runs on the host in numpy (:func:`prepare_prompt`), before any compiled code. The
methods above run eagerly op by op; :func:`forward`, :func:`prefill`, :func:`decode_step` and
:func:`image_embeds` are the same computations compiled (one program per shapes and image
grids), which is what to call outside tests of tiny models.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab.models.decoder.modeling import Decoder, KVCache, positions_from_mask
from jaxlab.models.qwen_vl.config import QwenVLConfig
from jaxlab.models.qwen_vl.vision import (Grid, ImageBatch, VisionTower, as_grid,
                                          merged_counts)


def rope_index(config: QwenVLConfig, tokens_bt: Any, mask_bt: Any = None,
               grid_thw: Sequence[Sequence[int]] | np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
  """M-RoPE positions ``[3, B, T]`` and rope deltas ``[B]`` (int32, numpy) of a prompt batch.

  Args:
    config: gives the image placeholder id and the merge size.
    tokens_bt: ``[B, T]`` ids; each image is a run of ``t*h*w/M^2`` placeholders.
    mask_bt: ``[B, T]``, 1 for real tokens (LEFT padding); default all real.
    grid_thw: ``[num_images, 3]`` of the images in order (row 0's first, then row 0's next,
      ..., then row 1's).

  Raises:
    ValueError: the placeholders do not match the images (counts named).
  """
  tokens = np.asarray(tokens_bt)
  b, t = tokens.shape
  mask = np.ones((b, t), bool) if mask_bt is None else np.asarray(mask_bt).astype(bool)
  grid = as_grid(np.zeros((0, 3), int) if grid_thw is None else grid_thw)
  counts = merged_counts(config.vision, grid)
  check_placeholders(config, tokens, mask, grid)
  m = config.vision.spatial_merge_size
  positions = np.zeros((3, b, t), np.int64)
  deltas = np.zeros((b,), np.int64)
  image = 0
  for row in range(b):
    real = np.flatnonzero(mask[row])
    ids = tokens[row, real]
    out = np.zeros((3, len(real)), np.int64)
    starts = np.flatnonzero(ids == config.image_token_id)
    pos = i = 0
    while i < len(ids):
      # The text up to the next placeholder counts on in one step (no per-token loop).
      j = starts[np.searchsorted(starts, i)] if len(starts) and starts[-1] >= i else len(ids)
      out[:, i:j] = pos + np.arange(j - i)
      pos += j - i
      i = j
      if i == len(ids):
        break
      gt, gh, gw = grid[image]
      gh, gw = gh // m, gw // m
      f, r, c = np.meshgrid(np.arange(gt), np.arange(gh), np.arange(gw), indexing="ij")
      n = counts[image]
      out[:, i:i + n] = pos + np.stack([f.ravel(), r.ravel(), c.ravel()])
      pos += max(gh, gw)
      i += n
      image += 1
    positions[:, row, real] = out
    deltas[row] = (out.max() + 1 - len(real)) if len(real) else 0
  return positions.astype(np.int32), deltas.astype(np.int32)


def check_placeholders(config: QwenVLConfig, tokens: np.ndarray, mask: np.ndarray,
                       grid: Grid) -> None:
  """Raises ValueError unless the placeholders are exactly the images' merged patches: the same
  total, and each image a contiguous run of its own length inside one row."""
  counts = merged_counts(config.vision, grid)
  is_img = (tokens == config.image_token_id) & mask
  total = int(is_img.sum())
  if total != sum(counts):
    raise ValueError(f"the prompt has {total} image placeholder tokens (id "
                     f"{config.image_token_id}) but the {len(grid)} image(s) give "
                     f"{sum(counts)} merged patches ({counts})")
  image = 0
  for row in range(tokens.shape[0]):
    ids = is_img[row][mask[row]]
    starts = np.flatnonzero(ids)
    i = 0
    while i < len(ids):
      if not ids[i]:  # jump to the next placeholder
        later = starts[starts > i]
        if not len(later):
          break
        i = int(later[0])
      n = counts[image]
      if not ids[i:i + n].all() or len(ids[i:i + n]) < n:
        run = int(np.argmin(np.append(ids[i:], False)))
        raise ValueError(f"row {row}: image {image} needs {n} consecutive placeholder tokens, "
                         f"found a run of {run}")
      i += n
      image += 1


def decode_positions(cache: KVCache, mask_bt: jax.Array, deltas_b: jax.Array) -> jax.Array:
  """``[3, B, T]`` positions of text tokens written after a prefill: real tokens already in the
  cache plus the row's rope delta (all three rows equal)."""
  index = cache.index
  seen_b = jnp.sum(cache.mask_bs & (jnp.arange(cache.max_len) < index)[None], axis=-1)
  pos = positions_from_mask(mask_bt, seen_b) + jnp.asarray(deltas_b, jnp.int32)[:, None]
  return jnp.broadcast_to(pos[None], (3,) + pos.shape)


class QwenVL(nnx.Module):
  """Qwen2.5-VL: :class:`VisionTower` (``visual``) + the text :class:`Decoder` (``text``)."""

  def __init__(self, config: QwenVLConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.visual = VisionTower(config.vision, dtype=config.text.dtype,
                              param_dtype=config.text.param_dtype, remat=config.text.remat,
                              rngs=rngs)
    self.text = Decoder(config.text, rngs=rngs)

  def init_cache(self, batch: int, max_len: int, dtype: Any = None) -> KVCache:
    """An empty text KV cache of ``max_len`` slots."""
    return KVCache.init(self.config.text, batch, max_len, dtype)

  def prepare_prompt(self, tokens_bt: Any, mask_bt: Any = None, pixel_values: Any = None,
                     grid_thw=None) -> "Prompt":
    """The host side of a prompt batch (checks, M-RoPE positions, deltas): see
    :func:`prepare_prompt`. A sampler calls it before its compiled program, which then runs
    :meth:`prompt_hidden` and :meth:`step` (``jaxlab.llm.sampling.generate``)."""
    return prepare_prompt(self.config, tokens_bt, mask_bt, pixel_values, grid_thw)

  def image_embeds(self, pixel_values: jax.Array, grid_thw) -> jax.Array:
    """Merged image embeddings ``[sum merged patches, D]`` (see :class:`VisionTower`)."""
    return self.visual(jnp.asarray(pixel_values), grid_thw)

  def embed(self, tokens_bt: jax.Array, pixel_values: jax.Array | ImageBatch | None = None,
            grid_thw=None, text_from: int | None = None) -> jax.Array:
    """Token embeddings ``[B, T, D]`` with the image placeholders' rows replaced, in order, by
    the merged image embeddings.

    ``pixel_values`` is either ``[N, patch_dim]`` with the static ``grid_thw`` (the images of
    all rows in one list) or an :class:`ImageBatch` (``grid_thw`` None): row ``b``'s
    placeholders take row ``b``'s merged tokens in order. ``text_from``: columns from this one
    on are text whatever their ids (a sampled response: the sampler embedded every generated
    token, the placeholder id included, as text), with an :class:`ImageBatch` only.
    """
    x = self.text.embed(jnp.asarray(tokens_bt))
    if pixel_values is None:
      return x
    if isinstance(pixel_values, ImageBatch):
      img = self.visual.padded(pixel_values).astype(x.dtype)  # [B, Nm, D]
      is_img = jnp.asarray(tokens_bt) == self.config.image_token_id
      if text_from is not None:
        is_img = is_img & (jnp.arange(is_img.shape[1]) < text_from)[None]
      idx = jnp.clip(jnp.cumsum(is_img, axis=1) - 1, 0, img.shape[1] - 1)
      picked = jnp.take_along_axis(img, idx[..., None], axis=1)
      return jnp.where(is_img[..., None], picked, x)
    img = self.image_embeds(pixel_values, grid_thw).astype(x.dtype)
    if text_from is not None:
      raise ValueError("embed: text_from needs the images as an ImageBatch")
    is_img = (jnp.asarray(tokens_bt) == self.config.image_token_id).reshape(-1)
    idx = jnp.clip(jnp.cumsum(is_img) - 1, 0, img.shape[0] - 1)
    flat = jnp.where(is_img[:, None], img[idx], x.reshape(-1, x.shape[-1]))
    return flat.reshape(x.shape)

  def hidden(self, tokens_bt: Any, mask_bt: Any = None, pixel_values: Any = None,
             grid_thw=None, cache: KVCache | None = None):
    """``(h_btd, cache, deltas_b)`` of a prompt: final-normed hidden states (compute dtype),
    the cache with the prompt written (None without one) and the rows' rope deltas."""
    p = prepare_prompt(self.config, tokens_bt, mask_bt, pixel_values, grid_thw)
    h, cache = self.prompt_hidden(p.tokens, p.mask, p.positions, p.pixel_values, p.grid, cache)
    return h, cache, p.deltas

  def prompt_hidden(self, tokens_bt: jax.Array, mask_bt: jax.Array, positions_pbt: jax.Array,
                    pixel_values: jax.Array | None, grid: Grid | None,
                    cache: KVCache | None = None, text_from: int | None = None
                    ) -> tuple[jax.Array, KVCache | None]:
    """:meth:`hidden` after the host side: positions given, no checks; traceable.
    ``text_from``: see :meth:`embed`."""
    x = self.embed(tokens_bt, pixel_values, grid, text_from)
    return self.text.hidden(None, mask_bt, positions_pbt, cache, inputs_embeds_btd=x)

  def logits(self, h_btd: jax.Array) -> jax.Array:
    """Float32 logits ``[B, T, V]`` from final hidden states."""
    return self.text.logits(h_btd)

  def __call__(self, tokens_bt: Any, mask_bt: Any = None, pixel_values: Any = None,
               grid_thw=None, cache: KVCache | None = None) -> jax.Array:
    """Float32 logits ``[B, T, V]`` of a prompt with its images (the cache, if given, is
    filled but not returned; use :meth:`prefill` to keep it)."""
    h, _, _ = self.hidden(tokens_bt, mask_bt, pixel_values, grid_thw, cache)
    return self.logits(h)

  def prefill(self, tokens_bt: Any, mask_bt: Any, pixel_values: Any, grid_thw,
              cache: KVCache) -> tuple[jax.Array, KVCache, jax.Array]:
    """``(logits_btv, cache, deltas_b)``: the prompt written into ``cache``."""
    h, cache, deltas = self.hidden(tokens_bt, mask_bt, pixel_values, grid_thw, cache)
    return self.logits(h), cache, deltas

  def step(self, tokens_bt: jax.Array, mask_bt: jax.Array, cache: KVCache,
           deltas_b: jax.Array | None = None, positions_pbt: jax.Array | None = None
           ) -> tuple[jax.Array, KVCache]:
    """``(logits_btv, cache)`` of ``T`` text tokens after the cache's content (decode).

    Their positions are ``positions_pbt`` (``[3, B, T]`` or ``[B, T]``) when given, else
    :func:`decode_positions` from the cache and ``deltas_b`` (one of the two is needed).
    """
    if positions_pbt is None:
      if deltas_b is None:
        raise ValueError("QwenVL.step: pass deltas_b (from prefill) or positions_pbt")
      positions_pbt = decode_positions(cache, mask_bt, deltas_b)
    return self.text(tokens_bt, mask_bt, positions_pbt, cache)


@flax.struct.dataclass
class Prompt:
  """A prompt batch after the host-side work of :func:`prepare_prompt` (device arrays)."""
  tokens: jax.Array  # [B, T] int32
  mask: jax.Array  # [B, T] bool
  positions: jax.Array  # [3, B, T] int32
  deltas: jax.Array  # [B] int32
  # [N, C*T*P*P] with the static grid, or an ImageBatch (padded rows, grid None), or None.
  pixel_values: Any
  grid: Grid | None = flax.struct.field(pytree_node=False, default=None)


def prepare_prompt(config: QwenVLConfig, tokens_bt: Any, mask_bt: Any = None,
                   pixel_values: Any = None, grid_thw=None) -> Prompt:
  """Checks a prompt batch and computes its M-RoPE positions and deltas on the host."""
  tokens = np.asarray(tokens_bt)
  if tokens.ndim != 2:
    raise ValueError(f"QwenVL: tokens must be [B, T], got shape {list(tokens.shape)}")
  mask = np.ones(tokens.shape, bool) if mask_bt is None else np.asarray(mask_bt).astype(bool)
  if isinstance(pixel_values, ImageBatch):
    if grid_thw is not None:
      raise ValueError("QwenVL: an ImageBatch carries its own grids; pass grid_thw=None")
  elif (pixel_values is None) != (grid_thw is None):
    raise ValueError("QwenVL: pass pixel_values and grid_thw together (or neither)")
  if isinstance(pixel_values, ImageBatch):
    check_image_rows(config, tokens, mask, pixel_values)
    positions, deltas = rope_index(config, tokens, mask, pixel_values.flat_grid())
    return Prompt(tokens=jnp.asarray(tokens, jnp.int32), mask=jnp.asarray(mask),
                  positions=jnp.asarray(positions), deltas=jnp.asarray(deltas),
                  pixel_values=jax.tree.map(jnp.asarray, pixel_values), grid=None)
  positions, deltas = rope_index(config, tokens, mask, grid_thw)
  return Prompt(tokens=jnp.asarray(tokens, jnp.int32), mask=jnp.asarray(mask),
                positions=jnp.asarray(positions), deltas=jnp.asarray(deltas),
                pixel_values=None if pixel_values is None else jnp.asarray(pixel_values),
                grid=None if grid_thw is None else as_grid(grid_thw))


def check_image_rows(config: QwenVLConfig, tokens: np.ndarray, mask: np.ndarray,
                     images: ImageBatch) -> None:
  """Raises ValueError unless row ``b`` of the prompts holds exactly as many real placeholder
  tokens as row ``b`` of ``images`` has merged patches (and the batch sizes agree)."""
  want = images.row_counts(config.vision)
  if len(want) != tokens.shape[0]:
    raise ValueError(f"the ImageBatch has {len(want)} rows but the prompts have "
                     f"{tokens.shape[0]}")
  got = ((tokens == config.image_token_id) & mask).sum(-1)
  for row, (g, w) in enumerate(zip(got, want)):
    if g != w:
      raise ValueError(f"row {row}: {int(g)} image placeholder tokens (id "
                       f"{config.image_token_id}) but its images give {int(w)} merged patches")


# -- compiled entry points: host work first, then one program per shapes and image grids -------


@functools.partial(jax.jit, static_argnums=0)
def _prompt_logits(graphdef, state, prompt: Prompt, cache):
  model = nnx.merge(graphdef, state)
  h, cache = model.prompt_hidden(prompt.tokens, prompt.mask, prompt.positions,
                                 prompt.pixel_values, prompt.grid, cache)
  return model.logits(h), cache


@functools.partial(jax.jit, static_argnums=(0, 3))
def _images(graphdef, state, pixel_values, grid):
  return nnx.merge(graphdef, state).image_embeds(pixel_values, grid)


@functools.partial(jax.jit, static_argnums=0, donate_argnames=("cache",))
def _step(graphdef, state, tokens_bt, mask_bt, cache, deltas_b):
  return nnx.merge(graphdef, state).step(tokens_bt, mask_bt, cache, deltas_b)


def forward(model: QwenVL, tokens_bt: Any, mask_bt: Any = None, pixel_values: Any = None,
            grid_thw=None) -> jax.Array:
  """Compiled cache-free forward: float32 logits ``[B, T, V]``, equal to ``model(...)``."""
  prompt = prepare_prompt(model.config, tokens_bt, mask_bt, pixel_values, grid_thw)
  graphdef, state = nnx.split(model)
  return _prompt_logits(graphdef, state, prompt, None)[0]


def prefill(model: QwenVL, tokens_bt: Any, mask_bt: Any, pixel_values: Any, grid_thw,
            cache: KVCache) -> tuple[jax.Array, KVCache, jax.Array]:
  """Compiled :meth:`QwenVL.prefill`: ``(logits_btv, cache, deltas_b)``."""
  prompt = prepare_prompt(model.config, tokens_bt, mask_bt, pixel_values, grid_thw)
  graphdef, state = nnx.split(model)
  logits, cache = _prompt_logits(graphdef, state, prompt, cache)
  return logits, cache, prompt.deltas


def decode_step(model: QwenVL, tokens_bt: jax.Array, mask_bt: jax.Array, cache: KVCache,
                deltas_b: jax.Array) -> tuple[jax.Array, KVCache]:
  """Compiled :meth:`QwenVL.step`; the passed cache is donated (use the returned one)."""
  graphdef, state = nnx.split(model)
  return _step(graphdef, state, jnp.asarray(tokens_bt), jnp.asarray(mask_bt, bool), cache,
               jnp.asarray(deltas_b))


def image_embeds(model: QwenVL, pixel_values: Any, grid_thw) -> jax.Array:
  """Compiled :meth:`QwenVL.image_embeds` (one program per image grids)."""
  graphdef, state = nnx.split(model)
  return _images(graphdef, state, jnp.asarray(pixel_values), as_grid(grid_thw))


def init_qwen_vl(config: QwenVLConfig, seed: int = 0) -> QwenVL:
  """A randomly initialised model: the constructor's rules (normal(0.02) weights, unit norm
  scales, zero biases), with all normal draws taken as one vector in one compiled program
  (on the default device) and cut into the weights.

  Building the model eagerly (or jitting its constructor) compiles a separate threefry draw per
  parameter, seconds of XLA compilation on CPU even for a tiny model; one draw compiles once.
  The values differ from ``QwenVL(config, rngs=nnx.Rngs(seed))``'s, with the same
  distribution.
  """
  from jaxlab.models.paths import path_str  # pylint: disable=g-import-not-at-top
  graphdef, abstract = nnx.split(abstract_qwen_vl(config))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  specs = []  # (kind, shape, dtype) per leaf
  for keypath, leaf in leaves:
    name = path_str(keypath).rsplit("/", 1)[-1]
    kind = "ones" if name == "scale" else "zeros" if "bias" in name else "normal"
    specs.append((kind, tuple(leaf.shape), jnp.dtype(leaf.dtype)))
  total = sum(int(np.prod(shape)) for kind, shape, _ in specs if kind == "normal")

  @jax.jit
  def build(key):
    flat = _INIT_STD * jax.random.normal(key, (total,), jnp.float32)
    out, offset = [], 0
    for kind, shape, dtype in specs:
      if kind == "normal":
        n = int(np.prod(shape))
        out.append(flat[offset:offset + n].reshape(shape).astype(dtype))
        offset += n
      else:
        out.append((jnp.ones if kind == "ones" else jnp.zeros)(shape, dtype))
    return out

  return nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, build(jax.random.key(seed))))


_INIT_STD = 0.02  # the constructor's (transformers' initializer_range)


def abstract_qwen_vl(config: QwenVLConfig) -> QwenVL:
  """The model's structure with ``ShapeDtypeStruct`` leaves: nothing is allocated."""
  return nnx.eval_shape(lambda: QwenVL(config, rngs=nnx.Rngs(0)))
