"""PQN on gymnax CartPole-v1: the quick check that Q(λ) without replay or target network learns.

    python -m launch.train --config=configs/pqn/cartpole.py --workdir=runs/pqn_cartpole

Hyperparameters follow purejaxql's CartPole config (32 envs x 64 steps, 16 minibatches, 4 epochs,
λ = 0.95, rewards x 0.1, ε 1 -> 0.2 over 20% of the run, LayerNorm MLP, lr linearly decayed),
with a 128-wide trunk and 300k env steps to suit a CPU.
Expected: greedy eval return 500 (the maximum), first reached at ~205k env steps.
Time: 7-16 s of training on a 2-core CPU (plus ~10 s of compilation).
The learning test (tests/rl/test_pqn.py) runs this config; see docs/reproductions/stable_gradients.md.
"""

from jaxlab.rl import pqn


def get_config():
  c = pqn.default_config()
  c.env.name = "gymnax/CartPole-v1"
  c.env.episode_length = 500
  c.total_env_steps = 300_000
  c.num_envs = 32
  c.unroll_length = 64
  c.num_minibatches = 16
  c.num_epochs = 4
  c.learning_rate = 1e-4
  c.lr_schedule = "linear"
  c.max_grad_norm = 10.0
  c.gamma = 0.99
  c.q_lambda = 0.95
  c.reward_scaling = 0.1
  c.exploration.eps_start = 1.0
  c.exploration.eps_finish = 0.2
  c.exploration.eps_decay = 0.2
  c.network.kind = "plain"
  c.network.width = 128
  c.network.depth = 2
  c.network.layernorm = True
  c.log_every = 10
  c.eval.every = 50
  c.eval.num_envs = 16
  c.checkpoint.every = 50
  c.target_return = 475.0
  return c
