"""GPU-sized reproduction studies, one preset each, sized to fit a time budget (issue 16).

    python benchmarks/device/studies.py --study=sigreg --out=$OUT/sigreg         # GPU, <= 8 min
    python benchmarks/device/studies.py --study=sigreg --out=runs/smoke --smoke  # CPU, seconds

Presets (``--study``): ``sigreg``, ``stable_gradients``, ``grama``, ``least``, ``asyppo``. Each
one states its claim, setting, arms, seeds, metric and pass/fail criterion in its docstring
below (written before any GPU run), runs its arms through the project's trainers
(``jaxlab.trainers`` + ``jaxlab.core.loop.run``, starting from the configs in ``configs/``,
changed only by config overrides), and writes into ``--out``:

* ``metrics.json``: the plan (measured compile and chunk times, planned steps), per arm and per
  seed the final metrics, the curves (per-seed values per logged record), the summary
  (mean ± 95% Student-t half-width over seeds, ``jaxlab.core.stats.mean_ci``), the verdict;
* ``curves.png``: the learning curves of the study's keys, one panel per key and game (mean over
  seeds with the 95% band, ``jaxlab.core.plotting.series``);

and prints as its last line ``verdict=<reproduced|partly|contradicted|inconclusive> <study>
<reason>``. An ordering is only claimed when the two arms' 95% intervals are disjoint.

Sizing (``--budget_s``, default 480: the whole preset, compilation included): a probe runs the
study's most expensive arm for three logged chunks (``loop.run(..., stop_at=...)``), which
gives the fixed cost of a run (build, compilation, evaluation compile, writes) and the time of
one chunk; the remaining budget, less a reserve, is split equally over the arms' runs and
turned into whole chunks (capped at the paper-scale step count). The plan is printed before the
arms run. With ``--smoke`` the same path runs at tiny fixed sizes in seconds of CPU per arm,
nearly all of it compilation (tests/test_device_studies.py runs every preset): width-16
networks of one layer or block (PQN on flat MinAtar observations, no CNN), a few hundred env
steps, 2 seeds; the off-policy studies use gymnax Pendulum-v1 instead of the Playground task
so that CI does not compile MJX; ``grama`` runs only the two arms its verdict reads (vanilla,
ReGraMa); ``asyppo`` starts from a tiny random decoder instead of an SFT stage. XLA compiles
with most optimisations off (``jax_disable_most_optimizations``, for the preset only). The
probe is the probed arm's own smoke run (its records are kept, nothing is compiled twice), its
plan is printed, and the fixed smoke sizes (3 chunks) are used.

Run directories (checkpoints, metrics.jsonl) go to ``--workdir`` (default
``jaxlab_studies/<study>`` in the system's temporary folder), not into ``--out``, so that
``--out`` holds only the few files a device run brings back. A persistent JAX compilation
cache under the workdir lets runs that differ only in their seed (the LLM trainers train one
seed per run) reuse the probe's programs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import numpy as np  # pylint: disable=wrong-import-position

from jaxlab.core.config import load_file, set_dotted  # pylint: disable=wrong-import-position

STUDIES = ("sigreg", "stable_gradients", "grama", "least", "asyppo")
VERDICTS = ("reproduced", "partly", "contradicted", "inconclusive")


# -- configs -------------------------------------------------------------------------------------


def load_config(relpath: str, arg: str | None = None):
  """``get_config(arg)`` of a config file under the repository's ``configs/``."""
  return load_file(os.path.join(REPO, relpath), arg)


@dataclasses.dataclass
class Arm:
  """One run of a study: a label, the game/task it belongs to, and its config."""
  label: str
  group: str
  config: Any
  seeds: Sequence[int] = (0,)  # > 1 entries: separate runs (trainers that do not vmap seeds)


# -- the study presets ----------------------------------------------------------------------------


def _pqn_game(game: str, smoke: bool):
  if game == "Breakout":
    c = load_config("configs/pqn/breakout_minatar.py")
  else:
    c = load_config("configs/pqn/space_invaders_minatar.py")
  c.checkpoint.every = 0
  c.health.enabled = True
  if smoke:
    # Flat observations (no CNN) and a width-16 trunk: every arm's programs compile in seconds.
    set_dotted(c, {"num_envs": 8, "unroll_length": 8, "num_minibatches": 2, "num_epochs": 1,
                   "env.episode_length": 40, "eval.num_envs": 2, "network.encoder": "none",
                   "network.width": 16, "network.depth": 1, "network.trunk_out": 16,
                   "log_every": 2, "num_seeds": 2, "total_env_steps": 3 * 2 * 64, "eval.every": 4})
  else:
    c.num_seeds = 5
    c.log_every = 25  # 25 updates x 4096 env steps = 102,400 env steps per chunk
  return c


