"""The looped-model analysis in one call: arrays in, ``results.npz`` + ``metrics.json`` + PNGs out.

    from jaxlab.looped.analyze import run_analysis
    run_analysis("path/to/model_dir", "runs/looped_analysis", iterations=[4, 8, 16, 32],
                 prompts=[...], baseline="path/to/decoder_dir")

For every trip count ``I`` in ``iterations`` the model is run once (jitted) with its states
captured and its blocks replayed for their attention (:mod:`jaxlab.looped.replay`); then the
measurements of spec §1.5 are taken: per-slot convergence and token classes
(:mod:`~jaxlab.looped.convergence`), attention stability (:mod:`~jaxlab.looped.attention`),
stage curves along the unrolled depth (:mod:`~jaxlab.looped.stages`) and the two lenses
(:mod:`~jaxlab.looped.lens`). At the largest ``I``: the PCA path of one token
(:mod:`~jaxlab.looped.trajectory`) and the Jacobian spectrum of a few tokens
(:mod:`~jaxlab.looped.jacobian`). At the model's own trip count: slot ablations
(:mod:`~jaxlab.looped.ablation`). A feed-forward decoder, when given, adds its stage curves
over its layers.

``metrics.json`` holds scalars and small tables, and a ``checks`` block with the pass
criteria of spec §1.7 (each with its value and its threshold); ``results.npz`` holds the
arrays behind them, keyed ``I<I>/<name>`` (e.g. ``I8/delta`` ``[I-1, J, B, T]``).
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from jaxlab.core.files import write_json, write_npz
from jaxlab.looped import ablation, attention, convergence, jacobian, lens, plots, replay
from jaxlab.looped import stages, trajectory

# Spec §1.7 pass criteria (checks 1, 2, 3).
FIXED_SHARE = 0.99       # share of tokens whose slots all settle below the threshold
MIN_DISTANCE = 0.1       # smallest distance between two slots' limit states
RETRACE = 0.05           # PCA: last iteration retraces the one before within this
LOCKSTEP_CORR = 0.5      # correlation of log attention TV with log delta over (t, l)
PERIODIC_STAGES = 0.05   # stage curves repeat with period J within this share of their span


def _masked_median(x: np.ndarray, valid_bt: np.ndarray) -> np.ndarray:
  """Median over the valid (b, t) of ``x [..., B, T]`` -> ``[...]``."""
  x = np.asarray(x, np.float64)
  sel = x[..., np.asarray(valid_bt, bool)]
  return np.median(sel, axis=-1) if sel.shape[-1] else np.full(x.shape[:-2], np.nan)


def _masked_mean_heads(x: np.ndarray) -> np.ndarray:
  """Mean over batch and heads ``[..., B, N] -> [...]``."""
  return np.asarray(x, np.float64).mean(axis=(-2, -1))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
  a, b = np.ravel(a), np.ravel(b)
  ok = np.isfinite(a) & np.isfinite(b)
  if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
    return float("nan")
  return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, (np.bool_, bool)):
    return bool(x)
  if isinstance(x, (np.integer, int)):
    return int(x)
  if isinstance(x, (np.floating, float)):
    return float(x) if math.isfinite(float(x)) else None
  return x


def _one_trip_count(model, tokens, mask, n_iter, targets, valid, threshold, groups,
                    group_names, key):
  """Arrays and metrics of one run at ``n_iter`` iterations."""
  cap = replay.capture(model, tokens, mask, n_iter, key=key)
  core = cap["core"]
  n_slots = core.shape[1]
  arrays: dict[str, np.ndarray] = {}
  m: dict[str, Any] = {"replay_error": float(cap["replay_error"])}

  # (a) convergence, and the state's size (norm growth when run past the trained trip count)
  norm = np.linalg.norm(np.asarray(core, np.float64), axis=-1)    # [I, J, B, T]
  arrays["state_norm"] = norm
  m["state_norm_median"] = _masked_median(norm, mask)            # [I, J]
  if n_iter >= 2:
    delta = convergence.relative_deltas(core)                    # [I-1, J, B, T]
    cls = convergence.classify_tokens(core, threshold)
    dist = convergence.slot_distinctness(core)
    arrays.update(delta=delta, distance_to_final=convergence.distance_to_final(core),
                  label=cls["label"], period=cls["period"], min_distance=dist["min_distance"],
                  slot_distance=dist["distance"])
    m["delta_median"] = _masked_median(delta, mask)              # [I-1, J]
    m["classes"] = convergence.class_fractions(cls["label"], mask, groups, group_names)
    m["classes"]["threshold"] = threshold
    m["classes"]["window"] = int(cls["window"])
    m["threshold_sweep"] = convergence.threshold_sweep(core, valid=mask)
    m["min_slot_distance_median"] = float(_masked_median(dist["min_distance"], mask))
    m["slot_distance_median"] = _masked_median(dist["distance"], mask)
    m["adjacent_cos_median"] = _masked_median(dist["adjacent_cos"], mask)
    m["separation_median"] = float(_masked_median(dist["separation"], mask))
  if n_iter >= 3:
    rate = convergence.contraction_rate(delta)                   # [J, B, T]
    arrays["contraction_rate"] = rate
    m["contraction_rate_median"] = _masked_median(rate, mask)

  # (c) attention over iterations
  a_core = cap["attn_core"]                                      # [I, J, B, N, T, T]
  ent = attention.head_entropy(a_core, mask)                     # [I, J, B, N]
  sink = attention.sink_score(a_core, mask)
  arrays.update(head_entropy=ent, sink_score=sink)
  m["head_entropy"] = _masked_mean_heads(ent)
  m["sink_score"] = _masked_mean_heads(sink)
  if n_iter >= 2:
    tv = attention.row_total_variation(a_core, mask)             # [I-1, J, B, N]
    arrays["attention_tv"] = tv
    m["attention_tv"] = _masked_mean_heads(tv)
    d_mean = np.array([[np.mean(delta[t, l][mask]) for l in range(n_slots)]
                       for t in range(n_iter - 1)])
    m["tv_delta_log_corr"] = _corr(np.log(m["attention_tv"] + 1e-12), np.log(d_mean + 1e-12))

  # (d) stages along the unrolled depth
  depth_states = stages.unrolled_states(cap["prelude"], core, cap["coda"])
  depth_attn = np.concatenate([cap["attn_prelude"], a_core.reshape((-1,) + a_core.shape[2:]),
                               cap["attn_coda"]])
  curves = dict(matrix_entropy=stages.entropy_curve(depth_states, mask),
                bos_norm=stages.bos_norm_curve(depth_states, mask),
                sink_rate=attention.sink_rate(depth_attn, mask),
                local_mass=_masked_mean_heads(attention.local_mass(depth_attn, mask)))
  arrays.update({f"stage_{k}": v for k, v in curves.items()})
  p = model.config.n_prelude
  m["stages"] = {k: v for k, v in curves.items()}
  m["stage_periodicity_error"] = {
      k: stages.periodicity_error(v[p:p + n_iter * n_slots].reshape(n_iter, n_slots))
      for k, v in curves.items()}

  # (d) 5 lenses
  table = lens.lens_table(model, core, cap["logits"], targets, mask, valid)
  for name, t in table.items():
    for k, v in t.items():
      arrays[f"{name}_lens_{k}"] = v
    m[f"{name}_lens"] = {k: v for k, v in t.items() if not k.endswith("_tokens")}
  return cap, arrays, m, curves


def analyze(model, tokens_bt, mask_bt=None, iterations: Sequence[int] = (4, 8, 16),
            out_dir: str | None = None, *, baseline=None, targets_bt=None, valid_bt=None,
            groups_bt=None, group_names: Mapping[int, str] | None = None,
            threshold: float = 1e-2, pca_token: tuple[int, int] | None = None,
            jacobian_tokens: int = 4, jacobian_iters: int = 60, ablations: bool = True,
            key=None, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Runs the whole analysis of a looped model on one batch of prompts.

  Args:
    model: a ``LoopedLM``.
    tokens_bt: ``[B, T]`` ids, LEFT-padded; mask_bt: ``[B, T]`` real tokens (default all).
    iterations: trip counts to run (e.g. the training one and larger, for extrapolation).
    out_dir: where to write ``results.npz``, ``metrics.json`` and PNGs (None: nothing).
    baseline: a feed-forward ``Decoder`` (ideally of the same effective depth) for the stage
      curves, or None.
    targets_bt, valid_bt: lens / ablation targets and the positions that count (default
      next-token prediction over the real tokens).
    groups_bt, group_names: token groups (system / question / answer ids) for the class
      fractions.
    threshold: the fixed-point tolerance of the token classes.
    pca_token: (row, position) whose path is drawn (default row 0's last token).
    jacobian_tokens: how many tokens get a Jacobian spectrum (row 0's last ones; 0 = none).
    ablations: run the slot deletions / swaps at the model's own trip count.
    key: PRNG key of a random initial state (default the model's seed).
    record: extra entries for the metrics (e.g. the core order the model was built with).

  Returns:
    ``{"metrics": dict (what metrics.json holds), "arrays": dict (results.npz),
    "files": [written paths]}``.
  """
  tokens = np.asarray(tokens_bt)
  mask = np.ones(tokens.shape, bool) if mask_bt is None else np.asarray(mask_bt, bool)
  if targets_bt is None:
    targets, valid = lens.next_token_targets(tokens, mask)
  else:
    targets = np.asarray(targets_bt)
    valid = mask if valid_bt is None else np.asarray(valid_bt, bool)
  iterations = sorted({int(i) for i in iterations})
  if not iterations or iterations[0] < 1:
    raise ValueError(f"analyze: iterations must be ints >= 1, got {list(iterations)}")
  c = model.config
  metrics: dict[str, Any] = dict(
      config=dict(n_prelude=c.n_prelude, n_core=c.n_core, n_coda=c.n_coda,
                  inner_layers=c.inner_layers, inner_iterations=c.inner_iterations,
                  slots_per_iteration=c.slots_per_iteration, injection=c.injection,
                  block_norm=c.block_norm, iter_norm=c.iter_norm, state_init=c.state_init,
                  trained_iterations=c.num_iterations),
      iterations=iterations, batch=list(tokens.shape), threshold=threshold, per_iteration={},
      **(record or {}))
  arrays: dict[str, np.ndarray] = {"tokens": tokens, "mask": mask}
  runs, caps = {}, {}
  for n_iter in iterations:
    cap, arr, m, curves = _one_trip_count(model, tokens, mask, n_iter, targets, valid,
                                          threshold, groups_bt, group_names, key)
    caps[n_iter] = cap
    runs[n_iter] = curves
    arrays.update({f"I{n_iter}/{k}": v for k, v in arr.items()})
    metrics["per_iteration"][str(n_iter)] = m

  top = iterations[-1]
  cap = caps[top]
  row = 0
  last = int(np.nonzero(mask[row])[0][-1])
  pca_token = pca_token or (row, last)
  coords, explained = trajectory.token_trajectory(cap["core"][:, :, pca_token[0], pca_token[1]])
  arrays["pca_coords"] = coords
  metrics["pca"] = dict(token=list(pca_token), iterations=top, explained=explained,
                        **(trajectory.cycle_summary(coords) if top >= 2 else {}))
  if jacobian_tokens:
    pos = np.nonzero(mask[row])[0][-jacobian_tokens:]
    spec = jacobian.token_spectra(model, cap, mask, [(row, int(t)) for t in pos],
                                  iters=jacobian_iters)
    arrays.update({f"jacobian_{k}": v for k, v in spec.items()})
    metrics["jacobian"] = dict(iterations=top, **spec)
  if ablations:
    tab = ablation.ablation_table(model, tokens, mask, targets, valid, c.num_iterations)
    arrays.update({f"ablation_{k}": v for k, v in tab.items()})
    metrics["ablation"] = dict(iterations=c.num_iterations, **tab)
  base = None
  if baseline is not None:
    bc = replay.capture_decoder(baseline, tokens, mask)
    base = dict(matrix_entropy=stages.entropy_curve(bc["hidden"][1:], mask),
                bos_norm=stages.bos_norm_curve(bc["hidden"][1:], mask),
                sink_rate=attention.sink_rate(bc["attn"], mask),
                local_mass=_masked_mean_heads(attention.local_mass(bc["attn"], mask)))
    arrays.update({f"baseline/stage_{k}": v for k, v in base.items()})
    metrics["baseline"] = dict(depth=int(bc["attn"].shape[0]), stages=base)

  # Spec §1.7 check 1 is "settled by t = 2 r-bar", read where the largest run reaches it.
  rbar = c.num_iterations
  if 2 <= 2 * rbar <= top:
    metrics["fixed_share_at_2rbar"] = dict(
        iteration=2 * rbar, threshold=threshold,
        value=convergence.settled_share(arrays[f"I{top}/delta"], 2 * rbar, mask, threshold))
  metrics["checks"] = _checks(metrics, top)
  files = []
  if out_dir is not None:
    files = _write(out_dir, metrics, arrays, runs, base, cap, coords, top, pca_token)
  return dict(metrics=_jsonable(metrics), arrays=arrays, files=files)


