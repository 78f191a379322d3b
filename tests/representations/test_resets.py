"""Tests for jaxlab.representations.resets: masks, the reset engine, optimizer surgery."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxlab import nets
from jaxlab import representations as rep
from jaxlab.representations.layers import normalize_path

N_IN, WIDTH, N_OUT, BATCH = 16, 16, 3, 64
MOMENTS = ("mu", "nu", "trace")


# --------------------------------------------------------------------------------------------
# Helpers.


def _set(state, path, fn):
  found = []

  def edit(kp, leaf):
    if normalize_path(kp) == tuple(path):
      found.append(path)
      return fn(leaf)
    return leaf

  out = jax.tree_util.tree_map_with_path(edit, state)
  assert found, f"no leaf at {path}"
  return out


def _flat(tree):
  return {normalize_path(kp): np.asarray(v) for kp, v in jax.tree_util.tree_leaves_with_path(tree)}


def _x(seed=1, shape=(BATCH, N_IN)):
  return jax.random.normal(jax.random.key(seed), shape)


def _mlp(kind="plain", depth=2, use_layernorm=False, out_features=N_OUT, seed=0):
  m = nets.MLP(N_IN, width=WIDTH, depth=depth, kind=kind, out_features=out_features,
               use_layernorm=use_layernorm, rngs=nnx.Rngs(seed))
  graphdef, state = nnx.split(m)
  return m, graphdef, state


def _random_opt_state(opt, params, seed=0):
  """``opt.init(params)`` with every array leaf of rank >= 1 (the moments) set to random
  non-zero values and scalar leaves (step counts) to 7, so zeroing is observable."""
  rng = np.random.default_rng(seed)

  def fill(leaf):
    leaf = jnp.asarray(leaf)
    if leaf.ndim == 0:
      return jnp.full_like(leaf, 7)
    return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map(fill, opt.init(params))


def _expected_touched(layers, masks, params, reset_norm=True):
  """Independent numpy statement of which entries a reset changes: {path: bool [shape]}."""
  flat = _flat(params)
  touched = {p: np.zeros(v.shape, bool) for p, v in flat.items()}
  for layer in layers:
    if layer.name not in masks:
      continue
    m = np.asarray(masks[layer.name])
    touched[layer.path + ("kernel",)][..., m] = True
    if layer.path + ("bias",) in touched:
      touched[layer.path + ("bias",)][m] = True
    if reset_norm and layer.norm_path is not None:
      touched[layer.norm_path + ("scale",)][m] = True
      touched[layer.norm_path + ("bias",)][m] = True
    if layer.zero_outgoing:
      for c in layer.consumers:
        kernel = touched[c + ("kernel",)]
        rows = np.tile(m, kernel.shape[-2] // m.size)
        kernel[..., rows, :] = True
  return touched


def _moment_leaves(opt_state):
  """{(moment field, param path): array} for every moment leaf of an optax state."""
  out = {}
  for kp, leaf in jax.tree_util.tree_leaves_with_path(opt_state):
    for i, k in enumerate(kp):
      if isinstance(k, jax.tree_util.GetAttrKey) and k.name in MOMENTS:
        out[(tuple(str(e) for e in kp[:i + 1]), normalize_path(kp[i + 1:]))] = np.asarray(leaf)
        break
  return out


def _check_untouched_and_moments(params0, params1, opt0, opt1, touched):
  """Every entry outside ``touched`` is bit-identical; touched moments are zero."""
  p0, p1 = _flat(params0), _flat(params1)
  assert p0.keys() == p1.keys()
  for path, t in touched.items():
    np.testing.assert_array_equal(p1[path][~t], p0[path][~t], err_msg=str(path))
  if opt0 is None:
    return
  m0, m1 = _moment_leaves(opt0), _moment_leaves(opt1)
  assert m0 and m0.keys() == m1.keys()
  for key, before in m0.items():
    t = touched[key[1]]
    np.testing.assert_array_equal(m1[key][~t], before[~t], err_msg=str(key))
    assert np.all(m1[key][t] == 0), key
  # Everything that is not a moment (step counts) is untouched.
  rest0 = [leaf for kp, leaf in jax.tree_util.tree_leaves_with_path(opt0) if jnp.ndim(leaf) == 0]
  rest1 = [leaf for kp, leaf in jax.tree_util.tree_leaves_with_path(opt1) if jnp.ndim(leaf) == 0]
  for a, b in zip(rest0, rest1):
    np.testing.assert_array_equal(a, b)


def _kill(state, path, idx):
  return _set(state, path + ("bias",), lambda b: b.at[np.asarray(idx)].set(-100.0))


_reset = jax.jit(rep.reset_neurons, static_argnames=("layers", "reset_norm", "require_moments"))


# --------------------------------------------------------------------------------------------
# Plain MLP.


def test_plain_relu_reset_of_dead_units():
  m, graphdef, state = _mlp("plain", depth=2)
  layers = rep.mlp_layers(m, exclude=("out",))
  dead = {"hidden.0": [1, 4, 5, 9, 12], "hidden.1": [0, 3, 7, 8, 15]}
  for i in range(2):
    state = _kill(state, ("hidden", i), dead[f"hidden.{i}"])
  x = _x()
  y0, feats = nnx.merge(graphdef, state)(x, return_features=True)
  masks = rep.redo_masks(feats, 0.0, layers=layers)
  for name, idx in dead.items():
    assert set(idx) <= set(np.flatnonzero(masks[name]))
  opt = optax.adam(1e-3)
  opt0 = _random_opt_state(opt, state)
  key = jax.random.key(42)
  state1, opt1 = _reset(state, opt0, masks, key, layers)

  fresh = rep.fresh_layer_params(layers, state, key)
  p0, p1 = _flat(state), _flat(state1)
  # Rows of hidden.1's kernel that read a reset hidden.0 unit are zeroed after the fresh draw
  # (outgoing wins), so freshness is checked on the other rows.
  live_rows = {"hidden.0": np.ones(N_IN, bool), "hidden.1": ~np.asarray(masks["hidden.0"])}
  for layer in layers:
    m_ = np.asarray(masks[layer.name])
    rows = live_rows[layer.name]
    k_new = p1[layer.path + ("kernel",)][:, m_]
    # Fresh: equal to the initialiser's draw and different from the old columns.
    np.testing.assert_array_equal(k_new[rows], np.asarray(fresh[layer.name][0])[:, m_][rows])
    assert np.all(k_new[rows] != p0[layer.path + ("kernel",)][:, m_][rows])
    np.testing.assert_array_equal(p1[layer.path + ("bias",)][m_], 0.0)  # was -100
    for consumer in layer.consumers:
      np.testing.assert_array_equal(p1[consumer + ("kernel",)][m_, :], 0.0)
  # Independently of fresh_layer_params: the square orthogonal init (gain sqrt 2) has columns
  # of norm sqrt 2, and the new columns of hidden.0 are orthogonal to each other.
  cols = p1[("hidden", 0, "kernel")][:, np.asarray(masks["hidden.0"])]
  np.testing.assert_allclose(cols.T @ cols, 2.0 * np.eye(cols.shape[1]), atol=1e-5)
  # Dead units contributed nothing and the fresh ones are disconnected: same output.
  y1 = nnx.merge(graphdef, state1)(x)
  np.testing.assert_allclose(y1, y0, rtol=0, atol=1e-6)
  _check_untouched_and_moments(state, state1, opt0, opt1,
                               _expected_touched(layers, masks, state))
  assert int(opt1[0].count) == 7

  # Negative control: the incoming-only variant leaves the consumer rows, so the revived
  # units change the output.
  layers_in = rep.mlp_layers(m, exclude=("out",), outgoing="none")
  state2, _ = _reset(state, opt0, masks, key, layers_in)
  assert np.abs(np.asarray(nnx.merge(graphdef, state2)(x)) - np.asarray(y0)).max() > 1e-3
  rows, cols = np.asarray(masks["hidden.0"]), ~np.asarray(masks["hidden.1"])
  np.testing.assert_array_equal(_flat(state2)[("hidden", 1, "kernel")][np.ix_(rows, cols)],
                                p0[("hidden", 1, "kernel")][np.ix_(rows, cols)])


def test_reset_of_alive_units_removes_their_old_contribution_whatever_the_fresh_values():
  """Zeroing outgoing weights keeps the output only for dead units; in general the output
  becomes that of the old network with the outgoing rows zeroed, independent of the key."""
  m, graphdef, state = _mlp("plain", depth=2)
  layers = rep.mlp_layers(m, exclude=("out",))
  x = _x()
  masks = {"hidden.0": jnp.arange(WIDTH) < 3}
  ys = [nnx.merge(graphdef, _reset(state, None, masks, jax.random.key(k), layers)[0])(x)
        for k in (0, 1)]
  cut = _set(state, ("hidden", 1, "kernel"), lambda k: k.at[:3, :].set(0.0))
  np.testing.assert_allclose(ys[0], ys[1], atol=1e-6)
  np.testing.assert_allclose(ys[0], nnx.merge(graphdef, cut)(x), atol=1e-6)
  assert np.abs(np.asarray(ys[0]) - np.asarray(nnx.merge(graphdef, state)(x))).max() > 1e-4


def test_layernorm_reset_restores_norm_params_but_changes_the_output():
  """With LayerNorm after the layer, a new kernel column changes the norm's statistics for
  every unit of the layer, so even a dead unit's reset changes the output."""
  m, graphdef, state = _mlp("plain", depth=2, use_layernorm=True)
  layers = rep.mlp_layers(m, exclude=("out",))
  state = _set(state, ("hidden_norms", 0, "bias"), lambda b: b.at[3].set(-10.0))
  state = _set(state, ("hidden_norms", 0, "scale"), lambda s: s.at[3].set(0.5))
  x = _x()
  y0, feats = nnx.merge(graphdef, state)(x, return_features=True)
  masks = {"hidden.0": rep.dormant_scores(feats["hidden.0"]) <= 0.0}
  assert bool(masks["hidden.0"][3])
  opt0 = _random_opt_state(optax.adam(1e-3), state)
  state1, opt1 = _reset(state, opt0, masks, jax.random.key(0), layers)
  p1 = _flat(state1)
  assert p1[("hidden_norms", 0, "bias")][3] == 0.0 and p1[("hidden_norms", 0, "scale")][3] == 1.0
  np.testing.assert_array_equal(p1[("hidden", 1, "kernel")][3, :], 0.0)
  _check_untouched_and_moments(state, state1, opt0, opt1,
                               _expected_touched(layers, masks, state))
  assert np.abs(np.asarray(nnx.merge(graphdef, state1)(x)) - np.asarray(y0)).max() > 1e-4


