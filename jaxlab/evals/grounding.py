"""The five GUI-grounding benchmarks (spec §2.4): prompts, scoring, and the harness behind
``launch.eval --benchmark=screenspot_pro|screenspot_v2|osworld_g|ui_vision|mmbench_gui``.

A release is read by :mod:`jaxlab.evals.grounding_formats` into items whose target region is
in the RESIZED frame of the screenshot, the frame in which the model sees it and answers.

Prompt: the system turn is :attr:`GroundingTexts.system` (our own description of a
``computer_use`` tool) with ``{width}x{height}`` replaced by the resized size; the user turn is
the screenshot followed by :attr:`GroundingTexts.user` with the instruction. A user passes other
texts (e.g. a checkpoint's own prompt) with ``--texts=FILE``, a JSON object with the keys
``system`` and/or ``user``. The model answers with a tool call holding an integer point
(:mod:`jaxlab.grounding.answer`, read with its evaluation fallback).

Scoring (:func:`score_items`, spec §2.4): an item is correct iff the parsed point lies in the
target region: closed box; polygon by the reference scorer's ray casting
(:func:`jaxlab.grounding.geometry.in_polygon`, which counts some boundary points in and some
out); a refusal target needs both coordinates negative; an empty target needs no point. An
unparseable answer is a miss. Reported,
per breakdown group and over all items (micro), with 95% percentile bootstrap intervals
(:func:`jaxlab.core.stats.bootstrap_interval`), under the metric names the other harnesses use:

  * ``total_accuracy``: correct / all items, THE benchmark number;
  * ``valid_accuracy``: correct / items whose answer held a point;
  * ``format_error_rate``: items whose answer held no point / all items.

For MMBench-GUI the micro ``total_accuracy`` is the number the GroundCUA paper reports (its
own evaluator's); the mean of the basic and advanced accuracies
(``total_accuracy,macro_grounding_type``) is reported beside it, as MMBench-GUI's own
leaderboard averages them: compare each with its own kind.

The resized frame is the one the model directory's ``preprocessor_config.json`` gives
(``min_pixels`` / ``max_pixels``): the model sees exactly that image, so its points are in that
frame. The paper's evaluation resizes with ``max_pixels = 12,845,056``
(:data:`jaxlab.grounding.frames.EVAL_MAX_PIXELS`); for a checkpoint-faithful run, set that value
in the model directory's ``preprocessor_config.json``.

MMBench-GUI's scorer reads a predicted point with both coordinates <= 1 as normalised (a
fraction of the image). We do not: the answer format is integer pixels in the resized frame, so
``[1, 1]`` is the pixel one step from the top-left corner, never the bottom-right corner. Only
points in {0, 1} x {0, 1} are affected; a test pins this.

Outputs in ``--workdir`` (a second run with the same settings resumes; other settings are
refused, the batch size excepted): ``run.json`` (the pinned settings), ``outputs.jsonl``
(raw model outputs, appended batch by batch), ``samples.jsonl`` (per item: output, parsed
point, correct, the target in the resized frame, groups), ``results.json`` (the layout of
:func:`jaxlab.evals.mcq.write_results`: ``results[<benchmark>]["total_accuracy,micro"]`` and
its ``_ci``, ``breakdowns``, ``configs``, ...), ``per_group.png`` (accuracy per group of the
first breakdown) and ``overlays/*.png`` (target and predicted point on the first few
screenshots, in original pixels).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import os
import sys
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxlab.core import files, stats
from jaxlab.core.errors import ConfigError, DataError
from jaxlab.evals import grounding_formats as formats
from jaxlab.grounding import answer, frames

RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"
PLOT_FILE = "per_group.png"
OVERLAY_DIR = "overlays"
RESULTS_VERSION = 1
METRICS = ("total_accuracy", "valid_accuracy", "format_error_rate")
HIGHER_IS_BETTER = {"total_accuracy": True, "valid_accuracy": True, "format_error_rate": False}
VLM_FAMILY = "qwen_vl"


@dataclasses.dataclass(frozen=True)
class Spec:
  """How a benchmark is reported: its breakdowns (first = the plotted one) and the grouping
  whose groups its own headline averages (None: micro only)."""
  breakdowns: tuple[str, ...]
  macro_by: str | None = None


SPECS: dict[str, Spec] = {
    "screenspot_pro": Spec(("group", "ui_type", "group/ui_type", "application")),
    "screenspot_v2": Spec(("platform", "data_type", "platform/data_type")),
    "osworld_g": Spec(("bucket", "box_type")),
    "ui_vision": Spec(("setting", "category", "setting/category")),
    "mmbench_gui": Spec(("grounding_type", "platform", "grounding_type/platform", "data_type"),
                        macro_by="grounding_type"),
}


# -- prompts ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GroundingTexts:
  """The prompt texts. OUR OWN wording; a checkpoint's own prompt comes from a file.

  Attributes:
    system: the system turn; ``{width}`` and ``{height}`` become the resized screenshot's size.
    user: the user turn after the screenshot; ``{instruction}`` becomes the item's instruction.
  """
  system: str
  user: str

  @classmethod
  def from_file(cls, path: str) -> "GroundingTexts":
    """Our texts with the keys of the JSON object in ``path`` (``system``, ``user``) replacing
    them. Raises ConfigError for an unreadable file, an unknown key or a non-string value."""
    from jaxlab.evals import benchmark  # pylint: disable=import-outside-toplevel
    given = benchmark.read_texts_file(path, [f.name for f in dataclasses.fields(cls)])
    out = dataclasses.asdict(DEFAULT_TEXTS)
    for key, value in given.items():
      if not isinstance(value, str):
        raise ConfigError(f"{path}: key {key!r}: expected a string, got {type(value).__name__}")
      out[key] = value
    return cls(**out)

  def system_text(self, width: int, height: int) -> str:
    return self.system.replace("{width}", str(width)).replace("{height}", str(height))

  def user_text(self, instruction: str) -> str:
    return self.user.replace("{instruction}", instruction)


DEFAULT_TEXTS = GroundingTexts(
    system=(
        "You control a computer with one tool, computer_use, which moves the mouse pointer "
        "over the screenshot you are shown and clicks. The screenshot is {width}x{height} "
        "pixels: x counts pixels from the left edge, y from the top edge.\n"
        "Reply with exactly one tool call and nothing else, in this form:\n"
        "<tool_call>\n"
        '{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [x, y]}}\n'
        "</tool_call>\n"
        "with x and y whole numbers. Other actions are mouse_move, right_click, double_click "
        "and middle_click. If the element you are asked for is not on the screen, answer with "
        "the coordinate [-1, -1]."),
    user="{instruction}")


def messages(item: formats.GroundingItem, texts: GroundingTexts = DEFAULT_TEXTS,
             marker: str = "<image>") -> list[dict[str, str]]:
  """The chat messages of ``item``: our system turn with the resized resolution, then the
  screenshot (``marker``) and the instruction."""
  w, h = item.frame.resized_size
  return [{"role": "system", "content": texts.system_text(w, h)},
          {"role": "user", "content": marker + texts.user_text(item.instruction)}]


def render(item: formats.GroundingItem, tokenizer: Any, texts: GroundingTexts = DEFAULT_TEXTS,
           marker: str = "<image>") -> str:
  """The model-ready prompt text: the tokenizer's chat template when it has one, else
  ``system + "\\n\\n" + user + "\\n"``."""
  msgs = messages(item, texts, marker)
  if tokenizer is not None and getattr(tokenizer, "chat_template", None):
    return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
  return f"{msgs[0]['content']}\n\n{msgs[1]['content']}\n"


# -- scoring ---------------------------------------------------------------------------------------


def _point(prediction: Any) -> tuple[int, int] | None:
  """A prediction as a point: text is parsed (evaluation fallback); a pair is taken as is."""
  if prediction is None:
    return None
  if isinstance(prediction, str):
    return answer.parse(prediction, fallback=True).point
  if (isinstance(prediction, (list, tuple)) and len(prediction) == 2
      and all(isinstance(v, (int, float, np.integer, np.floating))
              and not isinstance(v, bool) and math.isfinite(v) for v in prediction)):
    return prediction[0], prediction[1]
  return None


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
  """Mean over the finite entries along ``axis`` (NaN where there are none; no warning)."""
  ok = np.isfinite(x)
  return _ratio(np.where(ok, x, 0.0).sum(axis=axis), ok.sum(axis=axis).astype(np.float64))


def _num(x: float) -> float | None:
  return float(x) if math.isfinite(x) else None


def _rates(w: np.ndarray, correct: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """The three metrics of resamples given as item weights ``[b, n]`` -> ``[b, 3]``."""
  n, c, v, cv = w.sum(axis=1), w @ correct, w @ valid, w @ (correct * valid)
  return np.stack([_ratio(c, n), _ratio(cv, v), _ratio(n - v, n)], axis=1)


def _report(point: np.ndarray, ci: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for name, p, (lo, hi) in zip(names, point, ci):
    out[name] = _num(p)
    ok = out[name] is not None and math.isfinite(lo) and math.isfinite(hi)
    out[name + "_ci"] = [float(lo), float(hi)] if ok else None
  return out


def _metrics(correct: np.ndarray, valid: np.ndarray, num_bootstrap: int,
             seed: int) -> dict[str, Any]:
  def statistic(w):
    return _rates(w, correct, valid)
  point = statistic(np.ones((1, correct.size)))[0]
  ci = stats.bootstrap_interval(statistic, correct.size, num_resamples=num_bootstrap, seed=seed)
  return {"n": int(correct.size), "num_valid": int(valid.sum()),
          "num_correct": int(correct.sum()), **_report(point, ci, METRICS)}


def score_items(items: Sequence[formats.GroundingItem], predictions: Mapping[str, Any], *,
                breakdowns: Sequence[str] | None = None, macro_by: str | None = None,
                num_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
  """Scores ``items`` against ``predictions``; pure (no files).

  Args:
    items: the benchmark items (regions in the resized frame).
    predictions: item key -> the model's answer text (parsed with
      ``answer.parse(fallback=True)``), or a point ``(x, y)`` in the resized frame, or None
      (no point). Every item needs an entry.
    breakdowns: the groupings to report (None: every grouping the items carry, in order).
    macro_by: also report the mean over this grouping's groups (single-label groupings only).
    num_bootstrap, seed: the bootstrap intervals.

  Returns:
    ``{"n", "micro": metrics, "macro": {...} or None, "breakdowns": {by: {group: metrics}},
    "per_item": [{"key", "point", "valid", "correct"}]}``, where metrics are ``n``,
    ``num_valid``, ``num_correct`` and each of :data:`METRICS` with its ``_ci`` ([lo, hi] or
    None). Groups are sorted by name; an item counts in every group it is labelled with.

  Raises:
    DataError: no items, a repeated key, or an item without a prediction.
  """
  if not items:
    raise DataError("no items to score: expected at least one")
  keys = [it.key for it in items]
  if len(set(keys)) != len(keys):
    seen: set[str] = set()
    dup = next(k for k in keys if k in seen or seen.add(k))
    raise DataError(f"item {dup!r}: key appears twice; expected unique item keys")
  per_item = []
  for it in items:
    if it.key not in predictions:
      raise DataError(f"item {it.key!r}: no prediction")
    point = _point(predictions[it.key])
    per_item.append({"key": it.key, "point": None if point is None else list(point),
                     "valid": point is not None, "correct": bool(it.region.contains(point))})
  correct = np.asarray([r["correct"] for r in per_item], np.float64)
  valid = np.asarray([r["valid"] for r in per_item], np.float64)
  kw = dict(num_bootstrap=num_bootstrap, seed=seed)
  if breakdowns is None:
    breakdowns = list(dict.fromkeys(k for it in items for k in it.groups))
  tables: dict[str, dict[str, Any]] = {}
  for by in breakdowns:
    labels = []
    for it in items:
      if by not in it.groups:
        raise DataError(f"item {it.key!r}: no group {by!r} (has {sorted(it.groups)})")
      labels.append(set(it.groups[by]))
    tables[by] = {}
    for g in sorted(set().union(*labels)):
      sel = np.asarray([g in ls for ls in labels])
      tables[by][g] = _metrics(correct[sel], valid[sel], **kw)
  macro = None
  if macro_by is not None:
    labels = [it.groups[macro_by] for it in items]
    if any(len(ls) != 1 for ls in labels):
      raise DataError(f"macro over {macro_by!r}: every item needs exactly one label")
    groups = sorted({ls[0] for ls in labels})
    codes = np.asarray([groups.index(ls[0]) for ls in labels])
    onehot = np.eye(len(groups))[codes]

    def statistic(w):
      n, c, v, cv = (w @ onehot, (w * correct) @ onehot, (w * valid) @ onehot,
                     (w * correct * valid) @ onehot)
      per = [_ratio(c, n), _ratio(cv, v), _ratio(n - v, n)]
      return np.stack([_nanmean(m, axis=1) for m in per], axis=1)

    point = statistic(np.ones((1, correct.size)))[0]
    ci = stats.bootstrap_interval(statistic, codes, num_resamples=num_bootstrap, seed=seed)
    macro = {"by": macro_by, "num_groups": len(groups), **_report(point, ci, METRICS)}
  return {"n": len(items), "micro": _metrics(correct, valid, **kw), "macro": macro,
          "breakdowns": tables, "per_item": per_item}


# -- results files ---------------------------------------------------------------------------------


def write_results(workdir: str, task: str, scores: Mapping[str, Any],
                  config: Mapping[str, Any], per_item: Sequence[Mapping[str, Any]],
                  num_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
  """Writes ``results.json``, ``samples.jsonl`` and ``per_group.png``; returns the results.

  ``results.json`` has the layout of :func:`jaxlab.evals.mcq.write_results` (so that
  ``launch.eval`` and ``benchmark.results_table`` read it): ``results[task]`` maps
  ``"<metric>,micro"`` (and ``"<metric>,macro_<by>"`` where the benchmark has a macro
  headline) to numbers and ``"<metric>_ci,..."`` to 95% bootstrap intervals.
  """
  head: dict[str, Any] = {"alias": task}
  aggregates = [("micro", scores["micro"])]
  if scores.get("macro"):
    aggregates.insert(0, (f"macro_{scores['macro']['by']}", scores["macro"]))
  for agg, m in aggregates:
    for k in METRICS:
      head[f"{k},{agg}"] = m[k]
      head[f"{k}_ci,{agg}"] = m[f"{k}_ci"]
  results = {
      "results": {task: head},
      "breakdowns": scores["breakdowns"],
      "configs": {task: dict(config)},
      "versions": {task: RESULTS_VERSION},
      "n-samples": {task: {"original": scores["n"], "effective": scores["n"]}},
      "higher_is_better": {task: dict(HIGHER_IS_BETTER)},
      "bootstrap": {"method": "percentile", "level": 0.95, "num_resamples": num_bootstrap,
                    "seed": seed},
      "metric": "a point inside the target region (closed box, polygon, refusal: both "
                "coordinates negative), in the resized frame; total_accuracy is the "
                "benchmark's accuracy",
  }
  files.write_json(os.path.join(workdir, RESULTS_FILE), results, indent=2)
  files.write_jsonl(os.path.join(workdir, SAMPLES_FILE), per_item, ensure_ascii=False)
  if scores["breakdowns"]:
    from jaxlab.evals import mcq  # pylint: disable=import-outside-toplevel
    by, table = next(iter(scores["breakdowns"].items()))
    mcq.plot_groups(os.path.join(workdir, PLOT_FILE), table, by,
                     None, task)
  return results


def _region_record(region: formats.Region) -> dict[str, Any]:
  out: dict[str, Any] = {"kind": region.kind}
  if region.kind == "box":
    out["box"] = [round(v, 3) for v in region.box]
  elif region.kind == "polygon":
    out["polygon"] = [[round(x, 3), round(y, 3)] for x, y in region.polygon]
  return out


def write_overlays(workdir: str, items: Sequence[formats.GroundingItem],
                   per_item: Sequence[Mapping[str, Any]], count: int = 4,
                   max_side: int = 1280) -> list[str]:
  """PNGs of the first ``count`` items: the target (green) and the predicted point (red
  cross; converted back to original pixels) drawn on the screenshot, which is shrunk to at
  most ``max_side`` pixels. Returns the paths written."""
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  paths = []
  for i, (it, row) in enumerate(zip(items[:count], per_item[:count])):
    with Image.open(it.image) as im:
      canvas = im.convert("RGB")
    k = min(1.0, max_side / max(canvas.size))
    if k < 1.0:
      canvas = canvas.resize((max(1, round(canvas.width * k)), max(1, round(canvas.height * k))))
    draw = ImageDraw.Draw(canvas)
    green, red = (0, 200, 0), (230, 0, 0)
    target = it.original.map(lambda p: (p[0] * k, p[1] * k))
    if target.kind == "box":
      draw.rectangle(target.box, outline=green, width=2)
    elif target.kind == "polygon":
      draw.polygon(list(target.polygon), outline=green)
    else:
      draw.text((4, 4), f"target: {target.kind}", fill=green)
    if row["point"] is None:
      draw.text((4, 16), "no point", fill=red)
    else:
      x, y = frames.point_to_original(row["point"], it.frame)
      x, y, r = x * k, y * k, 6
      draw.line((x - r, y, x + r, y), fill=red, width=2)
      draw.line((x, y - r, x, y + r), fill=red, width=2)
      draw.text((4, 16), "correct" if row["correct"] else "miss", fill=red)
    path = os.path.join(workdir, OVERLAY_DIR, f"{i:02d}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    canvas.save(path + ".tmp", format="PNG")
    os.replace(path + ".tmp", path)
    paths.append(path)
  return paths


# -- the harness -----------------------------------------------------------------------------------


class _Screens(collections.abc.Sequence):
  """Per item, ``[its screenshot]`` opened on access (one batch in memory at a time)."""

  def __init__(self, items: Sequence[formats.GroundingItem]):
    self._items = items

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    from PIL import Image  # pylint: disable=import-outside-toplevel
    it = self._items[i]
    try:
      with Image.open(it.image) as im:
        image = im.convert("RGB")
    except OSError as e:
      raise DataError(f"item {it.key}: screenshot {it.image} cannot be read ({e})") from None
    if image.size != (it.frame.width, it.frame.height):
      raise DataError(f"item {it.key}: screenshot {it.image} changed size since it was read")
    return [image]


def _check_args(name: str, args: Any) -> None:
  if args.regime != "direct":
    raise ConfigError(f"--regime={args.regime}: {name} has one prompting regime ('direct')")
  if args.languages:
    raise ConfigError(f"--languages does not apply to {name}")
  for flag in ("text_only", "multimodal_only"):
    if getattr(args, flag):
      raise ConfigError(f"--{flag} does not apply to {name}: every item is a screenshot")


def evaluate(name: str, args: Any, *, num_overlays: int = 4) -> dict[str, Any]:
  """Scores a vision-language model directory on benchmark ``name`` (``BenchmarkArgs``).

  Reads and checks the release first (``args.data``, screenshots from ``args.images`` or the
  release's own folder, the first ``args.limit`` items), then generates one answer per item
  (resumable), scores and writes the outputs listed in the module docstring.

  Raises:
    ConfigError: an unknown benchmark, options that do not apply, a model without a vision
      tower, or settings that differ from those the workdir was started with.
    DataError: a bad release (layout, record, screenshot).
  """
  # Everything a user can get wrong is checked before jax is imported (a quick exit).
  from jaxlab import models  # pylint: disable=import-outside-toplevel
  from jaxlab.models.qwen_vl import processor  # pylint: disable=import-outside-toplevel

  formats.check_name(name)
  _check_args(name, args)
  texts = GroundingTexts.from_file(args.texts) if args.texts else DEFAULT_TEXTS
  family = models.family_for(args.model)
  if family != VLM_FAMILY:
    raise ConfigError(f"{args.model}: a {family!r} model; {name} needs a vision-language model "
                      f"(family {VLM_FAMILY!r})")
  image_config = processor.ImageProcessorConfig.from_dir(args.model)
  items = formats.read(name, args.data, images=args.images or None, image_config=image_config,
                       limit=args.limit)

  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jaxlab.core import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.evals import benchmark, generation  # pylint: disable=import-outside-toplevel
  from jaxlab.models.qwen_vl import inputs  # pylint: disable=import-outside-toplevel

  decoding = generation.Decoding(max_new_tokens=args.max_new_tokens,
                                 temperature=args.temperature, top_p=args.top_p, seed=args.seed)
  settings = {"benchmark": name, "model": args.model, "data": args.data, "images": args.images,
              "limit": args.limit, "texts": args.texts, "dtype": args.dtype,
              "decoding": dataclasses.asdict(decoding), "batch_size": args.batch_size,
              "num_items": len(items), "image_processor": image_config.to_dict()}
  os.makedirs(args.workdir, exist_ok=True)
  benchmark.pin_settings(args.workdir, settings)
  model, tokenizer = models.from_pretrained(args.model, dtype=jnp.dtype(args.dtype))
  prompts = [(it.key, render(it, tokenizer, texts, inputs.IMAGE_SPAN)) for it in items]
  bar = metrics_lib.Progress(len(items), unit="items", stream=sys.stderr)
  try:
    outputs = generation.generate_outputs(
        model, tokenizer, prompts, os.path.join(args.workdir, generation.OUTPUTS_FILE),
        decoding=decoding, batch_size=args.batch_size, progress=lambda d, _: bar.update(d),
        images=_Screens(items), image_config=image_config)
  finally:
    bar.close()
  spec = SPECS[name]
  scores = score_items(items, {k: o["output"] for k, o in outputs.items()},
                       breakdowns=spec.breakdowns, macro_by=spec.macro_by)
  per_item = []
  for it, row in zip(items, scores["per_item"]):
    out = outputs[it.key]
    per_item.append({**row, **dict(it.record), "instruction": it.instruction,
                     "output": out["output"], "new_tokens": out["new_tokens"],
                     "resized_size": list(it.frame.resized_size),
                     "target": _region_record(it.region),
                     **{k: list(v) for k, v in it.groups.items()}})
  results = write_results(args.workdir, name, scores, settings, per_item)
  write_overlays(args.workdir, items, scores["per_item"], count=num_overlays)
  return results


def _harness(name: str) -> Callable[[Any], dict[str, Any]]:
  def run(args: Any) -> dict[str, Any]:
    return evaluate(name, args)
  run.__name__ = name
  run.__doc__ = f"``launch.eval --benchmark={name}``: :func:`evaluate` on {formats.TITLES[name]}."
  return run


screenspot_pro = _harness("screenspot_pro")
screenspot_v2 = _harness("screenspot_v2")
osworld_g = _harness("osworld_g")
ui_vision = _harness("ui_vision")
mmbench_gui = _harness("mmbench_gui")
