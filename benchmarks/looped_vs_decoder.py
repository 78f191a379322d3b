r"""Training speed of a looped model against the decoder of the same effective depth, and the
cost of capturing its per-(iteration, slot) states for the analysis.

Part 1, the training step. A looped model (``n_prelude`` blocks, an ``n_core``-block core
applied ``T`` times, ``n_coda`` blocks) runs ``n_prelude + n_core * T + n_coda`` block calls
per token; the decoder here has exactly that many layers of the same width, heads and MLP.
Both are trained by :func:`jaxlab.llm.train.make_train_step` (float32 masters, AdamW, one
device), the looped one through its loss hook :func:`jaxlab.llm.train.looped_loss`, on the
same batch of random tokens. Per side: the first call (compile + one step), parameters, and
tokens/s of the step (best of ``--repeats`` timings of ``--steps`` steps each, after
``--warmup`` steps; the two sides alternate so that load from other processes hits both
alike). If recurrence costs only its extra block calls, the ratio looped/decoder is ~1; the
looped model has fewer parameters, so its optimizer update is cheaper, while the injection
(an adapter matmul per iteration with ``concat_adapter``) and sandwich norms add a little.

Part 2, analysis capture. The looped model's jitted forward with ``return_states=True`` (the
state after every prelude / core (iteration, slot) / coda block call, what
``launch.analyze --kind=looped`` reads, kept on the device) against a plain forward that
returns only logits; with ``--replay`` also :func:`jaxlab.looped.replay.capture`, the
analysis' own call (states, replayed attention probabilities, copied to the host).

  # CPU (small sizes, a few seconds per side):
  python -m benchmarks.looped_vs_decoder
  # one GPU (H100/H200), bfloat16 compute:
  python -m benchmarks.looped_vs_decoder --hidden=1024 --heads=16 --kv_heads=4 \
      --vocab=32000 --seq_len=1024 --batch=16 --dtype=bfloat16 --steps=10 --repeats=3 \
      --replay=false  # the replay's attention maps are I*J*B*N*T^2 floats (8.6 GB here)
  # the spec's miniature-Huginn layout (sandwich norms, concat adapter, random state):
  python -m benchmarks.looped_vs_decoder --block_norm=sandwich_huginn \
      --injection=concat_adapter --state_init=trunc_normal

Prints the device kind and the load average (``os.getloadavg``) before and after. The
second-to-last line is ``capture_ratio=<states forward time / plain forward time>``; the last
line is ``ratio=<looped / decoder training tokens per second>``.
"""

from __future__ import annotations

import functools
import os
import time

from absl import app, flags

from benchmarks.timing import time_best
from launch import cli

_HIDDEN = flags.DEFINE_integer("hidden", 128, "width D of both models")
_HEADS = flags.DEFINE_integer("heads", 4, "query heads")
_KV_HEADS = flags.DEFINE_integer("kv_heads", 0, "key/value heads (0: same as heads)")
_INTERMEDIATE = flags.DEFINE_integer("intermediate", 0, "SwiGLU width (0: 3 * hidden)")
_VOCAB = flags.DEFINE_integer("vocab", 512, "vocabulary size")
_PRELUDE = flags.DEFINE_integer("n_prelude", 1, "looped: blocks before the recurrence")
_CORE = flags.DEFINE_integer("n_core", 2, "looped: blocks of the shared core")
_CODA = flags.DEFINE_integer("n_coda", 1, "looped: blocks after the recurrence")
_ITERS = flags.DEFINE_integer("num_iterations", 4, "looped: trip count T of the core")
_INJECTION = flags.DEFINE_enum("injection", "add", ["none", "add", "concat_adapter", "gated"],
                               "looped: how the core's input combines the state and e")
_BLOCK_NORM = flags.DEFINE_enum("block_norm", "pre",
                                ["pre", "post", "sandwich_huginn", "pre_post_ouro"],
                                "looped: norm placement in every block (the decoder is 'pre')")
_STATE_INIT = flags.DEFINE_enum("state_init", "zeros", ["zeros", "trunc_normal", "copy_e"],
                                "looped: initial state")
_BACKPROP = flags.DEFINE_integer("backprop_depth", 0, "looped: backpropagate through the last "
                                 "k iterations only (0: all, the like-for-like comparison)")
