"""``fastcnn warmup``: workloads compile their kernels in worker processes, into Numba's
cache, so that a later process loads them instead of compiling. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fastcnn import cli, warmup

CHECK = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import fastcnn.functional as F
    from fastcnn._kernels import activation
    x = np.ones(1 << 18, np.float32)
    F.relu_backward(x, F.relu(x))
    stats = {name: [sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values())]
             for name, k in (("relu", activation._relu), ("relu_backward",
                              activation._relu_backward))}
    print(json.dumps(stats))
    """
)


def _env(cache):
    return {**os.environ, "NUMBA_CACHE_DIR": str(cache)}


def test_workloads_compile_into_the_cache_for_later_processes(tmp_path):
    job_list = warmup.jobs(["activations"], ("float32",))
    code = (
        "import sys, json; from fastcnn import warmup; "
        f"print(warmup.warmup({job_list!r}, workers=2, progress=False)); "
        f"print(warmup.needed({job_list!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seconds, still_needed = done.stdout.split()
    assert float(seconds) > 0 and still_needed == "False"
    check = subprocess.run(
        [sys.executable, "-c", CHECK], env=_env(tmp_path), capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr[-2000:]
    stats = json.loads(check.stdout.splitlines()[-1])
    assert stats == {"relu": [1, 0], "relu_backward": [1, 0]}  # loaded, none compiled


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
