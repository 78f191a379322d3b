"""Paper 1 (looped LMs, spec looped_grounding_kaleidoscope.md §1.7): the model grid, one arm per
run, trained from scratch on the synthetic tasks with the SFT trainer.

    python -m launch.train --config=configs/looped/grid.py:sandwich_concat \
        --workdir=runs/looped/sandwich_concat_s0 --config.seed=0
    python -m launch.train --config=configs/looped/grid.py:feedforward \
        --workdir=runs/looped/feedforward_s0 --config.seed=0
    python -m launch.analyze --kind=looped --workdir=runs/looped/sandwich_concat_s0 \
        --prompts=data/looped/pointer_chase_eval.jsonl --iterations=4,8,16,32 \
        --baseline=runs/looped/feedforward_s0 --out=runs/looped/sandwich_concat_s0/analysis

The argument after ":" names the arm (:data:`ARMS`; default ``sandwich_concat``); ``gpu_<arm>``
and ``gpu256_<arm>`` are the same arm at the spec's one-GPU sizes (below; run by
``configs/looped/gpu.sh main`` and ``... gpu.sh ablations``). Every arm
shares the CPU recipe of the pre-registered design (docs/reproductions/looped.md): width 64,
4 heads of 16, SwiGLU MLP 4d (256), prelude 1 / core R / coda 1, tied embeddings, a char
vocabulary built from the training text (< 64 symbols); batch 32, AdamW lr 1e-3, weight decay
0.1, 100 warmup steps then cosine, 2,000 steps, float32. Data (data/looped/, README there):
pointer chasing (hops 1-8), modular chains and question-shaped prompts, 5,200 training rows;
greedy exact-match accuracy every 500 steps on 100 held-out rows of each task
(``eval/accuracy/<task>``). Loss on the answer tokens only (the SFT trainer's mask), for all
three tasks: the spec's full-LM loss on the question-shaped prompts is not implemented.

Arms (looped unless said; "Huginn" = sampled trip count 1 + Poisson(LogNormal) with mean
r-bar = 4, gradients through at most k-bar = 2 iterations, truncated-normal s_0 with std
sqrt(2 / (5 d)) drawn afresh each step, embeddings scaled by sqrt(d)):

  sandwich_concat   R = 2, concat adapter, sandwich norm, Huginn        (design arm 1)
  prenorm_none      R = 2, no injection, pre-norm, Huginn, s_0 = e      (design arm 2: with no
                    injection the prompt reaches the core only through s_0 = e)
  feedforward       a decoder of the same effective depth p + R r-bar + c = 10 (Llama
                    blocks: pre-norm, no qk-norm), the design's baseline (design arm 3)
  add               as sandwich_concat with additive injection s + e
  prenorm_iternorm  as prenorm_none with a norm on the state after every iteration
  ouro_norm         as sandwich_concat with Ouro's pre + post block norms
  zeros_init        as sandwich_concat with s_0 = 0
  fixed             as sandwich_concat with a fixed trip count 4, full backprop
  core1, core4      as sandwich_concat with block size R = 1 and R = 4
  exit_gate         as fixed, plus Ouro's exit gate and its entropy-regularised loss (beta 0.1)

Time: sandwich_concat measured 0.2 s per step on the shared 2-core CPU (steps 51-100 of a
100-step run, ~10.8k padded tokens/s at 66 tokens per row, other jobs loading the machine),
so an arm of 2,000 steps takes about 7 minutes plus ~30 s of compilation and ~1 minute of
evaluation. Not measured, estimated from the block calls per step: R = 4 arms about 1.6x,
feedforward about 1.3x, fixed and exit_gate about 1.5x (backprop through all 4 iterations).
The design's 3 arms x 3 seeds are nine such runs (about 1.5 CPU-hours).

One GPU (spec §1.7, "about 10 minutes of compute"): ``gpu_<arm>`` is the miniature Huginn,
width 512, 8 heads of 64, prelude 2 / core 4 / coda 2, trained recurrence r-bar = 8 with
backprop through k-bar = 4, batch 64, bfloat16 compute, 3,000 steps (the feed-forward baseline
then has 2 + 4 * 8 + 2 = 36 layers); ``gpu256_<arm>`` is the same layout at width 256, 4 heads,
1,000 steps, for the quick ablations. Same data as the CPU grid, so rows are ~66 tokens, not the
spec's 256 (our tasks are short; longer rows would be padding). Not run yet: no device has been
lent to a session that could run it. ``configs/looped/gpu.sh`` trains and analyses them all, in
two parts (``main``, ``ablations``) that each fit one device call.
"""

