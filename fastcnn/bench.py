"""``fastcnn bench``: time the named presets side by side, without pytest.

For each case of :mod:`fastcnn._presets` it times fastcnn, PyTorch (when importable, at the
same thread count) and, on small presets, ``fastcnn.reference`` and (conv only, where SciPy
is installed) the tutorial layer of :mod:`fastcnn._tutorial`, and prints one table row:
median time and interquartile range, GFLOP/s, percent of this machine's GEMM peak (NumPy
float32 matmul measured at the start of the run at the same thread count), fastcnn's time
over torch's, and the reference's and tutorial layer's times over fastcnn's. Every
implementation's first result is checked against fastcnn's before it is timed.

Timing (:func:`measure_case`): the first call of each callable is timed on its own (for
fastcnn that is the kernel's compile or cache load, the "first ms" column), one more call
warms up, then samples of ``number`` calls each (``number`` chosen so a sample lasts ~20 ms)
alternate between fastcnn and torch until the time budget is spent; the median and
quartiles are over the per-call time of the samples. ``--compile`` also starts two fresh
processes with an empty Numba cache, to report the cold compile of every case and the warm
cache load.

Glibc serves allocations of 128 KiB and more with fresh ``mmap``s whose pages cost a
fault on first touch, so libraries that allocate per call are slower than their kernels;
the header says whether ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` are set, and
a fair comparison runs both ways: ``--malloc both`` runs the bench in two fresh processes,
with them unset and set high.

When the training step is among the cases, :func:`measure_memory` measures the peak
resident memory of its steps, fastcnn and torch each in a fresh process (Linux only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fastcnn import _malloc, _presets

MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
# ``--malloc``: the environment of each mode. ``high``: blocks up to 32 MiB come from the heap
# and freed memory stays there, as after ``fastcnn.keep_freed_memory()``.
MALLOC_MODES = {
    "default": {},
    "high": {
        "MALLOC_MMAP_THRESHOLD_": str(_malloc.MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(_malloc.TRIM_THRESHOLD),
    },
}
OPTIONS = tuple(
    "preset quick threads no_torch repeats compile no_memory malloc json".split()
)  # in the JSON


@dataclass(frozen=True)
class Effort:
    """How long to time: per case (fastcnn and torch), per reference, per tutorial layer
    (one call takes 0.1-5 s: few samples of one call; 0 samples leave it out), for the GEMM
    peak; and whether to measure the training step's memory (fresh processes)."""

    budget: float
    reference_budget: float
    tutorial_budget: float
    gemm_budget: float
    min_samples: int
    tutorial_samples: int
    step_memory: bool


FULL = Effort(2.0, reference_budget=2.0, tutorial_budget=2.0, gemm_budget=3.0, min_samples=10,
              tutorial_samples=3, step_memory=True)  # fmt: skip
QUICK = Effort(0.4, reference_budget=0.5, tutorial_budget=0.0, gemm_budget=1.0, min_samples=5,
               tutorial_samples=0, step_memory=False)  # fmt: skip
SAMPLE_SECONDS = 0.02  # calls per sample are chosen so that a sample lasts about this long
# Idle time before each sample: GNU OpenMP threads spin after each parallel region (torch's
# for ~12 ms of CPU with its default settings, measured here), and torch and Numba each
# have their own pool; the pause lets the pool of the implementation timed before go to
# sleep instead of competing for the cores. An untimed call follows it (unless
# ``time_calls`` is told not to): after 20 ms idle, the first call of a 2-thread op waits
# for its sleeping threads and cores (measured: fastcnn's mnist-conv2 forward took 4.9-5.2
# ms back to back, 8.7-9.7 ms after each pause; torch's 5.2-6.1 and 6.0-6.7), which no
# loop of calls, such as a training loop, pays.
PAUSE_SECONDS = 0.02
# OpenBLAS's threads spin for ~0.12 s of CPU after each multithreaded call (measured here):
# after NumPy's own GEMMs (the peak, the reference, the tutorial layer) the timing of the
# next implementation waits this long, or one of its threads shares a core with a spinner.
BLAS_REST_SECONDS = 0.2


