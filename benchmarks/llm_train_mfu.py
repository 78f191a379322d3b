r"""Training throughput and model FLOPs utilisation (MFU) of the SFT step.

Times :func:`jaxlab.llm.train.make_train_step` (float32 masters, AdamW, gradient accumulation,
sharding rules over the mesh) on random tokens, the same compiled step ``launch.train`` runs,
and reports

    MFU = model FLOPs per step / step time / (peak FLOP/s per device * devices)

Decoder presets (``1b``, ``tiny``): model FLOPs per token = ``6 N`` (N: weights of the
attention/MLP projections and the output head; the embedding lookup is free) ``+ 6 L T n_heads
head_dim`` (QK^T and PV, halved for causality, forward + backward)
(:func:`~jaxlab.llm.train.train_flops_per_token`).

Vision-language presets (``qwen25vl_3b``: the published Qwen2.5-VL-3B shape, 3.75B parameters;
``tiny_vl``): each row is ``--seq_len`` tokens with ``--images_per_row`` images of
``--image_size`` spliced in (``<|vision_start|>``, one ``<|image_pad|>`` per merged patch,
``<|vision_end|>``) after a few text tokens, random text around them, random pixels. The image
size goes through the image processor's resize rule (multiples of 28, ``--max_pixels``), the
images are laid out by :func:`~jaxlab.models.qwen_vl.vision.pack_images` and the M-RoPE
positions computed as SFT computes them, and the loss is
:func:`~jaxlab.llm.train.vlm_loss`, with the sharding rules of
:mod:`jaxlab.models.qwen_vl.sharding`: the program ``launch.train`` compiles for a
``model.family = "qwen_vl"`` config. Model FLOPs per row
(:func:`~jaxlab.llm.train.vlm_train_flops`) = the text part above over all ``T`` tokens (image
placeholders included) + the vision tower per image, forward:

    2 N P D                                (patch embedding; counted x2 in training: the
                                            pixels need no gradient)
  + depth * 2 N (4 D^2 + 3 D F)            (q/k/v/o and SwiGLU matmuls of every block)
  + 4 D * (n_full t (h w)^2 + n_window t sum_w n_w^2)   (QK^T and PV: full-attention blocks
                                            over the image's N = t h w patches, windowed
                                            blocks over each TRUE window's n_w patches)
  + 2 (N/U) (U D)^2 + 2 (N/U) (U D) D_out   (the merger)

times 3 for training (forward + backward), with D, F the tower's widths, P = 3 * 2 * 14^2 the
flattened patch, U = 4 patches per merged token, D_out the LM width. The chunked kernel of the
windowed blocks computes N x 3C scores (C = patches per full window); those extra hardware
FLOPs are not model FLOPs and are not counted. Rematerialisation's extra forward is *not*
counted (that would be hardware FLOPs utilisation). XLA's own FLOP count of the compiled step
is printed beside it when the backend reports one (and ``grad_accum`` is 1: XLA counts a loop
body once).

  # ~1.2B parameters (Llama-3.2-1B shape), bf16, on one H100/H200:
  python -m benchmarks.llm_train_mfu --preset=1b --batch_size=8 --seq_len=2048 --remat
  # a bigger batch in the same memory: --batch_size=32 --grad_accum=4; FSDP over 8 GPUs:
  python -m benchmarks.llm_train_mfu --preset=1b --batch_size=64 --fsdp=8 --layout=fsdp --remat
  # Qwen2.5-VL-3B shape, one 812x1288 screenshot (1,334 image tokens) per 2048-token row,
  # bf16, remat, on one H200 (batch 8, then 16), and FSDP over 8 GPUs:
  python -m benchmarks.llm_train_mfu --preset=qwen25vl_3b --batch_size=8 --seq_len=2048 --remat
  python -m benchmarks.llm_train_mfu --preset=qwen25vl_3b --batch_size=16 --seq_len=2048 --remat
  python -m benchmarks.llm_train_mfu --preset=qwen25vl_3b --batch_size=16 --grad_accum=2 \
      --seq_len=2048 --remat    # if batch 16 does not fit at once
  python -m benchmarks.llm_train_mfu --preset=qwen25vl_3b --batch_size=64 --seq_len=2048 \
      --remat --fsdp=8 --layout=fsdp
  # CPU smoke runs (what the test does):
  python -m benchmarks.llm_train_mfu --preset=tiny --steps=2 --peak_tflops=1
  python -m benchmarks.llm_train_mfu --preset=tiny_vl --steps=1 --warmup=1 --peak_tflops=1

``--peak_tflops`` is the dense peak per device for the compute dtype; by default it is looked
up from the device kind (bf16 dense: H100/H200 989, A100 312, TPU v4 275, v5e 197, v5p 459).
A VLM run adds a line with the image, its grid, ``image_tokens/row`` and the vision tower's
share of the model FLOPs. The last line is ``mfu=<fraction>``.
"""

