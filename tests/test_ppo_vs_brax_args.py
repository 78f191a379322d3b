"""benchmarks/ppo_vs_brax.py's schedule arithmetic: the ``tuned_cpu`` preset is Playground's
tuned brax config scaled to a CPU (same epochs, minibatch count and unrolls per update), it
gives both trainers 6 updates, an explicit flag overrides it, and per-seed rows are what
``launch.analyze --data --paired=brax`` reads."""

import inspect
import os

import pytest

from benchmarks import ppo_vs_brax
from jaxlab.core import stats
from jaxlab.rl import ppo


def test_tuned_cpu_preset_keeps_the_tuned_update_shape():
  args = ppo_vs_brax.parse_args(["--preset=tuned_cpu"])
  assert (args.num_epochs, args.num_minibatches, args.unroll_length) == (16, 32, 30)
  c, updates_per_eval = ppo_vs_brax.ours_config(args, seed=0)
  # 16 unrolls of every env per update, as 1024 x 32 sequences over 2048 envs at full size.
  assert c.unrolls_per_update == 16 == 1024 * 32 // 2048
  assert c.total_env_steps == 737_280 == 6 * ppo.steps_per_update(c)
  assert updates_per_eval == 1  # an evaluation after every update
  # An explicit flag wins over the preset; no preset keeps the quickstart defaults.
  assert ppo_vs_brax.parse_args(["--preset=tuned_cpu", "--num_envs=128"]).num_envs == 128
  assert ppo_vs_brax.parse_args([]).num_epochs == 4


def test_presets_are_playgrounds_tuned_config():
  """``tuned`` is Playground's tuned brax PPO config for CartpoleBalance (6 updates of it);
  ``tuned_cpu`` the same with envs and minibatch size divided by 8."""
  from mujoco_playground.config import dm_control_suite_params  # pylint: disable=g-import-not-at-top
  want = dm_control_suite_params.brax_ppo_config("CartpoleBalance")
  full = ppo_vs_brax.parse_args(["--preset=tuned"])
  cpu = ppo_vs_brax.parse_args(["--preset=tuned_cpu"])
  names = {"num_envs": "num_envs", "unroll_length": "unroll_length",
           "batch_size": "batch_size", "num_minibatches": "num_minibatches",
           "num_epochs": "num_updates_per_batch", "learning_rate": "learning_rate",
           "entropy_cost": "entropy_cost", "discounting": "discounting",
           "reward_scaling": "reward_scaling", "episode_length": "episode_length"}
  for ours, theirs in names.items():
    assert getattr(full, ours) == want[theirs], ours
    scale = 8 if ours in ("num_envs", "batch_size") else 1
    assert getattr(cpu, ours) * scale == want[theirs], ours
  # Playground leaves the clipping to brax's default.
  from brax.training.agents.ppo import train as brax_ppo  # pylint: disable=g-import-not-at-top
  assert "clipping_epsilon" not in want
  clip = inspect.signature(brax_ppo.train).parameters["clipping_epsilon"].default
  assert full.clipping_epsilon == cpu.clipping_epsilon == clip
  c, _ = ppo_vs_brax.ours_config(full, seed=0)
  assert c.total_env_steps == 5_898_240 == 6 * ppo.steps_per_update(c)


def test_seed_rows_round_trip_and_pair_by_seed(tmp_path):
  run = lambda ret: {"final_return": ret, "sps": 1000.0, "wall_s": 60.0}  # noqa: E731
  rows = [{"seed": 0, "ours": run(500.0), "brax": run(450.0)},
          {"seed": 1, "ours": run(300.0), "brax": run(400.0)}]
  path = os.path.join(tmp_path, "seeds.csv")
  stats.write_seed_rows(path, ppo_vs_brax.seed_rows(rows), ppo_vs_brax.SEED_COLUMNS)
  columns, back = stats.read_seed_rows(path)
  assert columns == list(ppo_vs_brax.SEED_COLUMNS)
  assert [(r["arm"], r["run"]) for r in back] == [("ours", "ours_s0"), ("ours", "ours_s1"),
                                                  ("brax", "brax_s0"), ("brax", "brax_s1")]
  diffs = stats.paired_differences(back, ["final_return"], "brax")
  assert [d["final_return"] for d in diffs] == [50.0, -100.0]


