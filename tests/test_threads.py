"""fastcnn.set_num_threads / get_num_threads and the guard around every kernel call.

The concurrency tests run parallel kernels from several Python threads at once (started
together at a barrier) and compare every result with the one computed beforehand on one
thread: same inputs and same thread count give bitwise the same result.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numba
import numpy as np
import pytest
from cases import make_rng, randn
from threadpoolctl import threadpool_info

import fastcnn
from fastcnn import _threads
from fastcnn import functional as F

MAX_THREADS = numba.config.NUMBA_NUM_THREADS


@pytest.fixture
def restore_threads():
    before = fastcnn.get_num_threads()
    yield
    fastcnn.set_num_threads(before)


def test_default_is_all_threads():
    """In a fresh process: other tests in this one may have changed the count."""
    code = "import fastcnn, numba; print(fastcnn.get_num_threads(), numba.config.NUMBA_NUM_THREADS)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got, launched = map(int, proc.stdout.split())
    assert got == launched >= 1


@pytest.mark.parametrize("n", [1, MAX_THREADS, np.int64(1)], ids=["one", "all", "numpy-int"])
def test_set_get_round_trip(n, restore_threads):
    fastcnn.set_num_threads(n)
    assert fastcnn.get_num_threads() == n
    assert type(fastcnn.get_num_threads()) is int


@pytest.mark.parametrize(
    "n, error",
    [
        pytest.param(0, ValueError, id="zero"),
        pytest.param(-1, ValueError, id="negative"),
        pytest.param(MAX_THREADS + 1, ValueError, id="more-than-launched"),
        pytest.param(1.0, TypeError, id="float"),
        pytest.param("2", TypeError, id="str"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param(None, TypeError, id="none"),
    ],
)
def test_set_num_threads_rejects(n, error, restore_threads):
    before = fastcnn.get_num_threads()
    with pytest.raises(error, match=r"set_num_threads: n must"):
        fastcnn.set_num_threads(n)
    assert fastcnn.get_num_threads() == before


def _blas_threads():
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


@pytest.mark.parametrize("n", [1, MAX_THREADS], ids=["one", "all"])
def test_guard_applies_the_count_to_numba_and_blas(n, restore_threads):
    fastcnn.set_num_threads(n)
    seen = {}

    def worker():  # a fresh Python thread: Numba's count there is its own
        with _threads.guard():
            seen["numba"] = numba.get_num_threads()
            seen["blas"] = _blas_threads()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["numba"] == n
    assert seen["blas"] <= {n}  # empty if no BLAS is loaded


def test_guard_is_reentrant():
    with _threads.guard(), _threads.guard():
        assert numba.get_num_threads() == fastcnn.get_num_threads()


# --- slices of the batch on several threads --------------------------------------------


@pytest.mark.parametrize(
    "n, threads, expected",
    [
        pytest.param(10, 1, [(0, 10)], id="one-thread"),
        pytest.param(1, 2, [(0, 1)], id="one-item"),
        pytest.param(0, 2, [(0, 0)], id="no-items"),
        pytest.param(7, 2, [(0, 3), (3, 7)], id="odd"),
    ],
)
def test_slices_cover_the_range(n, threads, expected, restore_threads):
    if threads > MAX_THREADS:
        pytest.skip(f"needs {threads} threads")
    fastcnn.set_num_threads(threads)
    assert _threads.slices(n) == expected


@pytest.mark.skipif(MAX_THREADS < 2, reason="needs two threads")
def test_run_slices_runs_each_slice_once_on_its_own_thread_with_one_thread_pools(
    restore_threads,
):
    fastcnn.set_num_threads(2)
    seen = []
    with _threads.guard():
        _threads.run_slices(
            lambda a, b: seen.append((a, b, threading.get_ident(), numba.get_num_threads(),
                                      _blas_threads())),
            [(0, 3), (3, 7)],
        )  # fmt: skip
        after = _blas_threads()
    assert sorted(s[:2] for s in seen) == [(0, 3), (3, 7)]
    assert len({s[2] for s in seen}) == 2
    assert all(s[3] == 1 and s[4] <= {1} for s in seen)
    assert after <= {2}  # BLAS is given its count back


@pytest.mark.skipif(MAX_THREADS < 2, reason="needs two threads")
def test_run_slices_raises_a_slice_error_after_every_slice_has_returned(restore_threads):
    fastcnn.set_num_threads(2)
    finished = []

    def work(a, b):
        if a == 0:
            raise ZeroDivisionError("first slice")
        time.sleep(0.05)  # the other slice is still running when the first fails
        finished.append(b)

    with _threads.guard(), pytest.raises(ZeroDivisionError, match="first slice"):
        _threads.run_slices(work, [(0, 1), (1, 2)])
    assert finished == [2]


# --- several Python threads at once --------------------------------------------------


def _workloads(seed):
    """Named calls of parallel kernels on inputs of their own."""
    rng = make_rng(seed)
    x = randn(rng, (8, 6, 14, 14), np.float32)
    w = randn(rng, (5, 6, 3, 3), np.float32)
    gamma = randn(rng, 6, np.float32)
    logits = randn(rng, (32, 10), np.float64)
    targets = rng.integers(0, 10, 32)
    return {
        "conv2d": lambda: F.conv2d(x, w, None, padding=1),
        "conv2d_grad_input": lambda: F.conv2d_grad_input(x.shape, w, x[:, :5], padding=1),
        "conv2d_grad_weight": lambda: F.conv2d_grad_weight(x, w.shape, x[:, :5], padding=1),
        "max_pool2d": lambda: F.max_pool2d(x, 2),
        "batch_norm2d": lambda: F.batch_norm2d(x, gamma, None, None, None)[0],
        "softmax": lambda: F.softmax(x, axis=1),
        "cross_entropy": lambda: F.cross_entropy(logits, targets)[1],
        "linear": lambda: F.linear(logits, logits[:7]),
    }


def _run_concurrently(n_workers, rounds):
    """Each worker runs its own workloads ``rounds`` times; returns results and errors."""
    jobs = [_workloads(seed) for seed in range(n_workers)]
    expected = [{name: f() for name, f in job.items()} for job in jobs]
    barrier = threading.Barrier(n_workers)
    results = [dict() for _ in range(n_workers)]
    errors = []

    def worker(i):
        try:
            barrier.wait()
            for _ in range(rounds):
                for name, f in jobs[i].items():
                    results[i].setdefault(name, []).append(f())
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return expected, results, errors


@pytest.mark.parametrize("n_threads", [1, MAX_THREADS], ids=["kernels-1thread", "kernels-all"])
def test_concurrent_python_threads_get_correct_results(n_threads, restore_threads):
    fastcnn.set_num_threads(n_threads)
    expected, results, errors = _run_concurrently(n_workers=4, rounds=5)
    assert errors == []
    for want, got in zip(expected, results, strict=True):
        for name, outputs in got.items():
            assert len(outputs) == 5
            for out in outputs:
                np.testing.assert_array_equal(out, want[name], err_msg=name, strict=True)


def test_workqueue_layer_is_serialised():
    """Under Numba's workqueue layer (which aborts on concurrent parallel launches) the
    guard serialises the calls: the same concurrent run exits cleanly and correctly."""
    script = textwrap.dedent(
        """
        import numba, numpy as np, sys
        sys.path.insert(0, sys.argv[1])
        import test_threads as t
        expected, results, errors = t._run_concurrently(n_workers=3, rounds=3)
        assert numba.threading_layer() == "workqueue", numba.threading_layer()
        assert errors == [], errors
        for want, got in zip(expected, results):
            for name, outputs in got.items():
                for out in outputs:
                    assert np.array_equal(out, want[name], equal_nan=True), name
        print("ok")
        """
    )
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    here = os.path.dirname(__file__)
    proc = subprocess.run(
        [sys.executable, "-c", script, here], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


_OPENMP_SCRIPT = """
import ctypes, sys
import numpy as np
gomp = ctypes.CDLL("libgomp.so.1", mode=ctypes.RTLD_GLOBAL)
gomp.omp_set_num_threads(1)
torch = None
if sys.argv[1] == "torch":
    import torch
    torch.set_num_threads(1)
    torch.nn.functional.relu(torch.zeros(4)).sum()
    torch.get_num_threads()
