"""Non-stationary supervised learning: the plasticity proxy of spec rl.md §2.1, §1.5 and §7.1.

A classifier (MLP trunk on flattened images, then ``Linear(D -> 10)``) is trained with
minibatch SGD while the labels are re-permuted every ``shift_every_epochs`` epochs: during phase
k every label y is replaced by ``π_k(y)`` for a random permutation π_k of the classes (π_0 is the
identity; the same π_k for every arm and seed, so arms face the same task sequence). A network
that keeps its plasticity re-learns each mapping quickly; one that loses it (dormant units,
collapsed rank, vanishing gradients; spec §2.1) recovers more slowly after each shift.

Arms that share shapes (SIGReg weights, learning rates) are trained side by side in one
compiled program: the per-seed state holds one copy of the parameters per arm, and every step
is ``jax.vmap``-ed over arms; the launcher (``jaxlab.core.loop``) vmaps over seeds on top. All
arms of a seed start from the same initial parameters and see the same minibatches, so their
differences are the arms' own (common random numbers).

Metrics are written once per arm with the arm in the name, ``"<metric>@<arm>"`` (e.g.
``"test/accuracy@sigreg=0.2,lr=0.001"``); ``launch.analyze`` splits such keys into one arm each.
Logged per arm: cross-entropy, SIGReg, train and test accuracy under the current labels, the
dormant ratio of the trunk's activated layers, effective rank / srank / norm of the
representation, and per-layer weight-gradient norms (spec §1.7, §2.8, §5).

SIGReg (spec §1.4 "CIFAR") acts on the representation the classifier reads, the trunk output
*after* its activation (``aux.sigreg.after_activation``), on each minibatch, with fresh random
directions every step.

Neuron resets (spec rl.md §4.3, §7.1 item 3c) are arms too: ``arms.reset_methods`` trains, say,
``("none", "redo", "regrama")`` side by side. Every ``reset.every`` SGD steps each resetting
arm probes its loss on the current minibatch once and re-initialises the trunk neurons that are
dormant (ReDo: mean |h| normalised by the layer mean <= ``reset.redo_tau``) or gradient-inactive
(ReGraMa: mean |dL/dh| normalised <= ``reset.regrama_tau``), with
:func:`jaxlab.representations.reset_neurons` (fresh incoming weights, zeroed outgoing weights and
Adam moments); the classifier's output layer is never reset. With resets on, health also logs
the GraMa ratio (``health/grama_ratio``, τ ``health.grama_tau``) on the probe images, and
``reset/neurons`` counts the neurons reset per chunk.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx, struct

from jaxlab import nets
from jaxlab import optim
from jaxlab import representations as rep
from jaxlab.core import batching
from jaxlab.core import loop
from jaxlab.core import mesh as mesh_lib
from jaxlab.core.chunked import ChunkedRun, train_whole
from jaxlab.core.config import require, require_choice, snapshot
from jaxlab.envs import _common as env_common
from jaxlab.envs.base import EnvSpec
from jaxlab.nets.mlp import activation_fn
from jaxlab.representations import sigreg as sigreg_lib
from jaxlab.rl import auxiliary
from jaxlab.rl import networks
from jaxlab.supervised import data as data_lib


def default_config() -> ml_collections.ConfigDict:
  """Every key a non-stationary supervised experiment may set (spec §2.5 "CIFAR", Table 9)."""
  # log_every: SGD steps per compiled chunk (set it to the steps per epoch); eval: test
  # accuracy every N steps.
  c = loop.base_config("ns_supervised", log_every=10, eval_every=10, checkpoint_every=0,
                       checkpoint_keep=2)
  c.data = ml_collections.ConfigDict(dict(
      name="digits",   # "digits" (offline, sklearn) or "cifar10" (python-version batches in dir)
      dir="",          # CIFAR-10 directory
      train_size=1280,  # training subset (0: all); the SIGReg CIFAR run uses ~10k (spec §1.5)
      test_size=0,     # test subset (0: all)
      split_seed=0))
  c.epochs = 60
  c.batch_size = 128
  c.shift_every_epochs = 10  # E: labels re-permuted every E epochs; 0 = stationary
  c.label_seed = 0           # seed of the label permutations (shared by all arms and seeds)
  c.learning_rate = 1e-3
  c.lr_schedule = "constant"
  c.max_grad_norm = 0.0
  c.optimizer = optim.default_config("adam")
  c.network = ml_collections.ConfigDict(dict(
      kind="plain", activation="relu", layernorm=False, width=256, depth=4,
      **networks.network_defaults()))
  c.aux = auxiliary.default_config()
  c.aux.sigreg.after_activation = True  # spec §1.4 CIFAR: Z is the trunk output after ReLU
  c.arms = ml_collections.ConfigDict(dict(
      sigreg_weights=(),   # SIGReg weights to train side by side; () = (aux.sigreg.weight,)
      learning_rates=(),   # learning rates side by side; () = (learning_rate,)
      reset_methods=()))   # neuron-reset arms side by side, of RESET_METHODS; () = no resets
  # Resets (spec §4.3): every N SGD steps; thresholds of ReDo (0.02) and ReGraMa (0.01);
  # outgoing weights of reset neurons: "auto" zeroes them except where a neuron writes a
  # residual stream (jaxlab.representations.mlp_layers).
  c.reset = ml_collections.ConfigDict(dict(every=50, redo_tau=0.02, regrama_tau=0.01,
                                           outgoing="auto"))
  c.health = ml_collections.ConfigDict(dict(probe_size=256, dormant_tau=0.0, grama_tau=0.01))
  return c


def check_config(c: ml_collections.ConfigDict) -> None:
  """Consistency rules; each failure names its key."""
  for key in ("epochs", "batch_size"):
    require(c[key] >= 1, f"'config.{key}' must be >= 1, got {c[key]}")
  require(c.shift_every_epochs >= 0, f"'config.shift_every_epochs' must be >= 0 (0: stationary), "
          f"got {c.shift_every_epochs}")
  require_choice(c, "data.name", data_lib.DATASETS)
  require(c.data.name != "cifar10" or c.data.dir,
          "'config.data.dir' must name the CIFAR-10 directory (data_batch_1..5, test_batch)")
  require(c.data.train_size >= 0 and c.data.test_size >= 0,
          "'config.data.train_size' and 'config.data.test_size' must be >= 0")
  optim.check_config(c)
  networks.check_config(c, ("width", "depth"))
  require(c.network.encoder == "none", f"'config.network.encoder'={c.network.encoder!r}: this "
          "benchmark feeds flattened images to the trunk; only 'none' is supported")
  auxiliary.check_config(c)
  for w in c.arms.sigreg_weights:
    require(w >= 0, f"'config.arms.sigreg_weights' must be >= 0, got {w}")
    require(w == 0 or c.network.kind != "none",
            "'config.arms.sigreg_weights' has a weight > 0, but 'config.network.kind'='none' "
            "builds no trunk")
  for lr in c.arms.learning_rates:
    require(lr > 0, f"'config.arms.learning_rates' must be > 0, got {lr}")
  for m in c.arms.reset_methods:
    require(m in RESET_METHODS, f"'config.arms.reset_methods' has {m!r}; expected each of "
            f"{list(RESET_METHODS)}")
  if any(m != "none" for m in c.arms.reset_methods):
    require(c.reset.every >= 1, f"'config.reset.every' must be >= 1, got {c.reset.every}")
    require_choice(c, "reset.outgoing", rep.OUTGOING_MODES)
    require(c.network.kind in ("plain", "residual", "multiskip"),
            f"'config.network.kind'={c.network.kind!r}: resets need an MLP trunk")
    require(c.network.activation in ("relu", "leaky_relu", "tanh"),
            f"'config.network.activation'={c.network.activation!r}: ReDo/ReGraMa resets need "
            "relu, leaky_relu or tanh")
    require(c.optimizer.name in ("adam", "adamw", "radam"),
            f"'config.optimizer.name'={c.optimizer.name!r}: resets zero Adam-style moments; use "
            "adam, adamw or radam")


RESET_METHODS = ("none", "redo", "regrama")


def arms(c: ml_collections.ConfigDict) -> list[tuple[float, float, str | None]]:
  """(sigreg weight, learning rate, reset method or None) of every arm, in metric order."""
  weights = tuple(c.arms.sigreg_weights) or (c.aux.sigreg.weight,)
  lrs = tuple(c.arms.learning_rates) or (c.learning_rate,)
  resets = tuple(c.arms.reset_methods) or (None,)
  return [(float(w), float(lr), m) for w, lr, m in itertools.product(weights, lrs, resets)]


def arm_label(weight: float, lr: float, reset: str | None = None) -> str:
  """The arm's name in metric keys, e.g. "sigreg=0.2,lr=0.001" (",reset=redo" appended for
  reset arms)."""
  return f"sigreg={weight:g},lr={lr:g}" + ("" if reset is None else f",reset={reset}")


class Classifier(nnx.Module):
  """Flattened image -> [trunk MLP] -> ``Linear(D -> num_classes)`` (through the activation)."""

  def __init__(self, image_shape, num_classes: int, cfg: ml_collections.ConfigDict, *,
               rngs: nnx.Rngs):
    # build_torso reads only the observation shape and a name from the spec.
    spec = EnvSpec("supervised", tuple(image_shape), True, num_classes, 1)
    self.obs_ndim = len(image_shape)
    self.encoder, self.trunk, size = networks.build_torso(spec, cfg, width=cfg.width,
                                                          depth=cfg.depth, rngs=rngs)
    self.head = nets.CategoricalHead(size, num_classes,
                                     input_activation=networks.head_activation(cfg),
                                     kernel_gain=1.0, rngs=rngs)

  def __call__(self, x: jax.Array, perturbations=None):
    """x: [B, *image_shape] -> (logits [B, K], features incl. "representation" [B, D]).
    ``perturbations``: ``{trunk layer name: array}`` for probes (``networks.represent``)."""
    z, features = networks.represent(self, x, perturbations)
    return self.head(z), features


@struct.dataclass
class TrainState:
  """One seed's state: parameters and optimizer state with a leading [arms] axis."""
  params: Any
  opt_state: Any
  key: jax.Array
  update: jax.Array  # () int32, SGD steps done


