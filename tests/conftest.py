"""Suite-wide setup: one persistent XLA compilation cache for the whole test run, programs
compiled with XLA's optimisations mostly off (except in tests marked ``optimized``), and the
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

Most tests run tiny programs a few times, so compiling them costs more than running them.
They compile with jax's ``jax_disable_most_optimizations`` (in-process, and through
``JAX_DISABLE_MOST_OPTIMIZATIONS=1`` in every subprocess they start): XLA skips most of its
optimisation passes and LLVM its expensive ones. What these tests check (shapes, exact
identities, parity within a tolerance, both sides of a comparison compiled alike, resume
equal to an uninterrupted run) does not depend on it. Measured on the 2-core machine
(2026-12-07, load average 1.1-1.6 at the start, 1,297 tests): 21:10 with every test optimised,
17:27 as set here (a TD3 chunk with LEAST, health and resets: 9.3 s of XLA compilation
optimised, 7.7 s not). Optimisations change the last bits of results, so a test whose
threshold was set on optimised programs (a learning test) or that times its programs is
marked ``optimized`` and runs as a user's program does (with the flag on for every test,
gymnax CartPole PPO missed its return threshold, and learning tests ran slower: 18:50).
``JAXLAB_TEST_XLA_OPTIMIZATIONS=1`` compiles every test optimised.

jax's in-memory caches do not key on the flag, so they are cleared whenever it changes between
two tests (``jaxlab.core.compilation.set_unoptimised``; a module-scoped fixture is built under the flag of the first test that asks for it:
a file whose tests compare against such a fixture's run is marked as a whole).
"""

import os
import shutil
import tempfile

import pytest

# "<seconds> <node id>" lines from a `pytest --durations` run (setup + call, quiet 2-core
# machine). Only the order of the suite depends on it: the test files with the most known
# time run first, so that the xdist workers end on short tests instead of one waiting for the
# other. Refresh it after big changes; a stale or missing file only costs some balance.
_DURATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "durations.txt")

_ENV = "JAXLAB_TEST_COMPILATION_CACHE"
_OPTIMIZE_ALL = os.environ.get("JAXLAB_TEST_XLA_OPTIMIZATIONS", "") == "1"
_UNOPTIMISED = "JAX_DISABLE_MOST_OPTIMIZATIONS"
_created: list[str] = []


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "optimized: compiled with XLA's optimisations on, as a user's run is "
      "(learning thresholds, timings); the rest of the suite compiles with most of them off")
  # Before jax is imported anywhere in this process, its workers and their subprocesses.
  os.environ[_UNOPTIMISED] = "0" if _OPTIMIZE_ALL else "1"
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


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
  """Sets the optimisation flag for this test before its fixtures are built."""
  unoptimised = not _OPTIMIZE_ALL and item.get_closest_marker("optimized") is None
  os.environ[_UNOPTIMISED] = "1" if unoptimised else "0"  # for the subprocesses it starts
  from jaxlab.core import compilation  # pylint: disable=import-outside-toplevel
  compilation.set_unoptimised(unoptimised)


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