def sigreg_arms(smoke: bool) -> list[Arm]:
  """SIGReg on PQN-MinAtar (spec rl.md §1, §7.2 item 1).

  Claim (paper, spec §1.6): adding λ·SIGReg on the trunk output of PQN raises returns (AUC of
  the learning curve) and keeps the representation healthier (fewer dormant units, higher
  rank).
  Setting: gymnax Breakout-MinAtar and SpaceInvaders-MinAtar, configs/pqn/*_minatar.py
  (purejaxql's MinAtar hyperparameters) with the paper's trunk (spec §1.5: plain LayerNorm MLP,
  8 Linear layers of width 512: 7 hidden + a 512-d output, the representation SIGReg
  regularises); up to 10M env steps per run, sized to the budget (printed).
  Arms: λ = 0 and λ = 0.2 (16 slices, 8 t-points; spec §1.4). Seeds: 5, vmapped.
  Metric (per seed): AUC = mean greedy eval return over all evaluations of the run; secondary:
  final effective rank and dormant ratio (τ = 0) of the representation.
  Criterion: a game *supports* the claim when λ = 0.2's AUC interval lies above λ = 0's
  (95% Student-t intervals over seeds, disjoint), *goes against* it when it lies below.
  reproduced: both games support. partly: one game supports and none goes against, or no game
  is resolved on returns but the effective rank is higher with disjoint intervals in both
  games. contradicted: a game goes against and none supports. inconclusive: otherwise.
  """
  games = ["Breakout"] if smoke else ["Breakout", "SpaceInvaders"]
  arms = []
  for game in games:
    for lam in (0.0, 0.2):
      c = _pqn_game(game, smoke)
      if not smoke:
        set_dotted(c, {"network.kind": "plain", "network.preset": "", "network.width": 512,
                       "network.depth": 7, "network.trunk_out": 512})
      c.aux.sigreg.weight = lam
      arms.append(Arm(f"{game}/sigreg={lam:g}", game, c))
  return arms


def stable_gradients_arms(smoke: bool) -> list[Arm]:
  """Stable gradients across depths on PQN-MinAtar (spec rl.md §2, §7.2 item 1).

  Claim (paper, spec §2.1, §2.7): a deep plain MLP trunk degrades PQN (returns fall, gradient
  norms of the early layers shrink), and the interventions (multi-skip residual trunk +
  Kron) recover it.
  Setting: gymnax Breakout-MinAtar and SpaceInvaders-MinAtar, configs/pqn/*_minatar.py
  (MinAtar CNN with LayerNorm, LayerNorm trunks, 128-d output as in the config), width 512,
  sized to the budget (printed; at most 10M env steps).
  Arms: plain depth 3 (the "small" preset's 2k+1 hidden layers, RAdam); plain depth 11 (the
  "large" preset's depth, RAdam); multi-skip k = 5 (the "large" preset's blocks) + Kron
  (lr / 3, spec §2.3). Seeds: 5, vmapped.
  Metric (per seed): AUC = mean greedy eval return over all evaluations; secondary: the first
  trunk layer's kernel-gradient norm averaged over the run.
  Criterion, per game: *degradation* = plain-3 AUC interval above plain-11's (disjoint);
  *recovery* = multi-skip+Kron interval above plain-11's; *against* = plain-11 above plain-3
  or plain-11 above multi-skip+Kron (disjoint).
  reproduced: degradation and recovery both shown (in at least one game each) and nothing
  against. partly: exactly one of them shown and nothing against. contradicted: something
  against and neither shown. inconclusive: otherwise.
  """
  games = ["Breakout"] if smoke else ["Breakout", "SpaceInvaders"]
  width = 16 if smoke else 512
  shallow, deep, blocks = (1, 2, 1) if smoke else (3, 11, 5)
  arms = []
  for game in games:
    for label, kind, depth, opt in (("plain_shallow", "plain", shallow, "radam"),
                                    ("plain_deep", "plain", deep, "radam"),
                                    ("multiskip_kron", "multiskip", blocks, "kron")):
      c = _pqn_game(game, smoke)
      set_dotted(c, {"network.kind": kind, "network.preset": "", "network.width": width,
                     "network.depth": depth, "optimizer.name": opt})
      arms.append(Arm(f"{game}/{label}", game, c))
  return arms


def _offpolicy_smoke(c, *, width: int):
  """The tiny CPU size of an off-policy config: gymnax Pendulum, a few hundred env steps,
  networks of one layer (MLP) or one block (BroNet) of ``width``: health probes and resets
  trace every layer several times, so depth is what their compilation costs."""
  set_dotted(c, {"env.name": "gymnax/Pendulum-v1", "env.episode_length": 50, "env.impl": "jax",
                 "num_seeds": 2, "num_envs": 2, "utd": 2, "batch_size": 16, "learning_starts": 32,
                 "replay.capacity": 512, "network.actor_width": width,
                 "network.critic_width": width, "network.actor_depth": 1,
                 "network.critic_depth": 1, "log_every": 20, "eval.num_envs": 2,
                 "total_env_steps": 3 * 20 * 2, "eval.every": 40, "checkpoint.every": 0,
                 "normalize_observations": False})
  return c


