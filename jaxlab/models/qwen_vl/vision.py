"""The Qwen2.5-VL vision tower in Flax NNX: patches in, one LM-width vector per 2x2 patches out.

Pipeline (``N`` patches of all images together, ``Dv`` the tower's width):

1. Patch embedding: each row of ``pixel_values`` is one patch flattened in (channel, frame,
   row, column) order, so the reference's Conv3d with kernel = stride = the patch is a plain
   linear map ``[C*T*P*P] -> [Dv]`` (its kernel reshaped).
2. Window order: the image processor lists patches merge-block by merge-block (the ``M x M``
   patches that become one LM token are consecutive). The tower regroups these blocks window
   by window (square windows of ``window_size`` pixels, cut from the top-left, ragged at the
   right and bottom edges), runs every block in that order, and restores the processor's order
   after the merger (:func:`window_order`).
3. 2-D RoPE: head channel pair ``j`` of the first half of the rotary half turns with the
   patch's row, the second half with its column (frequencies over ``head_dim / 4``).
4. Blocks: pre-norm RMSNorm, attention (the decoder's :class:`Attention` with q/k/v and output
   biases, no causal mask), pre-norm SwiGLU MLP with biases. Blocks listed in
   ``fullatt_block_indexes`` attend within each image (each frame), the others within each
   window; both restrictions come from segment ids (the reference packs the same segments
   with ``cu_seqlens``). Full attention with static grids is one dense attention per image
   (frame) span (:func:`span_attention`, cost ``sum n_i^2``); in a padded batch it is a
   block-diagonal boolean mask ``[Np, Np]`` per row.
   Windowed attention is local: a window is a contiguous run of at most ``C`` patches in
   window order, so queries in chunk ``k`` of ``C`` patches meet their window's keys inside
   chunks ``k-1, k, k+1``; scoring those ``3C`` keys under the same segment test is exactly
   the masked dense attention at cost ``N x 3C`` (:func:`window_attention`).
5. Merger: RMSNorm, then concatenate each ``M x M`` block and map it through
   ``Linear -> GELU -> Linear`` to the LM width.

The grid of each image (``grid_thw``: frames, patch rows, patch columns) decides every index
above, so it is static: Python ints, computed on the host with numpy; ``pixel_values`` may be
traced.

Static grids compile one program per set of image sizes. Training and evaluation, whose
batches mix image sizes, use the padded form instead (:class:`ImageBatch`,
:func:`pack_images`, :meth:`VisionTower.padded`): the same indices computed on the host per
batch row and passed as *data*, every row's patches padded to one budget ``max_patches``, so
one program serves every batch. Padding patches sit after the real ones, attend only among
themselves and are never spliced into the text. Each row's images form one attention problem
of ``max_patches`` patches (rather than all patches of the batch in one sequence), so the
tower's activations split over the batch like the text model's. The trade-off against
bucketing batches by image size: no recompiles and no change to which rows meet in a batch
(the batch of a step stays a pure function of the seed and the step), at the price of
computing ``max_patches`` patches per row whatever its images need.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab.models.decoder.config import DecoderConfig
from jaxlab.models.decoder.modeling import MLP, Attention, RMSNorm, _normal, dense
from jaxlab.models.qwen_vl.config import VISION_NORM_EPS, VisionConfig

Grid = tuple[tuple[int, int, int], ...]


def as_grid(grid_thw: Sequence[Sequence[int]] | np.ndarray) -> Grid:
  """``grid_thw`` ``[num_images, 3]`` (array or nested lists) as a hashable tuple of ints."""
  arr = np.asarray(grid_thw)
  if arr.ndim != 2 or arr.shape[1] != 3:
    raise ValueError(f"grid_thw must be [num_images, 3] (frames, rows, columns), got shape "
                     f"{list(arr.shape)}")
  return tuple(tuple(int(x) for x in row) for row in arr)


def _check_grid(config: VisionConfig, grid: Grid) -> None:
  m = config.spatial_merge_size
  for i, (t, h, w) in enumerate(grid):
    if t < 1 or h < m or w < m or h % m or w % m:
      raise ValueError(f"grid_thw[{i}] = {[t, h, w]}: rows and columns must be positive "
                       f"multiples of spatial_merge_size={m}")


def merged_counts(config: VisionConfig, grid: Grid) -> list[int]:
  """LM tokens each image becomes: ``t * h * w / M^2``."""
  return [t * h * w // config.merge_unit for t, h, w in grid]


@functools.lru_cache(maxsize=32)
def patch_positions(config: VisionConfig, grid: Grid) -> np.ndarray:
  """``[N, 2]`` (row, column) of every patch, in the processor's merge-block order."""
  m = config.spatial_merge_size
  out = []
  for t, h, w in grid:
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    # [h/M, M, w/M, M] -> blocks in raster order, patches in raster order inside a block.
    blocks = lambda a: a.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).reshape(-1)
    out.append(np.tile(np.stack([blocks(rows), blocks(cols)], -1), (t, 1)))
  return np.concatenate(out).astype(np.int32)


