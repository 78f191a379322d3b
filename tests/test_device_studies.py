"""The CPU smoke version of every GPU study preset (benchmarks/device/studies.py, issue 16).

Each preset runs in-process at its ``--smoke`` size (one JAX start-up for all of them) through
the same code path as the GPU run: probe, plan, arms through the project's trainers, metrics,
plot, verdict. Checked: ``metrics.json`` is valid JSON with per-arm, per-seed values and curves,
``curves.png`` is a PNG, and the last printed line is a well-formed verdict.

Cost: nearly all of it is XLA compilation of each arm's programs (the smoke sizes in
studies.py are chosen for that); about 2 minutes of one core for the five presets.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re

import pytest

# The smoke presets turn optimisations off themselves and check that they are on again
# afterwards (tests/conftest.py).
pytestmark = pytest.mark.optimized

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDIES = ("sigreg", "stable_gradients", "grama", "least", "asyppo")
VERDICT = re.compile(r"^verdict=(reproduced|partly|contradicted|inconclusive) (\S+) \S.*$")


@pytest.fixture(scope="module")
def studies():
  return importlib.import_module("benchmarks.device.studies")


@pytest.mark.parametrize("study", STUDIES)
def test_smoke_preset(study, studies, tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(ROOT)
  out = tmp_path / "out"
  assert studies.main([f"--study={study}", "--smoke", f"--out={out}",
                       f"--workdir={tmp_path / 'work'}"]) == 0
  import jax  # pylint: disable=import-outside-toplevel
  # the smoke mode turns XLA's optimisations off for the preset only
  assert not jax.config.read("jax_disable_most_optimizations")
  lines = [l for l in capsys.readouterr().out.splitlines() if l.strip()]
  # (trainers may print their own lines, e.g. llm_rl's KL summary)
  assert any(l.startswith(f"plan {study}: 3 chunks") for l in lines), lines
  m = VERDICT.match(lines[-1])
  assert m and m.group(2) == study, lines[-1]

  with open(out / "metrics.json") as f:
    doc = json.load(f)
  assert doc["study"] == study and doc["smoke"] is True
  assert doc["verdict"] == m.group(1)
  assert doc["plan"]["chunks"] == 3 and doc["plan"]["chunk_s"] > 0
  assert set(doc["plan"]) >= {"fixed_s", "eval_s", "units_per_chunk", "units_per_run"}
  assert len(doc["arms"]) >= 2
  for label, arm in doc["arms"].items():
    assert arm["num_seeds"] == 2, label
    assert arm["seeds"], label
    for name, values in arm["seeds"].items():
      assert len(values) == 2, (label, name)
      mean, half = arm["summary"][name]
      assert mean is None or isinstance(mean, float)
    assert arm["curves"], label
    for key, cur in arm["curves"].items():
      assert len(cur["x"]) == len(cur["values"]) >= 1, (label, key)
      assert all(len(v) == 2 for v in cur["values"]), (label, key)
  primary = {"sigreg": "auc_eval_return", "stable_gradients": "auc_eval_return",
             "grama": "final_grama_critic", "least": "auc_eval_return",
             "asyppo": "mean_reward"}[study]
  for arm in doc["arms"].values():
    assert all(v is None or math.isfinite(v) for v in arm["seeds"][primary])
  with open(out / "curves.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_unoptimised_compilation_leaves_no_program_behind(studies):
  """Programs compiled in smoke mode are unoptimised; jax's in-memory caches do not key on
  that flag, so leaving the mode must drop them (else later calls in the same process, e.g.
  other tests on this xdist worker, would run them: last-bit different numbers)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  f = jax.jit(lambda x: jnp.tanh(x) @ x)
  x = jnp.ones((4, 4))
  with studies.unoptimised_compilation():
    assert jax.config.read("jax_disable_most_optimizations")
    f(x)
    assert f._cache_size() == 1  # pylint: disable=protected-access
  assert not jax.config.read("jax_disable_most_optimizations")
  assert f._cache_size() == 0  # pylint: disable=protected-access
