"""GroundCUA RLOO (spec §2.3 stage 2, §2.7) of the tiny SFT model, on the same synthetic data.

    # after configs/groundcua/sft_tiny.py (its docstring generates the data and trains)
    python -m launch.train --config=configs/groundcua/rl_tiny.py --workdir=runs/groundcua_rl

The recipe of §2.3: RLOO (A_i = r_i - mean of the other 7 rewards of its prompt), 8
rollouts per prompt at temperature 1, one update per rollout batch (on-policy, importance
ratio 1, so the clip range [1 - 0.2, 1 + 0.4] is inactive), no KL term, no entropy bonus,
token-mean aggregation (verl's default), the reward of
:func:`jaxlab.grounding.reward.groundcua_reward` (discretised, zero-centred distance to the
box in the resized frame; a format failure is scored as the point (0, 0)). Rollouts and the
step's forward passes read each row's screenshot (padded image batches, as in SFT);
``eval/accuracy`` is greedy held-out point-in-box accuracy (the ``groundcua`` verifier).

Differences from the paper, by scale: the policy is the tiny from-scratch model of
``sft_tiny.py`` with a char tokenizer, so a whole tool call is 111-114 tokens and
``sampling.max_new_tokens`` is 120 (the paper's 64 Qwen tokens hold the same call); 4
prompts x 8 rollouts per step instead of 64 x 8; Adam at 1e-5 instead of 1e-6 (a
from-scratch model, not a 3B checkpoint).

Measured (3 steps from the 150-step SFT export, this 2-core CPU): ~5.7 s per step after
compilation (1.5 s sampling 32 x ~112 tokens, 4.1 s for the scoring forwards and the
update), importance ratio 1.000, mean reward -0.76. Run to the end from seed 0's 2,000-step
SFT model (docs/reproductions/groundcua.md, 2026-12-06): ~7.7 s a step with nothing else
running, so 200 steps take ~26 min plus evaluations; held-out accuracy 0.200 -> 0.215 and
mean reward -0.2015 -> -0.187 on the 200 held-out rows. Seed 1 (2026-12-06): 0.255 -> 0.27 and
-0.0925 -> -0.0755. Seed 2: 0.235 -> 0.27 and -0.1565 -> -0.0955 (~6 s a step, 20 min).
Seed 3 (under the blocked attention, 17.5 min): 0.23 -> 0.23 and -0.1495 -> -0.129. Seed 4
(17.5 min): 0.255 -> 0.245 and -0.115 -> -0.1055. Paired RL - SFT over the three pre-registered
seeds: accuracy +0.022 +- 0.029, reward +0.031 +- 0.065; over all five: +0.011 +- 0.021, +0.024
+- 0.026 (95% Student-t; every interval includes 0, so the study's RL criterion is not met,
though reward gained on every seed; docs/reproductions/groundcua.md).
"""

import os

from jaxlab.core.config import load_module
from jaxlab.llm import rl

DATA = "runs/groundcua_data"


def get_config(size="cpu"):
  """``size``: ``cpu`` (above) or ``gpu`` (``configs/groundcua/gpu.sh``: the 896x560 data and
  model of ``sft_tiny.py:gpu``, 32 prompts x 8 rollouts per step, 100 steps, bfloat16)."""
  if size not in ("cpu", "gpu"):
    raise ValueError(f"configs/groundcua/rl_tiny.py:{size}: expected cpu or gpu")
  sft_cfg = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sft_tiny.py"))
  data = DATA if size == "cpu" else sft_cfg.GPU_DATA
  c = rl.default_config()
  c.model.init = "runs/groundcua_sft/hf_model"
  c.data.train_files = (f"{data}/train/tasks.jsonl",)
  c.data.eval_files = (f"{data}/heldout/tasks.jsonl",)
  c.data.image_field = "image"
  c.data.image_placeholder = "image"
  c.data.prompt_format = "{system}\n{image}{question}\n"  # as sft_tiny.py
  c.data.max_patches = 308
  c.reward.fn = "jaxlab.grounding.reward:groundcua_reward"
  c.dtype = "float32"
  c.steps = 200
  c.prompts_per_step = 4
  c.group_size = 8
  c.sampling.update(dict(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=120))
  c.epochs = 1
  c.minibatches = 1
  c.pg.advantage = "rloo"
  c.pg.aggregation = "token-mean"
  c.pg.clip_eps_low = 0.2
  c.pg.clip_eps_high = 0.4
  c.pg.entropy_coef = 0.0
  c.pg.kl.name = "none"
  c.pg.kl.coef = 0.0
  c.optim.update(dict(learning_rate=1e-5, schedule="constant", warmup_steps=0,
                      weight_decay=0.0))
  c.log_every = 10
  c.eval.update(dict(every=50, num_examples=100, batch_size=100, max_new_tokens=120))
  c.checkpoint.every = 50
  if size == "gpu":
    c.data.max_patches = sft_cfg.GPU_PATCHES
    c.dtype = "bfloat16"
    c.steps = 100
    c.prompts_per_step = 32
    c.eval.update(dict(every=0, num_examples=500, batch_size=250))
  return c