class NonStationarySupervised:
  """The benchmark for one seed (all arms inside). Same contract as the RL trainers."""

  def __init__(self, config: ml_collections.ConfigDict, dataset: data_lib.Dataset):
    self.config = config
    n = len(dataset.y_train)
    require(n >= config.batch_size, f"'config.batch_size'={config.batch_size} exceeds the "
            f"{n} training images of {dataset.name}")
    self.steps_per_epoch = n // config.batch_size  # the last partial batch is dropped
    total = config.epochs * self.steps_per_epoch
    self.num_updates = -(-total // config.log_every) * config.log_every
    self.steps_per_update = config.batch_size
    self.unit_name = "samples"  # on the progress bar
    self.num_classes = dataset.num_classes
    self.x_train, self.y_train = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    self.x_test, self.y_test = jnp.asarray(dataset.x_test), jnp.asarray(dataset.y_test)
    self.image_shape = dataset.x_train.shape[1:]
    self.arms = arms(config)
    self.labels = [arm_label(*arm) for arm in self.arms]
    self.arm_weights = jnp.asarray([w for w, _, _ in self.arms], jnp.float32)
    self.arm_lrs = jnp.asarray([lr for _, lr, _ in self.arms], jnp.float32)
    self.sigreg_on = any(w > 0 for w, _, _ in self.arms)
    # Reset arms: method index per arm (0 none, 1 ReDo, 2 ReGraMa; RESET_METHODS order).
    self.resets_on = any(m not in (None, "none") for _, _, m in self.arms)
    self.arm_resets = jnp.asarray([RESET_METHODS.index(m or "none") for _, _, m in self.arms],
                                  jnp.int32)
    model = self._model(nnx.Rngs(0))
    self._def, _ = nnx.split(model)
    self.layers = (rep.trunk_layers(model.trunk, ("trunk",), ("head",), model.head,
                                    config.reset.outgoing)
                   if isinstance(model.trunk, nets.MLP) else ())
    # The optimizer is built at lr 1 and each arm scales its updates by its own lr: exact for
    # these optimizers, whose last transformation multiplies by the (scheduled) lr.
    self.optimizer, self.lr_shape = optim.from_config(_with_lr(config, 1.0), total)
    sig = config.aux.sigreg
    self._sigreg_activation = (activation_fn(networks.head_activation(config.network))
                               if sig.after_activation and networks.head_activation(
                                   config.network) else None)

  def _model(self, rngs):
    return Classifier(self.image_shape, self.num_classes, self.config.network, rngs=rngs)

  # --- labels and batches -------------------------------------------------------------------

  def label_map(self, update: jax.Array) -> jax.Array:
    """[K] the permutation of the classes in force at SGD step ``update`` (identity first)."""
    e = self.config.shift_every_epochs
    if e == 0:
      return jnp.arange(self.num_classes)
    phase = (update // self.steps_per_epoch) // e
    perm = jax.random.permutation(
        jax.random.fold_in(jax.random.key(self.config.label_seed), phase), self.num_classes)
    return jnp.where(phase == 0, jnp.arange(self.num_classes), perm)

  def _batch(self, key, update):
    epoch, pos = update // self.steps_per_epoch, update % self.steps_per_epoch
    order = jax.random.permutation(jax.random.fold_in(key, epoch), self.y_train.shape[0])
    idx = jax.lax.dynamic_slice_in_dim(order, pos * self.config.batch_size,
                                       self.config.batch_size)
    return self.x_train[idx], self.label_map(update)[self.y_train[idx]]

  # --- init and one step --------------------------------------------------------------------

  def init(self, key: jax.Array) -> TrainState:
    k_net, key = jax.random.split(key)
    _, params = nnx.split(self._model(nnx.Rngs(k_net)))
    a = len(self.arms)
    params = jax.tree.map(lambda x: jnp.broadcast_to(x, (a,) + x.shape), params)
    opt_state = jax.vmap(self.optimizer.init)(params)
    return TrainState(params=params, opt_state=opt_state, key=key,
                      update=jnp.zeros((), jnp.int32))

  def _loss(self, params, x, y, weight, key):
    logits, features = nnx.merge(self._def, params)(x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    metrics = {"loss/ce": ce, "train/accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}
    loss = ce
    if self.sigreg_on:
      s = self.config.aux.sigreg
      z = features["representation"]
      if self._sigreg_activation is not None:  # the trunk output ends without activation
        z = self._sigreg_activation(z)
      out = sigreg_lib.sigreg_loss(z, key, form=s.form, num_slices=s.num_slices,
                                   num_t=s.num_t or None, t_max=s.t_max or None)
      loss = loss + weight * out.loss
      metrics["loss/sigreg"] = out.loss
    return loss, metrics

  def _arm_step(self, params, opt_state, weight, lr, x, y, key):
    (loss, metrics), grads = jax.value_and_grad(self._loss, has_aux=True)(params, x, y, weight,
                                                                          key)
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, jax.tree.map(lambda u: lr * u, updates))
    metrics["loss/total"] = loss
    metrics.update(rep.kernel_grad_norms(grads, prefix="health/grad_norm/"))
    return params, opt_state, metrics

  def step(self, state: TrainState):
    """One SGD step of every arm on the same minibatch, then any resets that are due. Returns
    (state, metrics [arms])."""
    x, y = self._batch(state.key, state.update)
    k_sig = jax.random.fold_in(jax.random.fold_in(state.key, 0x516), state.update)
    params, opt_state, metrics = jax.vmap(self._arm_step, in_axes=(0, 0, 0, 0, None, None, None))(
        state.params, state.opt_state, self.arm_weights, self.arm_lrs, x, y, k_sig)
    if self.resets_on:
      k_reset = jax.random.fold_in(jax.random.fold_in(state.key, 0x7E5), state.update)
      reset_arms = jax.vmap(batching.sequential(self._reset), in_axes=(0, 0, 0, None, None, None))

      def _reset(operand):
        params, opt_state, x, y, key, _ = operand
        params, opt_state, counts = reset_arms(params, opt_state, self.arm_resets, x, y, key)
        return params, opt_state, x, y, key, counts

      zeros = {"reset/neurons": jnp.zeros((len(self.arms),), jnp.float32)}
      # Seeds share the step counter: the reset runs on due steps only, also under vmap.
      due = (state.update + 1) % self.config.reset.every == 0
      params, opt_state, _, _, _, counts = env_common.maybe_apply(
          due, _reset, (params, opt_state, x, y, k_reset, zeros))
      metrics.update(counts)
    return state.replace(params=params, opt_state=opt_state, update=state.update + 1), metrics

  def _probe(self, params, x, y):
    """One forward/backward pass of the cross-entropy on (x, y): (Probe, grads)."""

    def loss_fn(params, perturbations):
      logits, features = nnx.merge(self._def, params)(x, perturbations)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      # Only the trunk's layers, under their MLP names (the names the reset layers use).
      return ce, {k[len("trunk/"):]: v for k, v in features.items() if k.startswith("trunk/")}

    return rep.probe_and_grads(loss_fn, params, self.layers)

  def _reset(self, params, opt_state, method, x, y, key):
    """One arm's reset (``method``: index into RESET_METHODS; 0 resets nothing): masks from one
    probe on the minibatch, then ``rep.reset_neurons``. Returns (params, opt_state, counts)."""
    r = self.config.reset
    probe, _ = self._probe(params, x, y)
    redo = rep.redo_masks(probe.features, r.redo_tau, layers=self.layers)
    grama = rep.regrama_masks(probe.feature_grads, r.regrama_tau)
    masks = {k: jnp.where(method == 1, redo[k], jnp.where(method == 2, grama[k], False))
             for k in redo}
    params, opt_state = rep.reset_neurons(params, opt_state, masks, key, self.layers)
    count = sum(jnp.sum(m) for m in masks.values()).astype(jnp.float32)
    return params, opt_state, {"reset/neurons": count}

  # --- logging ------------------------------------------------------------------------------

  def _per_arm(self, metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """{name: [arms]} -> {"name@arm": scalar}."""
    return {f"{k}@{label}": v[i] for k, v in metrics.items() for i, label in
            enumerate(self.labels)}

  def health(self, params, update: jax.Array) -> dict[str, jax.Array]:
    """Per-arm diagnostics on the first ``health.probe_size`` training images (spec §5), after
    SGD step ``update``."""
    x = self.x_train[:self.config.health.probe_size]
    tau = self.config.health.dormant_tau

    def one(params):
      _, features = nnx.merge(self._def, params)(x)
      z = features["representation"]
      activated = [k for k in features if k.startswith("trunk/hidden.") or k.endswith(".fc0")]
      out = {"health/effective_rank": rep.effective_rank(z),
             "health/srank": rep.srank(z).astype(jnp.float32),
             "health/feature_norm": rep.feature_norm(z)}
      if activated:
        flags = [rep.dormant_scores(features[k]) <= tau for k in activated]
        out["health/dormant_ratio"] = (sum(f.sum() for f in flags)
                                       / sum(f.size for f in flags)).astype(jnp.float32)
      if self.resets_on:  # GraMa (spec §4.2) under the labels in force after step ``update``
        y = self.label_map(update)[self.y_train[:x.shape[0]]]
        probe, _ = self._probe(params, x, y)
        out.update(rep.network_health("trunk", self.layers, feature_grads=probe.feature_grads,
                                      grama_tau=self.config.health.grama_tau, per_layer=False))
      return out

    return jax.vmap(one)(params)

  def chunk(self, state: TrainState):
    """``log_every`` steps in one scan; per-arm metrics averaged over them, plus health."""
    state, metrics = jax.lax.scan(lambda s, _: self.step(s), state, None,
                                  length=self.config.log_every)
    # [steps, arms] -> [arms]: means over the chunk, except reset counts (summed).
    metrics = {k: jnp.sum(m, axis=0) if k.startswith("reset/") else jnp.mean(m, axis=0)
               for k, m in metrics.items()}
    metrics.update(self.health(state.params, state.update - 1))
    out = self._per_arm(metrics)
    last = state.update - 1
    out["epoch"] = (last // self.steps_per_epoch).astype(jnp.float32)
    e = self.config.shift_every_epochs
    phase = (last // self.steps_per_epoch) // e if e else jnp.zeros_like(last)
    out["phase"] = phase.astype(jnp.float32)
    out["lr_factor"] = self.lr_shape(last)
    return state, out

  def evaluate(self, state: TrainState, key: jax.Array):
    """Test and full-train accuracy of every arm under the labels in force now."""
    del key
    mapping = self.label_map(jnp.maximum(state.update - 1, 0))

    def accuracy(params, x, y):
      logits, _ = nnx.merge(self._def, params)(x)
      return jnp.mean(jnp.argmax(logits, -1) == mapping[y])

    metrics = {
        "test/accuracy": jax.vmap(accuracy, in_axes=(0, None, None))(state.params, self.x_test,
                                                                    self.y_test),
        "eval/train_accuracy": jax.vmap(accuracy, in_axes=(0, None, None))(
            state.params, self.x_train, self.y_train)}
    return self._per_arm(metrics)

  def shard(self, state: TrainState, mesh) -> TrainState:
    """Everything replicated: the arms and seeds are the parallel axes, the batch is small."""
    return mesh_lib.place_state(state, mesh, {})

  def train(self, key: jax.Array):
    """The whole run as one pure function (PureJaxRL's shape): ``(state, metrics [chunks])``."""
    return train_whole(self, key)

  __call__ = train


def _with_lr(c: ml_collections.ConfigDict, lr: float) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(c.to_dict())
  c.learning_rate = lr
  return c


def load_data(config: ml_collections.ConfigDict) -> data_lib.Dataset:
  """The dataset of ``config.data``."""
  d = config.data
  return data_lib.load(d.name, directory=d.dir, train_size=d.train_size, test_size=d.test_size,
                       seed=d.split_seed)


def make_train(config: ml_collections.ConfigDict,
               dataset: data_lib.Dataset | None = None) -> NonStationarySupervised:
  """The trainer; ``dataset`` defaults to ``load_data(config)``. The config is validated here
  (the launcher validates it before building instead); the trainer keeps a copy of it."""
  loop.validate(TRAINER, config)
  return NonStationarySupervised(snapshot(config),
                                 load_data(config) if dataset is None else dataset)


def build(config: ml_collections.ConfigDict, workdir: str | None, mesh) -> ChunkedRun:
  """The loop's run: every arm and seed in one program; nothing is split over devices."""
  del workdir
  return ChunkedRun(NonStationarySupervised(snapshot(config), load_data(config)), config, mesh,
                    progress_keys={}, plot_keys=(), target_key="test/accuracy")


TRAINER = loop.Trainer(name="ns_supervised", default_config=default_config,
                       check_config=check_config, build=build, vmaps_seeds=True)


__all__ = ["Classifier", "NonStationarySupervised", "TRAINER", "TrainState", "arm_label", "arms",
           "check_config", "default_config", "load_data", "make_train"]
