"""Config-built actor/critic networks: encoders, presets, trunk output, SIGReg in PPO."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlab.core import loop
from jaxlab.core.errors import ConfigError
from jaxlab.envs.base import EnvSpec
from jaxlab.envs.from_config import make_from_config
from jaxlab.rl import networks, ppo

CARTPOLE = EnvSpec("gymnax/CartPole-v1", (4,), True, 2, 500)
MINATAR = EnvSpec("gymnax/Breakout-MinAtar", (10, 10, 4), True, 3, 1000)


def _ppo_config(**network):
  c = ppo.default_config()
  c.env.name = "gymnax/CartPole-v1"
  c.env.episode_length = 500
  c.total_env_steps = 2 * 8 * 16
  c.num_envs, c.unroll_length, c.num_minibatches, c.num_epochs = 8, 16, 2, 1
  c.log_every, c.eval.every, c.checkpoint.every = 1, 0, 0
  c.normalize_observations = False
  c.network.update(dict(policy_width=16, policy_depth=2, value_width=16, value_depth=2))
  c.network.update(network)
  return c


def _paths(module):
  return {tuple(str(k) for k in path) for path, _ in nnx.to_flat_state(nnx.state(module))}


def test_default_layout_is_unchanged():
  """No encoder, no trunk_out: parameters live where they always did (trunk.*, head.*)."""
  actor = networks.Actor(CARTPOLE, ppo.default_config().network, rngs=nnx.Rngs(0))
  assert {p[0] for p in _paths(actor)} == {"trunk", "head"}
  assert actor.encoder is None and actor.head.input_activation is None


def test_encoder_preset_and_trunk_out():
  cfg = ppo.default_config().network
  cfg.update(encoder="minatar_cnn", cnn_layernorm=True, preset="small", kind="multiskip",
             trunk_out=512, activation="relu", layernorm=True)
  abstract = nnx.eval_shape(lambda: networks.Critic(MINATAR, cfg, rngs=nnx.Rngs(0)))
  assert abstract.encoder.output_size == 1024
  assert (abstract.trunk.depth, abstract.trunk.width) == (1, 512)  # preset small: k=1, W=512
  assert abstract.trunk.output_size == 512
  assert abstract.head.input_activation == "relu"  # ReLU -> Linear on the 512-d output
  cfg.kind = "plain"
  assert networks.trunk_size(cfg, 7, 7) == (512, 3)  # plain: 2k + 1 hidden layers

  cfg = ppo.default_config().network
  cfg.update(encoder="minatar_cnn", kind="plain", policy_width=32, policy_depth=1, trunk_out=8)
  actor = networks.Actor(MINATAR, cfg, rngs=nnx.Rngs(0))
  obs = jax.random.bernoulli(jax.random.key(0), 0.2, (5, 10, 10, 4)).astype(jnp.float32)
  dist, feats = actor(obs, return_features=True)
  chex.assert_shape(dist.logits, (5, 3))
  assert list(feats) == ["encoder/conv.0", "trunk/hidden.0", "trunk/out", "representation"]
  chex.assert_shape(feats["representation"], (5, 8))
  np.testing.assert_allclose(feats["representation"], feats["trunk/out"])


def test_no_trunk_head_reads_the_encoder():
  cfg = ppo.default_config().network
  cfg.update(encoder="minatar_cnn", kind="none")
  critic = networks.Critic(MINATAR, cfg, rngs=nnx.Rngs(0))
  assert critic.trunk is None
  value, feats = critic(jnp.zeros((2, 10, 10, 4)), return_features=True)
  chex.assert_shape(value, (2,))
  chex.assert_shape(feats["representation"], (2, 1024))


@pytest.mark.parametrize("key,value,match", [
    ("preset", "huge", "'config.network.preset'='huge'"),
    ("policy_depth", 0, "'config.network.policy_depth' must be >= 1"),
    ("encoder", "resnet", "'config.network.encoder'='resnet'"),
    ("kind", "dense", "'config.network.kind'='dense'"),
    ("trunk_out", -1, "'config.network.trunk_out'"),
    ("init", "xavier", "'config.network.init'='xavier'"),
])
def test_bad_network_config_is_one_line(key, value, match):
  c = _ppo_config(**{key: value})
  with pytest.raises(ConfigError, match=match) as err:
    loop.validate(ppo.TRAINER, c)
  assert "\n" not in str(err.value)


PENDULUM = EnvSpec("test/continuous", (5,), False, 3, 1000)


def test_lecun_uniform_init_is_braxs_layer_by_layer():
  """network.init="lecun_uniform": every kernel U(±sqrt(3/fan_in)) with variance 1/fan_in,
  every bias zero (the Gaussian scale's too, so it starts at softplus(0) + 0.001 plus the
  kernel term), as brax.training's PPO networks; the default keeps spec §2.2's orthogonal init
  and the same parameter tree."""
  cfg = ppo.default_config().network
  cfg.update(value_width=512)  # wide enough for a tight variance check
  default = networks.Actor(PENDULUM, cfg, rngs=nnx.Rngs(0)), networks.Critic(PENDULUM, cfg,
                                                                              rngs=nnx.Rngs(0))
  cfg.init = "lecun_uniform"
  lecun = networks.Actor(PENDULUM, cfg, rngs=nnx.Rngs(0)), networks.Critic(PENDULUM, cfg,
                                                                           rngs=nnx.Rngs(0))
  for old, new in zip(default, lecun):
    assert _paths(old) == _paths(new)
    for path, param in nnx.to_flat_state(nnx.state(new)):
      w = np.asarray(param[...])
      if path[-1] == "bias":
        np.testing.assert_array_equal(w, 0.0, err_msg=str(path))
        continue
      fan_in = w.shape[0]
      assert np.abs(w).max() <= np.sqrt(3.0 / fan_in) + 1e-7, path
      if w.size >= 4096:  # variance 1/fan_in within sampling error
        assert abs(w.var() * fan_in - 1.0) < 0.1, (path, w.var() * fan_in)
  # The default: the Gaussian head's kernels are orthogonal with gain 0.01 (column norms 0.01)
  # and its scale starts at 1.0; brax's spreads around log(2) + 0.001.
  actor_old, actor_new = default[0], lecun[0]
  np.testing.assert_allclose(np.linalg.norm(actor_old.head.loc.kernel[...], axis=0), 0.01,
                             rtol=1e-5)
  obs = jax.random.normal(jax.random.key(1), (2048, 5))
  np.testing.assert_allclose(actor_old(obs).scale, 1.0, atol=0.01)
  scale = np.asarray(actor_new(obs).scale)
  z = np.asarray(networks.represent(actor_new, obs)[0]) @ np.asarray(
      actor_new.head.raw_scale.kernel[...])
  np.testing.assert_allclose(scale, np.log1p(np.exp(z)) + 1e-3, rtol=1e-5)
  assert scale.std() > 0.01 and abs(np.median(scale) - (np.log(2.0) + 1e-3)) < 0.1


def test_encoder_that_does_not_fit_the_env_names_the_key():
  c = _ppo_config(encoder="atari_cnn")
  loop.validate(ppo.TRAINER, c)
  with pytest.raises(ConfigError, match="'config.network.encoder'='atari_cnn' does not fit") as e:
    ppo.make_train(c, make_from_config(c.env))
  assert "\n" not in str(e.value)


def test_sigreg_without_a_trunk_is_a_config_error():
  c = _ppo_config(kind="none")
  c.aux.sigreg.weight = 0.2
  with pytest.raises(ConfigError, match=r"'config.aux.sigreg.weight'=0.2 .* builds no trunk") as e:
    loop.validate(ppo.TRAINER, c)
  assert "\n" not in str(e.value)
  c.aux.sigreg.weight = 0.0  # without SIGReg a trunk-free (linear) policy is fine
  loop.validate(ppo.TRAINER, c)
  for key, value, match in [("form", "jepa", "aux.sigreg.form"),
                            ("num_t", 1, "aux.sigreg.num_t"),
                            ("weight", -1.0, "aux.sigreg.weight")]:
    c = _ppo_config()
    c.aux.sigreg[key] = value
    with pytest.raises(ConfigError, match=match):
      loop.validate(ppo.TRAINER, c)


def test_ppo_sigreg_reaches_trunks_not_heads():
  """The aux term depends on trunk parameters only: head gradients are unchanged by it, trunk
  gradients change, and the loss rises by exactly weight * (L_policy + L_value)."""
  c0 = _ppo_config(trunk_out=8, kind="plain", activation="relu")
  c1 = _ppo_config(trunk_out=8, kind="plain", activation="relu")
  c1.aux.sigreg.weight = 0.5
  env = make_from_config(c0.env)
  t0, t1 = ppo.make_train(c0, env), ppo.make_train(c1, env)
  state = t0.init(jax.random.key(0))
  n = 32
  obs = jax.random.normal(jax.random.key(1), (n, 4))
  batch = {"obs": obs, "raw_action": jnp.zeros((n,), jnp.int32), "log_prob": jnp.zeros(n) - 0.7,
           "advantage": jax.random.normal(jax.random.key(2), (n,)),
           "target": jnp.ones(n), "value": jnp.zeros(n)}
  key = jax.random.key(3)
  (l0, m0), g0 = jax.value_and_grad(t0._loss, has_aux=True)(  # pylint: disable=protected-access
      state.params, state.obs_stats, batch, key)
  (l1, m1), g1 = jax.value_and_grad(t1._loss, has_aux=True)(  # pylint: disable=protected-access
      state.params, state.obs_stats, batch, key)
  assert "loss/sigreg" not in m0
  for k in ("loss/sigreg", "loss/sigreg_real", "loss/sigreg_imag", "loss/sigreg/policy",
            "loss/sigreg/value"):
    assert np.isfinite(m1[k]) and m1[k] > 0, k
  np.testing.assert_allclose(l1 - l0, 0.5 * (m1["loss/sigreg/policy"] + m1["loss/sigreg/value"]),
                             rtol=1e-5)
  for net in ("policy", "value"):
    jax.tree.map(np.testing.assert_array_equal, g0[net]["head"], g1[net]["head"])
    assert not np.allclose(g0[net]["trunk"]["out"]["kernel"], g1[net]["trunk"]["out"]["kernel"])


def test_ppo_with_sigreg_and_cnn_runs_and_logs():
  """PPO on Breakout-MinAtar with the MinAtar CNN and SIGReg: one compiled chunk, finite logs."""
  c = _ppo_config(encoder="minatar_cnn", cnn_layernorm=True, trunk_out=16, activation="relu")
  c.env.name = "gymnax/Breakout-MinAtar"
  c.env.episode_length = 1000
  c.aux.sigreg.weight = 0.2
  loop.validate(ppo.TRAINER, c)
  trainer = ppo.make_train(c, make_from_config(c.env))
  state = trainer.init(jax.random.key(0))
  state, metrics = jax.jit(trainer.chunk)(state)
  assert int(state.update) == 1
  for k in ("loss/total", "loss/sigreg", "loss/policy"):
    assert np.isfinite(metrics[k]), k
  assert metrics["loss/sigreg"] > 0


def test_ppo_with_kron_uses_the_lr_rule_and_runs():
  c = _ppo_config()
  c.optimizer.name = "kron"
  loop.validate(ppo.TRAINER, c)
  trainer = ppo.make_train(c, make_from_config(c.env))
  state = trainer.init(jax.random.key(0))
  state, metrics = jax.jit(trainer.chunk)(state)
  np.testing.assert_allclose(metrics["lr"], c.learning_rate / 3, rtol=1e-6)  # spec §2.3
  assert np.isfinite(metrics["loss/total"])
  c.optimizer.name = "lion"
  with pytest.raises(ConfigError, match="'config.optimizer.name'='lion'"):
    loop.validate(ppo.TRAINER, c)
