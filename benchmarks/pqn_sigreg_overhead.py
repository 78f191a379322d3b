"""PQN env-steps/s on MinAtar with and without SIGReg, side by side in one process.

    python benchmarks/pqn_sigreg_overhead.py                      # Breakout-MinAtar, CPU-sized
    python benchmarks/pqn_sigreg_overhead.py --num_envs=128 --chunks=10 --seeds=3   # on a GPU

Both arms are configs/pqn/breakout_minatar.py (128 envs x 32 steps, 32 minibatches, 2 epochs,
MinAtar CNN + LayerNorm MLP trunk) with health diagnostics off; they differ only in
``aux.sigreg.weight`` (0 vs ``--weight``). SIGReg is computed on the trunk output in the same
forward pass as the TD loss (spec rl.md §1.4), so its cost is the projection, the cos/sin of
[B, 16, 8] values and their backward pass.

Each arm's chunk (``--updates`` updates, ``--seeds`` vmapped seeds) is compiled and run once
before timing; then the arms alternate, ``--chunks`` timed chunks each (ABAB, so a noisy shared
machine slows both alike), and env steps/s is total env steps / total time. Prints one row per
arm and a last line ``ratio=<with/without env-steps/s>`` (1.0 = free; below 1 = overhead).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

from jaxlab.core import config as config_lib  # pylint: disable=g-import-not-at-top
from jaxlab.core import loop  # pylint: disable=g-import-not-at-top
from jaxlab.envs.from_config import make_from_config  # pylint: disable=g-import-not-at-top
from jaxlab.rl import pqn  # pylint: disable=g-import-not-at-top


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--game", default="Breakout", help="MinAtar game (Breakout, SpaceInvaders...)")
  p.add_argument("--num_envs", type=int, default=128)
  p.add_argument("--unroll_length", type=int, default=32)
  p.add_argument("--num_minibatches", type=int, default=32)
  p.add_argument("--updates", type=int, default=2, help="updates per timed chunk")
  p.add_argument("--chunks", type=int, default=3, help="timed chunks per arm")
  p.add_argument("--seeds", type=int, default=1, help="seeds vmapped in one program")
  p.add_argument("--weight", type=float, default=0.2, help="SIGReg weight of the second arm")
  p.add_argument("--kind", default="plain", help="trunk kind (plain/residual/multiskip)")
  p.add_argument("--preset", default="", help="trunk preset ('' = the config's 128-wide trunk)")
  return p.parse_args(argv)


def make_config(args, weight: float):
  path = os.path.join(REPO, "configs", "pqn", "breakout_minatar.py")
  c = config_lib.load_file(path, args.game)
  c.num_envs, c.unroll_length = args.num_envs, args.unroll_length
  c.num_minibatches = args.num_minibatches
  c.log_every = args.updates
  c.eval.every, c.checkpoint.every = 0, 0
  c.total_env_steps = c.num_envs * c.unroll_length * args.updates
  c.health.enabled = False
  c.network.kind = args.kind
  c.network.preset = args.preset
  c.aux.sigreg.weight = weight
  loop.validate(pqn.TRAINER, c)
  return c


def main(argv=None):
  args = parse_args(argv)
  arms = {}
  for name, weight in (("without", 0.0), ("with", args.weight)):
    c = make_config(args, weight)
    trainer = pqn.make_train(c, make_from_config(c.env))
    keys = jax.random.split(jax.random.PRNGKey(0), args.seeds)
    state = jax.jit(jax.vmap(trainer.init))(keys)
    chunk = jax.jit(jax.vmap(trainer.chunk), donate_argnums=0)
    t0 = time.perf_counter()
    state, metrics = chunk(state)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    steps = trainer.steps_per_update * args.updates * args.seeds
    arms[name] = dict(chunk=chunk, state=state, steps=steps, compile_s=compile_s, times=[],
                      loss=metrics.get("loss/sigreg"))
  for _ in range(args.chunks):
    for arm in arms.values():
      t0 = time.perf_counter()
      arm["state"], _ = arm["chunk"](arm["state"])
      jax.block_until_ready(arm["state"])
      arm["times"].append(time.perf_counter() - t0)
  device = jax.devices()[0]
  print(f"device={device.platform}:{device.device_kind} game={args.game}-MinAtar "
        f"envs={args.num_envs}x{args.unroll_length} minibatches={args.num_minibatches} "
        f"seeds={args.seeds} kind={args.kind} preset={args.preset or '-'}")
  sps = {}
  for name, arm in arms.items():
    total = float(np.sum(arm["times"]))
    sps[name] = arm["steps"] * len(arm["times"]) / total
    extra = "" if arm["loss"] is None else f" sigreg={float(np.mean(arm['loss'])):.4f}"
    print(f"{name:8s} sigreg_weight={0.0 if name == 'without' else args.weight:<4g} "
          f"env_steps/s={sps[name]:10.1f} chunk_s={np.median(arm['times']):.3f} "
          f"first_chunk_s(compile+run)={arm['compile_s']:.1f}{extra}")
  print(f"ratio={sps['with'] / sps['without']:.3f}")


if __name__ == "__main__":
  main()
