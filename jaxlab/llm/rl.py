"""LLM policy optimisation on verifiable tasks: RLOO, GRPO, PPO and AsyPPO with any KL term.

The trainer behind ``config.trainer = "llm_rl"``:

    python -m launch.train --config=configs/kl_estimators/rloo.py:R1 --workdir=runs/kl/R1

One RL step (all of it but the reward is one compiled program, :func:`make_rl_step`):

1. **Rollouts.** ``prompts_per_step`` prompts (a pure function of ``(seed, step)``), each
   repeated ``group_size`` times, are completed by the KV-cache sampler
   (:func:`jaxlab.llm.sampling.generate`) with the *behaviour* policy: the current policy
   (``async_lag = 0``, strictly on-policy), or the policy of ``async_lag`` updates ago (the
   asynchronous pipeline of the KL paper, spec ``llm_rl.md`` §1.3, with a fixed lag so runs
   are reproducible and resumable). Prompts are parsed and tokenized (and their images read)
   when a step needs them, each process only the rows its own devices hold (the batch's rows
   are split over the data-parallel devices, :class:`jaxlab.llm.data.RowStore`; a
   vision-language policy's sampler takes the whole batch, so there every process builds it
   whole); at the start every row is checked once and measured for ``Tp`` (and an image row's
   patch budget), each process its share, the results exchanged.
2. **Rewards.** Completions are decoded and scored on the host by the task verifiers
   (:mod:`jaxlab.llm.tasks`), or by ``config.reward.fn`` = ``"module:function"`` called as
   ``fn(rows, completions) -> [B]``. Each process scores the rows of its own devices (under
   several processes ``fn`` sees that part of the batch, so a reward must be a function of its
   row and completion), and the rewards are assembled into the global batch. A reward of the
   wrong shape or a non-finite reward stops the run (every process) naming the function, the
   step and the row.
3. **Scoring.** One forward of the policy, the frozen reference (the initial policy) and, when
   the policy lags, the behaviour policy over prompt + response gives per-token log-probs,
   full-vocabulary entropies and the *exact* per-state reverse and forward KL to the reference
   (``Σ_v`` over the vocabulary at every response position, not a sampled estimate).
4. **Critics** (``critic.num_critics = M >= 1``): M value models stacked on one leading axis,
   run in one vmapped call. Advantages use GAE on their mean (pre-update values); with M >= 2
   their per-token std drives AsyPPO's advantage mask and entropy filter
   (:mod:`jaxlab.llm.asyppo`). Each critic regresses the returns of its own part of every
   prompt's group (disjoint shards), with its own optimizer state.
5. **Policy update.** :func:`jaxlab.llm.pg_loss.compute_advantages` once, then ``epochs`` x
   ``minibatches`` gradient steps on :func:`jaxlab.llm.pg_loss.policy_loss` (the KL estimator
   and placement of ``config.pg.kl``, clipping, aggregation, entropy bonus). ``epochs =
   minibatches = 1`` with ``async_lag = 0`` is strictly on-policy (importance ratio 1).

Vision-language policies (``model.init`` a Qwen2.5-VL directory, e.g. a ``qwen_vl`` SFT run's
``hf_model``): rows name image files (``data.image_field``, as in :mod:`jaxlab.llm.sft`); each
prompt's ``{image}`` becomes its placeholder tokens, rollouts are sampled with the rows'
padded :class:`~jaxlab.models.qwen_vl.vision.ImageBatch`, and every forward of the step
(policy, reference, behaviour, the update) reads the same images at the M-RoPE positions of
prompt + response (:func:`vlm_inputs`), so on-policy the step's log-probs are the sampler's.
Value critics are not supported for them yet. Their rows (images and prompts) are read,
tokenized, sampled and scored whole on every process.

Evaluation (greedy accuracy on held-out prompts; the few held-out rows are read whole on every
process), metrics.jsonl / TensorBoard, atomic orbax
checkpoints and resume work as in the SFT trainer (:mod:`jaxlab.llm.sft`); a resumed run
repeats exactly the steps an uninterrupted one would.

Shape letters: P prompts per step, G responses per prompt, B = P·G rows, Tp padded prompt
length, N = ``sampling.max_new_tokens`` response positions, V vocabulary, M critics.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxlab import optim
from jaxlab.core import loop
from jaxlab.core import mesh as mesh_lib
from jaxlab.core.config import require, require_choice
from jaxlab.core.errors import ConfigError, DataError, JaxlabError
from jaxlab.llm import asyppo as asyppo_lib
from jaxlab.llm import data as data_lib
from jaxlab.llm import kl as kl_lib
from jaxlab.llm import pg_loss as pg_lib
from jaxlab.llm import tasks as tasks_lib
from jaxlab.llm import train as train_lib
from jaxlab.llm.evaluation import TaskAccuracy

sg = jax.lax.stop_gradient


class RewardError(JaxlabError, ValueError):
  """A reward function returned something unusable (wrong shape, NaN/inf, not numbers)."""


# -- config ---------------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
  """Every key an LLM RL experiment may set. Defaults: strictly on-policy RLOO, no KL."""
  c = loop.base_config("llm_rl", log_every=10, eval_every=50, checkpoint_every=50,
                       checkpoint_keep=2)  # every: steps
  c.eval.update(dict(num_examples=200, batch_size=200, max_new_tokens=8))
  c.data = ml_collections.ConfigDict(dict(
      train_files=("data/llm/chain_sum_rl_train.jsonl",),  # prompts to train on
      eval_files=("data/llm/chain_sum_rl_eval.jsonl",),  # held-out prompts (greedy accuracy)
      prompt_format="{question}",  # str.format over a row's fields (as the reference's SFT)
      max_prompt_len=0,  # Tp; 0 = the longest prompt. Longer prompts are an error.
      max_train_rows=0,  # 0 = every row
      # Vision-language policies (a Qwen2.5-VL model.init), as in SFT (jaxlab.llm.sft): the
      # row field with the image path(s), "" = text only; the prompt_format field standing
      # for an image; the resize rule's area bounds (0 = the model dir's
      # preprocessor_config.json); the patch budget per row (0 = the largest row's).
      image_field="",
      image_placeholder="image",
      min_pixels=0,
      max_pixels=0,
      max_patches=0,
  ))
  # The policy starts from this Hugging Face-format directory (e.g. an SFT run's hf_model);
  # the frozen reference is the same weights.
  c.model = ml_collections.ConfigDict(dict(init=""))
  c.dtype = "float32"  # compute dtype; masters and optimizer state are float32
  c.steps = 200  # RL steps (rollout batches)
  c.prompts_per_step = 32  # P
  c.group_size = 8  # G responses per prompt
  c.sampling = ml_collections.ConfigDict(dict(
      temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=8))
  c.epochs = 1  # passes over each rollout batch
  c.minibatches = 1  # gradient steps per pass
  c.async_lag = 0  # the behaviour policy is the policy of this many updates ago
  c.pg = ml_collections.ConfigDict(dict(
      advantage="rloo", grpo_std_normalize=True, gamma=1.0, lam=1.0, whiten_advantages=False,
      advantage_clip=None, clip_eps_low=0.2, clip_eps_high=0.2, dual_clip=None,
      aggregation="token-sum", entropy_coef=0.0,
      # A table name of jaxlab.llm.kl ("none", "R1", "L1", "L3", "R5", "B3", ...) and β.
      kl=ml_collections.ConfigDict(dict(name="none", coef=0.0, clamp_log_ratio=None,
                                        clamp_value=None)),
  ))
  c.reward = ml_collections.ConfigDict(dict(fn="verifier"))  # or "package.module:function"
  c.optim = ml_collections.ConfigDict(dict(
      learning_rate=3e-4, schedule="constant", warmup_steps=0, min_lr_ratio=1.0,
      weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, max_grad_norm=1.0))
  c.critic = ml_collections.ConfigDict(dict(
      num_critics=0,  # M; 0 = no critic (RLOO/GRPO). pg.advantage="gae" needs M >= 1.
      init="scratch",  # "scratch": sizes below; "policy": a copy of the initial policy's body
      hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2, num_kv_heads=1,
      head_dim=32,
      learning_rate=1e-3, max_grad_norm=1.0, epochs=1,  # critic gradient steps per RL step
      lam=1.0,  # λ of the critic's targets (1: Monte-Carlo returns)
      split="responses",  # AsyPPO shards: "responses" within each group, or "prompts"
      shuffle=True,  # random split (True) or contiguous blocks
      disjoint=True,  # False: every critic trains on every response (the ablation)
      init_seed=1,  # every critic starts from the same weights (diversity comes from data)
  ))
  c.asyppo = ml_collections.ConfigDict(dict(
      adv_mask_k=0.0,  # drop the policy-gradient term on the lowest-k fraction of σ (0: off)
      entropy_filter_h=0.0,  # drop the entropy bonus on the highest-h fraction of σ (0: off)
      scope="batch",  # rank σ over the whole rollout batch, or per "sequence"
  ))
  c.layout = "fsdp"
  return c


def chain_sum_config() -> ml_collections.ConfigDict:
  """The setting shared by the small-scale KL-estimator and AsyPPO studies.

  The policy and reference are ``runs/rl_reference/hf_model`` (configs/llm/sft_rl_reference.py);
  prompts are the compact chain_sum expressions ("8 + 0 + 7 ="); 16 prompts x 8 responses of
  at most 6 tokens per step at temperature 1; 80 steps; logs every 10, evaluates and
  checkpoints every 40.
  """
  c = default_config()
  c.model.init = "runs/rl_reference/hf_model"
  c.data.prompt_format = "{metadata[expression]} ="
  c.steps = 80
  c.prompts_per_step = 16
  c.group_size = 8
  c.sampling.max_new_tokens = 6
  c.eval.max_new_tokens = 6
  c.log_every = 10
  c.eval.every = 40
  c.checkpoint.every = 40
  return c


def pg_config(c: ml_collections.ConfigDict) -> pg_lib.PGLossConfig:
  """The :class:`PGLossConfig` of ``config.pg`` (the KL row is looked up by name)."""
  pg = c.pg.to_dict()
  kl = {k: v for k, v in pg.pop("kl").items() if v is not None}
  return pg_lib.PGLossConfig.from_mapping({**pg, "kl": kl_lib.KLConfig.from_mapping(kl)})


def check_config(c: ml_collections.ConfigDict) -> None:
  """The RL trainer's consistency rules; each failure names its key."""
  for key in ("steps", "prompts_per_step", "epochs", "minibatches"):
    require(c[key] >= 1, f"'config.{key}' must be >= 1, got {c[key]}")
  require(c.group_size >= 1, f"'config.group_size' must be >= 1, got {c.group_size}")
  require(c.async_lag >= 0, f"'config.async_lag' must be >= 0, got {c.async_lag}")
  rows = c.prompts_per_step * c.group_size
  require(rows % c.minibatches == 0, f"'config.minibatches'={c.minibatches} must divide the "
          f"{rows} responses of a step (prompts_per_step x group_size)")
  require_choice(c, "dtype", ["float32", "bfloat16"])
  require(c.sampling.temperature > 0, "'config.sampling.temperature' must be > 0 for RL "
          f"(the policy is the tempered softmax), got {c.sampling.temperature}")
  require(c.sampling.max_new_tokens >= 1, "'config.sampling.max_new_tokens' must be >= 1")
  pg = pg_config(c)  # raises ConfigError naming pg.* keys
  if pg.advantage in ("rloo", "grpo"):
    require(c.group_size >= 2, f"'config.pg.advantage'={pg.advantage!r} needs "
            f"'config.group_size' >= 2, got {c.group_size}")
  m = c.critic.num_critics
  require(m >= 0, f"'config.critic.num_critics' must be >= 0, got {m}")
  if pg.advantage == "gae":
    require(m >= 1, "'config.pg.advantage'='gae' needs 'config.critic.num_critics' >= 1")
  else:
    require(m == 0, f"'config.critic.num_critics'={m} but 'config.pg.advantage'="
            f"{pg.advantage!r} does not use a critic; set pg.advantage='gae'")
  require_choice(c, "critic.init", ["scratch", "policy"])
  require_choice(c, "critic.split", list(asyppo_lib.SPLIT_MODES))
  require_choice(c, "asyppo.scope", list(asyppo_lib.SCOPES))
  if m >= 1 and c.critic.disjoint:
    units = c.group_size if c.critic.split == "responses" else c.prompts_per_step
    require(units % m == 0, f"'config.critic.num_critics'={m} must divide "
            f"{'config.group_size' if c.critic.split == 'responses' else 'config.prompts_per_step'}"
            f"={units} to split it into equal disjoint parts")
  for key in ("adv_mask_k", "entropy_filter_h"):
    f = c.asyppo[key]
    require(0 <= f < 1, f"'config.asyppo.{key}' must lie in [0, 1), got {f}")
    if f > 0:
      require(m >= 2, f"'config.asyppo.{key}'={f} needs 'config.critic.num_critics' >= 2 "
              "(σ is the std over critics)")
  if c.asyppo.entropy_filter_h > 0:
    require(pg.entropy_coef > 0, "'config.asyppo.entropy_filter_h' filters the entropy bonus; "
            "set 'config.pg.entropy_coef' > 0")
  for key in ("learning_rate",):
    require(c.optim[key] > 0, f"'config.optim.{key}' must be > 0")
  if m:
    require(c.critic.learning_rate > 0, "'config.critic.learning_rate' must be > 0")
    require(c.critic.epochs >= 1, "'config.critic.epochs' must be >= 1")
  require(bool(c.model.init), "'config.model.init' must name the starting model (a Hugging "
          "Face-format directory, e.g. an SFT run's hf_model)")
  require(os.path.isdir(c.model.init), f"'config.model.init'={c.model.init!r} is not a "
          "directory (train one with python -m launch.train --config=configs/llm/sft_*.py)")
  require(c.eval.num_examples >= 0, "'config.eval.num_examples' must be >= 0")
  for key in ("train_files", "eval_files"):
    for f in c.data[key]:
      missing = data_lib.missing_file(f"data.{key}", f)
      require(missing is None, missing)
  for key in ("min_pixels", "max_pixels", "max_patches"):
    require(c.data[key] >= 0, f"'config.data.{key}' must be >= 0, got {c.data[key]}")
  if c.data.image_field:
    require(m == 0, "'config.data.image_field' (a vision-language policy) does not support "
            f"value critics yet: set 'config.critic.num_critics' to 0, got {m}")
  if c.reward.fn != "verifier":
    require(":" in c.reward.fn, f"'config.reward.fn'={c.reward.fn!r}: expected 'verifier' or "
            "'package.module:function'")


