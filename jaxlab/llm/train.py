"""Supervised (causal-LM) training of the decoder: loss, optimizer, and one compiled step.

The pieces, in the order a step uses them:

* :class:`TrainState` holds the float32 *master* parameters, the optimizer state and the step
  counter; it is a pytree, donated to and returned by every step, and checkpointed whole.
* :func:`train_step` casts the master parameters to the compute dtype once (bfloat16 on
  accelerators), runs ``grad_accum`` micro-batches in a ``lax.scan`` summing float32 gradients,
  and applies the optimizer (AdamW from :func:`jaxlab.optim.make_optimizer`) to the float32
  masters.
* The loss is a hook (:data:`LossFn`) that also receives the step's PRNG key, derived from
  ``(seed, step)`` so a resumed run draws what an uninterrupted one would: :func:`lm_loss` for
  the decoder, :func:`looped_loss` for a looped model (sampled trip count, random initial
  state, exit gate), :func:`vlm_loss` for a vision-language model (the batch's extra entries:
  M-RoPE positions and padded images).
* :func:`lm_loss` is next-token cross-entropy in float32 over the positions a ``loss_mask``
  selects (the completion of a prompt/completion pair), normalised by the number of such
  tokens in the *whole* batch, so that accumulating micro-batches gives exactly the gradient of
  the big batch.

Sharding is data: given a mesh, parameters (and the Adam moments, which mirror them) follow a
rule table of :mod:`jaxlab.models.decoder.sharding` (FSDP, tensor parallel, both), the batch is split
over ``("data", "fsdp")``, and jit inserts the collectives. The same code runs on one device.

Shape letters: B batch (rows per step), A micro-batches, M = B / A rows per micro-batch,
T sequence length, V vocabulary.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxlab.core import mesh as mesh_lib
from jaxlab.models.decoder import sharding as sharding_lib
from jaxlab.models.decoder.modeling import Decoder, abstract_decoder

# The batch dimension is split over every data-parallel device.
BATCH_SPEC = P(("data", "fsdp"), None)


@flax.struct.dataclass
class TrainState:
  """Everything the next step reads.

  Attributes:
    step: ``[]`` int32, updates applied so far (the learning-rate schedule reads it).
    params: the float32 master parameters (an ``nnx.State`` of the decoder).
    opt_state: the optax state (Adam moments mirror ``params``).
  """
  step: jax.Array
  params: Any
  opt_state: Any


# -- loss -----------------------------------------------------------------------------------------


def token_nll(logits_btv: jax.Array, tokens_bt: jax.Array) -> jax.Array:
  """``-log p(tokens[t+1] | tokens[:t+1])`` as float32 ``[B, T-1]``."""
  logp = jax.nn.log_softmax(logits_btv[:, :-1].astype(jnp.float32), axis=-1)
  target = tokens_bt[:, 1:]
  return -jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]


def lm_loss(model: Decoder, tokens_bt: jax.Array, loss_mask_bt: jax.Array,
            mask_bt: jax.Array | None = None, normalizer: jax.Array | float | None = None
            ) -> tuple[jax.Array, jax.Array]:
  """Next-token cross-entropy over the tokens ``loss_mask`` selects.

  ``loss_mask[b, t] = 1`` means token ``t`` is a target: its log-probability given tokens
  ``< t`` enters the loss. For prompt/completion pairs it is 1 on the completion (and its eos)
  and 0 on the prompt and padding, so prompt tokens contribute nothing. Position 0 cannot be a
  target (nothing precedes it) and is ignored.

  Args:
    model: the decoder (its ``config.dtype`` is the matmul dtype; the log-softmax is float32).
    tokens_bt: int ``[B, T]``.
    loss_mask_bt: ``[B, T]`` 0/1 (or float weights).
    mask_bt: ``[B, T]``, 1 for real tokens (default: all; RIGHT padding needs no mask since
      causal attention never looks ahead).
    normalizer: divide the summed loss by this (default: the number of target tokens in this
      batch). Gradient accumulation passes the whole batch's count.

  Returns:
    ``(loss, num_targets)``: the normalised float32 loss and the float32 count of targets.
  """
  logits, _ = model(tokens_bt, mask_bt)
  nll = token_nll(logits, tokens_bt)
  w = loss_mask_bt[:, 1:].astype(jnp.float32)
  count = jnp.sum(w)
  denom = jnp.maximum(count, 1.0) if normalizer is None else normalizer
  return jnp.sum(nll * w) / denom, count


def looped_loss(exit_gate_beta: float = 0.0) -> Callable[..., jax.Array]:
  """The loss hook (see :func:`make_train_step`) of a looped model
  (:class:`jaxlab.models.looped.modeling.LoopedLM`), following its config's training options.

  The step's key is split in two: one draws the random initial state (``state_init=
  "trunc_normal"``, a fresh draw every step as Huginn trains), the other the trip count when
  ``train_recurrence="lognormal_poisson"`` (:func:`~jaxlab.models.looped.modeling.
  sample_recurrence`: gradient-free iterations, then at most ``backprop_depth`` with
  gradients). A fixed trip count backpropagates through the last ``backprop_depth``
  iterations (all when None). With ``exit_gate`` the loss is Ouro's expected per-iteration
  cross-entropy minus ``exit_gate_beta`` times the exit distribution's entropy (every
  iteration read out through the coda), at the fixed trip count. The target tokens are those
  of :func:`lm_loss`, normalised the same way.
  """
  from jaxlab.models.looped import modeling as looped  # pylint: disable=g-import-not-at-top

  def loss(model, tokens_bt, loss_mask_bt, mask_bt, normalizer, key):
    c = model.config
    k_state, k_trip = jax.random.split(key)
    w = loss_mask_bt[:, 1:].astype(jnp.float32)
    if c.exit_gate:
      logits_ibtv, lambda_ibt = model.iteration_logits(tokens_bt, mask_bt, key=k_state)
      mean = looped.exit_gate_loss(logits_ibtv[:, :, :-1], lambda_ibt[:, :, :-1],
                                   tokens_bt[:, 1:], w, exit_gate_beta)
      return mean * jnp.maximum(jnp.sum(w), 1.0) / normalizer
    trip = (None if c.train_recurrence == "fixed" else looped.sample_recurrence(k_trip, c))
    logits, _ = model(tokens_bt, mask_bt, key=k_state, recurrence=trip)
    return jnp.sum(token_nll(logits, tokens_bt) * w) / normalizer

  return loss


def vlm_loss(model, tokens_bt, loss_mask_bt, mask_bt, normalizer, key, *, positions_b3t,
             images=None) -> jax.Array:
  """The loss hook of a vision-language model (:class:`jaxlab.models.qwen_vl.modeling.QwenVL`):
  :func:`lm_loss`'s masked next-token cross-entropy, with the image embeddings spliced in at
  the placeholders and the M-RoPE positions of the rows.

  Its extra batch entries (see :func:`make_train_step`): ``positions_b3t`` int ``[B, 3, T]``
  (``rope_index`` of each row, computed on the host) and ``images``, a padded
  :class:`~jaxlab.models.qwen_vl.vision.ImageBatch` of the rows' images (absent for text-only
  rows), whose layout is data, so batches of different image sizes share one program.
  """
  del key  # deterministic
  positions = jnp.swapaxes(positions_b3t, 0, 1)  # [3, B, T]
  h, _ = model.prompt_hidden(tokens_bt, mask_bt, positions, images, None)
  w = loss_mask_bt[:, 1:].astype(jnp.float32)
  return jnp.sum(token_nll(model.logits(h), tokens_bt) * w) / normalizer


# -- state ----------------------------------------------------------------------------------------


def cast_floating(tree: Any, dtype: Any) -> Any:
  """Casts floating leaves of ``tree`` to ``dtype`` (integers untouched)."""
  dtype = jnp.dtype(dtype)
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def param_shardings(params: Any, mesh: Mesh, rules: sharding_lib.Rules | str) -> Any:
  return sharding_lib.state_shardings(params, mesh, rules)


def opt_state_shardings(opt_state: Any, mesh: Mesh, rules: sharding_lib.Rules | str) -> Any:
  """Shardings for the optimizer state: the moments' paths end with their parameter's path
  (``0/mu/layers/0/attn/q_dnh`` for ``layers/0/attn/q_dnh``) and the rules are matched at the
  end of a path, so one table places both; scalars (counts) are replicated."""
  return sharding_lib.state_shardings(opt_state, mesh, rules)


def state_shardings(state: TrainState, mesh: Mesh, rules: sharding_lib.Rules | str) -> TrainState:
  """A :class:`TrainState` of ``NamedSharding``s (params and moments by ``rules``)."""
  return TrainState(step=NamedSharding(mesh, P()),
                    params=param_shardings(state.params, mesh, rules),
                    opt_state=opt_state_shardings(state.opt_state, mesh, rules))


def init_train_state(model: Decoder, tx: optax.GradientTransformation, mesh: Mesh | None = None,
                     rules: sharding_lib.Rules | str = "fsdp", compute_dtype: Any = None
                     ) -> tuple[Any, TrainState]:
  """Splits ``model`` into its static graph and a :class:`TrainState` with float32 masters.

  Args:
    model: the decoder (any parameter dtype; the masters are float32 copies).
    tx: the optimizer.
    mesh: if given, the state is placed on it by ``rules``.
    rules: a rule table or a key of :data:`jaxlab.models.decoder.sharding.RULES`.
    compute_dtype: the matmul dtype of the training step (default: ``model.config.dtype``);
      the returned graph carries it, so the step and :func:`model_from_state` compute in it.

  Returns:
    ``(graphdef, state)``.
  """
  graphdef, params = nnx.split(model)
  if compute_dtype is not None and jnp.dtype(compute_dtype) != jnp.dtype(model.config.dtype):
    # Same modules and parameter paths, another static dtype: the graph of an abstract twin
    # (of the model's own class: the decoder, or any family built as ``cls(config, rngs=)``).
    twin_config = model.config.replace(dtype=jnp.dtype(compute_dtype).name)
    twin = (abstract_decoder(twin_config) if isinstance(model, Decoder) else
            nnx.eval_shape(lambda: type(model)(twin_config, rngs=nnx.Rngs(0))))
    graphdef = nnx.split(twin)[0]
  params = cast_floating(params, jnp.float32)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=jax.eval_shape(tx.init, params))
  if mesh is None:
    return graphdef, TrainState(state.step, params, jax.jit(tx.init)(params))
  shardings = state_shardings(state, mesh, rules)
  params = jax.device_put(params, shardings.params)
  # Created directly in place: each device allocates only its own shard of the moments.
  opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
  step = jax.device_put(state.step, shardings.step)
  return graphdef, TrainState(step, params, opt_state)


def model_from_state(graphdef: Any, state: TrainState) -> Decoder:
  """The decoder holding the state's (float32 master) parameters."""
  return nnx.merge(graphdef, state.params)


