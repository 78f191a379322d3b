"""The analysis measures on synthetic inputs with known answers: contraction rates of linear
maps, token classes of built trajectories, matrix entropy of known spectra, the closed polygon
of a cyclic path, attention variation and sinks, Jacobian spectra of known maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.looped import attention, convergence, jacobian, stages, trajectory


def _matrix(eigs, seed, orthogonal=False):
  """A real matrix with the given eigenvalues (a similarity of their diagonal)."""
  rng = np.random.default_rng(seed)
  d = len(eigs)
  p = (np.linalg.qr(rng.standard_normal((d, d)))[0] if orthogonal
       else rng.standard_normal((d, d)) + 2 * np.eye(d))
  return p @ np.diag(eigs) @ np.linalg.inv(p)


def _affine_run(a, steps, seed):
  rng = np.random.default_rng(seed)
  d = a.shape[0]
  b, s = rng.standard_normal(d), rng.standard_normal(d)
  out = [s]
  for _ in range(steps - 1):
    s = a @ s + b
    out.append(s)
  return np.stack(out)  # [I, D]


def test_delta_and_rate_recover_linear_contraction():
  rates = (0.8, 0.6, 0.7)
  # 35 steps: long enough for the slower modes to die out, short enough that 0.6^t stays far
  # above float64 round-off of the states.
  runs = [_affine_run(_matrix([r, 0.5 * r, 0.3, -0.2, 0.1, 0.05], seed=i), 35, seed=10 + i)
          for i, r in enumerate(rates)]
  h = np.stack(runs, axis=1)[:, None]  # [I, J=1, N=3, D]
  delta = convergence.relative_deltas(h)
  assert delta.shape == (34, 1, 3)
  ratio = convergence.step_ratios(delta)[-1, 0]
  fitted = convergence.contraction_rate(delta, window=15)[0]
  np.testing.assert_allclose(ratio, rates, rtol=1e-2)
  np.testing.assert_allclose(fitted, rates, rtol=1e-2)
  # Distance to the terminal iterate decays with the same rate (while far from the end).
  dist = convergence.distance_to_final(h)[:, 0]
  np.testing.assert_allclose(dist[12] / dist[11], rates, rtol=1e-2)


def _rotation(theta, d, k):
  r = np.eye(d)
  r[k:k + 2, k:k + 2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
  return r


def test_classifier_labels_fixed_periodic_drifting():
  rng = np.random.default_rng(0)
  n_iter, d = 16, 8
  base = rng.standard_normal((2, d)) + 3.0  # two slots
  v = rng.standard_normal((2, d))
  t = np.arange(n_iter)[:, None, None]
  fixed = base + 0.3 ** t * v  # converges
  period2 = np.where(t % 2 == 0, base, base + v)  # a -> b -> a ...
  rot3 = _rotation(2 * np.pi / 3, d, 0)
  period3 = np.stack([base @ np.linalg.matrix_power(rot3, i).T for i in range(n_iter)])
  drift = np.stack([base @ np.linalg.matrix_power(_rotation(0.3, d, 2), i).T
                    for i in range(n_iter)])  # an irrational rotation: never returns
  h = np.stack([fixed, period2, period3, drift], axis=2)  # [I, J, N, D]
  out = convergence.classify_tokens(h, threshold=1e-2, max_period=4)
  np.testing.assert_array_equal(out["label"], [convergence.FIXED, convergence.PERIODIC,
                                               convergence.PERIODIC, convergence.DRIFTING])
  np.testing.assert_array_equal(out["period"], [0, 2, 3, 0])
  frac = convergence.class_fractions(out["label"], groups=np.array([0, 0, 1, 1]),
                                     group_names={0: "question", 1: "answer"})
  assert frac["all"]["fixed"] == 0.25 and frac["all"]["non_fixed"] == 0.75
  assert frac["question"]["periodic"] == 0.5 and frac["answer"]["drifting"] == 0.5
  # Distinct slots at the fixed point: far apart against the final step.
  dist = convergence.slot_distinctness(fixed[:, :, None])
  expected = np.linalg.norm(base[0] - base[1]) / np.linalg.norm(base, axis=-1).mean()
  np.testing.assert_allclose(dist["min_distance"][0], expected, rtol=1e-3)
  assert dist["separation"][0] > 1e3


def test_fixed_window_is_the_specs_t_at_least_T_minus_w():
  """Spec §1.5: fixed iff max over t >= T - w (iterations 1..T) of delta[t] < tau. With
  T = 8 and w = 2 that is delta[6], delta[7], delta[8]: one jump at t = 6 (the state moves
  between iterations 5 and 6) makes the token not fixed; a jump at t = 5 does not."""
  d = 4
  for jump_at, fixed in ((6, False), (5, True), (8, False)):
    h = np.ones((8, 1, 1, d))
    h[jump_at - 1:] += 1.0  # iterations jump_at..8 (1-based) moved: delta[jump_at] is large
    out = convergence.classify_tokens(h, threshold=1e-2, window=2, max_period=2)
    assert (out["label"][0] == convergence.FIXED) == fixed, jump_at


def test_matrix_entropy_of_known_spectra():
  rng = np.random.default_rng(0)
  q = np.linalg.qr(rng.standard_normal((16, 16)))[0]
  assert stages.matrix_entropy(3.0 * q[:8]) == pytest.approx(1.0, abs=1e-9)  # identity-like
  rank1 = np.outer(rng.standard_normal(8), rng.standard_normal(16))
  assert stages.matrix_entropy(rank1) == pytest.approx(0.0, abs=1e-9)
  two = np.concatenate([np.tile(q[:1], (2, 1)), np.tile(q[1:2], (2, 1))])  # 2 equal directions
  assert stages.matrix_entropy(two) == pytest.approx(np.log(2) / np.log(4), abs=1e-9)
  curve = stages.entropy_curve(np.stack([q[:8], rank1])[:, None])
  np.testing.assert_allclose(curve, [1.0, 0.0], atol=1e-9)


def test_pca_recovers_closed_polygon():
  rng = np.random.default_rng(1)
  n_iter, n_slots, d = 12, 5, 24
  basis = np.linalg.qr(rng.standard_normal((d, 3)))[0].T  # 3 orthonormal directions
  center = rng.standard_normal(d)
  h = np.zeros((n_iter, n_slots, d))
  for t in range(n_iter):
    decay = 0.4 ** t
    for l in range(n_slots):
      ang = 2 * np.pi * l / n_slots + 0.5 * decay  # spirals onto the pentagon
      h[t, l] = (center + 2.0 * (1 + decay) * (np.cos(ang) * basis[0] + np.sin(ang) * basis[1])
                 + 0.3 * decay * basis[2])
  coords, explained = trajectory.token_trajectory(h)
  assert coords.shape == (n_iter, n_slots, 2)
  assert explained.sum() > 0.95
  summary = trajectory.cycle_summary(coords)
  assert summary["retrace"] < 1e-4  # the last iteration retraces the one before
  assert summary["min_side"] > 0.999  # equal sides: a regular pentagon
  last = coords[-1] - coords[-1].mean(0)
  radii = np.linalg.norm(last, axis=-1)
  np.testing.assert_allclose(radii, radii[0], rtol=1e-3)
  turns = np.diff(np.unwrap(np.arctan2(last[:, 1], last[:, 0])))
  np.testing.assert_allclose(np.abs(turns), 2 * np.pi / n_slots, rtol=1e-3)


def test_attention_variation_entropy_and_sinks():
  rng = np.random.default_rng(0)
  b, n, t = 2, 3, 5
  mask = np.ones((b, t), bool)
  mask[1, :2] = False  # left padding: row 1 starts at column 2
  logits = rng.standard_normal((b, n, t, t))
  allowed = np.tril(np.ones((t, t), bool))[None, None] & mask[:, None, None, :]
  allowed = allowed | np.eye(t, dtype=bool)  # padded rows see themselves (never counted)
  probs = np.where(allowed, np.exp(logits), 0.0)
  probs /= probs.sum(-1, keepdims=True)
  same = np.stack([probs] * 4)  # [I, B, N, T, T], identical iterations
  np.testing.assert_array_equal(attention.row_total_variation(same, mask), 0.0)
  tv = attention.row_total_variation(np.stack([probs, probs[:, ::-1]]), mask)
  assert tv.shape == (1, b, n) and np.all((tv >= 0) & (tv <= 1))
  # Every row of every head on its first real token: sink score 1, entropy 0, sink rate 1.
  sink = np.zeros((b, n, t, t))
  sink[0, :, :, 0] = 1.0
  sink[1, :, :, 2] = 1.0
  np.testing.assert_allclose(attention.sink_score(sink, mask), 1.0)
  np.testing.assert_allclose(attention.head_entropy(sink, mask), 0.0, atol=1e-12)
  assert attention.sink_rate(sink, mask) == 1.0
  # Uniform over the allowed keys: entropy mean log(#keys) over real rows.
  uni = np.where(allowed, 1.0, 0.0)
  uni = uni / uni.sum(-1, keepdims=True)
  keys = np.array([[1, 2, 3, 4, 5], [1, 1, 1, 2, 3]])  # row 1's pads see one key (themselves)
  want = np.array([np.log(keys[0]).mean(), np.log(keys[1][2:]).mean()])
  np.testing.assert_allclose(attention.head_entropy(uni, mask)[:, 0], want, rtol=1e-12)
  # Disjoint one-hot rows between two iterations: TV 1.
  a0 = np.zeros((1, 1, 2, 2))
  a0[..., 0] = 1.0
  a1 = np.zeros((1, 1, 2, 2))
  a1[..., 1] = 1.0
  np.testing.assert_allclose(attention.row_total_variation(np.stack([a0, a1])), 1.0)


@pytest.mark.parametrize("case", ["real", "complex"])
def test_jacobian_spectral_radius_of_known_map(case):
  if case == "real":
    a = _matrix([0.9, -0.6, 0.5, 0.3, 0.2, -0.1], seed=3)
    want = 0.9
  else:
    rng = np.random.default_rng(4)
    q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    blocks = np.zeros((6, 6))
    blocks[:2, :2] = 0.9 * np.array([[np.cos(1.0), -np.sin(1.0)], [np.sin(1.0), np.cos(1.0)]])
    blocks[2:, 2:] = np.diag([0.5, -0.4, 0.3, 0.1])
    a = q @ blocks @ q.T
    want = 0.9
  aj = jnp.asarray(a, jnp.float32)
  f = lambda x: jnp.tanh(aj @ x)  # Jacobian at 0 is A
  x0 = jnp.zeros(6, jnp.float32)
  rad = jacobian.spectral_radius(f, x0, jax.random.key(0), iters=200)
  assert float(rad) == pytest.approx(want, rel=1e-2)
  assert want == pytest.approx(np.abs(np.linalg.eigvals(a)).max(), rel=1e-9)
  nrm = jacobian.spectral_norm(f, x0, jax.random.key(1), iters=200)
  assert float(nrm) == pytest.approx(np.linalg.norm(a, 2), rel=1e-2)


def test_settled_share_reads_the_step_into_the_named_iteration():
  """delta entry k compares iterations k + 1 and k + 2 (counted from 1): "settled by t = 4"
  reads entry 2, over the worst slot, on valid tokens only."""
  delta = np.full((5, 2, 1, 3), 1.0)  # [I-1 = 5, J = 2, B = 1, T = 3]
  delta[2, :, 0, 0] = 1e-3            # token 0 settled into iteration 4 in both slots
  delta[2, 0, 0, 1] = 1e-3            # token 1 only in slot 0
  delta[2, :, 0, 2] = 1e-3            # token 2 settled, but padding
  valid = np.array([[True, True, False]])
  assert convergence.settled_share(delta, 4, valid) == 0.5
  assert convergence.settled_share(delta, 3, valid) == 0.0
  with pytest.raises(ValueError, match="outside 2..6"):
    convergence.settled_share(delta, 7, valid)


def test_analysis_check_one_reads_t_equal_two_rbar_when_reached():
  from jaxlab.looped import analyze  # pylint: disable=import-outside-toplevel
  per = {"8": {"classes": {"all": {"fixed": 1.0}}, "min_slot_distance_median": 0.3,
               "stage_periodicity_error": {"matrix_entropy": 0.0, "bos_norm": 0.0}}}
  metrics = {"per_iteration": per, "pca": {},
             "fixed_share_at_2rbar": {"iteration": 8, "threshold": 1e-2, "value": 0.9}}
  checks = analyze._checks(metrics, 8)  # pylint: disable=protected-access
  check = checks["fixed_point_share"]
  assert (check["value"], check["passed"], check["at"]) == (0.9, False, "t = 2 r-bar = 8")
  assert checks["min_slot_distance"]["value"] == 0.3  # the other checks stay
  del metrics["fixed_share_at_2rbar"]
  checks = analyze._checks(metrics, 8)  # pylint: disable=protected-access
  check = checks["fixed_point_share"]
  assert check["value"] == 1.0 and check["passed"] and "classifier" in check["at"]
  assert checks["min_slot_distance"]["value"] == 0.3