_SEQ = flags.DEFINE_integer("seq_len", 128, "tokens per row")
_BATCH = flags.DEFINE_integer("batch", 8, "rows per step")
_STEPS = flags.DEFINE_integer("steps", 3, "steps per timing")
_WARMUP = flags.DEFINE_integer("warmup", 1, "untimed steps after the first (compiling) call")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timings per side (the best is reported)")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
_REPLAY = flags.DEFINE_bool("replay", True, "also time the analysis' capture with attention "
                            "replay (jaxlab.looped.replay.capture, host copy included)")


def effective_depth() -> int:
  """Block calls per token of the looped model: the decoder's layer count."""
  return _PRELUDE.value + _CORE.value * _ITERS.value + _CODA.value


def _sizes() -> dict:
  heads = _HEADS.value
  if _HIDDEN.value % heads:
    raise app.UsageError(f"--hidden={_HIDDEN.value} must be a multiple of --heads={heads}")
  return dict(vocab_size=_VOCAB.value, hidden_size=_HIDDEN.value,
              intermediate_size=_INTERMEDIATE.value or 3 * _HIDDEN.value, num_heads=heads,
              num_kv_heads=_KV_HEADS.value or heads, head_dim=_HIDDEN.value // heads,
              tie_word_embeddings=False, dtype=_DTYPE.value, param_dtype="float32",
              max_position_embeddings=max(_SEQ.value, 2048))


def _train_side(name, model, loss_fn, batch):
  """Builds one side's train step; returns ``(step_fn, state, params, first_call_s, loss)``."""
  import jax  # pylint: disable=g-import-not-at-top

  from jaxlab import optim  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import train  # pylint: disable=g-import-not-at-top

  tx, schedule = optim.make_optimizer("adamw", 1e-4, schedule="cosine", warmup_steps=10,
                                      total_steps=1000, min_lr_ratio=0.1, b2=0.95,
                                      weight_decay=0.1, decay_mask="matrices", max_grad_norm=1.0)
  graphdef, state = train.init_train_state(model, tx)
  step_fn = train.make_train_step(graphdef, tx, schedule, loss_fn=loss_fn)
  n_params = train.count_params(state.params)
  t0 = time.perf_counter()
  state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  first = time.perf_counter() - t0
  for _ in range(_WARMUP.value):
    state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  loss = float(metrics["loss"])
  if loss != loss:  # NaN: a broken side would time nonsense
    raise RuntimeError(f"{name}: the training loss is NaN")
  return step_fn, state, n_params, first, loss


