"""How many threads fastcnn's kernels use, and the guard every kernel call runs under.

One process-wide count (default: every thread Numba launched, normally all cores) is
applied to both pools a call may use:

- Numba keeps its thread count *per calling thread* (``numba.set_num_threads`` is
  thread-local), so :func:`guard` applies the count to whichever Python thread calls, and
  remembers per thread what it applied so the hot path costs a dictionary lookup.
- BLAS (NumPy's ``matmul``) is limited with threadpoolctl to the same count,
  process-wide, re-applied only when the count changes.

Work made of many BLAS calls with Numba kernels in between (the GEMM paths of the
convolutions and of ``linear``, for the shapes the SIMD kernels do not take) runs instead as
independent slices of the batch on as many threads (:func:`run_slices`), each with Numba
and BLAS on one thread: no pool waits for another, and nothing synchronises until the end.

Several Python threads may call fastcnn at once: the preferred OpenMP and TBB threading
layers are thread-safe; under Numba's workqueue layer (which aborts on concurrent parallel
launches) :func:`guard` serialises the calls with a lock.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numba
from threadpoolctl import ThreadpoolController

from fastcnn import _config  # noqa: F401  (sets the threading-layer priority first)
from fastcnn._checks import _is_int
from fastcnn._workspace import scratch

_num_threads = numba.config.NUMBA_NUM_THREADS
_local = threading.local()  # .applied: the count this thread last gave Numba
_state_lock = threading.Lock()  # guards the module state below
_blas_applied = None  # the count threadpoolctl last gave BLAS
_serialise = None  # None until the threading layer is known, then a bool
_launched = False  # whether _launch has started Numba's thread pool
_launch_lock = threading.RLock()  # re-entrant: a guarded op may call another
_blas_libs = []  # threadpoolctl's controllers of the BLAS libraries _apply_blas found
_single_blas_users = 0  # run_slices calls in progress, which hold BLAS at one thread
_helpers = None  # the ThreadPoolExecutor of run_slices, made on first use
_helper_count = 0  # its number of threads


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
    global _blas_applied, _blas_libs
    with _state_lock:
        if _blas_applied == n:
            return
        # A fresh controller each time: it also finds BLAS libraries loaded since.
        _blas_libs = ThreadpoolController().select(user_api="blas").lib_controllers
        if not _single_blas_users:  # else the last run_slices call applies it
            _set_blas(n)
        _blas_applied = n


def _set_blas(n: int) -> None:
    for lib in _blas_libs:
        # threadpoolctl >= 3.6 lets only the first Python thread that limits OpenBLAS
        # change it later; fastcnn's count is process-wide, so any thread may apply it.
        # Release the claim after, so the user's own limits work as before.
        release = getattr(lib, "clear_controlling_thread", None)
        if release is not None:
            release(force=True)
        lib.set_num_threads(n)
        if release is not None:
            release(force=True)


def _launch() -> None:
    """Start Numba's thread pool, keeping the OpenMP thread counts set before it started.

    Starting Numba's OpenMP layer sets the thread count of every OpenMP runtime already
    in the process (libgomp, the one torch uses included) to Numba's count: a
    ``torch.set_num_threads(1)`` was undone by fastcnn's first call, so torch then ran on
    every core. The counts are read before and put back after.
    """
    global _launched
    with _state_lock:
        if _launched:
            return
        before = {
            lib.filepath: lib.num_threads
            for lib in ThreadpoolController().select(user_api="openmp").lib_controllers
        }
        numba.get_num_threads()  # launches the pool
        # A fresh controller: setting the count through one made before the launch did not
        # take (seen with torch's libgomp).
        for lib in ThreadpoolController().select(user_api="openmp").lib_controllers:
            if lib.filepath in before and lib.num_threads != before[lib.filepath]:
                lib.set_num_threads(before[lib.filepath])
        _launched = True


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
            if not _launched:
                _launch()
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


# --- slices of the batch on several threads ------------------------------------------


def slices(n: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into contiguous ``(start, stop)`` slices for :func:`run_slices`:
    one per thread of :func:`get_num_threads`, or a single slice where that cannot help
    (one thread, fewer items than threads, or a threading layer that is not thread-safe).
    """
    parts = min(_num_threads, n)
    if parts <= 1 or not _layer_is_thread_safe():
        return [(0, n)]
    return [(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


def run_slices(work, parts: list[tuple[int, int]]) -> None:
    """Call ``work(start, stop)`` for every slice of ``parts`` (from :func:`slices`, more than
    one) at the same time: the first on the calling thread, the others on helper threads.

    Each call runs its Numba kernels on one thread, and BLAS is held at one thread
    (process-wide) until the last concurrent ``run_slices`` returns. Returns when every
    call has returned; an exception of any call is raised then.
    """
    global _single_blas_users
    helpers = _executor(len(parts) - 1)
    with _state_lock:
        if not _single_blas_users:
            _set_blas(1)
        _single_blas_users += 1
    try:
        futures = [helpers.submit(_serially, work, *part) for part in parts[1:]]
        try:
            _serially(work, *parts[0])
        finally:
            wait(futures)  # never return while a helper still writes
        for future in futures:
            future.result()  # re-raise a helper's exception
    finally:
        with _state_lock:
            _single_blas_users -= 1
            if not _single_blas_users and _blas_applied is not None:
                _set_blas(_blas_applied)


def sum_over_slices(parts, work, out, run) -> None:
    """``out`` = the sum of ``work(start, stop, dst)`` over the slices of ``parts``, each
    writing its own sum to ``dst``: ``out`` itself for the first slice, a scratch buffer
    for the others, added in slice order afterwards (the same bits on every run).
    ``run(each)`` runs ``each(start, stop)`` over the slices, e.g. with :func:`run_slices`.
    """
    partial = scratch("threads.slice_sums", (len(parts) - 1, *out.shape), out.dtype)

    def each(start, stop):
        i = parts.index((start, stop))
        work(start, stop, out if i == 0 else partial[i - 1])

    run(each)
    for p in partial:
        out += p


def _serially(work, start: int, stop: int) -> None:
    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        work(start, stop)
    finally:
        numba.set_num_threads(n)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _helpers, _helper_count
    with _state_lock:
        if _helper_count < workers:
            if _helpers is not None:
                _helpers.shutdown(wait=False)
            _helpers = ThreadPoolExecutor(workers, thread_name_prefix="fastcnn")
            _helper_count = workers
        return _helpers


def _forget_helpers() -> None:
    """In a forked child only the forking thread survives: no helpers, no slices running,
    and BLAS's count is re-applied by the next call."""
    global _helpers, _helper_count, _single_blas_users, _blas_applied, _state_lock
    _helpers, _helper_count, _single_blas_users, _blas_applied = None, 0, 0, None
    _state_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)