from __future__ import annotations

import time
import types

from absl import app, flags

from launch import cli

PRESETS = {
    # Llama-3.2-1B's shape: 1.24B parameters with the tied 128k embedding.
    "1b": dict(vocab_size=128_256, hidden_size=2048, intermediate_size=8192, num_layers=16,
               num_heads=32, num_kv_heads=8, head_dim=64, tie_word_embeddings=True),
    "tiny": dict(vocab_size=256, hidden_size=64, intermediate_size=192, num_layers=2,
                 num_heads=4, num_kv_heads=2, head_dim=16, tie_word_embeddings=True),
}


def _vl_config(text: dict, vision: dict, mrope_section: list[int], ids: tuple[int, ...],
               tied: bool) -> dict:
  """A nested Qwen2.5-VL ``config.json`` object (what ``QwenVLConfig.from_hf_dict`` reads)."""
  start, image, video, end = ids
  return dict(
      model_type="qwen2_5_vl", architectures=["Qwen2_5_VLForConditionalGeneration"],
      tie_word_embeddings=tied, vision_start_token_id=start, image_token_id=image,
      video_token_id=video, vision_end_token_id=end,
      text_config=dict(text, rms_norm_eps=1e-6, tie_word_embeddings=tied,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                        "mrope_section": mrope_section}),
      vision_config=dict(dict(patch_size=14, temporal_patch_size=2, spatial_merge_size=2,
                              window_size=112, in_channels=3, hidden_act="silu"), **vision,
                         out_hidden_size=text["hidden_size"]))


# Vision-language shapes (config.json objects) and each one's default image (height x width).
VLM_PRESETS = {
    # Qwen2.5-VL-3B-Instruct's config.json sizes: text 36 x 2048 (16 heads / 2 kv heads,
    # F 11008, vocab 151,936, tied), tower 32 x 1280 (16 heads, F 3420, full attention in
    # blocks 7, 15, 23, 31, 112-pixel windows); 3.75B parameters.
    "qwen25vl_3b": _vl_config(
        dict(vocab_size=151_936, hidden_size=2048, intermediate_size=11_008,
             num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
             max_position_embeddings=128_000),
        dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
             fullatt_block_indexes=[7, 15, 23, 31]),
        [16, 24, 24], (151_652, 151_655, 151_656, 151_653), tied=True),
    # A few seconds on a CPU; windows of 4 x 4 patches (C = 16), so the default 112x140 image
    # (8 x 10 patches, N = 80 > 3C) runs the chunked windowed attention, with ragged windows.
    "tiny_vl": _vl_config(
        dict(vocab_size=260, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048),
        dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
             fullatt_block_indexes=[1], window_size=56),
        [2, 3, 3], (256, 257, 258, 259), tied=True),
}
VLM_IMAGE_SIZE = {"qwen25vl_3b": "812x1288", "tiny_vl": "112x140"}
TINY = ("tiny", "tiny_vl")  # presets whose --seq_len is capped at 128

# Dense bf16 peak FLOP/s per device, by a substring of jax's device_kind.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "TPU v4": 275.0,
                    "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v5": 459.0}

