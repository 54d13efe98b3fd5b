"""How many threads fastcnn's kernels use, and the guard every kernel call runs under.

One process-wide count (default: every thread Numba launched, normally all cores) is
applied to both pools a call may use:

- Numba keeps its thread count *per calling thread* (``numba.set_num_threads`` is
  thread-local), so :func:`guard` applies the count to whichever Python thread calls, and
  remembers per thread what it applied so the hot path costs a dictionary lookup.
- BLAS (NumPy's ``matmul`` for ``linear``) is limited with threadpoolctl to the same count,
  process-wide, re-applied only when the count changes.

Several Python threads may call fastcnn at once: the preferred OpenMP and TBB threading
layers are thread-safe; under Numba's workqueue layer (which aborts on concurrent parallel
launches) :func:`guard` serialises the calls with a lock.
"""

from __future__ import annotations

import threading

import numba
from threadpoolctl import ThreadpoolController

from fastcnn import _config  # noqa: F401  (sets the threading-layer priority first)
from fastcnn._checks import _is_int

_num_threads = numba.config.NUMBA_NUM_THREADS
_local = threading.local()  # .applied: the count this thread last gave Numba
_state_lock = threading.Lock()  # guards the module state below
_blas_applied = None  # the count threadpoolctl last gave BLAS
_serialise = None  # None until the threading layer is known, then a bool
_launch_lock = threading.RLock()  # re-entrant: a guarded op may call another


def get_num_threads() -> int:
    """Return the number of threads fastcnn's kernels run on (an ``int`` >= 1)."""
    return _num_threads


def set_num_threads(n: int) -> None:
    """Run fastcnn's kernels (Numba and BLAS) on ``n`` threads, from every Python thread.

    ``n`` must be an int in ``[1, numba.config.NUMBA_NUM_THREADS]`` (the threads Numba
    launched, by default the number of cores). Takes effect at the next fastcnn call.
    """
    global _num_threads
    limit = numba.config.NUMBA_NUM_THREADS
    if not _is_int(n):
        raise TypeError(f"set_num_threads: n must be an int, got {n!r}")
    n = int(n)
    if not 1 <= n <= limit:
        raise ValueError(f"set_num_threads: n must be in [1, {limit}], got {n}")
    _num_threads = n


def _apply_blas(n: int) -> None:
    global _blas_applied
    with _state_lock:
        if _blas_applied == n:
            return
        # A fresh controller each time: it also finds BLAS libraries loaded since.
        for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
            # threadpoolctl >= 3.6 lets only the first Python thread that limits OpenBLAS
            # change it later; fastcnn's count is process-wide, so any thread may apply
            # it. Release the claim after, so the user's own limits work as before.
            release = getattr(lib, "clear_controlling_thread", None)
            if release is not None:
                release(force=True)
            lib.set_num_threads(n)
            if release is not None:
                release(force=True)
        _blas_applied = n


def _layer_is_thread_safe() -> bool:
    global _serialise
    if _serialise is None:
        # numba.set_num_threads has launched the pool, so the layer is known.
        _serialise = numba.threading_layer() == "workqueue"
    return not _serialise


class _Guard:
    """The context manager :func:`guard` returns (a class: cheaper than a generator)."""

    __slots__ = ("locked",)

    def __enter__(self):
        n = _num_threads
        if getattr(_local, "applied", None) != n:
            numba.set_num_threads(n)
            _local.applied = n
        if _blas_applied != n:
            _apply_blas(n)
        self.locked = not _layer_is_thread_safe()
        if self.locked:
            _launch_lock.acquire()
        return self

    def __exit__(self, *exc_info):
        if self.locked:
            _launch_lock.release()
        return False


def guard() -> _Guard:
    """Context manager around every kernel call of :mod:`fastcnn.functional`.

    Applies :func:`get_num_threads` to Numba for the calling thread and to BLAS, and holds
    a process-wide lock for the duration if the threading layer is not thread-safe.
    """
    return _Guard()