# --------------------------------------------------------------------------------------------
# Multi-skip residual MLP: "output unchanged" depends on which layer is reset.


def _multiskip():
  m, graphdef, state = _mlp("multiskip", depth=2)
  for i in range(2):
    state = _kill(state, ("blocks", i, "fc0"), [2, 6, 11])
  return m, graphdef, state


def test_multiskip_auto_mode_dead_inner_units_keep_the_output_stream_writers_do_not():
  m, graphdef, state = _multiskip()
  layers = rep.mlp_layers(m, exclude=("out",), outgoing="auto")
  by_name = {layer.name: layer for layer in layers}
  assert by_name["blocks.0.fc0"].zero_outgoing
  assert not by_name["input"].zero_outgoing and not by_name["blocks.1.fc1"].zero_outgoing
  x = _x()
  y0, feats = nnx.merge(graphdef, state)(x, return_features=True)
  masks = rep.redo_masks(feats, 0.0, layers=layers)  # only the activated fc0 layers
  assert set(masks) == {"blocks.0.fc0", "blocks.1.fc0"}
  opt0 = _random_opt_state(optax.adam(1e-3), state)
  state1, opt1 = _reset(state, opt0, masks, jax.random.key(0), layers)
  np.testing.assert_allclose(nnx.merge(graphdef, state1)(x), y0, rtol=0, atol=1e-6)
  _check_untouched_and_moments(state, state1, opt0, opt1,
                               _expected_touched(layers, masks, state))

  # Stream writers are reset incoming-only: readers keep their rows, the output changes.
  writer_masks = {"input": jnp.arange(WIDTH) == 2, "blocks.0.fc1": jnp.arange(WIDTH) == 4}
  state2, opt2 = _reset(state, opt0, writer_masks, jax.random.key(0), layers)
  p0, p2 = _flat(state), _flat(state2)
  for reader in [("blocks", 0, "fc0"), ("blocks", 1, "fc0"), ("out",)]:
    np.testing.assert_array_equal(p2[reader + ("kernel",)], p0[reader + ("kernel",)])
  assert np.abs(np.asarray(nnx.merge(graphdef, state2)(x)) - np.asarray(y0)).max() > 1e-3
  _check_untouched_and_moments(state, state2, opt0, opt2,
                               _expected_touched(layers, writer_masks, state))


