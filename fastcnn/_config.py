"""Numba options shared by every kernel, and the threading setup.

Kernels are compiled with :data:`JIT_OPTIONS`; no decorator may spell its own
``fastmath`` flags (``tests/test_config.py`` enforces it).
"""

import os

import numba

from fastcnn import _cache

# LLVM fast-math flags that keep IEEE NaN and inf semantics: no ``nnan`` / ``ninf``,
# and no ``afn`` (approximate exp/log would break agreement with the reference). No
# ``reassoc`` either: it lets LLVM reorder additions as it pleases, and it pleased
# differently for a kernel compiled in the process and the same kernel loaded from
# Numba's cache (measured: the last bits of the cross-entropy and batch-norm gradients on
# batches of 30, so a training run's result depended on whether the cache was warm;
# without ``reassoc`` all 112 op/shape/dtype cases agreed). Sums that must vectorise are
# written out with fastcnn._simd instead.
FASTMATH = frozenset({"nsz", "arcp", "contract"})

JIT_OPTIONS = {
    "cache": True,
    "fastmath": FASTMATH,
    "error_model": "numpy",  # no ZeroDivisionError checks: lets LLVM vectorise divisions
    "nogil": True,  # several Python threads may call kernels at once
}


def jit(parallel=False, inline="never"):
    """Return the ``numba.njit`` decorator every fastcnn kernel uses.

    ``inline="always"`` is for small helpers called once per row in a hot loop: Numba
    inlines them in its own IR. Left to LLVM, a helper with a runtime length was not
    inlined, and each call passed its arrays as some twenty stack arguments: a row copy
    by ``_simd.vcopy`` took about 20 ns a call, 6x the copy itself (measured).

    ``cache=True`` gives each kernel :class:`fastcnn._cache.RobustCache`: a damaged cache
    entry is recompiled and an unwritable cache folder means compiling in memory.
    """
    # Numba wants a mutable set (a frozenset is rejected at compile time).
    options = {**JIT_OPTIONS, "fastmath": set(FASTMATH)}
    return _cache.njit(parallel=parallel, inline=inline, **options)  # cache=True: robust


# Numba's default workqueue layer aborts when two Python threads run parallel
# kernels at once; prefer the thread-safe OpenMP (or TBB) layer where present.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

# GNU OpenMP workers spin this many rounds (2.8 ms of CPU here) after each parallel region
# before they sleep, so the many short kernels of a training step find them awake: a
# sleeping worker woke late or on its caller's core. Measured, the MNIST training step
# at 2 threads, 3-4 alternating processes each: 100 rounds 13.5-18.4 ms, 10,000 13.3-16.5,
# 30,000 14.8-18.0, 100,000 12.1-13.9, libgomp's default 300,000 12.1-14.2. (When the
# convolutions were BLAS GEMMs on BLAS's own threads, spinning workers took their cores,
# so this was 100.) Read when libgomp starts, at the first parallel kernel; a user's
# setting wins.
os.environ.setdefault("GOMP_SPINCOUNT", "100000")