def test_advantage_arms_are_named(tmp_path):
  args = ppo_vs_brax.parse_args(["--advantages=gae,lambda_td"])
  assert [ppo_vs_brax.ours_arm(e) for e in args.advantages] == ["ours", "ours_lambda_td"]
  assert ppo_vs_brax.ours_config(args, 0, "lambda_td")[0].advantage_estimator == "lambda_td"
  run = lambda ret: {"final_return": ret, "sps": 1000.0, "wall_s": 60.0}  # noqa: E731
  rows = [{"seed": s, "ours": run(1.0 + s), "ours_lambda_td": run(2.0 + s), "brax": run(3.0)}
          for s in (0, 1)]
  path = os.path.join(tmp_path, "seeds.csv")
  stats.write_seed_rows(path, ppo_vs_brax.seed_rows(rows), ppo_vs_brax.SEED_COLUMNS)
  _, back = stats.read_seed_rows(path)
  assert [r["arm"] for r in back] == ["ours"] * 2 + ["ours_lambda_td"] * 2 + ["brax"] * 2
  diffs = stats.paired_differences(back, ["final_return"], "ours")
  assert [(d["arm"], d["final_return"]) for d in diffs] == [
      ("ours_lambda_td − ours", 1.0), ("ours_lambda_td − ours", 1.0), ("brax − ours", 2.0),
      ("brax − ours", 1.0)]


def test_init_and_learner_arms_are_named():
  args = ppo_vs_brax.parse_args(["--advantages=gae,lambda_td", "--inits=orthogonal,lecun_uniform"])
  assert [ppo_vs_brax.ours_arm(e, i) for e in args.advantages for i in args.inits] == [
      "ours", "ours_lecun_uniform", "ours_lambda_td", "ours_lambda_td_lecun_uniform"]
  c, _ = ppo_vs_brax.ours_config(args, 0, "gae", "lecun_uniform")
  assert (c.network.init, c.advantage_estimator) == ("lecun_uniform", "gae")
  assert ppo_vs_brax.ours_config(args, 0)[0].network.init == "orthogonal"
  args = ppo_vs_brax.parse_args(["--preset=tuned_cpu", "--recompute=off,on"])
  assert ppo_vs_brax.learners(args) == [("transition", "update"), ("sequence", "minibatch")]
  assert [ppo_vs_brax.ours_arm("gae", "orthogonal", r, u)
          for u, r in ppo_vs_brax.learners(args)] == ["ours", "ours_recompute"]
  c, _ = ppo_vs_brax.ours_config(args, 0, refresh="minibatch")
  assert (c.advantage_refresh, c.minibatch_unit) == ("minibatch", "sequence")
  ppo.check_config(c)  # tuned_cpu's 4,096 sequences split into its 32 minibatches
  c, _ = ppo_vs_brax.ours_config(args, 0)
  assert (c.advantage_refresh, c.minibatch_unit) == ("update", "transition")
  args = ppo_vs_brax.parse_args(["--preset=tuned_cpu", "--units=transition,sequence",
                                 "--recompute=off,epoch,on"])
  assert [ppo_vs_brax.ours_arm("gae", "orthogonal", r, u)
          for u, r in ppo_vs_brax.learners(args)] == [
              "ours", "ours_sequence", "ours_epoch", "ours_epoch_sequence", "ours_recompute"]
  for unit, refresh in ppo_vs_brax.learners(args):
    c, _ = ppo_vs_brax.ours_config(args, 0, refresh=refresh, unit=unit)
    assert (c.advantage_refresh, c.minibatch_unit) == (refresh, unit)
    ppo.check_config(c)
  args = ppo_vs_brax.parse_args(["--units=sequence"])
  assert ppo_vs_brax.learners(args) == [("sequence", "update")]
  args = ppo_vs_brax.parse_args(["--preset=tuned_cpu", "--obs_stats=after,before"])
  assert [ppo_vs_brax.ours_arm("gae", timing=t) for t in args.obs_stats] == [
      "ours", "ours_stats_before"]
  c, _ = ppo_vs_brax.ours_config(args, 0, timing="before")
  assert (c.obs_stats_timing, c.normalize_observations) == ("before", True)
  ppo.check_config(c)
  assert ppo_vs_brax.ours_config(args, 0)[0].obs_stats_timing == "after"


