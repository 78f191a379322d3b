"""Write PNG learning curves of one or more runs.

    python -m launch.plot --workdir=runs/quickstart            # -> runs/quickstart/plots/*.png
    python -m launch.plot --workdir=runs/a,runs/b --out=plots  # runs side by side
"""

from __future__ import annotations

import os

from absl import flags

from launch import cli

_WORKDIR = flags.DEFINE_list("workdir", None, "Run directories (comma-separated).")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: <first workdir>/plots).")
_KEYS = flags.DEFINE_list("keys", None, "Metric keys to plot (default: every numeric key).")
_X = flags.DEFINE_string("x", "env_steps", "Metric for the x axis (e.g. env_steps, step).")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  from jaxlab.core import metrics, plotting  # pylint: disable=import-outside-toplevel

  runs = {}
  for workdir in _WORKDIR.value:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
      cli.fail(f"{path} does not exist; is '{workdir}' a jaxlab run directory?")
    runs[os.path.basename(os.path.normpath(workdir))] = metrics.read_metrics(workdir)
  keys = _KEYS.value or [k for k in plotting.numeric_keys(next(iter(runs.values())))
                         if k != _X.value]
  out = _OUT.value or os.path.join(_WORKDIR.value[0], "plots")
  written = plotting.plot_runs(runs, keys, out, x_key=_X.value)
  print(f"wrote {len(written)} plots to {out}")


if __name__ == "__main__":
  cli.run(main)