def grama_arms(smoke: bool) -> list[Arm]:
  """GraMa / ReGraMa vs ReDo with BroNet SAC (spec rl.md §4, §7.2 item 2).

  Claim (paper, spec §4.2-§4.5, §7.2): with LayerNorm-residual (BroNet) networks the
  activation-based ReDo ratio is uninformative (near 0), while the gradient-based GraMa ratio
  of the critic grows during training; ReGraMa resets keep it low (and improve returns over
  long runs, which 8 minutes cannot show).
  Setting: configs/grama/bro_sac.py (SAC, BroNet critic 2 blocks / actor 1 block, width 256,
  replay ratio 2, resets every 1000 gradient steps) on MuJoCo Playground CheetahRun, sized to
  the budget (printed; at most the config's 500k env steps). CheetahRun rather than
  HumanoidWalk: spec §7.2 allows either; the effect measured is on the critic's gradients,
  which shows early on either task, while HumanoidWalk's larger MJX model compiles and steps
  several times slower, and four compilations (probe + 3 arms) of it would take much of the
  8-minute budget. ``configs/grama/bro_sac.py:humanoid_walk,*`` runs the same arms there.
  Arms: vanilla, ReDo (τ = 0.02), ReGraMa (τ = 0.01). Seeds: 5, vmapped.
  Metric (per seed, at the end of the run): critic GraMa ratio (health/grama_ratio/critic);
  secondary: critic ReDo dormant ratio, final eval return.
  Criterion: reproduced: ReGraMa's critic GraMa ratio lies below vanilla's (disjoint
  intervals) and vanilla's GraMa ratio exceeds its dormant ratio (disjoint: the gradient
  metric sees what the activation metric does not). partly: only one of the two holds.
  contradicted: ReGraMa's GraMa ratio lies above vanilla's (disjoint). inconclusive: otherwise.
  """
  arms = []
  # At smoke size only the two arms the verdict reads: each arm compiles its own chunk program
  # (health probes, and a reset per method, traced per layer), 10-20 s of CPU each.
  for method in ("vanilla", "regrama") if smoke else ("vanilla", "redo", "regrama"):
    c = load_config("configs/grama/bro_sac.py", f"cheetah_run,{method}")
    c.checkpoint.every = 0
    if smoke:
      _offpolicy_smoke(c, width=16)
      set_dotted(c, {"health.every": 20, "reset.every": 20})
    else:
      c.num_seeds = 5
    arms.append(Arm(method, "Pendulum-v1 (smoke)" if smoke else "CheetahRun", c))
  return arms


def least_arms(smoke: bool) -> list[Arm]:
  """LEAST with TD3 on a Playground locomotion task (spec rl.md §3, §7.2 item 3).

  Claim (paper, spec §3.7, secondary): stopping unpromising episodes early (LEAST) lets TD3
  reach the base agent's return with fewer env steps; the stop rate rises once the rule is
  active.
  Setting: configs/least/offpolicy.py:td3,cheetah_run,{base,least} (LEAST: window 250
  episodes, t_start 5% for DMC-like tasks, ω, entropy-aware window, adaptive noise σ̄ 0.3)
  on MuJoCo Playground CheetahRun, with the many-env layout of configs/td3/cheetah_run.py
  (128 envs, 8 critic steps of batch 512 per iteration, lr 1e-3, 8192 warm-up steps) so that
  8 minutes reach about a million env steps; sized to the budget (printed; at most 2M).
  Arms: base, least. Seeds: 5, vmapped.
  Metric (per seed): AUC = mean eval return over all evaluations (sample efficiency);
  secondary: final eval return, LEAST's stop rate over the run.
  Criterion: inconclusive if LEAST never stopped an episode (the rule was not exercised).
  Otherwise reproduced: least's AUC interval above base's (disjoint). contradicted: below
  (disjoint). partly: not distinguished, but the final eval return of least is above base's
  (disjoint). inconclusive: otherwise.
  """
  arms = []
  for arm in ("base", "least"):
    c = load_config("configs/least/offpolicy.py", f"td3,cheetah_run,{arm}")
    c.checkpoint.every = 0
    if smoke:
      _offpolicy_smoke(c, width=16)
      if arm == "least":
        set_dotted(c, {"least.window": 4, "least.max_window": 8, "least.min_episodes": 1,
                       "least.start_fraction": 0.0})
    else:
      set_dotted(c, {"env.impl": "jax", "num_seeds": 5, "num_envs": 128, "utd": 8,
                     "batch_size": 512, "learning_starts": 8192, "actor_lr": 1e-3,
                     "critic_lr": 1e-3, "log_every": 50, "total_env_steps": 2_000_000})
    arms.append(Arm(arm, "Pendulum-v1 (smoke)" if smoke else "CheetahRun", c))
  return arms


# A chain of thought that ends in the answer: with the char-level tokenizer of the tiny decoder
# the completion is 45-52 tokens ("let me add the terms: 8 + 0 + 7 gives 15, answer 15"); the
# verifier reads the last number (jaxlab.llm.tasks.extract_number).
COT_FORMAT = " let me add the terms: {metadata[expression]} gives {answer}, answer {answer}"


def asyppo_sft_config(smoke: bool, workdir: str):
  """The reference policy: configs/llm/sft_rl_reference.py's clean stage from scratch on the
  noisy answer stream (one stage instead of two), with the chain-of-thought completion."""
  c = load_config("configs/llm/sft_rl_reference.py", "clean")
  c.data.train_files = ("data/llm/chain_sum_rl_sft_noisy.jsonl",)
  c.data.completion_format = COT_FORMAT
  c.checkpoint.every = 0
  if smoke:
    set_dotted(c, {"model.hidden_size": 32, "model.intermediate_size": 64, "model.num_layers": 1,
                   "model.num_heads": 2, "model.num_kv_heads": 1, "model.head_dim": 16,
                   "steps": 4, "batch_size": 8, "log_every": 2, "eval.every": 0,
                   "eval.num_examples": 4, "eval.batch_size": 4, "eval.max_new_tokens": 8,
                   "data.max_train_rows": 64, "optim.warmup_steps": 1})
  else:
    # Spec llm_rl.md §6.3: 8 layers, d_model 512, 8 heads (≈25M parameters with SwiGLU 1536).
    set_dotted(c, {"model.hidden_size": 512, "model.intermediate_size": 1536,
                   "model.num_layers": 8, "model.num_heads": 8, "model.num_kv_heads": 4,
                   "model.head_dim": 64, "dtype": "bfloat16", "steps": 1500, "batch_size": 128,
                   "log_every": 250, "eval.every": 0, "eval.max_new_tokens": 64,
                   "optim.learning_rate": 1e-3})
  return c