def _checks(metrics, top):
  """Spec §1.7 pass criteria: value, threshold, pass. Check 1 at t = 2 r-bar when the
  analysis reached it, else the classifier's fixed share at the largest trip count (its
  ``at`` says which); the others at the largest trip count."""
  m = metrics["per_iteration"][str(top)]
  out = {}

  def check(name, value, bound, greater, **extra):
    ok = value is not None and math.isfinite(value) and (value >= bound if greater
                                                         else value <= bound)
    out[name] = dict(value=value, threshold=bound, passed=bool(ok), **extra)

  settled = metrics.get("fixed_share_at_2rbar")
  if settled is not None:
    check("fixed_point_share", settled["value"], FIXED_SHARE, True,
          at=f"t = 2 r-bar = {settled['iteration']}")
  elif "classes" in m:
    check("fixed_point_share", m["classes"]["all"]["fixed"], FIXED_SHARE, True,
          at=f"classifier at I = {top} (the analysis did not reach t = 2 r-bar)")
  if "classes" in m:
    check("min_slot_distance", m["min_slot_distance_median"], MIN_DISTANCE, True)
  if "retrace" in metrics["pca"]:
    check("pca_retrace", metrics["pca"]["retrace"], RETRACE, False)
  if "tv_delta_log_corr" in m:
    check("tv_delta_lockstep", m["tv_delta_log_corr"], LOCKSTEP_CORR, True)
  for k in ("matrix_entropy", "bos_norm"):
    check(f"stage_periodicity_{k}", m["stage_periodicity_error"][k], PERIODIC_STAGES, False)
  return out


