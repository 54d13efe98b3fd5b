"""Compile kernels ahead of use, in parallel worker processes: ``fastcnn warmup``.

Numba compiles each kernel on its first call and keeps it in its on-disk cache, so only
the first process on a machine pays; but one process compiles one kernel at a time
(Numba holds a process-wide lock). :func:`warmup` starts one worker process per core
(``python -m fastcnn.warmup``, a fresh interpreter each) and hands each free worker the
next *workload* (small calls that compile one family of kernels in one dtype,
:data:`WORKLOADS`), longest first, showing progress. Later processes load the kernels
from the cache.

A kernel's compiled code depends on the argument types, not on the sizes, so a
workload's small calls compile what a model of any size needs: its kernels and the
launcher of each kernel's parts (the calls are big enough to run on every thread).

``fastcnn train`` warms up what its net needs while it loads the data, the first time
(:func:`needed`): a stamp in the cache folder records a finished warm-up for this CPU,
Numba and fastcnn's kernels.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from fastcnn._kernels import plan
from fastcnn._subprocess import module_command

DTYPES = ("float32", "float64")
# A worker runs each kernel on one thread: the same compiled code (a launch's argument
# types do not depend on its parts), and no thread team spinning between its kernels on
# the cores the other workers compile on.
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _conv(dtype, c, k, kernel, padding, stride=1, size=12, ops=plan.OPS):
    """The conv directions ``ops`` (:data:`fastcnn._kernels.plan.OPS`) on one geometry."""
    import fastcnn.functional as F

    rng = np.random.default_rng(0)
    x, w = _rand(rng, (32, c, size, size), dtype), _rand(rng, (k, c, kernel, kernel), dtype)
    out = (size + 2 * padding - kernel) // stride + 1
    y = _rand(rng, (32, k, out, out), dtype)  # a grad_out
    if "forward" in ops:
        F.conv2d(x, w, _rand(rng, k, dtype), stride, padding)
    if "grad_input" in ops:
        F.conv2d_grad_input(x.shape, w, y, stride, padding)
    if "grad_weight" in ops:
        F.conv2d_grad_weight(x, w.shape, y, stride, padding)


def _conv_bias(dtype):
    """The bias gradient of every conv kernel (a job of its own, not compiled by each
    conv job's worker)."""
    import fastcnn.functional as F

    F.conv2d_grad_bias(_rand(np.random.default_rng(0), (32, 8, 12, 12), dtype))


def _conv_first_layer(dtype):
    """A first layer's few-taps forward and weight gradient (its input gradient is never
    needed in training)."""
    _conv(dtype, c=1, k=32, kernel=3, padding=1, size=28, ops=("forward", "grad_weight"))


def _conv_few_taps(dtype):
    _conv_first_layer(dtype)
    _conv(dtype, c=3, k=16, kernel=2, padding=0, stride=2)  # the input gradient, strided


def _conv_direct(dtype, paired=True):
    """The direct kernel's three directions; ``paired``: the input gradient's blocking for
    input channels that fit one vector too, which a net whose direct layers all have more
    (the LeNet's) never runs."""
    _conv(dtype, c=16, k=32, kernel=3, padding=1, ops=("forward", "grad_weight"))
    _direct_grad_inputs(dtype, paired)


def _direct_grad_inputs(dtype, paired=True):
    """The direct input gradient's blockings: input channels that fit one vector (blocks
    of two taps; if ``paired``) and more."""
    from fastcnn._kernels.conv import paired_channels

    most = paired_channels(dtype)
    for c in (most, most + 1) if paired else (most + 1,):
        _conv(dtype, c=c, k=32, kernel=3, padding=1, ops=("grad_input",))


#: A geometry that :mod:`fastcnn._kernels.plan` sends to each conv kernel, in every op.
PLAN_GEOMETRY = {"few_taps": {"c": 1, "k": 8}, "direct": {"c": 16, "k": 32}}


GI_DIRECT = ("grad_input", "direct")


def _conv_op(op, kernel):
    """A workload running one direction ``op`` of the conv kernel ``kernel``."""
    if (op, kernel) == GI_DIRECT:
        return _direct_grad_inputs
    return lambda dtype: _conv(dtype, kernel=3, padding=1, ops=(op,), **PLAN_GEOMETRY[kernel])


def conv_job(op, kernel) -> str:
    """The name of the workload of one conv direction ``op`` on ``kernel``."""
    return f"conv {op} {kernel}"


def _pool_2x2(dtype):
    import fastcnn.functional as F

    rng = np.random.default_rng(0)
    for width in (8, 16, 32, 64):  # each vector width: rows narrower and wider than one
        x = _rand(rng, (64, 32, 16, width), dtype)
        y, indices = F.max_pool2d(x, 2)
        F.max_pool2d_backward(y, indices, x.shape)


def _pool(dtype):
    import fastcnn.functional as F

    x = _rand(np.random.default_rng(0), (64, 32, 6, 6), dtype)
    y, indices = F.max_pool2d(x, 3, 1, 1)
    F.max_pool2d_backward(y, indices, x.shape)


def _batchnorm(dtype):
    import fastcnn.functional as F

    rng = np.random.default_rng(0)
    x = _rand(rng, (64, 16, 12, 12), dtype)
    stats = np.zeros(16, dtype), np.ones(16, dtype)
    y, mean, invstd = F.batch_norm2d(x, None, None, *stats)
    F.batch_norm2d_backward(y, x, None, mean, invstd)
    F.batch_norm2d(x, None, None, *stats, training=False)


def _relu(dtype):
    import fastcnn.functional as F

    x = _rand(np.random.default_rng(0), (1 << 18,), dtype)
    F.relu_backward(x, F.relu(x))


def _sigmoid(dtype):
    import fastcnn.functional as F

    x = _rand(np.random.default_rng(0), (1 << 18,), dtype)
    F.sigmoid_backward(x, F.sigmoid(x))


def _linear(dtype):
    from fastcnn import nn

    rng = np.random.default_rng(0)
    layer = nn.Linear(400, 100, rng=rng, dtype=dtype)
    x = _rand(rng, (64, 400), dtype)
    layer(x)
    layer.backward(_rand(rng, (64, 100), dtype))


def _linear_one_sample(dtype):
    from fastcnn import nn

    rng = np.random.default_rng(0)
    layer = nn.Linear(400, 100, rng=rng, dtype=dtype)
    layer(_rand(rng, (400,), dtype))
    layer.backward(_rand(rng, (100,), dtype))


def _cross_entropy(dtype):
    import fastcnn.functional as F

    rng = np.random.default_rng(0)
    F.cross_entropy(_rand(rng, (64, 10), dtype), rng.integers(0, 10, 64))


def _losses(dtype):
    import fastcnn.functional as F

    logits = _rand(np.random.default_rng(0), (64, 10), dtype)
    F.softmax(logits), F.log_softmax(logits)
    probs = F.sigmoid(logits)
    F.binary_cross_entropy(probs, (probs > 0.5).astype(dtype))


def _parameters(dtype):
    from fastcnn.nn import Parameter

    rng = np.random.default_rng(0)
    params = [Parameter(_rand(rng, (1 << 18,), dtype)), Parameter(_rand(rng, (10,), dtype))]
    for p in params:
        p.grad[...] = 1
    return params


def _sgd(dtype):
    from fastcnn import optim

    params = _parameters(dtype)
    for opt in (optim.SGD(params, lr=0.1, momentum=0.9), optim.SGD(params, lr=0.1)):
        opt.step()
        opt.step()


def _adam(dtype):
    from fastcnn import optim

    optim.Adam(_parameters(dtype)).step()


#: The workloads, each compiling one family of kernels in one dtype, with their rough
#: compile time in seconds (the longest start first).
WORKLOADS = {
    "conv first layer": (_conv_first_layer, 4.5),
    "conv few_taps": (_conv_few_taps, 6),
    "conv direct": (_conv_direct, 6.5),
    "conv direct, wide": (functools.partial(_conv_direct, paired=False), 5.5),
    "conv bias": (_conv_bias, 0.7),
    "pool 2x2": (_pool_2x2, 1),
    "pool": (_pool, 1),
    "batchnorm": (_batchnorm, 2),
    "relu": (_relu, 0.5),
    "sigmoid": (_sigmoid, 0.5),
    "linear": (_linear, 2),
    "linear, one sample": (_linear_one_sample, 1),
    "cross entropy": (_cross_entropy, 0.5),
    "losses": (_losses, 1.5),
    "sgd": (_sgd, 0.5),
    "adam": (_adam, 0.5),
    # One conv direction on one kernel (fastcnn.compat warms up a network's own); the
    # direct input gradient compiles its two blockings.
    **{
        conv_job(op, kernel): (_conv_op(op, kernel), 3 if (op, kernel) == GI_DIRECT else 1.5)
        for op in plan.OPS
        for kernel in PLAN_GEOMETRY
    },
}
#: What a step of ``fastcnn train``'s LeNet compiles (its SGD; with ``--batchnorm`` and
#: ``--optimizer adam``, add ``batchnorm`` and ``adam``).
LENET = ("conv first layer", "conv direct, wide", "conv bias", "pool 2x2", "relu", "linear",
         "cross entropy", "sgd")  # fmt: skip
CONV_OPS = tuple(conv_job(op, kernel) for op in plan.OPS for kernel in PLAN_GEOMETRY)
# "conv few_taps" and "conv direct" compile all that these do
_PARTS = ("conv first layer", "conv direct, wide", *CONV_OPS)
ALL = tuple(name for name in WORKLOADS if name not in _PARTS)


def jobs(names=None, dtypes=("float32",)) -> list[tuple[str, str]]:
    """``(workload, dtype)`` pairs, longest first: ``names`` (default: every workload)
    in each of ``dtypes``."""
    names = list(ALL) if names is None else list(names)
    for name in names:
        if name not in WORKLOADS:
            raise ValueError(
                f"warmup: unknown workload {name!r}; expected one of {list(WORKLOADS)}"
            )
    return longest_first((name, dtype) for dtype in dtypes for name in names)


def longest_first(job_list) -> list[tuple[str, str]]:
    """``(workload, dtype)`` jobs in the order :func:`warmup` wants them: by their rough
    compile time, longest first."""
    return sorted(job_list, key=lambda job: -WORKLOADS[job[0]][1])


def _stamp(job_list) -> Path | None:
    """The file that records a finished warm-up of ``job_list`` on this machine: in the
    kernel cache's folder, named by a hash of the jobs, the CPU, Numba's version and the
    kernels' sources (what Numba's cache depends on); ``None`` when kernels are compiled
    in memory (no cache to warm up)."""
    import llvmlite.binding as llvm
    import numba

    from fastcnn import _cache
    from fastcnn._kernels import activation

    folder = _cache.describe(activation._relu)["dir"]
    if folder is None:
        return None

    kernels = Path(activation.__file__).parent
    h = hashlib.sha256(json.dumps(sorted(job_list)).encode())
    h.update(f"{numba.__version__} {llvm.get_host_cpu_name()}".encode())
    h.update(str(sorted(llvm.get_host_cpu_features().items())).encode())
    for source in sorted(kernels.glob("*.py")):
        h.update(source.read_bytes())
    return Path(folder) / f"fastcnn-warm-{h.hexdigest()[:16]}"


def needed(job_list) -> bool:
    """Whether ``job_list`` has not been warmed up on this machine yet (no stamp); never
    where kernels are compiled in memory (workers could not hand them over)."""
    try:
        stamp = _stamp(job_list)
        return stamp is not None and not stamp.exists()
    except OSError:
        return True


def warmup(
    job_list=None, workers: int | None = None, progress: bool | None = None, load: bool = False
) -> float:
    """Compile the kernels of ``job_list`` (:func:`jobs`; default: every workload, both
    dtypes) in ``workers`` parallel processes (default: one per core); returns the
    seconds it took. ``progress``: show a bar (``None``: only on a terminal). ``load``:
    this process needs the kernels too, so it is one of the workers (it compiles jobs
    itself, on a thread) and runs the other workers' jobs once they are done, loading
    their kernels from the cache while the rest compile. Raises ``RuntimeError`` if a
    worker fails."""
    from tqdm import tqdm

    job_list = jobs(dtypes=DTYPES) if job_list is None else list(job_list)
    pending = list(reversed(job_list))  # popped from the end: longest first
    lock = threading.Lock()
    workers = max(1, min(workers or len(os.sched_getaffinity(0)), len(job_list)))
    start = time.perf_counter()
    logs = [tempfile.TemporaryFile("w+") for _ in range(workers - load)]  # a pipe could fill up
    procs = [
        subprocess.Popen(
            module_command("fastcnn.warmup"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=WORKER_ENV | dict(os.environ),
        )
        for log in logs
    ]
    reports: queue.SimpleQueue = queue.SimpleQueue()
    failed = []

    def read(proc):  # one reader thread per worker: their lines come in any order
        for line in proc.stdout:
            reports.put((proc, line))
        reports.put((proc, None))

    def next_job():
        with lock:
            return pending.pop() if pending else None

    def hand_out(proc):  # the next job to a worker that is free, or the end of its work
        job = next_job()
        try:
            if job is not None:
                proc.stdin.write(json.dumps(job) + "\n")
                proc.stdin.flush()
            else:
                proc.stdin.close()
        except OSError:
            pass  # the worker died: its reader reports the end, wait() its status

    def work_here():  # this process as a worker (load=True)
        try:
            while (job := next_job()) is not None:
                WORKLOADS[job[0]][0](np.dtype(job[1]))
                reports.put((None, f"done {job[0]} {job[1]}\n"))
        except Exception as exc:  # noqa: BLE001 - reported as a failed worker below
            failed.append(f"{type(exc).__name__}: {exc}")
        reports.put((None, None))

    for proc in procs:
        threading.Thread(target=read, args=(proc,), daemon=True).start()
        hand_out(proc)
    if load:
        threading.Thread(target=work_here, daemon=True).start()
    disable = None if progress is None else not progress
    done = 0
    with tqdm(total=len(job_list), desc="compiling kernels", unit="job", disable=disable) as bar:
        running = len(procs) + load
        while running:
            proc, line = reports.get()
            if line is None:
                running -= 1
            elif line.startswith("done "):
                done += 1
                bar.set_postfix_str(line[5:].strip())
                bar.update(1)
                if proc is not None:
                    hand_out(proc)
                    if load:
                        name, dtype = line[5:].strip().rsplit(" ", 1)
                        WORKLOADS[name][0](np.dtype(dtype))
    said = []
    for proc, log in zip(procs, logs, strict=True):
        log.seek(0)
        text = log.read()
        if proc.wait() != 0:
            failed.append(text[-2000:])
        said += [line for line in text.splitlines() if line not in said]
    for line in said:  # what the workers said (a damaged cache entry replaced, ...)
        print(line, file=sys.stderr)
    if failed:
        raise RuntimeError(f"warmup: a worker failed:\n{failed[0]}")
    if done < len(job_list):
        raise RuntimeError(f"warmup: the workers ended after {done} of {len(job_list)} jobs")
    try:
        stamp = _stamp(job_list)
        if stamp is not None:
            stamp.touch()
    except OSError:
        pass  # no stamp: the next run warms up again, from the cache
    return time.perf_counter() - start


def _work() -> None:
    """In a worker process: run each ``[workload, dtype]`` line of stdin, reporting each
    on stdout; the parent sends the next job when one is done."""
    for line in sys.stdin:
        name, dtype = json.loads(line)
        WORKLOADS[name][0](np.dtype(dtype))
        print(f"done {name} {dtype}", flush=True)


if __name__ == "__main__":
    _work()
