"""What ``fastcnn bench`` prints: the header, the table of cases and the summary lines.

One row per case (a dict, as :func:`fastcnn.bench.timing.measure_case` returns it, and as
the JSON holds it); :data:`COLUMNS` says how each column is read from a row and printed.
"""

from __future__ import annotations

import math
import os
import statistics

COLUMNS = (
    # title, width, row key or function of the row, format
    ("preset", 12, "preset", "{}"),
    ("op", 20, "op", "{}"),
    ("direction", 16, "direction", "{}"),
    ("kernel", 8, "kernel", "{}"),
    ("median ms", 10, lambda r: r["fastcnn"]["median"] * 1e3, "{:.3f}"),
    ("IQR ms", 8, lambda r: (r["fastcnn"]["q3"] - r["fastcnn"]["q1"]) * 1e3, "{:.3f}"),
    ("GFLOP/s", 8, "gflops", "{:.1f}"),
    ("%GEMM", 6, "pct_gemm", "{:.0f}%"),
    ("first ms", 9, lambda r: r["first_call"]["fastcnn"] * 1e3, "{:.1f}"),
    ("torch ms", 9, lambda r: r["torch"] and r["torch"]["median"] * 1e3, "{:.3f}"),
    ("/torch", 7, "torch_ratio", "{:.2f}"),
    ("ref ms", 9, lambda r: r["reference"] and r["reference"]["median"] * 1e3, "{:.1f}"),
    ("ref/", 7, "reference_speedup", "{:.3g}x"),
    ("tut/", 7, "tutorial_speedup", "{:.3g}x"),
)
LEFT = 4  # the first columns are names, left-aligned; the others numbers
LEGEND = (
    "kernel: the conv kernel that fastcnn's plan picks;"
    " median ms, IQR ms: fastcnn's time per call (median, interquartile range);"
    " first ms: its first call in this process (compile or cache load, paid by the first"
    " case using a kernel); %GEMM: its GFLOP/s over the GEMM peak above; /torch: fastcnn"
    " time / torch time (below 1: fastcnn faster); ref/: reference time / fastcnn time;"
    " tut/: the tutorial layer's time (scipy.signal.correlate2d per channel pair, small conv"
    " presets, where SciPy is installed) / fastcnn time."
)


def _align(i: int, text: str, width: int) -> str:
    return f"{text:<{width}}" if i < LEFT else f"{text:>{width}}"


def format_header() -> str:
    """The table's column titles, aligned as :func:`format_row`."""
    return "  ".join(_align(i, title, width) for i, (title, width, *_) in enumerate(COLUMNS))


def format_row(row: dict) -> str:
    """One table line; ``-`` where a value does not apply (no FLOPs, no torch, ...)."""
    cells = []
    for i, (_, width, key, fmt) in enumerate(COLUMNS):
        value = key(row) if callable(key) else row[key]
        cells.append(_align(i, "-" if value is None else fmt.format(value), width))
    return "  ".join(cells)


def geomean(values) -> float:
    """The geometric mean of positive ``values``."""
    return math.exp(statistics.fmean(math.log(v) for v in values))


def format_summary(rows: list[dict]) -> list[str]:
    """Lines summarising the conv rows against torch and the reference, where measured."""
    conv = [r for r in rows if r["op"] == "conv2d"]
    lines = []
    ratios = [r["torch_ratio"] for r in conv if r["torch_ratio"]]
    if ratios:
        lines.append(
            f"conv2d fastcnn/torch time: geometric mean {geomean(ratios):.2f}, "
            f"max {max(ratios):.2f} over {len(ratios)} rows"
        )
    speedups = [r["reference_speedup"] for r in conv if r["reference_speedup"]]
    if speedups:
        lines.append(
            f"conv2d speedup over the reference: min {min(speedups):.3g}x over {len(speedups)} rows"
        )
    speedups = [r["tutorial_speedup"] for r in conv if r["tutorial_speedup"]]
    if speedups:
        lines.append(
            f"conv2d speedup over the tutorial layer: min {min(speedups):.3g}x "
            f"over {len(speedups)} rows"
        )
    return lines


def load_average() -> float | None:
    """The 1-minute load average (None where the platform has none): other processes on
    the cores make timings noisy, and the header says so."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def machine_line(info: dict, threads: int) -> str:
    """The first header line: the CPU, its Numba target, the CPU count and the threads."""
    return (
        f"fastcnn bench: {info['cpu']} ({info['cpu_target']}, {os.cpu_count()} cpus), "
        f"threads: {threads}, float32"
    )


def versions_line(versions: dict) -> str:
    """The versions of the libraries that ran (None: not used)."""
    return "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
