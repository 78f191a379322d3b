"""Supervised fine-tuning (or training from scratch) of the decoder on task JSONL files.

The trainer behind ``config.trainer = "llm_sft"``:

    python -m launch.train --config=configs/llm/sft_tiny.py --workdir=runs/sft_tiny

1. Data: rows of task files (:mod:`jaxlab.llm.tasks`) become ``prompt + completion`` token
   sequences, RIGHT-padded to one length ``T``; the loss mask selects the completion and its
   eos. The batch of step ``s`` is a pure function of ``(seed, s)`` (an epoch-wise
   permutation), so a resumed run sees exactly the batches an uninterrupted one would.
   Rows are parsed and tokenized when a batch needs them, each process only the rows of its
   own devices (:class:`jaxlab.llm.data.RowStore`); at the start every row is checked once
   (and measured for ``T`` and an image row's patch budget, and read for a fresh char
   tokenizer's characters), each process its share, the results exchanged, so a bad row
   fails the run before training.
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

Vision-language models (``config.model.family = "qwen_vl"``, Qwen2.5-VL): a fresh model of
the sizes in ``config.model`` (text) and ``config.model.vision`` (tower), or ``model.init`` = a
Qwen2.5-VL directory. Rows may name image files (``config.data.image_field``); each
``{image}`` of ``data.prompt_format`` (``data.image_placeholder``) becomes one image span,
repeated once per merged patch of that image (a format without it puts the images first). The
images are read per batch and padded to a fixed patch budget per row (``data.max_patches``;
:class:`jaxlab.llm.data.RowImages`), so batches of mixed image sizes share one compiled step;
M-RoPE positions are computed with each batch (nothing per row is kept for the whole
training set, so its size is bounded by the files, not memory), and the loss is
:func:`jaxlab.llm.train.vlm_loss` through the same step. The char tokenizer of a fresh model
carries the vision tokens, and ``hf_model`` gets ``preprocessor_config.json`` too, so
``python -m launch.generate --model=workdir/hf_model --image=x.png --prompt=...`` answers.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

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
      # Vision-language rows (model.family "qwen_vl"): the row field with one image path or a
      # list of paths (relative to the JSONL file's folder, or absolute); "" = text only.
      image_field="",
      image_placeholder="image",  # the prompt_format field ("{image}") standing for an image
      min_pixels=0,  # image area bounds of the resize rule; 0 = the model dir's / default
      max_pixels=0,
      max_patches=0,  # patch budget per row (all its images); 0 = the largest training row's
  ))
  c.model = ml_collections.ConfigDict(dict(
      # "decoder" (jaxlab.models.decoder), "looped" (jaxlab.models.looped: the sizes below
      # plus the model.looped group; num_layers and architecture are the decoder's only) or
      # "qwen_vl" (Qwen2.5-VL: the sizes below for its Qwen2 text model, head_dim =
      # hidden_size / num_heads, plus the model.vision group).
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
      vision=vision_defaults(),
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


def tiny_decoder(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Sets ``c`` to the 0.6M-parameter decoder of the CPU studies, trained from scratch with a
  char-level tokenizer in float32: width 128, 3 layers, 4 query / 2 key-value heads of 32,
  SwiGLU width 384 (for ``qwen_vl`` runs, the language model's shape). Returns ``c``."""
  c.model.init = ""
  c.model.update(dict(hidden_size=128, intermediate_size=384, num_layers=3, num_heads=4,
                      num_kv_heads=2, head_dim=32))
  c.dtype = "float32"
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


def vision_defaults() -> ml_collections.ConfigDict:
  """``config.model.vision``: the tower of a fresh Qwen2.5-VL (``model.family = "qwen_vl"``);
  its output width is the text model's ``hidden_size``."""
  return ml_collections.ConfigDict(dict(
      depth=2,
      hidden_size=64,
      intermediate_size=128,
      num_heads=4,  # head width hidden_size / num_heads, a multiple of 4 (2-D RoPE)
      patch_size=14,
      temporal_patch_size=2,
      spatial_merge_size=2,
      window_size=56,  # pixels; a multiple of patch_size * spatial_merge_size
      fullatt_block_indexes=(1,),  # blocks attending over the whole image
      # The text model's M-RoPE split of head_dim / 2 into (time, rows, columns); () = the
      # proportions of Qwen2.5-VL's (16, 24, 24).
      mrope_section=(),
  ))


