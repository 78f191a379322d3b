"""Kron vs RAdam: time of one PQN SGD step (loss, gradient, optimizer update), side by side.

    python benchmarks/kron_vs_adam.py                         # MinAtar CNN + 128-wide trunk
    python benchmarks/kron_vs_adam.py --preset=small          # + the paper's small trunk (W 512)

The network is PQN's Q-network for Breakout-MinAtar (configs/pqn/breakout_minatar.py; MinAtar
CNN, LayerNorm MLP trunk, Q head) and the step is its TD regression on a random minibatch of
``--batch`` states: forward, backward, ``[clip] -> optimizer``, apply. Three optimizers:

* ``radam``: PQN's optimiser (spec §1.5);
* ``kron p=1``: Kron refitting its preconditioner every step (the first ~500 steps of a run);
* ``kron p=0.03``: the schedule's floor, i.e. after a few thousand steps (spec §2.3). Kron's
  refit is a ``lax.cond``, so steps without one skip it.

Each is compiled first; then ``--steps`` steps run as one ``lax.scan``, repeated ``--repeats``
times, alternating optimizers; the median time per step is reported. Prints one row per
optimizer and a last line ``ratio=<kron p=0.03 / radam step time>`` (the long-run cost; Table
12 of the Stable-Gradients paper reports 2-5x for whole PQN runs on an RTX 8000).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

from flax import nnx  # pylint: disable=g-import-not-at-top

from jaxlab import optim  # pylint: disable=g-import-not-at-top
from jaxlab.core import config as config_lib  # pylint: disable=g-import-not-at-top
from jaxlab.envs.from_config import make_from_config  # pylint: disable=g-import-not-at-top
from jaxlab.rl import pqn  # pylint: disable=g-import-not-at-top


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=128, help="minibatch (PQN MinAtar: 4096 / 32)")
  p.add_argument("--steps", type=int, default=50, help="SGD steps per timed scan")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--kind", default="plain")
  p.add_argument("--preset", default="", help="trunk preset ('' = 128-wide, 1 layer)")
  p.add_argument("--lr", type=float, default=5e-4)
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  c = config_lib.load_file(os.path.join(REPO, "configs", "pqn", "breakout_minatar.py"))
  c.network.kind, c.network.preset = args.kind, args.preset
  env = make_from_config(c.env)
  graphdef, params = nnx.split(pqn.QNetwork(env.spec, c.network, rngs=nnx.Rngs(0)))
  n_params = sum(x.size for x in jax.tree.leaves(params))
  k_obs, k_act, k_tgt = jax.random.split(jax.random.PRNGKey(1), 3)
  obs = jax.random.bernoulli(k_obs, 0.1, (args.batch,) + env.spec.obs_shape).astype(jnp.float32)
  action = jax.random.randint(k_act, (args.batch,), 0, env.spec.action_size)
  target = jax.random.normal(k_tgt, (args.batch,))

  def loss(p):
    q = nnx.merge(graphdef, p)(obs)
    return 0.5 * jnp.mean(jnp.square(jnp.take_along_axis(q, action[:, None], -1)[:, 0] - target))

  def make(name, prob):
    kwargs = {} if prob is None else dict(preconditioner_update_probability=prob)
    return optim.make_optimizer(name, args.lr, max_grad_norm=10.0, kron_kwargs=kwargs).tx

  arms = {"radam": make("radam", None), "kron p=1": make("kron", 1.0),
          "kron p=0.03": make("kron", 0.03)}
  runs = {}
  for name, tx in arms.items():
    @jax.jit
    def run(p, s, tx=tx):
      def step(carry, _):
        p, s = carry
        value, g = jax.value_and_grad(loss)(p)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), value
      return jax.lax.scan(step, (p, s), None, length=args.steps)
    state = (params, tx.init(params))
    t0 = time.perf_counter()
    state, _ = run(*state)
    jax.block_until_ready(state)
    runs[name] = dict(run=run, state=state, compile_s=time.perf_counter() - t0, times=[])
  for _ in range(args.repeats):
    for r in runs.values():
      t0 = time.perf_counter()
      r["state"], losses = r["run"](*r["state"])
      jax.block_until_ready(losses)
      r["times"].append((time.perf_counter() - t0) / args.steps)
  device = jax.devices()[0]
  print(f"device={device.platform}:{device.device_kind} params={n_params:,} batch={args.batch} "
        f"kind={args.kind} preset={args.preset or '-'} steps={args.steps}x{args.repeats}")
  ms = {name: 1e3 * float(np.median(r["times"])) for name, r in runs.items()}
  for name, r in runs.items():
    print(f"{name:12s} ms/step={ms[name]:8.3f} x_radam={ms[name] / ms['radam']:.2f} "
          f"first_scan_s(compile+run)={r['compile_s']:.1f}")
  print(f"ratio={ms['kron p=0.03'] / ms['radam']:.3f}")


if __name__ == "__main__":
  main()