@pytest.mark.parametrize("flag, needle", [
    ("--advantages=gae,brax", "--advantages: 'brax' is not one of"),
    ("--inits=xavier", "--inits: 'xavier' is not one of"),
    ("--recompute=yes", "--recompute: 'yes' is not one of"),
    ("--units=episode", "--units: 'episode' is not one of"),
    ("--obs_stats=during", "--obs_stats: 'during' is not one of"),
])
def test_bad_arm_flags_exit_2(flag, needle, capsys):
  with pytest.raises(SystemExit) as err:
    ppo_vs_brax.parse_args([flag])
  assert err.value.code == 2
  assert needle in capsys.readouterr().err


def test_braxs_default_policy_is_what_the_init_arm_copies():
  """What ``--inits=lecun_uniform`` copies from the brax run: brax's default PPO policy (what
  run_brax trains) is one MLP whose last LeCun-uniform layer, bias zero, emits both the mean
  and the pre-softplus scale of each action (so the scale is state-dependent and starts near
  softplus(0) + 0.001), with the same hidden sizes and activation as ours."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from brax.training.agents.ppo import networks as brax_networks  # pylint: disable=g-import-not-at-top
  nets = brax_networks.make_ppo_networks(5, 1)
  params = nets.policy_network.init(jax.random.PRNGKey(0))["params"]
  ours = ppo.default_config().network
  hidden = [params[f"hidden_{i}"]["kernel"].shape for i in range(len(params))]
  assert hidden == [(5, 32)] + [(32, 32)] * 3 + [(32, 2)]  # 2 = mean and scale of 1 action
  assert (ours.policy_width, ours.policy_depth) == (32, 4)
  last = params[f"hidden_{len(params) - 1}"]
  np.testing.assert_array_equal(last["bias"], 0.0)
  assert np.abs(last["kernel"]).max() <= np.sqrt(3 / 32)
  assert inspect.signature(brax_networks.make_ppo_networks).parameters[
      "distribution_type"].default == "tanh_normal"


def test_curve_rows_hold_every_evaluation(tmp_path):
  curve = lambda ret: [(10.0, 0, 1.0), (20.0, 100, ret)]  # noqa: E731
  run = lambda ret: {"final_return": ret, "sps": 1.0, "wall_s": 20.0, "curve": curve(ret)}  # noqa: E731
  rows = [{"seed": s, "ours": run(5.0 + s), "brax": run(7.0)} for s in (0, 1)]
  path = os.path.join(tmp_path, "curves.csv")
  stats.write_seed_rows(path, ppo_vs_brax.curve_rows(rows), ppo_vs_brax.CURVE_COLUMNS)
  columns, back = stats.read_seed_rows(path)
  assert columns == list(ppo_vs_brax.CURVE_COLUMNS)
  assert [(r["run"], r["env_steps"], r["eval_return"]) for r in back] == [
      ("ours_s0", 0, 1.0), ("ours_s0", 100, 5.0), ("ours_s1", 0, 1.0), ("ours_s1", 100, 6.0),
      ("brax_s0", 0, 1.0), ("brax_s0", 100, 7.0), ("brax_s1", 0, 1.0), ("brax_s1", 100, 7.0)]