def _write(out_dir, metrics, arrays, runs, base, cap, coords, top, pca_token):
  os.makedirs(out_dir, exist_ok=True)
  files = [os.path.join(out_dir, "results.npz"), os.path.join(out_dir, "metrics.json")]
  write_npz(files[0], arrays)
  write_json(files[1], _jsonable(metrics), indent=2)
  for k in ("matrix_entropy", "bos_norm", "sink_rate", "local_mass"):
    curves = {f"looped I={n}": v[k] for n, v in runs.items()}
    if base is not None:
      curves["feed-forward"] = base[k]
    files += plots.curves(curves, k, out_dir)
  pi = metrics["per_iteration"][str(top)]
  if "delta_median" in pi:
    d = np.asarray(pi["delta_median"])
    files += plots.curves({f"slot {l}": np.log10(d[:, l] + 1e-30) for l in range(d.shape[1])},
                          "log10_delta", out_dir, x_key="iteration",
                          xs={f"slot {l}": np.arange(1, d.shape[0] + 1)
                              for l in range(d.shape[1])})
    tv = np.asarray(pi["attention_tv"])
    files += plots.curves({f"slot {l}": np.log10(tv[:, l] + 1e-30) for l in range(tv.shape[1])},
                          "log10_attention_tv", out_dir, x_key="iteration",
                          xs={f"slot {l}": np.arange(1, tv.shape[0] + 1)
                              for l in range(tv.shape[1])})
  files.append(plots.pca_path(coords, os.path.join(out_dir, "pca_trajectory.png"),
                              f"token {tuple(pca_token)}, I={top}"))
  files.append(plots.heatmaps({f"{name} lens": np.asarray(pi[f"{name}_lens"]["correct"])
                               for name in lens.LENSES},
                              os.path.join(out_dir, "lens_accuracy.png"), "top-1 accuracy"))
  return files


