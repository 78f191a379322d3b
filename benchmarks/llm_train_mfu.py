r"""Training throughput and model FLOPs utilisation (MFU) of the SFT step.

Times :func:`jaxlab.llm.train.make_train_step` (float32 masters, AdamW, gradient accumulation,
sharding rules over the mesh) on random tokens, the same compiled step ``launch.train`` runs,
and reports

    MFU = model FLOPs per step / step time / (peak FLOP/s per device * devices)

with model FLOPs per token = ``6 N`` (N: weights of the attention/MLP projections and the
output head; the embedding lookup is free) ``+ 6 L T n_heads head_dim`` (QK^T and PV, halved
for causality, forward + backward). Rematerialisation's extra forward is *not* counted (that
would be hardware FLOPs utilisation). XLA's own FLOP count of the compiled step is printed
beside it when the backend reports one (and
``grad_accum`` is 1: XLA counts a loop body once).

  # ~1.2B parameters (Llama-3.2-1B shape), bf16, on one H100/H200:
  python -m benchmarks.llm_train_mfu --preset=1b --batch_size=8 --seq_len=2048 --remat
  # a bigger batch in the same memory: --batch_size=32 --grad_accum=4; FSDP over 8 GPUs:
  python -m benchmarks.llm_train_mfu --preset=1b --batch_size=64 --fsdp=8 --layout=fsdp --remat
  # CPU smoke run (what the test does):
  python -m benchmarks.llm_train_mfu --preset=tiny --steps=2 --peak_tflops=1

``--peak_tflops`` is the dense peak per device for the compute dtype; by default it is looked
up from the device kind (bf16 dense: H100/H200 989, A100 312, TPU v4 275, v5e 197, v5p 459).
The last line is ``mfu=<fraction>``.
"""

from __future__ import annotations

import time

from absl import app, flags

PRESETS = {
    # Llama-3.2-1B's shape: 1.24B parameters with the tied 128k embedding.
    "1b": dict(vocab_size=128_256, hidden_size=2048, intermediate_size=8192, num_layers=16,
               num_heads=32, num_kv_heads=8, head_dim=64, tie_word_embeddings=True),
    "tiny": dict(vocab_size=256, hidden_size=64, intermediate_size=192, num_layers=2,
                 num_heads=4, num_kv_heads=2, head_dim=16, tie_word_embeddings=True),
}
# Dense bf16 peak FLOP/s per device, by a substring of jax's device_kind.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "TPU v4": 275.0,
                    "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v5": 459.0}

_PRESET = flags.DEFINE_enum("preset", "1b", sorted(PRESETS), "model shape")
_BATCH = flags.DEFINE_integer("batch_size", 8, "rows per step (all micro-batches)")
_SEQ = flags.DEFINE_integer("seq_len", 2048, "tokens per row (tiny preset: capped at 128)")
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


def peak_tflops(device_kind: str, given: float) -> float:
  if given > 0:
    return given
  for key, value in PEAK_BF16_TFLOPS.items():
    if key.lower() in device_kind.lower():
      return value
  raise app.UsageError(f"unknown peak FLOP/s for device {device_kind!r}: pass --peak_tflops")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxlab import optim  # pylint: disable=g-import-not-at-top
  from jaxlab.core.mesh import make_mesh  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import train  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder import modeling  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder.config import DecoderConfig  # pylint: disable=g-import-not-at-top

  sizes = PRESETS[_PRESET.value]
  seq = min(_SEQ.value, 128) if _PRESET.value == "tiny" else _SEQ.value
  cfg = DecoderConfig(**sizes, architecture="LlamaForCausalLM", dtype=_DTYPE.value,
                      param_dtype="float32", remat=_REMAT.value,
                      max_position_embeddings=max(seq, 2048))
  devices = jax.devices()
  peak = peak_tflops(devices[0].device_kind, _PEAK.value) * 1e12
  mesh = make_mesh(-1, _FSDP.value, _TENSOR.value)
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  if (_BATCH.value // _ACCUM.value) % dp or _BATCH.value % _ACCUM.value:
    raise app.UsageError(f"batch_size/grad_accum must be a multiple of the {dp} data-parallel "
                         "devices")

  # Parameters are created directly in their shards (a 1B model in float32 is 5 GB; with Adam
  # moments 15 GB), never whole on one device.
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder import sharding  # pylint: disable=g-import-not-at-top
  abstract = nnx.split(modeling.abstract_decoder(cfg))[1]
  shardings = sharding.state_shardings(abstract, mesh, _LAYOUT.value)

  def make_params():
    return nnx.split(modeling.init_decoder(cfg, seed=0))[1]
  params = jax.jit(make_params, out_shardings=shardings)()
  model = nnx.merge(nnx.split(modeling.abstract_decoder(cfg))[0], params)

  tx, schedule = optim.make_optimizer("adamw", 1e-4, schedule="cosine", warmup_steps=10,
                                      total_steps=1000, min_lr_ratio=0.1, b2=0.95,
                                      weight_decay=0.1, decay_mask="matrices", max_grad_norm=1.0)
  graphdef, state = train.init_train_state(model, tx, mesh, _LAYOUT.value)
  del model, params
  step_fn = train.make_train_step(graphdef, tx, schedule, grad_accum=_ACCUM.value, mesh=mesh,
                                  state=state, rules=_LAYOUT.value)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, cfg.vocab_size, (_BATCH.value, seq), dtype=np.int32)
  batch = train.shard_batch({"tokens": tokens, "loss_mask": np.ones_like(tokens)}, mesh)

  xla_flops = None
  # XLA's cost analysis counts a while-loop body once, so with accumulation (a scan over
  # micro-batches) its number is not the step's; it is only shown without.
  try:
    cost = step_fn.jitted.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_flops = (float(cost.get("flops", 0.0)) or None) if _ACCUM.value == 1 else None
  except Exception:  # pylint: disable=broad-except  # not every backend reports costs
    pass

  for _ in range(_WARMUP.value):
    state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = step_fn(state, batch)
  jax.block_until_ready((state, metrics))
  step_time = (time.perf_counter() - t0) / _STEPS.value

  n_params = train.count_params(state.params)
  tokens_per_step = _BATCH.value * seq
  flops_per_token = train.train_flops_per_token(cfg, seq)
  model_flops = flops_per_token * tokens_per_step
  achieved = model_flops / step_time
  mfu = achieved / (peak * len(devices))
  print(f"device={devices[0].device_kind} x{len(devices)} mesh={dict(mesh.shape)} "
        f"layout={_LAYOUT.value} dtype={_DTYPE.value} remat={_REMAT.value}")
  print(f"params={n_params / 1e6:.1f}M batch={_BATCH.value}x{seq} grad_accum={_ACCUM.value} "
        f"loss={float(metrics['loss']):.3f}")
  print(f"step_time={step_time * 1e3:.1f}ms tokens/s={tokens_per_step / step_time:,.0f} "
        f"model_flops/step={model_flops:.3e} achieved={achieved / 1e12:.2f}TFLOP/s "
        f"peak/device={peak / 1e12:.0f}TFLOP/s")
  if xla_flops is not None:
    # XLA counts per device program; with remat it includes the recomputed forward.
    print(f"xla_flops/step/device={xla_flops:.3e} (model/xla per device="
          f"{model_flops / len(devices) / xla_flops:.2f})")
  print(f"mfu={mfu:.4f}")


if __name__ == "__main__":
  app.run(main)
