"""``fastcnn bench --malloc``: the bench with glibc's malloc thresholds unset or set high.

Glibc serves allocations of 128 KiB and more with fresh ``mmap``s whose pages cost a fault
on first touch, so libraries that allocate per call are slower than their kernels. Glibc
reads ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` at start-up, so each mode
runs the bench in a fresh process; a fair comparison runs both ways (``--malloc both``).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from fastcnn import _malloc
from fastcnn._subprocess import module_command
from fastcnn.bench.report import geomean

MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
# The environment of each mode. ``high``: blocks up to 32 MiB come from the heap and freed
# memory stays there, as after ``fastcnn.keep_freed_memory()``.
MALLOC_MODES = {
    "default": {},
    "high": {
        "MALLOC_MMAP_THRESHOLD_": str(_malloc.MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(_malloc.TRIM_THRESHOLD),
    },
}


def malloc_note() -> str:
    """The header line saying whether the thresholds are set in this process."""
    settings = [f"{v}={os.environ[v]}" for v in MALLOC_VARS if v in os.environ]
    if settings:
        return "malloc: " + " ".join(settings) + " (freed memory is reused: no page faults)"
    return (
        "malloc: " + " and ".join(MALLOC_VARS) + " unset (glibc default: blocks >= 128 KiB"
        " are fresh mmaps whose pages fault on first touch; compare both ways)"
    )


def run_modes(args) -> int:
    """``--malloc default|high|both``: the bench in a fresh process per mode, with the same
    options; for ``both``, a side-by-side summary. The JSON is the run's, or ``{"runs":
    {"default": run, "high": run}}`` for ``both``. Returns the exit code."""
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
            command = module_command("fastcnn.bench", *argv, f"--json={path}")
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
            f"conv time geomean {geomean(conv):.2f}" if conv and all(conv) else None,
            f"step time {step[0]:.2f}" if step and step[0] else None,
            *(f"{k} memory " + ("-" if v is None else f"{v:.2f}") for k, v in memory.items()),
        ]
        settings = " ".join(f"{k}={v}" for k, v in MALLOC_MODES[mode].items()) or "unset"
        text = ", ".join(c for c in cells if c) or "no torch comparison"
        lines.append(f"  {mode:<8} {text}   ({settings})")
    return lines