def test_multiskip_zero_mode_on_a_stream_writer_cuts_the_channel_for_every_later_writer():
  """Zeroing the readers of stream channel j keeps the output free of the reset neuron, but
  also disconnects channel j of every writer downstream of it: a healthy neuron of block 1's
  fc1 stops mattering. This is why the "auto" mode resets stream writers incoming-only."""
  m, graphdef, state = _multiskip()
  layers = rep.mlp_layers(m, exclude=("out",), outgoing="zero")
  masks = {"blocks.0.fc1": jnp.arange(WIDTH) == 4}
  state1, _ = _reset(state, None, masks, jax.random.key(0), layers)
  p1 = _flat(state1)
  for reader in [("blocks", 1, "fc0"), ("out",)]:
    np.testing.assert_array_equal(p1[reader + ("kernel",)][4, :], 0.0)
  x = _x()

  def output_change(s):
    bumped = _set(s, ("blocks", 1, "fc1", "kernel"), lambda k: k.at[:, 4].add(1.0))
    return np.abs(np.asarray(nnx.merge(graphdef, bumped)(x) - nnx.merge(graphdef, s)(x))).max()

  assert output_change(state) > 1e-2   # before: block 1's neuron 4 matters
  assert output_change(state1) == 0.0  # after: it is cut off


