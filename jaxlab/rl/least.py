"""LEAST: stop poor episodes early (The Courage to Stop, ICML 2025; spec rl.md §3).

A collector-level stop rule for any off-policy actor-critic (SAC, TD3). The collector gives
``observe`` the critic's Q-value Q̂_i of every transition it just took and that transition's
TD loss G_i (spec §3.2; how they are computed is the trainer's business, see
``OffPolicy._td_stats``), and ``observe``:

1. decides, per env, whether to stop: at step i of the current episode, with
   ε_i = median of the Q̂ stored at step i over the last K episodes and
   ω_i = median of their G at step i / G_i,

       stop  ⇔  Q̂_i < ω_i ε_i  (ε_i ≥ 0)   or   Q̂_i < ε_i / ω_i  (ε_i < 0),

   once the run is past ``t_start`` and step i has at least ``min_episodes`` stored values;
2. stores a stop as a **truncation**: ``truncated=True``, ``final_obs`` = the state reached, so
   the critic bootstraps from it (the env did not terminate; spec §3.2 recommendation), and
   starts a new episode in that env (computed only if some env stopped);
3. records Q̂_i and G_i in the env's current-episode row, and pushes the rows of every episode
   that ended (time limit, termination or stop) into the [K_max, L] history rings;
4. when an episode ended, refreshes the cached per-step medians (spec §3.5: acting only looks
   up a length-L vector), and runs the optional adaptive window and noise schedule (§3.3).

Choices where the spec is unconfirmed (§8 item 3), all documented in ``default_config``:
Q̂ is min(Q1, Q2); G is the squared TD error against the algorithm's own target; ``omega_scale``
multiplies ω; the window entropy is a histogram entropy with a running reference; the noise
schedule is a sigmoid of the recent early-stop frequency.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from jaxlab.core.config import require
from jaxlab.envs import _common
from jaxlab.envs.base import Env, EnvState

_TINY = 1e-8
_OMEGA_RANGE = (1e-6, 1e6)  # keeps w * eps and eps / w finite when G or its median is 0


def default_config() -> ml_collections.ConfigDict:
  """The ``config.least`` group (spec §3.4 values, all [secondary / unverified])."""
  return ml_collections.ConfigDict(dict(
      enabled=False,
      window=250,  # K: episodes whose per-step medians set the thresholds
      max_window=500,  # rows of the history rings (the adaptive window grows up to this)
      start_fraction=0.1,  # t_start as a fraction of total_env_steps (10-20% MuJoCo)
      min_episodes=10,  # stored values needed at step i before the rule may stop there
      omega=True,  # False: Q threshold only (the paper's ablation)
      omega_scale=1.0,  # multiplies ω; 1.0 = the rule as stated in spec §3.2
      adaptive_window=False,  # entropy-aware window (§3.3 item 1)
      window_step=25,  # h: episodes added or removed per resize
      entropy_gamma=0.05,  # γ_H: grow if H > (1 + γ_H) H_ref, shrink if H < H_ref / (1 + γ_H)
      entropy_every=10,  # c: finished episodes between entropy checks
      entropy_bins=32,
      adaptive_noise=False,  # exploration-noise schedule (§3.3 item 2)
      noise_max=0.3,  # σ̄ (TD3 0.25-0.35, SAC 0.15-0.25)
      noise_episodes=20,  # m: recent episodes whose early-stop frequency drives σ
      early_fraction=0.5,  # e = early_fraction * L: a stop before step e counts as early
      noise_slope=10.0,  # σ = σ0 + (σ̄ - σ0) sigmoid(slope (f - midpoint))
      noise_midpoint=0.5,
      # Diagnostic for both arms (also with enabled=False): None, or a reward below which a
      # stored transition counts as low-value; each chunk then logs
      # ``replay/low_reward_share``, the share of the replay buffer under it (spec §3.8), and
      # ``replay/low_reward_share_recent``, the share among the transitions collected in that
      # chunk (log_every x num_envs), which warm-up data do not dilute.
      low_reward=None,
  ))


def check_config(c: ml_collections.ConfigDict, num_envs: int) -> None:
  """Rules of ``config.least``; each failure names its key."""
  if not c.enabled:
    return
  for key in ("window", "max_window", "min_episodes", "window_step", "entropy_every",
              "entropy_bins", "noise_episodes"):
    require(c[key] >= 1, f"'config.least.{key}' must be >= 1, got {c[key]}")
  require(c.window <= c.max_window, f"'config.least.window'={c.window} must be <= "
          f"config.least.max_window={c.max_window}")
  require(c.max_window >= num_envs,
          f"'config.least.max_window'={c.max_window} must be >= config.num_envs={num_envs} "
          "(all envs may end an episode at the same step)")
  require(c.min_episodes <= c.window, f"'config.least.min_episodes'={c.min_episodes} must be "
          f"<= config.least.window={c.window}")
  require(0 <= c.start_fraction <= 1, f"'config.least.start_fraction' must be in [0, 1], got "
          f"{c.start_fraction}")
  require(c.omega_scale > 0, f"'config.least.omega_scale' must be > 0, got {c.omega_scale}")
  require(0 < c.early_fraction <= 1, f"'config.least.early_fraction' must be in (0, 1], got "
          f"{c.early_fraction}")
  require(c.noise_max >= 0, f"'config.least.noise_max' must be >= 0, got {c.noise_max}")


@struct.dataclass
class LeastState:
  """LEAST's memory for one seed. R = max_window, L = max episode length, N = num_envs.

  Attributes:
    q_hist, g_hist: [R, L] float32 rings of past episodes' Q̂ and G per step (NaN = none).
    next_row: () int32 ring row the next finished episode goes to.
    pushed: () int32 episodes pushed so far.
    window: () int32 current K.
    q_row, g_row: [N, L] the current episode of every env.
    eps, g_med: [L] cached medians over the window; count: [L] int32 values per step.
    noise_std: () float32 exploration-noise std the collector uses.
    noise_init: () float32 σ0.
    early: [m] float32 ring: 1 = that episode was stopped early, 0 = not, NaN = empty.
    early_pos: () int32.
    entropy_ref: () float32 running reference entropy (NaN before the first check).
    last_check: () int32 ``pushed`` at the last entropy check.
  """
  q_hist: jax.Array
  g_hist: jax.Array
  next_row: jax.Array
  pushed: jax.Array
  window: jax.Array
  q_row: jax.Array
  g_row: jax.Array
  eps: jax.Array
  g_med: jax.Array
  count: jax.Array
  noise_std: jax.Array
  noise_init: jax.Array
  early: jax.Array
  early_pos: jax.Array
  entropy_ref: jax.Array
  last_check: jax.Array


def init(c: ml_collections.ConfigDict, num_envs: int, max_len: int,
         noise_std: float = 0.0) -> LeastState:
  """Empty histories for ``num_envs`` envs and episodes of at most ``max_len`` steps."""
  nan = lambda *shape: jnp.full(shape, jnp.nan, jnp.float32)  # noqa: E731
  i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
  return LeastState(
      q_hist=nan(c.max_window, max_len), g_hist=nan(c.max_window, max_len),
      next_row=i32(0), pushed=i32(0), window=i32(c.window),
      q_row=nan(num_envs, max_len), g_row=nan(num_envs, max_len),
      eps=nan(max_len), g_med=nan(max_len), count=jnp.zeros(max_len, jnp.int32),
      noise_std=jnp.asarray(noise_std, jnp.float32),
      noise_init=jnp.asarray(noise_std, jnp.float32),
      early=nan(c.noise_episodes), early_pos=i32(0),
      entropy_ref=jnp.asarray(jnp.nan, jnp.float32), last_check=i32(0))


# ---------------------------------------------------------------------------------------------
# The rule.


def omega(g_hat: jax.Array, g_med: jax.Array, scale: float = 1.0) -> jax.Array:
  """ω_i = scale * median(B_G[:, i]) / G_i, clipped to a finite range (spec §3.2)."""
  w = scale * g_med / jnp.maximum(g_hat, _TINY)
  return jnp.clip(w, *_OMEGA_RANGE)


def stop_rule(q_hat: jax.Array, g_hat: jax.Array, eps: jax.Array, g_med: jax.Array,
              count: jax.Array, *, min_episodes: int, use_omega: bool = True,
              omega_scale: float = 1.0) -> jax.Array:
  """Whether to stop, elementwise (spec §3.2).

  Args:
    q_hat: [...] Q̂_i of the current transitions.
    g_hat: [...] their TD losses G_i.
    eps: [...] median Q̂ at the same step index over the window (ε_i).
    g_med: [...] median G at that index.
    count: [...] number of stored values at that index.
    min_episodes: no stop where fewer values are stored.
    use_omega: weight the threshold by ω (False: Q̂ < ε only).
    omega_scale: multiplies ω.

  Returns:
    bool [...].
  """
  w = omega(g_hat, g_med, omega_scale) if use_omega else jnp.ones_like(eps)
  # For negative ε the threshold divides by ω, so that ω > 1 still tightens it (moves it up).
  threshold = jnp.where(eps >= 0, w * eps, eps / w)
  return (count >= min_episodes) & (q_hat < threshold)


# ---------------------------------------------------------------------------------------------
# Applying a stop to the envs.


def truncate(env: Env, state: EnvState, stop: jax.Array) -> EnvState:
  """Ends the episodes of the envs with ``stop`` as truncations and starts new ones.

  After it, for a stopped env: ``truncated`` is True, ``done_return``/``done_length`` hold the
  stopped episode's statistics, ``final_obs`` is still the state the step reached (what the
  critic bootstraps from) and ``obs`` is a fresh episode's first observation, exactly as
  ``AutoReset`` leaves an env whose time ran out. Envs that did not stop are untouched; the
  reset runs only if some env stopped.

  Args:
    env: the (auto-resetting) single env whose ``reset`` starts the new episode.
    state: [N] batched states after ``env.step``.
    stop: [N] bool; must be False where ``state.done`` already is.
  """
  shared = _common.shared_leaves(env)

  def start_new_episode(operand):
    reset_key, reached = operand
    fresh = env.reset(reset_key)
    return reset_key, reached.replace(
        backend=fresh.backend, obs=fresh.obs, episode_return=fresh.episode_return,
        episode_length=fresh.episode_length, extras=fresh.extras)

  def one(s: EnvState, stop_i: jax.Array) -> EnvState:
    key, reset_key = jax.random.split(s.key)
    s = s.replace(
        truncated=s.truncated | stop_i,
        done_return=jnp.where(stop_i, s.episode_return, s.done_return),
        done_length=jnp.where(stop_i, s.episode_length, s.done_length),
        key=jax.lax.select(stop_i, key, s.key))
    mask = None if shared is None else (False, shared)
    return _common.maybe_apply(stop_i, start_new_episode, (reset_key, s), shared=mask)[1]

  return jax.vmap(one)(state, stop)


# ---------------------------------------------------------------------------------------------
# Bookkeeping.


def _ring_slots(ended: jax.Array, start: jax.Array, size: int) -> jax.Array:
  """[N] ring slots for the ended entries (consecutive from ``start``), ``size`` = drop."""
  offset = jnp.cumsum(ended.astype(jnp.int32)) - 1
  return jnp.where(ended, (start + offset) % size, size)


def window_rows(state: LeastState) -> jax.Array:
  """bool [R]: rows holding one of the ``window`` most recent episodes."""
  rows = state.q_hist.shape[0]
  age = (state.next_row - 1 - jnp.arange(rows)) % rows  # 0 = newest
  return age < jnp.minimum(state.window, state.pushed)


def histogram_entropy(values: jax.Array, valid: jax.Array, bins: int) -> jax.Array:
  """Entropy (nats) of the histogram of ``values[valid]`` over ``bins`` equal bins."""
  lo = jnp.min(jnp.where(valid, values, jnp.inf))
  hi = jnp.max(jnp.where(valid, values, -jnp.inf))
  idx = jnp.clip(((values - lo) / jnp.maximum(hi - lo, _TINY) * bins).astype(jnp.int32),
                 0, bins - 1)
  counts = jnp.zeros(bins, jnp.float32).at[idx.ravel()].add(valid.ravel().astype(jnp.float32))
  p = counts / jnp.maximum(counts.sum(), 1.0)
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


def refresh(c: ml_collections.ConfigDict, state: LeastState) -> LeastState:
  """Adaptive window and noise (if enabled), then the cached medians over the window."""
  if c.adaptive_window:
    state = _resize_window(c, state)
  if c.adaptive_noise:
    frac = jnp.nanmean(state.early)
    frac = jnp.where(jnp.isnan(frac), 0.0, frac)
    sigma = state.noise_init + (c.noise_max - state.noise_init) * jax.nn.sigmoid(
        c.noise_slope * (frac - c.noise_midpoint))
    state = state.replace(noise_std=sigma.astype(jnp.float32))
  rows = window_rows(state)[:, None]
  q = jnp.where(rows, state.q_hist, jnp.nan)
  g = jnp.where(rows, state.g_hist, jnp.nan)
  # The median, not the mean: robust to a few extreme episodes (the paper's ablation).
  return state.replace(eps=jnp.nanmedian(q, axis=0), g_med=jnp.nanmedian(g, axis=0),
                       count=jnp.sum(~jnp.isnan(q), axis=0).astype(jnp.int32))


def _resize_window(c, state: LeastState) -> LeastState:
  """Every ``entropy_every`` episodes: grow K by h when the window's Q-entropy rose above
  (1 + γ_H) times its running reference (unstable policy: smooth the medians more), shrink it
  back towards the initial K when it fell below reference / (1 + γ_H)."""
  due = state.pushed - state.last_check >= c.entropy_every
  rows = window_rows(state)[:, None]
  valid = rows & ~jnp.isnan(state.q_hist)
  h = histogram_entropy(state.q_hist, valid, c.entropy_bins)
  ref = state.entropy_ref
  grow = h > (1 + c.entropy_gamma) * ref
  shrink = h < ref / (1 + c.entropy_gamma)
  window = jnp.where(grow, state.window + c.window_step,
                     jnp.where(shrink, state.window - c.window_step, state.window))
  window = jnp.clip(window, c.window, c.max_window).astype(jnp.int32)
  new_ref = jnp.where(jnp.isnan(ref), h, 0.9 * ref + 0.1 * h)
  return state.replace(
      window=jnp.where(due, window, state.window),
      entropy_ref=jnp.where(due, new_ref, ref).astype(jnp.float32),
      last_check=jnp.where(due, state.pushed, state.last_check))


def observe(c: ml_collections.ConfigDict, state: LeastState, env: Env, prev: EnvState,
            new: EnvState, q_hat: jax.Array, g_hat: jax.Array, active: jax.Array
            ) -> tuple[LeastState, EnvState, dict]:
  """One collector step of LEAST for [N] envs (module docstring, steps 1-4).

  Args:
    c: ``config.least``.
    state: LEAST state.
    env: the single env (for resets of stopped envs).
    prev: [N] env states the step started from (their ``episode_length`` is the step index).
    new: [N] env states after ``env.step`` (auto-reset already applied where done).
    q_hat: [N] Q̂ of the transitions (s, a).
    g_hat: [N] TD losses of the transitions.
    active: () bool, the run is past t_start.

  Returns:
    ``(state, new, metrics)``: ``new`` with stops applied; per-step metrics ``least/stops``,
    ``least/ended``, ``least/stop_step_sum``, ``least/stop_quarter`` ([4] stops per quarter of
    the episode length), ``least/active``.
  """
  num_envs, max_len = state.q_row.shape
  step = jnp.clip(prev.episode_length, 0, max_len - 1)  # [N] index i of this transition
  stop = active & ~new.done & stop_rule(
      q_hat, g_hat, state.eps[step], state.g_med[step], state.count[step],
      min_episodes=c.min_episodes, use_omega=c.omega, omega_scale=c.omega_scale)
  envs = jnp.arange(num_envs)
  q_row = state.q_row.at[envs, step].set(q_hat.astype(jnp.float32))
  g_row = state.g_row.at[envs, step].set(g_hat.astype(jnp.float32))
  new = truncate(env, new, stop)
  ended = new.done

  rows = state.q_hist.shape[0]
  slots = _ring_slots(ended, state.next_row, rows)
  q_hist = state.q_hist.at[slots].set(q_row, mode="drop")
  g_hist = state.g_hist.at[slots].set(g_row, mode="drop")
  n_ended = ended.sum().astype(jnp.int32)
  early_flag = (stop & (step < c.early_fraction * max_len)).astype(jnp.float32)
  m = state.early.shape[0]
  early = state.early.at[_ring_slots(ended, state.early_pos, m)].set(early_flag, mode="drop")
  state = state.replace(
      q_hist=q_hist, g_hist=g_hist, next_row=(state.next_row + n_ended) % rows,
      pushed=state.pushed + n_ended,
      q_row=jnp.where(ended[:, None], jnp.nan, q_row),
      g_row=jnp.where(ended[:, None], jnp.nan, g_row),
      early=early, early_pos=(state.early_pos + n_ended) % m)
  state = _common.maybe_apply(jnp.any(ended), lambda s: refresh(c, s), state)

  quarter = jnp.clip(step * 4 // max_len, 0, 3)
  metrics = {
      "least/stops": stop.sum().astype(jnp.float32),
      "least/ended": ended.sum().astype(jnp.float32),
      "least/stop_step_sum": jnp.where(stop, step + 1, 0).sum().astype(jnp.float32),
      "least/stop_quarter": jnp.zeros(4, jnp.float32).at[quarter].add(
          stop.astype(jnp.float32)),
      "least/active": jnp.asarray(active, jnp.float32),
  }
  return state, new, metrics


def summarize(m: dict[str, Any]) -> dict[str, jax.Array]:
  """Chunk-level LEAST metrics from per-step ones stacked over iterations [T, ...].

  ``least/stop_rate``: stopped / finished episodes (NaN if none finished);
  ``least/stop_step_mean``: mean episode step at which stops happened (NaN if none);
  ``least/stop_quarter/{1..4}``: share of the stops in each quarter of the max episode length;
  ``least/stops``, ``least/active`` (fraction of iterations with the rule on).
  """
  stops = m["least/stops"].sum()
  ended = m["least/ended"].sum()
  quarters = m["least/stop_quarter"].sum(axis=0)
  out = {
      "least/stops": stops,
      "least/stop_rate": jnp.where(ended > 0, stops / jnp.maximum(ended, 1), jnp.nan),
      "least/stop_step_mean": jnp.where(stops > 0, m["least/stop_step_sum"].sum()
                                        / jnp.maximum(stops, 1), jnp.nan),
      "least/active": m["least/active"].mean(),
  }
  for i in range(4):
    out[f"least/stop_quarter/{i + 1}"] = jnp.where(stops > 0, quarters[i] / jnp.maximum(stops, 1),
                                                   jnp.nan)
  return out
