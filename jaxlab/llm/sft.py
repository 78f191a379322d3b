"""Supervised fine-tuning (or training from scratch) of the decoder on task JSONL files.

The trainer behind ``config.trainer = "llm_sft"``:

    python -m launch.train --config=configs/llm/sft_tiny.py --workdir=runs/sft_tiny

1. Data: rows of task files (:mod:`jaxlab.llm.tasks`) become ``prompt + completion`` token
   sequences, RIGHT-padded to one length ``T``; the loss mask selects the completion and its
   eos. The batch of step ``s`` is a pure function of ``(seed, s)`` (an epoch-wise
   permutation), so a resumed run sees exactly the batches an uninterrupted one would.
2. Model: a fresh decoder of the configured size with a char-level tokenizer built from the
   training texts, or (``config.model.init``) a Hugging Face-format directory to fine-tune.
3. Training: :func:`jaxlab.llm.train.make_train_step` (float32 masters, compute in
   ``config.dtype``, gradient accumulation, sharding by ``config.layout`` over the mesh).
4. Evaluation every ``config.eval.every`` steps: greedy completions of held-out prompts with the
   KV-cache sampler, scored by each task's verifier; ``eval/accuracy`` in ``metrics.jsonl``.
5. Checkpoints (orbax, atomic) every ``config.checkpoint.every`` steps; the same command
   resumes from the newest. At the end the model and tokenizer are written in Hugging Face
   format to ``workdir/hf_model`` (``python -m launch.generate --model=workdir/hf_model``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from jaxlab import optim
from jaxlab.core import mesh as mesh_lib
from jaxlab.core.checkpoint import Checkpointer
from jaxlab.core.config import require, require_choice
from jaxlab.core.errors import ConfigError, JaxlabError
from jaxlab.core.metrics import MetricWriter, Progress
from jaxlab.llm import sharding as sharding_lib
from jaxlab.llm import tasks as tasks_lib
from jaxlab.llm import train as train_lib
from jaxlab.llm.config import SUPPORTED_ARCHITECTURES

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DataError(JaxlabError, ValueError):
  """A task file cannot be used for training (missing, malformed, or rows too long)."""


class NonFiniteLossError(JaxlabError):
  """The training loss became NaN/inf; names the step and the last good checkpoint."""


def check_finite_loss(name: str, value: float, when: str, ckpt: Checkpointer,
                      workdir: str) -> None:
  """Raises :class:`NonFiniteLossError` naming ``when`` and the newest checkpoint on disk."""
  if np.isfinite(value):
    return
  last = ckpt.latest_step()
  where = (os.path.join(workdir, "checkpoints", str(last)) if last is not None
           else "none (no checkpoint was written yet)")
  raise NonFiniteLossError(f"non-finite '{name}'={value} {when}; last good checkpoint: {where}")


def default_config() -> ml_collections.ConfigDict:
  """Every key an SFT experiment may set, with defaults for a small from-scratch model."""
  c = ml_collections.ConfigDict()
  c.trainer = "llm_sft"
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      train_files=("data/llm/chain_sum_train.jsonl",),  # relative to cwd or the repo root
      eval_files=("data/llm/chain_sum_eval.jsonl",),
      prompt_format="{question}",  # str.format over the row's fields
      completion_format=" {answer}",  # followed by the eos token
      max_len=0,  # T, tokens per training row; 0 = the longest row
      max_train_rows=0,  # 0 = all rows of each train file
  ))
  c.model = ml_collections.ConfigDict(dict(
      init="",  # a Hugging Face model dir to fine-tune; "" = from scratch (sizes below)
      architecture="Qwen3ForCausalLM",
      hidden_size=128,
      intermediate_size=384,
      num_layers=3,
      num_heads=4,
      num_kv_heads=2,
      head_dim=32,
      tie_word_embeddings=True,
      rope_theta=10_000.0,
      remat=False,
  ))
  c.dtype = "bfloat16"  # compute dtype; master weights and optimizer state stay float32
  c.steps = 1000
  c.batch_size = 64  # rows per step (all micro-batches together)
  c.grad_accum = 1  # micro-batches per step
  c.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, schedule="cosine", warmup_steps=100, min_lr_ratio=0.1,
      weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, max_grad_norm=1.0))
  c.layout = "fsdp"  # a sharding rule table of jaxlab.llm.sharding.RULES
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.log_every = 50  # steps between metric records
  c.eval = ml_collections.ConfigDict(dict(
      every=250,  # steps; 0 = only at the end
      num_examples=200,  # held-out rows scored (0 = all)
      batch_size=200,  # prompts per generate call
      max_new_tokens=8,
  ))
  c.checkpoint = ml_collections.ConfigDict(dict(every=250, keep=2))  # every: steps
  c.target_accuracy = None  # optional: the run records when eval accuracy first reaches it
  return c


class _AnyFields(dict):
  """A stand-in ``metadata`` for checking formats: any field (``{metadata[expression]}``) reads
  as an empty string, so only the format's syntax and top-level field names are checked."""

  def __missing__(self, key):
    return ""


