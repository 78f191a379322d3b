r"""One LLM RL step, timed by part: generation, the update, and the cost of AsyPPO's critics.

A random decoder of the chosen size (no checkpoint needed) plays the policy; prompts are random
token ids of ``--prompt_len``, each sampled ``--group_size`` times for ``--max_new_tokens``
tokens at temperature 1 with no stop token (every row generates the full length, so the counts
are exact). The update is the trainer's own compiled step (:func:`jaxlab.llm.rl.make_rl_step`:
scoring with policy and reference, advantages, the policy's gradient steps, the critics' steps).

  python -m benchmarks.llm_rl_step                      # CPU defaults: the 0.6M reference shape
  python -m benchmarks.llm_rl_step --hidden=512 --layers=8 --vocab=32000 --prompts=64  # GPU

Printed: sampled tokens/s (generation), trained tokens/s (response tokens through the update),
the share of step time spent generating, and the update time with M = 0, 1 and 2 critics.
The M critics are stacked on one axis and run in one vmapped call; the last line is
``ratio=<update time with M=2 / with M=1>`` (2.0 would mean no gain over M separate calls;
the critic part alone is also reported).
"""

from __future__ import annotations

import time

from absl import flags

from launch import cli

_LAYERS = flags.DEFINE_integer("layers", 3, "policy decoder layers")
_HIDDEN = flags.DEFINE_integer("hidden", 128, "policy hidden size")
_VOCAB = flags.DEFINE_integer("vocab", 64, "vocabulary size")
_HEADS = flags.DEFINE_integer("heads", 4, "query heads")
_KV_HEADS = flags.DEFINE_integer("kv_heads", 2, "key/value heads")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "prompts per step")
_GROUP = flags.DEFINE_integer("group_size", 8, "responses per prompt")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 12, "prompt tokens")
_NEW = flags.DEFINE_integer("max_new_tokens", 6, "response tokens")
_CRITIC_HIDDEN = flags.DEFINE_integer("critic_hidden", 64, "critic hidden size")
_CRITIC_LAYERS = flags.DEFINE_integer("critic_layers", 1, "critic layers")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed repeats (the median is reported)")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")


def _median_time(fn, repeats: int) -> float:
  import numpy as np  # pylint: disable=g-import-not-at-top
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from jaxlab import optim  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import rl, sampling  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import train as train_lib  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder import modeling  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder.config import DecoderConfig  # pylint: disable=g-import-not-at-top

  h = _HIDDEN.value
  cfg = DecoderConfig(vocab_size=_VOCAB.value, hidden_size=h, intermediate_size=3 * h,
                      num_layers=_LAYERS.value, num_heads=_HEADS.value,
                      num_kv_heads=_KV_HEADS.value, head_dim=h // _HEADS.value,
                      architecture="Qwen3ForCausalLM", qk_norm=True,
                      max_position_embeddings=4096, dtype=_DTYPE.value, param_dtype="float32",
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
  policy = modeling.init_decoder(cfg, seed=0)
  graphdef, params = nnx.split(policy)
  b, tp, n = _PROMPTS.value * _GROUP.value, _PROMPT_LEN.value, _NEW.value
  rng = np.random.default_rng(0)
  prompts = np.repeat(rng.integers(3, _VOCAB.value, size=(_PROMPTS.value, tp)), _GROUP.value, 0)
  pmask = np.ones_like(prompts, bool)
  sparams = sampling.SamplingParams(max_new_tokens=n, temperature=1.0, stop_tokens=(),
                                    pad_id=0)

  def gen():
    out = sampling.generate(policy, prompts, pmask, jax.random.key(1), sparams)
    return np.asarray(out.tokens)

  resp = gen()  # compile
  t_gen = _median_time(gen, _REPEATS.value)
  batch = {
      "tokens": jnp.asarray(np.concatenate([prompts, resp], 1), jnp.int32),
      "attention_mask": jnp.ones((b, tp + n), bool),
      "response": jnp.asarray(resp), "response_mask": jnp.ones((b, n), bool),
      "rewards": jnp.asarray(rng.integers(0, 2, size=b), jnp.float32),
  }

  def make_update(num_critics: int):
    c = rl.default_config()
    c.group_size = _GROUP.value
    c.dtype = _DTYPE.value
    c.critic.num_critics = num_critics
    c.critic.hidden_size = _CRITIC_HIDDEN.value
    c.critic.intermediate_size = 2 * _CRITIC_HIDDEN.value
    c.critic.num_layers = _CRITIC_LAYERS.value
    c.pg.advantage = "gae" if num_critics else "rloo"
    pg = rl.pg_config(c)
    tx, schedule = optim.make_optimizer("adamw", 1e-5, b2=0.95, weight_decay=0.1,
                                        decay_mask="matrices", max_grad_norm=1.0)
    cgraph = ctx = cstate = None
    if num_critics:
      cgraph, cparams = rl.build_critics(c, policy)
      ctx, _ = optim.make_optimizer("adamw", 1e-5, b2=0.95, weight_decay=0.1,
                                    decay_mask="matrices", max_grad_norm=1.0)
      cstate = train_lib.TrainState(jnp.int32(0), cparams, jax.vmap(ctx.init)(cparams))
    spec = rl.StepSpec(pg=pg, group_size=_GROUP.value, prompt_len=tp, temperature=1.0,
                       epochs=1, minibatches=1, lagged=False, num_critics=num_critics,
                       critic_epochs=1, critic_lam=1.0, split="responses", shuffle=True,
                       disjoint=True, adv_mask_k=0.2 if num_critics >= 2 else 0.0,
                       entropy_filter_h=0.0, scope="batch")
    step = rl.make_rl_step(spec, graphdef, tx, schedule, cgraph, ctx)
    ref = jax.tree.map(jnp.copy, params)
    holder = [rl.RLState(train_lib.TrainState(jnp.int32(0), jax.tree.map(jnp.copy, params),
                                              tx.init(params)), cstate)]

    def once():
      holder[0], m = step(holder[0], ref, None, batch, jax.random.key(2))
      jax.block_until_ready(m)

    once()  # compile
    return once

  # Interleaved: each round times M = 0, 1, 2 once, so load on a shared machine hits all three.
  updates = {m: make_update(m) for m in (0, 1, 2)}
  rounds = {m: [] for m in updates}
  for _ in range(_REPEATS.value):
    for m, once in updates.items():
      rounds[m].append(_median_time(once, 1))
  times = {m: float(np.median(t)) for m, t in rounds.items()}
  sampled = b * n
  print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}); policy "
        f"{train_lib.count_params(params):,} params, {b} rows x ({tp} prompt + {n} new) tokens")
  print(f"generate: {t_gen * 1e3:.1f} ms, sampled tokens/s = {sampled / t_gen:,.0f}")
  for m, t in times.items():
    print(f"update with M={m} critics: {t * 1e3:.1f} ms, trained tokens/s = {sampled / t:,.0f}, "
          f"generation share of the step = {t_gen / (t_gen + t):.2f}")
  c1, c2 = times[1] - times[0], times[2] - times[0]
  print(f"critic part: M=1 {c1 * 1e3:.1f} ms, M=2 {c2 * 1e3:.1f} ms "
        f"(x{c2 / max(c1, 1e-9):.2f}; 2.0 = two separate calls)")
  print(f"ratio={times[2] / times[1]:.3f}")


if __name__ == "__main__":
  cli.run(main)
