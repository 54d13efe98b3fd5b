"""Numba options shared by every kernel, and the threading setup.

Kernels are compiled with :data:`JIT_OPTIONS`; no decorator may spell its own
``fastmath`` flags (``tests/test_config.py`` enforces it).
"""

import os

import numba

# LLVM fast-math flags that keep IEEE NaN and inf semantics: no ``nnan`` / ``ninf``,
# and no ``afn`` (approximate exp/log would break agreement with the reference).
FASTMATH = frozenset({"nsz", "arcp", "contract", "reassoc"})

JIT_OPTIONS = {
    "cache": True,
    "fastmath": FASTMATH,
    "error_model": "numpy",  # no ZeroDivisionError checks: lets LLVM vectorise divisions
    "nogil": True,  # several Python threads may call kernels at once
}


def jit(parallel=False):
    """Return the ``numba.njit`` decorator every fastcnn kernel uses."""
    # Numba wants a mutable set (a frozenset is rejected at compile time).
    return numba.njit(parallel=parallel, **{**JIT_OPTIONS, "fastmath": set(FASTMATH)})


# Numba's default workqueue layer aborts when two Python threads run parallel
# kernels at once; prefer the thread-safe OpenMP (or TBB) layer where present.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

# GNU OpenMP workers spin for a long while after each parallel region; between the many
# short kernels of a training step the spinning threads steal the cores OpenBLAS needs
# for the GEMMs (measured: an MNIST step took 110 ms at 2 threads instead of 40 ms).
# Read when libgomp starts, at the first parallel kernel; a user's setting wins.
os.environ.setdefault("GOMP_SPINCOUNT", "100")