def tiny_random_policy(path: str) -> str:
  """The smoke policy (and reference) of ``asyppo``: a random 1-layer Qwen3-style decoder of
  width 32 over a char tokenizer of the prompts' and completions' characters, saved as a model
  directory (the layout an SFT export has; as tests/test_multihost.py's RL test builds one), so
  that the smoke run needs no SFT stage. Returns ``path``."""
  # pylint: disable=import-outside-toplevel
  from jaxlab.models import tokenizer as tok_lib
  from jaxlab.models.decoder import config as decoder_config, modeling, params
  tok = tok_lib.train_char_tokenizer(["0123456789+-=., " + COT_FORMAT], None)
  cfg = decoder_config.DecoderConfig(
      vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
      num_kv_heads=1, head_dim=16, architecture="Qwen3ForCausalLM", qk_norm=True,
      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
  params.save_pretrained(modeling.init_decoder(cfg, seed=0), path, tokenizer=tok)
  return path


def asyppo_arms(smoke: bool, policy_dir: str) -> list[Arm]:
  """AsyPPO with long answers and an actor much larger than its critics (spec llm_rl.md §2,
  §6.3 step 3, §6.4).

  Claim (paper, spec §2.6, §6.4): two small critics trained on disjoint halves of each
  prompt's responses, with the σ-based advantage mask and entropy filter (k = h = 0.2), do at
  least as well as PPO with one small critic (the paper: +3-6 points over classic PPO).
  Setting: chain_sum (2-3 single-digit terms) with a chain-of-thought completion of 45-52
  tokens (answers of 32+ tokens; reward 1 when the last number is right); the reference is a
  ≈25M-parameter decoder (8 layers, d 512) trained from scratch on the noisy answer stream
  (35% of answers off by 1-3), so RL can raise the reward; critics are the config's 1-layer,
  width-64 decoders (≈40k parameters, ~600x smaller than the actor).
  configs/asyppo/ppo.py:{ppo_small,asyppo} (16 prompts x 8 responses, data reuse 4, clip 0.2,
  1/|o| aggregation, entropy 1e-3, GAE γ 1 λ 0.95), max 64 new tokens, RL steps sized to the
  budget (printed; at most 200).
  Arms: ppo_small (one small critic), asyppo (M = 2). Seeds: 3, one run each.
  Metric (per seed): mean sampled task reward over the run (learning speed, as
  docs/reproductions/asyppo.md); secondary: held-out greedy accuracy at the end, critic
  disagreement σ.
  Criterion: reproduced: asyppo's interval above ppo_small's (disjoint). contradicted: below
  (disjoint). partly: not distinguished, but the critics disagree (asyppo's σ interval above
  0), so the masks acted on a real signal and AsyPPO matched the single critic. inconclusive:
  otherwise.
  """
  arms = []
  for arm in ("ppo_small", "asyppo"):
    c = load_config("configs/asyppo/ppo.py", arm)
    c.model.init = policy_dir
    c.data.prompt_format = "{metadata[expression]} ="
    c.checkpoint.every = 0
    if smoke:
      set_dotted(c, {"prompts_per_step": 2, "group_size": 4, "steps": 3, "log_every": 1,
                     "eval.every": 2, "eval.num_examples": 4, "eval.batch_size": 4,
                     "sampling.max_new_tokens": 8, "eval.max_new_tokens": 8,
                     "critic.hidden_size": 16, "critic.intermediate_size": 32,
                     "critic.num_heads": 1, "critic.num_kv_heads": 1, "critic.head_dim": 16})
      seeds = (0, 1)
    else:
      set_dotted(c, {"sampling.max_new_tokens": 64, "eval.max_new_tokens": 64, "steps": 200,
                     "log_every": 10, "dtype": "bfloat16"})
      seeds = (0, 1, 2)
    arms.append(Arm(arm, "chain_sum_cot", c, seeds))
  return arms


# -- running --------------------------------------------------------------------------------------


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def run_config(config, workdir: str, *, stop_at: int | None = None) -> tuple[list[dict], float]:
  """Trains ``config`` in ``workdir`` (fresh) with the project's loop; returns (records, s)."""
  from jaxlab import trainers  # pylint: disable=import-outside-toplevel
  from jaxlab.core import loop  # pylint: disable=import-outside-toplevel
  from jaxlab.core import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from jaxlab.core.metrics import read_metrics  # pylint: disable=import-outside-toplevel

  trainer = trainers.get(config.trainer)
  loop.validate(trainer, config)
  mesh = mesh_lib.make_mesh(**config.mesh)
  trainer.check_mesh(config, mesh)
  if os.path.exists(workdir):
    shutil.rmtree(workdir)
  t0 = time.perf_counter()
  loop.run(trainer, config, workdir, mesh, progress=False, stop_at=stop_at)
  return read_metrics(workdir), time.perf_counter() - t0


def probe(config, workdir: str, max_units: float | None
          ) -> tuple[float, float, float, float, list[dict], float]:
  """``(fixed cost of a run in s, seconds per chunk, seconds per evaluation, env steps or steps
  per chunk, records, wall s)`` of ``config``, from its first logged chunks (evaluation at the
  second; off-policy runs go on until a chunk after the warm-up, whose cost is the chunk time).

  ``max_units``: the run is set to this many env steps (RL steps for ``llm_rl``) and stopped
  after those chunks; None (smoke): ``config`` is run as it is (three chunks, evaluating every
  second), so the probe is that arm's run and its records are kept.
  """
  c = config.copy_and_resolve_references()
  c.eval.every = 2 * c.log_every
  c.checkpoint.every = 0
  n = 3
  if "learning_starts" in c:  # off-policy: iterations of num_envs env steps
    n = 3 + -(-c.learning_starts // (c.log_every * c.num_envs))
  if max_units is not None:
    if c.trainer == "llm_rl":
      c.steps = max(int(max_units), n * c.log_every)
    else:
      c.total_env_steps = int(max_units)
  records, wall = run_config(c, workdir, stop_at=n * c.log_every)
  n = min(n, len(records))
  if n < 3:
    raise ValueError(f"the probe of {workdir} logged {len(records)} chunks; expected 3 or more")
  times = [r["time/elapsed_s"] for r in records[:n]]
  chunk = max(times[n - 1] - times[n - 2], 1e-6)
  evaluation = max(times[1] - times[0] - chunk, 0.0)  # the first one, compilation included
  units = float(records[n - 1].get("env_steps", records[n - 1]["step"])) / n
  fixed = max(wall - n * chunk - evaluation, 0.0)
  return fixed, chunk, evaluation, units, records[:n], wall


@dataclasses.dataclass
class Plan:
  chunks: int
  fixed_s: float
  chunk_s: float
  eval_s: float
  units_per_chunk: float
  runs: int
  note: str


def make_plan(fixed: float, chunk: float, evaluation: float, units: float, runs: int,
              left_s: float, max_chunks: int, n_evals: int, min_chunks: int = 2) -> Plan:
  """Whole chunks per run so that ``runs`` runs (each: the fixed cost, ``n_evals`` + 1
  evaluations and its chunks) fit in 85% of ``left_s`` (a reserve for writes and noise), at
  most ``max_chunks``."""
  per_run = 0.85 * left_s / max(runs, 1) - fixed - (n_evals + 1) * evaluation
  chunks = int(per_run // chunk) if per_run > 0 else 0
  note = ""
  if chunks < min_chunks:
    note = (f"the budget allows only {chunks} chunk(s) per run; running {min_chunks} (the "
            "preset will exceed its budget)")
    chunks = min_chunks
  return Plan(min(chunks, max_chunks), fixed, chunk, evaluation, units, runs, note)


def _per_seed(value) -> np.ndarray:
  return np.asarray(value, np.float64).reshape(-1)


def final_values(records: Sequence[dict], key: str) -> np.ndarray | None:
  """Per-seed value of the last record holding ``key`` (NaN where a seed has none)."""
  for rec in reversed(records):
    if rec.get(key) is not None:
      return _per_seed(rec[key])
  return None


def mean_values(records: Sequence[dict], key: str) -> np.ndarray | None:
  """Per-seed mean of ``key`` over the records holding it (finite values only)."""
  rows = [_per_seed(r[key]) for r in records if r.get(key) is not None]
  if not rows:
    return None
  stack = np.stack(rows)
  with np.errstate(invalid="ignore"):
    return np.nanmean(np.where(np.isfinite(stack), stack, np.nan), axis=0)


def ci(values) -> tuple[float, float]:
  """Mean and 95% Student-t half-width over seeds (the project's helper), finite values."""
  from jaxlab.core.stats import mean_ci  # pylint: disable=import-outside-toplevel
  v = np.asarray(values, np.float64)
  return mean_ci(v[np.isfinite(v)])


def above(a, b) -> bool:
  """The 95% interval of ``a`` lies entirely above that of ``b`` (both finite)."""
  (ma, ha), (mb, hb) = ci(a), ci(b)
  if not all(math.isfinite(x) for x in (ma, ha, mb, hb)):
    return False
  return ma - ha > mb + hb


# -- verdicts -------------------------------------------------------------------------------------


def _games(results: dict) -> list[str]:
  return list(dict.fromkeys(r["group"] for r in results.values()))


def verdict_sigreg(res: dict) -> tuple[str, str]:
  sup, against, rank_up = [], [], []
  for g in _games(res):
    a0, a1 = res[f"{g}/sigreg=0"]["seeds"], res[f"{g}/sigreg=0.2"]["seeds"]
    if above(a1["auc_eval_return"], a0["auc_eval_return"]):
      sup.append(g)
    elif above(a0["auc_eval_return"], a1["auc_eval_return"]):
      against.append(g)
    if above(a1["final_effective_rank"], a0["final_effective_rank"]):
      rank_up.append(g)
  games = _games(res)
  text = f"return AUC higher with SIGReg in {sup or 'no game'}, lower in {against or 'no game'}"
  text += f"; effective rank higher in {rank_up or 'no game'} (of {games})"
  if len(sup) == len(games) and not against:
    return "reproduced", text
  if (sup and not against) or (not sup and not against and len(rank_up) == len(games)):
    return "partly", text
  if against and not sup:
    return "contradicted", text
  return "inconclusive", text


def verdict_stable_gradients(res: dict) -> tuple[str, str]:
  degr, recov, against = [], [], []
  for g in _games(res):
    s = {k: res[f"{g}/{k}"]["seeds"]["auc_eval_return"]
         for k in ("plain_shallow", "plain_deep", "multiskip_kron")}
    if above(s["plain_shallow"], s["plain_deep"]):
      degr.append(g)
    if above(s["multiskip_kron"], s["plain_deep"]):
      recov.append(g)
    if above(s["plain_deep"], s["plain_shallow"]) or above(s["plain_deep"], s["multiskip_kron"]):
      against.append(g)
  text = (f"deep plain below shallow in {degr or 'no game'}; multi-skip+Kron above deep plain "
          f"in {recov or 'no game'}; against in {against or 'no game'}")
  if degr and recov and not against:
    return "reproduced", text
  if bool(degr) != bool(recov) and not against:
    return "partly", text
  if against and not degr and not recov:
    return "contradicted", text
  return "inconclusive", text


def verdict_grama(res: dict) -> tuple[str, str]:
  van, reg = res["vanilla"]["seeds"], res["regrama"]["seeds"]
  low = above(van["final_grama_critic"], reg["final_grama_critic"])
  high = above(reg["final_grama_critic"], van["final_grama_critic"])
  sees = above(van["final_grama_critic"], van["final_dormant_critic"])
  fmt = lambda v: _fmt(*ci(v))
  text = (f"critic GraMa ratio vanilla {fmt(van['final_grama_critic'])} vs ReGraMa "
          f"{fmt(reg['final_grama_critic'])}; vanilla dormant ratio "
          f"{fmt(van['final_dormant_critic'])}")
  if low and sees:
    return "reproduced", text
  if high:
    return "contradicted", text
  if low or sees:
    return "partly", text
  return "inconclusive", text


def verdict_least(res: dict) -> tuple[str, str]:
  base, least = res["base"]["seeds"], res["least"]["seeds"]
  stops = least.get("mean_stop_rate")
  fmt = lambda v: _fmt(*ci(v))
  text = (f"eval-return AUC base {fmt(base['auc_eval_return'])} vs least "
          f"{fmt(least['auc_eval_return'])}")
  if stops is None or not np.nanmax(np.asarray(stops, np.float64), initial=0.0) > 0:
    return "inconclusive", text + "; LEAST never stopped an episode"
  text += f"; stop rate {fmt(stops)}"
  if above(least["auc_eval_return"], base["auc_eval_return"]):
    return "reproduced", text
  if above(base["auc_eval_return"], least["auc_eval_return"]):
    return "contradicted", text
  if above(least["final_eval_return"], base["final_eval_return"]):
    return "partly", text
  return "inconclusive", text


def verdict_asyppo(res: dict) -> tuple[str, str]:
  ppo, asy = res["ppo_small"]["seeds"], res["asyppo"]["seeds"]
  fmt = lambda v: _fmt(*ci(v))
  text = (f"mean reward over the run ppo_small {fmt(ppo['mean_reward'])} vs asyppo "
          f"{fmt(asy['mean_reward'])}; σ {fmt(asy['mean_sigma'])}")
  if above(asy["mean_reward"], ppo["mean_reward"]):
    return "reproduced", text
  if above(ppo["mean_reward"], asy["mean_reward"]):
    return "contradicted", text
  if above(asy["mean_sigma"], np.zeros(1)):
    return "partly", text + " (not distinguished; critics disagree)"
  return "inconclusive", text


def _fmt(mean: float, half: float) -> str:
  from jaxlab.core.stats import format_ci  # pylint: disable=import-outside-toplevel
  return format_ci(mean, half)


# Per study: (metrics per seed: name -> (reducer, key)), curve keys, verdict.
_FINAL, _MEAN = final_values, mean_values
_RL_PQN = {"auc_eval_return": (_MEAN, "eval/episode_return"),
           "final_eval_return": (_FINAL, "eval/episode_return"),
           "final_train_return": (_FINAL, "train/episode_return"),
           "final_effective_rank": (_FINAL, "health/effective_rank"),
           "final_dormant_ratio": (_FINAL, "health/dormant_ratio"),
           "final_loss_td": (_FINAL, "loss/td")}
_OFF = {"auc_eval_return": (_MEAN, "eval/episode_return"),
        "final_eval_return": (_FINAL, "eval/episode_return"),
        "final_grama_critic": (_FINAL, "health/grama_ratio/critic"),
        "final_dormant_critic": (_FINAL, "health/dormant_ratio/critic"),
        "final_grama_actor": (_FINAL, "health/grama_ratio/actor"),
        "mean_stop_rate": (_MEAN, "least/stop_rate"),
        "reset_neurons_critic": (_MEAN, "reset/neurons/critic")}


@dataclasses.dataclass(frozen=True)
class Study:
  name: str
  metrics: dict[str, tuple[Callable, str]]
  curve_keys: tuple[str, ...]
  verdict: Callable[[dict], tuple[str, str]]
  max_units: float  # the paper-scale cap in env steps (or RL steps)
  n_evals: int = 10  # evaluations per run (about)


SPECS = {
    "sigreg": Study("sigreg", _RL_PQN, ("eval/episode_return", "health/effective_rank",
                                        "health/dormant_ratio"), verdict_sigreg, 10_000_000),
    "stable_gradients": Study(
        "stable_gradients",
        {**_RL_PQN, "mean_grad_norm_first": (_MEAN, "health/grad_norm/trunk/hidden/0"),
         "mean_grad_norm_first_multiskip": (_MEAN, "health/grad_norm/trunk/input")},
        ("eval/episode_return", "health/dormant_ratio", "health/srank"),
        verdict_stable_gradients, 10_000_000),
    "grama": Study("grama", _OFF, ("health/grama_ratio/critic", "health/dormant_ratio/critic",
                                   "eval/episode_return"), verdict_grama, 500_000, 4),
    "least": Study("least", _OFF, ("eval/episode_return", "least/stop_rate"), verdict_least,
                   2_000_000, 6),
    "asyppo": Study("asyppo", {"mean_reward": (_MEAN, "reward/task"),
                               "final_reward": (_FINAL, "reward/task"),
                               "final_eval_accuracy": (_FINAL, "eval/accuracy"),
                               "mean_sigma": (_MEAN, "asyppo/sigma_mean"),
                               "final_entropy": (_FINAL, "entropy/mean")},
                    ("reward/task", "asyppo/sigma_mean", "entropy/mean"), verdict_asyppo, 200),
}


def set_chunks(config, chunks: int, units_per_chunk: float, n_evals: int = 10) -> None:
  """Sizes ``config`` to ``chunks`` logged chunks, evaluating about ``n_evals`` times."""
  if config.trainer == "llm_rl":
    config.steps = chunks * config.log_every
  else:
    config.total_env_steps = int(round(chunks * units_per_chunk))
  config.eval.every = config.log_every * max(1, chunks // n_evals)


def curves(records: Sequence[dict], keys: Sequence[str]) -> dict[str, dict[str, list]]:
  """``{key: {"x": [...], "values": [[per seed], ...]}}`` (x = env steps, else step)."""
  out = {}
  for key in keys:
    xs, vals = [], []
    for r in records:
      if r.get(key) is None:
        continue
      xs.append(r.get("env_steps", r["step"]))
      vals.append([None if not math.isfinite(v) else v for v in _per_seed(r[key]).tolist()])
    if xs:
      out[key] = {"x": xs, "values": vals}
  return out


def _summarise(study: Study, records_by_seed: list[list[dict]]) -> dict[str, list]:
  """Per metric, the per-seed values (seeds vmapped in one run, or one run per seed)."""
  seeds: dict[str, list] = {}
  for name, (reduce, key) in study.metrics.items():
    parts = [reduce(recs, key) for recs in records_by_seed]
    if any(p is None for p in parts):
      continue
    seeds[name] = [None if not math.isfinite(v) else float(v)
                   for v in np.concatenate(parts).tolist()]
  return seeds


def plot(results: dict, keys: Sequence[str], path: str) -> None:
  """One figure: a panel per (key, game), one curve per arm (mean and 95% band over seeds)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from jaxlab.core import plotting  # pylint: disable=import-outside-toplevel
  games = _games(results)
  fig, axes = plt.subplots(len(keys), len(games), figsize=(5 * len(games), 3.2 * len(keys)),
                           squeeze=False)
  for i, key in enumerate(keys):
    for j, game in enumerate(games):
      ax = axes[i][j]
      for label, res in results.items():
        if res["group"] != game or key not in res["curves"]:
          continue
        cur = res["curves"][key]
        recs = [{"step": x, "x": x, key: [np.nan if v is None else v for v in vals]}
                for x, vals in zip(cur["x"], cur["values"])]
        x, mean, half = plotting.series(recs, key, x_key="x")
        if x.size:
          ax.plot(x, mean, label=label.split("/")[-1])
          ax.fill_between(x, mean - half, mean + half, alpha=0.2)
      ax.set_title(f"{game}: {key}", fontsize=9)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def run_study(name: str, *, smoke: bool, out: str, budget_s: float, workdir: str) -> dict:
  """Runs one preset end to end; returns the metrics.json content.

  With ``smoke``, XLA compiles the (tiny) programs with most optimisations off
  (``jax_disable_most_optimizations``, restored afterwards): at smoke size nearly all the time
  is compilation, which this halves, while each chunk runs in well under a second either way.
  """
  if not smoke:
    return _run_study(name, smoke=smoke, out=out, budget_s=budget_s, workdir=workdir)
  with unoptimised_compilation():
    return _run_study(name, smoke=smoke, out=out, budget_s=budget_s, workdir=workdir)


@contextlib.contextmanager
def unoptimised_compilation():
  """Programs compiled inside compile with ``jax_disable_most_optimizations``; on leaving, the
  flag is restored, dropping the programs compiled inside from jax's in-memory caches if it
  changes (``jaxlab.core.compilation.set_unoptimised``)."""
  from jaxlab.core import compilation  # pylint: disable=import-outside-toplevel
  before = compilation.set_unoptimised(True)
  try:
    yield
  finally:
    compilation.set_unoptimised(before)


def _run_study(name: str, *, smoke: bool, out: str, budget_s: float, workdir: str) -> dict:
  t_start = time.perf_counter()
  import jax  # pylint: disable=import-outside-toplevel
  os.makedirs(out, exist_ok=True)
  os.makedirs(workdir, exist_ok=True)
  if not jax.config.jax_compilation_cache_dir:  # keep a cache the caller set (the test suite's)
    try:
      jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
      jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except Exception as err:  # pylint: disable=broad-except  # a cache only saves time
      _log(f"[{name}] no persistent compilation cache ({err})")
  study = SPECS[name]
  device = f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}"
  _log(f"[{name}] device={device} smoke={smoke} budget_s={budget_s:g} out={out}")
  extra: dict[str, Any] = {}
  if name == "asyppo" and smoke:
    # No SFT stage at smoke size: a tiny random policy stands in for the reference.
    arms = asyppo_arms(smoke, tiny_random_policy(os.path.join(workdir, "policy")))
    extra["sft"] = None
  elif name == "asyppo":
    sft_dir = os.path.join(workdir, "sft")
    sft = asyppo_sft_config(smoke, sft_dir)
    recs, wall = run_config(sft, sft_dir)
    acc = final_values(recs, "eval/accuracy")
    extra["sft"] = {"wall_s": wall, "steps": sft.steps,
                    "eval_accuracy": None if acc is None else float(np.nanmean(acc))}
    _log(f"[{name}] reference SFT: {sft.steps} steps in {wall:.1f} s, held-out greedy "
         f"accuracy {extra['sft']['eval_accuracy']}")
    arms = asyppo_arms(smoke, os.path.join(sft_dir, "hf_model"))
  else:
    arms = {"sigreg": sigreg_arms, "stable_gradients": stable_gradients_arms,
            "grama": grama_arms, "least": least_arms}[name](smoke)

  # Probe the most expensive arm (the last one listed: SIGReg, multi-skip+Kron, ReGraMa,
  # LEAST, AsyPPO), then size every run from it.
  probe_arm = arms[-1]
  fixed, chunk, evaluation, units, probe_records, probe_wall = probe(
      probe_arm.config, os.path.join(workdir, "probe"), None if smoke else study.max_units)
  runs = sum(len(a.seeds) for a in arms)
  left = budget_s - (time.perf_counter() - t_start)
  max_chunks = max(1, int(study.max_units // units))
  plan = make_plan(fixed, chunk, evaluation, units, runs, left, max_chunks, study.n_evals)
  unit = "RL steps" if probe_arm.config.trainer == "llm_rl" else "env steps"
  _log(f"[{name}] probe ({probe_arm.label}): fixed {fixed:.1f} s per run, {chunk:.2f} s per "
       f"chunk of {units:g} {unit}, {evaluation:.1f} s per evaluation; {left:.0f} s left for "
       f"{runs} runs")
  if smoke:
    plan = dataclasses.replace(plan, chunks=3, note=f"smoke: fixed 3 chunks (the budget "
                                                    f"would allow {plan.chunks})")
  planned_units = plan.chunks * units
  print(f"plan {name}: {plan.chunks} chunks x {units:g} = {planned_units:g} {unit} per run, "
        f"{runs} runs, estimated "
        f"{runs * (fixed + plan.chunks * chunk + (study.n_evals + 1) * evaluation):.0f} s"
        + (f" ({plan.note})" if plan.note else ""), flush=True)

  results: dict[str, dict] = {}
  for arm in arms:
    if not smoke:
      set_chunks(arm.config, plan.chunks, units, study.n_evals)
    by_seed, walls = [], []
    for seed in arm.seeds:
      c = arm.config.copy_and_resolve_references()
      if len(arm.seeds) > 1:
        c.seed = seed
      if smoke and arm is probe_arm and seed == arm.seeds[0]:
        recs, wall = probe_records, probe_wall  # at smoke size the probe ran this very config
      else:
        wd = os.path.join(workdir, "runs", arm.label.replace("/", "_") + f"_s{seed}")
        recs, wall = run_config(c, wd)
      by_seed.append(recs)
      walls.append(wall)
    seeds = _summarise(study, by_seed)
    summary = {k: [x if math.isfinite(x) else None for x in ci(v)] for k, v in seeds.items()}
    cur: dict[str, dict] = {}
    for recs in by_seed:  # one run per seed: concatenate the seeds' values per record
      for key, val in curves(recs, study.curve_keys).items():
        if key not in cur:
          cur[key] = val
        else:
          cur[key]["values"] = [a + b for a, b in zip(cur[key]["values"], val["values"])]
    n_seeds = len(arm.seeds) * int(arm.config.get("num_seeds", 1))
    results[arm.label] = {"group": arm.group, "num_seeds": n_seeds, "wall_s": walls,
                          "steps": planned_units, "seeds": seeds, "summary": summary,
                          "curves": cur}
    _log(f"[{name}] {arm.label}: {sum(walls):.1f} s; " + ", ".join(
        f"{k} {_fmt(*ci(v))}" for k, v in seeds.items()))

  verdict, reason = study.verdict(results)
  assert verdict in VERDICTS
  png = os.path.join(out, "curves.png")
  plot(results, study.curve_keys, png)
  doc = {"study": name, "smoke": smoke, "device": device, "budget_s": budget_s,
         "plan": dataclasses.asdict(plan) | {"unit": unit, "units_per_run": planned_units,
                                             "probe_arm": probe_arm.label},
         **extra, "arms": results, "verdict": verdict, "reason": reason,
         "interval": "mean ± 95% Student-t half-width over seeds (jaxlab.core.stats.mean_ci)",
         "wall_s": time.perf_counter() - t_start}
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(doc, f, indent=1, allow_nan=False, default=float)
  _log(f"[{name}] wrote {out}/metrics.json and {png} in {doc['wall_s']:.1f} s")
  print(f"verdict={verdict} {name} {reason}", flush=True)
  return doc


def main(argv: Sequence[str] | None = None) -> int:
  import argparse  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--study", required=True, choices=STUDIES)
  p.add_argument("--out", required=True, help="folder for metrics.json and curves.png")
  p.add_argument("--smoke", action="store_true", help="tiny CPU sizes (seconds)")
  p.add_argument("--budget_s", type=float, default=480.0,
                 help="wall-clock budget of the whole preset, compilation included")
  p.add_argument("--workdir", default=None,
                 help="run directories (default: jaxlab_studies/<study> in the system's "
                 "temporary folder)")
  a = p.parse_args(argv)
  workdir = a.workdir or os.path.join(tempfile.gettempdir(), "jaxlab_studies",
                                      a.study + ("_smoke" if a.smoke else ""))
  out, workdir = os.path.abspath(a.out), os.path.abspath(workdir)
  os.chdir(REPO)  # configs name data files relative to the repository
  run_study(a.study, smoke=a.smoke, out=out, budget_s=a.budget_s, workdir=workdir)
  return 0


if __name__ == "__main__":
  sys.exit(main())