def _looped_forward(graphdef, params, tokens_bt, mask_bt, states: bool):
  """The looped model's cache-free forward: logits, and with ``states`` its LoopStates."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  out = nnx.merge(graphdef, params)(tokens_bt, mask_bt, return_states=states)
  return (out[0], out[2]) if states else out[0]


def main(argv):
  del argv
  load_before = os.getloadavg()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from jaxlab.llm import train  # pylint: disable=g-import-not-at-top
  from jaxlab.looped import replay  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder import modeling as dec  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder.config import DecoderConfig  # pylint: disable=g-import-not-at-top
  from jaxlab.models.looped import modeling as looped  # pylint: disable=g-import-not-at-top
  from jaxlab.models.looped.config import LoopedConfig  # pylint: disable=g-import-not-at-top

  for name, flag, low in (("num_iterations", _ITERS, 1), ("n_core", _CORE, 1),
                          ("n_prelude", _PRELUDE, 0), ("n_coda", _CODA, 0),
                          ("seq_len", _SEQ, 2), ("batch", _BATCH, 1), ("steps", _STEPS, 1),
                          ("repeats", _REPEATS, 1), ("backprop_depth", _BACKPROP, 0)):
    if flag.value < low:
      raise app.UsageError(f"--{name}={flag.value} is invalid; expected an int >= {low}")
  sizes = _sizes()
  depth = effective_depth()
  d_cfg = DecoderConfig(**sizes, num_layers=depth, architecture="LlamaForCausalLM")
  l_cfg = LoopedConfig(**sizes, n_prelude=_PRELUDE.value, n_core=_CORE.value,
                       n_coda=_CODA.value, num_iterations=_ITERS.value,
                       injection=_INJECTION.value, block_norm=_BLOCK_NORM.value,
                       state_init=_STATE_INIT.value, backprop_depth=_BACKPROP.value or None)
  b, t = _BATCH.value, _SEQ.value
  device = jax.devices()[0]
  print(f"device={device.device_kind} ({device.platform}) x{len(jax.devices())} "
        f"loadavg_before={load_before[0]:.2f},{load_before[1]:.2f},{load_before[2]:.2f}")
  print(f"sizes: hidden={l_cfg.hidden_size} heads={l_cfg.num_heads}/{l_cfg.num_kv_heads} "
        f"mlp={l_cfg.intermediate_size} vocab={l_cfg.vocab_size} dtype={l_cfg.dtype} "
        f"batch={b}x{t}")
  print(f"looped: prelude={l_cfg.n_prelude} core={l_cfg.n_core}xT={l_cfg.num_iterations} "
        f"coda={l_cfg.n_coda} injection={l_cfg.injection} block_norm={l_cfg.block_norm} "
        f"state_init={l_cfg.state_init} backprop_depth={l_cfg.backprop_depth}; "
        f"decoder: {depth} layers")

  rng = np.random.default_rng(0)
  tokens = rng.integers(0, l_cfg.vocab_size, (b, t), dtype=np.int32)
  batch = train.shard_batch({"tokens": tokens, "loss_mask": np.ones_like(tokens)}, None)

  # -- part 1: the training step ------------------------------------------------------------------
  sides = {}
  for name, model, loss_fn in (("decoder", dec.init_decoder(d_cfg, seed=0), None),
                               ("looped", looped.init_looped(l_cfg, seed=0),
                                train.looped_loss())):
    sides[name] = list(_train_side(name, model, loss_fn, batch))
    del model
  best = {name: float("inf") for name in sides}

  def timed(name):
    side = sides[name]
    step_fn, state = side[0], side[1]
    for _ in range(_STEPS.value):
      state, metrics = step_fn(state, batch)
    jax.block_until_ready((state, metrics))
    side[1] = state

  for _ in range(_REPEATS.value):
    for name in sides:
      best[name] = min(best[name], time_best(functools.partial(timed, name), 1))
  flops_tok = train.train_flops_per_token(d_cfg, t)  # the same block calls on both sides
  tps = {}
  for name, (_, _, n_params, first, loss) in sides.items():
    step_s = best[name] / _STEPS.value
    tps[name] = b * t / step_s
    print(f"{name}: params={n_params / 1e6:.2f}M first_call={first:.2f}s (compile + 1 step) "
          f"loss={loss:.3f} step={step_s * 1e3:.1f}ms tokens/s={tps[name]:,.0f} "
          f"model_tflop/s={flops_tok * tps[name] / 1e12:.3f}")
  sides.clear()

  # -- part 2: state capture vs a plain forward ---------------------------------------------------
  model = looped.init_looped(l_cfg, seed=0)
  graphdef, params = nnx.split(model)
  forward = jax.jit(_looped_forward, static_argnums=(0, 4))
  tok, mask = jnp.asarray(tokens), jnp.ones((b, t), bool)
  compile_s = {}
  for states in (False, True):
    t0 = time.perf_counter()
    jax.block_until_ready(forward(graphdef, params, tok, mask, states))
    compile_s[states] = time.perf_counter() - t0
  # Alternate the two, as above.
  plain = capture = float("inf")
  for _ in range(_REPEATS.value):
    plain = min(plain, time_best(lambda: jax.block_until_ready(
        forward(graphdef, params, tok, mask, False)), 1))
    capture = min(capture, time_best(lambda: jax.block_until_ready(
        forward(graphdef, params, tok, mask, True)), 1))
  n_states = (l_cfg.n_prelude + 1 + l_cfg.num_iterations * (l_cfg.n_core + 1) + l_cfg.n_coda)
  state_mb = n_states * b * t * l_cfg.hidden_size * jnp.dtype(l_cfg.dtype).itemsize / 1e6
  print(f"forward (looped, {b}x{t}): plain {plain * 1e3:.1f}ms (first call "
        f"{compile_s[False]:.2f}s); with states {capture * 1e3:.1f}ms (first call "
        f"{compile_s[True]:.2f}s, {n_states} states = {state_mb:.1f} MB)")
  if _REPLAY.value:
    run = lambda: replay.capture(model, tokens, attention=True)
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    full = time_best(run, _REPEATS.value)
    print(f"analysis capture (replay.capture, attention replay + host copy): {full * 1e3:.1f}ms "
          f"(first call {first:.2f}s) = {full / plain:.2f}x the plain forward")

  load_after = os.getloadavg()
  print(f"loadavg_after={load_after[0]:.2f},{load_after[1]:.2f},{load_after[2]:.2f}")
  print(f"capture_ratio={capture / plain:.3f}")
  print(f"ratio={tps['looped'] / tps['decoder']:.3f}")


if __name__ == "__main__":
  cli.run(main)