_PRESET = flags.DEFINE_enum("preset", "1b", sorted(PRESETS) + sorted(VLM_PRESETS),
                            "model shape")
_BATCH = flags.DEFINE_integer("batch_size", 8, "rows per step (all micro-batches)")
_SEQ = flags.DEFINE_integer("seq_len", 2048, "tokens per row, image tokens included (tiny "
                            "presets: capped at 128)")
_ACCUM = flags.DEFINE_integer("grad_accum", 1, "micro-batches per step")
_STEPS = flags.DEFINE_integer("steps", 10, "timed steps")
_WARMUP = flags.DEFINE_integer("warmup", 2, "untimed steps (compilation) before timing")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "compute dtype")
_REMAT = flags.DEFINE_bool("remat", False, "recompute layer activations in the backward pass")
_LAYOUT = flags.DEFINE_enum("layout", "fsdp", ["replicated", "fsdp", "tp", "fsdp_tp"],
                            "sharding rule table")
_FSDP = flags.DEFINE_integer("fsdp", 1, "mesh fsdp axis")
_TENSOR = flags.DEFINE_integer("tensor", 1, "mesh tensor axis (data takes the rest)")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "peak TFLOP/s per device (0: from device kind)")
_IMAGE_SIZE = flags.DEFINE_string("image_size", "", "VLM presets: HxW pixels of each image "
                                  "before the resize rule ('': 812x1288 for qwen25vl_3b, "
                                  "112x140 for tiny_vl)")
_IMAGES = flags.DEFINE_integer("images_per_row", 1, "VLM presets: images in every row")
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", 12_845_056, "VLM presets: the resize rule's "
                                   "area bound (default: GroundNext's image_max_pixels)")


def peak_tflops(device_kind: str, given: float) -> float:
  if given > 0:
    return given
  for key, value in PEAK_BF16_TFLOPS.items():
    if key.lower() in device_kind.lower():
      return value
  raise app.UsageError(f"unknown peak FLOP/s for device {device_kind!r}: pass --peak_tflops")


def image_grid(config, size: str, max_pixels: int) -> tuple[int, int, int, int, int]:
  """``(height, width, t, h, w)``: ``size`` ("HxW") after the image processor's resize rule,
  and its patch grid (a still image: one temporal patch)."""
  from jaxlab.core.errors import DataError  # pylint: disable=g-import-not-at-top
  from jaxlab.models.qwen_vl import processor  # pylint: disable=g-import-not-at-top
  try:
    height, width = (int(x) for x in size.lower().split("x"))
  except ValueError:
    raise app.UsageError(f"--image_size={size!r}: expected HxW in pixels, e.g. 812x1288"
                         ) from None
  v = config.vision
  try:
    height, width = processor.smart_resize(height, width, v.patch_size * v.spatial_merge_size,
                                           processor.DEFAULT_MIN_PIXELS, max_pixels)
  except DataError as e:
    raise app.UsageError(f"--image_size={size!r}: {e}") from None
  return height, width, 1, height // v.patch_size, width // v.patch_size


