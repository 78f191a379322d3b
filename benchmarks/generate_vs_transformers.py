r"""Greedy decoding speed: jaxlab's compiled sampler vs transformers' ``generate`` (PyTorch).

One random Llama-shaped model (4 layers, hidden 512, 8 heads / 2 kv heads, vocab 32000) is
built in transformers, saved, and loaded into ours, so both run the same weights. A batch of
8 left-padded prompts (16-32 tokens) gets 128 new greedy tokens each (no eos, so neither side
stops early). Both are warmed up, then timed alternately in the same process.

  python -m benchmarks.generate_vs_transformers            # CPU: prints tokens/s, ratio
  python -m benchmarks.generate_vs_transformers --device_report --hbm_bandwidth=4.8e12  # GPU
  python -m benchmarks.generate_vs_transformers --device_report --hbm_bandwidth=0  # CPU roofline

The last line is ``ratio=<ours/theirs>`` (tokens/s). With ``--device_report`` it also prints
decode tokens/s as a fraction of the memory-bandwidth roofline: each decode step must read
every weight and the live KV cache once, so ``steps/s <= bandwidth / bytes_per_step``.
``--hbm_bandwidth=0`` measures the bandwidth here instead (the fastest compiled full read of a
512 MB array): on a CPU this bounds how far ANY implementation can be ahead of transformers,
printed as ``ratio ceiling``. ``--hbm_bandwidth=-1`` takes it from the device kind (the table of
``benchmarks/device/perf.py``: H200, H100 SXM / PCIe / NVL).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from absl import flags

from benchmarks.timing import time_best
from launch import cli

_BATCH = flags.DEFINE_integer("batch", 8, "prompts per batch")
_NEW = flags.DEFINE_integer("max_new_tokens", 128, "tokens generated per prompt")
_LAYERS = flags.DEFINE_integer("layers", 4, "decoder layers")
_HIDDEN = flags.DEFINE_integer("hidden", 512, "hidden size")
_VOCAB = flags.DEFINE_integer("vocab", 32000, "vocabulary size")
_HEADS = flags.DEFINE_integer("heads", 8, "query heads")
_KV_HEADS = flags.DEFINE_integer("kv_heads", 2, "key/value heads")
_HEAD_DIM = flags.DEFINE_integer("head_dim", 0, "per-head width (0: hidden / heads)")
_INTERMEDIATE = flags.DEFINE_integer("intermediate", 0, "SwiGLU width (0: 3 * hidden)")
_PROMPT_MIN = flags.DEFINE_integer("prompt_min", 16, "shortest prompt")
_PROMPT_MAX = flags.DEFINE_integer("prompt_max", 32, "longest prompt")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed runs per side (the best is reported)")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "ours: compute dtype")
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "time only ours, on a random model built "
                                 "without torch/transformers (e.g. on a GPU host)")
_TORCH_DEVICE = flags.DEFINE_string("torch_device", "cpu", "where transformers runs (cpu, cuda)")
_DEVICE_REPORT = flags.DEFINE_bool("device_report", False,
                                   "also print decode speed as a fraction of the HBM roofline")
_BANDWIDTH = flags.DEFINE_float("hbm_bandwidth", 4.8e12,
                                "memory bandwidth in bytes/s for the roofline (H200: 4.8e12; "
                                "0: measure it here; -1: by the device kind)")


def measure_read_bandwidth(nbytes: int = 512 * 2**20, repeats: int = 5) -> float:
  """Bytes/s of the fastest of ``repeats`` compiled sums over an ``nbytes`` float32 array on the
  default device: the rate at which this machine streams memory to a compiled program (every
  thread it uses), the ceiling for a decode step that reads each weight once."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = jnp.ones((nbytes // 4,), jnp.float32)
  total = jax.jit(jnp.sum)
  total(x).block_until_ready()
  return nbytes / time_best(lambda: total(x).block_until_ready(), repeats)


