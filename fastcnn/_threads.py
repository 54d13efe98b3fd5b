"""How many threads fastcnn's kernels use, and how an op's work is split over them.

Every kernel is a serial Numba function over a range of its work. An op big enough to
pay for more than one thread runs as contiguous parts of that range at once on Numba's
thread pool (:func:`run`, through :mod:`fastcnn._kernels.launch`); smaller work runs as
one part on the calling thread. A part's result depends only on the part boundaries,
which depend only on the work and the thread count, so results are bitwise repeatable
at a thread count.

The count is process-wide (default: every thread Numba launched, normally all cores).
Several Python threads may call fastcnn at once: the OpenMP and TBB threading layers
are thread-safe; under Numba's workqueue layer (which aborts on concurrent launches)
launches are serialised by a lock. A process forked after its parent launched kernels
runs its own on one thread: GNU OpenMP cannot start its threads again in a forked child.
"""

from __future__ import annotations

import os
import threading

import numba
from threadpoolctl import ThreadpoolController

from fastcnn._checks import _is_int

# Numba's default workqueue layer aborts when two Python threads launch at once; prefer
# the thread-safe OpenMP (or TBB) layer where present.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

# GNU OpenMP workers spin this many rounds after each launch before they sleep, so the
# many short kernels of a training step find them awake (a sleeping worker wakes late in a
# VM). Read when libgomp starts, at the first launch; a user's setting wins.
os.environ.setdefault("GOMP_SPINCOUNT", "100000")

MAX_THREADS = numba.config.NUMBA_NUM_THREADS
# Elements that pay for a thread in a memory-bound op (element-wise, pooling, sums).
GRAIN_ELEMENTS = 65536

_num_threads = MAX_THREADS
_state_lock = threading.Lock()
_launch_module = None  # fastcnn._kernels.launch, once the pool has started
_serialise = False  # True under the workqueue layer: one launch at a time
_launch_lock = threading.Lock()
_forked = False  # a child forked after its parent started Numba's threads


def get_num_threads() -> int:
    """Return the number of threads fastcnn's kernels run on (an ``int`` >= 1)."""
    return _num_threads


def set_num_threads(n: int) -> None:
    """Run fastcnn's kernels on at most ``n`` threads, from every Python thread.

    ``n`` must be an int in ``[1, numba.config.NUMBA_NUM_THREADS]`` (the threads Numba
    launches, by default the number of cores). Takes effect at the next fastcnn call.
    """
    global _num_threads
    if not _is_int(n):
        raise TypeError(f"set_num_threads: n must be an int, got {n!r}")
    n = int(n)
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be in [1, {MAX_THREADS}], got {n}")
    _num_threads = n


def parts(n: int, work: float, grain: float) -> int:
    """How many parts to split ``range(n)`` into: at most one per thread of
    :func:`get_num_threads`, at most ``n``, and at most ``work // grain`` (``work`` the op's
    cost and ``grain`` the least cost that pays for a thread, in one unit), at least 1."""
    if _forked:
        return 1
    return int(max(1, min(_num_threads, n, work // grain)))


def bounds(part: int, count: int, n: int) -> tuple[int, int]:
    """``(start, stop)`` of part ``part`` of ``count`` parts of ``range(n)``, as :func:`run`
    cuts them."""
    return part * n // count, (part + 1) * n // count


def run(kernel, count: int, n: int, *args) -> None:
    """Call ``kernel(part, start, stop, *args)`` for ``count`` contiguous parts of
    ``range(n)`` (:func:`bounds`) at once, then return. ``kernel`` is a fastcnn kernel
    (:func:`fastcnn._config.jit`); ``count`` from :func:`parts`."""
    launch = _launch_module or _start()
    if _serialise and count > 1:  # the workqueue layer: one launch at a time (one part
        with _launch_lock:  # runs on this thread, waking no worker)
            launch.launch(kernel, count, n, args, count)
    else:
        launch.launch(kernel, count, n, args, count)


def _start():
    """Start Numba's thread pool, keeping the OpenMP thread counts set before it started;
    return :mod:`fastcnn._kernels.launch`.

    Starting Numba's OpenMP layer sets the thread count of every OpenMP runtime already in
    the process (libgomp, the one torch uses included) to Numba's count: a
    ``torch.set_num_threads(1)`` was undone by fastcnn's first call. The counts are read
    before and put back after.
    """
    global _launch_module, _serialise
    from fastcnn._kernels import launch

    with _state_lock:
        if _launch_module is not None:
            return launch
        before = {
            lib.filepath: lib.num_threads
            for lib in ThreadpoolController().select(user_api="openmp").lib_controllers
        }
        launch.start_threads()
        # A fresh controller: setting the count through one made before the start did
        # not take (seen with torch's libgomp).
        for lib in ThreadpoolController().select(user_api="openmp").lib_controllers:
            if lib.filepath in before and lib.num_threads != before[lib.filepath]:
                lib.set_num_threads(before[lib.filepath])
        _serialise = numba.threading_layer() == "workqueue"
        _launch_module = launch
    return launch


def _after_fork_in_child() -> None:
    global _forked
    _forked = _launch_module is not None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
