"""The analysis on tiny real looped models: the replay reproduces the captured states and the
attention of every block, the lenses at the last slot are the model's own logits, a deleted
slot equals a model built without it, and ``analyze`` writes its files."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.looped import ablation, analyze, lens, replay
from jaxlab.models.decoder.config import DecoderConfig
from jaxlab.models.decoder.modeling import init_decoder
from jaxlab.models.looped import config as config_lib
from jaxlab.models.looped import modeling
from jaxlab.models.looped.config import LoopedConfig

V, D = 32, 16
HUGINN = config_lib.huginn_like(V, hidden_size=D, num_heads=2, n_core=3, num_iterations=2)
# No coda and no second norm before it: the logit lens at the last slot is the model's output.
PLAIN = LoopedConfig(vocab_size=V, hidden_size=D, intermediate_size=32, num_heads=2,
                     num_kv_heads=1, head_dim=8, n_prelude=1, n_core=2, n_coda=0,
                     num_iterations=2, injection="add", block_norm="pre")
HRM = LoopedConfig(vocab_size=V, hidden_size=D, intermediate_size=32, num_heads=2,
                   num_kv_heads=2, head_dim=8, n_core=1, inner_layers=1, inner_iterations=2,
                   num_iterations=2, injection="add", block_norm="pre", iter_norm="rmsnorm",
                   norm_weights=False, attn_output_gate=True, state_init="copy_e",
                   embedding_scale=4.0, final_norm=False)


def _batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, V, (2, 6))
  mask = np.ones((2, 6), bool)
  mask[1, :2] = False  # left padding
  tokens[~mask] = 0
  return tokens, mask


@pytest.fixture(scope="module")
def huginn():
  return modeling.init_looped(HUGINN, seed=1)


@pytest.mark.parametrize("cfg", [HUGINN, HRM], ids=["huginn", "hrm_inner"])
def test_replay_matches_captured_states_and_attention(cfg):
  model = modeling.init_looped(cfg, seed=2)
  tokens, mask = _batch()
  cap = replay.capture(model, tokens, mask, num_iterations=3)  # the same program as analyze's
  n_slots = cfg.slots_per_iteration
  assert cap["core"].shape == (3, n_slots, 2, 6, D)
  assert cap["attn_core"].shape == (3, n_slots, 2, cfg.num_heads, 6, 6)
  assert cap["replay_error"] < 1e-5
  a = np.moveaxis(cap["attn_core"], 4, 3)  # [I, J, B, T(query), N, S]
  real = a[:, :, mask]  # [I, J, real queries, N, S]: padded query rows are never used
  np.testing.assert_allclose(real.sum(-1), 1.0, atol=1e-5)
  q_pos = np.nonzero(mask)[1]
  future = np.arange(6)[None, :] > q_pos[:, None]  # [real queries, S]
  assert np.all(np.where(future[:, None, :], real, 0.0) == 0)  # causal
  pads = np.zeros((len(q_pos), 6), bool)
  pads[np.nonzero(mask)[0] == 1, :2] = True
  assert np.all(np.where(pads[:, None, :], real, 0.0) == 0)  # padded keys get no mass
  # The probabilities give the block's own attention output: probs @ values, projected.
  blk = model.core[0] if not cfg.inner_layers else model.inner[0]
  x = jnp.asarray(cap["core_inputs"][1, 0])
  _, cos, sin, allowed = replay.layout(cfg.block_config, jnp.asarray(mask))
  xn = replay.block_attention_input(blk, x)
  want, _, _ = blk.attn.heads(xn, cos, sin, allowed, None, None, None)
  v = jnp.einsum("btd,dkh->btkh", xn, blk.attn.v_dkh[...])
  v = jnp.repeat(v, cfg.num_heads // cfg.num_kv_heads, axis=2)
  got = jnp.einsum("bnts,bsnh->btnh", jnp.asarray(cap["attn_core"][1, 0]), v)
  np.testing.assert_allclose(np.asarray(got)[mask], np.asarray(want)[mask], atol=1e-5)


def test_lenses_at_last_slot_equal_model_logits(huginn):
  tokens, mask = _batch()
  plain = modeling.init_looped(PLAIN, seed=3)
  for model, which in ((plain, "logit"), (huginn, "coda")):
    cap = replay.capture(model, tokens, mask, num_iterations=3)
    targets, valid = lens.next_token_targets(tokens, mask)
    table = lens.lens_table(model, cap["core"], cap["logits"], targets, mask, valid,
                            lenses=(which,))[which]
    _, cos, sin, allowed = replay.layout(model.config.block_config, jnp.asarray(mask))
    last = jnp.asarray(cap["core"][-1, -1])
    got = (lens.logit_lens(model, last) if which == "logit"
           else lens.coda_lens(model, last, cos, sin, allowed))
    np.testing.assert_allclose(np.asarray(got)[mask], cap["logits"][mask], atol=1e-5)
    assert table["agree_final"][-1, -1] == 1.0
    assert abs(table["kl_to_final"][-1, -1]) < 1e-5
    assert table["correct"].shape == (3, model.config.slots_per_iteration)


def test_delete_slot_equals_model_built_without_it(huginn):
  tokens, mask = _batch()
  deleted = ablation.delete_slot(huginn, 1)
  assert deleted.config.n_core == 2
  built = modeling.init_looped(HUGINN.replace(n_core=2), seed=7)
  for name in vars(huginn):
    if name not in ("core", "config") and not name.startswith("_"):
      setattr(built, name, getattr(huginn, name))
  built.core[0], built.core[1] = huginn.core[0], huginn.core[2]
  want = modeling.forward(built, jnp.asarray(tokens), jnp.asarray(mask))
  got = modeling.forward(deleted, jnp.asarray(tokens), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
  # The per-iteration route agrees: slot 1 skipped in every iteration, and nothing skipped.
  keep = np.ones((HUGINN.num_iterations, 3), bool)
  full = ablation.masked_forward(huginn, tokens, mask, keep)
  own = modeling.forward(huginn, jnp.asarray(tokens), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(full)[mask], np.asarray(own)[mask], atol=1e-5)
  keep[:, 1] = False
  skipped = ablation.masked_forward(huginn, tokens, mask, keep)
  np.testing.assert_allclose(np.asarray(skipped)[mask], np.asarray(want)[mask], atol=1e-5)
  swapped = ablation.swap_slots(huginn, 0, 2)
  assert swapped.core[0].attn.q_dnh[...] is not None
  np.testing.assert_array_equal(np.asarray(swapped.core[0].attn.q_dnh[...]),
                                np.asarray(huginn.core[2].attn.q_dnh[...]))


def test_analyze_end_to_end_writes_files(huginn, tmp_path):
  tokens, mask = _batch()
  depth = HUGINN.n_prelude + HUGINN.n_core * HUGINN.num_iterations + HUGINN.n_coda
  baseline = init_decoder(DecoderConfig(vocab_size=V, hidden_size=D, intermediate_size=32,
                                        num_layers=depth, num_heads=2, num_kv_heads=2,
                                        head_dim=8))
  groups = np.where(np.arange(6) < 3, 0, 1)[None].repeat(2, 0)
  out = analyze.run_analysis(huginn, str(tmp_path), iterations=[3], tokens_bt=tokens,
                             mask_bt=mask, baseline=baseline, groups_bt=groups,
                             group_names={0: "question", 1: "answer"}, jacobian_tokens=1,
                             jacobian_iters=10)
  names = {os.path.basename(f) for f in out["files"]}
  assert {"results.npz", "metrics.json", "pca_trajectory.png", "lens_accuracy.png",
          "matrix_entropy.png", "bos_norm.png", "sink_rate.png", "log10_delta.png",
          "log10_attention_tv.png"} <= names
  for f in out["files"]:
    assert os.path.getsize(f) > 0
  with open(tmp_path / "metrics.json") as f:
    metrics = json.load(f)
  m3 = metrics["per_iteration"]["3"]
  assert m3["replay_error"] < 1e-5
  assert set(m3["classes"]) >= {"all", "question", "answer", "threshold"}
  assert m3["classes"]["threshold"] == 1e-2
  # The median state norm per (iteration, slot) is the median over real tokens of |s|.
  core = replay.capture(huginn, tokens, mask, 3)["core"]
  want = np.median(np.linalg.norm(np.asarray(core, np.float64), axis=-1)[..., mask], axis=-1)
  np.testing.assert_allclose(m3["state_norm_median"], want, rtol=1e-6)
  assert len(m3["stages"]["matrix_entropy"]) == 1 + 3 * 3 + 1
  assert len(metrics["baseline"]["stages"]["bos_norm"]) == depth
  assert set(metrics["checks"]) >= {"fixed_point_share", "min_slot_distance", "pca_retrace"}
  assert len(metrics["jacobian"]["spectral_radius"]) == 1
  assert np.asarray(metrics["ablation"]["delete_at"]).shape == (2, 3)
  # Deleting slot k everywhere (a keep table) costs what the model without it loses.
  targets, valid = lens.next_token_targets(tokens, mask)
  lost = ablation.mean_nll(modeling.forward(ablation.delete_slot(huginn, 1), jnp.asarray(tokens),
                                            jnp.asarray(mask)), targets, valid)
  assert metrics["ablation"]["delete_all"][1] == pytest.approx(
      float(lost) - metrics["ablation"]["base_loss"], abs=1e-5)
  with np.load(tmp_path / "results.npz") as npz:
    assert npz["I3/delta"].shape == (2, 3, 2, 6)
    assert npz["I3/attention_tv"].shape == (2, 3, 2, 2)
    assert npz["pca_coords"].shape == (3, 3, 2)
    assert npz["I3/coda_lens_correct"].shape == (3, 3)


def test_core_order_analyses_the_ablated_model_and_rejects_missing_blocks(huginn):
  """``run_analysis(core_order=...)`` (``launch.analyze --core_order``) analyses the model with
  its core blocks in that order, as analysing ``permute_core`` of it does, and records the
  order; a block the model does not have is one error naming it."""
  tokens, mask = _batch()
  opts = dict(tokens_bt=tokens, mask_bt=mask, ablations=False, jacobian_tokens=0)
  got = analyze.run_analysis(huginn, None, [2], core_order=[2, 0], **opts)
  want = analyze.run_analysis(ablation.permute_core(huginn, [2, 0]), None, [2], **opts)
  assert got["metrics"]["core_order"] == [2, 0] and "core_order" not in want["metrics"]
  assert got["metrics"]["config"]["n_core"] == 2
  assert got["arrays"].keys() == want["arrays"].keys()
  for k, v in want["arrays"].items():
    np.testing.assert_array_equal(got["arrays"][k], v, err_msg=k)
  with pytest.raises(ValueError, match=r"core_order=\[0, 3\]: the model has 3 core block\(s\), "
                     r"0\.\.2; \[3\] do not exist"):
    analyze.run_analysis(huginn, None, [2], core_order=[0, 3], **opts)