# --- timing --------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median and quartiles over ``samples`` samples of ``number`` calls."""

    median: float
    q1: float
    q3: float
    samples: int
    number: int


def time_once(fn) -> float:
    """Seconds taken by one call of ``fn`` (the first: compile or cache load, for a kernel)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_calls(
    fns: dict, *, budget: float, min_samples: int, samples=None, number=None, rewarm=True
):
    """Time each zero-argument callable in ``fns`` and return ``{name: Timing}``.

    One warm-up call each sets how many calls make a sample (about ``SAMPLE_SECONDS``),
    unless ``number`` gives it (then there is no warm-up call: for slow callables already
    called once). Samples alternate between the callables, so a slow spell of a shared
    machine hits all of them alike; each starts after :data:`PAUSE_SECONDS` idle and, if
    ``rewarm``, one untimed call. Sampling stops after ``samples`` rounds if given, else
    once at least ``min_samples`` rounds are done and ``budget`` seconds have passed.
    """
    if number is None:
        number = {name: max(1, round(SAMPLE_SECONDS / time_once(fn))) for name, fn in fns.items()}
    else:
        number = dict.fromkeys(fns, number)
    per_call = {name: [] for name in fns}
    deadline = time.perf_counter() + budget

    def more(rounds: int) -> bool:
        if samples is not None:
            return rounds < samples
        return rounds < min_samples or time.perf_counter() < deadline

    rounds = 0
    while more(rounds):
        for name, fn in fns.items():
            time.sleep(PAUSE_SECONDS)
            if rewarm:
                fn()
            start = time.perf_counter()
            for _ in range(number[name]):
                fn()
            per_call[name].append((time.perf_counter() - start) / number[name])
        rounds += 1
    timings = {}
    for name, times in per_call.items():
        q1, median, q3 = (
            statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
        )
        timings[name] = Timing(median, q1, q3, len(times), number[name])
    return timings


# --- the run -------------------------------------------------------------------------


def _import_torch():
    try:
        import torch  # optional: compared against when installed, never required
    except ImportError:
        return None
    return torch


def measure_gemm(effort: Effort, samples: int | None) -> dict:
    """Time NumPy's float32 GEMM (:func:`fastcnn._presets.gemm_workload`): the peak."""
    fn, flops = _presets.gemm_workload()
    fn()
    t = time_calls({"gemm": fn}, budget=effort.gemm_budget, min_samples=5, samples=samples)
    t = t["gemm"]
    return {
        "size": _presets.GEMM_SIZE,
        "flops": flops,
        "gflops": flops / t.median / 1e9,
        "timing": asdict(t),
    }


def measure_case(case, optional, effort: Effort, samples, gemm_gflops: float, limit_pools) -> dict:
    """Time one case with fastcnn, the reference and tutorial layer where affordable, and
    torch; ``optional`` names those of torch and tutorial that can run (importable, wanted).

    Each implementation's first call is timed on its own, and its result checked against
    fastcnn's (:func:`fastcnn._presets.assert_same`). ``limit_pools()`` is called after the
    first calls, which may have loaded a thread pool (Numba's ``np.dot`` loads SciPy's
    OpenBLAS), so that it too runs on the benchmark's thread count.
    """
    names = [i for i in case.implementations if i in ("fastcnn", "reference") or i in optional]
    fns = {name: _presets.workload(case, name) for name in names}
    first, results = {}, {}
    for name, fn in fns.items():
        start = time.perf_counter()
        results[name] = fn()
        first[name] = time.perf_counter() - start
    for name in names[1:]:
        _presets.assert_same(results[name], results["fastcnn"])
    del results
    limit_pools()
    time.sleep(BLAS_REST_SECONDS)  # the reference and tutorial layer ran NumPy's GEMMs
    slow = {name: fns.pop(name) for name in ("reference", "tutorial") if name in fns}
    timings = time_calls(fns, budget=effort.budget, min_samples=effort.min_samples, samples=samples)
    if "reference" in slow:  # slow: timed on its own, with its own budget
        timings |= time_calls(
            {"reference": slow["reference"]},
            budget=effort.reference_budget,
            min_samples=3,
            samples=samples,
        )
    if "tutorial" in slow:  # slower still: one call per sample, no calibration call
        timings |= time_calls(
            {"tutorial": slow["tutorial"]},
            budget=effort.tutorial_budget,
            min_samples=effort.tutorial_samples,
            samples=samples,
            number=1,
            rewarm=False,  # its calls take seconds: a wake-up after the pause is lost in them
        )
    fast = timings["fastcnn"].median

    def slower(impl):  # an implementation's time over fastcnn's
        return timings[impl].median / fast if impl in timings else None

    row = {
        "preset": case.preset,
        "op": case.op,
        "direction": case.direction,
        "shape": str(case.shape),
        "flops": case.flops,
        "gflops": case.flops / fast / 1e9 if case.flops else None,
        "pct_gemm": 100 * case.flops / fast / 1e9 / gemm_gflops if case.flops else None,
        "torch_ratio": fast / timings["torch"].median if "torch" in timings else None,
        "reference_speedup": slower("reference"),
        "tutorial_speedup": slower("tutorial"),
        "first_call": first,
    }
    for impl in _presets.IMPLEMENTATIONS:
        row[impl] = asdict(timings[impl]) if impl in timings else None
    return row


