"""Windowed vision blocks in linear memory: chunked local attention equals the dense mask.

The tower's windowed blocks score each query against the ``3C`` keys of its chunk and the two
beside it (``C`` patches per window at most) once ``N > 3C``; these tests check, on a tower
whose windows (2x2 merged patches, ``C = 16``) are much smaller than its ragged images, that

* the merged embeddings equal the dense ``[N, N]`` mask's (``dense_windows=True``) within
  1e-5, through static grids and through a padded batch (rows with two images, a video-like
  two-frame image, no image; ``Np`` not a multiple of ``C``), and the two paths agree; the
  chunked program is the one run (its jaxpr has ``[.., C, 3C]`` scores, the dense one none);
* the windowed block's jaxpr holds no ``N x N`` array: its largest intermediate is the
  ``B * heads * N' * 3C`` score array (``N'``: ``N`` rounded up to ``C``), the dense form's
  ``B * heads * N * N``;
* below ``N = 3C`` the dense form is kept.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.extend import core as jax_core

from jaxlab.models.qwen_vl import vision
from jaxlab.models.qwen_vl.config import VisionConfig

# Window 56 px = 2x2 merged patches = 16 patches; images of odd merged sizes have ragged
# windows at their right and bottom edges.
CONFIG = VisionConfig(depth=2, hidden_size=16, intermediate_size=24, num_heads=2,
                      window_size=56, fullatt_block_indexes=(1,), out_hidden_size=8)
GRIDS = [[(1, 10, 14), (1, 4, 4)], [(2, 6, 6)], [(1, 6, 10)], []]
MAX_PATCHES = 164  # a multiple of M^2 = 4, not of C = 16


@pytest.fixture(scope="module")
def tower():
  """The tower (remat on) with every parameter, norms and biases included, drawn from
  N(0, 0.5^2) on the host (no per-shape compiles of an on-device init)."""
  abstract = nnx.eval_shape(lambda: vision.VisionTower(CONFIG, remat=True, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(0)
  state = jax.tree.map(lambda a: jnp.asarray(0.5 * rng.normal(size=a.shape), a.dtype), state)
  return nnx.merge(graphdef, state)


def _images(seed=0):
  flat = np.array([g for row in GRIDS for g in row])
  pixels = np.random.default_rng(seed).normal(
      size=(int(flat.prod(-1).sum()), CONFIG.patch_dim)).astype(np.float32)
  return pixels, flat


def _shapes(tower, fn, *args):
  """Shapes of every intermediate of ``fn(tower, *args)``'s jaxpr (sub-jaxprs included)."""
  shapes = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      shapes.extend(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
      for p in eqn.params.values():
        for sub in p if isinstance(p, (tuple, list)) else (p,):
          if isinstance(sub, jax_core.ClosedJaxpr):
            walk(sub.jaxpr)
          elif isinstance(sub, jax_core.Jaxpr):
            walk(sub)

  graphdef, state = nnx.split(tower)
  walk(jax.make_jaxpr(lambda st, *a: fn(nnx.merge(graphdef, st), *a))(state, *args).jaxpr)
  return shapes


def _jit(tower, fn):
  """``fn(tower, *args)`` compiled, the tower's state passed as data."""
  graphdef, state = nnx.split(tower)
  run = jax.jit(lambda st, *args: fn(nnx.merge(graphdef, st), *args))
  return lambda *args: np.asarray(run(state, *args))


def test_chunked_windows_equal_the_dense_mask_with_static_grids(tower):
  pixels, flat = _images()
  c = vision.window_chunk(CONFIG)
  assert c == 16 and len(pixels) > 3 * c
  # The windowed block runs chunked (scores [.., C, 3C]) unless told otherwise.
  for dense in (False, True):
    shapes = _shapes(tower, lambda t, p: t(p, flat, dense_windows=dense), pixels)
    assert ((c, 3 * c) in {s[-2:] for s in shapes}) != dense
  static = _jit(tower, lambda t, p: t(p, flat))(pixels)
  dense = _jit(tower, lambda t, p: t(p, flat, dense_windows=True))(pixels)
  np.testing.assert_allclose(static, dense, atol=1e-5, rtol=0)


def test_chunked_windows_equal_the_dense_mask_and_static_path_in_a_padded_batch(tower):
  pixels, flat = _images()
  images = vision.pack_images(CONFIG, pixels, flat, [len(g) for g in GRIDS], MAX_PATCHES)
  padded = _jit(tower, lambda t, im: t.padded(im))(images)
  dense = _jit(tower, lambda t, im: t.padded(im, dense_windows=True))(images)
  assert np.isfinite(padded).all()
  rows = []
  for b, n in enumerate(images.row_counts(CONFIG)):
    np.testing.assert_allclose(padded[b, :n], dense[b, :n], atol=1e-5, rtol=0)
    rows.append(padded[b, :n])
  # Row by row, the padded batch gives the static path's tokens in the same order (the
  # static path is checked against the dense mask above).
  static = _jit(tower, lambda t, p: t(p, flat))(pixels)
  np.testing.assert_allclose(np.concatenate(rows), static, atol=1e-5, rtol=0)


def test_windowed_block_holds_no_n_by_n_array(tower):
  """Block 0 (windowed) on a padded batch: its largest intermediate is the chunked scores,
  ``B * heads * Np' * 3C`` (``Np'`` = 176, ``Np`` rounded up to ``C``), against
  ``B * heads * Np * Np`` under the dense mask."""
  pixels, flat = _images()
  images = vision.pack_images(CONFIG, pixels, flat, [len(g) for g in GRIDS], MAX_PATCHES)
  b, n, c, heads = len(GRIDS), MAX_PATCHES, vision.window_chunk(CONFIG), CONFIG.num_heads
  x = jnp.zeros((b, n, CONFIG.hidden_size))
  cos, sin = vision.rope_cos_sin(CONFIG, jnp.asarray(images.positions).reshape(-1, 2))
  cos, sin = cos.reshape(b, n, -1), sin.reshape(b, n, -1)
  seg = jnp.asarray(images.window_seg)
  run = lambda t, *args: t.blocks[0](x, cos, sin, *args)
  chunked = max(map(np.prod, _shapes(tower, run, None, seg)))
  padded_n = -(-n // c) * c
  assert chunked == b * heads * padded_n * 3 * c < b * heads * n * n
  mask = seg[:, :, None] == seg[:, None, :]
  dense = max(map(np.prod, _shapes(tower, run, mask)))
  assert dense == b * heads * n * n


def test_small_images_keep_the_dense_mask(tower):
  """N <= 3C: the windowed blocks get the dense mask (no chunk padding in the program)."""
  pixels = np.ones((48, CONFIG.patch_dim), np.float32)
  grid = np.array([[1, 6, 8]])
  shapes = _shapes(tower, lambda t, p: t(p, grid), pixels)
  assert (16, 48) not in {s[-2:] for s in shapes}
  assert max(map(np.prod, shapes)) == CONFIG.num_heads * 48 * 48
  np.testing.assert_array_equal(_jit(tower, lambda t, p: t(p, grid))(pixels),
                                _jit(tower, lambda t, p: t(p, grid, dense_windows=True))(pixels))