def check_mesh(c: ml_collections.ConfigDict, mesh) -> None:
  rows = c.prompts_per_step * c.group_size
  mesh_lib.check_divisible(mesh, rows // c.minibatches,
                           "config.prompts_per_step x config.group_size / config.minibatches")
  mesh_lib.check_divisible(mesh, c.eval.batch_size, "config.eval.batch_size")


# -- rewards --------------------------------------------------------------------------------------


def verifier_rewards(rows: Sequence[dict[str, Any]], completions: Sequence[str]) -> np.ndarray:
  """1.0 where the task's verifier accepts the completion's answer, else 0.0."""
  return np.asarray([float(tasks_lib.verify(r["task"], t, r["answer"]))
                     for r, t in zip(rows, completions)], np.float32)


def get_reward_fn(name: str) -> Callable[[Sequence[dict], Sequence[str]], Any]:
  """``"verifier"`` or an importable ``"package.module:function"``."""
  if name == "verifier":
    return verifier_rewards
  module, _, attr = name.partition(":")
  try:
    fn = getattr(importlib.import_module(module), attr)
  except (ImportError, AttributeError) as e:
    raise ConfigError(f"'config.reward.fn'={name!r} cannot be imported ({e})") from None
  return fn


def score_rewards(fn: Callable, name: str, rows: Sequence[dict[str, Any]],
                  completions: Sequence[str], step: int,
                  row_ids: Sequence[int] | None = None) -> np.ndarray:
  """Calls the reward function and checks what it returns: ``[B]`` finite floats.
  ``row_ids``: the rows' positions in the step's batch (named in errors; default 0..B-1)."""
  try:
    r = np.asarray(fn(rows, completions), dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise RewardError(f"reward function {name!r} at step {step} did not return numbers "
                      f"({e})") from None
  if r.shape != (len(completions),):
    raise RewardError(f"reward function {name!r} returned shape {r.shape} at step {step}; "
                      f"expected ({len(completions)},), one reward per completion")
  bad = np.flatnonzero(~np.isfinite(r))
  if bad.size:
    i = int(bad[0])
    row = i if row_ids is None else int(row_ids[i])
    raise RewardError(f"reward function {name!r} returned {r[i]} at step {step} for row {row} "
                      f"(question {rows[i].get('question', '?')!r}, completion "
                      f"{completions[i]!r}); rewards must be finite")
  return r.astype(np.float32)


# -- critics --------------------------------------------------------------------------------------


def build_critics(c: ml_collections.ConfigDict, policy: Any) -> tuple[Any, Any]:
  """``(graphdef, params)`` of M identical value models, params stacked on a leading axis."""
  from jaxlab.models.decoder import value as value_lib  # pylint: disable=g-import-not-at-top
  m = c.critic
  body_config = None
  if m.init != "policy":
    body_config = dataclasses.replace(
        policy.config, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
        num_layers=m.num_layers, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads,
        head_dim=m.head_dim, dtype=c.dtype, param_dtype="float32")
  return value_lib.stacked_value_models(policy, m.num_critics, m.init_seed, body_config)


# -- the compiled step ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """The static shape of one RL step (hashable)."""
  pg: pg_lib.PGLossConfig
  group_size: int
  prompt_len: int
  temperature: float
  epochs: int
  minibatches: int
  lagged: bool
  num_critics: int
  critic_epochs: int
  critic_lam: float
  split: str
  shuffle: bool
  disjoint: bool
  adv_mask_k: float
  entropy_filter_h: float
  scope: str


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class RLState:
  policy: train_lib.TrainState
  critic: train_lib.TrainState | None


def response_logits(graphdef: Any, params: Any, tokens: jax.Array, mask: jax.Array,
                    prompt_len: int, temperature: float, positions_b3t: jax.Array | None = None,
                    images: Any = None) -> jax.Array:
  """``[B, N, V]`` float32 logits of the (tempered) policy at the response positions.

  A vision-language policy (``positions_b3t`` given: the M-RoPE positions of prompt +
  response, ``[B, 3, T]``) reads ``images``, the rows' padded
  :class:`~jaxlab.models.qwen_vl.vision.ImageBatch`, spliced in at the prompt's placeholders,
  as the sampler's prefill did; response tokens are text whatever their ids, as in the
  sampler's decode steps.
  """
  model = nnx.merge(graphdef, params)
  if positions_b3t is not None:
    h, _ = model.prompt_hidden(tokens, mask, jnp.swapaxes(positions_b3t, 0, 1), images, None,
                               text_from=prompt_len)
    logits = model.logits(h)
  else:
    logits, _ = model(tokens, mask)
  return logits[:, prompt_len - 1:-1].astype(jnp.float32) / temperature


def token_stats(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(log-softmax [B, N, V], log-prob of targets [B, N], entropy [B, N])``."""
  logsm = jax.nn.log_softmax(logits, axis=-1)
  logp = jnp.take_along_axis(logsm, targets[..., None], axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logsm) * logsm, axis=-1)
  return logsm, logp, entropy


def exact_kls(logsm_pi: jax.Array, logsm_ref: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-state ``KL(π‖π_ref)`` and ``KL(π_ref‖π)`` over the full vocabulary, ``[B, N]``."""
  d = logsm_pi - logsm_ref
  return (jnp.sum(jnp.exp(logsm_pi) * d, axis=-1), jnp.sum(jnp.exp(logsm_ref) * -d, axis=-1))


def _masked_mean(x, mask):
  return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def _seq_mean(x, mask):
  """Mean over rows of the per-row masked sum."""
  return jnp.mean(jnp.sum(jnp.where(mask, x, 0.0), axis=1))


def _rl_step(state: RLState, ref_params: Any, behaviour_params: Any, batch: dict, key: jax.Array,
             *, spec: StepSpec, graphdef: Any, tx: optax.GradientTransformation,
             schedule: optax.Schedule, critic_graphdef: Any,
             critic_tx: optax.GradientTransformation | None):
  """One RL step on a scored rollout batch; see the module docstring (steps 3-5)."""
  tokens, attn = batch["tokens"], batch["attention_mask"]
  resp, mask = batch["response"], batch["response_mask"].astype(bool)
  rewards = batch["rewards"]
  b = resp.shape[0]
  vision = {k: batch[k] for k in ("positions_b3t", "images") if k in batch}
  logits_of = functools.partial(response_logits, graphdef, tokens=tokens, mask=attn,
                                prompt_len=spec.prompt_len, temperature=spec.temperature,
                                **vision)

  # -- 3. scoring (no gradients) --
  logsm_pi, logp0, entropy0 = token_stats(logits_of(state.policy.params), resp)
  logsm_ref, ref_logp, _ = token_stats(logits_of(ref_params), resp)
  if spec.lagged:
    _, old_logp, _ = token_stats(logits_of(behaviour_params), resp)
  else:
    old_logp = logp0
  rev, fwd = exact_kls(logsm_pi, logsm_ref)
  del logsm_pi, logsm_ref
  lengths = jnp.sum(mask, axis=1)
  metrics = {
      "reward/task": jnp.mean(rewards),
      "kl/exact_rev": _seq_mean(rev, mask),  # Σ_t KL(π(·|s_t) ‖ π_ref(·|s_t)), mean over rows
      "kl/exact_fwd": _seq_mean(fwd, mask),
      "kl/exact_rev_per_token": _masked_mean(rev, mask),
      "entropy/mean": _masked_mean(entropy0, mask),
      "response/length": jnp.mean(lengths.astype(jnp.float32)),
  }
  if spec.lagged:
    metrics["kl/behaviour_k3"] = _masked_mean(kl_lib.k3(logp0 - old_logp), mask)

  # -- 4. critics: pre-update values, GAE on their mean, AsyPPO's masks --
  k_split, k_perm = jax.random.split(key)
  values = adv_keep = ent_keep = None
  if spec.num_critics:
    def critic_values(p):
      return jax.vmap(lambda q: nnx.merge(critic_graphdef, q)(tokens, attn))(p)[
          :, :, spec.prompt_len - 1:-1]
    values = sg(critic_values(state.critic.params))  # [M, B, N]
  adv = pg_lib.compute_advantages(
      spec.pg, rewards, mask, old_logp, ref_logp, group_size=spec.group_size,
      values=None if values is None else jnp.mean(values, axis=0))
  metrics.update({k: v for k, v in adv.metrics.items() if k != "reward/mean"})
  if spec.num_critics >= 2:
    adv_keep, ent_keep, _, m = asyppo_lib.uncertainty_masks(
        values, mask, spec.adv_mask_k, spec.entropy_filter_h, spec.scope)
    metrics.update(m)
    if spec.adv_mask_k == 0:
      adv_keep = None
    if spec.entropy_filter_h == 0:
      ent_keep = None

  # -- 5. policy update: epochs x minibatches --
  data = dict(old_logp=old_logp, ref_logp=ref_logp, adv=adv.advantages, mask=mask,
              tokens=tokens, attn=attn, resp=resp, **vision,
              adv_keep=jnp.ones_like(mask) if adv_keep is None else adv_keep,
              ent_keep=jnp.ones_like(mask) if ent_keep is None else ent_keep)
  mb = b // spec.minibatches
  perm_keys = jax.random.split(k_perm, spec.epochs)
  order = jnp.concatenate([jax.random.permutation(k, b) for k in perm_keys]).reshape(-1, mb)

  def loss_fn(params, d):
    logits = response_logits(graphdef, params, d["tokens"], d["attn"], spec.prompt_len,
                             spec.temperature, d.get("positions_b3t"), d.get("images"))
    _, logp, ent = token_stats(logits, d["resp"])
    return pg_lib.policy_loss(
        spec.pg, logp, d["old_logp"], d["ref_logp"], d["adv"], d["mask"], entropy=ent,
        adv_mask=None if adv_keep is None else d["adv_keep"],
        entropy_mask=None if ent_keep is None else d["ent_keep"])

  def policy_step(ts: train_lib.TrainState, idx):
    d = jax.tree.map(lambda x: x[idx], data)
    (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(ts.params, d)
    updates, opt_state = tx.update(grads, ts.opt_state, ts.params)
    params = optax.apply_updates(ts.params, updates)
    m = dict(m, grad_norm=optax.tree.norm(grads), lr=schedule(ts.step))
    return train_lib.TrainState(ts.step + 1, params, opt_state), m

  policy, pm = jax.lax.scan(policy_step, state.policy, order)
  pm = jax.tree.map(jnp.mean, pm)
  for k in ("loss/total", "loss/pg", "loss/kl", "loss/entropy", "pg/clip_frac",
            "pg/ratio_mean", "pg/approx_kl_old", "kl/k1", "kl/k2", "kl/k3"):
    if k in pm:
      metrics[k] = pm[k]
  metrics["train/grad_norm"] = pm["grad_norm"]
  metrics["train/lr"] = pm["lr"]

  # -- 4b. critic update on disjoint shards (targets from the same pre-update snapshot) --
  critic = state.critic
  if spec.num_critics:
    _, targets = pg_lib.gae_advantages(adv.token_rewards, jnp.mean(values, axis=0), mask,
                                       spec.pg.gamma, spec.critic_lam)
    if spec.disjoint:
      ids = asyppo_lib.group_split(k_split, b // spec.group_size, spec.group_size,
                                   spec.num_critics, spec.split, spec.shuffle)
      shards = asyppo_lib.shard_masks(ids, spec.num_critics)
    else:
      shards = jnp.ones((spec.num_critics, b), bool)

    def critic_loss_fn(p):
      return asyppo_lib.critic_loss(critic_values(p), targets, mask, shards)

    def critic_step(ts: train_lib.TrainState, _):
      (loss, per), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(ts.params)
      # One optimizer per critic: clipping and moments never mix critics.
      updates, opt_state = jax.vmap(critic_tx.update)(grads, ts.opt_state, ts.params)
      params = optax.apply_updates(ts.params, updates)
      return train_lib.TrainState(ts.step + 1, params, opt_state), per

    critic, per = jax.lax.scan(critic_step, critic, None, length=spec.critic_epochs)
    metrics["critic/loss"] = jnp.mean(per[0])  # before the first critic step, mean over m
    for i in range(spec.num_critics):
      metrics[f"critic/loss_{i}"] = per[0, i]
    if spec.num_critics >= 2 and spec.disjoint:
      # Diversity check (spec §6.2): critic m's error on the next critic's shard.
      other = jnp.roll(shards, 1, axis=0)
      _, cross = asyppo_lib.critic_loss(values, targets, mask, other)
      metrics["critic/cross_shard_mse"] = jnp.mean(cross)
    metrics["critic/value_mean"] = _masked_mean(jnp.mean(values, axis=0), mask)
  return RLState(policy, critic), metrics


def make_rl_step(spec: StepSpec, graphdef: Any, tx: optax.GradientTransformation,
                 schedule: optax.Schedule, critic_graphdef: Any = None,
                 critic_tx: optax.GradientTransformation | None = None):
  """``step(state, ref_params, behaviour_params, batch, key) -> (state, metrics)``, jitted,
  with ``state`` donated. ``behaviour_params`` is only read when ``spec.lagged``.

  The batch: ``tokens`` ``[B, Tp + N]`` (left-padded prompt, then the response),
  ``attention_mask`` ``[B, Tp + N]``, ``response`` ``[B, N]``, ``response_mask`` ``[B, N]``,
  ``rewards`` ``[B]``; for a vision-language policy also ``positions_b3t`` (M-RoPE positions
  of the whole sequence) and ``images`` (the rows' padded ``ImageBatch``).
  """
  impl = functools.partial(_rl_step, spec=spec, graphdef=graphdef, tx=tx, schedule=schedule,
                           critic_graphdef=critic_graphdef, critic_tx=critic_tx)
  return jax.jit(impl, donate_argnums=0)


# -- data -----------------------------------------------------------------------------------------


def _copy_tree(tree):
  return jax.tree.map(jnp.copy, tree)


def vlm_inputs(config: Any, tokens: np.ndarray, mask: np.ndarray, images: Any,
               prompt_len: int) -> dict[str, Any]:
  """The extra batch entries of a vision-language policy's RL step: ``positions_b3t``, the
  M-RoPE positions ``[B, 3, T]`` of prompt + response and ``images``, the rows' padded
  ``ImageBatch`` (when the rows have images). The prompt (the first ``prompt_len`` columns)
  gets the positions the sampler's prefill used (host-side ``rope_index``); the response's
  continue from them as the decode steps' did, the real tokens before plus the row's rope
  delta, whatever the sampled ids (a policy may sample the image placeholder id)."""
  from jaxlab.models.qwen_vl import modeling as vl  # pylint: disable=g-import-not-at-top
  grid = None if images is None else images.flat_grid()
  mask = np.asarray(mask).astype(bool)
  prompt, deltas = vl.rope_index(config, np.asarray(tokens)[:, :prompt_len],
                                 mask[:, :prompt_len],
                                 grid if grid is not None and len(grid) else None)
  seen = np.cumsum(mask, axis=1) - 1  # real tokens before each column
  response = np.where(mask[:, prompt_len:], seen[:, prompt_len:] + deltas[:, None], 0)
  positions = np.concatenate(
      [prompt, np.broadcast_to(response[None], (3,) + response.shape)], axis=2)
  out = {"positions_b3t": np.ascontiguousarray(np.swapaxes(positions, 0, 1)).astype(np.int32)}
  if images is not None:
    out["images"] = images
  return out


def _prompt_text(c: ml_collections.ConfigDict, located: tuple[str, int, dict]) -> str:
  """``config.data.prompt_format`` over a ``(file, row number, row)``; a format field the row
  lacks is a ``DataError`` naming ``file:row``."""
  f, line, row = located
  try:
    return c.data.prompt_format.format(**row)
  except (KeyError, IndexError, AttributeError) as e:
    raise DataError(f"{f}:{line}: 'config.data.prompt_format' read a field the row does not "
                    f"have ({type(e).__name__} {e})") from None


def _job_prompt_len(c: ml_collections.ConfigDict, store: data_lib.RowStore, tokenizer,
                    render: Callable[[tuple[str, int, dict]], tuple] | None = None,
                    each: Callable[[list[tuple]], None] | None = None) -> int:
  """``Tp``: ``config.data.max_prompt_len``, or the longest tokenized prompt of the training
  rows. Each process tokenizes its share of the rows and the lengths are exchanged (a
  collective), which also checks every row once. ``render``: a row's ``(prompt text, ...)``
  (default ``config.data.prompt_format`` over it); ``each``: called with every chunk of
  rendered rows (this process's share only).

  Raises:
    DataError: a bad row, or a prompt longer than ``max_prompt_len`` (the first such, by its
      ``file:row`` and token count), on every process.
  """
  from jaxlab.models.tokenizer import encode_prompts  # pylint: disable=g-import-not-at-top

  def lengths(index, where, items):
    del index, where
    if each is not None:
      each(items)
    return [len(x) for x in encode_prompts(tokenizer, [item[0] for item in items])]

  render = render or (lambda located: (_prompt_text(c, located),))
  longest, over = data_lib.measure_rows(store, render, lengths, c.data.max_prompt_len)
  if over is not None:
    f, line = store.where(over[0])
    raise DataError(f"{f}:{line}: the prompt has {over[1]} tokens, longer than "
                    f"'config.data.max_prompt_len'={c.data.max_prompt_len}")
  return c.data.max_prompt_len or longest


def _rows_of(x: jax.Array, rows: np.ndarray) -> np.ndarray:
  """Rows ``rows`` (global indices along axis 0, each held by one of this process's devices)
  of a possibly multi-process array, as numpy, read from this process's shards only."""
  if x.is_fully_addressable:
    return np.asarray(jax.device_get(x))[rows]
  got = {}
  for shard in x.addressable_shards:
    data = np.asarray(shard.data)
    for k, i in enumerate(range(x.shape[0])[shard.index[0]]):
      got.setdefault(i, data[k])
  return np.stack([got[int(i)] for i in rows])


_MESSAGE_BYTES = 4096  # an error message exchanged between processes is cut to this


def _exchange_text(text: str, source: int) -> str:
  """Process ``source``'s ``text``, on every process (a collective; every process calls it)."""
  buf = np.zeros(_MESSAGE_BYTES, np.uint8)
  raw = np.frombuffer(text.encode("utf-8")[:_MESSAGE_BYTES], np.uint8)
  buf[:len(raw)] = raw
  every = mesh_lib.allgather_host(buf)
  return bytes(every[source]).rstrip(b"\0").decode("utf-8", "replace")


# -- the run --------------------------------------------------------------------------------------


class RLRun:
  """One LLM RL run for :func:`jaxlab.core.loop.run`.

  The state the loop checkpoints is ``{"state": RLState, "history": [params, ...]}``: the
  policy (and critics) with their optimizers, and the last ``async_lag`` policies (the behaviour
  policies of the next steps), so a resumed lagged run generates exactly as an uninterrupted
  one. The frozen reference is re-read from ``config.model.init``.
  """

  def __init__(self, c: ml_collections.ConfigDict, workdir: str, mesh):
    from jaxlab.models.decoder import params as hf_ckpt  # pylint: disable=g-import-not-at-top
    from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
    from jaxlab.models.tokenizer import load_tokenizer  # pylint: disable=g-import-not-at-top
    self.config = c
    self.workdir, self.mesh = workdir, mesh
    from jaxlab import models as models_lib  # pylint: disable=g-import-not-at-top
    self.pg = pg = pg_config(c)
    self.tokenizer = tokenizer = load_tokenizer(c.model.init)
    self.vlm = models_lib.family_for(c.model.init) == "qwen_vl"
    if c.data.image_field and not self.vlm:
      raise ConfigError(f"'config.data.image_field'={c.data.image_field!r} needs a "
                        f"vision-language policy; 'config.model.init'={c.model.init!r} is not a "
                        "Qwen2.5-VL directory")
    # Prompts are parsed and tokenized per step (_prompts), each process only the rows of its
    # own devices (a vision-language policy's batch: every process the whole batch); at the
    # start every row is checked (and measured for Tp) once, each process its share.
    self.store = data_lib.RowStore(c.data.train_files, c.data.max_train_rows)
    self.num_rows = len(self.store)
    self.image_config = self.vision_config = None
    if c.data.image_field:
      from jaxlab.llm import sft  # pylint: disable=g-import-not-at-top
      self.image_config, self.vision_config = sft.image_configs(c)
      render = functools.partial(
          data_lib.image_row, field=c.data.image_field, image_config=self.image_config,
          vision_config=self.vision_config, prompt_format=c.data.prompt_format,
          placeholder=c.data.image_placeholder, max_patches=c.data.max_patches)
      budget = data_lib.ImageBudget()
      self.prompt_len = _job_prompt_len(c, self.store, tokenizer, render, budget.observe)
      self.max_patches, self.max_images = budget.exchange(c.data.max_patches)
    else:
      self.prompt_len = _job_prompt_len(c, self.store, tokenizer)
    # The held-out rows (few) are read whole on every process.
    eval_with_where = data_lib.load_rows(c.data.eval_files, c.eval.num_examples)
    if self.vlm:
      from jaxlab.models.qwen_vl import params as vl_ckpt  # pylint: disable=g-import-not-at-top
      policy, _ = vl_ckpt.from_pretrained(c.model.init, mesh=None, dtype=c.dtype,
                                          param_dtype="float32", tokenizer=False)
      limit = policy.config.text.max_position_embeddings
    else:
      policy, _ = hf_ckpt.from_pretrained(c.model.init, mesh=None, dtype=c.dtype,
                                          param_dtype="float32", tokenizer=False)
      limit = policy.config.max_position_embeddings
    # Image rows: each prompt's placeholders, its padded images per batch (as in SFT).
    eval_images = self.row_images(eval_with_where)
    n_new = c.sampling.max_new_tokens
    if self.prompt_len + n_new > limit:
      raise ConfigError(f"prompts of {self.prompt_len} tokens + 'config.sampling.max_new_tokens'"
                        f"={n_new} exceed the model's context of {limit} positions")
    self.batch_rows = c.prompts_per_step * c.group_size  # B
    self.eos = int(tokenizer.eos_token_id)
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    self.sampling_params = sampling.SamplingParams(
        max_new_tokens=n_new, temperature=float(c.sampling.temperature), top_k=c.sampling.top_k,
        top_p=float(c.sampling.top_p), stop_tokens=(self.eos,), pad_id=pad)

    total_updates = c.steps * c.epochs * c.minibatches
    tx, schedule = optim.make_optimizer("adamw", total_steps=total_updates,
                                        decay_mask="matrices", **c.optim)
    self._vl_config = policy.config if self.vlm else None
    self.graphdef, params = nnx.split(policy)
    self.ref_params = _copy_tree(params)
    policy_state = train_lib.TrainState(jnp.int32(0), params, tx.init(params))

    critic_graphdef = critic_tx = critic_state = None
    m = c.critic.num_critics
    if m:
      critic_graphdef, cparams = build_critics(c, policy)
      critic_tx, _ = optim.make_optimizer("adamw", c.critic.learning_rate,
                                          decay_mask="matrices",
                                          max_grad_norm=c.critic.max_grad_norm)
      critic_state = train_lib.TrainState(jnp.int32(0), cparams,
                                          jax.vmap(critic_tx.init)(cparams))
    del policy

    spec = StepSpec(
        pg=pg, group_size=c.group_size, prompt_len=self.prompt_len,
        temperature=float(c.sampling.temperature), epochs=c.epochs, minibatches=c.minibatches,
        lagged=c.async_lag > 0, num_critics=m, critic_epochs=c.critic.epochs,
        critic_lam=float(c.critic.lam), split=c.critic.split, shuffle=c.critic.shuffle,
        disjoint=c.critic.disjoint, adv_mask_k=float(c.asyppo.adv_mask_k),
        entropy_filter_h=float(c.asyppo.entropy_filter_h), scope=c.asyppo.scope)
    self.step_fn = make_rl_step(spec, self.graphdef, tx, schedule, critic_graphdef, critic_tx)
    self.reward_fn = get_reward_fn(c.reward.fn)
    self.evaluator = TaskAccuracy.from_config(c, tokenizer, eval_with_where, mesh,
                                              images=eval_images)
    self._state0 = {"state": RLState(policy_state, critic_state),
                    "history": [_copy_tree(params) for _ in range(c.async_lag)]}
    print(f"jaxlab: {pg.kl.describe()}; advantage={pg.advantage}, critics={m}, "
          f"async_lag={c.async_lag}", flush=True)

    self.total_steps = c.steps
    self.units_per_step = None
    self.progress_keys = {"reward": "reward/task", "kl": "kl/exact_rev",
                          "eval_acc": "eval/accuracy"}
    self.plot_keys = ("reward/task", "kl/exact_rev", "eval/accuracy")
    self.target = None

  def row_images(self, rows_with_where) -> data_lib.RowImages | None:
    """The images of rows from :func:`jaxlab.llm.data.load_rows` as this run reads them (None
    for a run without images), so ``launch.eval``'s ``task_accuracy`` scores image rows as the
    trainer's evaluation does."""
    return data_lib.config_row_images(self.config.data, rows_with_where, self.image_config,
                                      self.vision_config)

  def init(self) -> dict[str, Any]:
    return self._state0

  def _place(self, x, local: np.ndarray | None = None):
    """A batch array with its rows split over the data-parallel devices. ``local``: ``x``
    holds only these rows of the step's batch (:meth:`_local_rows`, the ones this process's
    devices hold), assembled into the global array without any process holding the rest;
    None: ``x`` is whole and equal on every process. Either way each process hands its own
    devices their rows (``jax.device_put`` would first all-gather the array to check that the
    processes agree)."""
    if self.mesh is None or self.mesh.size == 1:
      return jnp.asarray(x)
    x = np.asarray(x)
    sharding = mesh_lib.batch_sharding(self.mesh, 0, x.ndim)
    if local is None:
      return mesh_lib.put(x, sharding)
    return mesh_lib.put_rows(x, local, (self.batch_rows,) + x.shape[1:], sharding)

  def _local_rows(self) -> np.ndarray | None:
    """The rows of a step's batch (``[B, Tp]``, rows split over ``("data", "fsdp")`` as the
    sampler and the step place them) this process's devices hold: every row with one process.
    None for a vision-language policy, whose batch every process builds whole."""
    if self.vlm:
      return None
    return train_lib.process_rows(self.mesh, (self.batch_rows, self.prompt_len))

  def _prompts(self, index: np.ndarray) -> tuple[list[dict], np.ndarray, np.ndarray, Any]:
    """``(rows, prompt ids [n, Tp] left-padded, mask, images)`` of training rows ``index``:
    parsed (unless cached) and tokenized now; ``images`` their padded
    :class:`~jaxlab.models.qwen_vl.vision.ImageBatch` (files read now) in the job's patch
    budget, or None for rows without images."""
    from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
    from jaxlab.models.tokenizer import encode_prompts  # pylint: disable=g-import-not-at-top
    c = self.config
    located = self.store.rows(index)
    rows, images = [r for _, _, r in located], None
    if c.data.image_field:
      texts, row_images = data_lib.image_prompts(
          located, c.data.image_field, self.image_config, self.vision_config,
          c.data.prompt_format, c.data.image_placeholder, self.max_patches, self.max_images)
      images = row_images.pack(range(len(located)))
    else:
      texts = [_prompt_text(c, r) for r in located]
    tokens, mask = sampling.left_pad(encode_prompts(self.tokenizer, texts),
                                     pad_id=self.sampling_params.pad_id, length=self.prompt_len)
    return rows, tokens, mask, images

  def _score(self, rows: list[dict], texts: list[str], resp: np.ndarray, lengths: np.ndarray,
             local: np.ndarray | None, step: int) -> tuple[np.ndarray, int, int]:
    """``(rewards of these rows, responses that stopped, sampled tokens)``, the two counts
    over the whole batch. ``local``: the rows are this process's part of the batch (their
    positions in it); under several processes the counts are summed over processes (a
    collective) and a reward error on any process stops every one, with that process's
    message."""
    c = self.config
    stopped = int(sum(self.eos in r[:k] for r, k in zip(resp, lengths)))
    sampled = int(np.sum(lengths))
    if local is None or jax.process_count() == 1:
      return (score_rewards(self.reward_fn, c.reward.fn, rows, texts, step, local), stopped,
              sampled)
    rewards = error = None
    try:
      rewards = score_rewards(self.reward_fn, c.reward.fn, rows, texts, step, local)
    except Exception as e:  # pylint: disable=broad-except  # every process must stop
      error = e
    every = mesh_lib.allgather_host(np.asarray([error is not None, stopped, sampled], np.int32))
    if every[:, 0].any():
      source = int(np.argmax(every[:, 0]))
      text = _exchange_text("" if error is None else f"{type(error).__name__}: {error}", source)
      if error is not None:
        raise error
      raise RewardError(f"process {source} stopped at step {step}: {text}")
    return rewards, int(every[:, 1].sum()), int(every[:, 2].sum())

  def model(self, state: dict[str, Any]):
    """The current policy as a decoder."""
    return nnx.merge(self.graphdef, state["state"].policy.params)

  def _one_step(self, carry: dict[str, Any], step: int) -> tuple[dict[str, Any], dict]:
    """RL step ``step`` (1-based): generate, score, update. Returns (state, metrics)."""
    from jaxlab.llm import sampling  # pylint: disable=g-import-not-at-top
    c = self.config
    state, history = carry["state"], carry["history"]
    t0 = time.perf_counter()
    idx = np.repeat(data_lib.batch_indices(step - 1, c.prompts_per_step, self.num_rows, c.seed),
                    c.group_size)
    k_sample, k_update = jax.random.split(jax.random.fold_in(jax.random.key(c.seed), step))
    behaviour = history[0] if history else None  # lag 0: the current policy
    # This process builds (parses, tokenizes, scores) only the rows its devices hold.
    local = self._local_rows()
    rows, prompt_tokens, prompt_mask, images = self._prompts(idx if local is None else
                                                             idx[local])
    if local is not None and os.environ.get(data_lib.DEBUG_DATA):
      print(f"jaxlab: data: process {jax.process_index()} step {step - 1} rows "
            f"{idx[local].tolist()} parsed {self.store.parsed}", flush=True)
    extra = {} if images is None else {"pixel_values": images}
    model = nnx.merge(self.graphdef, state.policy.params if behaviour is None else behaviour)
    if self.vlm:  # the VLM sampler places its batch itself (as in evaluation)
      out = sampling.generate(model, prompt_tokens, prompt_mask, k_sample, self.sampling_params,
                              mesh=None, **extra)
      resp, lengths = mesh_lib.gather((out.tokens, out.lengths))  # whole, on every process
    else:
      out = sampling.generate(model, self._place(prompt_tokens, local),
                              self._place(prompt_mask, local), k_sample, self.sampling_params,
                              mesh=self.mesh)
      resp, lengths = (_rows_of(x, local) for x in (out.tokens, out.lengths))  # this process's
    t_gen = time.perf_counter() - t0
    texts = [self.tokenizer.decode(r[:k].tolist(), skip_special_tokens=True)
             for r, k in zip(resp, lengths)]
    rewards, stopped, sampled = self._score(rows, texts, resp, lengths, local, step)
    resp_mask = np.arange(c.sampling.max_new_tokens)[None, :] < lengths[:, None]
    batch = {
        "tokens": np.concatenate([prompt_tokens, resp], axis=1),
        "attention_mask": np.concatenate([prompt_mask, resp_mask], axis=1),
        "response": resp, "response_mask": resp_mask, "rewards": rewards,
    }
    if self.vlm:
      batch.update(vlm_inputs(self._vl_config, batch["tokens"], batch["attention_mask"],
                              images, prompt_tokens.shape[1]))
    batch = {k: jax.tree.map(lambda v: self._place(v, local), v) for k, v in batch.items()}
    snapshot = _copy_tree(state.policy.params) if history else None
    t1 = time.perf_counter()
    state, sm = self.step_fn(state, self.ref_params, behaviour, batch, k_update)
    sm = mesh_lib.gather(sm)
    t_update = time.perf_counter() - t1
    if history:
      history = history[1:] + [snapshot]
    sampled = float(sampled)
    sm.update({
        "response/stopped": stopped / self.batch_rows,
        "time/gen_s": t_gen, "time/update_s": t_update,
        "time/sampled_tokens_per_s": sampled / max(t_gen, 1e-9),
        "time/trained_tokens_per_s": sampled * c.epochs / max(t_update, 1e-9),
        "time/gen_share": t_gen / max(time.perf_counter() - t0, 1e-9),
    })
    return {"state": state, "history": history}, sm

  def train(self, state: dict[str, Any], step: int, num_steps: int):
    """``num_steps`` RL steps; every metric averaged over them."""
    window = []
    for s in range(step + 1, step + num_steps + 1):
      state, sm = self._one_step(state, s)
      window.append(sm)
    return state, {k: float(np.mean([w[k] for w in window])) for k in window[-1]}

  def evaluate(self, state: dict[str, Any], step: int) -> dict[str, Any]:
    del step
    return self.evaluator(self.model(state))[0]

  def finish(self, state: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """Writes the final policy to ``hf_model/``."""
    from jaxlab.models.decoder import params as hf_ckpt  # pylint: disable=g-import-not-at-top
    del metrics
    hf_dir = os.path.join(self.workdir, "hf_model")
    if self.vlm:
      from jaxlab.models.qwen_vl import params as vl_ckpt  # pylint: disable=g-import-not-at-top
      from jaxlab.models.qwen_vl import processor  # pylint: disable=g-import-not-at-top
      src = os.path.join(self.config.model.init, processor.PREPROCESSOR_FILE)
      image_config = (self.image_config if self.image_config is not None else
                      processor.ImageProcessorConfig.from_dir(self.config.model.init)
                      if os.path.isfile(src) else None)
      vl_ckpt.save_pretrained(self.model(state), hf_dir, tokenizer=self.tokenizer,
                              image_config=image_config)
    else:
      hf_ckpt.save_pretrained(self.model(state), hf_dir, tokenizer=self.tokenizer)
    return dict(kl_config=self.pg.kl.describe(), prompt_len=self.prompt_len, hf_model=hf_dir)


TRAINER = loop.Trainer(name="llm_rl", default_config=default_config, check_config=check_config,
                       build=RLRun, check_mesh=check_mesh, evaluators=("task_accuracy",))


def run(config: ml_collections.ConfigDict, workdir: str, mesh, *, progress: bool = True,
        stop_at: int | None = None) -> dict[str, Any]:
  """Trains (or resumes) a validated config; the summary. See :func:`jaxlab.core.loop.run`."""
  return loop.run(TRAINER, config, workdir, mesh, progress=progress, stop_at=stop_at)
