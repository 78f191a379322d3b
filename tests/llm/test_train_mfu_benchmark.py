"""benchmarks/llm_train_mfu.py runs end to end on CPU with tiny models (the decoder and a
Qwen2.5-VL-shaped VLM) and reports their MFU; the VLM's model FLOP count equals a hand count."""

import os
import re
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlab.llm import train
from jaxlab.models.qwen_vl.config import VisionConfig
from jaxlab.models.qwen_vl.vision import VisionTower, attention_segments

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "-m", "benchmarks.llm_train_mfu", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def _check_mfu_lines(out):
  """The last line is mfu=, equal to model FLOPs / time / 1 TFLOP/s; returns model FLOPs."""
  mfu = float(re.fullmatch(r"mfu=([0-9.]+)", out.strip().splitlines()[-1]).group(1))
  assert 0 < mfu < 1
  step = re.search(r"step_time=([0-9.]+)ms .* model_flops/step=([0-9.e+]+) achieved=([0-9.]+)",
                   out)
  step_s, flops = float(step.group(1)) / 1e3, float(step.group(2))
  # MFU is model FLOPs / time / peak (1 TFLOP/s here, one device).
  assert abs(flops / step_s / 1e12 - mfu) <= 1e-3 + 0.01 * mfu
  # The model FLOP count agrees with XLA's own count of the compiled step to within the
  # non-matmul work XLA adds (softmax, norms, the optimizer) and its full (non-causal) scores.
  ratio = float(re.search(r"model/xla per device=([0-9.]+)", out).group(1))
  assert 0.5 < ratio < 1.2
  return flops


def test_mfu_benchmark_runs_on_cpu_with_a_tiny_config():
  _check_mfu_lines(_run("--preset=tiny", "--steps=2", "--warmup=1", "--batch_size=4",
                        "--peak_tflops=1"))


# The tiny_vl preset's tower: windows of 2 x 2 merged tokens (C = 16 patches), block 1 full.
_TINY_VISION = VisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                            window_size=56, fullatt_block_indexes=(1,), out_hidden_size=64)


def test_vision_flops_equal_a_hand_count():
  # A 112x140 image: 8 x 10 patches (N = 80), 4 x 5 merged tokens, windows of 2 x 2 merged
  # tokens cut from the top left: four of 16 patches, two of 8 at the right edge.
  n, d, f, p, dout = 80, 32, 64, 3 * 2 * 14 * 14, 64
  embed = 2 * n * p * d
  blocks = 2 * (2 * n * (4 * d * d + 3 * d * f))
  merger = 2 * (n // 4) * (4 * d) ** 2 + 2 * (n // 4) * (4 * d) * dout
  full_pairs, window_pairs = n * n, 4 * 16 ** 2 + 2 * 8 ** 2
  attn = 4 * d * (full_pairs + window_pairs)
  grid = [(1, 8, 10)]
  assert train.vision_flops(_TINY_VISION, grid, train=False) == embed + blocks + merger + attn
  assert train.vision_flops(_TINY_VISION, grid) == 2 * embed + 3 * (blocks + merger + attn)
  # The window sizes are the model's own: its window segments of the same image.
  _, window_seg = attention_segments(_TINY_VISION, ((1, 8, 10),))
  assert int((np.bincount(window_seg) ** 2).sum()) == window_pairs
  # Images add up; a 2-frame grid is two frames attending within themselves.
  two = [(1, 8, 10), (2, 4, 4)]
  assert train.vision_flops(_TINY_VISION, two) == (train.vision_flops(_TINY_VISION, grid)
                                                   + 2 * train.vision_flops(_TINY_VISION,
                                                                            [(1, 4, 4)]))
  text = types.SimpleNamespace(hidden_size=64, head_dim=16, num_heads=4, num_kv_heads=2,
                               intermediate_size=192, num_layers=2, vocab_size=260)
  row = train.vlm_train_flops(types.SimpleNamespace(text=text, vision=_TINY_VISION), 128, grid)
  assert row == (128 * train.train_flops_per_token(text, 128),
                 train.vision_flops(_TINY_VISION, grid))


def test_vision_flops_against_xla_cost_analysis():
  """XLA's count of the compiled forward (chunked windows: N x 3C scores) is the model count
  plus what the model count leaves out (norms, RoPE, softmax, activations, padded scores)."""
  tower = nnx.eval_shape(lambda: VisionTower(_TINY_VISION, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(tower)
  grid = ((1, 8, 10),)
  fn = jax.jit(lambda s, px: nnx.merge(graphdef, s)(px, grid))
  pixels = jax.ShapeDtypeStruct((80, _TINY_VISION.patch_dim), jnp.float32)
  cost = fn.lower(state, pixels).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  if not cost or not cost.get("flops"):
    return  # this backend reports no costs
  ratio = train.vision_flops(_TINY_VISION, grid, train=False) / float(cost["flops"])
  print(f"vision forward model/xla = {ratio:.3f}")
  assert 0.8 < ratio <= 1.0


def test_mfu_benchmark_runs_on_cpu_with_a_tiny_vlm():
  out = _run("--preset=tiny_vl", "--steps=1", "--warmup=1", "--batch_size=4", "--peak_tflops=1")
  flops = _check_mfu_lines(out)
  line = re.search(r"image=112x140 grid=\[1, 8, 10\] images/row=1 image_tokens/row=20 "
                   r"patches/row=80 vision_params=[0-9.]+M vision_flops_share=([0-9.]+)", out)
  assert line, out
  # 4 rows of 128 tokens (20 of them image placeholders) and one 8 x 10-patch image each.
  text = types.SimpleNamespace(hidden_size=64, head_dim=16, num_heads=4, num_kv_heads=2,
                               intermediate_size=192, num_layers=2, vocab_size=260)
  text_row = 128 * train.train_flops_per_token(text, 128)
  vision_row = train.vision_flops(_TINY_VISION, [(1, 8, 10)])
  assert abs(flops - 4 * (text_row + vision_row)) <= 1e-3 * flops
  assert abs(float(line.group(1)) - vision_row / (text_row + vision_row)) < 1e-3