from jaxlab.llm import sft

_HUGINN = dict(n_prelude=1, n_core=2, n_coda=1, num_iterations=4, injection="concat_adapter",
               block_norm="sandwich_huginn", iter_norm="none", state_init="trunc_normal",
               state_init_std=0.0, embedding_scale=0.0, coda_norm=True,
               train_recurrence="lognormal_poisson", backprop_depth=2, recurrence_sigma=0.5,
               exit_gate=False)

ARMS = {
    "sandwich_concat": {},
    "prenorm_none": dict(injection="none", block_norm="pre", state_init="copy_e"),
    "add": dict(injection="add"),
    "prenorm_iternorm": dict(injection="none", block_norm="pre", iter_norm="rmsnorm",
                             state_init="copy_e"),
    "ouro_norm": dict(block_norm="pre_post_ouro"),
    "zeros_init": dict(state_init="zeros"),
    "fixed": dict(train_recurrence="fixed", backprop_depth=0),
    "core1": dict(n_core=1),
    "core4": dict(n_core=4),
    "exit_gate": dict(train_recurrence="fixed", backprop_depth=0, exit_gate=True),
    "feedforward": None,  # the decoder baseline
}

TASKS = ("pointer_chase", "modular_chain", "question_shaped")


# The spec's one-GPU sizes: (width, heads, prelude, core, coda, r-bar, k-bar, batch, steps).
SIZES = {"gpu": (512, 8, 2, 4, 2, 8, 4, 64, 3000), "gpu256": (256, 4, 2, 4, 2, 8, 4, 64, 1000)}


def get_config(arm: str = "sandwich_concat"):
  size, _, base = arm.partition("_") if arm.split("_")[0] in SIZES else ("", "", arm)
  if base not in ARMS:
    raise ValueError(f"configs/looped/grid.py: unknown arm {arm!r}; arms: {', '.join(ARMS)}, "
                     f"each also as {' or '.join(s + '_<arm>' for s in SIZES)}")
  c = sft.default_config()
  c.data.train_files = tuple(f"data/looped/{t}_train.jsonl" for t in TASKS)
  c.data.eval_files = tuple(f"data/looped/{t}_eval.jsonl" for t in TASKS)
  c.data.prompt_format = "{question}"
  c.data.completion_format = "{answer}"
  c.model.init = ""
  c.model.update(dict(hidden_size=64, intermediate_size=256, num_heads=4, num_kv_heads=4,
                      head_dim=16, tie_word_embeddings=True, rope_theta=10_000.0))
  looped = dict(_HUGINN)
  if size:
    width, heads, prelude, core, coda, rbar, kbar, batch, steps = SIZES[size]
    c.model.update(dict(hidden_size=width, intermediate_size=4 * width, num_heads=heads,
                        num_kv_heads=heads, head_dim=width // heads))
    looped.update(n_prelude=prelude, n_core=core, n_coda=coda, num_iterations=rbar,
                  backprop_depth=kbar)
  if ARMS[base] is None:
    c.model.family = "decoder"
    c.model.architecture = "LlamaForCausalLM"
    c.model.num_layers = looped["n_prelude"] + looped["n_core"] * looped["num_iterations"] + \
        looped["n_coda"]
  else:
    c.model.family = "looped"
    looped.update(ARMS[base])
  c.model.looped.update(looped)
  c.dtype = "float32"  # bf16 matmuls are no faster on CPU
  c.steps = 2000
  c.batch_size = 32
  c.optim.update(dict(learning_rate=1e-3, weight_decay=0.1, warmup_steps=100,
                      schedule="cosine", min_lr_ratio=0.1))
  c.log_every = 50
  c.eval.update(dict(every=500, num_examples=100, batch_size=100, max_new_tokens=4))
  c.checkpoint.every = 500
  if size:
    c.dtype = "bfloat16"
    c.batch_size, c.steps = SIZES[size][7], SIZES[size][8]
    c.eval.every = c.checkpoint.every = c.steps // 2
  return c
