"""The benchmark machinery: presets, workloads, timing loop and ``fastcnn bench``'s output.

Structure only: no test here asserts a timing (the machine is shared and noisy). The
workloads are checked to compute the same results in every implementation, so that the
benchmarks compare like with like.
"""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastcnn import bench
from fastcnn.bench import compile, malloc, memory, presets, timing, workloads

# --- presets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "flops"),
    [
        # 2 * N * K * C * kh * kw * OH * OW, output sizes worked by hand
        pytest.param("mnist-conv1", 2 * 64 * 32 * 1 * 9 * 26 * 26, id="mnist-conv1"),
        pytest.param("mnist-conv2", 2 * 64 * 64 * 32 * 9 * 11 * 11, id="mnist-conv2"),
        pytest.param("cifar-16x32", 2 * 64 * 32 * 16 * 9 * 32 * 32, id="cifar-16x32-pad1"),
        pytest.param("cifar-64x64", 2 * 32 * 64 * 64 * 9 * 32 * 32, id="cifar-64x64-pad1"),
    ],
)
def test_conv_preset_flops_in_every_direction(preset, flops):
    found = presets.cases([preset])
    assert [c.direction for c in found] == ["forward", "grad_input", "grad_weight"]
    assert [c.flops for c in found] == [flops] * 3


@pytest.mark.parametrize(
    ("preset", "kernel"),
    [
        pytest.param("mnist-conv1", "few_taps", id="mnist-conv1"),  # 1 channel x 3x3: 9 taps
        pytest.param("mnist-conv2", "direct", id="mnist-conv2"),
        pytest.param("cifar-16x32", "direct", id="cifar-16x32"),
        pytest.param("cifar-64x64", "direct", id="cifar-64x64"),
    ],
)
def test_conv_preset_names_the_plans_kernel_in_every_direction(preset, kernel):
    assert [c.kernel for c in presets.cases([preset])] == [kernel] * 3


def test_only_conv_cases_have_a_kernel():
    found = {c.op: c.kernel for c in presets.cases(["tiny"]) if c.op != "conv2d"}
    assert found and set(found.values()) == {None}


def test_tiny_preset_covers_every_op_and_direction():
    found = {(c.op, c.direction) for c in presets.cases(["tiny"])}
    assert found == {
        ("conv2d", "forward"),
        ("conv2d", "grad_input"),
        ("conv2d", "grad_weight"),
        ("max_pool2d", "forward"),
        ("max_pool2d", "backward"),
        ("batch_norm2d", "forward+backward"),
        ("linear", "forward"),
        ("cross_entropy", "forward+backward"),
        ("binary_cross_entropy", "forward+backward"),
        ("train_step", "sgd"),
    }


def test_linear_preset_flops():
    (case,) = presets.cases(["mnist-fc1"])
    assert (case.op, case.direction, case.flops) == ("linear", "forward", 2 * 64 * 1600 * 128)


def test_loss_shape_rejects_an_unknown_loss():
    with pytest.raises(ValueError, match="op must be one of.*'hinge'"):
        presets.LossShape("hinge", 2, 3)


def test_default_presets_leave_out_tiny_and_quick_is_a_subset():
    assert "tiny" not in presets.DEFAULT_PRESETS
    assert set(presets.QUICK_PRESETS) < set(presets.DEFAULT_PRESETS)


def test_unknown_preset_is_rejected_by_name():
    with pytest.raises(ValueError, match="unknown preset.*'mnist-conv9'"):
        presets.cases(["mnist-conv9"])


# --- workloads compute the same thing in every implementation ------------------------

TINY = [pytest.param(case, id=str(case)) for case in presets.cases(["tiny"])]


def _arrays(result) -> list[np.ndarray]:
    items = result if isinstance(result, (tuple, list)) else [result]
    return [np.asarray(r.numpy() if hasattr(r, "numpy") else r, np.float64) for r in items]


def _assert_same(got, want) -> None:
    """float32 results of differently ordered sums: 1e-4 of the largest magnitude."""
    got, want = _arrays(got), _arrays(want)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        scale = max(1.0, float(np.abs(w).max(initial=0)))
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("case", [c for c in TINY if c.values[0].op != "train_step"])
def test_fastcnn_workload_matches_reference(case):
    _assert_same(workloads.workload(case, "fastcnn")(), workloads.workload(case, "reference")())