@functools.lru_cache(maxsize=32)
def window_order(config: VisionConfig, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
  """``(order, window_id)`` over merged tokens (merge blocks).

  ``order[k]`` is the processor-order index of the block that comes k-th in window order:
  images in turn, frames in turn, windows in raster order, blocks in raster order inside a
  window. ``window_id[k]`` numbers the window the k-th block (window order) belongs to; windows
  of different images and frames never share a number. ``np.argsort(order)`` undoes it.
  """
  u = config.window_units
  order, wid = [], []
  start = next_window = 0
  for t, h, w in grid:
    gh, gw = h // config.spatial_merge_size, w // config.spatial_merge_size
    nwh, nww = -(-gh // u), -(-gw // u)
    idx = np.arange(t * gh * gw).reshape(t, gh, gw)
    f, r, c = np.meshgrid(np.arange(t), np.arange(gh), np.arange(gw), indexing="ij")
    window = (f * nwh + r // u) * nww + c // u
    # Sort key: window first, then the raster position inside it (row then column).
    key = np.lexsort(((c % u).ravel(), (r % u).ravel(), window.ravel()))
    order.append(idx.ravel()[key] + start)
    wid.append(window.ravel()[key] + next_window)
    start += t * gh * gw
    next_window += t * nwh * nww
  return np.concatenate(order), np.concatenate(wid)


@functools.lru_cache(maxsize=32)
def attention_segments(config: VisionConfig, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
  """``(image_segment, window_segment)``, ``[N]`` int each, per patch in window order.

  Patches may attend to each other in a full-attention block when their image segment (image
  and frame) is equal, in a windowed block when their window segment is equal.
  """
  order, wid = window_order(config, grid)
  frame = np.concatenate([np.repeat(np.arange(t), h * w // config.merge_unit)
                          for t, h, w in grid])
  image = np.concatenate([np.full(t * h * w // config.merge_unit, i)
                          for i, (t, h, w) in enumerate(grid)])
  # A distinct id per (image, frame), per merged token in processor order, then reordered.
  frame_id = (image * (1 + max(t for t, _, _ in grid)) + frame)[order]
  unit = config.merge_unit
  return np.repeat(frame_id, unit), np.repeat(wid, unit)


@flax.struct.dataclass
class ImageBatch:
  """The images of a batch of ``B`` rows, each row's patches padded to ``Np`` (layout as data).

  Every index the static path derives from ``grid_thw`` (:func:`window_order`,
  :func:`patch_positions`, :func:`attention_segments`) is computed per row on the host by
  :func:`pack_images` and carried here as arrays, so a compiled program depends only on
  ``(B, Np, K)``. Shapes (``U = M * M`` patches per merged token, ``K`` images per row at most):

  Attributes:
    pixel_values: ``[B, Np, C*T*P*P]`` float; row ``b``'s images' patches in the processor's
      order, then zeros.
    grid: ``[B, K, 3]`` int32, row ``b``'s image grids in order, then zero rows; read on the
      host (M-RoPE positions), unused by the compiled tower.
    order: ``[B, Np]`` int32, the row slot of the patch that comes k-th in window order
      (padding last, in place).
    positions: ``[B, Np, 2]`` int32 (patch row, patch column) in window order; 0 for padding.
    image_seg: ``[B, Np]`` int32 (image, frame) segment in window order; -1 for padding.
    window_seg: ``[B, Np]`` int32 window segment in window order; -1 for padding.
    restore: ``[B, Np / U]`` int32, for each merged token in the processor's order its index
      in window order (the inverse of ``order`` over merged tokens).
  """
  pixel_values: Any
  grid: Any
  order: Any
  positions: Any
  image_seg: Any
  window_seg: Any
  restore: Any

  @property
  def max_patches(self) -> int:
    return self.pixel_values.shape[1]

  def flat_grid(self) -> np.ndarray:
    """``[num_images, 3]`` grids of all rows in order (host numpy), as the static path lists
    them."""
    g = np.asarray(self.grid).reshape(-1, 3)
    return g[g[:, 0] > 0].astype(np.int64)

  def row_counts(self, config: VisionConfig) -> np.ndarray:
    """``[B]`` merged tokens (image placeholders) each row's images give."""
    g = np.asarray(self.grid).astype(np.int64)
    return (g.prod(-1) // config.merge_unit).sum(-1)

  def rows(self, index: Any) -> "ImageBatch":
    """The rows ``index`` (numpy fancy index) of every field."""
    return jax.tree.map(lambda x: np.asarray(x)[index], self)


def pack_images(config: VisionConfig, pixel_values: np.ndarray | None,
                grid_thw: Sequence[Sequence[int]] | np.ndarray | None,
                images_per_row: Sequence[int], max_patches: int, max_images: int = 0
                ) -> ImageBatch:
  """Lays out the images of ``B`` rows for :meth:`VisionTower.padded` (host side, numpy).

  Args:
    config: the tower's config.
    pixel_values: ``[N, C*T*P*P]`` patches of all images in row order (the processor's output
      for the rows' images in turn), or None when no row has an image.
    grid_thw: ``[num_images, 3]`` grids of those images.
    images_per_row: how many of the images belong to each row, in order.
    max_patches: ``Np``, the patch budget of a row (a multiple of ``M * M``).
    max_images: ``K``, image slots per row (default: the most any row has, at least 1).

  Raises:
    ValueError: a row's images need more than ``max_patches`` patches or it has more than
      ``max_images`` images (the row named), or the counts disagree with the arrays.
  """
  unit = config.merge_unit
  if max_patches < 0 or max_patches % unit:
    raise ValueError(f"max_patches={max_patches} must be a non-negative multiple of "
                     f"spatial_merge_size**2 = {unit}")
  grid = as_grid(np.zeros((0, 3), int) if grid_thw is None else grid_thw)
  _check_grid(config, grid)
  counts = [int(k) for k in images_per_row]
  if sum(counts) != len(grid):
    raise ValueError(f"images_per_row sums to {sum(counts)}, but {len(grid)} image grids "
                     "were given")
  sizes = [t * h * w for t, h, w in grid]
  n_total = sum(sizes)
  if n_total and (pixel_values is None or np.shape(pixel_values)[0] != n_total):
    raise ValueError(f"pixel_values has {0 if pixel_values is None else len(pixel_values)} "
                     f"rows, expected {n_total} for grid_thw {[list(g) for g in grid]}")
  b = len(counts)
  k = max_images or max(max(counts, default=0), 1)
  dim = config.patch_dim
  pix = np.zeros((b, max_patches, dim), np.float32)
  out_grid = np.zeros((b, k, 3), np.int32)
  order = np.tile(np.arange(max_patches, dtype=np.int32), (b, 1))
  positions = np.zeros((b, max_patches, 2), np.int32)
  image_seg = np.full((b, max_patches), -1, np.int32)
  window_seg = np.full((b, max_patches), -1, np.int32)
  restore = np.tile(np.arange(max_patches // unit, dtype=np.int32), (b, 1))
  image = patch = 0
  for r, count in enumerate(counts):
    row_grid = grid[image:image + count]
    n = sum(sizes[image:image + count])
    if count > k:
      raise ValueError(f"row {r}: {count} images, more than max_images={k}")
    if n > max_patches:
      raise ValueError(f"row {r}: its image(s) {[list(g) for g in row_grid]} need {n} "
                       f"patches, more than max_patches={max_patches}")
    if count:
      blocks, _ = window_order(config, row_grid)
      patch_order = (blocks[:, None] * unit + np.arange(unit)).reshape(-1)
      pix[r, :n] = np.asarray(pixel_values[patch:patch + n], np.float32)
      out_grid[r, :count] = row_grid
      order[r, :n] = patch_order
      positions[r, :n] = patch_positions(config, row_grid)[patch_order]
      image_seg[r, :n], window_seg[r, :n] = attention_segments(config, row_grid)
      restore[r, :n // unit] = np.argsort(blocks)
    image += count
    patch += n
  return ImageBatch(pixel_values=pix, grid=out_grid, order=order, positions=positions,
                    image_seg=image_seg, window_seg=window_seg, restore=restore)


def rope_inv_freq(config: VisionConfig) -> np.ndarray:
  """``[head_dim / 4]`` float32 inverse frequencies, shared by rows and columns."""
  quarter = config.head_dim // 2
  exps = np.arange(0, quarter, 2, dtype=np.int64).astype(np.float32) / np.float32(quarter)
  return (np.float32(1.0) / np.power(np.float32(config.rope_theta), exps)).astype(np.float32)


def rope_cos_sin(config: VisionConfig, positions_n2: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``cos, sin`` ``[N, head_dim / 2]``: row angles, then column angles (float32)."""
  inv = jnp.asarray(rope_inv_freq(config))
  angles = positions_n2.astype(jnp.float32)[:, :, None] * inv  # [N, 2, H/4]
  angles = angles.reshape(angles.shape[0], -1)
  return jnp.cos(angles), jnp.sin(angles)


def attention_config(config: VisionConfig, dtype: str = "float32",
                     param_dtype: str = "float32") -> DecoderConfig:
  """The decoder config whose :class:`Attention` / :class:`MLP` shapes are a vision block's:
  as many kv heads as heads, biases on q/k/v and the output."""
  return DecoderConfig(vocab_size=1, hidden_size=config.hidden_size,
                       intermediate_size=config.intermediate_size, num_layers=config.depth,
                       num_heads=config.num_heads, num_kv_heads=config.num_heads,
                       head_dim=config.head_dim, rms_norm_eps=VISION_NORM_EPS,
                       attention_bias=True, attention_out_bias=True,
                       architecture="Qwen2ForCausalLM", dtype=dtype, param_dtype=param_dtype)


class BiasedMLP(MLP):
  """The decoder's SwiGLU with a bias after each of its three projections."""

  def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
    super().__init__(config, rngs)
    pd = jnp.dtype(config.param_dtype)
    f, d = config.intermediate_size, config.hidden_size
    self.gate_bias_f = nnx.Param(jnp.zeros((f,), pd))
    self.up_bias_f = nnx.Param(jnp.zeros((f,), pd))
    self.down_bias_d = nnx.Param(jnp.zeros((d,), pd))

  def __call__(self, x_btd: jax.Array) -> jax.Array:
    dt = self.dtype
    x = x_btd.astype(dt)
    gate = dense(x, self.gate_df[...].astype(dt)) + self.gate_bias_f[...].astype(dt)
    up = dense(x, self.up_df[...].astype(dt)) + self.up_bias_f[...].astype(dt)
    return (dense(jax.nn.silu(gate) * up, self.down_fd[...].astype(dt))
            + self.down_bias_d[...].astype(dt))


# Segment id of the positions window_attention appends to reach a multiple of the chunk: no
# real patch (ids >= 0) nor ImageBatch padding (-1) carries it.
_CHUNK_PAD_SEGMENT = -2


def window_chunk(config: VisionConfig) -> int:
  """``C``, the most patches one window holds: ``(window_size / patch_size)^2``."""
  return config.window_units ** 2 * config.merge_unit


def window_attention(attn: Attention, x_btd: jax.Array, cos_bth: jax.Array,
                     sin_bth: jax.Array, segment_bt: jax.Array, chunk: int) -> jax.Array:
  """``attn`` (projected output ``[B, T, D]``) where query t sees key s iff their segments are
  equal, each segment being a contiguous run of at most ``chunk`` positions.

  Equal to :class:`Attention` under the dense mask ``segment[t] == segment[s]``, in memory and
  time linear in ``T``: positions are cut into chunks of ``chunk`` (``T`` padded up to a
  multiple, then cut back), and a query of chunk ``k`` scores only the ``3 * chunk`` keys of
  chunks ``k-1, k, k+1``, which hold its whole segment. Scores, mask floor and softmax are the
  dense path's (float32, masked entries at the float32 minimum, hence exactly zero weight).

  Args:
    attn: the block's attention (its projections, biases and config).
    x_btd: normalised input ``[B, T, D]``.
    cos_bth, sin_bth: RoPE tables ``[B, T, H/2]``.
    segment_bt: ``[B, T]`` int segment ids (-2 is reserved for the chunk padding).
    chunk: the longest segment's length, a static int.
  """
  c = attn.config
  dt = jnp.dtype(c.dtype)
  b, t = x_btd.shape[:2]
  groups = c.num_heads // c.num_kv_heads
  q, k, v = attn.qkv(x_btd, cos_bth, sin_bth)
  nc = -(-t // chunk)
  tp = nc * chunk

  def pad(a, before, after, value=0):
    return jnp.pad(a, [(0, 0), (before, after)] + [(0, 0)] * (a.ndim - 2),
                   constant_values=value)

  def neighbours(a, value=0):
    # [B, T, ...] -> [B, nc, 3 * chunk, ...]: chunks k-1, k, k+1 side by side (static slices).
    a = pad(a, chunk, tp - t + chunk, value)
    parts = [a[:, i * chunk:i * chunk + tp].reshape((b, nc, chunk) + a.shape[2:])
             for i in range(3)]
    return jnp.concatenate(parts, axis=2)

  q = pad(q, 0, tp - t).reshape(b, nc, chunk, c.num_kv_heads, groups, c.head_dim)
  seg = jnp.asarray(segment_bt, jnp.int32)
  seg_q = pad(seg, 0, tp - t, _CHUNK_PAD_SEGMENT).reshape(b, nc, chunk)
  seg_k = neighbours(seg, _CHUNK_PAD_SEGMENT)
  keys, values = neighbours(k), neighbours(v)
  scores = jnp.einsum("bcqkgh,bcskh->bckgqs", q, keys,
                      preferred_element_type=jnp.float32) / np.sqrt(c.head_dim)
  allowed = seg_q[:, :, :, None] == seg_k[:, :, None, :]  # [B, nc, chunk, 3 * chunk]
  scores = jnp.where(allowed[:, :, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum("bckgqs,bcskh->bcqkgh", probs.astype(dt), values)
  return attn.project(out.reshape(b, tp, c.num_heads, c.head_dim)[:, :t])


def span_attention(attn: Attention, x_btd: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array,
                   spans: Sequence[tuple[int, int]]) -> jax.Array:
  """``attn`` (projected output ``[B, T, D]``) where positions attend only within their span:
  ``spans`` are static ``(start, end)`` runs that tile ``[0, T)`` in order (an image's or a
  frame's patches). Equal to the block-diagonal dense mask at cost ``sum n_i^2`` instead of
  ``T^2``: each span is one dense attention call."""
  outs = []
  for start, end in spans:
    n = end - start
    out, _, _ = attn.heads(x_btd[:, start:end], cos_bth[:, start:end], sin_bth[:, start:end],
                           jnp.ones((x_btd.shape[0], n, n), bool), None, None, None)
    outs.append(out)
  return attn.project(jnp.concatenate(outs, axis=1) if len(outs) > 1 else outs[0])


def segment_spans(segment: np.ndarray) -> tuple[tuple[int, int], ...]:
  """The ``(start, end)`` runs of equal ids in a 1-D host array, in order."""
  seg = np.asarray(segment)
  cuts = [0] + [int(i) + 1 for i in np.nonzero(seg[1:] != seg[:-1])[0]] + [len(seg)]
  return tuple(zip(cuts[:-1], cuts[1:]))


class VisionBlock(nnx.Module):
  """``x + attn(norm1(x))`` under a dense mask or within windows, then ``x + mlp(norm2(x))``."""

  def __init__(self, config: DecoderConfig, rngs: nnx.Rngs, chunk: int):
    pd = jnp.dtype(config.param_dtype)
    self.norm1 = RMSNorm(config.hidden_size, VISION_NORM_EPS, pd)
    self.attn = Attention(config, rngs)
    self.norm2 = RMSNorm(config.hidden_size, VISION_NORM_EPS, pd)
    self.mlp = BiasedMLP(config, rngs)
    self.chunk = chunk  # C: patches per window at most (static)

  def __call__(self, x_btd, cos_bth, sin_bth, allowed_bts, window_seg_bt=None, spans=None):
    """One block. Attention runs under ``allowed_bts`` (``[B, T, T]`` bool) when it is given,
    within the static ``spans`` (:func:`span_attention`) when they are, else within the
    windows ``window_seg_bt`` (``[B, T]`` int, contiguous runs of at most ``chunk`` patches) by
    :func:`window_attention`."""
    y = self.norm1(x_btd)
    if spans is not None:
      h = span_attention(self.attn, y, cos_bth, sin_bth, spans)
    elif allowed_bts is not None:
      h, _, _ = self.attn(y, cos_bth, sin_bth, allowed_bts, None, None, None)
    else:
      h = window_attention(self.attn, y, cos_bth, sin_bth, window_seg_bt, self.chunk)
    x_btd = x_btd + h.astype(x_btd.dtype)
    return x_btd + self.mlp(self.norm2(x_btd)).astype(x_btd.dtype)


class Merger(nnx.Module):
  """RMSNorm per patch, then ``M*M`` patches concatenated -> Linear -> GELU -> Linear."""

  def __init__(self, config: VisionConfig, param_dtype, rngs: nnx.Rngs):
    pd = jnp.dtype(param_dtype)
    wide = config.hidden_size * config.merge_unit
    self.norm = RMSNorm(config.hidden_size, VISION_NORM_EPS, pd)
    self.fc1_ww = nnx.Param(_normal(rngs, (wide, wide), pd))
    self.fc1_bias_w = nnx.Param(jnp.zeros((wide,), pd))
    self.fc2_wd = nnx.Param(_normal(rngs, (wide, config.out_hidden_size), pd))
    self.fc2_bias_d = nnx.Param(jnp.zeros((config.out_hidden_size,), pd))
    self.wide = wide

  def __call__(self, x_nd: jax.Array, dtype) -> jax.Array:
    dt = jnp.dtype(dtype)
    x = self.norm(x_nd).astype(dt).reshape(-1, self.wide)
    x = jax.nn.gelu(x @ self.fc1_ww[...].astype(dt) + self.fc1_bias_w[...].astype(dt),
                    approximate=False)
    return x @ self.fc2_wd[...].astype(dt) + self.fc2_bias_d[...].astype(dt)


class VisionTower(nnx.Module):
  """Patch embedding, ``depth`` vision blocks (windowed or full attention), the merger."""

  def __init__(self, config: VisionConfig, *, dtype: str = "float32",
               param_dtype: str = "float32", remat: bool = False, rngs: nnx.Rngs):
    self.config = config
    self.dtype = dtype
    self.remat = remat  # recompute each block's activations in the backward pass
    pd = jnp.dtype(param_dtype)
    block_cfg = attention_config(config, dtype, param_dtype)
    self.patch_embed_pd = nnx.Param(_normal(rngs, (config.patch_dim, config.hidden_size), pd))
    self.blocks = nnx.List([VisionBlock(block_cfg, rngs, window_chunk(config))
                            for _ in range(config.depth)])
    self.merger = Merger(config, param_dtype, rngs)

  def __call__(self, pixel_values: jax.Array, grid_thw, *, dense_windows: bool = False
               ) -> jax.Array:
    """Merged image embeddings ``[sum_i t_i h_i w_i / M^2, out_hidden_size]`` (compute dtype).

    Args:
      pixel_values: ``[N, C*T*P*P]`` patches of every image, in the image processor's order.
      grid_thw: ``[num_images, 3]`` (frames, patch rows, patch columns), concrete ints.
      dense_windows: run the windowed blocks under the dense ``[N, N]`` mask even where the
        chunked form is cheaper (same result; the reference of tests and measurements).
    """
    c = self.config
    grid = as_grid(grid_thw)
    _check_grid(c, grid)
    n = sum(t * h * w for t, h, w in grid)
    if pixel_values.shape != (n, c.patch_dim):
      raise ValueError(f"pixel_values has shape {list(pixel_values.shape)}, expected "
                       f"[{n}, {c.patch_dim}] for grid_thw {[list(g) for g in grid]}")
    dt = jnp.dtype(self.dtype)
    x = pixel_values.astype(dt) @ self.patch_embed_pd[...].astype(dt)
    order, _ = window_order(c, grid)
    unit = c.merge_unit
    # Patch order: the blocks of `order`, each block's M*M patches kept together.
    patch_order = (order[:, None] * unit + np.arange(unit)).reshape(-1)
    x = x[patch_order]
    cos, sin = rope_cos_sin(c, jnp.asarray(patch_positions(c, grid)[patch_order]))
    image_seg, window_seg = attention_segments(c, grid)
    # Full attention image by image (frame by frame): the segments are contiguous here.
    x = self._blocks(x[None], cos[None], sin[None], None, jnp.asarray(window_seg)[None],
                     dense_windows, spans=segment_spans(image_seg))
    merged = self.merger(x[0], self.dtype)
    return merged[np.argsort(order)]

  def _blocks(self, x, cos, sin, image_seg, window_seg, dense_windows, spans=None):
    """The vision blocks in turn: full attention at ``fullatt_block_indexes`` within the
    static ``spans`` if given (static grids), else within the segments ``image_seg`` ``[B, N]``
    under a dense mask; the others within the windows ``window_seg``."""
    n = x.shape[1]
    full = (image_seg[:, :, None] == image_seg[:, None, :]
            if self.config.fullatt_block_indexes and spans is None else None)
    # Chunked windows score N x 3C entries, the dense mask N x N: below N = 3C the dense mask
    # is the cheaper (and equal) form.
    if dense_windows or n <= 3 * window_chunk(self.config):
      windowed = (window_seg[:, :, None] == window_seg[:, None, :], None)
    else:
      windowed = (None, window_seg)
    wrap = nnx.remat if self.remat else (lambda f: f)
    call = wrap(VisionBlock.__call__)
    call_full = call
    if spans is not None:
      def within_spans(block, x, cos, sin, allowed, window_seg):
        # The spans are Python ints, closed over (a remat argument would be traced).
        return VisionBlock.__call__(block, x, cos, sin, allowed, window_seg, spans)
      call_full = wrap(within_spans)
    for i, block in enumerate(self.blocks):
      if i in self.config.fullatt_block_indexes:
        x = call_full(block, x, cos, sin, full, None)
      else:
        x = call(block, x, cos, sin, *windowed)
    return x

  def padded(self, images: ImageBatch, *, dense_windows: bool = False) -> jax.Array:
    """Merged embeddings ``[B, Np / M^2, out_hidden_size]`` (compute dtype) of a padded batch.

    Row ``b``'s first ``row_counts[b]`` outputs are its images' merged tokens in the
    processor's order (what :meth:`__call__` gives for those images); the rest are padding.
    Traceable: every index is data (:class:`ImageBatch`). ``dense_windows`` as in
    :meth:`__call__`.
    """
    c = self.config
    pixels = jnp.asarray(images.pixel_values)
    b, n, dim = pixels.shape
    if dim != c.patch_dim or n % c.merge_unit:
      raise ValueError(f"ImageBatch.pixel_values has shape {list(pixels.shape)}; expected "
                       f"[B, Np, {c.patch_dim}] with Np a multiple of {c.merge_unit}")
    dt = jnp.dtype(self.dtype)
    x = dense(pixels.astype(dt), self.patch_embed_pd[...].astype(dt))
    x = jnp.take_along_axis(x, jnp.asarray(images.order)[..., None], axis=1)
    cos, sin = rope_cos_sin(c, jnp.asarray(images.positions).reshape(b * n, 2))
    cos, sin = cos.reshape(b, n, -1), sin.reshape(b, n, -1)
    image_seg, window_seg = jnp.asarray(images.image_seg), jnp.asarray(images.window_seg)
    x = self._blocks(x, cos, sin, image_seg, window_seg, dense_windows)
    merged = self.merger(x.reshape(b * n, -1), self.dtype).reshape(b, n // c.merge_unit, -1)
    return jnp.take_along_axis(merged, jnp.asarray(images.restore)[..., None], axis=1)
