"""Several Python threads calling fastcnn at once get exactly the serial results, with no
abort: kernels called from 4 threads at the same time, and 4 small models trained in 4
threads, each equal bitwise to the same work done serially in one thread.

Numba's workqueue threading layer aborts the process when two threads launch parallel
kernels at once; fastcnn prefers the thread-safe OpenMP/TBB layers and otherwise
serialises launches (``fastcnn._threads.run``). The last test forces the workqueue
layer in a child process and runs the same threaded workload there: an abort would show
as a signal exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import fastcnn.functional as F
import fastcnn.nn as nn
import fastcnn.optim as optim

N_THREADS = 4


def run_in_threads(target, n=N_THREADS):
    """Run ``target(i)`` in ``n`` threads released together; return the results in order.

    An exception in any thread is re-raised here.
    """
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def worker(i):
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as e:  # re-raised in the calling thread below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def assert_same(got, want):
    """Nested lists/tuples of arrays are bitwise equal (same dtypes and shapes)."""
    if isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    else:
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


# --- kernels from several threads ----------------------------------------------------


def kernel_workload(seed, repeats=2):
    """Every kernel family on inputs drawn from ``seed``, ``repeats`` times over.

    Big enough that calls launch on every thread and overlap in time: without the launch
    lock, this workload aborts the workqueue layer (``test_negative_control``).
    """
    rng = np.random.default_rng(seed)
    dt = np.float32
    x = rng.standard_normal((64, 8, 16, 16)).astype(dt)
    w = rng.standard_normal((16, 8, 3, 3)).astype(dt)
    b = rng.standard_normal(16).astype(dt)
    logits = rng.standard_normal((64, 10)).astype(dt)
    targets = rng.integers(0, 10, 64)
    fc = rng.standard_normal((10, 256)).astype(dt)
    x1 = rng.standard_normal((8, 1, 12, 12)).astype(dt)  # few taps: the direct conv path
    w1 = rng.standard_normal((4, 1, 3, 3)).astype(dt)
    out = []
    for _ in range(repeats):
        y1 = F.conv2d(x1, w1, stride=2, padding=1)
        g1 = F.conv2d_grad_weight(x1, w1.shape, y1, stride=2, padding=1)
        y = F.conv2d(x, w, b, padding=1)
        gx = F.conv2d_grad_input(x.shape, w, y, padding=1)
        gw = F.conv2d_grad_weight(x, w.shape, y, padding=1)
        gb = F.conv2d_grad_bias(y)
        bn, mean, invstd = F.batch_norm2d(y, None, None, None, None)
        bn_grads = F.batch_norm2d_backward(y, y, None, mean, invstd)
        r = F.relu(bn)
        p, idx = F.max_pool2d(r, 2)
        gp = F.max_pool2d_backward(p, idx, r.shape)
        s = F.sigmoid(p)
        z = F.linear(s.reshape(64, -1)[:, :256], fc)
        loss, gl = F.cross_entropy(logits, targets)
        out.append([y1, g1, y, gx, gw, gb, bn, bn_grads, gp, idx, z, F.log_softmax(z), loss, gl])
    return out


def check_threads_match_serial():
    """Kernels from ``N_THREADS`` threads at once equal the serial results, bitwise."""
    serial = [kernel_workload(seed) for seed in range(N_THREADS)]
    threaded = run_in_threads(kernel_workload)
    assert_same(threaded, serial)


def test_kernels_from_several_threads_equal_serial_results():
    check_threads_match_serial()


def test_the_same_arrays_shared_by_threads():
    """Threads may read the same input arrays at once (kernels never write inputs)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 4, 16, 16)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    x_before, w_before = x.copy(), w.copy()
    want = F.conv2d(x, w, padding=1)
    got = run_in_threads(lambda i: [F.conv2d(x, w, padding=1) for _ in range(5)])
    assert_same(got, [[want] * 5] * N_THREADS)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(w, w_before)


# --- training separate models in several threads -------------------------------------


def train_small_model(seed, steps=10):
    """Train a Conv-BN-ReLU-Pool-Linear net on random data; return its state dict."""
    rng = np.random.default_rng(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=rng),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 10, rng=rng),
    )
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x = rng.standard_normal((16, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(net(x), y)
        net.backward(loss_fn.backward())
        opt.step()
    return net.state_dict()


def test_training_separate_models_in_threads_equals_serial_training():
    serial = [train_small_model(seed) for seed in range(N_THREADS)]
    threaded = run_in_threads(train_small_model)
    for got, want in zip(threaded, serial, strict=True):
        assert got.keys() == want.keys()
        assert_same([got[k] for k in want], [want[k] for k in want])
    # the models really differ (each thread trained its own)
    assert not np.array_equal(serial[0]["0.weight"], serial[1]["0.weight"])


# --- the workqueue layer, which is not thread-safe -----------------------------------


def _run_workqueue_child(prelude=""):
    """Run the threaded kernel workload in a child with the workqueue layer forced."""
    code = (
        f"{prelude}\n"
        "import numba, test_concurrency as t\n"
        "t.check_threads_match_serial()\n"
        "print(numba.threading_layer())\n"
    )
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


def test_workqueue_layer_is_serialised_not_aborted():
    """With the workqueue layer forced, the threaded workload still runs and is correct."""
    proc = _run_workqueue_child()
    assert proc.returncode >= 0, f"child killed by signal {-proc.returncode}: {proc.stderr}"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["workqueue"]


@pytest.mark.slow
def test_negative_control():
    """Without the launch lock the same child aborts: the workload really overlaps.

    (Marked slow, and in principle timing-dependent: a lucky schedule could avoid the
    overlap.)
    """
    proc = _run_workqueue_child(
        "import fastcnn._threads as T; T._start_original = T._start\n"
        "def _start(launch):\n"
        "    T._start_original(launch)\n"
        "    T._serialise = False\n"
        "T._start = _start"
    )
    assert proc.returncode < 0, "the workqueue layer did not abort without the lock"
    assert "Concurrent access has been detected" in proc.stderr


# --- processes forked after kernels ran ----------------------------------------------


def test_a_forked_child_can_run_kernels():
    """GNU OpenMP terminates a forked child that starts a parallel region after its parent
    did: the child runs its kernels on one thread instead, with the same results."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 16, 16)).astype(np.float32)  # work for every thread
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    want = F.conv2d(x, w)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if the kernel ran and gave the parent's result
        code = 1
        signal.alarm(60)  # a hang becomes a SIGALRM death, not a stuck test run
        try:
            code = 0 if np.array_equal(F.conv2d(x, w), want) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
