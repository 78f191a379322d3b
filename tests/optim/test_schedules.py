"""jaxlab.optim's learning-rate schedules at known steps, and the RL trainers' schedules as
special cases (constant; linear to 0 over the run)."""

import numpy as np
import pytest

from jaxlab import optim


def test_warmup_then_cosine_values():
  # peak 2, warmup 4, total 24, min ratio 0.25: the ramp is 2/4, 1, 1.5, 2 at steps 0..3; the
  # cosine then runs over 20 steps from 2 to 0.5: at step 4 + 10 (half-way) it is
  # 0.5 + (2 - 0.5) (1 + cos(π/2)) / 2 = 1.25; from step 24 on, 0.5.
  lr = optim.make_schedule(2.0, "cosine", warmup_steps=4, total_steps=24, min_lr_ratio=0.25)
  got = [float(lr(s)) for s in (0, 1, 2, 3, 4, 9, 14, 24, 30)]
  quarter = 0.5 + 1.5 * (1 + np.cos(np.pi * 5 / 20)) / 2
  np.testing.assert_allclose(got, [0.5, 1.0, 1.5, 2.0, 2.0, quarter, 1.25, 0.5, 0.5],
                             rtol=1e-6)


def test_linear_and_constant_values():
  lin = optim.make_schedule(1.0, "linear", warmup_steps=2, total_steps=12, min_lr_ratio=0.5)
  # ramp 0.5, 1; then 1 -> 0.5 over 10 steps: 0.75 at step 7.
  np.testing.assert_allclose([float(lin(s)) for s in (0, 1, 2, 7, 12, 20)],
                             [0.5, 1.0, 1.0, 0.75, 0.5, 0.5], rtol=1e-6)
  const = optim.make_schedule(1.0, "constant", warmup_steps=1, total_steps=12)
  assert [float(const(s)) for s in (0, 5, 100)] == [1.0, 1.0, 1.0]
  # RL's "linear": to 0 at the last optimizer step, no warmup.
  rl = optim.make_schedule(3e-4, "linear", total_steps=10)
  np.testing.assert_allclose([float(rl(s)) for s in (0, 5, 10)], [3e-4, 1.5e-4, 0.0],
                             atol=1e-12)
  assert float(optim.make_schedule(3e-4)(123)) == pytest.approx(3e-4)  # constant, no total


def test_schedule_errors_name_the_argument():
  with pytest.raises(ValueError, match="schedule='step'"):
    optim.make_schedule(1.0, "step", total_steps=10)
  with pytest.raises(ValueError, match="total_steps"):
    optim.make_schedule(1.0, "cosine")
  with pytest.raises(ValueError, match="total_steps"):
    optim.make_schedule(1.0, "constant", warmup_steps=5)
  with pytest.raises(ValueError, match="warmup_steps=-1"):
    optim.make_schedule(1.0, "linear", warmup_steps=-1, total_steps=10)
  with pytest.raises(ValueError, match="decay_mask='norms'"):
    optim.make_optimizer("adamw", 1e-3, decay_mask="norms")
