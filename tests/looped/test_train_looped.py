"""Training a looped model with the SFT trainer (``config.model.family = "looped"``).

Tiny runs through :func:`jaxlab.core.loop.run` on the looped tasks (short pointer chases and
modular chains written by :mod:`jaxlab.looped.tasks`): the loss falls, an interrupted run
resumes to exactly the uninterrupted one (the sampled trip count and the random initial state
are drawn from (seed, step)), the exported ``hf_model`` reloads through the model registry with
the trained model's logits, and bad ``config.model.looped`` keys fail in one line naming them.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file

from jaxlab import models
from jaxlab.core import config as config_lib
from jaxlab.core import loop
from jaxlab.core.errors import ConfigError
from jaxlab.core.mesh import make_mesh
from jaxlab.llm import sft, tasks
from jaxlab.llm import train as train_lib
from jaxlab.looped import tasks as looped_tasks
from jaxlab.models.decoder import sharding as decoder_sharding
from jaxlab.models.looped import modeling as looped
from jaxlab.models.looped import params as looped_params
from jaxlab.models.looped import sharding as looped_sharding


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  d = tmp_path_factory.mktemp("looped_data")
  held = (looped_tasks.generate("pointer_chase", 8, 100, symbols=4, max_hops=3)
          + looped_tasks.generate("modular_chain", 8, 100, max_len=3))
  train = (looped_tasks.generate("pointer_chase", 96, 1, [r["question"] for r in held],
                                 symbols=4, max_hops=3)
           + looped_tasks.generate("modular_chain", 96, 1, [r["question"] for r in held],
                                   max_len=3))
  out = {"train": str(d / "train.jsonl"), "eval": str(d / "eval.jsonl")}
  tasks.write_jsonl(train, out["train"])
  tasks.write_jsonl(held, out["eval"])
  return out


def _config(data, **overrides):
  c = sft.default_config()
  c.data.train_files = (data["train"],)
  c.data.eval_files = (data["eval"],)
  c.data.completion_format = "{answer}"
  c.model.family = "looped"
  c.model.update(dict(hidden_size=32, intermediate_size=64, num_heads=2, num_kv_heads=2,
                      head_dim=16))
  c.model.looped.update(dict(n_prelude=1, n_core=1, n_coda=1, num_iterations=3,
                             backprop_depth=2))
  c.dtype = "float32"
  c.steps, c.batch_size, c.log_every = 12, 16, 4
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 2
  c.eval.update(dict(every=0, num_examples=16, batch_size=16, max_new_tokens=2))
  c.checkpoint.every = 4
  config_lib.set_dotted(c, overrides)
  loop.validate(sft.TRAINER, c)
  return c


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in f]


@pytest.mark.optimized  # a learning threshold (tests/conftest.py)
def test_sampled_recurrence_run_learns_and_resumes_exactly(data, tmp_path):
  """Huginn's sampled trip count + truncated backprop + a random s_0 per step: the loss falls
  over 12 steps, and stopping at step 8 (checkpoint 8) then resuming gives the same metrics and
  the same exported parameters as the uninterrupted run."""
  c = _config(data, **{"model.looped.train_recurrence": "lognormal_poisson"})
  full, part = str(tmp_path / "full"), str(tmp_path / "part")
  sft.run(c, full, make_mesh(), progress=False)
  records = _records(full)
  assert [r["step"] for r in records] == [4, 8, 12]
  assert records[-1]["train/loss"] < records[0]["train/loss"] - 0.1, records
  assert {"eval/accuracy/pointer_chase", "eval/accuracy/modular_chain"} <= set(records[-1])
  assert sft.run(c, part, make_mesh(), progress=False, stop_at=8)["stopped_at"] == 8
  sft.run(c, part, make_mesh(), progress=False)
  assert _records(part) == records
  a = load_file(os.path.join(part, "hf_model", "model.safetensors"))
  b = load_file(os.path.join(full, "hf_model", "model.safetensors"))
  assert a.keys() == b.keys() and "adapter_2dd" in a
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_fixed_recurrence_export_reloads_with_the_trained_logits(data, tmp_path):
  """A fixed trip count with Ouro's exit-gate loss: the run trains, and its ``hf_model`` (our
  native format, as the layout is not HrmText's) loads through the registry, as
  ``launch.generate`` and ``launch.analyze --kind=looped`` load it, with logits equal to those
  of the checkpointed state (at a trip count other than the trained one)."""
  c = _config(data, steps=8, **{"model.looped.exit_gate": True})
  workdir = str(tmp_path / "run")
  summary = sft.run(c, workdir, make_mesh(), progress=False)
  records = _records(workdir)
  assert records[-1]["train/loss"] < records[0]["train/loss"], records
  with open(os.path.join(summary["hf_model"], "config.json")) as f:
    assert json.load(f)["architectures"] == ["JaxlabLoopedForCausalLM"]
  assert models.family_for(summary["hf_model"]) == "looped"
  loaded, tok = models.from_pretrained(summary["hf_model"])
  run, state, step = loop.restore_run(sft.TRAINER, c, workdir, make_mesh())
  assert step == 8
  trained = run.model(state)
  assert loaded.config == trained.config.replace(architecture=loaded.config.architecture)
  ids = tok([tasks.load_jsonl(data["eval"])[0]["question"]])["input_ids"]
  tokens = jnp.asarray(ids, jnp.int32)
  np.testing.assert_array_equal(np.asarray(looped.forward(loaded, tokens, num_iterations=5)),
                                np.asarray(looped.forward(trained, tokens, num_iterations=5)))


def _loss_at_step(c, tokens, loss_mask):
  """The looped loss hook of a fresh model of config ``c``, as a jitted function of the step
  (its key derived as the train step derives it), and the model."""
  model = looped.init_looped(sft.looped_config(c, vocab_size=16), seed=0)
  loss_fn = train_lib.looped_loss(c.model.looped.exit_gate_beta)
  mask = jnp.ones(tokens.shape, bool)

  @jax.jit
  def loss(step):
    key = jax.random.split(train_lib.step_key(c.seed, step), 1)[0]
    return loss_fn(model, tokens, loss_mask, mask, jnp.sum(loss_mask[:, 1:]), key)

  return model, lambda step: float(loss(jnp.int32(step)))


def test_loss_hook_is_the_masked_cross_entropy_and_samples_the_trip_count(data):
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 16, (2, 6)), jnp.int32)
  loss_mask = jnp.asarray([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 0]], jnp.int32)
  # Fixed trip count, zero initial state: exactly the masked next-token CE of the forward.
  model, loss = _loss_at_step(_config(data, **{"model.looped.state_init": "zeros"}), tokens,
                              loss_mask)
  logp = jax.nn.log_softmax(looped.forward(model, tokens), -1)
  nll = -np.take_along_axis(np.asarray(logp[:, :-1]), np.asarray(tokens[:, 1:, None]), -1)[..., 0]
  w = np.asarray(loss_mask[:, 1:], np.float32)
  assert loss(0) == pytest.approx(float((nll * w).sum() / w.sum()), rel=1e-5)
  assert loss(7) == loss(0)  # nothing random in this setting
  # Sampled trip count: a pure function of the step's key, and not constant over steps.
  _, loss = _loss_at_step(_config(data, **{"model.looped.train_recurrence": "lognormal_poisson",
                                           "model.looped.state_init": "zeros"}),
                          tokens, loss_mask)
  losses = [loss(s) for s in range(6)]
  assert loss(3) == losses[3]
  assert len(set(losses)) > 1


def test_fsdp_rules_cover_the_looped_parameters():
  """The looped table places the adapter and the attention gate (which the decoder's table
  would replicate) and keeps the decoder's rules for the shared block parameters."""
  mesh = make_mesh()
  rules = looped_sharding.RULES["fsdp"]
  assert set(looped_sharding.RULES) == set(decoder_sharding.RULES)
  assert decoder_sharding.spec_for("adapter_2dd", (64, 32), rules, mesh) == P(None, "fsdp")
  assert decoder_sharding.spec_for("core/0/attn/gate_dnh", (32, 2, 16), rules, mesh) == P(
      "fsdp", None, None)
  assert decoder_sharding.spec_for("core/0/attn/q_dnh", (32, 2, 16), rules, mesh) == P(
      "fsdp", None, None)
  assert all(a is None for a in decoder_sharding.spec_for("exit_gate_d", (32,), rules, mesh))


