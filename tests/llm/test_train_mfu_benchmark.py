"""benchmarks/llm_train_mfu.py runs end to end on CPU with a tiny model and reports its MFU."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_mfu_benchmark_runs_on_cpu_with_a_tiny_config():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "-m", "benchmarks.llm_train_mfu", "--preset=tiny",
                         "--steps=2", "--warmup=1", "--batch_size=4",
                         "--peak_tflops=1"], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  mfu = float(re.fullmatch(r"mfu=([0-9.]+)", lines[-1]).group(1))
  assert 0 < mfu < 1
  step = re.search(r"step_time=([0-9.]+)ms .* model_flops/step=([0-9.e+]+) achieved=([0-9.]+)",
                   proc.stdout)
  step_s, flops = float(step.group(1)) / 1e3, float(step.group(2))
  # MFU is model FLOPs / time / peak (1 TFLOP/s here, one device).
  assert abs(flops / step_s / 1e12 - mfu) <= 1e-3 + 0.01 * mfu
  # The model FLOP count agrees with XLA's own count of the compiled step to within the
  # non-matmul work XLA adds (softmax, norms, the optimizer) and its full (non-causal) scores.
  ratio = float(re.search(r"model/xla per device=([0-9.]+)", proc.stdout).group(1))
  assert 0.5 < ratio < 1.2
