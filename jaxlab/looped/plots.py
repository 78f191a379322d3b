"""PNG figures of the looped-model analysis.

Line figures go through :func:`jaxlab.core.plotting.plot_runs` (one PNG per quantity, one
curve per run); the PCA path and the lens heatmaps, which are not curves over steps, are drawn
here with the same matplotlib backend.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from jaxlab.core import files

from jaxlab.core.plotting import plot_runs, plt


def curves(runs: Mapping[str, Sequence[float]], key: str, out_dir: str, x_key: str = "depth",
           xs: Mapping[str, Sequence[float]] | None = None) -> list[str]:
  """One PNG ``<key>.png`` with a curve per run: ``runs[name][k]`` at ``xs[name][k]`` (default
  ``k``). NaN points are skipped."""
  records = {}
  for name, ys in runs.items():
    x = np.arange(len(ys)) if xs is None or name not in xs else np.asarray(xs[name])
    records[name] = [{"step": int(i), x_key: float(xi), key: float(y)}
                     for i, (xi, y) in enumerate(zip(x, ys)) if np.isfinite(y)]
  return plot_runs(records, [key], out_dir, x_key=x_key)


def pca_path(coords_ijk: np.ndarray, path: str, title: str = "") -> str:
  """The (iteration, slot) path of one token in the plane of its first two PCs: points
  coloured by slot, linked in unrolled order, later iterations drawn more opaque."""
  c = np.asarray(coords_ijk)
  n_iter, n_slots = c.shape[:2]
  flat = c.reshape(-1, c.shape[-1])
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.plot(flat[:, 0], flat[:, 1] if flat.shape[1] > 1 else 0 * flat[:, 0], color="0.7",
          lw=0.8, zorder=1)
  cmap = plt.get_cmap("tab10")
  for i in range(n_iter):
    alpha = 0.25 + 0.75 * (i + 1) / n_iter
    for l in range(n_slots):
      y = c[i, l, 1] if c.shape[-1] > 1 else 0.0
      ax.scatter(c[i, l, 0], y, color=cmap(l % 10), alpha=alpha, s=18, zorder=2,
                 label=f"slot {l}" if i == n_iter - 1 else None)
  ax.set_xlabel("PC1")
  ax.set_ylabel("PC2")
  ax.set_title(title or "token trajectory over (iteration, slot)")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  files.write_figure(path, fig)
  plt.close(fig)
  return path


def heatmaps(tables: Mapping[str, np.ndarray], path: str, label: str) -> str:
  """Side-by-side ``[I, J]`` heatmaps (iteration down, slot across), one per name."""
  names = list(tables)
  fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 1, 4), squeeze=False)
  for ax, name in zip(axes[0], names):
    im = ax.imshow(np.asarray(tables[name]), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_title(name)
    ax.set_xlabel("slot")
    ax.set_ylabel("iteration")
    fig.colorbar(im, ax=ax, label=label)
  fig.tight_layout()
  files.write_figure(path, fig)
  plt.close(fig)
  return path
