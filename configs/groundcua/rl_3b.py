"""GroundNext RL (spec §2.3 stage 2, verl's groundnext-3b.sh) of the SFT'd 3B model, on GPUs
(documented, not run here).

    python -m launch.train --config=configs/groundcua/rl_3b.py --workdir=runs/groundnext_3b_rl \\
        --config.model.init=runs/groundnext_3b/hf_model \\
        --config.data.train_files=/data/groundcua/rl/tasks.jsonl \\
        --config.data.eval_files=/data/groundcua/heldout/tasks.jsonl
    # with the paper's system prompt from your own file (as configs/groundcua/sft_3b.py):
    python -m launch.train --config=configs/groundcua/rl_3b.py:/path/system_prompt.txt ...

Recipe: RLOO, 8 rollouts per prompt at temperature 1, 64 prompts per batch and one PPO
mini-batch of 64 (one optimiser step per batch: on-policy, ratio 1 up to numerics), actor
lr 1e-6 constant without warmup, clip ratio high 0.4 (low 0.2, verl's default), no KL loss
and no KL in the reward, entropy coefficient 0, at most 64 new tokens, one epoch over the
RL set (~10K prompts -> 156 steps), reward
:func:`jaxlab.grounding.reward.groundcua_reward`. The prompt must be the SFT run's (same
system text and transcript, same ``data.max_pixels``), so that coordinates are in the frame
the model was trained in.
"""

from jaxlab.grounding import schema
from jaxlab.llm import rl

MAX_PIXELS = 12_845_056


def get_config(system_prompt_file: str = ""):
  c = rl.default_config()
  c.model.init = "runs/groundnext_3b/hf_model"  # the SFT run's export
  c.data.train_files = ("runs/groundcua_data/train/tasks.jsonl",)
  c.data.eval_files = ("runs/groundcua_data/heldout/tasks.jsonl",)
  c.data.image_field = "image"
  c.data.image_placeholder = "image"
  system = "{system}"
  if system_prompt_file:
    system = schema.system_format(schema.read_system_template(system_prompt_file))
  c.data.prompt_format = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
                          "{image}{question}<|im_end|>\n<|im_start|>assistant\n")
  c.data.min_pixels = 56 * 56
  c.data.max_pixels = MAX_PIXELS
  c.data.max_prompt_len = 10_000
  c.reward.fn = "jaxlab.grounding.reward:groundcua_reward"
  c.dtype = "bfloat16"
  c.steps = 156  # one epoch over ~10K prompts
  c.prompts_per_step = 64
  c.group_size = 8
  c.sampling.update(dict(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=64))
  c.epochs = 1
  c.minibatches = 1
  c.pg.advantage = "rloo"
  c.pg.aggregation = "token-mean"
  c.pg.clip_eps_low = 0.2
  c.pg.clip_eps_high = 0.4
  c.pg.entropy_coef = 0.0
  c.pg.kl.name = "none"
  c.pg.kl.coef = 0.0
  c.optim.update(dict(learning_rate=1e-6, schedule="constant", warmup_steps=0,
                      weight_decay=0.0, max_grad_norm=1.0))
  c.log_every = 1
  c.eval.update(dict(every=50, num_examples=500, batch_size=16, max_new_tokens=64))
  c.checkpoint.every = 25
  return c