def vision_config(c: ml_collections.ConfigDict):
  """The ``VisionConfig`` of ``config.model.vision`` (output width: the text hidden size)."""
  from jaxlab.models.qwen_vl.config import VisionConfig  # pylint: disable=g-import-not-at-top
  v = c.model.vision
  return VisionConfig(
      depth=v.depth, hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
      num_heads=v.num_heads, patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size,
      spatial_merge_size=v.spatial_merge_size, window_size=v.window_size,
      fullatt_block_indexes=tuple(int(i) for i in v.fullatt_block_indexes),
      out_hidden_size=c.model.hidden_size)


def mrope_section(c: ml_collections.ConfigDict) -> tuple[int, ...]:
  """``config.model.vision.mrope_section``, or Qwen2.5-VL's proportions: of the ``head_dim / 2``
  rotary pairs, 3/8 each to rows and columns and the rest to time."""
  if c.model.vision.mrope_section:
    return tuple(int(x) for x in c.model.vision.mrope_section)
  half = c.model.hidden_size // c.model.num_heads // 2
  hw = 3 * half // 8
  return (half - 2 * hw, hw, hw)


def qwen_vl_config(c: ml_collections.ConfigDict, tokenizer: Any):
  """The ``QwenVLConfig`` of a fresh model: a Qwen2 text model of ``config.model``'s sizes
  (q/k/v biases, head width hidden_size / num_heads, M-RoPE) and ``config.model.vision``; the
  vision token ids are the tokenizer's."""
  from jaxlab.models.decoder.config import DecoderConfig  # pylint: disable=g-import-not-at-top
  from jaxlab.models.qwen_vl import inputs  # pylint: disable=g-import-not-at-top
  from jaxlab.models.qwen_vl.config import QwenVLConfig  # pylint: disable=g-import-not-at-top
  m = c.model
  text = DecoderConfig(
      vocab_size=len(tokenizer), hidden_size=m.hidden_size,
      intermediate_size=m.intermediate_size, num_layers=m.num_layers, num_heads=m.num_heads,
      num_kv_heads=m.num_kv_heads, head_dim=m.hidden_size // m.num_heads,
      rope_theta=float(m.rope_theta), mrope_section=mrope_section(c),
      tie_word_embeddings=m.tie_word_embeddings, architecture="Qwen2ForCausalLM",
      attention_bias=True, max_position_embeddings=1024, dtype=c.dtype, param_dtype="float32",
      remat=m.remat, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
      pad_token_id=tokenizer.pad_token_id)
  ids = {key: tokenizer.convert_tokens_to_ids(tok) for key, tok in (
      ("image_token_id", inputs.IMAGE_TOKEN), ("video_token_id", VIDEO_TOKEN),
      ("vision_start_token_id", inputs.VISION_START),
      ("vision_end_token_id", inputs.VISION_END))}
  return QwenVLConfig(text=text, vision=vision_config(c), **ids)


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


