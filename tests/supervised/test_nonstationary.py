"""Non-stationary supervised benchmark: data loaders, label shifts, vmapped arms, launcher."""

import json
import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core import loop
from jaxlab.core.errors import ConfigError, DataError
from jaxlab.supervised import data as data_lib
from jaxlab.supervised import nonstationary as ns

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --- CIFAR-10 python-version format ------------------------------------------------------------


def _write_batch_by_hand(path, data, labels):
  """The published format, written without our writer: a protocol-2 pickle of a dict with byte
  keys, 'data' uint8 [N, 3072] with the R plane, then G, then B, each 32x32 row-major."""
  with open(path, "wb") as f:
    pickle.dump({b"batch_label": b"testing batch 1 of 1", b"labels": list(map(int, labels)),
                 b"data": data, b"filenames": [b"x.png"] * len(labels)}, f, protocol=2)


def _cifar_dir(tmp_path, per_file=4, seed=0):
  rng = np.random.default_rng(seed)
  for name in data_lib.CIFAR_TRAIN_FILES + (data_lib.CIFAR_TEST_FILE,):
    data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
    _write_batch_by_hand(tmp_path / name, data, rng.integers(0, 10, per_file))
  return str(tmp_path)


def test_cifar_batch_layout(tmp_path):
  data = np.zeros((2, 3072), np.uint8)
  data[1, 0 * 1024 + 5 * 32 + 7] = 11    # red, row 5, column 7
  data[1, 1 * 1024 + 0 * 32 + 31] = 22   # green, row 0, column 31
  data[1, 2 * 1024 + 31 * 32 + 0] = 33   # blue, row 31, column 0
  _write_batch_by_hand(tmp_path / "b", data, [3, 9])
  images, labels = data_lib.read_cifar_batch(str(tmp_path / "b"))
  assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
  assert labels.tolist() == [3, 9] and labels.dtype == np.int32
  assert images[1, 5, 7, 0] == 11 and images[1, 0, 31, 1] == 22 and images[1, 31, 0, 2] == 33
  assert images.sum() == 66
  # Our writer is its exact inverse.
  data_lib.write_cifar_batch(str(tmp_path / "c"), images, labels)
  again, labels2 = data_lib.read_cifar_batch(str(tmp_path / "c"))
  np.testing.assert_array_equal(again, images)
  np.testing.assert_array_equal(labels2, labels)