# --------------------------------------------------------------------------------------------
# Trunk + head, conv layers.


class _Net(nnx.Module):

  def __init__(self, kind, rngs):
    self.trunk = nets.MLP(N_IN, width=WIDTH, depth=2, kind=kind, rngs=rngs)
    self.head = nets.CategoricalHead(WIDTH, 5, rngs=rngs)

  def __call__(self, x):
    return self.head(self.trunk(x))


def test_head_is_the_consumer_of_the_trunk_output():
  net = _Net("plain", nnx.Rngs(0))
  layers = rep.mlp_layers(net.trunk, prefix=("trunk",),
                          output_consumers=rep.linear_paths(net.head, ("head",)))
  assert layers[-1].name == "hidden.1" and layers[-1].consumers == (("head", "linear"),)
  graphdef, state = nnx.split(net)
  state = _kill(state, ("trunk", "hidden", 1), [0, 5])
  x = _x()
  y0 = nnx.merge(graphdef, state)(x)
  masks = {"hidden.1": jnp.isin(jnp.arange(WIDTH), jnp.array([0, 5]))}
  state1, _ = _reset(state, None, masks, jax.random.key(3), layers)
  np.testing.assert_array_equal(_flat(state1)[("head", "linear", "kernel")][[0, 5], :], 0.0)
  np.testing.assert_allclose(nnx.merge(graphdef, state1)(x), y0, rtol=0, atol=1e-6)

  res = _Net("residual", nnx.Rngs(0))
  res_layers = {l.name: l for l in rep.mlp_layers(
    res.trunk, prefix=("trunk",), output_consumers=rep.linear_paths(res.head, ("head",)))}
  # Without an "out" layer every residual-stream writer reaches the head.
  for name in ("input", "blocks.0.fc1", "blocks.1.fc1"):
    assert res_layers[name].consumers[-1] == ("head", "linear")
  assert res_layers["blocks.0.fc0"].consumers == (("trunk", "blocks", 0, "fc1"),)