# -- the step -------------------------------------------------------------------------------------


def _split_micro(x: jax.Array, accum: int) -> jax.Array:
  """``[B, ...]`` -> ``[A, M, ...]`` taking rows ``a, a + A, a + 2A, ...`` for micro-batch a.

  Strided rather than contiguous: with the batch split over devices in contiguous blocks,
  reshaping to ``[M, A]`` keeps ``M`` split the same way (no data moves), so every micro-batch
  still spans all devices.
  """
  b = x.shape[0]
  return jnp.swapaxes(x.reshape(b // accum, accum, *x.shape[1:]), 0, 1)


# A loss hook: ``loss_fn(model, tokens_bt, loss_mask_bt, mask_bt, normalizer, key, **extra)
# -> loss``, the micro-batch's summed target loss divided by ``normalizer``; ``key`` is this
# step's and micro-batch's PRNG key (a pure function of the seed and the step counter);
# ``extra`` are the batch's other entries (pytrees with leading dim B; none for a decoder),
# cut into the same micro-batches.
LossFn = Callable[..., jax.Array]


def _lm_loss_hook(model, tokens_bt, loss_mask_bt, mask_bt, normalizer, key):
  del key  # the plain decoder's loss is deterministic
  return lm_loss(model, tokens_bt, loss_mask_bt, mask_bt, normalizer=normalizer)[0]


def step_key(seed: int, step: jax.Array) -> jax.Array:
  """The PRNG key of optimizer step ``step``: ``fold_in(key(seed), step)``, so a resumed run
  draws exactly what an uninterrupted one would."""
  return jax.random.fold_in(jax.random.key(seed), step)


def _step_impl(state: TrainState, batch: Mapping[str, jax.Array], *, graphdef: Any,
               tx: optax.GradientTransformation, schedule: optax.Schedule, grad_accum: int,
               micro_sharding: Any, grad_shardings: Any, loss_fn: LossFn = _lm_loss_hook,
               seed: int = 0):
  tokens, loss_mask = batch["tokens"], batch["loss_mask"]
  mask = batch.get("mask")
  if mask is None:
    mask = jnp.ones(tokens.shape, bool)
  extra = {k: v for k, v in batch.items() if k not in ("tokens", "loss_mask", "mask")}
  # The whole batch's target count normalises every micro-batch's summed loss, so that the
  # accumulated gradient equals the big batch's.
  total = jnp.maximum(jnp.sum(loss_mask[:, 1:].astype(jnp.float32)), 1.0)

  # bf16 compute, fp32 masters: the graph's config names the compute dtype (read at trace
  # time, free). Cast once per step, outside the micro-batch loop, so FSDP's all-gathers move
  # compute-dtype bytes; gradients come back in the compute dtype and are summed in float32.
  compute_dtype = jnp.dtype(nnx.merge(graphdef, state.params).config.dtype)
  cparams = cast_floating(state.params, compute_dtype)

  def micro_loss(p, tok, lm, m, key, ex):
    model = nnx.merge(graphdef, p)
    return loss_fn(model, tok, lm, m, total, key, **ex)

  grad_fn = jax.value_and_grad(micro_loss)
  micro = jax.tree.map(lambda x: _split_micro(x, grad_accum), (tokens, loss_mask, mask, extra))
  if micro_sharding is not None:
    micro = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, micro_sharding), micro)
  keys = jax.random.split(step_key(seed, state.step), grad_accum)  # one per micro-batch

  def body(carry, mb):
    loss_acc, grad_acc = carry
    (tok, lm, m, ex), key = mb
    loss, g = grad_fn(cparams, tok, lm, m, key, ex)
    grad_acc = jax.tree.map(lambda a, gi: a + gi.astype(jnp.float32), grad_acc, g)
    return (loss_acc + loss, grad_acc), None

  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), state.params)
  if grad_accum == 1:
    first = jax.tree.map(lambda x: x[0], micro)
    (loss, grads), _ = body((jnp.float32(0.0), zeros), (first, keys[0]))
  else:
    (loss, grads), _ = jax.lax.scan(body, (jnp.float32(0.0), zeros), (micro, keys))
  if grad_shardings is not None:
    # Laid out like the parameters: under FSDP a reduce-scatter rather than an all-reduce.
    grads = jax.lax.with_sharding_constraint(grads, grad_shardings)

  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "tokens": jnp.sum(loss_mask[:, 1:].astype(jnp.float32)),
             "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
  return TrainState(state.step + 1, params, opt_state), metrics