def _first_row(path: str) -> dict[str, Any]:
  """The first row of a task file (a plain dict), or {} when it cannot be read here."""
  try:
    with open(data_lib.resolve_path(path), encoding="utf-8") as f:
      for line in f:
        if line.strip():
          row = json.loads(line)
          return row if isinstance(row, dict) else {}
  except (OSError, ValueError):
    pass
  return {}


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
      missing = data_lib.missing_file(f"data.{key}", f)
      require(missing is None, missing)
  image_field = {}
  if c.data.image_field and c.data.image_placeholder.strip().strip("{}"):
    image_field = {c.data.image_placeholder.strip().strip("{}"): ""}
  # The formats may also name any other field of the rows (e.g. GUI-grounding rows'
  # system / gt_response): those of the first training row are taken as given.
  first = _first_row(c.data.train_files[0])
  fields = {**first, "task": "t", "question": "q", "answer": "a", "seed": 0,
            "metadata": _AnyFields(), **image_field}
  for key in ("prompt_format", "completion_format"):
    try:
      c.data[key].format(**fields)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
      raise ConfigError(f"'config.data.{key}'={c.data[key]!r} is not a valid format over the "
                        f"row fields task/question/answer/seed/metadata (and the other fields "
                        f"of the first training row) ({e})") from None
  require_choice(c, "model.family", list(FAMILIES))
  m = c.model
  if m.family == "looped":
    _check_looped(c)
  require(not c.data.image_field or m.family == "qwen_vl", "'config.data.image_field' needs a "
          f"vision-language model: set 'config.model.family' to 'qwen_vl' (got {m.family!r})")
  for key in ("min_pixels", "max_pixels", "max_patches"):
    require(c.data[key] >= 0, f"'config.data.{key}' must be >= 0, got {c.data[key]}")
  require(not (c.data.min_pixels and c.data.max_pixels)
          or c.data.min_pixels <= c.data.max_pixels, "'config.data.min_pixels'="
          f"{c.data.min_pixels} must be <= 'config.data.max_pixels'={c.data.max_pixels}")
  if m.family == "qwen_vl" and not m.init:
    _check_vision(c)
  if not m.init:
    for key in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                "head_dim"):
      require(m[key] >= 1, f"'config.model.{key}' must be >= 1, got {m[key]}")
    require(m.num_heads % m.num_kv_heads == 0, f"'config.model.num_heads'={m.num_heads} must be "
            f"a multiple of 'config.model.num_kv_heads'={m.num_kv_heads}")
    require(m.head_dim % 2 == 0, f"'config.model.head_dim'={m.head_dim} must be even (RoPE)")
  else:
    require(os.path.isdir(m.init), f"'config.model.init'={m.init!r} is not a directory")