@pytest.mark.parametrize("case", TINY)
def test_torch_workload_matches_fastcnn(case):
    pytest.importorskip("torch")
    # the training step returns its loss: both nets start from the same weights and batch
    _assert_same(workloads.workload(case, "torch")(), workloads.workload(case, "fastcnn")())


def test_reference_has_no_training_step():
    (case,) = [c for c in presets.cases(["tiny"]) if c.op == "train_step"]
    assert "reference" not in case.implementations
    with pytest.raises(ValueError, match="no reference implementation"):
        workloads.workload(case, "reference")


TINY_CONV = [c for c in TINY if c.values[0].op == "conv2d"]


@pytest.mark.parametrize("case", TINY_CONV)
def test_tutorial_workload_matches_reference(case):
    pytest.importorskip("scipy")
    _assert_same(workloads.workload(case, "tutorial")(), workloads.workload(case, "reference")())


def test_tutorial_is_of_small_conv_cases_only():
    for case in presets.cases(["tiny", "mnist-conv2", "cifar-64x64"]):
        assert ("tutorial" in case.implementations) == (case.op == "conv2d" and case.small)
    (pool,) = [c for c in presets.cases(["tiny"]) if c.direction == "backward"]
    with pytest.raises(ValueError, match="tutorial implementation is of conv2d only"):
        workloads.workload(pool, "tutorial")


def test_assert_same_rejects_a_different_result():
    want = np.ones((2, 3), np.float32)
    workloads.assert_same(want + 5e-4, want)  # within 1e-3 of the largest magnitude
    with pytest.raises(AssertionError):
        workloads.assert_same(want + 5e-3, want)


