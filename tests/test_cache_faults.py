"""The kernel cache under faults: damaged entries are recompiled, unwritable locations
fall back to compiling in memory, each with one line on stderr, and nothing fails.

Every case runs in a subprocess with its own ``NUMBA_CACHE_DIR`` (or ``FASTCNN_CACHE_DIR``)
in a temporary folder, so the cache the other tests use is never touched. A read-only
location is simulated without root: a cache path under a regular file, or Numba's
in-tree locator made to fail as on a read-only file system.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pytest import param

# Calls two small kernels and reports their results and the cache's hits and misses.
PROBE = textwrap.dedent(
    """
    import errno, json, os, sys
    if os.environ.get("PROBE_READ_ONLY_INSTALL"):  # __pycache__ beside the sources fails
        from numba.core import caching
        def read_only(self):
            raise OSError(errno.EROFS, "Read-only file system", self.get_cache_path())
        caching.InTreeCacheLocator.ensure_cache_path = read_only
    if os.environ.get("PROBE_NO_UNLINK"):  # damaged files that cannot be removed
        def refuse(path, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        os.unlink = refuse
    if os.environ.get("PROBE_DISK_FULL"):  # every cache write fails
        from numba.core import caching
        def full(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        caching.IndexDataCacheFile._save_index = full
    import numpy as np
    from fastcnn._kernels import activation

    x = np.arange(-3, 5, dtype=np.float32)
    out, grad = np.empty_like(x), np.empty_like(x)
    activation.relu(x, out)
    activation.relu_backward(np.ones_like(x), x, grad)
    stats = [activation._relu.stats, activation._relu_backward.stats]
    print(json.dumps({
        "relu": out.tolist(), "grad": grad.tolist(),
        "hits": sum(sum(s.cache_hits.values()) for s in stats),
        "misses": sum(sum(s.cache_misses.values()) for s in stats),
        "path": stats[0].cache_path,
    }))
    """
)
RELU = np.maximum(np.arange(-3, 5, dtype=np.float32), 0).tolist()
GRAD = (np.arange(-3, 5) > 0).astype(np.float32).tolist()


def probe(env: dict) -> tuple[dict, list[str]]:
    """Run PROBE with ``env`` added; return its report and its stderr lines."""
    env = {**os.environ, **env}
    env.pop("NUMBA_DISABLE_JIT", None)
    if "NUMBA_CACHE_DIR" not in env or not env["NUMBA_CACHE_DIR"]:
        env.pop("NUMBA_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["relu"] == RELU and report["grad"] == GRAD  # right answers regardless
    return report, done.stderr.splitlines()


def entries(folder: Path, kernel: str) -> list[Path]:
    return sorted(folder.rglob(f"activation.{kernel}-*.nb[ic]"))


def empty(path: Path) -> None:
    path.write_bytes(b"")


def garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def halve(path: Path) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    """A cache folder holding both probe kernels, compiled once for this module."""
    folder = tmp_path_factory.mktemp("warm")
    report, err = probe({"NUMBA_CACHE_DIR": str(folder)})
    assert report["misses"] == 2 and err == []
    return folder


@pytest.fixture
def cache(tmp_path, warm_cache) -> Path:
    """A private copy of the warm cache."""
    folder = tmp_path / "numba-cache"
    shutil.copytree(warm_cache, folder)
    report, err = probe({"NUMBA_CACHE_DIR": str(folder)})
    assert (report["hits"], report["misses"], err) == (2, 0, [])
    return folder


@pytest.mark.parametrize(
    ("suffix", "damage", "kernels"),
    [
        param(".nbi", empty, ["_relu"], id="empty-index"),
        param(".nbi", garbage, ["_relu"], id="garbage-index"),
        param(".nbc", empty, ["_relu"], id="empty-data"),
        param(".nbc", garbage, ["_relu"], id="garbage-data"),
        param(".nbc", halve, ["_relu"], id="truncated-data"),
        param(".nbi", empty, ["_relu", "_relu_backward"], id="two-kernels-one-line"),
    ],
)
def test_damaged_entry_is_removed_and_recompiled(cache, suffix, damage, kernels):
    for kernel in kernels:
        (target,) = [p for p in entries(cache, kernel) if p.suffix == suffix]
        damage(target)
    report, err = probe({"NUMBA_CACHE_DIR": str(cache)})
    assert report["misses"] == len(kernels) and report["hits"] == 2 - len(kernels)
    assert len(err) == 1, err
    assert err[0].startswith("fastcnn: removed a damaged kernel cache entry (")
    assert f"for {kernels[0]} in {report['path']}; compiling it again" in err[0]
    # the entries were written afresh: the next process loads them, silently
    report, err = probe({"NUMBA_CACHE_DIR": str(cache)})
    assert (report["hits"], report["misses"], err) == (2, 0, [])


def test_damaged_entry_that_cannot_be_removed_is_bypassed(cache):
    for kernel in ("_relu", "_relu_backward"):
        for path in entries(cache, kernel):
            garbage(path)
    report, err = probe({"NUMBA_CACHE_DIR": str(cache), "PROBE_NO_UNLINK": "1"})
    assert report["misses"] == 2
    assert len(err) == 1, err
    assert "is damaged (UnpicklingError" in err[0]
    assert "cannot be removed (PermissionError" in err[0]
    assert err[0].endswith("compiling it without the cache")


def test_failing_cache_write_is_reported_once_and_ignored(tmp_path):
    report, err = probe({"NUMBA_CACHE_DIR": str(tmp_path), "PROBE_DISK_FULL": "1"})
    assert report["misses"] == 2
    assert len(err) == 1, err
    assert err[0].startswith("fastcnn: could not save the compiled kernel _relu in ")
    assert "No space left on device" in err[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        param("NUMBA_CACHE_DIR", "{file}/numba", id="NUMBA_CACHE_DIR-under-a-file"),
        param("FASTCNN_CACHE_DIR", "{file}", id="FASTCNN_CACHE_DIR-is-a-file"),
        param("FASTCNN_CACHE_DIR", "{file}/sub", id="FASTCNN_CACHE_DIR-under-a-file"),
    ],
)
def test_unwritable_cache_location_compiles_in_memory(tmp_path, variable, value):
    regular = tmp_path / "a-file"
    regular.write_text("not a folder")
    env = {"NUMBA_CACHE_DIR": "", variable: value.format(file=regular)}
    report, err = probe(env)
    assert report["misses"] == 2 and report["path"] is None
    assert len(err) == 1, err  # two kernels compiled, one line
    assert err[0].startswith(f"fastcnn: cannot write the kernel cache ({variable}: ")
    assert "Not a directory" in err[0] or "File exists" in err[0]
    assert err[0].endswith(
        f"compiling in memory, so every new process compiles again (set {variable} to a "
        "writable folder)"
    )
    assert regular.read_text() == "not a folder"


def fastcnn_info(env: dict) -> subprocess.CompletedProcess:
    """Run PROBE's setup and kernels, then ``fastcnn info``, in one process."""
    env = {**os.environ, **env}
    if not env.get("NUMBA_CACHE_DIR"):
        env.pop("NUMBA_CACHE_DIR", None)
    return subprocess.run(
        [sys.executable, "-c", PROBE + "\nfrom fastcnn.cli import main\nmain(['info'])\n"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def kernel_cache_line(stdout: str) -> str:
    """The ``kernel cache:`` line of ``fastcnn info``, its wrapped lines joined back."""
    text = re.sub(r"\n {10,}", " ", stdout)  # continuation lines: indented past the keys
    (line,) = [line for line in text.splitlines() if line.startswith("kernel cache:")]
    return line


def test_read_only_install_without_a_writable_home(tmp_path):
    """Numba's own lookup finds no location (it raised "no locator available")."""
    regular = tmp_path / "a-file"
    regular.write_text("")
    env = {
        "PROBE_READ_ONLY_INSTALL": "1",
        "HOME": str(regular / "home"),
        "XDG_CACHE_HOME": str(regular / "cache"),
        "NUMBA_CACHE_DIR": "",
    }
    if "FASTCNN_CACHE_DIR" in os.environ:
        env["FASTCNN_CACHE_DIR"] = ""
    report, err = probe(env)
    assert report["path"] is None and report["misses"] == 2
    assert len(err) == 1, err
    kernels = Path(__file__).resolve().parents[1] / "fastcnn" / "_kernels" / "__pycache__"
    assert err[0] == (
        f"fastcnn: cannot write the kernel cache (neither {kernels} nor {regular}/cache/numba "
        "is writable); compiling in memory, so every new process compiles again (set "
        "FASTCNN_CACHE_DIR to a writable folder)"
    )
    done = fastcnn_info(env)
    assert done.returncode == 0, done.stderr
    line = " ".join(kernel_cache_line(done.stdout).split())
    assert line == (
        f"kernel cache: none, compiling in memory (neither {kernels} nor "
        f"{regular}/cache/numba is writable)"
    )
    assert "Traceback" not in done.stderr


def test_fastcnn_cache_dir_holds_the_kernels(tmp_path):
    env = {"NUMBA_CACHE_DIR": "", "FASTCNN_CACHE_DIR": str(tmp_path)}
    report, err = probe(env)
    assert report["misses"] == 2 and err == []
    assert Path(report["path"]).parent == tmp_path / "numba"
    assert entries(tmp_path / "numba", "_relu")
    report, err = probe(env)
    assert (report["hits"], report["misses"], err) == (2, 0, [])


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        param(
            "NUMBA_CACHE_DIR", "{tmp}", r"{tmp}/_kernels_\w+ \(writable, from NUMBA_CACHE_DIR\)",
            id="NUMBA_CACHE_DIR",
        ),
        param(
            "FASTCNN_CACHE_DIR", "{tmp}",
            r"{tmp}/numba/_kernels_\w+ \(writable, from FASTCNN_CACHE_DIR\)",
            id="FASTCNN_CACHE_DIR",
        ),
        param(
            "NUMBA_CACHE_DIR", "{file}/x",
            r"none, compiling in memory \(NUMBA_CACHE_DIR: NotADirectoryError: .*\)",
            id="unwritable",
        ),
    ],
)  # fmt: skip
def test_info_shows_the_kernel_cache(tmp_path, variable, value, expected):
    regular = tmp_path / "a-file"
    regular.write_text("")
    env = {"NUMBA_CACHE_DIR": "", variable: value.format(tmp=tmp_path, file=regular)}
    done = fastcnn_info(env)
    assert done.returncode == 0, done.stderr
    line = kernel_cache_line(done.stdout)
    assert re.fullmatch(r"kernel cache: +" + expected.format(tmp=tmp_path), line), line


def copy_cache_of(module, root: Path) -> None:
    """Copy the cache entries of ``module``'s folder, as this process finds them, into
    ``root`` laid out as for ``NUMBA_CACHE_DIR=root``."""
    from numba.core.caching import _CacheLocator
    from numba.core.dispatcher import Dispatcher

    kernel = next((obj for obj in vars(module).values() if isinstance(obj, Dispatcher)), None)
    source = kernel.stats.cache_path if kernel is not None else None
    target = root / _CacheLocator.get_suitable_cache_subpath(module.__file__)
    target.mkdir(parents=True, exist_ok=True)
    if source and os.path.isdir(source):
        for path in Path(source).glob("*.nb[ic]"):
            shutil.copy2(path, target / path.name)


def test_fastcnn_train_survives_a_damaged_cache(tmp_path):
    """The issue's case end to end: `fastcnn train` with damaged entries trains, says so
    in one line and exits 0 (it printed a traceback and exited 1)."""
    pytest.importorskip("sklearn")
    from fastcnn._kernels import activation

    cache = tmp_path / "numba-cache"
    copy_cache_of(activation, cache)  # the folder holding the kernels
    for path in entries(cache, "_relu") + entries(cache, "_relu_backward"):
        empty(path)
    done = subprocess.run(
        [sys.executable, "-m", "fastcnn", "train", "--epochs", "1", "--no-checkpoint",
         "--threads", "1", "--no-progress"],
        env={**os.environ, "NUMBA_CACHE_DIR": str(cache)}, cwd=tmp_path,
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test accuracy:" in done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "removed a damaged kernel cache entry (EOFError" in lines[0], lines
