"""The pytest-benchmark suite: ``pytest benchmarks/ --benchmark-only``.

Not part of the default ``pytest`` run (``testpaths`` is ``tests``). Every test times one
case of :mod:`fastcnn.bench.presets` (the list ``fastcnn bench`` uses too) with one
implementation; the implementations of a case share a benchmark group (``conv2d forward
mnist-conv2``), and pytest-benchmark's default ``--benchmark-group-by=group`` compares them
in one table. Each implementation's result is first checked against fastcnn's, and the
first call (JIT compile, first touch of buffers) happens before the timing starts.

``--bench-threads N`` runs fastcnn, BLAS and torch on N threads (default: fastcnn's
default, all cores); thread count, shape, FLOPs, GFLOP/s and, for conv, the kernel that
fastcnn's plan picks go into ``extra_info``.
"""

import pytest
from threadpoolctl import threadpool_limits

from fastcnn.bench import workloads

SLOW = ("reference", "tutorial")  # a few rounds, no calibration: one call takes ~0.1-5 s


def pytest_addoption(parser):
    parser.addoption(
        "--bench-threads",
        type=int,
        metavar="N",
        help="threads for fastcnn, BLAS and torch (default: fastcnn's default)",
    )


@pytest.fixture(scope="session")
def threads(request):
    """Set fastcnn's and BLAS's thread count for the session and return it."""
    from threadpoolctl import threadpool_limits

    import fastcnn

    n = request.config.getoption("--bench-threads") or fastcnn.get_num_threads()
    fastcnn.set_num_threads(n)
    with threadpool_limits(limits=n, user_api="blas"):
        yield n


def _workload(case, impl, threads):
    """The callable timing ``case`` with ``impl``; skip where it does not apply."""
    if impl == "torch":
        pytest.importorskip("torch").set_num_threads(threads)
        return workloads.workload(case, "torch")
    if impl not in case.implementations:
        pytest.skip(f"no affordable {impl} implementation of {case}")
    if impl == "tutorial":
        pytest.importorskip("scipy")  # fastcnn.bench.tutorial's baseline; not a fastcnn dependency
    return workloads.workload(case, impl)


@pytest.fixture
def run_case(benchmark, threads):
    """Time ``case`` with ``impl`` under pytest-benchmark, outside the JIT compile."""

    def run(case, impl):
        fn = _workload(case, impl, threads)
        result = fn()  # compile, allocate, first-touch: kept out of the timings
        if impl != "fastcnn":  # computes what fastcnn computes (training step: first loss)
            workloads.assert_same(result, workloads.workload(case, "fastcnn")())
        benchmark.group = case.group
        info = {"impl": impl, "threads": threads, "shape": str(case.shape), "flops": case.flops}
        if case.kernel:  # the conv kernel fastcnn's plan picks
            info["kernel"] = case.kernel
        benchmark.extra_info.update(info)
        # the first call may have loaded a thread pool (Numba's np.dot loads SciPy's
        # OpenBLAS): limit every BLAS and OpenMP pool to the benchmark's thread count
        with threadpool_limits(limits=threads):
            if impl in SLOW:
                benchmark.pedantic(fn, rounds=3, iterations=1)
            else:
                benchmark(fn)
        if case.flops and benchmark.stats:
            benchmark.extra_info["gflops"] = case.flops / benchmark.stats.stats.median / 1e9

    return run
