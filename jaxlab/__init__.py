"""jaxlab: a JAX-first functional research library (see README.md and DESIGN.md)."""

import os as _os

# XLA's CPU runtime runs LAPACK calls (scipy's OpenBLAS, loaded lazily at the first jitted SVD)
# on several of its own worker threads at once, e.g. the SVDs of vmapped representation metrics.
# A multi-threaded OpenBLAS used that way can deadlock: an ns_supervised run hung in its first
# chunk, waiting on a futex, whenever its output went to a file. XLA already parallelises across
# those calls, so OpenBLAS's own threads add nothing. The variable is read when the library is
# loaded, so this covers scipy's OpenBLAS unless scipy.linalg was imported before jaxlab;
# setdefault: a user's own setting wins.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