def test_train_state_of_a_looped_model_computes_in_bf16_and_follows_the_rules():
  """``init_train_state`` builds the compute-dtype twin of a looped model (not a decoder's) and
  lays its float32 masters and Adam moments out by the looped table."""
  import optax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  mesh = make_mesh()
  rules = looped_sharding.RULES["fsdp"]
  model = looped.init_looped(sft.looped_config(sft.default_config(), vocab_size=16))
  graphdef, state = train_lib.init_train_state(model, optax.adamw(1e-3), mesh, rules,
                                               compute_dtype="bfloat16")
  twin = nnx.merge(graphdef, state.params)
  assert isinstance(twin, looped.LoopedLM) and twin.config.dtype == "bfloat16"
  assert state.params["adapter_2dd"][...].dtype == jnp.float32
  assert state.params["adapter_2dd"][...].sharding.spec == P(None, "fsdp")
  mu = jax.tree.leaves(state.opt_state[0].mu["adapter_2dd"])[0]
  assert mu.sharding.spec == P(None, "fsdp")


def test_native_checkpoint_names_a_missing_tensor(tmp_path):
  cfg = looped.init_looped(sft.looped_config(sft.default_config(), vocab_size=16)).config
  model = looped.init_looped(cfg)
  looped_params.save_pretrained(model, str(tmp_path), fmt="native")
  again = looped_params.load_params(str(tmp_path), looped_params.load_config(str(tmp_path)))
  for (_, a), (_, b) in zip(looped_params.iter_native_tensors(model),
                            looped_params.iter_native_tensors(again)):
    np.testing.assert_array_equal(a, b)
  weights = load_file(str(tmp_path / "model.safetensors"))
  del weights["core.0.mlp.down_fd"]
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  save_file(weights, str(tmp_path / "model.safetensors"))
  with pytest.raises(Exception, match="missing tensor 'core.0.mlp.down_fd'"):
    looped_params.load_params(str(tmp_path), looped_params.load_config(str(tmp_path)))