def resolve_path(path: str) -> str:
  """A data path as given if it exists, else relative to the repository root."""
  if os.path.isabs(path) or os.path.exists(path):
    return path
  candidate = os.path.join(_REPO, path)
  return candidate if os.path.exists(candidate) else path


def check_config(c: ml_collections.ConfigDict) -> None:
  """SFT's consistency rules; each failure names its key."""
  for key in ("steps", "batch_size", "grad_accum", "log_every"):
    require(c[key] >= 1, f"'config.{key}' must be >= 1, got {c[key]}")
  require(c.batch_size % c.grad_accum == 0,
          f"'config.grad_accum'={c.grad_accum} must divide 'config.batch_size'={c.batch_size}")
  require_choice(c, "dtype", ["float32", "bfloat16"])
  require_choice(c, "layout", sorted(sharding_lib.RULES))
  require_choice(c, "optim.schedule", optim.SCHEDULES)
  require_choice(c, "model.architecture", SUPPORTED_ARCHITECTURES)
  require(c.optim.learning_rate > 0, f"'config.optim.learning_rate' must be > 0, got "
          f"{c.optim.learning_rate}")
  require(c.optim.warmup_steps >= 0, "'config.optim.warmup_steps' must be >= 0")
  for key in ("every", "num_examples"):
    require(c.eval[key] >= 0, f"'config.eval.{key}' must be >= 0, got {c.eval[key]}")
  for key in ("batch_size", "max_new_tokens"):
    require(c.eval[key] >= 1, f"'config.eval.{key}' must be >= 1, got {c.eval[key]}")
  for key in ("eval.every", "checkpoint.every"):
    group, name = key.split(".")
    every = c[group][name]
    require(every >= 0 and every % c.log_every == 0,
            f"'config.{key}'={every} must be a multiple of config.log_every={c.log_every}")
  require(c.checkpoint.keep >= 1, "'config.checkpoint.keep' must be >= 1")
  require(c.data.max_len >= 0 and c.data.max_train_rows >= 0,
          "'config.data.max_len' and 'config.data.max_train_rows' must be >= 0")
  for key in ("train_files", "eval_files"):
    files = c.data[key]
    require(len(files) >= 1, f"'config.data.{key}' must name at least one JSONL file")
    for f in files:
      require(os.path.isfile(resolve_path(f)), f"'config.data.{key}': file {f!r} does not exist "
              "(generate it with python -m jaxlab.llm.tasks)")
  for key in ("prompt_format", "completion_format"):
    try:
      c.data[key].format(task="t", question="q", answer="a", seed=0, metadata=_AnyFields())
    except (KeyError, IndexError, ValueError) as e:
      raise ConfigError(f"'config.data.{key}'={c.data[key]!r} is not a valid format over the "
                        f"row fields task/question/answer/seed/metadata ({e})") from None
  m = c.model
  if not m.init:
    for key in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                "head_dim"):
      require(m[key] >= 1, f"'config.model.{key}' must be >= 1, got {m[key]}")
    require(m.num_heads % m.num_kv_heads == 0, f"'config.model.num_heads'={m.num_heads} must be "
            f"a multiple of 'config.model.num_kv_heads'={m.num_kv_heads}")
    require(m.head_dim % 2 == 0, f"'config.model.head_dim'={m.head_dim} must be even (RoPE)")
  else:
    require(os.path.isdir(m.init), f"'config.model.init'={m.init!r} is not a directory")


def check_mesh(c: ml_collections.ConfigDict, mesh) -> None:
  """Micro-batches and eval batches are split over the data-parallel devices."""
  micro = c.batch_size // c.grad_accum
  mesh_lib.check_divisible(mesh, micro, "config.batch_size / config.grad_accum")
  mesh_lib.check_divisible(mesh, c.eval.batch_size, "config.eval.batch_size")


