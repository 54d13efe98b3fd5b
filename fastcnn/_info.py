"""``fastcnn.info()``: what fastcnn runs on (versions, threads, BLAS, cache, CPU)."""

from __future__ import annotations

import platform
import sys
import textwrap


def _cpu_model() -> str:
    """The marketing name of the CPU (``/proc/cpuinfo`` on Linux), else the platform's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def info() -> dict:
    """Describe the running fastcnn: a dict of plain values (str, int, list, dict).

    Keys: ``fastcnn``, ``python``, ``numpy``, ``numba``, ``llvmlite`` (versions),
    ``threading_layer``, ``num_threads`` (fastcnn's), ``numba_max_threads``, ``blas``
    (a list of ``{"library", "version", "num_threads", "threading"}`` from threadpoolctl),
    ``cache_dir`` (where compiled kernels are cached, ``None`` when no location is
    writable and they are compiled in memory), ``cache_writable`` (bool), ``cache_source``
    (``"NUMBA_CACHE_DIR"``, ``"FASTCNN_CACHE_DIR"`` or ``"default"``: which setting chose
    the folder; see :mod:`fastcnn._cache`), ``cache_note`` (why it is not writable, or
    ``""``), ``cpu`` (model name), ``cpu_target``
    (LLVM's name for it) and ``cpu_features`` (sorted list of enabled LLVM features).
    Launches Numba's thread pool if it is not running yet.
    """
    import llvmlite
    import llvmlite.binding as llvm
    import numba
    import numpy as np
    from threadpoolctl import threadpool_info

    import fastcnn
    from fastcnn import _cache, _threads
    from fastcnn._kernels import activation

    with _threads.guard():  # launches the pool, so the threading layer is known
        layer = numba.threading_layer()
    blas = [
        {
            "library": lib.get("internal_api"),
            "version": lib.get("version"),
            "num_threads": lib.get("num_threads"),
            "threading": lib.get("threading_layer"),
            "path": lib.get("filepath"),
        }
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]
    features = llvm.get_host_cpu_features()
    cache = _cache.describe(activation.relu)
    return {
        "fastcnn": fastcnn.__version__,
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "numpy": np.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "threading_layer": layer,
        "num_threads": _threads.get_num_threads(),
        "numba_max_threads": numba.config.NUMBA_NUM_THREADS,
        "blas": blas,
        "cache_dir": cache["dir"],
        "cache_writable": cache["writable"],
        "cache_source": cache["source"],
        "cache_note": cache["note"],
        "cpu": _cpu_model(),
        "cpu_target": llvm.get_host_cpu_name(),
        "cpu_features": sorted(name for name, on in features.items() if on),
    }


def _cache_line(d: dict) -> str:
    source = {"NUMBA_CACHE_DIR": ", from NUMBA_CACHE_DIR", "FASTCNN_CACHE_DIR": ", from "
              "FASTCNN_CACHE_DIR"}.get(d["cache_source"], "")  # fmt: skip
    if d["cache_dir"] is None:
        return f"none, compiling in memory ({d['cache_note']})"
    if not d["cache_writable"]:
        return f"{d['cache_dir']} (not writable{source}: {d['cache_note']})"
    return f"{d['cache_dir']} (writable{source})"


def format_info(details: dict | None = None) -> str:
    """Render :func:`info` (or a dict it returned) as aligned ``key: value`` lines."""
    d = info() if details is None else details
    blas = "; ".join(
        f"{b['library']} {b['version']} ({b['num_threads']} threads, {b['threading']})"
        for b in d["blas"]
    )
    rows = [
        ("fastcnn", d["fastcnn"]),
        ("python", d["python"]),
        ("numpy", d["numpy"]),
        ("numba", f"{d['numba']} (llvmlite {d['llvmlite']})"),
        ("threading layer", d["threading_layer"]),
        ("threads", f"{d['num_threads']} of {d['numba_max_threads']}"),
        ("BLAS", blas or "none loaded"),
        ("kernel cache", _cache_line(d)),
        ("CPU", f"{d['cpu']} ({d['cpu_target']})"),
        ("CPU features", " ".join(d["cpu_features"])),
    ]
    width = max(len(key) for key, _ in rows) + 2
    lines = []
    for key, value in rows:
        head = f"{key + ':':<{width}}"
        lines.append(
            textwrap.fill(
                str(value),
                100,
                initial_indent=head,
                subsequent_indent=" " * width,
                break_on_hyphens=False,
                break_long_words=False,
            )
        )
    return "\n".join(lines)
