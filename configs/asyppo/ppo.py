"""Paper 5 (AsyPPO, spec llm_rl.md §2) at small scale: GRPO, PPO with one critic, and AsyPPO.

    python -m launch.train --config=configs/llm/sft_rl_reference.py:clean --workdir=runs/rl_reference_clean
    python -m launch.train --config=configs/llm/sft_rl_reference.py:noisy --workdir=runs/rl_reference
    python -m launch.train --config=configs/asyppo/ppo.py:asyppo --workdir=runs/asyppo/asyppo_s0

Arms (the argument after ":"):

* ``grpo``: group-normalised advantages, no critic.
* ``ppo_small``: PPO with one small critic (a 1-layer, width-64 decoder with a value head).
* ``ppo_large``: PPO with one actor-sized critic (a copy of the reference's body).
* ``asyppo``: two small critics on disjoint halves of every prompt's group; GAE on their mean;
  the lowest 20% of per-token critic disagreement σ drop out of the policy gradient and the
  highest 20% out of the entropy bonus (k = h = 0.2).
* ``asyppo_nomask``, ``asyppo_advmask``, ``asyppo_entfilter``: the ensemble with no mask, only
  the advantage mask, only the entropy filter.

Shared setting: the policy starts from the reference (configs/llm/sft_rl_reference.py); 16
prompts x 8 responses per step at temperature 1; data reuse 4 (2 epochs x 2 minibatches, the
regime where the paper's masks matter), clip 0.2, AsyPPO's 1/|o| aggregation, entropy bonus
1e-3 for every arm, no KL term; GAE γ = 1, λ = 0.95 for the actor, Monte-Carlo targets for the
critics (critic Adam 1e-3, 2 steps per rollout batch); actor Adam 1e-4; 80 steps.
Expected and time: docs/reproductions/asyppo.md.
"""

from jaxlab.llm import rl

ARMS = ("grpo", "ppo_small", "ppo_large", "asyppo", "asyppo_nomask", "asyppo_advmask",
        "asyppo_entfilter")


def get_config(arm: str = "asyppo"):
  if arm not in ARMS:
    raise ValueError(f"configs/asyppo/ppo.py: arm {arm!r} is not one of {ARMS}")
  c = rl.chain_sum_config()
  c.epochs = 2
  c.minibatches = 2
  c.optim.learning_rate = 1e-4
  c.pg.aggregation = "seq-mean-token-mean"
  c.pg.entropy_coef = 1e-3
  c.pg.clip_eps_low = 0.2
  c.pg.clip_eps_high = 0.2
  if arm == "grpo":
    c.pg.advantage = "grpo"
  else:
    c.pg.advantage = "gae"
    c.pg.gamma = 1.0
    c.pg.lam = 0.95
    c.critic.lam = 1.0
    c.critic.learning_rate = 1e-3
    c.critic.epochs = 2
    c.critic.num_critics = 1 if arm.startswith("ppo") else 2
    if arm == "ppo_large":
      c.critic.init = "policy"
    if arm in ("asyppo", "asyppo_advmask"):
      c.asyppo.adv_mask_k = 0.2
    if arm in ("asyppo", "asyppo_entfilter"):
      c.asyppo.entropy_filter_h = 0.2
  return c