def test_load_cifar10_directory(tmp_path):
  ds = data_lib.load_cifar10(_cifar_dir(tmp_path), train_size=12, test_size=3)
  assert ds.x_train.shape == (12, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(ds.x_train.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
  full = data_lib.load_cifar10(str(tmp_path))
  assert len(full.y_train) == 5 * 4 and len(full.y_test) == 4


@pytest.mark.parametrize("break_it,match", [
    (lambda d: os.remove(os.path.join(d, "data_batch_3")), "data_batch_3' does not exist"),
    (lambda d: _write_batch_by_hand(os.path.join(d, "test_batch"),
                                    np.zeros((2, 100), np.uint8), [1, 2]),
     r"'data' must be uint8 \[N, 3072\]"),
    (lambda d: _write_batch_by_hand(os.path.join(d, "data_batch_1"),
                                    np.zeros((2, 3072), np.uint8), [1, 12]),
     "label 12 at row 1"),
    (lambda d: open(os.path.join(d, "data_batch_2"), "wb").write(b"not a pickle"),
     "data_batch_2' is not a readable"),
])
def test_bad_cifar_files_name_the_file(tmp_path, break_it, match):
  d = _cifar_dir(tmp_path)
  break_it(d)
  with pytest.raises(DataError, match=match) as err:
    data_lib.load_cifar10(d)
  assert "\n" not in str(err.value)


class _Exploit:
  def __reduce__(self):
    return (os.system, ("echo pwned > /dev/null",))


def test_cifar_loader_refuses_code_in_pickles(tmp_path):
  d = _cifar_dir(tmp_path)
  with open(os.path.join(d, "data_batch_4"), "wb") as f:
    pickle.dump({b"data": _Exploit(), b"labels": []}, f, protocol=2)
  with pytest.raises(DataError, match="refusing to load"):
    data_lib.load_cifar10(d)
  with pytest.raises(DataError, match="does not exist"):
    data_lib.load_cifar10(str(tmp_path / "nowhere"))


def test_digits_offline():
  ds = data_lib.load_digits(train_size=1000, seed=3)
  assert ds.x_train.shape == (1000, 8, 8, 1) and ds.x_test.shape == (797, 8, 8, 1)
  assert set(np.unique(ds.y_train)) == set(range(10))
  again = data_lib.load_digits(train_size=1000, seed=3)
  np.testing.assert_array_equal(ds.y_test, again.y_test)


# --- the trainer -----------------------------------------------------------------------------


def _config(**overrides):
  c = ns.default_config()
  c.data.train_size = 512
  c.data.test_size = 256
  c.batch_size = 64          # 8 steps per epoch
  c.epochs = 4
  c.shift_every_epochs = 2
  c.network.update(width=32, depth=2, trunk_out=16)
  c.log_every = 8
  c.eval.every = 8
  for key, value in overrides.items():
    group, _, name = key.rpartition(".")
    (c[group] if group else c)[name] = value
  return c


@pytest.fixture(scope="module")
def digits():
  return data_lib.load_digits(train_size=512, test_size=256)


def test_trainer_keeps_its_own_copy_of_the_config(digits):
  c = _config()
  t = ns.make_train(c, digits)
  c.epochs, c.network.width = 9, 64
  assert t.config is not c and (t.config.epochs, t.config.network.width) == (4, 32)


def test_label_map_shifts_every_e_epochs(digits):
  t = ns.make_train(_config(), digits)
  maps = [np.asarray(t.label_map(jnp.asarray(u))) for u in range(0, 4 * 8)]
  np.testing.assert_array_equal(maps[0], np.arange(10))   # phase 0: the true labels
  for u in range(16):
    np.testing.assert_array_equal(maps[u], maps[0] if u < 16 else maps[16])
  assert sorted(maps[16].tolist()) == list(range(10))     # a permutation of the classes
  assert not np.array_equal(maps[16], maps[0])            # epochs 2-3: a new mapping
  assert all(np.array_equal(maps[u], maps[16]) for u in range(16, 32))
  stationary = ns.make_train(_config(shift_every_epochs=0), digits)
  np.testing.assert_array_equal(stationary.label_map(jnp.asarray(100)), np.arange(10))


def test_arms_in_one_program_equal_separate_runs(digits):
  """Two SIGReg weights x two learning rates vmapped = four single-arm runs, arm by arm."""
  c = _config(**{"arms.sigreg_weights": (0.0, 0.5), "arms.learning_rates": (1e-3, 3e-3)})
  loop.validate(ns.TRAINER, c)
  t = ns.make_train(c, digits)
  assert t.labels == ["sigreg=0,lr=0.001", "sigreg=0,lr=0.003", "sigreg=0.5,lr=0.001",
                      "sigreg=0.5,lr=0.003"]
  key = jax.random.key(0)
  state, metrics = jax.jit(t.train)(key)
  assert metrics["loss/sigreg@sigreg=0.5,lr=0.003"].shape == (4,)
  for i, (w, lr, _) in enumerate(t.arms):
    single = ns.make_train(_config(**{"aux.sigreg.weight": w, "learning_rate": lr}), digits)
    if w == 0:  # SIGReg is computed for monitoring only when some arm uses it
      single.sigreg_on = True
    s1, _ = jax.jit(single.train)(key)
    jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b[0], rtol=1e-4, atol=1e-5),
                 state.params, s1.params)
  # Different arms did learn different parameters.
  leaf = jax.tree.leaves(state.params)[0]
  assert not np.allclose(leaf[0], leaf[3])


