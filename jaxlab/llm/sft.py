"""Supervised fine-tuning (or training from scratch) of the decoder on task JSONL files.

The trainer behind ``config.trainer = "llm_sft"``:

    python -m launch.train --config=configs/llm/sft_tiny.py --workdir=runs/sft_tiny

1. Data: rows of task files (:mod:`jaxlab.llm.tasks`) become ``prompt + completion`` token
   sequences, RIGHT-padded to one length ``T``; the loss mask selects the completion and its
   eos. The batch of step ``s`` is a pure function of ``(seed, s)`` (an epoch-wise
   permutation), so a resumed run sees exactly the batches an uninterrupted one would.
2. Model: a fresh decoder of the configured size with a char-level tokenizer built from the
   training texts, or (``config.model.init``) a Hugging Face-format directory to fine-tune.
   ``config.model.family = "looped"`` builds a looped (prelude / recurrent core / coda) model
   instead (``config.model.looped``, spec §1.6.1: fixed or Huginn's sampled recurrence with
   truncated backprop, optional exit gate; :func:`jaxlab.llm.train.looped_loss`), sharded by
   :mod:`jaxlab.models.looped.sharding` and exported in HrmText or our native looped format.
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
from jaxlab.core import loop
from jaxlab.core import mesh as mesh_lib
from jaxlab.core.config import require, require_choice
from jaxlab.core.errors import ConfigError, DataError
from jaxlab.llm import data as data_lib
from jaxlab.llm import train as train_lib
from jaxlab.llm.evaluation import TaskAccuracy
from jaxlab.models.decoder import sharding as sharding_lib
from jaxlab.models.decoder.config import SUPPORTED_ARCHITECTURES


def default_config() -> ml_collections.ConfigDict:
  """Every key an SFT experiment may set, with defaults for a small from-scratch model."""
  c = loop.base_config("llm_sft", log_every=50, eval_every=250, checkpoint_every=250,
                       checkpoint_keep=2)  # every: steps
  c.eval.update(dict(
      num_examples=200,  # held-out rows scored (0 = all)
      batch_size=200,  # prompts per generate call
      max_new_tokens=8,
  ))
  c.data = ml_collections.ConfigDict(dict(
      train_files=("data/llm/chain_sum_train.jsonl",),  # relative to cwd or the repo root
      eval_files=("data/llm/chain_sum_eval.jsonl",),
      prompt_format="{question}",  # str.format over the row's fields
      completion_format=" {answer}",  # followed by the eos token
      max_len=0,  # T, tokens per training row; 0 = the longest row
      max_train_rows=0,  # 0 = all rows of each train file
      # False: prompts are rendered chat transcripts that carry their own special tokens, so
      # the tokenizer adds none (its bos) in training and in evaluation.
      prompt_special_tokens=True,
  ))
  c.model = ml_collections.ConfigDict(dict(
      # "decoder" (jaxlab.models.decoder) or "looped" (jaxlab.models.looped: the sizes below
      # plus the model.looped group; num_layers and architecture are the decoder's only).
      family="decoder",
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
      looped=looped_defaults(),
  ))
  c.dtype = "bfloat16"  # compute dtype; master weights and optimizer state stay float32
  c.steps = 1000
  c.batch_size = 64  # rows per step (all micro-batches together)
  c.grad_accum = 1  # micro-batches per step
  c.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, schedule="cosine", warmup_steps=100, min_lr_ratio=0.1,
      weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, max_grad_norm=1.0))
  c.layout = "fsdp"  # a sharding rule table of jaxlab.models.decoder.sharding.RULES
  c.target_accuracy = None  # optional: the run records when eval accuracy first reaches it
  return c


def looped_defaults() -> ml_collections.ConfigDict:
  """``config.model.looped``: the spec's §1.6.1 schema (a miniature Huginn by default), read
  when ``config.model.family = "looped"``; :func:`looped_config` maps it to ``LoopedConfig``."""
  return ml_collections.ConfigDict(dict(
      n_prelude=1,  # unique blocks before the recurrence
      n_core=2,  # R, blocks of the shared core (applied num_iterations times)
      n_coda=1,  # unique blocks after it
      num_iterations=4,  # T: the trip count (the mean r-bar when the recurrence is sampled)
      injection="concat_adapter",  # none | add | concat_adapter | gated
      block_norm="sandwich_huginn",  # pre | post | sandwich_huginn | pre_post_ouro
      iter_norm="none",  # none | rmsnorm (a norm on the state after every iteration)
      state_init="trunc_normal",  # zeros | trunc_normal | copy_e
      state_init_std=0.0,  # trunc_normal's std; 0 = sqrt(2 / (5 hidden_size)) (Huginn)
      embedding_scale=0.0,  # 0 = sqrt(hidden_size) (Huginn)
      coda_norm=True,  # the final norm also before the coda (Huginn)
      train_recurrence="fixed",  # fixed | lognormal_poisson (Huginn's sampled trip count)
      backprop_depth=0,  # k: backprop through the last k iterations; 0 = through all
      recurrence_sigma=0.5,  # lognormal_poisson's log-std
      exit_gate=False,  # Ouro's exit gate and its entropy-regularised loss
      exit_gate_beta=0.1,  # that loss's entropy weight
  ))


def looped_config(c: ml_collections.ConfigDict, vocab_size: int, tokenizer: Any = None):
  """The ``LoopedConfig`` of ``config.model`` (sizes) and ``config.model.looped`` (layout)."""
  from jaxlab.models.looped.config import LoopedConfig  # pylint: disable=g-import-not-at-top
  m, lp = c.model, c.model.looped
  d = m.hidden_size
  return LoopedConfig(
      vocab_size=vocab_size, hidden_size=d, intermediate_size=m.intermediate_size,
      num_heads=m.num_heads, num_kv_heads=m.num_kv_heads, head_dim=m.head_dim,
      n_prelude=lp.n_prelude, n_core=lp.n_core, n_coda=lp.n_coda,
      num_iterations=lp.num_iterations, injection=lp.injection, block_norm=lp.block_norm,
      iter_norm=lp.iter_norm, state_init=lp.state_init,
      state_init_std=float(lp.state_init_std or (2 / (5 * d)) ** 0.5),
      state_seed=c.seed, embedding_scale=float(lp.embedding_scale or d ** 0.5),
      coda_norm=lp.coda_norm, rope_theta=float(m.rope_theta), max_position_embeddings=1024,
      tie_word_embeddings=m.tie_word_embeddings, dtype=c.dtype, param_dtype="float32",
      backprop_depth=lp.backprop_depth or None, train_recurrence=lp.train_recurrence,
      recurrence_sigma=float(lp.recurrence_sigma), exit_gate=lp.exit_gate,
      bos_token_id=None if tokenizer is None else tokenizer.bos_token_id,
      eos_token_id=None if tokenizer is None else tokenizer.eos_token_id,
      pad_token_id=None if tokenizer is None else tokenizer.pad_token_id)


def _check_looped(c: ml_collections.ConfigDict) -> None:
  """The ``config.model.looped`` rules; each failure names its key."""
  from jaxlab.models.looped import config as lc  # pylint: disable=g-import-not-at-top
  lp = c.model.looped
  options = {"injection": lc.INJECTIONS, "block_norm": lc.BLOCK_NORMS,
             "iter_norm": lc.ITER_NORMS, "state_init": lc.STATE_INITS,
             "train_recurrence": lc.TRAIN_RECURRENCES}
  for key, allowed in options.items():
    require_choice(c, f"model.looped.{key}", list(allowed))
  require(lp.num_iterations >= 1, "'config.model.looped.num_iterations' (the trip count T) "
          f"must be >= 1, got {lp.num_iterations}")
  require(lp.n_core >= 1, f"'config.model.looped.n_core' must be >= 1, got {lp.n_core}")
  for key in ("n_prelude", "n_coda", "backprop_depth", "state_init_std", "embedding_scale",
              "exit_gate_beta"):
    require(lp[key] >= 0, f"'config.model.looped.{key}' must be >= 0, got {lp[key]}")
  require(lp.recurrence_sigma > 0, "'config.model.looped.recurrence_sigma' must be > 0, got "
          f"{lp.recurrence_sigma}")
  if lp.train_recurrence == "lognormal_poisson":
    require(lp.backprop_depth >= 1, "'config.model.looped.backprop_depth' must be >= 1 with "
            "train_recurrence='lognormal_poisson' (the gradient window k)")
    require(not lp.exit_gate, "'config.model.looped.exit_gate' needs train_recurrence='fixed' "
            "(the exit-gate loss reads out every iteration of a fixed trip count)")
  looped_config(c, vocab_size=64)  # anything else LoopedConfig rejects, named by its field


class _AnyFields(dict):
  """A stand-in ``metadata`` for checking formats: any field (``{metadata[expression]}``) reads
  as an empty string, so only the format's syntax and top-level field names are checked."""

  def __missing__(self, key):
    return ""