def make_train_step(graphdef: Any, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    *, grad_accum: int = 1, mesh: Mesh | None = None,
                    state: TrainState | None = None,
                    rules: sharding_lib.Rules | str = "fsdp",
                    loss_fn: LossFn | None = None, seed: int = 0
                    ) -> Callable[[TrainState, Mapping[str, jax.Array]],
                                  tuple[TrainState, dict[str, jax.Array]]]:
  """The jitted ``train_step(state, batch) -> (state, metrics)``; ``state`` is donated.

  Args:
    graphdef: the decoder's static graph (from :func:`init_train_state`); its config's
      ``dtype`` is the compute dtype (the masters stay float32).
    tx, schedule: from :func:`jaxlab.optim.make_optimizer` (the schedule only feeds the ``lr``
      metric).
    grad_accum: A, micro-batches per step; the batch's B must be a multiple of it.
    mesh: shard the step over this mesh (then ``state`` is needed for its structure).
    state: a state laid out by :func:`init_train_state` with the same ``mesh`` and ``rules``.
    rules: the sharding rule table.
    loss_fn: the loss hook (:data:`LossFn`; default :func:`lm_loss` on the decoder). A model
      whose loss is random (a sampled trip count, a random initial state) reads ``key``.
    seed: with the state's step counter, the source of each step's key (:func:`step_key`).

  The batch is a dict: ``tokens`` int ``[B, T]``, ``loss_mask`` ``[B, T]`` (see
  :func:`lm_loss`), optionally ``mask`` ``[B, T]``; any other entry (a pytree whose leaves have
  leading dim ``B``, e.g. :func:`vlm_loss`'s positions and images) is cut into the same
  micro-batches and passed to ``loss_fn`` as a keyword argument. Metrics: ``loss`` (mean
  target-token cross-entropy), ``tokens`` (targets in the batch), ``grad_norm`` (before clipping), ``lr``
  (the rate this step used).
  """
  if grad_accum < 1:
    raise ValueError(f"grad_accum={grad_accum} must be >= 1")
  micro_sharding = grad_shardings = None
  jit_kwargs: dict[str, Any] = {}
  if mesh is not None:
    if state is None:
      raise ValueError("make_train_step(mesh=...) needs the laid-out state for its shardings")
    micro_sharding = NamedSharding(mesh, P(None, ("data", "fsdp")))
    shardings = state_shardings(state, mesh, rules)
    grad_shardings = shardings.params
    replicated = NamedSharding(mesh, P())
    jit_kwargs["out_shardings"] = (shardings, replicated)
  impl = functools.partial(_step_impl, graphdef=graphdef, tx=tx, schedule=schedule,
                           grad_accum=grad_accum, micro_sharding=micro_sharding,
                           grad_shardings=grad_shardings, loss_fn=loss_fn or _lm_loss_hook,
                           seed=seed)

  def check(batch):
    b = batch["tokens"].shape[0]
    if b % grad_accum:
      raise ValueError(f"batch of {b} rows is not divisible by grad_accum={grad_accum}")

  jitted = jax.jit(impl, donate_argnums=0, **jit_kwargs)

  def train_step(state, batch):
    check(batch)
    return jitted(state, batch)

  train_step.jitted = jitted  # for lowering / cost analysis (benchmarks)
  return train_step


