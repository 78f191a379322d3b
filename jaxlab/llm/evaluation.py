"""Held-out task accuracy of a model: greedy completions scored by the tasks' verifiers.

The evaluation both LLM trainers run every ``config.eval.every`` steps, and the one
``launch.eval`` runs on a finished LLM run (``jaxlab.evals``, evaluator ``task_accuracy``).
Any family the sampler takes: rows with images go to a vision-language model through
``images`` (their prompts' placeholders and padded image batches).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from jaxlab.core import mesh as mesh_lib
from jaxlab.llm import tasks as tasks_lib


class TaskAccuracy:
  """Greedy completions of held-out prompts, scored by the tasks' verifiers.

  Prompts are left-padded to one length and cut into fixed-size batches (the last one padded
  with copies), so one compiled sampler serves every evaluation.

  Args:
    prompt_format: ``str.format`` over a row's fields (the trainer's ``data.prompt_format``).
    tokenizer: the model's tokenizer.
    rows: task rows (``task``, ``question``, ``answer``, ...).
    batch_size: prompts per sampler call.
    max_new_tokens: completion budget.
    mesh: the device mesh (batches are split over its data-parallel axes), or None.
    prompt_special_tokens: whether the tokenizer adds its special tokens (bos) to prompts;
      False for prompts that are rendered chat transcripts.
    images: for a vision-language model, the images of ``rows`` (in order): an object with
      ``prompts(prompt_format, rows, placeholder) -> texts`` (the prompts with each image's
      placeholder tokens) and ``inputs(indices) -> dict`` (the image keyword arguments of
      :func:`jaxlab.llm.sampling.generate` for those rows; one padded layout for every batch,
      so one compiled sampler), e.g. :class:`jaxlab.llm.data.RowImages`.
    image_placeholder: the format field that stands for an image (with ``images``).
    files: the file each row came from (``config.data.eval_files``); with rows from more than
      one file (e.g. an in-domain and an out-of-domain split of one task) the accuracy of
      each file is reported too, as ``eval/accuracy_file/<file name without .jsonl>``.
  """

  def __init__(self, prompt_format: str, tokenizer: Any, rows: Sequence[dict[str, Any]],
               batch_size: int, max_new_tokens: int, mesh: Any = None,
               prompt_special_tokens: bool = True, images: Any = None,
               image_placeholder: str = "image", files: Sequence[str] | None = None):
    from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
    from jaxlab.models.tokenizer import encode_prompts  # pylint: disable=g-import-not-at-top
    self.rows = list(rows)
    if files is not None and len(files) != len(self.rows):
      raise ValueError(f"{len(files)} file names for {len(self.rows)} rows")
    self.files = list(files) if files is not None else None
    self.tokenizer = tokenizer
    self.mesh = mesh
    self.images = images
    if images is not None:
      prompts = images.prompts(prompt_format, self.rows, image_placeholder)
    else:
      prompts = [prompt_format.format(**r) for r in self.rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = encode_prompts(tokenizer, prompts, add_special_tokens=prompt_special_tokens)
    self.tokens, self.mask = sampling.left_pad(ids, pad_id=pad)
    self.batch = batch_size
    self.params = sampling.SamplingParams(
        max_new_tokens=max_new_tokens, temperature=0.0,
        stop_tokens=(int(tokenizer.eos_token_id),), pad_id=int(pad))

  @classmethod
  def from_config(cls, c: Any, tokenizer: Any,
                  located: Sequence[tuple[str, int, dict[str, Any]]], mesh: Any,
                  images: Any = None) -> "TaskAccuracy":
    """From a trainer config's ``data.prompt_format`` and ``eval`` group (and
    ``data.image_placeholder`` with ``images``), on ``(file, line, row)`` triples as
    :func:`jaxlab.llm.data.load_rows` returns them."""
    return cls(c.data.prompt_format, tokenizer, [r for _, _, r in located], c.eval.batch_size,
               c.eval.max_new_tokens, mesh, c.data.get("prompt_special_tokens", True), images,
               c.data.get("image_placeholder", "image"), files=[f for f, _, _ in located])

  def completions(self, model) -> list[str]:
    import jax  # pylint: disable=g-import-not-at-top
    from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
    n = len(self.rows)
    texts = []
    for s in range(0, n, self.batch):
      idx = np.arange(s, s + self.batch) % n  # wrap: fixed shapes, extra rows discarded
      extra = {} if self.images is None else self.images.inputs(idx)
      # The VLM sampler places its batch itself (it takes no mesh).
      mesh = self.mesh if not sampling.takes_images(model) else None
      out = sampling.generate(model, self.tokens[idx], self.mask[idx], jax.random.key(0),
                              self.params, mesh=mesh, **extra)
      toks, lens = mesh_lib.gather((out.tokens, out.lengths))  # whole, on every process
      for row, k in zip(toks[: n - s], lens[: n - s]):
        texts.append(self.tokenizer.decode(row[:k].tolist(), skip_special_tokens=True))
    return texts

  def __call__(self, model) -> tuple[dict[str, float], list[str]]:
    """``({"eval/accuracy": ..., "eval/accuracy/<task>": ...,
    "eval/accuracy_file/<file>": ...}, completions)``: per task with several tasks, per file
    with rows from several files."""
    texts = self.completions(model)
    acc = tasks_lib.accuracy(self.rows, texts)
    metrics = {"eval/accuracy": acc.pop("all")}
    if len(acc) > 1:
      metrics.update({f"eval/accuracy/{k}": v for k, v in acc.items()})
    names = list(dict.fromkeys(self.files or []))  # in the config's order
    if len(names) > 1:
      stems = [os.path.basename(n).removesuffix(".jsonl") for n in names]
      if len(set(stems)) < len(stems):  # two files of one name in different folders
        stems = [n.removesuffix(".jsonl") for n in names]
      for name, stem in zip(names, stems):
        rows = [(r, t) for r, t, f in zip(self.rows, texts, self.files) if f == name]
        metrics[f"eval/accuracy_file/{stem}"] = tasks_lib.accuracy(*zip(*rows))["all"]
    return metrics, texts

  def samples(self, texts: Sequence[str]) -> list[dict[str, Any]]:
    """One record per row: question, reference answer, completion and whether it is right."""
    return [{"question": row["question"], "answer": row["answer"], "completion": text,
             "correct": tasks_lib.verify(row["task"], text, row["answer"])}
            for row, text in zip(self.rows, texts)]