import numba
import fastcnn
from fastcnn import functional as F
F.relu(np.zeros(4, np.float32))

@numba.njit(parallel=True)
def ids(a):
    for i in numba.prange(a.size):
        a[i] = numba.get_thread_id()

a = np.zeros(1000)
ids(a)
print(gomp.omp_get_max_threads(), torch.get_num_threads() if torch else 1, len(set(a)))
"""


@pytest.mark.skipif(MAX_THREADS < 2, reason="needs two threads")
@pytest.mark.parametrize("lib", ["libgomp", "torch"])
def test_first_call_keeps_the_openmp_counts_set_before(lib):
    """Starting Numba's OpenMP pool set every loaded OpenMP runtime's thread count to the
    number of cores: ``torch.set_num_threads(1)`` was undone by fastcnn's first call. In a
    fresh process, a count of 1 set before (on libgomp, and through torch where installed)
    is still 1 after it, and Numba's kernels still use all their threads."""
    if lib == "torch":
        pytest.importorskip("torch")
    proc = subprocess.run(
        [sys.executable, "-c", _OPENMP_SCRIPT, lib], capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0 and "libgomp.so.1" in proc.stderr and "OSError" in proc.stderr:
        pytest.skip("no libgomp.so.1 on this system")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "1", str(MAX_THREADS)]