class _ConvNet(nnx.Module):

  def __init__(self, rngs):
    self.conv = nnx.Conv(2, 4, (3, 3), padding="SAME", rngs=rngs)
    self.fc = nnx.Linear(5 * 5 * 4, 3, rngs=rngs)

  def __call__(self, x):
    h = jax.nn.relu(self.conv(x))
    return self.fc(h.reshape(h.shape[0], -1)), h


def test_conv_channel_reset_masks_the_out_axis_and_flattened_consumer_rows():
  net = _ConvNet(nnx.Rngs(0))
  graphdef, state = nnx.split(net)
  layers = (rep.NeuronLayer("conv", ("conv",), consumers=(("fc",),), activation="relu",
                            kernel_init=jax.nn.initializers.lecun_normal()),)
  state = _kill(state, ("conv",), [1])
  x = _x(shape=(BATCH, 5, 5, 2))
  y0, h = nnx.merge(graphdef, state)(x)
  masks = rep.redo_masks({"conv": h}, 0.0)
  np.testing.assert_array_equal(masks["conv"], [False, True, False, False])
  opt0 = _random_opt_state(optax.adam(1e-3), state)
  key = jax.random.key(5)
  state1, opt1 = _reset(state, opt0, masks, key, layers)
  p1 = _flat(state1)
  np.testing.assert_array_equal(p1[("conv", "kernel")][..., 1],
                                np.asarray(rep.fresh_layer_params(layers, state, key)["conv"][0])
                                [..., 1])
  rows = np.arange(100) % 4 == 1  # channels-last flatten: row r reads channel r % 4
  np.testing.assert_array_equal(p1[("fc", "kernel")][rows], 0.0)
  np.testing.assert_allclose(nnx.merge(graphdef, state1)(x)[0], y0, rtol=0, atol=1e-6)
  _check_untouched_and_moments(state, state1, opt0, opt1,
                               _expected_touched(layers, masks, state))


# --------------------------------------------------------------------------------------------
# Masks, optimizer states, scheduling, vmap.


def test_cap_keeps_the_lowest_scores():
  scores = jnp.array([0.5, 0.0, 0.3, 2.0, 0.1, 0.0, 1.0, 0.2])
  mask = scores <= 0.3
  capped = jax.jit(rep.cap_mask, static_argnums=2)(mask, scores, 0.25)  # floor(0.25*8) = 2
  np.testing.assert_array_equal(capped, [False, True, False, False, False, True, False, False])
  np.testing.assert_array_equal(rep.cap_mask(mask, scores, None), mask)
  assert int(rep.cap_mask(mask, scores, 0.1).sum()) == 0
  masks = rep.regrama_masks({"a": jnp.stack([scores] * 3)}, 0.3, max_fraction=0.25)
  assert int(masks["a"].sum()) == 2


def test_regrama_weight_masks_flag_zero_gradient_kernels():
  m, graphdef, state = _mlp("plain", depth=2)
  layers = rep.mlp_layers(m, exclude=("out",))
  state = _kill(state, ("hidden", 0), [3, 10])
  x, t = _x(), _x(2, (BATCH, N_OUT))
  grads = jax.grad(lambda s: jnp.mean((nnx.merge(graphdef, s)(x) - t) ** 2))(state)
  masks = rep.regrama_weight_masks(grads, layers, 0.0)
  assert {3, 10} <= set(np.flatnonzero(masks["hidden.0"]))


@pytest.mark.parametrize("make_opt", [
  lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)),
  lambda: optax.multi_transform(
    {"adam": optax.adam(1e-3), "sgd": optax.sgd(1e-3, momentum=0.9)},
    lambda p: jax.tree_util.tree_map_with_path(
      lambda kp, _: "adam" if normalize_path(kp)[-1] == "kernel" else "sgd", p)),
  lambda: optax.inject_hyperparams(optax.adam)(learning_rate=1e-3),
], ids=["chain_adamw", "multi_transform", "inject_hyperparams"])
def test_moments_are_found_in_any_optax_state(make_opt):
  m, graphdef, state = _mlp("plain", depth=2)
  layers = rep.mlp_layers(m, exclude=("out",))
  masks = {"hidden.0": jnp.arange(WIDTH) % 3 == 0, "hidden.1": jnp.arange(WIDTH) == 5}
  opt0 = _random_opt_state(make_opt(), state)
  state1, opt1 = _reset(state, opt0, masks, jax.random.key(0), layers)
  _check_untouched_and_moments(state, state1, opt0, opt1,
                               _expected_touched(layers, masks, state))
  assert jax.tree_util.tree_structure(opt1) == jax.tree_util.tree_structure(opt0)