def _check_vision(c: ml_collections.ConfigDict) -> None:
  """A fresh Qwen2.5-VL's sizes; each failure names its key."""
  m = c.model
  require(m.hidden_size % m.num_heads == 0 and (m.hidden_size // m.num_heads) % 2 == 0,
          f"'config.model.hidden_size'={m.hidden_size} must be an even multiple of "
          f"'config.model.num_heads'={m.num_heads} (Qwen2.5-VL's head width is hidden_size / "
          "num_heads)")
  require(m.head_dim == m.hidden_size // m.num_heads, f"'config.model.head_dim'={m.head_dim} "
          f"must equal hidden_size / num_heads = {m.hidden_size // max(m.num_heads, 1)} for "
          "model.family='qwen_vl'")
  sec = mrope_section(c)
  require(all(x >= 1 for x in sec) and sum(sec) == m.head_dim // 2,
          f"'config.model.vision.mrope_section'={list(sec)} must be 3 positive ints summing to "
          f"head_dim / 2 = {m.head_dim // 2}")
  for key in ("depth", "hidden_size", "intermediate_size", "num_heads", "patch_size",
              "temporal_patch_size", "spatial_merge_size"):
    require(m.vision[key] >= 1, f"'config.model.vision.{key}' must be >= 1, got "
            f"{m.vision[key]}")
  try:
    vision_config(c)
  except ValueError as e:
    raise ConfigError(f"'config.model.vision': {e}") from None
  unit = m.vision.spatial_merge_size ** 2
  require(c.data.max_patches % unit == 0, f"'config.data.max_patches'={c.data.max_patches} "
          f"must be a multiple of spatial_merge_size**2 = {unit}")


def check_mesh(c: ml_collections.ConfigDict, mesh) -> None:
  """Micro-batches and eval batches are split over the data-parallel devices."""
  micro = c.batch_size // c.grad_accum
  mesh_lib.check_divisible(mesh, micro, "config.batch_size / config.grad_accum")
  mesh_lib.check_divisible(mesh, c.eval.batch_size, "config.eval.batch_size")


# -- data -----------------------------------------------------------------------------------------


def format_row(c: ml_collections.ConfigDict, row: dict[str, Any]) -> tuple[str, str]:
  """``(prompt, completion)`` texts of a task row."""
  return c.data.prompt_format.format(**row), c.data.completion_format.format(**row)


def _format_located(c: ml_collections.ConfigDict, located: tuple[str, int, dict]
                    ) -> tuple[str, str]:
  """:func:`format_row` of a ``(file, row number, row)``; a format field the row lacks is a
  ``DataError`` naming ``file:row``."""
  f, line, row = located
  try:
    return format_row(c, row)
  except (KeyError, IndexError, AttributeError) as e:
    raise DataError(f"{f}:{line}: 'config.data.prompt_format' / 'completion_format' read a "
                    f"field the row does not have ({type(e).__name__} {e})") from None


def _job_chars(c: ml_collections.ConfigDict, store: data_lib.RowStore,
               render: Callable[[tuple[str, int, dict]], tuple] | None = None) -> str:
  """Every character of the training texts (prompt and completion of every row, as ``render``
  gives them first; vision tokens left out, as the tokenizer adds them whole), sorted: what a
  char tokenizer is built from. Each process reads its share of the rows; the character sets
  are exchanged (a collective), so every process builds the same tokenizer without waiting for
  process 0 to write it."""
  chars: set[str] = set()
  vision = _vision_tokens() if c.model.family == "qwen_vl" else []

  def collect(index, where, items):
    del index, where
    for item in items:
      for text in item[:2]:
        for v in vision:
          text = text.replace(v, "")
        chars.update(text)

  data_lib.share_pass(store, render or functools.partial(_format_located, c), collect)
  mine = np.asarray(sorted(ord(ch) for ch in chars), np.int32)
  sizes = mesh_lib.allgather_host(np.int32(len(mine)))
  padded = np.full(max(int(sizes.max()), 1), -1, np.int32)
  padded[:len(mine)] = mine
  every = mesh_lib.allgather_host(padded)
  return "".join(chr(x) for x in sorted(set(every[every >= 0].tolist())))


def _job_seq_len(c: ml_collections.ConfigDict, store: data_lib.RowStore, tokenizer,
                 render: Callable[[tuple[str, int, dict]], tuple] | None = None,
                 each: Callable[[list[tuple]], None] | None = None) -> int:
  """``T``: ``config.data.max_len``, or the longest tokenized training row. Each process
  tokenizes its share of the rows (a collective), which also checks every row once.
  ``render``: a row's ``(prompt, completion, ...)`` (default :func:`_format_located`);
  ``each``: called with every chunk of rendered rows (this process's share only).

  Raises:
    DataError: a bad row, or one longer than ``max_len`` (the first such, as
      :func:`encode_sft` names it), on every process.
  """

  def lengths(index, where, items):
    del index
    if each is not None:
      each(items)
    _, mask = encode_sft(tokenizer, [x[0] for x in items], [x[1] for x in items], 0, where,
                         c.data.prompt_special_tokens)
    return mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)  # the eos is the last target

  longest, over = data_lib.measure_rows(store, render or functools.partial(_format_located, c),
                                        lengths, c.data.max_len)
  if over is not None:
    f, line = store.where(over[0])
    raise DataError(f"{f}:{line}: {over[1]} tokens, longer than 'config.data.max_len'="
                    f"{c.data.max_len}")
  return c.data.max_len or longest


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


VIDEO_TOKEN = "<|video_pad|>"


def _vision_tokens() -> list[str]:
  from jaxlab.models.qwen_vl import inputs  # pylint: disable=g-import-not-at-top
  return [inputs.VISION_START, inputs.IMAGE_TOKEN, VIDEO_TOKEN, inputs.VISION_END]


