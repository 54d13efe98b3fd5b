"""Long runs: 5,000 training steps of a small network hold memory flat and compile nothing
after the first step.

Measured between step 100 (caches warm, buffers allocated) and step 5,000:

- Resident set size (``/proc/self/statm``): grows by less than 8 MiB (covers everything:
  Python, NumPy, Numba, BLAS and OpenMP buffers, allocator fragmentation).
- Numba runtime (NRT) allocations minus frees: equal at both points (arrays a kernel
  allocates must all be freed).
- Python and NumPy memory allocated during the last 1,000 steps and still alive
  (tracemalloc, which NumPy reports its array buffers to; only over the last steps because
  tracing slows every allocation): below 64 KiB. A leak of one small array per step (a
  few hundred bytes) would exceed it.
- No Numba dispatcher of fastcnn gains a signature after the first step.

The run uses one thread: a step of this tiny net takes about 2.5 ms then, while with
two threads on a loaded machine every parallel launch waits for a descheduled worker
(15 ms each, measured here with a load average of 10 on 2 cores). Memory and compilation
do not depend on the thread count.
"""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc

import numba
import numpy as np
import pytest
from numba.core.runtime import _nrt_python, rtsys

import fastcnn
import fastcnn.nn as nn
import fastcnn.optim as optim

STEPS = 5_000
WARM = 100
TRACED = 1_000  # the last steps run under tracemalloc
TRACED_BOUND = 64 << 10
RSS_BOUND = 8 << 20


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fastcnn_signatures() -> dict[str, tuple]:
    """Compiled signatures of every Numba dispatcher in a loaded fastcnn module."""
    found = {}
    for modname, mod in list(sys.modules.items()):
        if modname == "fastcnn" or modname.startswith("fastcnn."):
            for obj in list(vars(mod).values()):
                if isinstance(obj, numba.core.dispatcher.Dispatcher):
                    found[f"{obj.py_func.__module__}.{obj.py_func.__qualname__}"] = tuple(
                        obj.signatures
                    )
    return found


def nrt_live() -> int:
    """Numba runtime allocations not yet freed (needs the runtime's statistics on)."""
    stats = rtsys.get_allocation_stats()
    return stats.alloc - stats.free


@pytest.fixture
def nrt_stats():
    """Turn on the Numba runtime's allocation counters (as NUMBA_NRT_STATS=1 would)."""
    was_on = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    yield
    if not was_on:
        _nrt_python.memsys_disable_stats()


@pytest.fixture
def one_thread():
    before = fastcnn.get_num_threads()
    fastcnn.set_num_threads(1)
    yield
    fastcnn.set_num_threads(before)


def small_training_run(seed=0):
    """A tiny Conv-BN-ReLU-Pool-Linear net, SGD with momentum, 8 fixed batches of 8."""
    rng = np.random.default_rng(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=rng),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 3, rng=rng),
    )
    opt = optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    batches = [
        (rng.standard_normal((8, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 8))
        for _ in range(8)
    ]

    def step(i):
        x, y = batches[i % len(batches)]
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        net.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
        return float(loss)

    return step


def test_5000_steps_hold_memory_flat_and_compile_once(nrt_stats, one_thread):
    step = small_training_run()
    losses = np.empty(STEPS)  # preallocated: a growing list would count as a leak
    losses[0] = step(0)
    compiled = fastcnn_signatures()
    assert any(compiled.values()), "no fastcnn Numba kernel was compiled by a training step"
    for i in range(1, WARM):
        losses[i] = step(i)
    gc.collect()
    rss0, nrt0 = rss_bytes(), nrt_live()
    for i in range(WARM, STEPS - TRACED):
        losses[i] = step(i)
    tracemalloc.start()
    try:
        for i in range(STEPS - TRACED, STEPS):
            losses[i] = step(i)
        gc.collect()
        traced, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth, nrt_growth = rss_bytes() - rss0, nrt_live() - nrt0

    assert fastcnn_signatures() == compiled, "a kernel was compiled after the first step"
    assert traced < TRACED_BOUND, f"{traced} bytes allocated in the last {TRACED} steps still alive"
    assert nrt_growth == 0, f"{nrt_growth} Numba runtime allocations never freed"
    assert rss_growth < RSS_BOUND, f"RSS grew by {rss_growth / 2**20:.1f} MiB"
    assert np.isfinite(losses).all()
    assert np.mean(losses[-100:]) < losses[0]  # it did train
