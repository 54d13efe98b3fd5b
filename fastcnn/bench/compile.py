"""``fastcnn bench --compile``: first calls in fresh processes, with a cold and a warm cache.

Two fresh processes share a new, empty ``NUMBA_CACHE_DIR``: the first (cold) compiles every
kernel its cases use, the second (warm) loads them from the cache the first wrote. Each is
``python -m fastcnn.bench --first-calls``, which runs :func:`first_calls` and prints JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from fastcnn.bench import presets, workloads


def first_calls(names) -> dict:
    """In this (fresh) process: import times, then the first call of each fastcnn case."""
    start = time.perf_counter()
    import fastcnn.functional  # noqa: F401  (Numba and the kernel modules, nothing compiled)

    result = {"import_functional": time.perf_counter() - start, "cases": []}
    for case in presets.cases(names):
        fn = workloads.workload(case, "fastcnn")
        start = time.perf_counter()
        fn()
        result["cases"].append({"case": str(case), "seconds": time.perf_counter() - start})
    return result


def measure_compile(names, threads: int) -> dict:
    """First calls in two fresh processes sharing a new, empty Numba cache directory:
    ``cold`` compiles every kernel, ``warm`` loads them from the cache the first wrote."""
    report = {}
    with tempfile.TemporaryDirectory(prefix="fastcnn-bench-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        command = [sys.executable, "-m", "fastcnn.bench", "--first-calls", f"--threads={threads}"]
        command += [f"--preset={name}" for name in names]
        for label in ("cold", "warm"):
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            report[label] = json.loads(done.stdout)
    return report


def format_compile(report: dict) -> list[str]:
    """The lines of :func:`measure_compile`'s report."""
    cold, warm = report["cold"], report["warm"]
    lines = [
        "first call per case in a fresh process: cold = empty Numba cache (compile), "
        "warm = the cache the cold run wrote",
        f"  import fastcnn.functional: cold {cold['import_functional']:.2f} s, "
        f"warm {warm['import_functional']:.2f} s",
    ]
    for c, w in zip(cold["cases"], warm["cases"], strict=True):
        lines.append(f"  {c['case']:<44} cold {c['seconds']:7.2f} s   warm {w['seconds']:7.3f} s")
    total_cold = sum(c["seconds"] for c in cold["cases"])
    total_warm = sum(w["seconds"] for w in warm["cases"])
    lines.append(f"  {'total':<44} cold {total_cold:7.2f} s   warm {total_warm:7.3f} s")
    return lines
