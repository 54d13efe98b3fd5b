"""fastcnn.set_num_threads / get_num_threads, and how an op's work is split over threads
(``fastcnn._threads.parts``, ``bounds`` and ``run``, which launches a kernel's parts on
Numba's thread pool through ``fastcnn._kernels.launch``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from cases import make_rng, randn

import fastcnn
from fastcnn import _threads
from fastcnn import functional as F
from fastcnn._config import jit

MAX_THREADS = _threads.MAX_THREADS


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


# --- parts of an op's work -------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "work", "grain", "threads", "expected"),
    [
        pytest.param(10, 1e9, 1, 1, 1, id="one-thread"),
        pytest.param(10, 10, 100, 4, 1, id="too-little-work"),
        pytest.param(10, 350, 100, 4, 3, id="work-for-three"),
        pytest.param(3, 1e9, 1, 4, 3, id="fewer-items-than-threads"),
        pytest.param(0, 1e9, 1, 4, 1, id="no-items"),
        pytest.param(10, 1e9, 1, 4, 4, id="every-thread"),
    ],
)
def test_parts_follow_threads_items_and_work(n, work, grain, threads, expected, monkeypatch):
    monkeypatch.setattr(_threads, "_num_threads", threads)
    assert _threads.parts(n, work, grain) == expected


@pytest.mark.parametrize(("n", "count"), [(10, 1), (10, 3), (7, 2), (2, 2)])
def test_bounds_cover_the_range(n, count):
    got = [_threads.bounds(part, count, n) for part in range(count)]
    assert got[0][0] == 0 and got[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(got, got[1:], strict=False))
    sizes = [stop - start for start, stop in got]
    assert max(sizes) - min(sizes) <= 1


@jit()
def _mark(part, start, stop, out, seen):
    """out[start:stop] = part; seen[part] = the number of parts that ran it."""
    for i in range(start, stop):
        out[i] = part
    seen[part] += 1


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_run_calls_each_part_once_with_its_bounds(count):
    n = 17
    out, seen = np.full(n, -1, np.int64), np.zeros(count, np.int64)
    _threads.run(_mark, count, n, out, seen)
    want = np.concatenate(
        [
            np.full(b - a, part)
            for part, (a, b) in enumerate(_threads.bounds(p, count, n) for p in range(count))
        ]
    )
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(seen, np.ones(count))


def test_small_ops_run_as_one_part(monkeypatch):
    """A small convolution is less work than a thread is worth: it runs as one part, on
    the calling thread."""
    seen = []
    real = _threads.run

    def spy(kernel, count, n, *args):
        seen.append(count)
        return real(kernel, count, n, *args)

    monkeypatch.setattr(_threads, "run", spy)
    monkeypatch.setattr(_threads, "_num_threads", MAX_THREADS)
    x = np.ones((4, 8, 6, 6), np.float32)  # 4 images, but less work than a thread is worth
    F.conv2d(x, np.ones((16, 8, 3, 3), np.float32))
    assert seen == [1]


# --- several Python threads at once --------------------------------------------------


def _workloads(seed):
    """Named calls of kernels on inputs of their own, big enough to launch on every thread."""
    rng = make_rng(seed)
    x = randn(rng, (64, 8, 16, 16), np.float32)  # enough work for every thread
    w = randn(rng, (5, 8, 3, 3), np.float32)
    gamma = randn(rng, 8, np.float32)
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
    launches are serialised: the same concurrent run exits cleanly and correctly."""
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
F.relu(np.zeros(1 << 20, np.float32))  # enough work for every thread

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