def _first_calls(names) -> dict:
    """In this (fresh) process: import times, then the first call of each fastcnn case."""
    start = time.perf_counter()
    import fastcnn.functional  # noqa: F401  (Numba and the kernel modules, nothing compiled)

    result = {"import_functional": time.perf_counter() - start, "cases": []}
    for case in _presets.cases(names):
        fn = _presets.workload(case, "fastcnn")
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


# --- peak memory of a training step -------------------------------------------------

STEP_WARMUP, STEP_COUNT = 3, 10


def _status_mib(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # 5: VmHWM := VmRSS (Linux >= 4.0)


def step_memory(case, impl: str, limit_pools=lambda: None) -> dict:
    """In this process: the resident memory of training steps of ``case`` with ``impl``.

    After ``STEP_WARMUP`` steps, each of ``STEP_COUNT`` steps runs with the peak resident
    set (VmHWM) reset to the current one (VmRSS) just before it. Returns MiB: ``built``
    (VmRSS once the model and data are built, before the first step), ``baseline`` (VmRSS
    before the measured steps: the interpreter, libraries, model, data and caches),
    ``peak`` (the highest VmHWM of the measured steps) and ``step``, the most any of them
    raised VmHWM above the VmRSS it started from: what a step allocates on top of what is
    resident. Per step, because resident memory swings over several steps (the cyclic
    garbage collector and glibc's trimming free memory that later steps fault in again),
    so a single reset would measure a phase of that swing. ``step`` is at least 0: the
    kernel's RSS counters are approximate, to a fraction of a MiB. ``{"unavailable": why}``
    where Linux's ``/proc/self/clear_refs`` cannot reset the peak.
    """
    step = _presets.workload(case, impl)
    built = _status_mib("VmRSS")
    step()
    limit_pools()  # the first step may load a thread pool
    for _ in range(STEP_WARMUP - 1):
        step()
    try:
        _reset_peak()
    except OSError as exc:
        return {"unavailable": f"cannot reset the peak resident set ({exc})"}
    baseline, peak, grown = _status_mib("VmRSS"), 0.0, 0.0
    for _ in range(STEP_COUNT):
        _reset_peak()
        start = _status_mib("VmRSS")
        step()
        high = _status_mib("VmHWM")
        peak, grown = max(peak, high), max(grown, high - start)
    return {"built": built, "baseline": baseline, "peak": peak, "step": grown}


def measure_memory(names, threads: int, impls) -> list[dict]:
    """:func:`step_memory` of each training-step case of ``names`` with each of ``impls``,
    each in a fresh process (one library's caches and freed memory do not count against the
    other; the malloc variables are inherited). ``ratio``: fastcnn's over torch's, of the
    ``step`` memory (None when torch's is below 0.1 MiB: the step reused resident memory)
    and of the ``peak`` (the whole process: libraries included)."""
    report = []
    for case in (c for c in _presets.cases(names) if c.op == "train_step"):
        entry = {"case": str(case)}
        for impl in impls:
            if not sys.platform.startswith("linux"):
                entry[impl] = {"unavailable": "needs Linux's /proc/self/clear_refs"}
                continue
            command = [sys.executable, "-m", "fastcnn.bench", f"--step-memory={impl}"]
            command += [f"--threads={threads}", f"--preset={case.preset}"]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                error = (done.stderr.strip().splitlines() or ["no message"])[-1]
                entry[impl] = {"unavailable": f"the measuring process failed: {error}"}
            else:
                entry[impl] = json.loads(done.stdout.splitlines()[-1])
        fast, torch = entry.get("fastcnn", {}), entry.get("torch", {})
        entry["ratio"] = {
            key: fast[key] / torch[key] if key in fast and torch.get(key, 0) >= 0.1 else None
            for key in ("step", "peak")
        }
        report.append(entry)
    return report


# --- output --------------------------------------------------------------------------

COLUMNS = (
    # title, width, row key or function of the row, format
    ("preset", 12, "preset", "{}"),
    ("op", 12, "op", "{}"),
    ("direction", 16, "direction", "{}"),
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
LEGEND = (
    "median ms, IQR ms: fastcnn's time per call (median, interquartile range);"
    " first ms: its first call in this process (compile or cache load, paid by the first"
    " case using a kernel); %GEMM: its GFLOP/s over the GEMM peak above; /torch: fastcnn"
    " time / torch time (below 1: fastcnn faster); ref/: reference time / fastcnn time;"
    " tut/: the tutorial layer's time (scipy.signal.correlate2d per channel pair, small conv"
    " presets, where SciPy is installed) / fastcnn time."
)


def format_header() -> str:
    """The table's column titles, aligned as :func:`format_row`."""
    return "  ".join(
        f"{title:>{width}}" if i > 2 else f"{title:<{width}}"
        for i, (title, width, *_) in enumerate(COLUMNS)
    )


def format_row(row: dict) -> str:
    """One table line; ``-`` where a value does not apply (no FLOPs, no torch, ...)."""
    cells = []
    for i, (_, width, key, fmt) in enumerate(COLUMNS):
        value = key(row) if callable(key) else row[key]
        text = "-" if value is None else fmt.format(value)
        cells.append(f"{text:>{width}}" if i > 2 else f"{text:<{width}}")
    return "  ".join(cells)


def _geomean(values) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def format_summary(rows: list[dict]) -> list[str]:
    """Lines summarising the conv rows against torch and the reference, where measured."""
    conv = [r for r in rows if r["op"] == "conv2d"]
    lines = []
    ratios = [r["torch_ratio"] for r in conv if r["torch_ratio"]]
    if ratios:
        lines.append(
            f"conv2d fastcnn/torch time: geometric mean {_geomean(ratios):.2f}, "
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


def _format_step(impl: str, m: dict) -> str:
    if "unavailable" in m:
        return f"{impl} unavailable: {m['unavailable']}"
    return f"{impl} {m['step']:.1f} MiB above resident (VmHWM {m['peak']:.0f} MiB)"


def format_memory(report: list[dict], threads: int) -> list[str]:
    """The lines of :func:`measure_memory`'s report."""
    lines = [
        f"peak memory of one training step (fresh process each, {threads} thread(s), "
        f"the most one of {STEP_COUNT} steps after {STEP_WARMUP} warm-up steps raised VmHWM "
        "above the VmRSS it started from):"
    ]
    for entry in report:
        parts = [_format_step(impl, entry[impl]) for impl in ("fastcnn", "torch") if impl in entry]
        if "torch" in entry:
            ratios = [f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in entry["ratio"].items()]
            parts.append("ratio fastcnn/torch: " + ", ".join(ratios))
        lines.append(f"  {entry['case']}: " + ", ".join(parts))
    return lines


def _malloc_note() -> str:
    settings = [f"{v}={os.environ[v]}" for v in MALLOC_VARS if v in os.environ]
    if settings:
        return "malloc: " + " ".join(settings) + " (freed memory is reused: no page faults)"
    return (
        "malloc: " + " and ".join(MALLOC_VARS) + " unset (glibc default: blocks >= 128 KiB"
        " are fresh mmaps whose pages fault on first touch; compare both ways)"
    )


def _load() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def format_compile(report: dict) -> list[str]:
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


# --- command line --------------------------------------------------------------------


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
        choices=_presets.PRESET_NAMES,
        metavar="NAME",
        help="run only this preset (repeatable); one of " + ", ".join(_presets.PRESET_NAMES),
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
        help="also time the first calls in fresh processes, cold and warm cache",
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
    parser.add_argument("--step-memory", choices=("fastcnn", "torch"), help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Run ``fastcnn bench`` with parsed ``args``; print the table; return the exit code.

    The thread counts it sets (fastcnn, BLAS, torch) are restored when it returns.
    """
    import fastcnn

    if args.malloc != "inherit":
        return _run_malloc_modes(args)
    names = args.preset or (_presets.QUICK_PRESETS if args.quick else _presets.DEFAULT_PRESETS)
    if args.first_calls or args.step_memory:  # the child processes of --compile and memory
        torch = _import_torch() if args.step_memory == "torch" else None
    else:
        torch = None if args.no_torch else _import_torch()
    threads = args.threads or fastcnn.get_num_threads()
    try:
        with _threads(threads, torch) as limit_pools:
            if args.first_calls:
                print(json.dumps(_first_calls(names)))
            elif args.step_memory:
                (case,) = [c for c in _presets.cases(names) if c.op == "train_step"]
                print(json.dumps(step_memory(case, args.step_memory, limit_pools)))
            else:
                _bench(args, names, threads, torch, limit_pools)
    except ValueError as exc:  # a thread count beyond the threads Numba launched
        print(f"fastcnn bench: {exc}", file=sys.stderr)
        return 2
    return 0


def _run_malloc_modes(args: argparse.Namespace) -> int:
    """``--malloc default|high|both``: the bench in a fresh process per mode (glibc reads the
    variables at start-up), with the same options; for ``both``, a side-by-side summary.
    The JSON is the run's, or ``{"runs": {"default": run, "high": run}}`` for ``both``."""
    modes = tuple(MALLOC_MODES) if args.malloc == "both" else (args.malloc,)
    argv = [f"--preset={name}" for name in args.preset or ()]
    argv += [f"--{k}={getattr(args, k)}" for k in ("threads", "repeats") if getattr(args, k)]
    flags = ("quick", "no_torch", "compile", "no_memory")
    argv += ["--" + k.replace("_", "-") for k in flags if getattr(args, k)]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="fastcnn-bench-") as tmp:
        for mode in modes:
            env = {k: v for k, v in os.environ.items() if k not in MALLOC_VARS}
            env |= MALLOC_MODES[mode]
            print(f"=== --malloc {mode}: a fresh process", flush=True)
            path = Path(tmp, f"{mode}.json")
            command = [sys.executable, "-m", "fastcnn.bench", *argv, f"--json={path}"]
            code = subprocess.run(command, env=env).returncode
            if code:
                return code
            runs[mode] = json.loads(path.read_text()) | {"malloc": mode}
            runs[mode]["options"] |= {"malloc": args.malloc, "json": args.json}
            print()
    if len(runs) > 1:
        print("\n".join(format_malloc_summary(runs)))
    if args.json:
        result = runs[modes[0]] if len(runs) == 1 else {"runs": runs}
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


def format_malloc_summary(runs: dict) -> list[str]:
    """Per ``--malloc`` mode: conv and training-step time ratios, step memory ratio."""
    lines = ["malloc both ways (fastcnn/torch; below 1: fastcnn faster or smaller):"]
    for mode, result in runs.items():
        conv = [r["torch_ratio"] for r in result["rows"] if r["op"] == "conv2d"]
        step = [r["torch_ratio"] for r in result["rows"] if r["op"] == "train_step"]
        memory = [m["ratio"] for m in result["step_memory"] or ()]
        memory = memory[0] if memory else {}
        cells = [
            f"conv time geomean {_geomean(conv):.2f}" if conv and all(conv) else None,
            f"step time {step[0]:.2f}" if step and step[0] else None,
            *(f"{k} memory " + ("-" if v is None else f"{v:.2f}") for k, v in memory.items()),
        ]
        settings = " ".join(f"{k}={v}" for k, v in MALLOC_MODES[mode].items()) or "unset"
        text = ", ".join(c for c in cells if c) or "no torch comparison"
        lines.append(f"  {mode:<8} {text}   ({settings})")
    return lines


@contextlib.contextmanager
def _threads(n: int, torch):
    """Run fastcnn, torch and every BLAS and OpenMP pool on ``n`` threads; restore on exit.

    Yields a function that limits the pools loaded since (threadpoolctl only sees loaded
    libraries). Idle pools left at the default size were seen to slow torch 100-fold at
    ``n=1`` next to Numba's OpenMP pool.
    """
    from threadpoolctl import threadpool_limits

    import fastcnn

    before = fastcnn.get_num_threads(), torch and torch.get_num_threads()
    with contextlib.ExitStack() as limits:
        fastcnn.set_num_threads(n)
        limits.callback(fastcnn.set_num_threads, before[0])
        if torch is not None:
            torch.set_num_threads(n)
            limits.callback(torch.set_num_threads, before[1])

        def limit_pools():
            limits.enter_context(threadpool_limits(limits=n))

        limit_pools()
        yield limit_pools


def _import_tutorial():
    try:
        from fastcnn import _tutorial  # imports SciPy: not a fastcnn dependency
    except ImportError:
        return None
    return _tutorial


def _bench(args, names, threads: int, torch, limit_pools) -> None:
    """Measure and print the GEMM peak, every case and the training step's memory; save
    the JSON if asked."""
    import fastcnn

    load_start = _load()  # other processes on the cores make timings noisy: say so
    effort = QUICK if args.quick else FULL
    info = fastcnn.info()
    versions = {k: info[k] for k in ("fastcnn", "python", "numpy", "numba")}
    versions["torch"] = torch.__version__ if torch is not None else None
    tutorial = _import_tutorial() if effort.tutorial_samples else None
    versions["scipy"] = sys.modules["scipy"].__version__ if tutorial else None  # the tutorial's
    optional = {name for name, lib in (("torch", torch), ("tutorial", tutorial)) if lib}
    gemm = measure_gemm(effort, args.repeats)
    print(
        f"fastcnn bench: {info['cpu']} ({info['cpu_target']}, {os.cpu_count()} cpus), "
        f"threads: {threads}, float32"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    print(_malloc_note())
    print(f"load average (1 min): {load_start} at the start, {_load()} after the GEMM peak")
    print(
        f"GEMM peak: numpy float32 matmul {gemm['size']}^3, same threads: "
        f"{gemm['gflops']:.1f} GFLOP/s"
    )
    print()
    print(format_header())
    rows = []
    for case in _presets.cases(names):
        rows.append(measure_case(case, optional, effort, args.repeats, gemm["gflops"], limit_pools))
        print(format_row(rows[-1]), flush=True)
    print()
    for line in format_summary(rows):
        print(line)
    print(LEGEND)
    memory = None
    if effort.step_memory and not args.no_memory and any(r["op"] == "train_step" for r in rows):
        memory = measure_memory(names, threads, ("fastcnn", "torch") if torch else ("fastcnn",))
        print()
        print("\n".join(format_memory(memory, threads)))
    compile_report = measure_compile(names, threads) if args.compile else None
    if compile_report:
        print()
        print("\n".join(format_compile(compile_report)))

    if args.json:
        result = {
            "options": {k: getattr(args, k) for k in OPTIONS},
            "machine": {k: info[k] for k in ("cpu", "cpu_target", "cpu_features")}
            | {"cpus": os.cpu_count()},
            "versions": versions,
            "threads": threads,
            "env": {v: os.environ.get(v) for v in MALLOC_VARS},
            "load_average": {"start": load_start, "end": _load()},
            "quick": args.quick,
            "gemm": gemm,
            "rows": rows,
            "step_memory": memory,
            "compile": compile_report,
        }
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")


def main(argv=None) -> int:
    """Entry point of ``python -m fastcnn.bench`` (``fastcnn bench`` goes via the CLI)."""
    parser = argparse.ArgumentParser(prog="fastcnn bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
