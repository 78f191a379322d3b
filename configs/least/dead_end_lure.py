"""LEAST on a dead end with a lure (the redesigned study): TD3 on toy/DeadEndLure, without
the stop rule and with it at four ω scales.

    python -m launch.train --config=configs/least/dead_end_lure.py:base --workdir=runs/least_study/base
    python -m launch.train --config=configs/least/dead_end_lure.py:w0.3 --workdir=runs/least_study/w0.3
    (likewise w0.45, w0.6, w1.0)

The task (``jaxlab/envs/toy.py``): a point on [-1, 2] starting near 0, goal x >= 1.2 (+1 per
step, 12 steps away at full speed, best return about 88.5 of 100 steps), a dead end x < -0.3
(stuck for the rest of the episode at -0.1 per step) 3 steps away, and a lure: the step that
enters the dead end pays +1. Uniform random actions: the dead end entered on 59% of the
episodes (38% of the steps), the goal reached on 3%.

Arms: ``base`` (LEAST off) and ``w<scale>`` (LEAST on, ``config.least.omega_scale`` = scale;
the spec's "ω coefficient" range is [0.3, 0.6], 1.0 is the rule as stated in spec §3.2).
5 seeds vmapped (paired: the same initial parameters and warm-up data in every arm), 20k env
steps, 4 envs x 4 gradient steps, 1000 warm-up steps, LEAST from 10% of the run (2000 env
steps, the paper's t_start range 10-20%), window 20 episodes (adaptive, up to 40; the paper's
250 would be more episodes than the base arm runs), ω on, noise schedule up to σ̄ 0.3. Both
arms log ``replay/low_reward_share`` (cumulative, the buffer) and
``replay/low_reward_share_recent`` (the transitions of the last 200 env steps).
Design, criteria and results: docs/reproductions/least.md ("Redesigned study").
"""

import os

from jaxlab.core.config import load_file

ARMS = ("base", "w0.3", "w0.45", "w0.6", "w1.0")


def get_config(arm: str = "w0.45"):
  if arm not in ARMS:
    raise ValueError(f"configs/least/dead_end_lure.py:ARM with ARM in {list(ARMS)}; got {arm!r}")
  # The earlier dead-end study's TD3 + LEAST settings (configs/least/dead_end.py, loaded by
  # path so the file works wherever it is imported from), on the new task and run length.
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dead_end.py")
  c = load_file(path, "base" if arm == "base" else "least")
  c.env.name = "toy/DeadEndLure"
  c.num_seeds = 5
  c.total_env_steps = 20_000
  c.replay.capacity = 20_000
  if arm != "base":
    c.least.omega_scale = float(arm[1:])
  c.target_return = 75.0
  return c


# ---------------------------------------------------------------------------------------------
# The study's derived tables (per seed, from the runs' metrics.jsonl), written as per-seed CSVs
# that ``python -m launch.analyze --data=FILE`` prints as the tables of the doc:
#
#     python -m configs.least.dead_end_lure runs/least_study docs/reproductions/data/least

R_STAR = 75.0  # env steps to eval return >= R_STAR (85% of the best return, about 88.5)
LEAST_START = 2000  # env steps: start_fraction 0.1 of 20k
WINDOWS = ((1000, 3000), (2000, 4000), (4000, 10000), (10000, 20000), (2000, 10000))
LABELS = {"base": "base", "w0.3": "LEAST ω×0.3", "w0.45": "LEAST ω×0.45", "w0.6": "LEAST ω×0.6",
          "w1.0": "LEAST ω×1.0"}


