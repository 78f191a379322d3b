"""Paper 3 (KL estimators, spec llm_rl.md §1) at small scale: RLOO with one KL configuration.

    python -m launch.train --config=configs/llm/sft_rl_reference.py --workdir=runs/rl_reference
    python -m launch.train --config=configs/kl_estimators/rloo.py:R1 --workdir=runs/kl/R1_s0
    python -m launch.train --config=configs/kl_estimators/rloo.py:L3,async \
        --workdir=runs/kl/L3_async_s0 --config.seed=0

The argument after ":" is a row name of the spec's table (jaxlab/llm/kl.py): "none" (β = 0),
"R1" (k1 in reward), "L1" (k1 in loss), "L3" (k3 in loss, GRPO's default), "R5" (k3 in
reward), "B3" (k3 in both), ... optionally followed by ",async" for the asynchronous mode
(the generating policy lags the learner by ``async_lag`` = 4 updates, with 4 minibatch
updates per rollout batch and Dr.GRPO's mean-centred advantages, as the paper's off-policy
study; β and everything else unchanged).

Setting: the reference (configs/llm/sft_rl_reference.py, stopped early) is both the initial
policy and the frozen π_ref. Strictly on-policy RLOO (one update per rollout batch, ratio 1),
16 prompts x 8 samples per step at temperature 1, token-sum aggregation (the sums of spec §1.4,
no length normalisation), β = 0.3, Adam 3e-4, 80 steps.
Expected and time: docs/reproductions/kl_estimators.md.
"""

from jaxlab.llm import rl


def get_config(arg: str = "R1"):
  parts = arg.split(",")
  name, mode = parts[0], parts[1] if len(parts) > 1 else "sync"
  if mode not in ("sync", "async"):
    raise ValueError(f"configs/kl_estimators/rloo.py: mode {mode!r} is not 'sync' or 'async'")
  c = rl.chain_sum_config()
  c.optim.learning_rate = 3e-4
  c.pg.advantage = "rloo"
  c.pg.aggregation = "token-sum"
  c.pg.kl.name = name
  c.pg.kl.coef = 0.0 if name == "none" else 0.3
  if mode == "async":
    c.async_lag = 4
    c.minibatches = 4
    c.pg.advantage = "grpo"
    c.pg.grpo_std_normalize = False  # Dr.GRPO: mean-only centring
  return c
