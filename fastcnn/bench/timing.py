"""How ``fastcnn bench`` times: samples that alternate between implementations.

:func:`measure_case` times the first call of each implementation on its own (for fastcnn
its kernels' compile or cache load), checks its result against fastcnn's, then hands the
callables to :func:`time_calls`: samples of ``number`` calls (``number`` chosen so a sample
lasts about :data:`SAMPLE_SECONDS`) alternate between fastcnn and torch until the time
budget is spent, and the median and quartiles are over the per-call time of the samples.
:func:`measure_gemm` times NumPy's float32 matmul at the same thread count: the peak that
the conv GFLOP/s are a percentage of.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass

from fastcnn.bench import presets, workloads


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
# Idle time before each sample. GNU OpenMP threads spin for a while after each parallel
# region, and torch and Numba each have their own pool: the pause lets the pool of the
# implementation timed before go to sleep instead of competing for the cores. An untimed
# call follows it (unless ``time_calls`` is told not to): after the pause, the first call
# of a multithreaded op waits for its sleeping threads, which no loop of calls (a training
# loop) pays.
PAUSE_SECONDS = 0.02
# OpenBLAS's threads spin after each multithreaded call: after NumPy's own GEMMs (the peak,
# the reference, the tutorial layer) the next implementation waits this long, or one of its
# threads shares a core with a spinner.
BLAS_REST_SECONDS = 0.2


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


def measure_gemm(effort: Effort, samples: int | None) -> dict:
    """Time NumPy's float32 GEMM (:func:`fastcnn.bench.workloads.gemm_workload`): the peak."""
    fn, flops = workloads.gemm_workload()
    fn()
    t = time_calls({"gemm": fn}, budget=effort.gemm_budget, min_samples=5, samples=samples)
    t = t["gemm"]
    return {
        "size": workloads.GEMM_SIZE,
        "flops": flops,
        "gflops": flops / t.median / 1e9,
        "timing": asdict(t),
    }


def measure_case(case, optional, effort: Effort, samples, gemm_gflops: float, limit_pools) -> dict:
    """Time one case with fastcnn, the reference and tutorial layer where affordable, and
    torch; ``optional`` names those of torch and tutorial that can run (importable, wanted).

    Each implementation's first call is timed on its own, and its result checked against
    fastcnn's (:func:`fastcnn.bench.workloads.assert_same`). ``limit_pools()`` is called
    after the first calls, which may have loaded a thread pool (Numba's ``np.dot`` loads
    SciPy's OpenBLAS), so that it too runs on the benchmark's thread count.
    """
    names = [i for i in case.implementations if i in ("fastcnn", "reference") or i in optional]
    fns = {name: workloads.workload(case, name) for name in names}
    first, results = {}, {}
    for name, fn in fns.items():
        start = time.perf_counter()
        results[name] = fn()
        first[name] = time.perf_counter() - start
    for name in names[1:]:
        workloads.assert_same(results[name], results["fastcnn"])
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
        "kernel": case.kernel,
        "shape": str(case.shape),
        "flops": case.flops,
        "gflops": case.flops / fast / 1e9 if case.flops else None,
        "pct_gemm": 100 * case.flops / fast / 1e9 / gemm_gflops if case.flops else None,
        "torch_ratio": fast / timings["torch"].median if "torch" in timings else None,
        "reference_speedup": slower("reference"),
        "tutorial_speedup": slower("tutorial"),
        "first_call": first,
    }
    for impl in presets.IMPLEMENTATIONS:
        row[impl] = asdict(timings[impl]) if impl in timings else None
    return row


@contextlib.contextmanager
def limit_threads(n: int, torch):
    """Run fastcnn, torch and every BLAS and OpenMP pool on ``n`` threads; restore on exit.

    Yields a function that limits the pools loaded since (threadpoolctl only sees loaded
    libraries): an idle pool left at the default size next to Numba's OpenMP pool can slow
    torch many times over at ``n=1``.
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