def _build_tokenizer(c, workdir: str,
                     train_texts: Sequence[str] | Callable[[], Sequence[str]]):
  """The run's tokenizer: ``model.init``'s, the one a resumed run wrote, or a char tokenizer of
  the training texts (written to ``workdir/tokenizer`` by process 0 only). ``train_texts``
  may be a function giving them, called (on every process) only when a char tokenizer is
  built; a char tokenizer only needs the set of characters (:func:`_job_chars`).

  Under several processes every process looks for a saved tokenizer before any writes one (a
  barrier), then each builds the same tokenizer from the same texts in memory, so no process
  reads a file another is still writing.
  """
  from jaxlab.models import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "tokenizer")
  if c.model.init:
    return tok_lib.load_tokenizer(c.model.init)
  saved = os.path.isfile(os.path.join(path, "tokenizer.json"))
  mesh_lib.barrier("sft_tokenizer_checked")
  if saved:
    return tok_lib.load_tokenizer(path)  # a resumed run keeps its ids
  if callable(train_texts):
    train_texts = train_texts()
  out = path if mesh_lib.is_primary() else None
  # Digits and arithmetic symbols always, so held-out answers never hit <unk>.
  extra = "0123456789+-*/=(). "
  if c.model.family != "qwen_vl":
    return tok_lib.train_char_tokenizer(train_texts, out, extra_chars=extra)
  # A VLM's: the characters of the texts without their vision tokens, which are added as
  # special tokens; no chat template, so launch.generate renders prompts as training did.
  vision = _vision_tokens()
  plain = []
  for t in train_texts:
    for v in vision:
      t = t.replace(v, "")
    plain.append(t)
  tok = tok_lib.train_char_tokenizer(plain, None, extra_chars=extra, chat_template=None)
  tok.add_special_tokens({"additional_special_tokens": vision})
  if out is not None:
    os.makedirs(out, exist_ok=True)
    tok.save_pretrained(out)
  return tok


FAMILIES = ("decoder", "looped", "qwen_vl")


def sharding_rules(c: ml_collections.ConfigDict):
  """The rule table of ``config.layout`` for the model family."""
  if c.model.family == "looped":
    from jaxlab.models.looped import sharding as looped_rules  # pylint: disable=g-import-not-at-top
    return looped_rules.RULES[c.layout]
  if c.model.family == "qwen_vl":
    from jaxlab.models.qwen_vl import sharding as vl_rules  # pylint: disable=g-import-not-at-top
    return vl_rules.RULES[c.layout]
  return sharding_lib.RULES[c.layout]


def _build_qwen_vl(c, tokenizer, mesh, config=None):
  """A fresh Qwen2.5-VL of ``config`` (or the ``model.init`` directory, placed on ``mesh``)."""
  from jaxlab.models.qwen_vl import modeling as vl  # pylint: disable=g-import-not-at-top
  from jaxlab.models.qwen_vl import params as vl_ckpt  # pylint: disable=g-import-not-at-top
  if c.model.init:
    model, _ = vl_ckpt.from_pretrained(c.model.init, mesh=mesh, layout=c.layout, dtype=c.dtype,
                                       param_dtype="float32", tokenizer=False,
                                       remat=c.model.remat)
    return model
  return vl.init_qwen_vl(config or qwen_vl_config(c, tokenizer), seed=c.seed)


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
  if c.model.family == "qwen_vl":
    return _build_qwen_vl(c, tokenizer, mesh)
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


def image_configs(c):
  """``(ImageProcessorConfig, VisionConfig)``: the ``model.init`` directory's (its
  ``preprocessor_config.json`` if present) or a fresh model's, with ``data.min_pixels`` /
  ``data.max_pixels`` overriding the area bounds when set.

  Raises:
    ConfigError: the pixel bounds disagree, or the image processor's patch / merge size is not
      the model's.
  """
  import dataclasses  # pylint: disable=g-import-not-at-top
  from jaxlab.models.qwen_vl import params as vl_ckpt  # pylint: disable=g-import-not-at-top
  from jaxlab.models.qwen_vl import processor  # pylint: disable=g-import-not-at-top
  if c.model.init:
    vision = vl_ckpt.load_config(c.model.init).vision
    has_file = os.path.isfile(os.path.join(c.model.init, processor.PREPROCESSOR_FILE))
    ic = (processor.ImageProcessorConfig.from_dir(c.model.init) if has_file else
          processor.ImageProcessorConfig(patch_size=vision.patch_size,
                                         temporal_patch_size=vision.temporal_patch_size,
                                         merge_size=vision.spatial_merge_size))
  else:
    vision = vision_config(c)
    ic = processor.ImageProcessorConfig(patch_size=vision.patch_size,
                                        temporal_patch_size=vision.temporal_patch_size,
                                        merge_size=vision.spatial_merge_size)
  bounds = {k: c.data[k] for k in ("min_pixels", "max_pixels") if c.data[k]}
  ic = dataclasses.replace(ic, **bounds)
  require(ic.min_pixels <= ic.max_pixels, f"'config.data.min_pixels'={ic.min_pixels} exceeds "
          f"max_pixels={ic.max_pixels} (the model's image processor or config.data)")
  require(ic.patch_size == vision.patch_size and ic.merge_size == vision.spatial_merge_size
          and ic.temporal_patch_size == vision.temporal_patch_size,
          f"{processor.PREPROCESSOR_FILE}: patch_size={ic.patch_size}, merge_size="
          f"{ic.merge_size}, temporal_patch_size={ic.temporal_patch_size}; the model has "
          f"{vision.patch_size}, {vision.spatial_merge_size}, {vision.temporal_patch_size}")
  return ic, vision


