"""Small image-classification datasets for the supervised plasticity benchmarks (spec §2.1, §7.1).

* ``cifar10``: CIFAR-10 from a local directory in its standard "python version" format: the
  pickled dicts ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``, each with ``data``
  (uint8 [N, 3072], rows of 1024 red, then green, then blue values of a 32x32 image, row-major)
  and ``labels`` (N ints in 0..9). Nothing is downloaded.
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, values
  0..16). It ships inside the package, so it is the offline default that tests and CPU runs use.

Both return a :class:`Dataset` of float32 images [N, H, W, C] standardised per channel with the
training set's statistics, and int32 labels [N].

The CIFAR files are pickles. Unpickling can run arbitrary code, so the loader uses an unpickler
that only reconstructs the plain types and numpy arrays the format contains and refuses
anything else with a :class:`~jaxlab.core.errors.DataError`.
"""

from __future__ import annotations

import os
import pickle
from typing import NamedTuple

import numpy as np

from jaxlab.core.errors import DataError

DATASETS = ("digits", "cifar10")
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
NUM_CLASSES = 10


class Dataset(NamedTuple):
  """Train and test splits (numpy; the trainer moves them to the device).

  Attributes:
    x_train: [N, H, W, C] float32, standardised per channel.
    y_train: [N] int32 class ids in [0, num_classes).
    x_test: [M, H, W, C] float32, standardised with the training statistics.
    y_test: [M] int32.
    num_classes: number of classes.
    name: dataset name, for messages.
  """
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str


