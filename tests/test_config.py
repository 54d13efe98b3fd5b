"""The Numba options live in one place, every kernel uses them, and ``import fastcnn``
stays free of Numba.

The source scan fails if a kernel module spells its own decorator (``numba.njit``,
``@njit``, a ``fastmath=`` anywhere) instead of ``fastcnn._config.jit``; the dispatcher
check confirms at run time that each kernel was built with the shared options.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from numba.core.dispatcher import Dispatcher

from fastcnn import _config
from fastcnn._cache import NativeOnly, RobustCache

PACKAGE = Path(__file__).resolve().parents[1] / "fastcnn"
KERNEL_MODULES = sorted(
    p for p in (PACKAGE / "_kernels").glob("*.py") if p.name not in ("__init__.py", "plan.py")
)
FORBIDDEN_NAMES = {"njit", "jit", "vectorize", "guvectorize", "cfunc", "stencil", "generated_jit"}


def test_fastmath_keeps_nan_and_inf():
    assert _config.FASTMATH, "fast-math flags are expected (contract gives FMAs)"
    assert not set(_config.FASTMATH) & {"nnan", "ninf", "fast", "afn"}
    assert "reassoc" not in _config.FASTMATH, "reassoc makes cached and fresh code differ"
    assert _config.JIT_OPTIONS["cache"] is True
    assert _config.JIT_OPTIONS["nogil"] is True


def _numba_decorators(tree):
    """(line, text) of every Numba decorator or option not taken from fastcnn._config."""
    bad = []
    imported_from_config = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = {a.asname or a.name for a in node.names}
            if node.module == "fastcnn._config":
                imported_from_config |= names
            elif node.module and node.module.startswith("numba"):
                bad += [
                    (node.lineno, f"from {node.module} import {n}")
                    for n in names
                    if n in FORBIDDEN_NAMES
                ]
        if isinstance(node, ast.keyword) and node.arg == "fastmath":
            bad.append((node.value.lineno, "fastmath="))
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_NAMES:
            if isinstance(node.value, ast.Name) and node.value.id == "numba":
                bad.append((node.lineno, f"numba.{node.attr}"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                func = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(func, ast.Name) and func.id in FORBIDDEN_NAMES:
                    if func.id not in imported_from_config:
                        bad.append((dec.lineno, f"@{func.id} not from fastcnn._config"))
    return bad


CALLED_FROM_PYTHON = {"_launch", "_ordered_sum"}  # jit(python=True)


@pytest.mark.parametrize("path", KERNEL_MODULES, ids=[p.stem for p in KERNEL_MODULES])
def test_kernel_modules_use_the_shared_decorator(path):
    bad = _numba_decorators(ast.parse(path.read_text(), filename=str(path)))
    assert bad == [], f"{path.name}: hard-coded Numba options at {bad}"


def test_the_scan_catches_a_hard_coded_decorator():
    source = (
        "import numba\nfrom numba import njit\n"
        "@njit(fastmath=True)\ndef f(x):\n    return x\n"
        "@numba.njit\ndef g(x):\n    return x\n"
    )
    found = {text for _, text in _numba_decorators(ast.parse(source))}
    assert found == {
        "from numba import njit",
        "fastmath=",
        "numba.njit",
        "@njit not from fastcnn._config",
    }


def test_no_fastmath_outside_config():
    for path in PACKAGE.rglob("*.py"):
        if path.name != "_config.py":
            assert "fastmath" not in path.read_text(), path


CALLED_FROM_PYTHON = {"_launch", "_ordered_sum"}  # jit(python=True)


@pytest.mark.parametrize("path", KERNEL_MODULES, ids=[p.stem for p in KERNEL_MODULES])
def test_every_kernel_is_built_with_the_shared_options(path):
    module = importlib.import_module(f"fastcnn._kernels.{path.stem}")
    kernels = [obj for obj in vars(module).values() if isinstance(obj, Dispatcher)]
    assert kernels, f"{path.name} defines no kernel"
    for kernel in kernels:
        options = kernel.targetoptions
        name = kernel.py_func.__qualname__
        assert set(options["fastmath"]) == set(_config.FASTMATH), name
        assert options["nogil"] is True, name
        assert options["error_model"] == "numpy", name
        assert isinstance(kernel._cache, RobustCache), f"{name} is not cached"
        assert options["no_cfunc_wrapper"], name
        if options.get("no_cpython_wrapper"):  # a kernel, run by its native code, or a helper
            assert isinstance(kernel, NativeOnly), name
        else:
            assert name in CALLED_FROM_PYTHON, name


def test_import_fastcnn_does_not_import_numba():
    code = "import sys, fastcnn; assert 'numba' not in sys.modules, 'numba imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_float32_kernels_compute_in_float32(tmp_path):
    """No float64 literal promotes float32 arithmetic: the LLVM IR of freshly compiled
    float32 kernels holds no ``double`` at all. (Batch-norm and the losses accumulate in
    float64 on purpose, so they are not in this list.)"""
    code = textwrap.dedent(
        """
        import numpy as np
        from fastcnn._kernels import activation, loss, pool

        x = np.ones((2, 3, 4), np.float32)
        out = np.empty_like(x)
        y = np.empty((2, 1, 2), np.float32)
        idx = np.empty((2, 1, 2), np.int64)
        activation.sigmoid(x.ravel(), out.ravel())
        activation.sigmoid_backward(x.ravel(), x.ravel(), out.ravel())
        loss.log_softmax(x, out)
        pool.max_pool(x, 2, 2, 2, 2, 0, 0, y, idx)
        for kernel in (activation._sigmoid, activation._sigmoid_backward, loss._log_softmax,
                       pool._max_pool):
            (ir,) = kernel.inspect_llvm().values()
            print(kernel.__name__, "double" in ir)
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))  # compile afresh: IR available
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.split("\n")
    assert [line for line in lines if line.endswith("True")] == []
    assert len([line for line in lines if line.endswith("False")]) == 4


def test_a_kernel_called_from_python_raises_instead_of_crashing():
    """Kernels have no Python entry point; Numba would call one as if they had."""
    from fastcnn._kernels import activation

    x = np.ones(8, np.float32)
    with pytest.raises(TypeError, match="_relu has no Python entry point"):
        activation._relu(0, 0, 8, x, x)


@pytest.mark.parametrize("path", KERNEL_MODULES, ids=[p.stem for p in KERNEL_MODULES])
def test_kernels_neither_raise_nor_allocate(path):
    """The launcher's trampoline reads no status from a kernel (fastcnn._kernels.launch):
    a kernel may not raise, nor allocate (an allocation can fail); scratch comes from the
    caller."""
    tree = ast.parse(path.read_text())
    allocating = {"empty", "zeros", "ones", "empty_like", "zeros_like", "ones_like", "full",
                  "copy", "astype", "ascontiguousarray", "array"}  # fmt: skip
    found, seen = [], 0
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef) and any(
            isinstance(d, ast.Call) and getattr(d.func, "id", "") == "jit"
            for d in func.decorator_list
        ):
            seen += 1
            for node in ast.walk(func):
                if isinstance(node, (ast.Raise, ast.Assert)):
                    found.append(f"{func.name}: raise/assert, line {node.lineno}")
                elif (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in allocating
                ):
                    found.append(f"{func.name}: {node.func.attr}(), line {node.lineno}")
    assert seen and found == []