def test_reset_arms_in_one_program(digits):
  """ReDo and ReGraMa arms beside a no-reset arm (spec §4.3, §7.1 item 3c): the no-reset arm is
  the plain run (same init, same minibatches); the reset arms reset neurons on due steps (every
  8 SGD steps = each chunk here) and count them; the no-reset arm never does."""
  c = _config(**{"arms.reset_methods": ("none", "redo", "regrama"), "reset.every": 8,
                 "reset.redo_tau": 0.3, "reset.regrama_tau": 0.3})
  loop.validate(ns.TRAINER, c)
  t = ns.make_train(c, digits)
  assert t.labels == ["sigreg=0,lr=0.001,reset=none", "sigreg=0,lr=0.001,reset=redo",
                      "sigreg=0,lr=0.001,reset=regrama"]
  key = jax.random.key(0)
  state, metrics = jax.jit(t.train)(key)
  plain, _ = jax.jit(ns.make_train(_config(), digits).train)(key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6),
               state.params, plain.params)
  counts = {m: np.asarray(metrics[f"reset/neurons@sigreg=0,lr=0.001,reset={m}"])
            for m in ("none", "redo", "regrama")}
  assert (counts["none"] == 0).all()
  assert counts["redo"].sum() > 0 and counts["regrama"].sum() > 0, counts
  # Neurons of the first layer reset at the last step (step 32) have zeroed outgoing weights:
  # zero rows of the second layer's kernel, in a reset arm only.
  kernel = np.asarray(state.params["trunk"]["hidden"][1]["kernel"][...])  # [arms, in, out]
  zero_rows = (kernel == 0).all(axis=2).sum(axis=1)
  assert zero_rows[0] == 0 and zero_rows[1:].sum() > 0, zero_rows
  ratio = np.asarray(metrics["health/grama_ratio/trunk@sigreg=0,lr=0.001,reset=none"])
  assert ratio.shape == (4,) and ((ratio >= 0) & (ratio <= 1)).all()
  with pytest.raises(ConfigError, match="'config.optimizer.name'='kron': resets zero"):
    loop.validate(ns.TRAINER, _config(**{"arms.reset_methods": ("redo",),
                                         "optimizer.name": "kron"}))


@pytest.mark.optimized  # a learning threshold (tests/conftest.py)
def test_learns_and_recovers_after_a_shift(digits):
  """Phase 0 (8 epochs): test accuracy > 0.85. Right after the shift the training accuracy
  collapses (the old mapping is wrong for ~90% of the classes); by the end of phase 1 the test
  accuracy under the new labels is back above 0.8."""
  c = _config(epochs=16, shift_every_epochs=8, learning_rate=3e-3)
  t = ns.make_train(c, digits)
  state = t.init(jax.random.key(1))
  chunk, evaluate = jax.jit(t.chunk), jax.jit(t.evaluate)
  acc, train_acc = [], []
  for _ in range(16):
    state, m = chunk(state)
    acc.append(float(evaluate(state, jax.random.key(0))[f"test/accuracy@{t.labels[0]}"]))
    train_acc.append(float(m[f"train/accuracy@{t.labels[0]}"]))
  assert acc[7] > 0.85, acc
  assert train_acc[8] < acc[7] - 0.2, (train_acc, acc)  # the first epoch after the shift
  assert acc[15] > 0.8, acc
  for k in ("health/dormant_ratio", "health/effective_rank", "health/srank",
            "health/grad_norm/trunk/hidden/0", "health/grad_norm/head/linear"):
    assert np.isfinite(m[f"{k}@{t.labels[0]}"]), k


@pytest.mark.parametrize("key,value,match", [
    ("arms.reset_methods", ("redo", "reset"), "'config.arms.reset_methods' has 'reset'"),
    ("data.name", "mnist", "'config.data.name'='mnist'"),
    ("network.encoder", "minatar_cnn", "'config.network.encoder'='minatar_cnn'"),
    ("network.depth", 0, "'config.network.depth' must be >= 1"),
    ("shift_every_epochs", -1, "'config.shift_every_epochs'"),
    ("arms.learning_rates", (1e-3, -1.0), "'config.arms.learning_rates'"),
    ("eval.every", 5, "'config.eval.every'=5 must be a multiple"),
])
def test_bad_config_is_one_line(key, value, match):
  c = _config(**{key: value})
  with pytest.raises(ConfigError, match=match) as err:
    loop.validate(ns.TRAINER, c)
  assert "\n" not in str(err.value)
  c = _config(**{"data.name": "cifar10"})
  with pytest.raises(ConfigError, match="'config.data.dir'"):
    loop.validate(ns.TRAINER, c)


