"""``fastcnn warmup``: workloads compile their kernels in worker processes, into Numba's
cache, so that a later process loads them instead of compiling. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastcnn
from fastcnn import cli, warmup
from fastcnn._subprocess import module_command

STEP = textwrap.dedent(
    """
    import gc, json
    import numpy as np
    import fastcnn
    from fastcnn import nn, optim, train
    from numba.core.registry import CPUDispatcher

    fastcnn.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 28, 28), np.float32)
    y = rng.integers(0, 10, 64)
    model = train.lenet(x.shape[1:], 10, rng=rng)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train.fit(model, opt, nn.CrossEntropyLoss(), (x, y), (x, y), epochs=1, batch_size=32,
              rng=rng, progress=False, log=lambda line: None)
    kernels = [k for k in gc.get_objects() if type(k) is CPUDispatcher
               and k.py_func.__module__.startswith("fastcnn")]
    print(json.dumps({k.py_func.__qualname__: [sum(k.stats.cache_hits.values()),
                      sum(k.stats.cache_misses.values())] for k in kernels}))
    """
)


def _env(cache):
    return {**os.environ, "NUMBA_CACHE_DIR": str(cache)}


def test_lenet_workloads_compile_what_a_training_step_needs(tmp_path):
    """After ``warmup(LENET)`` a fresh process trains the LeNet (on 2 threads) without
    compiling: every kernel it runs is loaded from the cache."""
    job_list = warmup.jobs(warmup.LENET, ("float32",))
    code = (
        "from fastcnn import warmup; "
        f"print(warmup.warmup({job_list!r}, workers=2, progress=False)); "
        f"print(warmup.needed({job_list!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seconds, still_needed = done.stdout.split()
    assert float(seconds) > 0 and still_needed == "False"
    step = subprocess.run(
        [sys.executable, "-c", STEP], env=_env(tmp_path), capture_output=True, text=True
    )
    assert step.returncode == 0, step.stderr[-2000:]
    stats = json.loads(step.stdout.splitlines()[-1])
    compiled = {name: misses for name, (_, misses) in stats.items() if misses}
    assert compiled == {}
    assert sum(hits for hits, _ in stats.values()) >= 10  # the step's kernels, loaded


def test_jobs_are_longest_first_and_named():
    got = warmup.jobs(dtypes=("float32", "float64"))
    assert len(got) == 2 * len(warmup.ALL)
    weights = [warmup.WORKLOADS[name][1] for name, _ in got]
    assert weights == sorted(weights, reverse=True)
    assert set(warmup.LENET) <= set(warmup.WORKLOADS)
    with pytest.raises(ValueError, match="unknown workload 'convolution'"):
        warmup.jobs(["convolution"])


def test_a_failing_worker_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="a worker failed"):
        warmup.warmup([("no such workload", "float32")], workers=1, progress=False)


def test_cli_warmup_options(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["warmup", "--for", "everything"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_workers_import_this_fastcnn_not_the_working_directory(tmp_path, monkeypatch):
    """Run from a folder holding another ``fastcnn`` (a source checkout beside the
    installed package, as the README's commands do), the workers import the parent's
    fastcnn: else they compile into a cache the parent never reads."""
    decoy = tmp_path / "fastcnn"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the decoy fastcnn')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    warmup.warmup([("relu", "float32")], workers=1, progress=False)
    info = subprocess.run(module_command("fastcnn", "info"), capture_output=True, text=True)
    assert info.returncode == 0, info.stderr[-2000:]
    assert f"fastcnn:      {fastcnn.__version__}" in info.stdout


def test_load_makes_this_process_a_worker(tmp_path):
    """``load=True`` (``fastcnn train``, ``fastcnn.compat.train``): this process compiles
    jobs itself while the worker processes compile the others, and loads theirs from the
    cache as they are done: every kernel is in memory at the end, one job's compiled
    here, the other's loaded."""
    code = textwrap.dedent(
        """
        import json
        from fastcnn import warmup
        from fastcnn._kernels import activation
        jobs = [("relu", "float32"), ("sigmoid", "float32")]
        warmup.warmup(jobs, workers=2, progress=False, load=True)
        print(json.dumps({k.__name__: [len(k.overloads), sum(k.stats.cache_hits.values())]
                          for k in (activation._relu, activation._sigmoid)}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert [n for n, _ in got.values()] == [1, 1]
    assert sorted(hits for _, hits in got.values()) == [0, 1]


def test_conv_op_workloads_reach_their_kernel():
    """Each single-direction conv workload's geometry is one the plan gives its kernel."""
    from fastcnn import _checks
    from fastcnn._kernels import plan

    for kernel, sizes in warmup.PLAN_GEOMETRY.items():
        x = np.empty((32, sizes["c"], 12, 12), np.float32)
        w = np.empty((sizes["k"], sizes["c"], 3, 3), np.float32)
        g = _checks.conv2d_args(x, w, None, 1, 1, 1)
        for op in plan.OPS:
            assert plan.choose(op, g).kernel == kernel
            assert warmup.conv_job(op, kernel) in warmup.WORKLOADS
