"""A second process starts from Numba's on-disk cache: it loads every kernel it calls and
compiles none.

The first subprocess runs a small forward and backward of every op (compiling, or loading,
and saving to the cache); the second runs the same calls and reports, per kernel, the
dispatcher's cache hits and misses. No timings are asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

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
