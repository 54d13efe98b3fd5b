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
    ``num_threads`` (fastcnn's), ``max_threads`` (the threads Numba launches),
    ``vector_bytes`` (the SIMD width of the kernels), ``cache_dir`` (where compiled kernels
    are cached, ``None`` when no location is writable and they are compiled in memory),
    ``cache_writable`` (bool), ``cache_source`` (``"NUMBA_CACHE_DIR"``,
    ``"FASTCNN_CACHE_DIR"`` or ``"default"``: which setting chose the folder; see
    :mod:`fastcnn._cache`), ``cache_note`` (why it is not writable, or ``""``), ``cpu``
    (model name), ``cpu_target`` (LLVM's name for it) and ``cpu_features`` (sorted list of
    enabled LLVM features).
    """
    import llvmlite
    import llvmlite.binding as llvm
    import numba
    import numpy as np

    import fastcnn
    from fastcnn import _cache, _threads
    from fastcnn._kernels import activation, simd

    features = llvm.get_host_cpu_features()
    cache = _cache.describe(activation._relu)
    return {
        "fastcnn": fastcnn.__version__,
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "numpy": np.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "num_threads": _threads.get_num_threads(),
        "max_threads": _threads.MAX_THREADS,
        "vector_bytes": simd.VECTOR_BYTES,
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
    isa = {64: " (AVX-512)", 32: " (AVX2)"}.get(d["vector_bytes"], "")
    rows = [
        ("fastcnn", d["fastcnn"]),
        ("python", d["python"]),
        ("numpy", d["numpy"]),
        ("numba", f"{d['numba']} (llvmlite {d['llvmlite']})"),
        ("threads", f"{d['num_threads']} of {d['max_threads']}"),
        ("SIMD", f"{d['vector_bytes']}-byte vectors{isa}"),
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


def parse_conv(spec: str) -> dict:
    """A convolution from the command line: ``N,C,H,W:K,KH,KW`` with optional
    ``:stride=S``, ``:padding=P``, ``:dilation=D`` (an int or ``h,w``), e.g.
    ``64,32,13,13:64,3,3:padding=1``. Raises ``ValueError`` naming what is wrong."""
    fields = spec.split(":")
    if len(fields) < 2:
        raise ValueError(
            f"expected N,C,H,W:K,KH,KW[:stride=S][:padding=P][:dilation=D], got {spec!r}"
        )

    def ints(text, count, what):
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"{what} must be {count} integers, got {text!r}") from None
        if len(values) != count:
            raise ValueError(f"{what} must be {count} integers, got {text!r}")
        return values

    n, c, h, w = ints(fields[0], 4, "the input shape N,C,H,W")
    k, kh, kw = ints(fields[1], 3, "the weight shape K,KH,KW")
    conv = {"x_shape": (n, c, h, w), "w_shape": (k, c, kh, kw)}
    for field in fields[2:]:
        name, _, value = field.partition("=")
        if name not in ("stride", "padding", "dilation"):
            raise ValueError(f"unknown setting {name!r}: expected stride, padding or dilation")
        pair = ints(value, value.count(",") + 1, name)
        conv[name] = pair[0] if len(pair) == 1 else pair
    return conv


def format_plan(conv: dict) -> str:
    """Which kernel :mod:`fastcnn._kernels.plan` runs for each direction of the convolution
    ``conv`` (from :func:`parse_conv`), and why. Raises the functional API's ``ValueError``
    for a geometry it would refuse."""
    import numpy as np

    from fastcnn import _checks
    from fastcnn._kernels import plan

    x, w = np.empty(conv["x_shape"], np.float32), np.empty(conv["w_shape"], np.float32)
    settings = {key: conv.get(key, default) for key, default in
                (("stride", 1), ("padding", 0), ("dilation", 1))}  # fmt: skip
    g = _checks.conv2d_args(x, w, None, **settings)
    lines = [
        f"conv2d x {conv['x_shape']} weight {conv['w_shape']} stride {(g.sh, g.sw)} "
        f"padding {(g.ph, g.pw)} dilation {(g.dh, g.dw)} -> output {(g.n, g.k, g.oh, g.ow)}"
    ]
    for op in plan.OPS:
        rule = plan.choose(op, g)
        lines.append(f"  {op:<12} {rule.kernel:<9} ({rule.when})")
    return "\n".join(lines)