def test_errors_for_stateless_optimizer_unknown_layer_and_bad_mask():
  m, _, state = _mlp("plain", depth=2)
  layers = rep.mlp_layers(m, exclude=("out",))
  masks = {"hidden.0": jnp.arange(WIDTH) == 0}
  sgd_state = optax.sgd(1e-3).init(state)
  with pytest.raises(ValueError, match="no optimizer moments"):
    rep.reset_neurons(state, sgd_state, masks, jax.random.key(0), layers)
  rep.reset_neurons(state, sgd_state, masks, jax.random.key(0), layers, require_moments=False)
  with pytest.raises(ValueError, match="unknown layers"):
    rep.reset_neurons(state, None, {"hidden.9": masks["hidden.0"]}, jax.random.key(0), layers)
  with pytest.raises(ValueError, match="expected"):
    rep.reset_neurons(state, None, {"hidden.0": jnp.ones(3, bool)}, jax.random.key(0), layers)
  with pytest.raises(KeyError, match="prefix"):
    rep.reset_neurons(state, None, masks, jax.random.key(0),
                      rep.mlp_layers(m, prefix=("trunk",), exclude=("out",)))


def test_maybe_reset_every_f_updates_inside_a_jitted_scan():
  m, graphdef, state = _mlp("plain", depth=2)
  layers = rep.mlp_layers(m, exclude=("out",))
  masks = {"hidden.0": jnp.arange(WIDTH) < 2}
  opt_state = optax.adam(1e-3).init(state)

  def reset_fn(params, opt_state, key):
    params, opt_state = rep.reset_neurons(params, opt_state, masks, key, layers)
    return params, opt_state, rep.mask_counts(masks)

  @jax.jit
  def run(params, opt_state, key):
    def body(carry, step):
      params, opt_state, key = carry
      key, k = jax.random.split(key)
      new, opt_state, stats = rep.maybe_reset(step, 3, reset_fn, params, opt_state, k)
      changed = jnp.any(new["hidden"][0]["kernel"][...] != params["hidden"][0]["kernel"][...])
      return (new, opt_state, key), (changed, stats["reset/count/hidden.0"])
    return jax.lax.scan(body, (params, opt_state, key), jnp.arange(8))[1]

  changed, counts = run(state, opt_state, jax.random.key(0))
  np.testing.assert_array_equal(changed, [s in (3, 6) for s in range(8)])
  np.testing.assert_array_equal(counts, [2.0 if s in (3, 6) else 0.0 for s in range(8)])


def test_reset_vmaps_over_seeds():
  m, graphdef, _ = _mlp("plain", depth=2)
  layers = rep.mlp_layers(m, exclude=("out",))
  states = [nnx.split(_mlp("plain", depth=2, seed=s)[0])[1] for s in range(2)]
  opt = optax.adam(1e-3)
  opts = [_random_opt_state(opt, s, seed=i) for i, s in enumerate(states)]
  masks = [{"hidden.0": jnp.arange(WIDTH) % (i + 2) == 0} for i in range(2)]
  keys = jax.random.split(jax.random.key(0), 2)
  stack = lambda xs: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *xs)
  batched = jax.jit(jax.vmap(lambda s, o, mk, k: rep.reset_neurons(s, o, mk, k, layers)))(
    stack(states), stack(opts), stack(masks), keys)
  for i in range(2):
    single = rep.reset_neurons(states[i], opts[i], masks[i], keys[i], layers)
    for a, b in zip(jax.tree_util.tree_leaves(single),
                    jax.tree_util.tree_leaves(batched)):
      np.testing.assert_allclose(b[i], a, rtol=1e-6, atol=1e-7)