def hbm_bandwidth() -> float:
  """``--hbm_bandwidth`` in bytes/s: as given; 0: measured here (:func:`measure_read_bandwidth`,
  printed); -1: the device kind's HBM bandwidth (``benchmarks/device/perf.py``'s table)."""
  import jax  # pylint: disable=g-import-not-at-top
  if _BANDWIDTH.value > 0:
    return _BANDWIDTH.value
  if _BANDWIDTH.value < 0:
    kind = jax.devices()[0].device_kind
    from benchmarks.device import perf  # pylint: disable=g-import-not-at-top
    bandwidth = perf.bandwidth_for_kind(kind)
    if not bandwidth:
      cli.fail(f"--hbm_bandwidth=-1: no HBM bandwidth known for device {kind!r}; pass it "
               "in bytes/s")
    return bandwidth
  bandwidth = measure_read_bandwidth()
  print(f"measured read bandwidth: {bandwidth / 1e9:.1f} GB/s")
  return bandwidth


def decode_roofline(decoder: Any, batch: int, prompt_slots: int, new_tokens: int,
                    seconds: float, prefill_seconds: float) -> float:
  """Prints the decode speed as a share of the memory roofline and returns the roofline's
  steps/s. ``decoder``: the text decoder whose weights each decode step reads (a
  vision-language model's ``.text``); ``seconds`` a whole generation of ``new_tokens`` per row,
  ``prefill_seconds`` one that stops after the first token (prefill + that token)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  # Timing noise can put a short generation at or under its own prefill; no speed then.
  decode_seconds = seconds - prefill_seconds
  decode_steps_s = (new_tokens - 1) / decode_seconds if decode_seconds > 0 else float("nan")
  cfg = decoder.config
  itemsize = jnp.dtype(cfg.dtype).itemsize
  weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(decoder)))
  if not cfg.tie_word_embeddings:  # an untied table is only gathered (B rows), not streamed
    weight_bytes -= decoder.embedding_vd[...].size * decoder.embedding_vd[...].dtype.itemsize
  # Mean live KV cache per step: every layer's K and V over the filled slots.
  mean_len = prompt_slots + new_tokens / 2
  kv_bytes = 2 * cfg.num_layers * batch * mean_len * cfg.num_kv_heads * cfg.head_dim * itemsize
  bandwidth = hbm_bandwidth()
  roofline_steps = bandwidth / (weight_bytes + kv_bytes)
  prefill = f"prefill ({batch}x{prompt_slots}) + 1 token: {prefill_seconds * 1e3:.1f} ms"
  roofline = (f"roofline: {weight_bytes / 1e6:.1f} MB weights + {kv_bytes / 1e6:.1f} MB live KV "
              f"per step at {bandwidth / 1e12:.2f} TB/s -> {roofline_steps:,.0f} steps/s max")
  if decode_seconds > 0:
    print(f"{prefill}; decode: {decode_steps_s:,.0f} steps/s = {decode_steps_s * batch:,.0f} "
          "tokens/s")
    print(f"{roofline}; decode reaches {decode_steps_s / roofline_steps:.1%} of the roofline")
  else:
    print(f"{prefill}; decode: not resolved ({new_tokens} tokens took {seconds * 1e3:.1f} ms "
          "in all, no more than the prefill and first token; raise --max_new_tokens)")
    print(roofline)
  return roofline_steps


def sizes():
  return dict(vocab_size=_VOCAB.value, hidden_size=_HIDDEN.value,
              intermediate_size=_INTERMEDIATE.value or 3 * _HIDDEN.value,
              num_hidden_layers=_LAYERS.value, num_attention_heads=_HEADS.value,
              num_key_value_heads=_KV_HEADS.value,
              head_dim=_HEAD_DIM.value or _HIDDEN.value // _HEADS.value)


def _build_reference(path: str):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  config = transformers.LlamaConfig(
      **sizes(), max_position_embeddings=2048, bos_token_id=None, eos_token_id=None,
      pad_token_id=0)
  model = transformers.LlamaForCausalLM(config).eval()
  model.save_pretrained(path)
  return model


def random_prompts(rng, batch, vocab):
  lengths = rng.integers(_PROMPT_MIN.value, _PROMPT_MAX.value + 1, size=batch)
  return [list(rng.integers(3, vocab, size=n)) for n in lengths]


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top

  b, n = _BATCH.value, _NEW.value
  rng = np.random.default_rng(0)
  if _SKIP_TORCH.value:
    # pylint: disable-next=g-import-not-at-top
    from jaxlab.models.decoder import config as config_lib, modeling
    s = sizes()
    cfg = config_lib.DecoderConfig(
        vocab_size=s["vocab_size"], hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"], num_layers=s["num_hidden_layers"],
        num_heads=s["num_attention_heads"], num_kv_heads=s["num_key_value_heads"],
        head_dim=s["head_dim"], dtype=_DTYPE.value, param_dtype=_DTYPE.value)
    ours = modeling.init_decoder(cfg)
  else:
    from jaxlab import models  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory() as path:
      ref = _build_reference(path)
      ours, _ = models.from_pretrained(path, dtype=jnp.dtype(_DTYPE.value), tokenizer=False)
  prompts = random_prompts(rng, b, _VOCAB.value)
  tokens, mask = sampling.left_pad(prompts, pad_id=0)
  params = sampling.SamplingParams(max_new_tokens=n, temperature=0.0)
  key = jax.random.key(0)

  def run_ours():
    out = sampling.generate(ours, tokens, mask, key, params)
    return np.asarray(out.tokens)

  t0 = time.perf_counter()
  ours_tokens = run_ours()  # compile + first run
  print(f"ours: first call (compile + run) {time.perf_counter() - t0:.2f}s on "
        f"{jax.devices()[0].device_kind}")

  run_theirs = None
  if not _SKIP_TORCH.value:
    import torch  # pylint: disable=g-import-not-at-top
    dev = torch.device(_TORCH_DEVICE.value)
    if _DTYPE.value == "bfloat16":
      ref = ref.to(torch.bfloat16)
    ref = ref.to(dev)
    ids = torch.tensor(tokens.astype(np.int64), device=dev)
    attn = torch.tensor(mask.astype(np.int64), device=dev)

    def generate_theirs():
      with torch.no_grad():
        out = ref.generate(ids, attention_mask=attn, max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)
      return out[:, tokens.shape[1]:].cpu().numpy()

    run_theirs = generate_theirs

    theirs_tokens = run_theirs()  # warm-up

  # Alternate the two so that load from other processes hits both alike; keep each side's best.
  t_ours = t_theirs = float("inf")
  for _ in range(_REPEATS.value):
    t_ours = min(t_ours, time_best(run_ours, 1))
    if run_theirs is not None:
      t_theirs = min(t_theirs, time_best(run_theirs, 1))
  ours_tps = b * n / t_ours
  print(f"ours: {ours_tps:,.0f} tokens/s ({t_ours * 1e3:.1f} ms for {b}x{n} tokens, "
        f"{t_ours / n * 1e3:.2f} ms/step)")

  if _DEVICE_REPORT.value:
    # Decode alone: subtract a run that only prefills and picks one token.
    prefill_params = sampling.SamplingParams(max_new_tokens=1, temperature=0.0)
    run_prefill = lambda: np.asarray(
        sampling.generate(ours, tokens, mask, key, prefill_params).tokens)
    run_prefill()
    t_prefill = time_best(run_prefill, _REPEATS.value)
    roofline_steps = decode_roofline(ours, b, tokens.shape[1], n, t_ours, t_prefill)

  if run_theirs is None:
    return
  theirs_tps = b * n / t_theirs
  print(f"transformers {__import__('transformers').__version__} (torch "
        f"{torch.__version__} on {dev}, {torch.get_num_threads()} threads): "
        f"{theirs_tps:,.0f} tokens/s ({t_theirs * 1e3:.1f} ms, {t_theirs / n * 1e3:.2f} ms/step)")
  if _DEVICE_REPORT.value:
    # Prefill aside, no decoder can beat the roofline: the largest ratio possible here.
    print(f"ratio ceiling={roofline_steps * b / theirs_tps:.2f} (roofline tokens/s / "
          "transformers' tokens/s)")
  if _DTYPE.value == "float32":
    agree = float(np.mean(ours_tokens == theirs_tokens))
    print(f"greedy tokens identical: {agree:.1%}")
  print(f"ratio={ours_tps / theirs_tps:.2f}")


if __name__ == "__main__":
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  cli.run(main)