def vlm_host_batch(config, batch: int, seq: int, grid: tuple[int, int, int],
                   images_per_row: int, rng) -> dict:
  """The numpy batch of an SFT step of ``batch`` identical-layout rows: ``tokens`` (random
  text, ``images_per_row`` image spans after 4 text tokens), ``loss_mask`` (the text after the
  images), ``mask`` (all real), ``positions_b3t`` (M-RoPE, as SFT computes them) and
  ``images`` (an :class:`~jaxlab.models.qwen_vl.vision.ImageBatch` of random patches)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import sft  # pylint: disable=g-import-not-at-top
  from jaxlab.models.qwen_vl import vision  # pylint: disable=g-import-not-at-top
  v = config.vision
  n_patch = int(np.prod(grid))
  n_merged = n_patch // v.merge_unit
  prefix = 4
  after = prefix + images_per_row * (n_merged + 2)  # the first token after the images
  if after + 2 > seq:
    raise app.UsageError(f"--seq_len={seq} is too short for {images_per_row} image(s) of "
                         f"{n_merged} tokens each: need at least {after + 2}")
  specials = (config.vision_start_token_id, config.image_token_id, config.video_token_id,
              config.vision_end_token_id)
  tokens = rng.integers(0, min(specials), (batch, seq), dtype=np.int32)
  span = [config.vision_start_token_id] + [config.image_token_id] * n_merged + [
      config.vision_end_token_id]
  tokens[:, prefix:after] = np.asarray(span * images_per_row, np.int32)
  loss_mask = np.zeros((batch, seq), np.int32)
  loss_mask[:, after:] = 1
  mask = np.ones((batch, seq), bool)
  row_grid = np.asarray([grid] * images_per_row, np.int64)
  pixels = rng.standard_normal((batch * images_per_row * n_patch, v.patch_dim),
                               dtype=np.float32)
  images = vision.pack_images(v, pixels, np.concatenate([row_grid] * batch),
                              [images_per_row] * batch, images_per_row * n_patch)
  rows = types.SimpleNamespace(grids=[row_grid] * batch)  # what SFT's RowImages carries
  positions = sft.mrope_positions(config, tokens, mask, rows,
                                  [f"row {i}" for i in range(batch)])
  return {"tokens": tokens, "loss_mask": loss_mask, "mask": mask, "positions_b3t": positions,
          "images": images}


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from jaxlab import optim  # pylint: disable=g-import-not-at-top
  from jaxlab.core.mesh import make_mesh  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import train  # pylint: disable=g-import-not-at-top

  preset = _PRESET.value
  vlm = preset in VLM_PRESETS
  seq = min(_SEQ.value, 128) if preset in TINY else _SEQ.value
  devices = jax.devices()
  peak = peak_tflops(devices[0].device_kind, _PEAK.value) * 1e12
  mesh = make_mesh(-1, _FSDP.value, _TENSOR.value)
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  if (_BATCH.value // _ACCUM.value) % dp or _BATCH.value % _ACCUM.value:
    raise app.UsageError(f"batch_size/grad_accum must be a multiple of the {dp} data-parallel "
                         "devices")

  if vlm:
    from jaxlab.models.qwen_vl import modeling  # pylint: disable=g-import-not-at-top
    from jaxlab.models.qwen_vl import sharding  # pylint: disable=g-import-not-at-top
    from jaxlab.models.qwen_vl.config import QwenVLConfig  # pylint: disable=g-import-not-at-top
    cfg = QwenVLConfig.from_hf_dict(VLM_PRESETS[preset], f"<preset {preset}>",
                                    dtype=_DTYPE.value, param_dtype="float32",
                                    remat=_REMAT.value)
    if _IMAGES.value < 1:
      raise app.UsageError(f"--images_per_row={_IMAGES.value}: expected >= 1")
    height, width, *grid = image_grid(cfg, _IMAGE_SIZE.value or VLM_IMAGE_SIZE[preset],
                                      _MAX_PIXELS.value)
    abstract_model, init = modeling.abstract_qwen_vl, modeling.init_qwen_vl
    rules = sharding.RULES[_LAYOUT.value]
    loss_fn = train.vlm_loss
  else:
    from jaxlab.models.decoder import modeling  # pylint: disable=g-import-not-at-top
    from jaxlab.models.decoder import sharding  # pylint: disable=g-import-not-at-top
    from jaxlab.models.decoder.config import DecoderConfig  # pylint: disable=g-import-not-at-top
    cfg = DecoderConfig(**PRESETS[preset], architecture="LlamaForCausalLM", dtype=_DTYPE.value,
                        param_dtype="float32", remat=_REMAT.value,
                        max_position_embeddings=max(seq, 2048))
    abstract_model, init = modeling.abstract_decoder, modeling.init_decoder
    rules = _LAYOUT.value
    loss_fn = None
  rng = np.random.default_rng(0)
  if vlm:  # first: it checks that the images fit in the rows
    host = vlm_host_batch(cfg, _BATCH.value, seq, tuple(grid), _IMAGES.value, rng)
  else:
    tokens = rng.integers(0, cfg.vocab_size, (_BATCH.value, seq), dtype=np.int32)
    host = {"tokens": tokens, "loss_mask": np.ones_like(tokens)}

  # Parameters are created directly in their shards (a 1B model in float32 is 5 GB; with Adam
  # moments 15 GB), never whole on one device.
  abstract = nnx.split(abstract_model(cfg))[1]
  shardings = sharding.state_shardings(abstract, mesh, rules)

  def make_params():
    return nnx.split(init(cfg, seed=0))[1]
  params = jax.jit(make_params, out_shardings=shardings)()
  model = nnx.merge(nnx.split(abstract_model(cfg))[0], params)

  tx, schedule = optim.make_optimizer("adamw", 1e-4, schedule="cosine", warmup_steps=10,
                                      total_steps=1000, min_lr_ratio=0.1, b2=0.95,
                                      weight_decay=0.1, decay_mask="matrices", max_grad_norm=1.0)
  graphdef, state = train.init_train_state(model, tx, mesh, rules)
  del model, params
  step_fn = train.make_train_step(graphdef, tx, schedule, grad_accum=_ACCUM.value, mesh=mesh,
                                  state=state, rules=rules, loss_fn=loss_fn)
  batch = train.shard_batch(host, mesh)

  # Compiled once, ahead of time: the same program the jitted step runs, timed below, and
  # XLA's cost analysis of it. That counts a while-loop body once, so with accumulation (a scan
  # over micro-batches) its number is not the step's; it is only shown without.
  compiled = step_fn.jitted.lower(state, batch).compile()
  xla_flops = None
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_flops = (float(cost.get("flops", 0.0)) or None) if _ACCUM.value == 1 else None
  except Exception:  # pylint: disable=broad-except  # not every backend reports costs
    pass

  for _ in range(_WARMUP.value):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  step_time = (time.perf_counter() - t0) / _STEPS.value

  n_params = train.count_params(state.params)
  tokens_per_step = _BATCH.value * seq
  if vlm:
    row_grid = [grid] * _IMAGES.value
    text_flops, vision_flops = train.vlm_train_flops(cfg, seq, row_grid)
    model_flops = (text_flops + vision_flops) * _BATCH.value
    image_tokens = int(np.prod(grid)) // cfg.vision.merge_unit * _IMAGES.value
    n_vision = train.count_params(state.params["visual"])
  else:
    model_flops = train.train_flops_per_token(cfg, seq) * tokens_per_step
  achieved = model_flops / step_time
  mfu = achieved / (peak * len(devices))
  print(f"device={devices[0].device_kind} x{len(devices)} mesh={dict(mesh.shape)} "
        f"layout={_LAYOUT.value} dtype={_DTYPE.value} remat={_REMAT.value}")
  print(f"params={n_params / 1e6:.1f}M batch={_BATCH.value}x{seq} grad_accum={_ACCUM.value} "
        f"loss={float(metrics['loss']):.3f}")
  if vlm:
    print(f"image={height}x{width} grid={list(grid)} images/row={_IMAGES.value} "
          f"image_tokens/row={image_tokens} patches/row={int(np.prod(grid)) * _IMAGES.value} "
          f"vision_params={n_vision / 1e6:.1f}M "
          f"vision_flops_share={vision_flops / (text_flops + vision_flops):.3f}")
  print(f"step_time={step_time * 1e3:.1f}ms tokens/s={tokens_per_step / step_time:,.0f} "
        f"model_flops/step={model_flops:.3e} achieved={achieved / 1e12:.2f}TFLOP/s "
        f"peak/device={peak / 1e12:.0f}TFLOP/s")
  if xla_flops is not None:
    # XLA counts per device program; with remat it includes the recomputed forward.
    print(f"xla_flops/step/device={xla_flops:.3e} (model/xla per device="
          f"{model_flops / len(devices) / xla_flops:.2f})")
  print(f"mfu={mfu:.4f}")


if __name__ == "__main__":
  cli.run(main)