def test_no_fastcnn_module_imports_the_tutorial_or_scipy_signal():
    code = (
        "import sys, fastcnn; assert 'scipy' not in sys.modules, 'import fastcnn'; "
        "import fastcnn.functional, fastcnn.nn, fastcnn.bench; "
        "print(sorted(m for m in sys.modules if m in ('fastcnn.bench.tutorial', 'scipy.signal')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- timing loop ---------------------------------------------------------------------


def test_time_calls_counts_warmup_and_samples():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1

        return fn

    timings = timing.time_calls(
        {"a": make("a"), "b": make("b")}, budget=0.0, min_samples=1, samples=4
    )
    for name, t in timings.items():
        assert t.samples == 4
        assert t.number >= 1
        assert calls[name] == 1 + 4 * (1 + t.number)  # warm-up; per sample, a rewarm call
        assert 0 < t.q1 <= t.median <= t.q3


def test_time_calls_with_number_given_makes_no_warmup_call():
    calls = []
    (t,) = timing.time_calls(
        {"slow": lambda: calls.append(1)}, budget=0.0, min_samples=1, samples=3, number=1,
        rewarm=False,
    ).values()  # fmt: skip
    assert (t.samples, t.number, len(calls)) == (3, 1, 3)


def test_time_calls_times_only_the_calls_after_each_rewarm_call():
    # The first call of every sample takes 50 ms (as after idle), the others none.
    state = {"last": 0.0}

    def cold_after_idle():
        now = time.perf_counter()
        if now - state["last"] > timing.PAUSE_SECONDS / 2:
            time.sleep(0.05)
        state["last"] = time.perf_counter()

    (t,) = timing.time_calls(
        {"f": cold_after_idle}, budget=0.0, min_samples=1, samples=3, number=2
    ).values()
    assert t.median < 0.01
    (t,) = timing.time_calls(
        {"f": cold_after_idle}, budget=0.0, min_samples=1, samples=3, number=2, rewarm=False
    ).values()
    assert t.median >= 0.025


# --- fastcnn bench -------------------------------------------------------------------

ROW_KEYS = {"preset", "op", "direction", "kernel", "shape", "flops", "gflops", "pct_gemm",
            "first_call", "torch_ratio", "reference_speedup", "tutorial_speedup", "fastcnn",
            "reference", "torch", "tutorial"}  # fmt: skip
HAS_SCIPY = importlib.util.find_spec("scipy") is not None
TIMING_KEYS = {"median", "q1", "q3", "samples", "number"}


def _run_bench(tmp_path, capsys, *extra):
    path = tmp_path / "bench.json"
    argv = ["--preset", "tiny", "--repeats", "2", "--threads", "1", "--json", str(path), *extra]
    assert bench.main(argv) == 0
    return json.loads(path.read_text()), capsys.readouterr().out


def test_bench_json_and_table_without_torch(tmp_path, capsys):
    result, out = _run_bench(tmp_path, capsys, "--no-torch")

    assert result["threads"] == 1
    assert set(result["env"]) == set(bench.MALLOC_VARS)
    assert result["versions"]["torch"] is None
    assert result["versions"]["numba"] and result["machine"]["cpu"]
    assert result["gemm"]["gflops"] > 0 and result["gemm"]["size"] == workloads.GEMM_SIZE
    expected = [(c.op, c.direction) for c in presets.cases(["tiny"])]
    assert [(r["op"], r["direction"]) for r in result["rows"]] == expected
    for row in result["rows"]:
        assert set(row) == ROW_KEYS
        assert set(row["fastcnn"]) == TIMING_KEYS and row["fastcnn"]["samples"] == 2
        assert row["torch"] is None and row["torch_ratio"] is None
        has_ref = row["op"] != "train_step"
        has_tut = row["op"] == "conv2d" and HAS_SCIPY
        expected_first = {"fastcnn", "reference"} if has_ref else {"fastcnn"}
        assert set(row["first_call"]) == expected_first | ({"tutorial"} if has_tut else set())
        assert (row["reference"] is not None) == has_ref
        assert (row["reference_speedup"] is not None) == has_ref
        assert (row["tutorial"] is not None) == has_tut
        assert (row["tutorial_speedup"] is not None) == has_tut
        assert (row["gflops"] is not None) == (row["op"] in ("conv2d", "linear", "train_step"))

    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("preset"))
    for title in ("kernel", "median ms", "GFLOP/s", "%GEMM", "first ms", "/torch", "ref/"):
        assert title in lines[header]
    table = lines[header + 1 : header + 1 + len(expected)]
    kernels = [c.kernel or "-" for c in presets.cases(["tiny"])]
    assert kernels[:3] == ["direct"] * 3  # the tiny conv: 3 channels x 3x3 taps
    for line, (op, direction), kernel in zip(table, expected, kernels, strict=True):
        assert line.split()[:4] == ["tiny", op, direction, kernel]
    assert [r["kernel"] for r in result["rows"]] == [c.kernel for c in presets.cases(["tiny"])]
    assert any(line.startswith("malloc:") for line in lines[:header])
    assert any(line.startswith("GEMM peak:") for line in lines[:header])
    assert any(line.startswith("load average") for line in lines[:header])
    assert set(result["load_average"]) == {"start", "end"}
    assert "peak memory of one training step" in out


def test_bench_times_the_tutorial_layer_on_small_conv_cases(tmp_path, capsys):
    pytest.importorskip("scipy")
    result, out = _run_bench(tmp_path, capsys, "--no-torch", "--no-memory")

    conv = [r for r in result["rows"] if r["op"] == "conv2d"]
    assert conv and all(r["tutorial_speedup"] > 0 for r in conv)
    assert all(r["tutorial"]["samples"] == 2 and r["tutorial"]["number"] == 1 for r in conv)
    assert result["versions"]["scipy"]
    lines = out.splitlines()
    assert next(line for line in lines if line.startswith("preset")).split()[-1] == "tut/"
    tut = [line.split()[-1] for line in lines if line.split()[:2] == ["tiny", "conv2d"]]
    assert len(tut) == 3 and all(float(cell.rstrip("x")) > 0 for cell in tut)
    assert "conv2d speedup over the tutorial layer: min " in out
    assert result["step_memory"] is None  # --no-memory


