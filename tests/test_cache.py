"""A second process starts from Numba's on-disk cache: it loads every kernel it calls and
compiles none, and a kernel loaded from the cache gives the bits of the freshly compiled one.

The first subprocess runs a small forward and backward of every op (compiling, or loading,
and saving to the cache); the second runs the same calls and reports, per kernel, the
dispatcher's cache hits and misses. No timings are asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, time
    import numpy as np
    from numba.core.dispatcher import Dispatcher

    start = time.perf_counter()
    import fastcnn.functional as F
    from fastcnn._kernels import activation, conv, loss, norm, pool

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    first = time.perf_counter()
    y = F.conv2d(x, w, None, padding=1)
    first = time.perf_counter() - first
    F.conv2d_grad_input(x.shape, w, y, padding=1)
    F.conv2d_grad_weight(x, w.shape, y, padding=1)
    F.conv2d_grad_bias(y)
    p, idx = F.max_pool2d(x, 2)
    F.max_pool2d_backward(p, idx, x.shape)
    F.max_pool2d(x, 3, 1, 1)
    b, m, s = F.batch_norm2d(x, None, None, np.zeros(3, np.float32), np.ones(3, np.float32))
    F.batch_norm2d_backward(b, x, None, m, s)
    F.batch_norm2d(x, None, None, m, s, training=False)
    F.relu_backward(x, F.relu(x))
    F.sigmoid_backward(x, F.sigmoid(x))
    F.softmax(x, 1), F.log_softmax(x, 1)
    F.cross_entropy(x[0, 0], np.arange(8) % 4)
    F.binary_cross_entropy(np.abs(np.tanh(x)), np.abs(np.tanh(x)))
    total = time.perf_counter() - start

    stats = {}
    for module in (activation, conv, loss, norm, pool):
        for name, obj in vars(module).items():
            if isinstance(obj, Dispatcher):
                hits = sum(obj.stats.cache_hits.values())
                misses = sum(obj.stats.cache_misses.values())
                stats[f"{module.__name__}.{name}"] = [hits, misses]
    print(json.dumps({"stats": stats, "first_conv2d": first, "total": total}))
    """
)


def _run():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_loads_every_kernel_from_the_cache():
    _run()  # compiles what is not cached yet, and saves it
    report = _run()
    stats = report["stats"]
    used = {name: hm for name, hm in stats.items() if hm != [0, 0]}
    assert used, "no kernel was called"
    compiled = {name: hm for name, hm in used.items() if hm[1] != 0}
    assert compiled == {}, f"kernels compiled instead of loaded: {compiled}"
    for module in ("activation", "conv", "loss", "norm", "pool"):
        assert any(f"._kernels.{module}." in name for name in used), module


# Hashes of every op's outputs on awkward shapes: batches of 30 and 7 (1/N inexact), odd
# planes, both dtypes. With ``all`` in argv it adds the convolutions on geometries that
# reach each conv kernel (few-taps, blocked, wrapped rows, im2col), a long compile.
HASH_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np
    import fastcnn.functional as F

    def digest(*arrays):
        return hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in arrays)).hexdigest()

    CONV = [(64, 1, 28, 28, 32, 3, 3, 1, 0, 1), (64, 32, 13, 13, 64, 3, 3, 1, 0, 1),
            (16, 16, 32, 32, 32, 3, 3, 1, 1, 1), (3, 5, 11, 9, 7, 3, 2, 2, 1, 1),
            (2, 3, 12, 10, 5, 3, 3, 1, 2, 2), (5, 6, 7, 7, 4, 1, 1, 1, 0, 1)]
    out = {}
    for dt in (np.float32, np.float64):
        rng = np.random.default_rng(1)
        r = lambda *s: rng.standard_normal(s).astype(dt)
        name = np.dtype(dt).name
        for shape in ((30, 16, 13, 13), (7, 3, 5, 9)):
            x, g = r(*shape), r(*shape)
            y, idx = F.max_pool2d(x, 2)
            out[f"{name} pool {shape}"] = digest(y, idx, F.max_pool2d_backward(y, idx, shape))
            c = shape[1]
            rm, rv = np.zeros(c, dt), np.ones(c, dt)
            y, m, s = F.batch_norm2d(x, r(c), r(c), rm, rv)
            out[f"{name} batch_norm2d {shape}"] = digest(y, m, s, rm, rv)
            out[f"{name} batch_norm2d_backward {shape}"] = digest(
                *F.batch_norm2d_backward(g, x, r(c), m, s))
            out[f"{name} activations {shape}"] = digest(
                F.relu(x), F.relu_backward(g, x), F.sigmoid(x), F.sigmoid_backward(g, x))
            out[f"{name} conv2d_grad_bias {shape}"] = digest(F.conv2d_grad_bias(g))
        for n, c in ((30, 10), (7, 13), (64, 10)):
            x = 3 * r(n, c)
            out[f"{name} cross_entropy {n, c}"] = digest(
                *F.cross_entropy(x, rng.integers(0, c, n)))
            out[f"{name} softmax {n, c}"] = digest(
                F.softmax(x), F.log_softmax(x), F.softmax(x, 0))
            p = F.sigmoid(x)
            out[f"{name} binary_cross_entropy {n, c}"] = digest(
                *F.binary_cross_entropy(p, (p > 0.5).astype(dt)))
            out[f"{name} linear {n, c}"] = digest(F.linear(x, r(5, c), r(5)))
        for n, c, h, w, k, kh, kw, st, pad, dil in CONV if "all" in sys.argv else ():
            x, wt = r(n, c, h, w), r(k, c, kh, kw)
            y = F.conv2d(x, wt, r(k), st, pad, dil)
            go = r(*y.shape)
            out[f"{name} conv {n, c, h, w, k, kh, kw, st, pad, dil}"] = digest(
                y, F.conv2d_grad_input(x.shape, wt, go, st, pad, dil),
                F.conv2d_grad_weight(x, wt.shape, go, st, pad, dil))
    print(json.dumps(out))
    """
)


def _hashes(cache_dir, *args):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run(
        [sys.executable, "-c", HASH_SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_cold_equals_warm(cache_dir, *args):
    cold = _hashes(cache_dir, *args)  # an empty cache: every kernel compiled here
    warm = _hashes(cache_dir, *args)  # every kernel loaded from the cache
    assert cold.keys() == warm.keys()
    differ = sorted(k for k in cold if cold[k] != warm[k])
    assert differ == [], f"freshly compiled and cached kernels disagree on {differ}"


def test_fresh_compile_and_cache_load_give_the_same_bits(tmp_path):
    """The losses, batch norm, pooling, activations, linear and the bias gradient.
    (Fast-math ``reassoc`` once let a fresh compile and a cache load differ in the last
    bits of the cross-entropy and batch-norm gradients.)"""
    _assert_cold_equals_warm(tmp_path)


@pytest.mark.slow
def test_fresh_compile_and_cache_load_give_the_same_bits_for_convolutions(tmp_path):
    _assert_cold_equals_warm(tmp_path, "all")