# (module, name) pairs a CIFAR-10 pickle may reference: numpy array reconstruction (numpy 1 and
# 2 module paths) and the byte-string codec that Python 3 uses for protocol-2 bytes.
_ALLOWED_GLOBALS = {
  ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
  ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
  ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED_GLOBALS:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
    return super().find_class(module, name)


def read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
  """One CIFAR-10 batch file -> (images uint8 [N, 32, 32, 3], labels int32 [N])."""
  if not os.path.isfile(path):
    raise DataError(f"CIFAR-10 file '{path}' does not exist; the directory must hold "
                    f"{', '.join(CIFAR_TRAIN_FILES)} and {CIFAR_TEST_FILE} (python version)")
  try:
    with open(path, "rb") as f:
      record = _ArrayOnlyUnpickler(f, encoding="bytes").load()
  except Exception as err:  # pylint: disable=broad-except
    raise DataError(f"CIFAR-10 file '{path}' is not a readable python-version batch: "
                    f"{type(err).__name__}: {err}") from None
  if not isinstance(record, dict):
    raise DataError(f"CIFAR-10 file '{path}' holds a {type(record).__name__}, expected a dict "
                    "with keys 'data' and 'labels'")
  record = {(k.decode() if isinstance(k, bytes) else k): v for k, v in record.items()}
  for key in ("data", "labels"):
    if key not in record:
      raise DataError(f"CIFAR-10 file '{path}' has no '{key}' entry (keys: "
                      f"{sorted(map(str, record))})")
  data = np.asarray(record["data"])
  labels = np.asarray(record["labels"])
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
    raise DataError(f"CIFAR-10 file '{path}': 'data' must be uint8 [N, 3072], got "
                    f"{data.dtype} {list(data.shape)}")
  if labels.shape != (data.shape[0],):
    raise DataError(f"CIFAR-10 file '{path}': 'labels' has {labels.size} entries for "
                    f"{data.shape[0]} images")
  bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
  if bad.size:
    raise DataError(f"CIFAR-10 file '{path}': label {int(labels[bad[0]])} at row {int(bad[0])} "
                    f"is outside 0..{NUM_CLASSES - 1}")
  # Rows are channel-major (R plane, G plane, B plane); images here are channels-last.
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, labels.astype(np.int32)


def load_cifar10(directory: str, *, train_size: int = 0, test_size: int = 0,
                 seed: int = 0) -> Dataset:
  """CIFAR-10 from ``directory`` (python-version batches), optionally subsampled.

  Args:
    directory: holds ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``.
    train_size: keep this many training images, drawn without replacement with ``seed``
      (0: all 50000). The SIGReg CIFAR experiment uses a 10k subset (spec §1.5).
    test_size: the same for the test set (0: all 10000).
    seed: seed of the subsets.

  Returns:
    A :class:`Dataset` of [N, 32, 32, 3] float32 images.

  Raises:
    DataError: a missing directory or file, or a malformed record (names the file).
  """
  if not os.path.isdir(directory):
    raise DataError(f"CIFAR-10 directory '{directory}' does not exist")
  parts = [read_cifar_batch(os.path.join(directory, name)) for name in CIFAR_TRAIN_FILES]
  x_train = np.concatenate([p[0] for p in parts])
  y_train = np.concatenate([p[1] for p in parts])
  x_test, y_test = read_cifar_batch(os.path.join(directory, CIFAR_TEST_FILE))
  rng = np.random.default_rng(seed)
  x_train, y_train = _subset(x_train, y_train, train_size, rng, "train_size")
  x_test, y_test = _subset(x_test, y_test, test_size, rng, "test_size")
  return _standardise(x_train.astype(np.float32) / 255.0, y_train,
                      x_test.astype(np.float32) / 255.0, y_test, "cifar10")


def load_digits(*, train_size: int = 1280, test_size: int = 0, seed: int = 0) -> Dataset:
  """scikit-learn's 8x8 digits, split at random (``seed``) into train and test.

  Args:
    train_size: training images (of 1797); the rest are the test set.
    test_size: cap on the test images (0: all the rest).
    seed: seed of the split.

  Returns:
    A :class:`Dataset` of [N, 8, 8, 1] float32 images.
  """
  try:
    from sklearn import datasets  # pylint: disable=import-outside-toplevel
  except ImportError as err:
    raise DataError("the 'digits' dataset needs scikit-learn (pip install scikit-learn)") from err
  digits = datasets.load_digits()
  images = digits.images.astype(np.float32)[..., None] / 16.0
  labels = digits.target.astype(np.int32)
  n = len(labels)
  if not 0 < train_size < n:
    raise DataError(f"digits has {n} images; train_size={train_size} must be in 1..{n - 1}")
  order = np.random.default_rng(seed).permutation(n)
  train, test = order[:train_size], order[train_size:]
  if test_size:
    test = test[:test_size]
  return _standardise(images[train], labels[train], images[test], labels[test], "digits")


def load(name: str, *, directory: str = "", train_size: int = 0, test_size: int = 0,
         seed: int = 0) -> Dataset:
  """Loads ``name`` ("digits" or "cifar10"); see :func:`load_digits` and :func:`load_cifar10`."""
  if name == "digits":
    return load_digits(train_size=train_size or 1280, test_size=test_size, seed=seed)
  if name == "cifar10":
    return load_cifar10(directory, train_size=train_size, test_size=test_size, seed=seed)
  raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def _subset(x, y, size, rng, what):
  if not size:
    return x, y
  if size > len(y):
    raise DataError(f"{what}={size} is larger than the {len(y)} images available")
  idx = np.sort(rng.choice(len(y), size, replace=False))
  return x[idx], y[idx]


def _standardise(x_train, y_train, x_test, y_test, name) -> Dataset:
  # Per-channel mean and std of the training images, applied to both splits.
  mean = x_train.mean(axis=(0, 1, 2), keepdims=True)
  std = x_train.std(axis=(0, 1, 2), keepdims=True) + 1e-6
  return Dataset(((x_train - mean) / std).astype(np.float32), y_train,
                 ((x_test - mean) / std).astype(np.float32), y_test, NUM_CLASSES, name)


def write_cifar_batch(path: str, images: np.ndarray, labels: np.ndarray,
                      batch_label: str = "batch") -> None:
  """Writes images [N, 32, 32, 3] uint8 and labels [N] as one python-version CIFAR-10 batch.

  The inverse of the loader's reading, for tests and for converting other data into the format:
  a dict with byte-string keys ``data`` (uint8 [N, 3072], channel-major rows), ``labels`` (a
  list of ints), ``batch_label`` and ``filenames``, pickled with protocol 2 as the originals.
  """
  images = np.asarray(images, np.uint8)
  record = {
    b"batch_label": batch_label.encode(),
    b"labels": [int(v) for v in labels],
    b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
    b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
  }
  with open(path, "wb") as f:
    pickle.dump(record, f, protocol=2)