# -- data -----------------------------------------------------------------------------------------


def format_row(c: ml_collections.ConfigDict, row: dict[str, Any]) -> tuple[str, str]:
  """``(prompt, completion)`` texts of a task row."""
  return c.data.prompt_format.format(**row), c.data.completion_format.format(**row)


def _load(files: Sequence[str], limit: int) -> list[tuple[str, int, dict[str, Any]]]:
  """``(file, row number, row)`` for every row of ``files``."""
  out = []
  for f in files:
    rows = tasks_lib.load_jsonl(resolve_path(f), limit or None)
    out.extend((f, i + 1, r) for i, r in enumerate(rows))
  return out


def encode_sft(tokenizer: Any, prompts: Sequence[str], completions: Sequence[str],
               max_len: int = 0, where: Sequence[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
  """Tokenises pairs into RIGHT-padded ``(tokens [N, T], loss_mask [N, T])``.

  Each row is ``prompt ids (with the tokenizer's bos) + completion ids + eos``; ``loss_mask``
  is 1 on the completion and the eos. ``T`` is ``max_len`` or the longest row.

  Raises:
    DataError: a row is longer than ``max_len`` (named by ``where``, e.g. ``file:row``).
  """
  eos = tokenizer.eos_token_id
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  seqs = []
  for p, comp in zip(prompts, completions):
    pid = list(tokenizer(p)["input_ids"])
    cid = list(tokenizer(comp, add_special_tokens=False)["input_ids"]) + [eos]
    seqs.append((pid, cid))
  longest = max(len(a) + len(b) for a, b in seqs)
  t = max_len or longest
  tokens = np.full((len(seqs), t), pad, np.int32)
  loss_mask = np.zeros((len(seqs), t), np.int32)
  for i, (pid, cid) in enumerate(seqs):
    n = len(pid) + len(cid)
    if n > t:
      name = where[i] if where is not None else f"row {i}"
      raise DataError(f"{name}: {n} tokens, longer than 'config.data.max_len'={t}")
    tokens[i, :n] = pid + cid
    loss_mask[i, len(pid):n] = 1
  return tokens, loss_mask


def batch_indices(step: int, batch_size: int, num_rows: int, seed: int) -> np.ndarray:
  """Row indices of the batch of ``step`` (0-based): consecutive slices of per-epoch
  permutations, a pure function of its arguments (so resuming replays the same data)."""
  start = step * batch_size
  idx = np.arange(start, start + batch_size)
  epochs, pos = idx // num_rows, idx % num_rows
  out = np.empty(batch_size, np.int64)
  for e in np.unique(epochs):
    perm = np.random.default_rng([seed, int(e)]).permutation(num_rows)
    sel = epochs == e
    out[sel] = perm[pos[sel]]
  return out


# -- model and tokenizer --------------------------------------------------------------------------


def _build_tokenizer(c, workdir: str, train_texts: Sequence[str]):
  from jaxlab.llm import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "tokenizer")
  if c.model.init:
    return tok_lib.load_tokenizer(c.model.init)
  if os.path.isfile(os.path.join(path, "tokenizer.json")):
    return tok_lib.load_tokenizer(path)  # a resumed run keeps its ids
  # Digits and arithmetic symbols always, so held-out answers never hit <unk>.
  return tok_lib.train_char_tokenizer(train_texts, path, extra_chars="0123456789+-*/=(). ")


def build_model(c, tokenizer, mesh):
  """A fresh decoder of the configured size (or the ``model.init`` checkpoint), on ``mesh``."""
  from jaxlab.llm import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import modeling  # pylint: disable=g-import-not-at-top
  from jaxlab.llm.config import DecoderConfig  # pylint: disable=g-import-not-at-top
  if c.model.init:
    model, _ = ckpt_lib.from_pretrained(c.model.init, mesh=mesh, layout=c.layout, dtype=c.dtype,
                                        param_dtype="float32", tokenizer=False,
                                        remat=c.model.remat)
    return model
  m = c.model
  cfg = DecoderConfig(
      vocab_size=len(tokenizer), hidden_size=m.hidden_size,
      intermediate_size=m.intermediate_size, num_layers=m.num_layers, num_heads=m.num_heads,
      num_kv_heads=m.num_kv_heads, head_dim=m.head_dim, rope_theta=float(m.rope_theta),
      tie_word_embeddings=m.tie_word_embeddings, architecture=m.architecture,
      qk_norm=m.architecture == "Qwen3ForCausalLM",
      attention_bias=m.architecture == "Qwen2ForCausalLM", max_position_embeddings=1024,
      dtype=c.dtype, param_dtype="float32", remat=m.remat,
      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
      pad_token_id=tokenizer.pad_token_id)
  return modeling.init_decoder(cfg, seed=c.seed)


# -- evaluation -----------------------------------------------------------------------------------


class Evaluator:
  """Greedy completions of held-out prompts, scored by the tasks' verifiers.

  Prompts are left-padded to one length and cut into fixed-size batches (the last one padded
  with copies), so one compiled sampler serves every evaluation.
  """

  def __init__(self, c, tokenizer, rows: Sequence[dict[str, Any]], mesh):
    from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
    from jaxlab.llm.tokenizer import encode_prompts  # pylint: disable=g-import-not-at-top
    self.rows = list(rows)
    self.tokenizer = tokenizer
    self.mesh = mesh
    prompts = [c.data.prompt_format.format(**r) for r in self.rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    self.tokens, self.mask = sampling.left_pad(encode_prompts(tokenizer, prompts), pad_id=pad)
    self.batch = c.eval.batch_size
    self.params = sampling.SamplingParams(
        max_new_tokens=c.eval.max_new_tokens, temperature=0.0,
        stop_tokens=(int(tokenizer.eos_token_id),), pad_id=int(pad))

  def completions(self, model) -> list[str]:
    from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
    n = len(self.rows)
    texts = []
    for s in range(0, n, self.batch):
      idx = np.arange(s, s + self.batch) % n  # wrap: fixed shapes, extra rows discarded
      out = sampling.generate(model, self.tokens[idx], self.mask[idx], jax.random.key(0),
                              self.params, mesh=self.mesh)
      toks, lens = np.asarray(out.tokens), np.asarray(out.lengths)
      for row, k in zip(toks[: n - s], lens[: n - s]):
        texts.append(self.tokenizer.decode(row[:k].tolist(), skip_special_tokens=True))
    return texts

  def __call__(self, model) -> tuple[dict[str, float], list[str]]:
    texts = self.completions(model)
    acc = tasks_lib.accuracy(self.rows, texts)
    metrics = {"eval/accuracy": acc.pop("all")}
    if len(acc) > 1:
      metrics.update({f"eval/accuracy/{k}": v for k, v in acc.items()})
    return metrics, texts


# -- the run --------------------------------------------------------------------------------------


def _deterministic_record(metrics: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in metrics.items() if not k.startswith("time/")}


def run(config: ml_collections.ConfigDict, workdir: str, mesh, *, progress: bool = True,
        stop_at: int | None = None) -> dict[str, Any]:
  """Trains (or resumes) to ``config.steps``; returns the summary written to summary.json.

  Args:
    config: a validated config (see :func:`default_config`).
    workdir: run directory: config.json, metrics.jsonl, checkpoints/, tokenizer/, hf_model/.
    mesh: the device mesh (``jaxlab.core.mesh.make_mesh``).
    progress: show the console progress bar.
    stop_at: stop after logging this step, as if the process were killed there (tests of
      resume): only checkpoints up to it exist and the final export is skipped.
  """
  from jaxlab.core.loop import prepare_workdir  # pylint: disable=g-import-not-at-top
  from jaxlab.llm import checkpoint as hf_ckpt  # pylint: disable=g-import-not-at-top

  c = config
  prepare_workdir(workdir, c)
  try:
    train_rows = _load(c.data.train_files, c.data.max_train_rows)
    eval_rows = [r for _, _, r in _load(c.data.eval_files, c.eval.num_examples)]
  except tasks_lib.TaskDataError as e:
    raise DataError(str(e)) from None
  pairs = [format_row(c, r) for _, _, r in train_rows]
  tokenizer = _build_tokenizer(c, workdir, [p + q for p, q in pairs])
  where = [f"{f}:{line}" for f, line, _ in train_rows]
  tokens, loss_mask = encode_sft(tokenizer, [p for p, _ in pairs], [q for _, q in pairs],
                                 c.data.max_len, where)
  num_rows, seq_len = tokens.shape

  model = build_model(c, tokenizer, mesh)
  tx, schedule = optim.make_optimizer("adamw", total_steps=c.steps, decay_mask="matrices",
                                      **c.optim)
  graphdef, state = train_lib.init_train_state(model, tx, mesh, c.layout, compute_dtype=c.dtype)
  del model
  step_fn = train_lib.make_train_step(graphdef, tx, schedule, grad_accum=c.grad_accum,
                                      mesh=mesh, state=state, rules=c.layout)
  evaluator = Evaluator(c, tokenizer, eval_rows, mesh)

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=c.checkpoint.every or c.steps,
                      keep=c.checkpoint.keep)
  start, record = 0, {}
  if ckpt.latest_step() is not None:
    state, record, start = ckpt.restore(state)
    if start % c.log_every:
      raise ConfigError(f"checkpoint at step {start} is not at a multiple of "
                        f"'config.log_every'={c.log_every}; resume with the original log_every")
  writer = MetricWriter(workdir, purge_step=start + 1 if start else None)
  writer.truncate(start)
  n_params = train_lib.count_params(state.params)
  record.setdefault("num_params", n_params)

  bar = Progress(c.steps, start=start, unit="steps") if progress else None
  elapsed = float(record.get("elapsed", 0.0))
  t_last = time.perf_counter()
  window: list[dict[str, jax.Array]] = []
  shown: dict[str, float] = {}
  metrics: dict[str, Any] = {}
  eval_texts: list[str] = []
  step = start
  for step in range(start + 1, c.steps + 1):
    idx = batch_indices(step - 1, c.batch_size, num_rows, c.seed)
    batch = train_lib.shard_batch({"tokens": tokens[idx], "loss_mask": loss_mask[idx]}, mesh)
    state, m = step_fn(state, batch)
    window.append(m)
    last = step == c.steps
    if step % c.log_every and not last:
      continue
    host = jax.device_get(window)
    window = []
    metrics = {
        "train/loss": float(np.mean([h["loss"] for h in host])),
        "train/grad_norm": float(np.mean([h["grad_norm"] for h in host])),
        "train/lr": float(host[-1]["lr"]),
        "train/target_tokens": float(np.sum([h["tokens"] for h in host])),
    }
    check_finite_loss("train/loss", metrics["train/loss"], f"in the steps up to {step}", ckpt,
                      workdir)
    train_time = time.perf_counter() - t_last  # device_get above waited for the steps
    if (c.eval.every and step % c.eval.every == 0) or last:
      eval_metrics, eval_texts = evaluator(train_lib.model_from_state(graphdef, state))
      metrics.update(eval_metrics)
    now = time.perf_counter()
    elapsed += now - t_last
    t_last = now
    metrics["time/elapsed_s"] = elapsed
    # Training throughput (padded tokens per second), evaluation excluded.
    metrics["time/tokens_per_s"] = len(host) * c.batch_size * seq_len / max(train_time, 1e-9)
    target = c.target_accuracy
    if (target is not None and "first_target_step" not in record
        and metrics.get("eval/accuracy", -1.0) >= target):
      record["first_target_step"] = step
      record["first_target_elapsed_s"] = elapsed
    writer.write(step, metrics)
    if bar is not None:
      shown["loss"] = metrics["train/loss"]
      if "eval/accuracy" in metrics:
        shown["eval_acc"] = metrics["eval/accuracy"]
      bar.update(step, shown, force=last)
    record["elapsed"] = elapsed
    ckpt.save(step, state, dict(record), force=last)
    if stop_at is not None and step >= stop_at:
      break
  if bar is not None:
    bar.close()
  ckpt.close()
  writer.close()
  if stop_at is not None and step < c.steps:
    return dict(record, stopped_at=step)

  model = train_lib.model_from_state(graphdef, state)
  if not eval_texts:  # resumed a finished run: nothing was trained, score it again
    eval_metrics, eval_texts = evaluator(model)
    metrics.update(eval_metrics)
  hf_dir = os.path.join(workdir, "hf_model")
  hf_ckpt.save_pretrained(model, hf_dir, tokenizer=tokenizer)
  with open(os.path.join(workdir, "eval_samples.jsonl"), "w") as f:
    for row, text in zip(eval_rows, eval_texts):
      f.write(json.dumps({"question": row["question"], "answer": row["answer"],
                          "completion": text,
                          "correct": tasks_lib.verify(row["task"], text, row["answer"])}) + "\n")
  summary = dict(record, final_step=c.steps, seq_len=seq_len, train_rows=num_rows,
                 eval_rows=len(eval_rows), hf_model=hf_dir,
                 **{k: v for k, v in metrics.items()})
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, default=float)
  return summary
