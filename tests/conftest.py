"""Suite-wide setup: one persistent XLA compilation cache for the whole test run, and the
slowest tests scheduled first.

Many tests compile the same programs: a launcher subprocess and the in-process test beside
it, the three processes of every resume test (uninterrupted, killed, resumed), the xdist
workers. With a cache shared by every process of one pytest run, each program is compiled
once and loaded afterwards (a loaded executable is the compiled one, so results are unchanged).

The cache lives in a fresh temporary directory made by the first pytest process of the run
(the xdist controller, or the only process), handed to workers and subprocesses through the
environment, and removed when that process ends, so no run reads another run's programs and
timings stay honest. ``JAXLAB_TEST_COMPILATION_CACHE=0`` turns it off; a directory path
in it keeps the cache there (and keeps it afterwards), e.g. to rerun one file quickly.
"""

import os
import shutil
import tempfile

# "<seconds> <node id>" lines from a `pytest --durations` run (setup + call, quiet 2-core
# machine). Only the order of the suite depends on it: the test files with the most known
# time run first, so that the xdist workers end on short tests instead of one waiting for the
# other. Refresh it after big changes; a stale or missing file only costs some balance.
_DURATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "durations.txt")

_ENV = "JAXLAB_TEST_COMPILATION_CACHE"
_created: list[str] = []


def pytest_configure(config):  # pylint: disable=unused-argument
  choice = os.environ.get(_ENV, "")
  if choice == "0":
    return
  if not choice:  # the first process of this run: make the directory its workers inherit
    choice = tempfile.mkdtemp(prefix="jaxlab-test-xla-cache-")
    os.environ[_ENV] = choice
    _created.append(choice)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = choice
  # Cache every program, however fast it compiled (jax's default keeps only those over 1 s).
  # A launcher subprocess compiles ~90 small programs (eager ops of initialisation, metrics,
  # evaluation) of 0.01-0.3 s each: measured on one tiny SFT run (2 cores), its second run took
  # 7 s with them cached and 12-16 s with a 0.3 s threshold.
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_compilation_cache_dir", choice)
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  for path in _created:
    shutil.rmtree(path, ignore_errors=True)


def _known_durations() -> dict[str, float]:
  try:
    with open(_DURATIONS) as f:
      pairs = [line.split(maxsplit=1) for line in f if line.strip()]
  except OSError:
    return {}
  return {node.strip(): float(sec) for sec, node in pairs}


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  """Files with the most known test time first; each file's tests stay together and in
  their order (a stable sort), so module-scoped fixtures are still built once per worker."""
  known = _known_durations()
  if not known:
    return
  per_file: dict[str, float] = {}
  for node, seconds in known.items():
    path = node.split("::", 1)[0]
    per_file[path] = per_file.get(path, 0.0) + seconds
  items.sort(key=lambda item: -per_file.get(item.nodeid.split("::", 1)[0], 0.0))