def batch_sharding(mesh: Mesh, shape: tuple[int, ...]) -> NamedSharding:
  """A batch array's sharding: rows over ``("data", "fsdp")`` where they divide."""
  return NamedSharding(mesh, sharding_lib.fit_spec(BATCH_SPEC, shape, mesh))


def process_rows(mesh: Mesh | None, shape: tuple[int, ...]) -> np.ndarray:
  """The rows of a batch of ``shape`` (``[B, ...]``) that this process's devices hold (all
  ``B`` with one process or no mesh): the rows a process builds for :func:`shard_batch`."""
  if mesh is None:
    return np.arange(shape[0])
  return mesh_lib.local_rows(batch_sharding(mesh, shape), shape)


def shard_batch(batch: Mapping[str, Any], mesh: Mesh | None, rows: np.ndarray | None = None,
                batch_size: int | None = None) -> dict[str, Any]:
  """Places a host batch (a dict of arrays or pytrees of arrays, each with leading dim ``B``):
  rows split over ``("data", "fsdp")`` (or the default device).

  ``rows``: the batch holds only these rows (:func:`process_rows` of a batch of
  ``batch_size``) of the global batch, the ones this process's devices hold; None: the whole
  batch, equal on every process. Either way each process hands over only its own devices'
  rows (``jax.device_put`` would first all-gather to check that the processes agree).
  """
  if mesh is None:
    return jax.tree.map(jnp.asarray, dict(batch))

  def place(v):
    if not isinstance(v, jax.Array):  # a global array is placed as it is
      v = np.asarray(v)
      v = v.astype(jax.dtypes.canonicalize_dtype(v.dtype), copy=False)  # as jnp.asarray
    if rows is None or v.ndim == 0:
      return mesh_lib.put(v, batch_sharding(mesh, v.shape))
    shape = (batch_size,) + v.shape[1:]
    return mesh_lib.put_rows(v, rows, shape, batch_sharding(mesh, shape))

  return jax.tree.map(place, dict(batch))


