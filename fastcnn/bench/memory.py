"""The peak memory of a training step, each library in a fresh process (Linux only).

A fresh process per library, so that one library's caches and freed memory do not count
against the other; the process is ``python -m fastcnn.bench --step-memory=IMPL``, which
runs :func:`step_memory` and prints its JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fastcnn._subprocess import module_command
from fastcnn.bench import presets, workloads

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
    step = workloads.workload(case, impl)
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
    each in a fresh process (the malloc variables are inherited). ``ratio``: fastcnn's over
    torch's, of the ``step`` memory (None when torch's is below 0.1 MiB: the step reused
    resident memory) and of the ``peak`` (the whole process: libraries included)."""
    report = []
    for case in (c for c in presets.cases(names) if c.op == "train_step"):
        entry = {"case": str(case)}
        for impl in impls:
            if not sys.platform.startswith("linux"):
                entry[impl] = {"unavailable": "needs Linux's /proc/self/clear_refs"}
                continue
            command = module_command("fastcnn.bench", f"--step-memory={impl}")
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
