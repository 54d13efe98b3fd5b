"""The Numba options of every fastcnn kernel, in one place.

Kernels are compiled with :data:`JIT_OPTIONS` through :func:`jit`; no decorator may spell
its own ``fastmath`` flags (``tests/test_config.py`` enforces it).
"""

from fastcnn import _cache

# LLVM fast-math flags that keep IEEE NaN and inf semantics: no ``nnan`` / ``ninf``, no
# ``afn`` (approximate exp/log). No ``reassoc`` either: it lets LLVM reorder additions as
# it pleases, and it pleased differently for a kernel compiled in the process and the
# same kernel loaded from Numba's cache, so a training run's bits depended on whether
# the cache was warm. Sums that must vectorise are written out in ``_kernels.simd``.
FASTMATH = frozenset({"nsz", "arcp", "contract"})

JIT_OPTIONS = {
    "cache": True,
    "fastmath": FASTMATH,
    "error_model": "numpy",  # no ZeroDivisionError checks: lets LLVM vectorise divisions
    "nogil": True,  # several Python threads may call fastcnn at once
}


def jit(inline: bool = False, new_views: bool = False):
    """Return the ``numba.njit`` decorator of a fastcnn kernel.

    A kernel keeps its C entry point: :mod:`fastcnn._kernels.launch` calls it by address
    on Numba's threads. ``inline=True`` is for small helpers called in hot loops: Numba
    compiles the helper once (per signature) and LLVM inlines it into every caller
    (``forceinline``). Inlined by Numba instead (``inline="always"``), a helper is typed
    again inside each caller, which made compiling several times slower; left to LLVM's
    own judgement, helpers with array arguments were called rather than inlined, and a
    call per row costs more than the row's work.

    Such a helper only borrows its arrays, so it is compiled without reference counting
    (``_nrt=False``): else each call counts a reference up and down on every array it
    takes, with atomic instructions that stay after inlining, and threads sharing an
    array (a weight) contend for its count's cache line. A helper that returns a new view
    of an array needs the counting: ``new_views=True``.

    ``cache=True`` gives each kernel :class:`fastcnn._cache.RobustCache`: a damaged cache
    entry is recompiled and an unwritable cache folder means compiling in memory.
    """
    # Numba wants a mutable set (a frozenset is rejected at compile time).
    options = {**JIT_OPTIONS, "fastmath": set(FASTMATH)}
    if inline:  # called only from other kernels: no Python or C entry points
        options.update(forceinline=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
        options["_nrt"] = new_views
    return _cache.njit(**options)