def test_launcher_and_analyze_split_arms(tmp_path):
  """launch.train runs the trainer from its config file; launch.analyze makes one row per arm."""
  work = tmp_path / "run"
  cmd = [sys.executable, "-m", "launch.train", "--config=configs/sigreg/ns_digits.py",
         f"--workdir={work}", "--config.epochs=2", "--config.num_seeds=1",
         "--config.network.width=32", "--config.checkpoint.every=10"]
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  with open(work / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert len(records) == 2 and "test/accuracy@sigreg=0.2,lr=0.001" in records[-1]
  out = tmp_path / "analysis"
  result = subprocess.run([sys.executable, "-m", "launch.analyze", f"--workdir={work}",
                           "--keys=test/accuracy,health/effective_rank", f"--out={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  table = (out / "table.md").read_text()
  for arm in ("run@sigreg=0,lr=0.001", "run@sigreg=0.2,lr=0.001", "run@sigreg=1,lr=0.001"):
    assert arm in table, table


@pytest.mark.parametrize("extra, needle", [
    (["--config.network.kind=none"],
     "'config.arms.sigreg_weights' has a weight > 0, but 'config.network.kind'='none'"),
    (["--config.network.preset=tiny"], "'config.network.preset'='tiny'"),
    (["--config.network.depth=0"], "'config.network.depth' must be >= 1"),
])
def test_launcher_refuses_bad_network_with_one_line(tmp_path, extra, needle):
  """``python -m launch.train`` on the SIGReg digits config: one ``error:`` line, exit 2."""
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "launch.train", "--config=configs/sigreg/ns_digits.py",
       f"--workdir={workdir}", *extra], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
  errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
  assert len(errors) == 1 and needle in errors[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert not workdir.exists()


def test_phase_summary_reads_phases_and_seeds():
  """launch.ns_phases: per-phase accuracies per seed, Student-t intervals, the --last window."""
  from launch import ns_phases
  # 2 phases x 3 epochs, 2 seeds; seed 1 is seed 0 + 0.1 everywhere.
  acc0 = [0.5, 0.7, 0.9, 0.2, 0.6, 0.8]
  records = [{"step": i, "phase": [float(i // 3)] * 2,
              "test/accuracy@a": [a, a + 0.1], "health/dormant_ratio@a": [i / 10, i / 10],
              "health/grad_norm/trunk/input@a": [1.0, 3.0]} for i, a in enumerate(acc0)]
  out = ns_phases.arm_summary(records, "a")
  np.testing.assert_allclose(out["mean acc"], [np.mean(acc0), np.mean(acc0) + 0.1])
  np.testing.assert_allclose(out["1st epoch after a shift"], [0.2, 0.3])
  np.testing.assert_allclose(out["end of phase"], [0.85, 0.95])
  np.testing.assert_allclose(out["last phase end"], [0.8, 0.9])
  np.testing.assert_allclose(out["dormant"], [0.25, 0.25])
  np.testing.assert_allclose(out["|grad| 1st layer"], [1.0, 3.0])
  assert "eff. rank" not in out
  last = ns_phases.arm_summary(records, "a", last=2)
  np.testing.assert_allclose(last["mean acc"], [0.7, 0.8])
  np.testing.assert_allclose(last["dormant"], [0.45, 0.45])
  rows = ns_phases._seed_rows("run@a", "run", out)  # pylint: disable=protected-access
  assert [r["seed"] for r in rows] == [0, 1]
  assert rows[1]["mean acc"] == pytest.approx(np.mean(acc0) + 0.1)
  assert np.isnan(rows[0]["eff. rank"])