def _grid():
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "configs",
                      "looped", "grid.py")
  return config_lib.load_module(path)


def test_grid_arms_are_valid_configs_of_the_design():
  grid = _grid()
  for arm in grid.ARMS:
    c = grid.get_config(arm)
    loop.validate(sft.TRAINER, c)  # files exist, every key in range
  base = grid.get_config("sandwich_concat")
  cfg = sft.looped_config(base, vocab_size=64)
  assert (cfg.n_prelude, cfg.n_core, cfg.n_coda, cfg.num_iterations, cfg.backprop_depth) == (
      1, 2, 1, 4, 2)
  assert (cfg.injection, cfg.block_norm, cfg.train_recurrence) == (
      "concat_adapter", "sandwich_huginn", "lognormal_poisson")
  assert cfg.state_init_std == pytest.approx((2 / (5 * 64)) ** 0.5)
  ablation = sft.looped_config(grid.get_config("prenorm_none"), vocab_size=64)
  assert (ablation.injection, ablation.block_norm) == ("none", "pre")
  ff = grid.get_config("feedforward")
  # The baseline's depth is the looped arm's effective depth p + R r-bar + c.
  assert ff.model.family == "decoder" and ff.model.num_layers == cfg.effective_depth == 10
  with pytest.raises(ValueError, match="unknown arm 'sandwich'"):
    grid.get_config("sandwich")
  # The one-GPU sizes of spec §1.7: a miniature Huginn (p 2, R 4, c 2, r-bar 8, k-bar 4).
  gpu = grid.get_config("gpu_sandwich_concat")
  loop.validate(sft.TRAINER, gpu)
  mini = sft.looped_config(gpu, vocab_size=64)
  assert (mini.hidden_size, mini.num_heads, mini.n_prelude, mini.n_core, mini.n_coda,
          mini.num_iterations, mini.backprop_depth) == (512, 8, 2, 4, 2, 8, 4)
  assert (gpu.dtype, gpu.batch_size) == ("bfloat16", 64)
  gpu_ff = grid.get_config("gpu256_feedforward")
  assert gpu_ff.model.hidden_size == 256 and gpu_ff.model.num_layers == 2 + 4 * 8 + 2
  assert sft.looped_config(grid.get_config("gpu256_core1"), vocab_size=64).n_core == 1


@pytest.mark.parametrize("overrides, message", [
    ({"model.looped.num_iterations": 0}, "'config.model.looped.num_iterations' (the trip count "
     "T) must be >= 1, got 0"),
    ({"model.looped.injection": "multiply"}, "'config.model.looped.injection'='multiply' is "
     "not one of"),
    ({"model.looped.block_norm": "layernorm"}, "'config.model.looped.block_norm'='layernorm' "
     "is not one of"),
    ({"model.looped.iter_norm": "batch"}, "'config.model.looped.iter_norm'='batch'"),
    ({"model.family": "rnn"}, "'config.model.family'='rnn' is not one of"),
    ({"model.looped.train_recurrence": "lognormal_poisson", "model.looped.backprop_depth": 0},
     "'config.model.looped.backprop_depth' must be >= 1 with"),
    ({"model.looped.train_recurrence": "lognormal_poisson", "model.looped.exit_gate": True},
     "'config.model.looped.exit_gate' needs train_recurrence='fixed'"),
])
def test_bad_looped_keys_fail_in_one_line_naming_them(data, overrides, message):
  with pytest.raises(ConfigError) as info:
    _config(data, **overrides)
  text = str(info.value)
  assert message in text and "\n" not in text