def check_config(c: ml_collections.ConfigDict) -> None:
  """SFT's consistency rules; each failure names its key."""
  for key in ("steps", "batch_size", "grad_accum"):
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
  require(c.data.max_len >= 0 and c.data.max_train_rows >= 0,
          "'config.data.max_len' and 'config.data.max_train_rows' must be >= 0")
  for key in ("train_files", "eval_files"):
    files = c.data[key]
    require(len(files) >= 1, f"'config.data.{key}' must name at least one JSONL file")
    for f in files:
      require(os.path.isfile(data_lib.resolve_path(f)), f"'config.data.{key}': file {f!r} does not exist "
              "(generate it with python -m jaxlab.llm.tasks)")
  for key in ("prompt_format", "completion_format"):
    try:
      c.data[key].format(task="t", question="q", answer="a", seed=0, metadata=_AnyFields())
    except (KeyError, IndexError, ValueError) as e:
      raise ConfigError(f"'config.data.{key}'={c.data[key]!r} is not a valid format over the "
                        f"row fields task/question/answer/seed/metadata ({e})") from None
  require_choice(c, "model.family", list(FAMILIES))
  m = c.model
  if m.family == "looped":
    _check_looped(c)
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


def encode_sft(tokenizer: Any, prompts: Sequence[str], completions: Sequence[str],
               max_len: int = 0, where: Sequence[str] | None = None,
               prompt_special_tokens: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Tokenises pairs into RIGHT-padded ``(tokens [N, T], loss_mask [N, T])``.

  Each row is ``prompt ids (with the tokenizer's bos unless prompt_special_tokens is False) +
  completion ids + eos``; ``loss_mask``
  is 1 on the completion and the eos. ``T`` is ``max_len`` or the longest row.

  Raises:
    DataError: a row is longer than ``max_len`` (named by ``where``, e.g. ``file:row``).
  """
  eos = tokenizer.eos_token_id
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  seqs = []
  for p, comp in zip(prompts, completions):
    pid = list(tokenizer(p, add_special_tokens=prompt_special_tokens)["input_ids"])
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


# -- model and tokenizer --------------------------------------------------------------------------


def _build_tokenizer(c, workdir: str, train_texts: Sequence[str]):
  from jaxlab.models import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "tokenizer")
  if c.model.init:
    return tok_lib.load_tokenizer(c.model.init)
  if os.path.isfile(os.path.join(path, "tokenizer.json")):
    return tok_lib.load_tokenizer(path)  # a resumed run keeps its ids
  # Digits and arithmetic symbols always, so held-out answers never hit <unk>.
  return tok_lib.train_char_tokenizer(train_texts, path, extra_chars="0123456789+-*/=(). ")


FAMILIES = ("decoder", "looped")


def sharding_rules(c: ml_collections.ConfigDict):
  """The rule table of ``config.layout`` for the model family."""
  if c.model.family == "looped":
    from jaxlab.models.looped import sharding as looped_rules  # pylint: disable=g-import-not-at-top
    return looped_rules.RULES[c.layout]
  return sharding_lib.RULES[c.layout]


def _build_looped(c, tokenizer, mesh):
  """A fresh looped model (or the ``model.init`` looped directory); the train state is laid
  out on the mesh later, as the decoder's."""
  from jaxlab.models.looped import modeling as looped  # pylint: disable=g-import-not-at-top
  from jaxlab.models.looped import params as looped_ckpt  # pylint: disable=g-import-not-at-top
  if c.model.init:
    model, _ = looped_ckpt.from_pretrained(c.model.init, dtype=c.dtype, param_dtype="float32",
                                           tokenizer=False)
  else:
    model = looped.init_looped(looped_config(c, len(tokenizer), tokenizer), seed=c.seed)
  del mesh
  return model


def build_model(c, tokenizer, mesh):
  """A fresh decoder or looped model of the configured size (or the ``model.init``
  checkpoint), on ``mesh``."""
  if c.model.family == "looped":
    return _build_looped(c, tokenizer, mesh)
  from jaxlab.models.decoder import modeling  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder import params as ckpt_lib  # pylint: disable=g-import-not-at-top
  from jaxlab.models.decoder.config import DecoderConfig  # pylint: disable=g-import-not-at-top
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


# -- the run --------------------------------------------------------------------------------------


class SFTRun:
  """One SFT run for :func:`jaxlab.core.loop.run`: data, tokenizer, model and the compiled step.

  ``workdir/tokenizer`` holds the char tokenizer of a from-scratch run (written once and kept
  across resumes, so token ids never change).
  """

  def __init__(self, c: ml_collections.ConfigDict, workdir: str, mesh):
    self.config = c
    self.workdir, self.mesh = workdir, mesh
    train_rows = data_lib.load_rows(c.data.train_files, c.data.max_train_rows)
    self.eval_rows = [r for _, _, r in data_lib.load_rows(c.data.eval_files,
                                                          c.eval.num_examples)]
    pairs = [format_row(c, r) for _, _, r in train_rows]
    self.tokenizer = _build_tokenizer(c, workdir, [p + q for p, q in pairs])
    where = [f"{f}:{line}" for f, line, _ in train_rows]
    self.tokens, self.loss_mask = encode_sft(self.tokenizer, [p for p, _ in pairs],
                                             [q for _, q in pairs], c.data.max_len, where,
                                             c.data.prompt_special_tokens)
    self.num_rows, self.seq_len = self.tokens.shape

    model = build_model(c, self.tokenizer, mesh)
    tx, schedule = optim.make_optimizer("adamw", total_steps=c.steps, decay_mask="matrices",
                                        **c.optim)
    rules = sharding_rules(c)
    self.graphdef, self._state0 = train_lib.init_train_state(model, tx, mesh, rules,
                                                             compute_dtype=c.dtype)
    del model
    loss_fn = (train_lib.looped_loss(c.model.looped.exit_gate_beta)
               if c.model.family == "looped" else None)
    self.step_fn = train_lib.make_train_step(self.graphdef, tx, schedule,
                                             grad_accum=c.grad_accum, mesh=mesh,
                                             state=self._state0, rules=rules,
                                             loss_fn=loss_fn, seed=c.seed)
    self.evaluator = TaskAccuracy.from_config(c, self.tokenizer, self.eval_rows, mesh)
    self.eval_texts: list[str] = []

    self.total_steps = c.steps
    self.units_per_step = None
    self.progress_keys = {"loss": "train/loss", "eval_acc": "eval/accuracy"}
    self.plot_keys = ("train/loss", "eval/accuracy")
    self.target = ("eval/accuracy", c.target_accuracy)

  def init(self) -> train_lib.TrainState:
    return self._state0

  def train(self, state, step: int, num_steps: int):
    """``num_steps`` optimizer steps; their metrics averaged (lr: the last step's)."""
    c = self.config
    t0 = time.perf_counter()
    window = []
    for s in range(step, step + num_steps):
      idx = data_lib.batch_indices(s, c.batch_size, self.num_rows, c.seed)
      batch = train_lib.shard_batch({"tokens": self.tokens[idx],
                                     "loss_mask": self.loss_mask[idx]}, self.mesh)
      state, m = self.step_fn(state, batch)
      window.append(m)
    host = jax.device_get(window)
    train_time = time.perf_counter() - t0  # device_get waited for the steps
    metrics = {
        "train/loss": float(np.mean([h["loss"] for h in host])),
        "train/grad_norm": float(np.mean([h["grad_norm"] for h in host])),
        "train/lr": float(host[-1]["lr"]),
        "train/target_tokens": float(np.sum([h["tokens"] for h in host])),
        # Training throughput (padded tokens per second), evaluation excluded.
        "time/tokens_per_s": len(host) * c.batch_size * self.seq_len / max(train_time, 1e-9),
    }
    return state, metrics

  def model(self, state):
    """The decoder with ``state``'s parameters (compute dtype)."""
    return train_lib.model_from_state(self.graphdef, state)

  def evaluate(self, state, step: int) -> dict[str, Any]:
    del step
    metrics, self.eval_texts = self.evaluator(self.model(state))
    return metrics

  def finish(self, state, metrics: dict[str, Any]) -> dict[str, Any]:
    """Writes ``hf_model/`` (model + tokenizer) and ``eval_samples.jsonl``."""
    from jaxlab.models.decoder import params as hf_ckpt  # pylint: disable=g-import-not-at-top
    from jaxlab.models.looped import params as looped_ckpt  # pylint: disable=g-import-not-at-top
    del metrics
    hf_dir = os.path.join(self.workdir, "hf_model")
    if self.config.model.family == "looped":  # HrmText when the layout is HrmText's, else ours
      looped_ckpt.save_pretrained(self.model(state), hf_dir, tokenizer=self.tokenizer,
                                  fmt="auto")
    else:
      hf_ckpt.save_pretrained(self.model(state), hf_dir, tokenizer=self.tokenizer)
    with open(os.path.join(self.workdir, "eval_samples.jsonl"), "w") as f:
      for record in self.evaluator.samples(self.eval_texts):
        f.write(json.dumps(record) + "\n")
    return dict(seq_len=self.seq_len, train_rows=self.num_rows, eval_rows=len(self.eval_rows),
                num_params=train_lib.count_params(state.params), hf_model=hf_dir)


TRAINER = loop.Trainer(name="llm_sft", default_config=default_config, check_config=check_config,
                       build=SFTRun, check_mesh=check_mesh, evaluators=("task_accuracy",))


def run(config: ml_collections.ConfigDict, workdir: str, mesh, *, progress: bool = True,
        stop_at: int | None = None) -> dict[str, Any]:
  """Trains (or resumes) a validated config; the summary. See :func:`jaxlab.core.loop.run`."""
  return loop.run(TRAINER, config, workdir, mesh, progress=progress, stop_at=stop_at)