def _check_vl_tokenizer(c, tokenizer):
  """The model's ``QwenVLConfig`` (the ``model.init`` directory's or a fresh one), after
  checking that the tokenizer maps ``<|image_pad|>`` to its image token id."""
  from jaxlab.models.qwen_vl import inputs  # pylint: disable=g-import-not-at-top
  from jaxlab.models.qwen_vl import params as vl_ckpt  # pylint: disable=g-import-not-at-top
  if not c.model.init:
    return qwen_vl_config(c, tokenizer)
  config = vl_ckpt.load_config(c.model.init)
  got = tokenizer.convert_tokens_to_ids(inputs.IMAGE_TOKEN)
  require(got == config.image_token_id, f"'config.model.init'={c.model.init!r}: the tokenizer "
          f"maps {inputs.IMAGE_TOKEN} to id {got}, the model's image_token_id is "
          f"{config.image_token_id}")
  return config


def mrope_positions(config, tokens: np.ndarray, mask: np.ndarray, images, where
                     ) -> np.ndarray:
  """``[N, 3, T]`` int32 M-RoPE positions of right-padded rows (``rope_index`` per row).

  Raises:
    DataError: a row's image placeholder tokens do not match its images (``file:row``).
  """
  from jaxlab.models.qwen_vl import modeling as vl  # pylint: disable=g-import-not-at-top
  out = np.zeros((tokens.shape[0], 3, tokens.shape[1]), np.int32)
  for i in range(tokens.shape[0]):
    grid = images.grids[i] if images is not None else None
    try:
      pos, _ = vl.rope_index(config, tokens[i:i + 1], mask[i:i + 1],
                             grid if grid is not None and len(grid) else None)
    except ValueError as e:
      raise DataError(f"{where[i]}: {e}") from None
    out[i] = pos[:, 0]
  return out


# -- the run --------------------------------------------------------------------------------------