def segment_groups(tokenizer, prompts: Sequence[str], segments: Sequence[Mapping | None],
                   mask_bt: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
  """Token groups ``[B, T]`` of LEFT-padded encoded ``prompts`` from character spans.

  ``segments[i]`` maps a group name to ``[start, end)`` characters of prompt ``i`` (e.g. the
  ``metadata.segments`` of the question-shaped task rows: system / question / answer); a span
  covers the tokens that encoding ``prompt[:end]`` adds to ``prompt[:start]``, so it is exact
  when the spans fall on token boundaries (any span with a character vocabulary). Tokens in
  no span (a BOS, padding, prompts without segments) are the group ``"other"``.

  Returns:
    ``(groups_bt, {id: name})``.
  """
  from jaxlab.models.tokenizer import encode_prompts  # pylint: disable=g-import-not-at-top
  names = sorted({n for seg in segments if seg for n in seg})
  ids = {n: i for i, n in enumerate(names)}
  mask = np.asarray(mask_bt, bool)
  groups = np.full(mask.shape, len(names), np.int32)
  width = mask.shape[1]
  for row, (prompt, seg) in enumerate(zip(prompts, segments)):
    first = width - int(mask[row].sum())  # left padding
    for name, (start, end) in (seg or {}).items():
      a, b = (len(ids_) for ids_ in encode_prompts(tokenizer, [prompt[:start],
                                                               prompt[:min(end, len(prompt))]]))
      groups[row, first + a:first + b] = ids[name]
  return groups, {**{i: n for n, i in ids.items()}, len(names): "other"}


def run_analysis(model_dir_or_model, out_dir: str, iterations: Sequence[int] = (4, 8, 16),
                 *, tokens_bt=None, mask_bt=None, prompts: Sequence[str] | None = None,
                 segments: Sequence[Mapping | None] | None = None,
                 baseline=None, core_order: Sequence[int] | None = None,
                 **kwargs) -> dict[str, Any]:
  """:func:`analyze` from a model directory (or a model) to files in ``out_dir``.

  Args:
    model_dir_or_model: a local looped-model directory (any family the model registry loads as
      looped, e.g. an HrmText checkpoint) or a ``LoopedLM``.
    out_dir: output directory.
    iterations: trip counts to analyse.
    tokens_bt, mask_bt: the batch; or ``prompts``, strings encoded with the directory's
      tokenizer and left-padded (exactly one of the two).
    segments: with ``prompts``, per prompt ``{group: [start, end)}`` character spans or None:
      the token groups of the class fractions (:func:`segment_groups`).
    baseline: a feed-forward decoder, or a decoder model directory, or None.
    core_order: analyse the model with its core blocks in this order in every iteration
      (:func:`jaxlab.looped.ablation.permute_core`): leave an index out to delete that block,
      exchange two to swap them; None: as trained. Recorded as ``core_order`` in the metrics.
    **kwargs: passed to :func:`analyze`.

  Raises:
    ValueError: neither or both of ``tokens_bt`` and ``prompts``; prompts with a model object
      (no tokenizer to encode them); a ``core_order`` naming a block the model does not have.
  """
  if (tokens_bt is None) == (prompts is None):
    raise ValueError("run_analysis: pass exactly one of tokens_bt [B, T] or prompts")
  if isinstance(model_dir_or_model, (str, os.PathLike)):
    from jaxlab.models import from_pretrained  # pylint: disable=g-import-not-at-top
    model, tok = from_pretrained(os.fspath(model_dir_or_model), tokenizer=prompts is not None)
    from jaxlab.models.looped.modeling import LoopedLM  # pylint: disable=g-import-not-at-top
    if not isinstance(model, LoopedLM):
      raise ValueError(f"{os.fspath(model_dir_or_model)}: holds a {type(model).__name__}, not a "
                       "looped model")
  else:
    model, tok = model_dir_or_model, None
  if prompts is not None:
    if tok is None:
      raise ValueError("run_analysis: prompts need a model directory with a tokenizer; "
                       "pass tokens_bt with a model object")
    from jaxlab.models.tokenizer import encode_prompts  # pylint: disable=g-import-not-at-top
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    from jaxlab.llm.sampling import left_pad  # pylint: disable=g-import-not-at-top
    tokens_bt, mask_bt = left_pad(encode_prompts(tok, prompts), pad)
    if segments is not None and any(segments):
      kwargs["groups_bt"], kwargs["group_names"] = segment_groups(tok, prompts, segments,
                                                                  np.asarray(mask_bt))
  if core_order is not None:
    n = model.config.n_core
    order = [int(k) for k in core_order]
    missing = [k for k in order if not 0 <= k < n]
    if not order or missing:
      raise ValueError(f"core_order={order}: the model has {n} core block(s), 0..{n - 1}"
                       + (f"; {missing} do not exist" if missing else "; give at least one"))
    model = ablation.permute_core(model, order)
    kwargs["record"] = {**kwargs.get("record", {}), "core_order": order}
  if isinstance(baseline, (str, os.PathLike)):
    from jaxlab.models import from_pretrained  # pylint: disable=g-import-not-at-top
    baseline = from_pretrained(os.fspath(baseline), tokenizer=False)[0]
  return analyze(model, tokens_bt, mask_bt, iterations, out_dir, baseline=baseline, **kwargs)