def _per_seed(records, key, lo, hi, reduce="mean"):
  """[seeds] mean of ``key`` over the chunks with lo < env_steps <= hi."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  rows = [np.asarray(r[key], np.float64) for r in records
          if key in r and r[key] is not None and lo < r["env_steps"] <= hi]
  return np.mean(np.stack(rows), axis=0)


def _stop_columns(records, hi=20_000):
  """Per seed, over the chunks after LEAST_START: stop rate, mean stop step, quarter shares."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  recs = [r for r in records if LEAST_START < r["env_steps"] <= hi and "least/stops" in r]
  stops = np.stack([np.asarray(r["least/stops"], np.float64) for r in recs])
  ended = np.stack([np.asarray(r["train/episodes"], np.float64) for r in recs])

  def weighted(key):
    v = np.nan_to_num(np.stack([np.asarray(r[key], np.float64) for r in recs]))
    return (v * stops).sum(0) / np.maximum(stops.sum(0), 1)

  out = {"episodes ended after 2k": ended.sum(0), "episodes stopped": stops.sum(0),
         "stop rate": stops.sum(0) / np.maximum(ended.sum(0), 1),
         "mean step of a stop (of 100)": weighted("least/stop_step_mean")}
  for q in range(1, 5):
    out[f"stops in quarter {q}"] = weighted(f"least/stop_quarter/{q}")
  return out


def write_tables(run_root: str, out_dir: str) -> None:
  """Writes lure_windows.csv, lure_stops.csv and lure_paired.csv into ``out_dir``."""
  import os  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxlab.core import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.core import stats  # pylint: disable=import-outside-toplevel
  from launch.analyze import steps_to_threshold, values_at  # pylint: disable=import-outside-toplevel

  records = {arm: metrics_lib.read_metrics(os.path.join(run_root, arm)) for arm in ARMS
             if os.path.exists(os.path.join(run_root, arm, "metrics.jsonl"))}
  records = {arm: recs for arm, recs in records.items()  # finished runs only
             if recs and recs[-1]["env_steps"] >= get_config(arm).total_env_steps}
  share = "replay/low_reward_share_recent"

  def rows_of(arm, columns, label=None):
    n = len(next(iter(columns.values())))
    return [{"arm": label or LABELS[arm], "run": arm, "seed": i,
             **{c: float(v[i]) for c, v in columns.items()}} for i in range(n)]

  def final_return(recs):
    return np.mean(np.stack([r["eval/episode_return"] for r in recs
                             if "eval/episode_return" in r][-4:]), axis=0)

  def save(name, rows):
    columns = [c for c in rows[0] if c not in ("arm", "run", "seed")]
    stats.write_seed_rows(os.path.join(out_dir, name), rows, columns)
    print(f"{name}:\n{stats.seed_table(rows, columns)}\n")

  windows, stops, paired = [], [], []
  steps = {arm: steps_to_threshold(recs, R_STAR) for arm, recs in records.items()}
  for arm, recs in records.items():
    cols = {"eval return @ 1400": values_at(recs, "eval/episode_return", 1400)}
    for lo, hi in WINDOWS:
      cols[f"recent dead-end share ({lo // 1000}k, {hi // 1000}k]"] = _per_seed(recs, share, lo, hi)
    windows += rows_of(arm, cols)
    if arm != "base":
      stops += rows_of(arm, _stop_columns(recs))
  base = records.get("base")
  for arm, recs in records.items():
    if arm == "base" or base is None:
      continue
    cens = lambda a: np.where(np.isinf(steps[a]), 20_000.0, steps[a])  # noqa: E731
    paired += rows_of(arm, {
        "Δ recent dead-end share (2k, 10k]": (_per_seed(recs, share, 2000, 10000)
                                              - _per_seed(base, share, 2000, 10000)),
        "Δ env steps to eval return ≥ 75 (never = 20k)": cens(arm) - cens("base"),
        "Δ eval return (last 4 evaluations)": final_return(recs) - final_return(base),
    }, label=f"{LABELS[arm]} − base")
  save("lure_windows.csv", windows)
  if stops:
    save("lure_stops.csv", stops)
  if paired:
    save("lure_paired.csv", paired)


if __name__ == "__main__":
  import sys  # pylint: disable=import-outside-toplevel
  write_tables(*sys.argv[1:3])