class SFTRun:
  """One SFT run for :func:`jaxlab.core.loop.run`: data, tokenizer, model and the compiled step.

  ``workdir/tokenizer`` holds the char tokenizer of a from-scratch run (written once and kept
  across resumes, so token ids never change).
  """

  def __init__(self, c: ml_collections.ConfigDict, workdir: str, mesh):
    self.config = c
    self.workdir, self.mesh = workdir, mesh
    self.vlm = c.model.family == "qwen_vl"
    # Rows are parsed and tokenized per batch, each process only the rows of its own devices
    # (host_batch); at the start every row is checked once, each process its share.
    self.store = data_lib.RowStore(c.data.train_files, c.data.max_train_rows)
    self.num_rows = len(self.store)
    self.eval_located = data_lib.load_rows(c.data.eval_files, c.eval.num_examples)
    eval_images = None
    self.image_config = self.vision_config = None  # set for image rows (row_images reads them)
    if self.vlm:
      # Image rows: the image processor and tower configs, and the job's patch budget per
      # row and image slots per row (the largest over every row, measured with T).
      if c.data.image_field:
        self.image_config, self.vision_config = image_configs(c)
      self.tokenizer = _build_tokenizer(c, workdir, lambda: [
          _job_chars(c, self.store, self._vlm_row)])
      self.vl_config = _check_vl_tokenizer(c, self.tokenizer)
      budget = data_lib.ImageBudget()
      self.seq_len = _job_seq_len(c, self.store, self.tokenizer, self._vlm_row, budget.observe)
      self.max_patches, self.max_images = budget.exchange(c.data.max_patches)
      eval_images = self.row_images(self.eval_located)
      model = _build_qwen_vl(c, self.tokenizer, mesh, None if c.model.init else self.vl_config)
    else:
      self.tokenizer = _build_tokenizer(c, workdir, lambda: [_job_chars(c, self.store)])
      self.seq_len = _job_seq_len(c, self.store, self.tokenizer)
      model = build_model(c, self.tokenizer, mesh)
    tx, schedule = optim.make_optimizer("adamw", total_steps=c.steps, decay_mask="matrices",
                                        **c.optim)
    rules = sharding_rules(c)
    self.graphdef, self._state0 = train_lib.init_train_state(model, tx, mesh, rules,
                                                             compute_dtype=c.dtype)
    # Evaluation and export use the same parameters without remat (nnx.remat inside the
    # sampler's decode loop would mutate the closed-over model from another trace).
    self.eval_graphdef = self.graphdef
    if getattr(model.config, "remat", False):
      cls, plain = type(model), model.config.replace(remat=False, dtype=c.dtype)
      self.eval_graphdef = nnx.split(nnx.eval_shape(lambda: cls(plain, rngs=nnx.Rngs(0))))[0]
    del model
    loss_fn = None
    if c.model.family == "looped":
      loss_fn = train_lib.looped_loss(c.model.looped.exit_gate_beta)
    elif self.vlm:
      loss_fn = train_lib.vlm_loss
    self.step_fn = train_lib.make_train_step(self.graphdef, tx, schedule,
                                             grad_accum=c.grad_accum, mesh=mesh,
                                             state=self._state0, rules=rules,
                                             loss_fn=loss_fn, seed=c.seed)
    self.evaluator = TaskAccuracy.from_config(c, self.tokenizer, self.eval_located, mesh,
                                              images=eval_images)
    self.eval_texts: list[str] = []

    self.total_steps = c.steps
    self.units_per_step = None
    self.progress_keys = {"loss": "train/loss", "eval_acc": "eval/accuracy"}
    self.plot_keys = ("train/loss", "eval/accuracy")
    self.target = ("eval/accuracy", c.target_accuracy)

  def _vlm_pairs(self, located: Sequence[tuple[str, int, dict]]
                 ) -> tuple[list[tuple[str, str]], data_lib.RowImages | None]:
    """``(prompt, completion)`` texts of image rows (each image's placeholder repeated once per
    merged patch) and their images, in the job's patch budget and image slots."""
    c = self.config
    pairs = [_format_located(c, r) for r in located]
    if not c.data.image_field:
      return pairs, None
    prompts, images = data_lib.image_prompts(
        located, c.data.image_field, self.image_config, self.vision_config,
        c.data.prompt_format, c.data.image_placeholder, self.max_patches, self.max_images)
    return [(p, q) for p, (_, q) in zip(prompts, pairs)], images

  def _vlm_row(self, located: tuple[str, int, dict]) -> tuple[str, str, int, int]:
    """One image row at the start-up check: ``(prompt, completion, patches, images)``, the
    patches checked against ``config.data.max_patches`` when it is set."""
    c = self.config
    prompt, completion = _format_located(c, located)
    if not c.data.image_field:
      return prompt, completion, 0, 0
    prompt, patches, images = data_lib.image_row(
        located, c.data.image_field, self.image_config, self.vision_config, c.data.prompt_format,
        c.data.image_placeholder, c.data.max_patches)
    return prompt, completion, patches, images

  def init(self) -> train_lib.TrainState:
    return self._state0

  def row_images(self, rows_with_where) -> data_lib.RowImages | None:
    """The images of rows from :func:`jaxlab.llm.data.load_rows` as this run reads them (None
    for a run without images): what ``TaskAccuracy(images=...)`` needs to score such rows."""
    return data_lib.config_row_images(self.config.data, rows_with_where, self.image_config,
                                      self.vision_config)

  def host_batch(self, step: int, rows: np.ndarray | None = None) -> dict[str, Any]:
    """The numpy batch of optimizer step ``step`` (0-based), a pure function of the seed and
    the step: ``tokens``, ``loss_mask``, and for a VLM ``mask``, ``positions_b3t`` and the
    padded ``images`` (read from their files now); the same shapes at every step.

    ``rows``: only these rows of the batch (positions in it; the rows this process's devices
    hold), so a process parses and tokenizes its own rows only; None: all.
    """
    c = self.config
    idx = data_lib.batch_indices(step, c.batch_size, self.num_rows, c.seed)
    if rows is not None:
      idx = idx[rows]
    located = self.store.rows(idx)  # parsed (unless cached) and tokenized now
    where = [f"{f}:{line}" for f, line, _ in located]
    if self.vlm:
      pairs, images = self._vlm_pairs(located)
    else:
      pairs, images = [_format_located(c, r) for r in located], None
    tokens, loss_mask = encode_sft(self.tokenizer, [p for p, _ in pairs], [q for _, q in pairs],
                                   self.seq_len, where, c.data.prompt_special_tokens)
    host = {"tokens": tokens, "loss_mask": loss_mask}
    if self.vlm:
      # Real tokens run up to the last target (the eos).
      lengths = self.seq_len - np.argmax(loss_mask[:, ::-1], axis=1)
      mask = np.arange(self.seq_len)[None] < lengths[:, None]
      host.update(mask=mask, positions_b3t=mrope_positions(self.vl_config, tokens, mask, images,
                                                           where))
      if images is not None and images.max_patches:
        host["images"] = images.pack(range(len(located)))
    return host

  def train(self, state, step: int, num_steps: int):
    """``num_steps`` optimizer steps; their metrics averaged (lr: the last step's)."""
    c = self.config
    t0 = time.perf_counter()
    window = []
    for s in range(step, step + num_steps):
      # This process builds the rows of its own devices only.
      rows = train_lib.process_rows(self.mesh, (c.batch_size, self.seq_len))
      batch = train_lib.shard_batch(self.host_batch(s, rows), self.mesh, rows, c.batch_size)
      if os.environ.get(data_lib.DEBUG_DATA):
        idx = data_lib.batch_indices(s, c.batch_size, self.num_rows, c.seed)[rows]
        print(f"jaxlab: data: process {jax.process_index()} step {s} rows {idx.tolist()} "
              f"parsed {self.store.parsed}", flush=True)
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
    """The model with ``state``'s parameters (compute dtype; no remat)."""
    return train_lib.model_from_state(self.eval_graphdef, state)

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
    elif self.vlm:
      from jaxlab.models.qwen_vl import params as vl_ckpt  # pylint: disable=g-import-not-at-top
      image_config = self.image_config or image_configs(self.config)[0]
      vl_ckpt.save_pretrained(self.model(state), hf_dir, tokenizer=self.tokenizer,
                              image_config=image_config)
    else:
      hf_ckpt.save_pretrained(self.model(state), hf_dir, tokenizer=self.tokenizer)
    with open(os.path.join(self.workdir, "eval_samples.jsonl"), "w") as f:
      for record in self.evaluator.samples(self.eval_texts):
        f.write(json.dumps(record) + "\n")
    return dict(seq_len=self.seq_len, train_rows=self.num_rows, eval_rows=len(self.eval_located),
                num_params=train_lib.count_params(state.params), hf_model=hf_dir)


TRAINER = loop.Trainer(name="llm_sft", default_config=default_config, check_config=check_config,
                       build=SFTRun, check_mesh=check_mesh, evaluators=("task_accuracy",))


def run(config: ml_collections.ConfigDict, workdir: str, mesh, *, progress: bool = True,
        stop_at: int | None = None) -> dict[str, Any]:
  """Trains (or resumes) a validated config; the summary. See :func:`jaxlab.core.loop.run`."""
  return loop.run(TRAINER, config, workdir, mesh, progress=progress, stop_at=stop_at)