# -- accounting -----------------------------------------------------------------------------------


def count_params(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def train_flops_per_token(config, seq_len: int) -> float:
  """Training FLOPs per token: ``6 N`` for the matmul parameters plus causal attention.

  ``N`` counts the weights every token multiplies by (attention and MLP projections and the
  output head; the embedding lookup is free). Attention adds ``QK^T`` and ``PV``: per layer
  ``2 * 2 * T * N * H`` forward FLOPs per token over T keys, halved for causality, times 3 for
  forward + backward.
  """
  c = config
  d, h = c.hidden_size, c.head_dim
  per_layer = d * h * (2 * c.num_heads + 2 * c.num_kv_heads) + 3 * d * c.intermediate_size
  n_matmul = c.num_layers * per_layer + d * c.vocab_size  # + head (tied or not, it's a matmul)
  attn_fwd = c.num_layers * 2 * 2 * seq_len * c.num_heads * h / 2
  return 6.0 * n_matmul + 3.0 * attn_fwd


def vision_flops(config, grid_thw: Any, *, train: bool = True) -> float:
  """Model FLOPs of the Qwen2.5-VL vision tower on images of ``grid_thw`` (``[num_images, 3]``:
  frames, patch rows, patch columns), for one training step (``train``) or one forward pass.

  Per image of ``N = t h w`` patches (``D`` the tower's width, ``F`` its SwiGLU width, ``P``
  the flattened patch length, ``U = M^2`` patches per merged token, ``D_out`` the LM width),
  forward:

  * patch embedding ``2 N P D``;
  * per block, q/k/v/o and the SwiGLU matmuls ``2 N (4 D^2 + 3 D F)``;
  * per block, ``QK^T`` and ``PV``: ``4 D S`` where ``S`` is the number of (query, key) pairs
    the block's attention admits: a full-attention block ``t (h w)^2`` (each frame attends
    within itself), a windowed block ``t * sum_w n_w^2`` over the TRUE windows (``n_w`` patches
    each; windows at the right and bottom edges are smaller), not the ``3C`` keys per query
    that the chunked kernel computes (model FLOPs, not hardware FLOPs);
  * the merger ``2 (N / U) (U D)^2 + 2 (N / U) (U D) D_out``.

  Training counts every matmul three times (forward, gradients of input and weights) except the
  patch embedding, twice (its input, the pixels, needs no gradient). Biases, norms, RoPE and
  activations are not counted; nor is rematerialisation's second forward.
  """
  v = config
  d, f, u = v.hidden_size, v.intermediate_size, v.merge_unit
  m, wu = v.spatial_merge_size, v.window_units
  grid = np.asarray(grid_thw, np.int64).reshape(-1, 3)
  n_full = len(v.fullatt_block_indexes)
  n_win = v.depth - n_full
  embed = matmul = pairs = 0.0
  for t, h, w in grid:
    n = float(t * h * w)
    gh, gw = h // m, w // m  # merged tokens per column / row
    # Window sides in merged tokens: whole windows, then the ragged remainder (if any).
    rows = [wu] * (gh // wu) + ([gh % wu] if gh % wu else [])
    cols = [wu] * (gw // wu) + ([gw % wu] if gw % wu else [])
    window_pairs = sum((r * c * u) ** 2 for r in rows for c in cols)
    embed += 2 * n * v.patch_dim * d
    matmul += v.depth * 2 * n * (4 * d * d + 3 * d * f)
    matmul += 2 * (n / u) * (u * d) ** 2 + 2 * (n / u) * (u * d) * v.out_hidden_size
    pairs += float(t) * (n_full * float(h * w) ** 2 + n_win * window_pairs)
  attn = 4.0 * d * pairs
  if not train:
    return embed + matmul + attn
  return 2 * embed + 3 * (matmul + attn)


def vlm_train_flops(config, text_len: int, grid_thw: Any) -> tuple[float, float]:
  """``(text, vision)`` training FLOPs of ONE row of a Qwen2.5-VL batch: ``text_len`` tokens
  (image placeholders included) through the language model, :func:`train_flops_per_token` of
  ``config.text`` per token, and the row's images (``grid_thw``) through the vision tower,
  :func:`vision_flops`."""
  return (float(text_len) * train_flops_per_token(config.text, text_len),
          vision_flops(config.vision, grid_thw, train=True))