def test_bench_without_scipy_leaves_the_tutorial_column_empty(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "_import_tutorial", lambda: None)  # as where SciPy is missing
    result, out = _run_bench(tmp_path, capsys, "--no-torch", "--no-memory")

    assert all(r["tutorial"] is None and r["tutorial_speedup"] is None for r in result["rows"])
    assert result["versions"]["scipy"] is None
    tut = [line.split()[-1] for line in out.splitlines() if line.split()[:2] == ["tiny", "conv2d"]]
    assert tut == ["-"] * 3
    assert "speedup over the tutorial layer" not in out


def test_quick_run_leaves_out_the_tutorial_layer_and_the_step_memory(tmp_path, capsys):
    # The tutorial layer's calls take seconds and the memory needs fresh processes: a
    # --quick run (about 30 s on the quick presets) skips both.
    result, out = _run_bench(tmp_path, capsys, "--no-torch", "--quick")

    assert result["quick"] and result["rows"]
    assert all(r["tutorial"] is None and r["tutorial_speedup"] is None for r in result["rows"])
    assert result["versions"]["scipy"] is None
    assert result["step_memory"] is None
    assert "peak memory of one training step" not in out


def test_step_memory_of_the_tiny_training_step_in_a_fresh_process():
    if not sys.platform.startswith("linux"):
        pytest.skip("peak resident memory is read from Linux's /proc")
    (entry,) = memory.measure_memory(["tiny"], threads=1, impls=("fastcnn",))
    used = entry["fastcnn"]
    if "unavailable" in used:
        pytest.skip(used["unavailable"])
    assert entry["case"] == "train_step-sgd-tiny"
    assert used["built"] > 0 and used["baseline"] > 0  # MiB: the interpreter at least
    assert used["step"] >= 0
    assert used["peak"] >= used["baseline"] - 1  # RSS counters: approximate to < 1 MiB
    assert entry["ratio"] == {"step": None, "peak": None}  # no torch measured


def test_step_memory_is_unavailable_where_the_peak_cannot_be_reset(monkeypatch):
    def refuse():
        raise PermissionError("clear_refs: read-only")

    monkeypatch.setattr(memory, "_reset_peak", refuse)
    (case,) = [c for c in presets.cases(["tiny"]) if c.op == "train_step"]
    used = memory.step_memory(case, "fastcnn")
    assert used == {"unavailable": "cannot reset the peak resident set (clear_refs: read-only)"}
    entry = {"case": str(case), "fastcnn": used, "ratio": {"step": None, "peak": None}}
    (_, line) = memory.format_memory([entry], threads=1)
    assert line == f"  {case}: fastcnn unavailable: {used['unavailable']}"


def test_malloc_both_runs_each_mode_in_a_child_with_its_environment(tmp_path, capsys):
    result, out = _run_bench(tmp_path, capsys, "--no-torch", "--no-memory", "--malloc", "both")

    assert set(result["runs"]) == {"default", "high"}
    for mode, run in result["runs"].items():
        expected = {var: bench.MALLOC_MODES[mode].get(var) for var in bench.MALLOC_VARS}
        assert run["env"] == expected
        assert run["malloc"] == mode and run["threads"] == 1
        assert run["options"]["malloc"] == "both"
        assert [r["fastcnn"]["samples"] for r in run["rows"]] == [2] * len(run["rows"])
    assert "malloc both ways" in out


def test_bench_compares_with_torch_when_installed(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    import fastcnn

    before = torch.get_num_threads(), fastcnn.get_num_threads()
    result, out = _run_bench(tmp_path, capsys)
    assert result["versions"]["torch"] == torch.__version__
    assert (torch.get_num_threads(), fastcnn.get_num_threads()) == before  # restored
    for row in result["rows"]:
        assert set(row["torch"]) == TIMING_KEYS
        assert row["torch_ratio"] > 0
    assert "conv2d fastcnn/torch time: geometric mean" in out
    (memory,) = result["step_memory"]  # the tiny training step, each library in a child
    assert set(memory) == {"case", "fastcnn", "torch", "ratio"}
    assert set(memory["ratio"]) == {"step", "peak"}
    assert "ratio fastcnn/torch: step" in out


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, "unset", id="unset"),
        pytest.param(
            {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"},
            "MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000",
            id="both-set",
        ),
    ],
)
def test_header_says_whether_malloc_thresholds_are_set(monkeypatch, env, expected):
    for var in bench.MALLOC_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert expected in malloc.malloc_note()


