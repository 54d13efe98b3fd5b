"""``fastcnn bench``: time the named presets side by side, without pytest.

For each case of :mod:`fastcnn.bench.presets` it times fastcnn, PyTorch (when importable,
at the same thread count) and, on small presets, ``fastcnn.reference`` and (conv only, where
SciPy is installed) the tutorial layer of :mod:`fastcnn.bench.tutorial`, and prints one
table row: median time and interquartile range, GFLOP/s, percent of this machine's GEMM
peak, fastcnn's time over torch's, and the reference's and tutorial layer's times over
fastcnn's. Every implementation's first result is checked against fastcnn's before it is
timed. ``--compile`` measures instead what the first call of each case costs on a cold
Numba cache, per kernel (:mod:`fastcnn.bench.compile`).

The modules: :mod:`~fastcnn.bench.presets` (the named problem sizes and their cases),
:mod:`~fastcnn.bench.workloads` (a callable per case and implementation),
:mod:`~fastcnn.bench.timing` (sampling), :mod:`~fastcnn.bench.memory` (the training step's
peak memory), :mod:`~fastcnn.bench.compile` (``--compile``), :mod:`~fastcnn.bench.malloc`
(``--malloc``), :mod:`~fastcnn.bench.report` (the table). This module holds the options
and the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fastcnn.bench import compile, malloc, memory, presets, report, timing
from fastcnn.bench.malloc import MALLOC_MODES, MALLOC_VARS

OPTIONS = tuple(
    "preset quick threads no_torch repeats compile no_memory malloc json".split()
)  # in the JSON


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``fastcnn bench``'s options to ``parser``."""
    parser.add_argument(
        "--preset",
        action="append",
        choices=presets.PRESET_NAMES,
        metavar="NAME",
        help="run only this preset (repeatable); one of " + ", ".join(presets.PRESET_NAMES),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a ~30 s run (warm cache): fewer presets, shorter timing, no tutorial layer, "
        "no step memory",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="threads for fastcnn, BLAS and torch (default: fastcnn's)",
    )
    parser.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch")
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        metavar="N",
        help="exactly N timed samples per implementation (default: by time)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="instead of timing the kernels, measure their cold compile: the first call of"
        " each case in a fresh process with an empty Numba cache (cold), then with the"
        " cache it wrote (warm), and all cases in one process; per kernel, the CPU seconds"
        " of Numba's front end and of LLVM. Minutes on the default presets",
    )
    parser.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the peak memory of the training step (fresh processes, a few seconds)",
    )
    parser.add_argument(
        "--malloc",
        choices=("inherit", *MALLOC_MODES, "both"),
        default="inherit",
        help="glibc malloc thresholds: as in this environment (default), unset (glibc's"
        " default), set high (freed memory is reused), or both runs one after the other;"
        " all but inherit run the bench in a fresh process",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="save the results as JSON")
    parser.add_argument("--first-calls", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", action="append", help=argparse.SUPPRESS)  # of --first-calls
    parser.add_argument("--step-memory", choices=("fastcnn", "torch"), help=argparse.SUPPRESS)


def _import_torch():
    try:
        import torch  # optional: compared against when installed, never required
    except ImportError:
        return None
    return torch


def _import_tutorial():
    try:
        from fastcnn.bench import tutorial  # imports SciPy: not a fastcnn dependency
    except ImportError:
        return None
    return tutorial


def run(args: argparse.Namespace) -> int:
    """Run ``fastcnn bench`` with parsed ``args``; print the table; return the exit code.

    The thread counts it sets (fastcnn, BLAS, torch) are restored when it returns.
    """
    import fastcnn

    if args.compile and args.malloc != "inherit":
        print("fastcnn bench: --compile measures compiling, --malloc timing: choose one",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.malloc != "inherit":
        return malloc.run_modes(args)
    names = args.preset or (presets.QUICK_PRESETS if args.quick else presets.DEFAULT_PRESETS)
    if args.first_calls:  # a child of --compile: it times its own imports
        selected = [c for c in presets.cases(names) if str(c) in (args.case or [str(c)])]
        print(json.dumps(compile.first_calls(selected, args.threads)))
        return 0
    if args.compile or args.step_memory:  # --compile and the child processes of memory
        torch = _import_torch() if args.step_memory == "torch" else None
    else:
        torch = None if args.no_torch else _import_torch()
    threads = args.threads or fastcnn.get_num_threads()
    try:
        with timing.limit_threads(threads, torch) as limit_pools:
            if args.compile:
                _compile(args, names, threads)
            elif args.step_memory:
                (case,) = [c for c in presets.cases(names) if c.op == "train_step"]
                print(json.dumps(memory.step_memory(case, args.step_memory, limit_pools)))
            else:
                _bench(args, names, threads, torch, limit_pools)
    except ValueError as exc:  # a thread count beyond the threads Numba launched
        print(f"fastcnn bench: {exc}", file=sys.stderr)
        return 2
    return 0


def _json_header(args, info: dict, versions: dict, threads: int) -> dict:
    """The JSON's first keys: the options, the machine, the versions, the threads."""
    return {
        "options": {k: getattr(args, k) for k in OPTIONS},
        "machine": {k: info[k] for k in ("cpu", "cpu_target", "cpu_features")}
        | {"cpus": os.cpu_count()},
        "versions": versions,
        "threads": threads,
    }


def _bench(args, names, threads: int, torch, limit_pools) -> None:
    """Measure and print the GEMM peak, every case and the training step's memory; save
    the JSON if asked."""
    import fastcnn

    load_start = report.load_average()
    effort = timing.QUICK if args.quick else timing.FULL
    info = fastcnn.info()
    versions = {k: info[k] for k in ("fastcnn", "python", "numpy", "numba")}
    versions["torch"] = torch.__version__ if torch is not None else None
    tutorial = _import_tutorial() if effort.tutorial_samples else None
    versions["scipy"] = sys.modules["scipy"].__version__ if tutorial else None  # the tutorial's
    optional = {name for name, lib in (("torch", torch), ("tutorial", tutorial)) if lib}
    gemm = timing.measure_gemm(effort, args.repeats)
    print(report.machine_line(info, threads))
    print(report.versions_line(versions))
    print(malloc.malloc_note())
    print(
        f"load average (1 min): {load_start} at the start, {report.load_average()} after the "
        "GEMM peak"
    )
    print(
        f"GEMM peak: numpy float32 matmul {gemm['size']}^3, same threads: "
        f"{gemm['gflops']:.1f} GFLOP/s"
    )
    print()
    print(report.format_header())
    rows = []
    for case in presets.cases(names):
        row = timing.measure_case(case, optional, effort, args.repeats, gemm["gflops"], limit_pools)
        rows.append(row)
        print(report.format_row(row), flush=True)
    print()
    for line in report.format_summary(rows):
        print(line)
    print(report.LEGEND)
    step_memory = None
    if effort.step_memory and not args.no_memory and any(r["op"] == "train_step" for r in rows):
        impls = ("fastcnn", "torch") if torch else ("fastcnn",)
        step_memory = memory.measure_memory(names, threads, impls)
        print()
        print("\n".join(memory.format_memory(step_memory, threads)))

    if args.json:
        result = {
            **_json_header(args, info, versions, threads),
            "env": {v: os.environ.get(v) for v in MALLOC_VARS},
            "load_average": {"start": load_start, "end": report.load_average()},
            "quick": args.quick,
            "gemm": gemm,
            "rows": rows,
            "step_memory": step_memory,
        }
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")


def _compile(args, names, threads: int) -> None:
    """``--compile``: measure and print the cold compile of every case; save the JSON if
    asked."""
    import fastcnn

    info = fastcnn.info()
    versions = {k: info[k] for k in ("fastcnn", "python", "numpy", "numba", "llvmlite")}
    print(report.machine_line(info, threads))
    print(report.versions_line(versions))
    load_start = report.load_average()  # compile times are CPU seconds, first calls wall
    print(f"load average (1 min): {load_start} at the start", flush=True)
    cases = presets.cases(names)

    tty = sys.stderr.isatty()

    def progress(name):  # a line that the next one overwrites, on a terminal
        if tty:
            print(f"\r\033[K  measuring {name} ...", end="", file=sys.stderr, flush=True)

    result = compile.measure_compile(cases, threads, progress)
    if tty:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    load_end = report.load_average()
    print(f"load average (1 min): {load_end} at the end")
    print()
    print("\n".join(compile.format_compile(result)))
    if args.json:
        saved = {
            **_json_header(args, info, versions, threads),
            "load_average": {"start": load_start, "end": load_end},
            "compile": result,
        }
        args.json.write_text(json.dumps(saved, indent=1, default=str) + "\n")


def main(argv=None) -> int:
    """Entry point of ``python -m fastcnn.bench`` (``fastcnn bench`` goes via the CLI)."""
    parser = argparse.ArgumentParser(prog="fastcnn bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
