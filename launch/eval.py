"""Evaluate a trained run: in its own (JAX) env, and on the original dm_control suite.

    python -m launch.eval --workdir=runs/quickstart                       # both, 10 episodes
    python -m launch.eval --workdir=runs/quickstart --dm_control=false

Restores the newest checkpoint of ``workdir`` with the run's own ``config.json``. For
Playground DM Control tasks, the deterministic policy of seed ``--seed_index`` is also run on
``dm_control.suite`` (CPU MuJoCo, the environment the papers report), with observations laid
out as Playground's. Results are printed and written to ``workdir/eval.json``.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by launch.train.")
_EPISODES = flags.DEFINE_integer("episodes", 10, "Episodes per evaluation.")
_DM_CONTROL = flags.DEFINE_bool("dm_control", True,
                                "Also evaluate on the original dm_control suite when the run's "
                                "env is a Playground DM Control task.")
_SEED_INDEX = flags.DEFINE_integer("seed_index", 0, "Which of the run's seeds to evaluate.")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from jaxlab import trainers  # pylint: disable=import-outside-toplevel
  from jaxlab.core import loop, prng  # pylint: disable=import-outside-toplevel
  from jaxlab.core.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  from jaxlab.core.errors import JaxlabError  # pylint: disable=import-outside-toplevel
  from jaxlab.envs import dm_control_eval  # pylint: disable=import-outside-toplevel
  from jaxlab.envs.from_config import make_from_config  # pylint: disable=import-outside-toplevel

  workdir = _WORKDIR.value
  path = os.path.join(workdir, "config.json")
  try:
    if not os.path.exists(path):
      raise JaxlabError(f"{path} does not exist; is '{workdir}' a run directory of launch.train?")
    with open(path) as f:
      config = ml_collections.ConfigDict(json.load(f))
    module = trainers.get(config.trainer)
    if not hasattr(module, "make_train"):
      raise JaxlabError(f"launch.eval evaluates RL runs; trainer '{config.trainer}' has its own "
                        "evaluation")
    trainer = module.make_train(config, make_from_config(config.env))
    like = loop.init_seeds(trainer, prng.seed_keys(config.seed, config.num_seeds))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=1)
    state, _, step = ckpt.restore(like)
    ckpt.close()
    if not 0 <= _SEED_INDEX.value < config.num_seeds:
      raise JaxlabError(f"--seed_index={_SEED_INDEX.value} but the run has "
                        f"{config.num_seeds} seeds")
  except JaxlabError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)

  one = jax.tree.map(lambda x: x[_SEED_INDEX.value], state)
  results = {"checkpoint_update": step, "env": config.env.name}
  returns = []
  for episode in range(_EPISODES.value):
    key = jax.random.fold_in(jax.random.PRNGKey(12345), episode)
    returns.append(float(jax.jit(trainer.evaluate)(one, key)["eval/episode_return"]))
  results["jax_env_return_mean"] = float(np.mean(returns))
  print(f"{config.env.name} (update {step}): mean return {np.mean(returns):.1f} over "
        f"{len(returns)} evaluations of {config.eval.num_envs} envs")

  task = config.env.name.partition("/")[2]
  if _DM_CONTROL.value and task in dm_control_eval.PLAYGROUND_TO_DM_CONTROL:
    domain, dm_task = dm_control_eval.PLAYGROUND_TO_DM_CONTROL[task]
    act = jax.jit(lambda obs: trainer.act(one.params, one.obs_stats, obs, jax.random.PRNGKey(0),
                                          deterministic=True)[0])
    out = dm_control_eval.evaluate(lambda obs: np.asarray(act(obs)), domain, dm_task,
                                   _EPISODES.value, seed=0,
                                   action_repeat=config.env.action_repeat)
    results["dm_control"] = {"domain": domain, "task": dm_task, **{
        k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in out.items()}}
    print(f"dm_control {domain}-{dm_task}: mean return {out['mean_return']:.1f} "
          f"± {out['std_return']:.1f} over {_EPISODES.value} episodes")
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
