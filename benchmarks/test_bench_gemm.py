"""This machine's float32 GEMM peak (NumPy's BLAS), the yardstick of the conv GFLOP/s."""

from fastcnn.bench import workloads


def test_gemm_peak(benchmark, threads):
    fn, flops = workloads.gemm_workload()
    fn()
    benchmark.group = f"gemm float32 {workloads.GEMM_SIZE}^3"
    benchmark.extra_info.update(impl="numpy", threads=threads, flops=flops)
    benchmark(fn)
    if benchmark.stats:
        benchmark.extra_info["gflops"] = flops / benchmark.stats.stats.median / 1e9