# --- fastcnn bench --compile ---------------------------------------------------------

KERNEL_KEYS = {"kernel", "signature", "dtype", "front_end", "llvm"}
POOL_FORWARD = "max_pool2d-forward-tiny"  # of the tiny cases, one of the quickest to compile


def test_first_calls_child_runs_the_cases_it_is_given(capsys):
    argv = ["--first-calls", "--preset", "tiny", "--threads", "1"]
    argv += ["--case", "linear-forward-tiny", "--case", POOL_FORWARD]
    assert bench.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["import"]["wall"] >= 0
    # in table order, whatever the order of --case
    assert [c["case"] for c in report["cases"]] == [POOL_FORWARD, "linear-forward-tiny"]
    for case in report["cases"]:
        assert case["wall"] > 0 and case["cpu"] >= 0
        assert all(set(k) == KERNEL_KEYS for k in case["kernels"])  # none: compiled already
    assert report["all"]["wall"] >= sum(c["wall"] for c in report["cases"])


@pytest.fixture
def jit():
    numba = pytest.importorskip("numba")
    if numba.config.DISABLE_JIT:
        pytest.skip("nothing compiles under NUMBA_DISABLE_JIT")
    return numba.njit


def test_recorder_charges_each_dispatcher_its_own_compile(jit):
    @jit
    def inner(x):
        return min(x, 1.0) * 2.0  # min: one of Numba's own overloads, charged to inner

    @jit
    def outer(x):
        return inner(x) + 1.0

    with compile.Recorder(prefix=__name__) as recorder:
        outer(np.float32(0.5))
    names = [k["kernel"].rsplit(".", 1)[-1] for k in recorder.compiled]
    assert names == ["inner", "outer"]  # inner's compile ends first, inside outer's
    for k in recorder.compiled:
        assert set(k) == KERNEL_KEYS and k["dtype"] == "float32"
        assert k["front_end"] > 0 and k["llvm"] > 0

    @jit
    def after(x):
        return x

    after(1.0)  # the recorder has stopped listening
    assert len(recorder.compiled) == 2


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        pytest.param("(Array(float32, 1, 'C', False, aligned=True), int64)", "float32", id="f32"),
        pytest.param(
            "(Array(float32, 2, 'C'), Array(float64, 1, 'C'))", "float32+float64", id="both"
        ),  # fmt: skip
        pytest.param("(int64, UniTuple(int64, 2))", "-", id="ints"),
    ],
)
def test_signature_dtypes(signature, expected):
    assert compile._dtypes(signature) == expected


def test_per_kernel_sums_the_signatures_of_a_dispatcher_and_dtype():
    def entry(kernel, dtype, front_end, llvm):
        return {"kernel": kernel, "signature": "", "dtype": dtype, "front_end": front_end,
                "llvm": llvm}  # fmt: skip

    rows = compile.per_kernel(
        [entry("a", "float32", 0.25, 0.5), entry("b", "float32", 2.0, 1.0),
         entry("a", "float32", 0.5, 0.25), entry("a", "float64", 0.25, 0.25)]
    )  # fmt: skip
    assert [(r["kernel"], r["dtype"], r["sigs"], r["front_end"], r["llvm"]) for r in rows] == [
        ("b", "float32", 1, 2.0, 1.0),
        ("a", "float32", 2, 0.75, 0.75),
        ("a", "float64", 1, 0.25, 0.25),
    ]


def test_compile_table_flags_a_kernel_the_warm_run_compiled_again():
    kernel = {"kernel": "fastcnn._kernels.pool.k", "signature": "(float32,)", "dtype": "float32",
              "front_end": 0.5, "llvm": 0.25}  # fmt: skip
    cold = {"wall": 2.0, "cpu": 1.5, "kernels": [kernel], "import": {"wall": 0.5, "cpu": 0.4}}
    warm = {"wall": 0.1, "cpu": 0.1, "kernels": [], "import": {"wall": 0.5, "cpu": 0.4}}
    report = {
        "cases": [{"case": "c", "op": "max_pool2d", "kernel": None, "cold": cold,
                   "warm": warm | {"kernels": [kernel]}}],
        "everything": {"cases": 1, "cold": cold, "warm": warm},
    }  # fmt: skip
    lines = compile.format_compile(report)
    flagged = [line for line in lines if line.startswith("  !")]
    assert flagged == ["  ! the warm run compiled again (not loaded from the cache): pool.k"]
    rows = [line.split() for line in lines if line.startswith(("c ", "  pool.k"))]
    assert rows[:2] == [["c", "1", "2.00", "1.50", "0.10", "0.50", "0.25"],
                        ["pool.k", "float32", "1", "0.50", "0.25"]]  # fmt: skip


