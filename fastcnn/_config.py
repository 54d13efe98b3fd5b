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


def jit(inline: bool = False, call: bool = False, python: bool = False, new_views: bool = False):
    """Return the ``numba.njit`` decorator of a fastcnn function, by how it is called:

    - ``jit()``: a kernel, run by :func:`fastcnn._threads.run`. :mod:`fastcnn._kernels.launch`
      calls its native code by address, so it has neither of Numba's entry points (a Python
      wrapper that unboxes arguments, a C wrapper): each would carry a copy of the kernel's
      body through LLVM, at a third of its compile time. Called from Python, it raises.
    - ``jit(inline=True)``: a small helper of hot loops. Numba compiles it once (per
      signature) and LLVM inlines it into every caller (``forceinline``). Inlined by Numba
      instead (``inline="always"``), a helper is typed again inside each caller, which made
      compiling several times slower; left to LLVM's own judgement, helpers with array
      arguments were called rather than inlined, and a call per row costs more than the
      row's work.
    - ``jit(call=True)``: a helper that runs once per image or band (a copy, a transpose),
      left to LLVM to call: inlined into a kernel's loop nest, its loops made LLVM's loop
      analyses over the whole nest much slower, for a call that costs nothing.
    - ``jit(python=True)``: called from Python (the launcher, a small sum): a Python
      wrapper, but no C wrapper either.

    Helpers only borrow their arrays, so they are compiled without reference counting
    (``_nrt=False``): else each call counts a reference up and down on every array it
    takes, with atomic instructions that stay after inlining, and threads sharing an
    array (a weight) contend for its count's cache line. A helper that returns a new view
    of an array needs the counting: ``new_views=True``.

    ``cache=True`` gives each kernel :class:`fastcnn._cache.RobustCache`: a damaged cache
    entry is recompiled and an unwritable cache folder means compiling in memory.
    """
    if inline + call + python > 1:
        raise ValueError("jit: at most one of inline, call and python")
    # Numba wants a mutable set (a frozenset is rejected at compile time).
    options = {**JIT_OPTIONS, "fastmath": set(FASTMATH), "no_cfunc_wrapper": True}
    if not python:
        options["no_cpython_wrapper"] = True
    if inline or call:
        options["_nrt"] = new_views
    if inline:
        options["forceinline"] = True
    return _cache.njit(**options)
