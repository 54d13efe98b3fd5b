"""``fastcnn bench --compile``: what the first call of each case costs on a cold cache.

Each case runs in a fresh process with a new, empty ``NUMBA_CACHE_DIR`` (cold: its first
call compiles every kernel it needs), then in a second fresh process with the cache the
first wrote (warm: it loads them); one more pair runs every case in one process
(everything). Each process is ``python -m fastcnn.bench --first-calls``, which runs
:func:`first_calls` and prints JSON.

While a call compiles, :class:`Recorder` follows Numba's compile events and charges each
fastcnn dispatcher its own time: a kernel compiled while another compiles (an inlined
helper) is charged to itself, Numba's own overloads to the fastcnn caller. Its time is
split into LLVM (time holding llvmlite's lock: optimisation and machine code) and the
front end (the rest: typing, Numba's passes, building the IR). Kernel times are CPU
seconds of the compiling thread, which a busy or paused machine does not inflate; first
calls are wall seconds, what a user waits, with the process's CPU seconds beside them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections import defaultdict

from fastcnn._subprocess import module_command
from fastcnn.bench import workloads

PREFIX = "fastcnn."  # the dispatchers reported under their own name


def _name(dispatcher) -> str:
    fn = dispatcher.py_func
    return f"{fn.__module__}.{fn.__qualname__}"


def _dtypes(signature: str) -> str:
    """The float dtypes a signature mentions (``float32``, ``float32+float64``), or ``-``."""
    found = dict.fromkeys(re.findall(r"float(?:16|32|64)", signature))
    return "+".join(found) or "-"


class Recorder:
    """A context that records every compile of a Numba dispatcher while it is open.

    ``compiled`` lists, in the order the compiles end, ``{"kernel", "signature", "dtype",
    "front_end", "llvm"}`` (CPU seconds of the compiling thread, the dispatcher's own: the
    compiles of dispatchers named under ``prefix`` that it triggers are not included, those
    of other dispatchers are). A compile outside any ``prefix`` one is reported as itself.
    """

    def __init__(self, prefix: str = PREFIX):
        self.prefix = prefix
        self.compiled: list[dict] = []
        self._stack: list[dict | None] = []  # None: folded into the enclosing compile
        self._llvm_depth = 0
        self._llvm_start = 0.0

    def _top(self) -> dict | None:
        return next((frame for frame in reversed(self._stack) if frame is not None), None)

    def _started(self, data) -> None:
        name = _name(data["dispatcher"])
        if self._top() is not None and not name.startswith(self.prefix):
            self._stack.append(None)
            return
        self._stack.append(
            {"kernel": name, "signature": str(tuple(data["args"])), "start": time.thread_time(),
             "nested": 0.0, "llvm": 0.0}
        )  # fmt: skip

    def _ended(self) -> None:
        frame = self._stack.pop()
        if frame is None:
            return
        total = time.thread_time() - frame["start"]
        parent = self._top()
        if parent is not None:
            parent["nested"] += total
        own = total - frame["nested"]
        self.compiled.append(
            {
                "kernel": frame["kernel"],
                "signature": frame["signature"],
                "dtype": _dtypes(frame["signature"]),
                "front_end": max(0.0, own - frame["llvm"]),
                "llvm": frame["llvm"],
            }
        )

    def _llvm_started(self) -> None:
        if self._llvm_depth == 0:
            self._llvm_start = time.thread_time()
        self._llvm_depth += 1

    def _llvm_ended(self) -> None:
        self._llvm_depth -= 1
        top = self._top()
        if self._llvm_depth == 0 and top is not None:
            top["llvm"] += time.thread_time() - self._llvm_start

    def __enter__(self) -> Recorder:
        from numba.core import event

        recorder = self

        class Compiles(event.Listener):
            def on_start(self, e):
                recorder._started(e.data)

            def on_end(self, e):
                recorder._ended()

        class LLVM(event.Listener):
            def on_start(self, e):
                recorder._llvm_started()

            def on_end(self, e):
                recorder._llvm_ended()

        self._listeners = {"numba:compile": Compiles(), "numba:llvm_lock": LLVM()}
        for kind, listener in self._listeners.items():
            event.register(kind, listener)
        return self

    def __exit__(self, *exc) -> None:
        from numba.core import event

        for kind, listener in self._listeners.items():
            event.unregister(kind, listener)


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> dict:
    wall, cpu = _clocks()
    return {"wall": wall - start[0], "cpu": cpu - start[1]}


def first_calls(selected, threads: int | None = None) -> dict:
    """In this (fresh) process: the import of ``fastcnn.functional``, then, on ``threads``
    threads, the first call of each fastcnn case in ``selected`` with the kernels it
    compiled (:class:`Recorder`), and ``all``: the whole loop (building the inputs too)
    with every kernel compiled in it."""
    start = _clocks()
    import fastcnn.functional  # Numba and the kernel modules, nothing compiled

    result = {"import": _since(start), "cases": []}
    if threads:
        fastcnn.set_num_threads(threads)
    with Recorder() as recorder:
        loop = _clocks()
        for case in selected:
            fn = workloads.workload(case, "fastcnn")
            before = len(recorder.compiled)
            call = _clocks()
            fn()
            took = _since(call)
            kernels = recorder.compiled[before:]
            result["cases"].append({"case": str(case), **took, "kernels": kernels})
        result["all"] = _since(loop) | {"kernels": recorder.compiled}
    return result


def _run_child(cases, threads: int, cache: str) -> dict:
    """:func:`first_calls` of ``cases`` in a fresh process whose Numba cache is ``cache``."""
    command = module_command("fastcnn.bench", "--first-calls", f"--threads={threads}")
    command += [f"--preset={name}" for name in dict.fromkeys(c.preset for c in cases)]
    command += [f"--case={case}" for case in cases]
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        error = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"the measuring process failed ({' '.join(command[3:])}): {error}")
    return json.loads(done.stdout.splitlines()[-1])


def _cold_and_warm(cases, threads: int) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory(prefix="fastcnn-bench-cache-") as cache:
        cold = _run_child(cases, threads, cache)
        warm = _run_child(cases, threads, cache)
    return cold, warm


def measure_compile(cases, threads: int, progress=lambda case: None) -> dict:
    """Cold and warm first calls of each of ``cases`` (a new cache each), then of all of
    them in one process; ``progress(name)`` is called before each pair of processes."""
    report = {"cases": []}
    for case in cases:
        progress(str(case))
        cold, warm = _cold_and_warm([case], threads)
        report["cases"].append(
            {
                "case": str(case),
                "op": case.op,
                "kernel": case.kernel,
                "cold": cold["cases"][0] | {"import": cold["import"]},
                "warm": warm["cases"][0] | {"import": warm["import"]},
            }
        )
    progress("everything")
    cold, warm = _cold_and_warm(cases, threads)
    report["everything"] = {
        "cases": len(cases),
        "cold": cold["all"] | {"import": cold["import"]},
        "warm": warm["all"] | {"import": warm["import"]},
    }
    single = [c for c in report["cases"] if c["op"] != "train_step"]
    if single:
        slowest = max(single, key=lambda c: c["cold"]["wall"])
        report["slowest_op"] = {"case": slowest["case"], **slowest["cold"]}
        del report["slowest_op"]["kernels"], report["slowest_op"]["import"]
    return report


# --- output --------------------------------------------------------------------------

LEGEND = (
    "cold compile: the first call of each case in a fresh process with an empty",
    "NUMBA_CACHE_DIR (cold s: wall seconds, cpu s: the process's CPU seconds), then in",
    "another with the cache it wrote (warm s: cache loads). Per kernel (sigs: signatures",
    "compiled), CPU seconds of its own compile: front s in Numba, LLVM s in LLVM.",
)
# title, width of each column; the names are left-aligned, the numbers right-aligned
COLUMNS = (("case / kernel", 48), ("dtype", 15), ("sigs", 4), ("cold s", 7), ("cpu s", 6),
           ("warm s", 6), ("front s", 7), ("LLVM s", 6))  # fmt: skip


def _line(*cells) -> str:
    """One table line of :data:`COLUMNS` from its cells (None: blank)."""
    texts = []
    for i, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True)):
        text = "" if cell is None else cell
        texts.append(f"{text:<{width}}" if i < 2 else f"{text:>{width}}")
    return " ".join(texts).rstrip()


def _short(kernel: str) -> str:
    return kernel.removeprefix("fastcnn._kernels.")


def per_kernel(kernels: list[dict]) -> list[dict]:
    """``kernels`` summed per dispatcher and dtype, with their number of signatures
    (``sigs``), most expensive first."""
    totals = defaultdict(lambda: {"sigs": 0, "front_end": 0.0, "llvm": 0.0})
    for k in kernels:
        entry = totals[k["kernel"], k["dtype"]]
        entry["sigs"] += 1
        entry["front_end"] += k["front_end"]
        entry["llvm"] += k["llvm"]
    rows = [{"kernel": name, "dtype": dtype, **t} for (name, dtype), t in totals.items()]
    return sorted(rows, key=lambda r: -(r["front_end"] + r["llvm"]))


def _case_lines(label: str, cold: dict, warm: dict) -> list[str]:
    """The case's line (sums over its kernels), a line per kernel, and a warning where
    the warm run compiled anything (a kernel that the cache did not serve)."""
    kernels = cold["kernels"]
    front, llvm = sum(k["front_end"] for k in kernels), sum(k["llvm"] for k in kernels)
    lines = [_line(label, None, f"{len(kernels)}", f"{cold['wall']:.2f}", f"{cold['cpu']:.2f}",
                   f"{warm['wall']:.2f}", f"{front:.2f}", f"{llvm:.2f}")]  # fmt: skip
    for k in per_kernel(kernels):
        lines.append(_line("  " + _short(k["kernel"]), k["dtype"], f"{k['sigs']}", None, None,
                           None, f"{k['front_end']:.2f}", f"{k['llvm']:.2f}"))  # fmt: skip
    if warm["kernels"]:
        names = ", ".join(sorted({_short(k["kernel"]) for k in warm["kernels"]}))
        lines.append(f"  ! the warm run compiled again (not loaded from the cache): {names}")
    return lines


def format_compile(report: dict) -> list[str]:
    """The lines of :func:`measure_compile`'s report: per case its cold and warm first
    call and the kernels it compiled, then everything in one process, per kernel."""
    header = _line(*(title for title, _ in COLUMNS))
    lines = [*LEGEND, "", header]
    for case in report["cases"]:
        label = case["case"] + (f" ({case['kernel']})" if case["kernel"] else "")
        lines += _case_lines(label, case["cold"], case["warm"])
    every = report["everything"]
    label = f"everything ({every['cases']} case{'s' * (every['cases'] != 1)}, one process)"
    lines += ["", header, *_case_lines(label, every["cold"], every["warm"]), ""]
    cold, warm = every["cold"]["import"], every["warm"]["import"]
    lines.append(f"import fastcnn.functional: cold {cold['wall']:.2f} s, warm {warm['wall']:.2f} s")
    if "slowest_op" in report:
        slowest = report["slowest_op"]
        lines.append(
            f"slowest first call of a single op, cold: {slowest['case']} {slowest['wall']:.2f} s"
            f" ({slowest['cpu']:.2f} s CPU)"
        )
    return lines