def test_bench_compile_measures_cold_and_warm_first_calls(tmp_path, capsys, monkeypatch):
    # One cheap case: 4 fresh processes (cold, warm; everything cold, warm), each compiling
    # or loading the max-pool kernels.
    measure = compile.measure_compile

    def one_case(cases, threads, progress):
        return measure([c for c in cases if str(c) == POOL_FORWARD], threads, progress)

    monkeypatch.setattr(compile, "measure_compile", one_case)
    path = tmp_path / "compile.json"
    argv = ["--compile", "--preset", "tiny", "--threads", "1", "--json", str(path)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(path.read_text())["compile"]

    (case,) = result["cases"]
    assert (case["case"], case["op"], case["kernel"]) == (POOL_FORWARD, "max_pool2d", None)
    cold, warm = case["cold"], case["warm"]
    assert cold["wall"] > 0 and cold["cpu"] > 0 and warm["wall"] > 0
    assert cold["kernels"], "a cold cache compiles"
    for k in cold["kernels"]:
        assert set(k) == KERNEL_KEYS and k["kernel"].startswith("fastcnn._kernels.")
        assert k["dtype"] == "float32" and k["front_end"] > 0 and k["llvm"] > 0
    assert warm["kernels"] == []  # every kernel came from the cache the cold run wrote
    every = result["everything"]
    assert every["cases"] == 1 and every["cold"]["wall"] > 0 and every["warm"]["wall"] > 0
    assert {k["kernel"] for k in every["cold"]["kernels"]} == {k["kernel"] for k in cold["kernels"]}
    assert result["slowest_op"]["case"] == POOL_FORWARD and result["slowest_op"]["wall"] > 0

    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("case / kernel"))
    for title in ("dtype", "sigs", "cold s", "cpu s", "warm s", "front s", "LLVM s"):
        assert title in header
    assert any(line.startswith(POOL_FORWARD) for line in lines)
    assert any(line.startswith("  pool.") for line in lines)
    assert any(line.startswith("everything (1 case, one process)") for line in lines)
    assert f"slowest first call of a single op, cold: {POOL_FORWARD}" in out
    assert "median ms" not in out  # --compile measures compiling only


def test_compile_does_not_combine_with_malloc_modes(capsys):
    assert bench.main(["--compile", "--malloc", "both", "--preset", "tiny"]) == 2
    assert "choose one" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--preset", "nope"], id="unknown-preset"),
        pytest.param(["--threads", "0"], id="zero-threads"),
        pytest.param(["--repeats", "-1"], id="negative-repeats"),
        pytest.param(["--malloc", "fast"], id="unknown-malloc-mode"),
        pytest.param(["--malloc"], id="malloc-without-mode"),
    ],
)
def test_bad_options_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    assert "fastcnn bench" in capsys.readouterr().err


def test_training_loop_script_runs_both_libraries_in_turns(capsys):
    """benchmarks/training_loop.py on 4 real batches in blocks of 2: both libraries time
    every block, and the line it prints carries the ratio."""
    pytest.importorskip("torch")
    mnist = Path(__file__).parents[1].parent / "shared/data/mnist"
    if not (mnist / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip("real MNIST files absent")
    script = Path(__file__).parents[1] / "benchmarks/training_loop.py"
    spec = importlib.util.spec_from_file_location("training_loop", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    per_step = module.main(["--mnist", str(mnist), "--block", "2", "--batches", "4"])
    assert {name: len(times) for name, times in per_step.items()} == {"fastcnn": 2, "torch": 2}
    assert all(t > 0 for times in per_step.values() for t in times)
    assert "fastcnn/torch" in capsys.readouterr().out
