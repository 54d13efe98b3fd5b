"""The catalogue of bad inputs: each is rejected with a ValueError/TypeError naming the
argument, before any kernel runs, by the fast path, the reference and the layers.

``BAD_INPUTS`` is one table of ``pytest.param(call, exception, message_regex, id=...)``.
``call(F)`` makes one bad call; ``F`` is the functional module under test
(``fastcnn.functional`` or ``fastcnn.reference``). The entries of ``LAYER_BAD`` (layers,
losses, state dicts, optimisers, the thread count, saving) do not use it.

"Before any kernel runs" is proved with tripwires: every function and Numba dispatcher
defined in ``fastcnn._kernels`` (and every name other modules imported from there) is
replaced by a function that records the call and raises.
``test_tripwires_fire_on_valid_calls`` shows the tripwires do catch valid calls, so their
silence on bad input means something.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import sys

import numpy as np
import pytest

import fastcnn
import fastcnn.functional
import fastcnn.nn as nn
import fastcnn.optim
import fastcnn.reference

# --- array builders: values do not matter, only shapes and dtypes ---------------------


def a(*shape, dtype=np.float32):
    """An array of ones of ``shape`` and ``dtype``."""
    return np.ones(shape, dtype=dtype)


def ints(*values, dtype=np.int64):
    """An integer array of ``values``."""
    return np.array(values, dtype=dtype)


def readonly(x):
    x.flags.writeable = False
    return x


NO_DIR = "/nonexistent-fastcnn-dir/model.npz"  # save must refuse before touching it
X, W = (2, 3, 6, 6), (4, 3, 3, 3)  # a valid conv pair: output (2, 4, 4, 4)
G = (2, 4, 4, 4)


def rng():
    return np.random.default_rng(0)


# --- tripwires on every kernel -------------------------------------------------------

_armed = [False]
_kernel_calls: list[str] = []


def _kernel_modules():
    """Import and return every module of ``fastcnn._kernels``."""
    import fastcnn._kernels as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__)]
    return [importlib.import_module(f"fastcnn._kernels.{name}") for name in names]


def _origin(obj) -> str:
    """The module that defined a function or a Numba dispatcher ('' for anything else)."""
    func = getattr(obj, "py_func", obj)
    if callable(func) and not isinstance(func, type):
        return getattr(func, "__module__", "") or ""
    return ""


def _tripwire(label, real):
    def tripwire(*args, **kwargs):
        if _armed[0]:
            _kernel_calls.append(label)
            raise AssertionError(f"kernel {label} ran on bad input")
        return real(*args, **kwargs)

    return tripwire


@pytest.fixture
def tripwires(monkeypatch):
    """Replace every kernel entry point by a tripwire; armed for the test's duration.

    Covers the functions of ``fastcnn._kernels.*`` (drivers and dispatchers) and any name
    another fastcnn module imported from there.
    """
    kernel_mods = _kernel_modules()
    for mod in kernel_mods:
        # A kernel called from inside other kernels stays: they resolve it as a global
        # when they compile, and a Python tripwire there would fail their compilation.
        # The kernels that call it are wired, so a run still trips.
        inner = {
            name
            for obj in vars(mod).values()
            if hasattr(obj, "py_func")
            for name in obj.py_func.__code__.co_names
        }
        for attr, obj in list(vars(mod).items()):
            if _origin(obj).startswith("fastcnn._kernels") and attr not in inner:
                monkeypatch.setattr(mod, attr, _tripwire(f"{mod.__name__}.{attr}", obj))
    for modname, mod in list(sys.modules.items()):
        if not modname.startswith("fastcnn.") or modname.startswith("fastcnn._kernels"):
            continue
        for attr, obj in list(vars(mod).items()):
            if _origin(obj).startswith("fastcnn._kernels"):
                monkeypatch.setattr(mod, attr, _tripwire(f"{modname}.{attr}", obj))
    _kernel_calls.clear()
    _armed[0] = True
    yield _kernel_calls
    _armed[0] = False


@contextlib.contextmanager
def kernels_allowed():
    """Disarm the tripwires, to set up a valid state (say, a layer's forward) first."""
    armed, _armed[0] = _armed[0], False
    try:
        yield
    finally:
        _armed[0] = armed


# --- the functional catalogue --------------------------------------------------------


def p(call, exc, regex, id):
    return pytest.param(call, exc, regex, id=id)


FUNCTIONAL_BAD = [
    # conv2d: ranks, dtypes, types
    p(
        lambda F: F.conv2d(a(3, 6, 6), a(*W)),
        ValueError,
        r"conv2d: x must be a 4-D array",
        "conv2d-x-rank3",
    ),
    p(
        lambda F: F.conv2d(a(1, *X), a(*W)),
        ValueError,
        r"conv2d: x must be a 4-D array",
        "conv2d-x-rank5",
    ),
    p(
        lambda F: F.conv2d(a(*X, dtype=np.int32), a(*W)),
        TypeError,
        r"conv2d: x must have dtype float32 or float64, got int32",
        "conv2d-x-int32",
    ),
    p(
        lambda F: F.conv2d(a(*X, dtype=np.complex64), a(*W)),
        TypeError,
        r"conv2d: x must have dtype .*complex64",
        "conv2d-x-complex",
    ),
    p(
        lambda F: F.conv2d(a(*X, dtype=np.bool_), a(*W)),
        TypeError,
        r"conv2d: x must have dtype .*bool",
        "conv2d-x-bool",
    ),
    p(
        lambda F: F.conv2d(a(*X, dtype=np.float16), a(*W)),
        TypeError,
        r"conv2d: x must have dtype .*float16",
        "conv2d-x-float16",
    ),
    p(
        lambda F: F.conv2d(a(*X).tolist(), a(*W)),
        TypeError,
        r"conv2d: x must be a numpy.ndarray, got list",
        "conv2d-x-list",
    ),
    p(
        lambda F: F.conv2d(None, a(*W)),
        TypeError,
        r"conv2d: x must be a numpy.ndarray, got NoneType",
        "conv2d-x-none",
    ),
    p(
        lambda F: F.conv2d(a(*X), None),
        TypeError,
        r"conv2d: weight must be a numpy.ndarray, got NoneType",
        "conv2d-weight-none",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(4, 27)),
        ValueError,
        r"conv2d: weight must be a 4-D array",
        "conv2d-weight-rank2",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W, dtype=np.float64)),
        TypeError,
        r"conv2d: arrays must share one dtype .*weight=float64",
        "conv2d-weight-float64-mixed",
    ),
    p(
        lambda F: F.conv2d(a(*X, dtype=">f4"), a(*W)),
        TypeError,
        r"conv2d: x must have dtype float32 or float64, got >f4",
        "conv2d-x-big-endian",
    ),
    # conv2d: shapes that do not fit
    p(
        lambda F: F.conv2d(a(*X), a(4, 2, 3, 3)),
        ValueError,
        r"conv2d: weight has 2 input channels but the input has 3",
        "conv2d-channel-mismatch",
    ),
    p(
        lambda F: F.conv2d(a(2, 3, 4, 4), a(4, 3, 5, 5)),
        ValueError,
        r"conv2d: kernel \(5, 5\) .*larger than the padded input \(4, 4\)",
        "conv2d-kernel-too-big",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), dilation=3),
        ValueError,
        r"conv2d: kernel \(3, 3\) with dilation \(3, 3\) is larger",
        "conv2d-dilated-kernel-too-big",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(0, 3, 3, 3)),
        ValueError,
        r"conv2d: weight must have non-zero sizes",
        "conv2d-weight-zero-out-channels",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), a(3)),
        ValueError,
        r"conv2d: bias must have shape \(4,\), got \(3,\)",
        "conv2d-bias-length",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), a(4, 1)),
        ValueError,
        r"conv2d: bias must have shape \(4,\), got \(4, 1\)",
        "conv2d-bias-rank2",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), a(4, dtype=np.int64)),
        TypeError,
        r"conv2d: bias must have dtype",
        "conv2d-bias-int",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), a(4, dtype=np.float64)),
        TypeError,
        r"conv2d: arrays must share one dtype .*bias=float64",
        "conv2d-bias-float64-mixed",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), [0.0] * 4),
        TypeError,
        r"conv2d: bias must be a numpy.ndarray, got list",
        "conv2d-bias-list",
    ),
    # conv2d: stride / padding / dilation values that make no sense
    p(
        lambda F: F.conv2d(a(*X), a(*W), stride=0),
        ValueError,
        r"conv2d: stride must be >= 1, got 0",
        "conv2d-stride-0",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), stride=-2),
        ValueError,
        r"conv2d: stride must be >= 1, got -2",
        "conv2d-stride-negative",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), stride=(1, 0)),
        ValueError,
        r"conv2d: stride must be >= 1, got \(1, 0\)",
        "conv2d-stride-pair-0",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), stride=True),
        TypeError,
        r"conv2d: stride must be an int or a pair of ints, got True",
        "conv2d-stride-bool",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), stride=1.0),
        TypeError,
        r"conv2d: stride must be an int or a pair of ints, got 1.0",
        "conv2d-stride-float",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), stride=(1, 1, 1)),
        TypeError,
        r"conv2d: stride must be an int or a pair of ints, got \(1, 1, 1\)",
        "conv2d-stride-3-tuple",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), stride="1"),
        TypeError,
        r"conv2d: stride must be an int or a pair of ints, got '1'",
        "conv2d-stride-string",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), stride=None),
        TypeError,
        r"conv2d: stride must be an int or a pair of ints, got None",
        "conv2d-stride-none",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), padding=-1),
        ValueError,
        r"conv2d: padding must be >= 0, got -1",
        "conv2d-padding-negative",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), padding=(1, -1)),
        ValueError,
        r"conv2d: padding must be >= 0, got \(1, -1\)",
        "conv2d-padding-pair-negative",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), padding=0.5),
        TypeError,
        r"conv2d: padding must be an int or a pair of ints, got 0.5",
        "conv2d-padding-float",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), padding="same"),
        TypeError,
        r"conv2d: padding must be an int or a pair of ints, got 'same'",
        "conv2d-padding-string",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), dilation=0),
        ValueError,
        r"conv2d: dilation must be >= 1, got 0",
        "conv2d-dilation-0",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), dilation=(2, -1)),
        ValueError,
        r"conv2d: dilation must be >= 1, got \(2, -1\)",
        "conv2d-dilation-pair-negative",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), dilation=False),
        TypeError,
        r"conv2d: dilation must be an int or a pair of ints, got False",
        "conv2d-dilation-bool",
    ),
    p(
        lambda F: F.conv2d(a(*X), a(*W), dilation=(1.0, 1.0)),
        TypeError,
        r"conv2d: dilation must be an int or a pair of ints",
        "conv2d-dilation-float-pair",
    ),
    # conv2d_grad_input
    p(
        lambda F: F.conv2d_grad_input((2, 3, 6), a(*W), a(*G)),
        ValueError,
        r"conv2d_grad_input: input_shape must be 4 non-negative ints, got \(2, 3, 6\)",
        "conv2d_grad_input-shape-3-entries",
    ),
    p(
        lambda F: F.conv2d_grad_input((2, 3, -6, 6), a(*W), a(*G)),
        ValueError,
        r"conv2d_grad_input: input_shape must be 4 non-negative ints",
        "conv2d_grad_input-shape-negative",
    ),
    p(
        lambda F: F.conv2d_grad_input((2.0, 3, 6, 6), a(*W), a(*G)),
        TypeError,
        r"conv2d_grad_input: input_shape must be a tuple of 4 ints",
        "conv2d_grad_input-shape-float",
    ),
    p(
        lambda F: F.conv2d_grad_input(None, a(*W), a(*G)),
        TypeError,
        r"conv2d_grad_input: input_shape must be a tuple of 4 ints, got None",
        "conv2d_grad_input-shape-none",
    ),
    p(
        lambda F: F.conv2d_grad_input((2, 2, 6, 6), a(*W), a(*G)),
        ValueError,
        r"conv2d_grad_input: weight has 3 input channels but the input has 2",
        "conv2d_grad_input-channel-mismatch",
    ),
    p(
        lambda F: F.conv2d_grad_input(X, a(*W), a(2, 4, 3, 3)),
        ValueError,
        r"conv2d_grad_input: grad_out must have shape \(2, 4, 4, 4\), got \(2, 4, 3, 3\)",
        "conv2d_grad_input-grad_out-shape",
    ),
    p(
        lambda F: F.conv2d_grad_input(X, a(*W), a(*G, dtype=np.float64)),
        TypeError,
        r"conv2d_grad_input: arrays must share one dtype .*grad_out=float64",
        "conv2d_grad_input-grad_out-float64-mixed",
    ),
    p(
        lambda F: F.conv2d_grad_input(X, a(*W), None),
        TypeError,
        r"conv2d_grad_input: grad_out must be a numpy.ndarray, got NoneType",
        "conv2d_grad_input-grad_out-none",
    ),
    p(
        lambda F: F.conv2d_grad_input(X, a(*W), a(*G), stride=0),
        ValueError,
        r"conv2d_grad_input: stride must be >= 1",
        "conv2d_grad_input-stride-0",
    ),
    # conv2d_grad_weight
    p(
        lambda F: F.conv2d_grad_weight(a(*X), (4, 2, 3, 3), a(*G)),
        ValueError,
        r"conv2d_grad_weight: weight has 2 input channels but the input has 3",
        "conv2d_grad_weight-channel-mismatch",
    ),
    p(
        lambda F: F.conv2d_grad_weight(a(*X), (4, 3, 3, 3, 1), a(*G)),
        ValueError,
        r"conv2d_grad_weight: weight_shape must be 4 non-negative ints",
        "conv2d_grad_weight-shape-5-entries",
    ),
    p(
        lambda F: F.conv2d_grad_weight(a(*X), ("4", 3, 3, 3), a(*G)),
        TypeError,
        r"conv2d_grad_weight: weight_shape must be a tuple of 4 ints",
        "conv2d_grad_weight-shape-string-entry",
    ),
    p(
        lambda F: F.conv2d_grad_weight(a(*X), W, a(4, 4, 4)),
        ValueError,
        r"conv2d_grad_weight: grad_out must be a 4-D array",
        "conv2d_grad_weight-grad_out-rank3",
    ),
    p(
        lambda F: F.conv2d_grad_weight(a(*X), W, a(2, 5, 4, 4)),
        ValueError,
        r"conv2d_grad_weight: grad_out must have shape \(2, 4, 4, 4\)",
        "conv2d_grad_weight-grad_out-shape",
    ),
    p(
        lambda F: F.conv2d_grad_weight(a(*X, dtype=np.int16), W, a(*G)),
        TypeError,
        r"conv2d_grad_weight: x must have dtype",
        "conv2d_grad_weight-x-int16",
    ),
    p(
        lambda F: F.conv2d_grad_weight(a(*X), W, a(*G), padding=(0, 0, 0)),
        TypeError,
        r"conv2d_grad_weight: padding must be an int or a pair",
        "conv2d_grad_weight-padding-3-tuple",
    ),
    # conv2d_grad_bias
    p(
        lambda F: F.conv2d_grad_bias(a(2, 4)),
        ValueError,
        r"conv2d_grad_bias: grad_out must be a 4-D array",
        "conv2d_grad_bias-rank2",
    ),
    p(
        lambda F: F.conv2d_grad_bias(a(*G, dtype=np.int64)),
        TypeError,
        r"conv2d_grad_bias: grad_out must have dtype",
        "conv2d_grad_bias-int",
    ),
    p(
        lambda F: F.conv2d_grad_bias(a(*G).tolist()),
        TypeError,
        r"conv2d_grad_bias: grad_out must be a numpy.ndarray, got list",
        "conv2d_grad_bias-list",
    ),
    # max_pool2d
    p(
        lambda F: F.max_pool2d(a(*X), 0),
        ValueError,
        r"max_pool2d: kernel_size must be >= 1, got 0",
        "max_pool2d-kernel-0",
    ),
    p(
        lambda F: F.max_pool2d(a(*X), -2),
        ValueError,
        r"max_pool2d: kernel_size must be >= 1, got -2",
        "max_pool2d-kernel-negative",
    ),
    p(
        lambda F: F.max_pool2d(a(*X), "2"),
        TypeError,
        r"max_pool2d: kernel_size must be an int or a pair of ints, got '2'",
        "max_pool2d-kernel-string",
    ),
    p(
        lambda F: F.max_pool2d(a(*X), 2.0),
        TypeError,
        r"max_pool2d: kernel_size must be an int or a pair of ints, got 2.0",
        "max_pool2d-kernel-float",
    ),
    p(
        lambda F: F.max_pool2d(a(*X), (2, 2, 2)),
        TypeError,
        r"max_pool2d: kernel_size must be an int or a pair of ints",
        "max_pool2d-kernel-3-tuple",
    ),
    p(
        lambda F: F.max_pool2d(a(*X), True),
        TypeError,
        r"max_pool2d: kernel_size must be an int or a pair of ints, got True",
        "max_pool2d-kernel-bool",
    ),
    p(
        lambda F: F.max_pool2d(a(*X), None),
        TypeError,
        r"max_pool2d: kernel_size must be an int or a pair of ints, got None",
        "max_pool2d-kernel-none",
    ),
    p(
        lambda F: F.max_pool2d(a(*X), 2, stride=0),
        ValueError,
        r"max_pool2d: stride must be >= 1, got 0",
        "max_pool2d-stride-0",
    ),
    p(
        lambda F: F.max_pool2d(a(*X), 2, stride=(2, -1)),
        ValueError,
        r"max_pool2d: stride must be >= 1",
        "max_pool2d-stride-pair-negative",
    ),
    p(
        lambda F: F.max_pool2d(a(*X), 2, stride=1.5),
        TypeError,
        r"max_pool2d: stride must be an int or a pair",
        "max_pool2d-stride-float",
    ),
    p(
        lambda F: F.max_pool2d(a(*X), 2, padding=2),
        ValueError,
        r"max_pool2d: padding must be at most half of kernel_size \(2, 2\), got \(2, 2\)",
        "max_pool2d-padding-over-half",
    ),
    p(
        lambda F: F.max_pool2d(a(*X), 2, padding=-1),
        ValueError,
        r"max_pool2d: padding must be >= 0, got -1",
        "max_pool2d-padding-negative",
    ),
    p(
        lambda F: F.max_pool2d(a(1, 1, 3, 3), 4),
        ValueError,
        r"max_pool2d: kernel_size \(4, 4\) is larger than the padded input \(3, 3\)",
        "max_pool2d-kernel-too-big",
    ),
    p(
        lambda F: F.max_pool2d(a(3, 6, 6), 2),
        ValueError,
        r"max_pool2d: x must be a 4-D array",
        "max_pool2d-x-rank3",
    ),
    p(
        lambda F: F.max_pool2d(a(*X, dtype=np.uint8), 2),
        TypeError,
        r"max_pool2d: x must have dtype .*uint8",
        "max_pool2d-x-uint8",
    ),
    # max_pool2d_backward: grad (1, 1, 2, 2) of an input (1, 1, 4, 4)
    p(
        lambda F: F.max_pool2d_backward(
            a(1, 1, 2, 2), ints(0, 1, 4, 16).reshape(1, 1, 2, 2), (1, 1, 4, 4)
        ),
        ValueError,
        r"max_pool2d_backward: indices must lie in \[0, 16\) .*got values in \[0, 16\]",
        "max_pool2d_backward-index-too-big",
    ),
    p(
        lambda F: F.max_pool2d_backward(
            a(1, 1, 2, 2), ints(0, -1, 4, 5).reshape(1, 1, 2, 2), (1, 1, 4, 4)
        ),
        ValueError,
        r"max_pool2d_backward: indices must lie in \[0, 16\) .*got values in \[-1, 5\]",
        "max_pool2d_backward-index-negative",
    ),
    p(
        lambda F: F.max_pool2d_backward(a(1, 1, 2, 2), a(1, 1, 2, 2), (1, 1, 4, 4)),
        TypeError,
        r"max_pool2d_backward: indices must have an integer dtype, got float32",
        "max_pool2d_backward-indices-float",
    ),
    p(
        lambda F: F.max_pool2d_backward(a(1, 1, 2, 2), a(1, 1, 2, 2, dtype=np.bool_), (1, 1, 4, 4)),
        TypeError,
        r"max_pool2d_backward: indices must have an integer dtype, got bool",
        "max_pool2d_backward-indices-bool",
    ),
    p(
        lambda F: F.max_pool2d_backward(a(1, 1, 2, 2), [[[[0, 1], [4, 5]]]], (1, 1, 4, 4)),
        TypeError,
        r"max_pool2d_backward: indices must be a numpy.ndarray, got list",
        "max_pool2d_backward-indices-list",
    ),
    p(
        lambda F: F.max_pool2d_backward(
            a(1, 1, 2, 2), ints(0, 1, 4).reshape(1, 1, 1, 3), (1, 1, 4, 4)
        ),
        ValueError,
        r"max_pool2d_backward: indices must have the shape of grad_out \(1, 1, 2, 2\)",
        "max_pool2d_backward-indices-shape",
    ),
    p(
        lambda F: F.max_pool2d_backward(
            a(1, 1, 2, 2), ints(0, 1, 4, 5).reshape(1, 1, 2, 2), (2, 1, 4, 4)
        ),
        ValueError,
        r"max_pool2d_backward: input_shape \(2, 1, 4, 4\) does not match grad_out",
        "max_pool2d_backward-batch-mismatch",
    ),
    p(
        lambda F: F.max_pool2d_backward(
            a(1, 1, 2, 2), ints(0, 1, 4, 5).reshape(1, 1, 2, 2), (1, 4, 4)
        ),
        ValueError,
        r"max_pool2d_backward: input_shape must be 4 non-negative ints",
        "max_pool2d_backward-shape-3-entries",
    ),
    p(
        lambda F: F.max_pool2d_backward(
            a(1, 1, 2, 2, dtype=np.int32), ints(0, 1, 4, 5).reshape(1, 1, 2, 2), (1, 1, 4, 4)
        ),
        TypeError,
        r"max_pool2d_backward: grad_out must have dtype",
        "max_pool2d_backward-grad_out-int",
    ),
    # batch_norm2d: x (2, 3, 4, 4)
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), a(2), a(3), None, None),
        ValueError,
        r"batch_norm2d: weight must have shape \(3,\), got \(2,\)",
        "batch_norm2d-weight-length",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), a(3), a(4), None, None),
        ValueError,
        r"batch_norm2d: bias must have shape \(3,\), got \(4,\)",
        "batch_norm2d-bias-length",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), None, None, a(3), a(2)),
        ValueError,
        r"batch_norm2d: running_var must have shape \(3,\), got \(2,\)",
        "batch_norm2d-running_var-length",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), None, None, a(3), None),
        ValueError,
        r"batch_norm2d: give both running_mean and running_var",
        "batch_norm2d-running_mean-alone",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), None, None, None, None, training="yes"),
        TypeError,
        r"batch_norm2d: training must be a bool, got 'yes'",
        "batch_norm2d-training-string",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), None, None, None, None, training=1),
        TypeError,
        r"batch_norm2d: training must be a bool, got 1",
        "batch_norm2d-training-int",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), None, None, a(3), a(3), momentum=1.5),
        ValueError,
        r"batch_norm2d: momentum must be <= 1.0, got 1.5",
        "batch_norm2d-momentum-over-1",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), None, None, a(3), a(3), momentum=-0.1),
        ValueError,
        r"batch_norm2d: momentum must be >= 0.0, got -0.1",
        "batch_norm2d-momentum-negative",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), None, None, a(3), a(3), momentum=None),
        TypeError,
        r"batch_norm2d: momentum must be a real number, got None",
        "batch_norm2d-momentum-none",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), None, None, None, None, eps=0),
        ValueError,
        r"batch_norm2d: eps must be > 0.0, got 0.0",
        "batch_norm2d-eps-0",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), None, None, None, None, eps=float("nan")),
        ValueError,
        r"batch_norm2d: eps must be finite, got nan",
        "batch_norm2d-eps-nan",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), None, None, None, None, eps="1e-5"),
        TypeError,
        r"batch_norm2d: eps must be a real number, got '1e-5'",
        "batch_norm2d-eps-string",
    ),
    p(
        lambda F: F.batch_norm2d(a(1, 3, 1, 1), None, None, None, None),
        ValueError,
        r"batch_norm2d: training needs more than one value per channel, got input shape \(1, 3,",
        "batch_norm2d-one-value-per-channel",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), None, None, None, None, training=False),
        ValueError,
        r"batch_norm2d: evaluation \(training=False\) needs running_mean and running_var",
        "batch_norm2d-eval-without-stats",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4), None, None, readonly(a(3)), a(3)),
        ValueError,
        r"batch_norm2d: running_mean must be writeable",
        "batch_norm2d-running_mean-readonly",
    ),
    p(
        lambda F: F.batch_norm2d(
            a(2, 3, 4, 4), None, None, a(3, dtype=np.float64), a(3, dtype=np.float64)
        ),
        TypeError,
        r"batch_norm2d: arrays must share one dtype .*running_mean=float64",
        "batch_norm2d-running-stats-float64-mixed",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 16), None, None, None, None),
        ValueError,
        r"batch_norm2d: x must be a 4-D array",
        "batch_norm2d-x-rank3",
    ),
    p(
        lambda F: F.batch_norm2d(a(2, 3, 4, 4, dtype=np.complex128), None, None, None, None),
        TypeError,
        r"batch_norm2d: x must have dtype .*complex128",
        "batch_norm2d-x-complex",
    ),
    # batch_norm2d_backward
    p(
        lambda F: F.batch_norm2d_backward(a(2, 3, 4, 4), a(2, 3, 4, 4), a(3), a(3), None),
        TypeError,
        r"batch_norm2d_backward: save_invstd must be a numpy.ndarray, got NoneType",
        "batch_norm2d_backward-save_invstd-none",
    ),
    p(
        lambda F: F.batch_norm2d_backward(a(2, 3, 4, 5), a(2, 3, 4, 4), a(3), a(3), a(3)),
        ValueError,
        r"batch_norm2d_backward: grad_out must have the shape of x \(2, 3, 4, 4\), got \(2, 3, 4,",
        "batch_norm2d_backward-grad_out-shape",
    ),
    p(
        lambda F: F.batch_norm2d_backward(a(2, 3, 4, 4), a(2, 3, 4, 4), a(2), a(3), a(3)),
        ValueError,
        r"batch_norm2d_backward: weight must have shape \(3,\), got \(2,\)",
        "batch_norm2d_backward-weight-length",
    ),
    p(
        lambda F: F.batch_norm2d_backward(a(2, 3, 4, 4), a(2, 3, 4, 4), a(3), a(4), a(3)),
        ValueError,
        r"batch_norm2d_backward: save_mean must have shape \(3,\), got \(4,\)",
        "batch_norm2d_backward-save_mean-length",
    ),
    # element-wise
    p(
        lambda F: F.relu(a(3, 4, dtype=np.int64)),
        TypeError,
        r"relu: x must have dtype float32 or float64, got int64",
        "relu-int",
    ),
    p(
        lambda F: F.relu([1.0, -1.0]),
        TypeError,
        r"relu: x must be a numpy.ndarray, got list",
        "relu-list",
    ),
    p(
        lambda F: F.relu(None),
        TypeError,
        r"relu: x must be a numpy.ndarray, got NoneType",
        "relu-none",
    ),
    p(
        lambda F: F.relu(np.float32(1.0)),
        TypeError,
        r"relu: x must be a numpy.ndarray, got float32",
        "relu-numpy-scalar",
    ),
    p(
        lambda F: F.relu_backward(a(3, 4), a(4, 3)),
        ValueError,
        r"relu_backward: grad_out must have the shape of x \(4, 3\), got \(3, 4\)",
        "relu_backward-shape",
    ),
    p(
        lambda F: F.relu_backward(a(3, 4, dtype=np.float64), a(3, 4)),
        TypeError,
        r"relu_backward: arrays must share one dtype .*grad_out=float64, x=float32",
        "relu_backward-dtype-mixed",
    ),
    p(
        lambda F: F.sigmoid(a(3, dtype=np.bool_)),
        TypeError,
        r"sigmoid: x must have dtype .*bool",
        "sigmoid-bool",
    ),
    p(
        lambda F: F.sigmoid(a(3, dtype=np.float16)),
        TypeError,
        r"sigmoid: x must have dtype .*float16",
        "sigmoid-float16",
    ),
    p(
        lambda F: F.sigmoid_backward(a(3, 4), a(3, 5)),
        ValueError,
        r"sigmoid_backward: grad_out must have the shape of y \(3, 5\)",
        "sigmoid_backward-shape",
    ),
    p(
        lambda F: F.sigmoid_backward(a(3, 4), None),
        TypeError,
        r"sigmoid_backward: y must be a numpy.ndarray, got NoneType",
        "sigmoid_backward-y-none",
    ),
    # linear
    p(
        lambda F: F.linear(a(4, 5), a(3, 6)),
        ValueError,
        r"linear: x must have shape \(\.\.\., 6\) to match weight \(3, 6\), got \(4, 5\)",
        "linear-features-mismatch",
    ),
    p(
        lambda F: F.linear(a(4, 6), a(3, 6, 1)),
        ValueError,
        r"linear: weight must be a 2-D array",
        "linear-weight-rank3",
    ),
    p(
        lambda F: F.linear(a(4, 6), a(3, 6), a(4)),
        ValueError,
        r"linear: bias must have shape \(3,\), got \(4,\)",
        "linear-bias-length",
    ),
    p(
        lambda F: F.linear(np.array(1.0, np.float32), a(3, 1)),
        ValueError,
        r"linear: x must have shape \(\.\.\., 1\)",
        "linear-x-0d",
    ),
    p(
        lambda F: F.linear(a(4, 6, dtype=np.int32), a(3, 6)),
        TypeError,
        r"linear: x must have dtype",
        "linear-x-int",
    ),
    p(
        lambda F: F.linear(a(4, 6), a(3, 6), a(3, dtype=np.float64)),
        TypeError,
        r"linear: arrays must share one dtype .*bias=float64",
        "linear-bias-float64-mixed",
    ),
    # softmax / log_softmax
    p(
        lambda F: F.softmax(a(3, 4), axis=2),
        ValueError,
        r"softmax: axis must be in \[-2, 1\], got 2",
        "softmax-axis-out-of-range",
    ),
    p(
        lambda F: F.softmax(a(3, 4), axis=1.0),
        TypeError,
        r"softmax: axis must be an int, got 1.0",
        "softmax-axis-float",
    ),
    p(
        lambda F: F.softmax(a(3, 4), axis=None),
        TypeError,
        r"softmax: axis must be an int, got None",
        "softmax-axis-none",
    ),
    p(
        lambda F: F.softmax(np.array(1.0)),
        ValueError,
        r"softmax: x must have at least one dimension",
        "softmax-x-0d",
    ),
    p(
        lambda F: F.log_softmax(a(3, 4), axis=-3),
        ValueError,
        r"log_softmax: axis must be in \[-2, 1\], got -3",
        "log_softmax-axis-negative",
    ),
    p(
        lambda F: F.log_softmax(a(3, 4, dtype=np.bool_)),
        TypeError,
        r"log_softmax: x must have dtype .*bool",
        "log_softmax-x-bool",
    ),
    # cross_entropy: logits (4, 3)
    p(
        lambda F: F.cross_entropy(a(4, 3), ints(0, 1, 2, 3)),
        ValueError,
        r"cross_entropy: targets must be class indices in \[0, 3\), got values in \[0, 3\]",
        "cross_entropy-target-too-big",
    ),
    p(
        lambda F: F.cross_entropy(a(4, 3), ints(0, -1, 2, 1)),
        ValueError,
        r"cross_entropy: targets must be class indices in \[0, 3\), got values in \[-1, 2\]",
        "cross_entropy-target-negative",
    ),
    p(
        lambda F: F.cross_entropy(a(4, 3), a(4)),
        TypeError,
        r"cross_entropy: targets must have an integer dtype, got float32",
        "cross_entropy-targets-float",
    ),
    p(
        lambda F: F.cross_entropy(a(4, 3), a(4, dtype=np.bool_)),
        TypeError,
        r"cross_entropy: targets must have an integer dtype, got bool",
        "cross_entropy-targets-bool",
    ),
    p(
        lambda F: F.cross_entropy(a(4, 3), [0, 1, 2, 0]),
        TypeError,
        r"cross_entropy: targets must be a numpy.ndarray, got list",
        "cross_entropy-targets-list",
    ),
    p(
        lambda F: F.cross_entropy(a(4, 3), ints(0, 1, 2, 0).reshape(4, 1)),
        ValueError,
        r"cross_entropy: targets must have shape \(4,\), got \(4, 1\)",
        "cross_entropy-targets-shape",
    ),
    p(
        lambda F: F.cross_entropy(a(4, 3), ints(0, 1, 2)),
        ValueError,
        r"cross_entropy: targets must have shape \(4,\), got \(3,\)",
        "cross_entropy-targets-length",
    ),
    p(
        lambda F: F.cross_entropy(a(12), ints(0)),
        ValueError,
        r"cross_entropy: logits must be a 2-D array",
        "cross_entropy-logits-rank1",
    ),
    p(
        lambda F: F.cross_entropy(a(4, 3, dtype=np.int64), ints(0, 1, 2, 0)),
        TypeError,
        r"cross_entropy: logits must have dtype",
        "cross_entropy-logits-int",
    ),
    p(
        lambda F: F.cross_entropy(a(0, 3), ints()),
        ValueError,
        r"cross_entropy: logits must have at least one row and one class, got \(0, 3\)",
        "cross_entropy-empty-batch",
    ),
    # binary_cross_entropy
    p(
        lambda F: F.binary_cross_entropy(a(4, 3), a(3, 4)),
        ValueError,
        r"binary_cross_entropy: targets must have the shape of probs \(4, 3\), got \(3, 4\)",
        "binary_cross_entropy-shape",
    ),
    p(
        lambda F: F.binary_cross_entropy(np.full(4, 1.5, np.float32), a(4)),
        ValueError,
        r"binary_cross_entropy: probs must lie in \[0, 1\]",
        "binary_cross_entropy-probs-over-1",
    ),
    p(
        lambda F: F.binary_cross_entropy(a(4), np.full(4, -0.5, np.float32)),
        ValueError,
        r"binary_cross_entropy: targets must lie in \[0, 1\]",
        "binary_cross_entropy-targets-negative",
    ),
    p(
        lambda F: F.binary_cross_entropy(a(4), a(4), eps=0.6),
        ValueError,
        r"binary_cross_entropy: eps must be <= 0.5, got 0.6",
        "binary_cross_entropy-eps-too-big",
    ),
    p(
        lambda F: F.binary_cross_entropy(a(4), a(4), eps=-1e-7),
        ValueError,
        r"binary_cross_entropy: eps must be >= 0.0",
        "binary_cross_entropy-eps-negative",
    ),
    p(
        lambda F: F.binary_cross_entropy(a(4), a(4, dtype=np.int64)),
        TypeError,
        r"binary_cross_entropy: targets must have dtype",
        "binary_cross_entropy-targets-int",
    ),
    p(
        lambda F: F.binary_cross_entropy([0.5] * 4, a(4)),
        TypeError,
        r"binary_cross_entropy: probs must be a numpy.ndarray, got list",
        "binary_cross_entropy-probs-list",
    ),
    p(
        lambda F: F.binary_cross_entropy(a(0), a(0)),
        ValueError,
        r"binary_cross_entropy: probs must not be empty",
        "binary_cross_entropy-empty",
    ),
]

# --- layers, losses, state dicts and optimisers --------------------------------------
# Each call builds the layer and feeds it otherwise-valid input, so a bad constructor
# argument may be rejected either by the constructor or by the first forward.


def _net():
    """Conv2d(1, 2, 3) - ReLU - Flatten - Linear(8, 3) on (N, 1, 4, 4) input."""
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, rng=rng()), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3, rng=rng())
    )


def _load(changes):
    """Load into a fresh ``_net()`` its own state dict with ``changes`` (None deletes)."""
    net = _net()
    state = dict(net.state_dict())
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    net.load_state_dict(state)


def _backward_after_forward(layer, x, grad_out, *learning_rate):
    with kernels_allowed():
        layer(x)
    layer.backward(grad_out, *learning_rate)


class _Param:
    """The least an optimiser needs: ``.data`` and ``.grad`` arrays."""

    def __init__(self, *shape):
        self.data, self.grad = a(*shape), a(*shape)


LAYER_BAD = [
    # Conv2d
    p(
        lambda F: nn.Conv2d(3, 4, 0, rng=rng())(a(*X)),
        ValueError,
        r"Conv2d: kernel_size must be >= 1, got 0",
        "Conv2d-kernel-0",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, "3", rng=rng())(a(*X)),
        TypeError,
        r"Conv2d: kernel_size must be an int or a pair of ints, got '3'",
        "Conv2d-kernel-string",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, (3, 3, 3), rng=rng())(a(*X)),
        TypeError,
        r"Conv2d: kernel_size must be an int or a pair of ints, got \(3, 3, 3\)",
        "Conv2d-kernel-3-tuple",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, 3, stride=0, rng=rng())(a(*X)),
        ValueError,
        r"Conv2d: stride must be >= 1, got 0",
        "Conv2d-stride-0",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, 3, stride=1.5, rng=rng())(a(*X)),
        TypeError,
        r"Conv2d: stride must be an int or a pair of ints, got 1.5",
        "Conv2d-stride-float",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, 3, padding=-1, rng=rng())(a(*X)),
        ValueError,
        r"Conv2d: padding must be >= 0, got -1",
        "Conv2d-padding-negative",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, 3, padding="same", rng=rng())(a(*X)),
        TypeError,
        r"Conv2d: padding must be an int or a pair of ints, got 'same'",
        "Conv2d-padding-string",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, 3, dilation=True, rng=rng())(a(*X)),
        TypeError,
        r"Conv2d: dilation must be an int or a pair of ints, got True",
        "Conv2d-dilation-bool",
    ),
    p(
        lambda F: nn.Conv2d(0, 4, 3, rng=rng())(a(2, 0, 6, 6)),
        ValueError,
        r"Conv2d: in_channels must be >= 1, got 0",
        "Conv2d-in_channels-0",
    ),
    p(
        lambda F: nn.Conv2d(3, -4, 3, rng=rng())(a(*X)),
        ValueError,
        r"Conv2d: out_channels must be >= 1, got -4",
        "Conv2d-out_channels-negative",
    ),
    p(
        lambda F: nn.Conv2d(3.0, 4, 3, rng=rng())(a(*X)),
        TypeError,
        r"Conv2d: in_channels must be an int, got 3.0",
        "Conv2d-in_channels-float",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, 3, rng=rng())(a(2, 2, 6, 6)),
        ValueError,
        r"Conv2d: x must have 3 channels \(in_channels=3\), got shape \(2, 2, 6, 6\)",
        "Conv2d-forward-channel-mismatch",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, 3, rng=rng())(a(6, 6)),
        ValueError,
        r"conv2d: x must be a 4-D array \(N, C, H, W\), got shape \(6, 6\)",
        "Conv2d-forward-rank2",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, 3, rng=rng())(a(*X, dtype=np.int64)),
        TypeError,
        r"conv2d: x must have dtype float32 or float64, got int64",
        "Conv2d-forward-int",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, 3, rng=rng())(a(*X).tolist()),
        TypeError,
        r"Conv2d: x must be a numpy.ndarray, got list",
        "Conv2d-forward-list",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, 3, rng=rng())(a(2, 3, 2, 2)),
        ValueError,
        r"conv2d: kernel \(3, 3\) with dilation \(1, 1\) is larger than the padded input \(2, 2\)",
        "Conv2d-forward-input-too-small",
    ),
    p(
        lambda F: _backward_after_forward(nn.Conv2d(3, 4, 3, rng=rng()), a(*X), a(2, 4, 3, 3)),
        ValueError,
        r"conv2d_grad_\w+: grad_out must have shape \(2, 4, 4, 4\), got \(2, 4, 3, 3\)",
        "Conv2d-backward-grad_out-shape",
    ),
    # MaxPool2d
    p(
        lambda F: nn.MaxPool2d(0)(a(*X)),
        ValueError,
        r"MaxPool2d: kernel_size must be >= 1, got 0",
        "MaxPool2d-kernel-0",
    ),
    p(
        lambda F: nn.MaxPool2d(2, padding=2)(a(*X)),
        ValueError,
        r"MaxPool2d: padding must be at most half of kernel_size \(2, 2\)",
        "MaxPool2d-padding-over-half",
    ),
    p(
        lambda F: nn.MaxPool2d(2, stride=-1)(a(*X)),
        ValueError,
        r"MaxPool2d: stride must be >= 1, got -1",
        "MaxPool2d-stride-negative",
    ),
    p(
        lambda F: nn.MaxPool2d(2)(a(6, 6)),
        ValueError,
        r"max_pool2d: x must be a 4-D array \(N, C, H, W\), got shape \(6, 6\)",
        "MaxPool2d-forward-rank2",
    ),
    p(
        lambda F: _backward_after_forward(nn.MaxPool2d(2), a(*X), a(2, 3, 2, 2)),
        ValueError,
        r"MaxPool2d: grad_out must have the last output's shape \(2, 3, 3, 3\), "
        r"got \(2, 3, 2, 2\)",
        "MaxPool2d-backward-grad_out-shape",
    ),
    # BatchNorm2d
    p(
        lambda F: nn.BatchNorm2d(0)(a(2, 0, 4, 4)),
        ValueError,
        r"BatchNorm2d: num_features must be >= 1, got 0",
        "BatchNorm2d-num_features-0",
    ),
    p(
        lambda F: nn.BatchNorm2d(3, eps=0)(a(*X)),
        ValueError,
        r"BatchNorm2d: eps must be > 0.0, got 0.0",
        "BatchNorm2d-eps-0",
    ),
    p(
        lambda F: nn.BatchNorm2d(3, momentum=2.0)(a(*X)),
        ValueError,
        r"BatchNorm2d: momentum must be <= 1.0, got 2.0",
        "BatchNorm2d-momentum-2",
    ),
    p(
        lambda F: nn.BatchNorm2d(4)(a(*X)),
        ValueError,
        r"BatchNorm2d: x must have 4 channels \(num_features=4\), got shape \(2, 3, 6, 6\)",
        "BatchNorm2d-forward-channel-mismatch",
    ),
    p(
        lambda F: nn.BatchNorm2d(3)(a(1, 3, 1, 1)),
        ValueError,
        r"batch_norm2d: training needs more than one value per channel",
        "BatchNorm2d-forward-one-value",
    ),
    # Linear
    p(
        lambda F: nn.Linear(5, 3, rng=rng())(a(4, 6)),
        ValueError,
        r"linear: x must have shape \(\.\.\., 5\) to match weight \(3, 5\), got \(4, 6\)",
        "Linear-forward-features-mismatch",
    ),
    p(
        lambda F: nn.Linear(-1, 3, rng=rng())(a(4, 1)),
        ValueError,
        r"Linear: in_features must be >= 1, got -1",
        "Linear-in_features-negative",
    ),
    p(
        lambda F: nn.Linear(5, "3", rng=rng())(a(4, 5)),
        TypeError,
        r"Linear: out_features must be an int, got '3'",
        "Linear-out_features-string",
    ),
    p(
        lambda F: nn.Linear(5, 3, rng=rng())(None),
        TypeError,
        r"Linear: x must be a numpy.ndarray, got NoneType",
        "Linear-forward-none",
    ),
    p(
        lambda F: _backward_after_forward(nn.Linear(5, 3, rng=rng()), a(4, 5), a(4, 4)),
        ValueError,
        r"Linear: grad_out must have shape \(4, 3\), got \(4, 4\)",
        "Linear-backward-grad_out-shape",
    ),
    # element-wise layers and Dropout
    p(
        lambda F: nn.ReLU()(a(3, 4, dtype=np.int32)),
        TypeError,
        r"relu: x must have dtype float32 or float64, got int32",
        "ReLU-forward-int",
    ),
    p(
        lambda F: nn.Sigmoid()([0.5, 1.0]),
        TypeError,
        r"Sigmoid: x must be a numpy.ndarray, got list",
        "Sigmoid-forward-list",
    ),
    p(
        lambda F: _backward_after_forward(nn.ReLU(), a(3, 4), a(4, 3)),
        ValueError,
        r"relu_backward: grad_out must have the shape of x \(3, 4\), got \(4, 3\)",
        "ReLU-backward-grad_out-shape",
    ),
    p(
        lambda F: nn.Dropout(1.5, rng=rng())(a(3, 4)),
        ValueError,
        r"Dropout: p must be <= 1.0, got 1.5",
        "Dropout-p-over-1",
    ),
    p(
        lambda F: nn.Dropout(-0.1, rng=rng())(a(3, 4)),
        ValueError,
        r"Dropout: p must be >= 0.0, got -0.1",
        "Dropout-p-negative",
    ),
    p(
        lambda F: nn.Dropout("0.5", rng=rng())(a(3, 4)),
        TypeError,
        r"Dropout: p must be a real number, got '0.5'",
        "Dropout-p-string",
    ),
    # losses
    p(
        lambda F: nn.CrossEntropyLoss()(a(4, 3), ints(0, 1, 2, 3)),
        ValueError,
        r"cross_entropy: targets must be class indices in \[0, 3\), got values in \[0, 3\]",
        "CrossEntropyLoss-target-too-big",
    ),
    p(
        lambda F: nn.CrossEntropyLoss()(a(4, 3), a(4)),
        TypeError,
        r"cross_entropy: targets must have an integer dtype, got float32",
        "CrossEntropyLoss-targets-float",
    ),
    p(
        lambda F: nn.BCELoss()(np.full(4, 1.5, np.float32), a(4)),
        ValueError,
        r"binary_cross_entropy: probs must lie in \[0, 1\], got values in \[1.5, 1.5\]",
        "BCELoss-probs-over-1",
    ),
    p(
        lambda F: nn.Conv2d(3, 4, 3, rng=rng())(a(*X, dtype=np.float64)),
        TypeError,
        r"conv2d: arrays must share one dtype .*x=float64, weight=float32",
        "Conv2d-forward-float64-into-float32",
    ),
    p(
        lambda F: _backward_after_forward(nn.Conv2d(3, 4, 3, rng=rng()), a(*X), a(*G), 0.1),
        TypeError,
        r"Conv2d.backward: learning_rate is not accepted.*fastcnn.compat",
        "Conv2d-backward-learning_rate",
    ),
    p(
        lambda F: nn.Sequential(nn.ReLU(), "relu"),
        TypeError,
        r"Sequential: layer 1 must be a fastcnn.nn.Module, got str",
        "Sequential-layer-not-a-module",
    ),
    p(
        lambda F: nn.Flatten()(None),
        TypeError,
        r"Flatten: x must be a numpy.ndarray, got NoneType",
        "Flatten-forward-none",
    ),
    p(
        lambda F: _load({"0.weight": a(2, 1, 3, 3, dtype=np.float64)}),
        TypeError,
        r"Sequential.load_state_dict: state\['0.weight'\] must have dtype float32, got float64",
        "load_state_dict-float64-into-float32",
    ),
    p(
        lambda F: _load({"0.bias": None, 0: a(2)}),
        ValueError,
        r"Sequential.load_state_dict: .*missing keys \['0.bias'\], unexpected keys \[0\]",
        "load_state_dict-int-key",
    ),
    # load_state_dict: Sequential keys are 0.weight, 0.bias, 3.weight, 3.bias
    p(
        lambda F: _load({"0.bias": None}),
        ValueError,
        r"Sequential.load_state_dict: .*missing keys \['0.bias'\]",
        "load_state_dict-missing-key",
    ),
    p(
        lambda F: _load({"5.weight": a(3, 8)}),
        ValueError,
        r"Sequential.load_state_dict: .*unexpected keys \['5.weight'\]",
        "load_state_dict-extra-key",
    ),
    p(
        lambda F: _load({"0.weight": a(2, 1, 2, 2)}),
        ValueError,
        r"Sequential.load_state_dict: state\['0.weight'\] must have shape \(2, 1, 3, 3\)",
        "load_state_dict-wrong-shape",
    ),
    p(
        lambda F: _load({"3.weight": a(3, 8, dtype=np.int64)}),
        TypeError,
        r"Sequential.load_state_dict: state\['3.weight'\] must have dtype float32, got int64",
        "load_state_dict-int-dtype",
    ),
    p(
        lambda F: _load({"3.bias": a(3, dtype=np.complex64)}),
        TypeError,
        r"Sequential.load_state_dict: state\['3.bias'\] must have dtype float32, got complex64",
        "load_state_dict-complex-dtype",
    ),
    p(
        lambda F: _load({"3.bias": [0.0, 0.0, 0.0]}),
        TypeError,
        r"Sequential.load_state_dict: state\['3.bias'\] must be a numpy.ndarray, got list",
        "load_state_dict-list-value",
    ),
    p(
        lambda F: _net().load_state_dict([("0.weight", a(2, 1, 3, 3))]),
        TypeError,
        r"Sequential.load_state_dict: state must be a mapping, got list",
        "load_state_dict-not-a-mapping",
    ),
    p(
        lambda F: nn.BatchNorm2d(3).load_state_dict(
            {"weight": a(3), "bias": a(3), "running_mean": a(3)}
        ),
        ValueError,
        r"BatchNorm2d.load_state_dict: .*missing keys \['running_var'",
        "BatchNorm2d-load_state_dict-missing-buffer",
    ),
    # optimisers
    p(
        lambda F: fastcnn.optim.SGD([_Param(3)], lr=-0.1),
        ValueError,
        r"SGD: lr must be >= 0.0",
        "SGD-lr-negative",
    ),
    p(
        lambda F: fastcnn.optim.SGD([_Param(3)], lr="0.1"),
        TypeError,
        r"SGD: lr must be a real number",
        "SGD-lr-string",
    ),
    p(
        lambda F: fastcnn.optim.SGD([_Param(3)], lr=0.1, nesterov=True),
        ValueError,
        r"SGD: nesterov needs momentum > 0",
        "SGD-nesterov-without-momentum",
    ),
    p(
        lambda F: fastcnn.optim.SGD(a(3), lr=0.1),
        TypeError,
        r"SGD: params must be an iterable of parameters",
        "SGD-params-array",
    ),
    p(
        lambda F: fastcnn.optim.Adam([_Param(3)], betas=(1.0, 0.999)),
        ValueError,
        r"Adam: betas\[0\] must be < 1.0",
        "Adam-beta1-1",
    ),
    p(
        lambda F: fastcnn.optim.Adam([], lr=0.1),
        ValueError,
        r"Adam: params is an empty list",
        "Adam-params-empty",
    ),
    # the thread count, and saving (checked before anything is written: the folder does
    # not even exist)
    p(
        lambda F: fastcnn.set_num_threads(0),
        ValueError,
        r"set_num_threads: n must be in \[1, \d+\], got 0",
        "set_num_threads-0",
    ),
    p(
        lambda F: fastcnn.set_num_threads(2.0),
        TypeError,
        r"set_num_threads: n must be an int, got 2.0",
        "set_num_threads-float",
    ),
    p(
        lambda F: fastcnn.set_num_threads(True),
        TypeError,
        r"set_num_threads: n must be an int, got True",
        "set_num_threads-bool",
    ),
    p(
        lambda F: fastcnn.save(a(3), NO_DIR),
        TypeError,
        r"save: state must be a mapping, got ndarray",
        "save-state-array",
    ),
    p(
        lambda F: fastcnn.save({"model": {"w": [a(2), {3}]}}, NO_DIR),
        TypeError,
        r"save: 'model/w/1' has type set",
        "save-set-value",
    ),
    p(
        lambda F: fastcnn.save({"a": np.array([object()])}, NO_DIR),
        TypeError,
        r"save: 'a' is an object array, which needs pickle",
        "save-object-array",
    ),
    p(
        lambda F: fastcnn.save({1: a(3)}, NO_DIR),
        TypeError,
        r"save: keys must be str, got 1",
        "save-int-key",
    ),
    p(
        lambda F: fastcnn.save({"a": a(3)}, None),
        TypeError,
        r"save: path must be a str or os.PathLike, got NoneType",
        "save-path-None",
    ),
]

BAD_INPUTS = FUNCTIONAL_BAD + LAYER_BAD


# --- the tests -----------------------------------------------------------------------


def test_catalogue_covers_the_api():
    """At least 40 bad inputs; every functional op, every layer and loss, state dicts,
    the optimisers, the thread count and saving have their entries."""
    ids = [param.id for param in BAD_INPUTS]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)
    layers = [name for name in nn.__all__ if name not in ("Module", "Parameter")]
    others = ["load_state_dict", "SGD", "Adam", "set_num_threads", "save"]
    for name in [*fastcnn.functional.__all__, *layers, *others]:
        assert any(i.startswith(f"{name}-") for i in ids), name


@pytest.mark.parametrize(("call", "exc", "regex"), BAD_INPUTS)
def test_bad_input_is_rejected_before_any_kernel(call, exc, regex, tripwires):
    """The exact exception type, a message naming the argument, and no kernel call."""
    with pytest.raises(exc, match=regex):
        call(fastcnn.functional)
    assert tripwires == []


@pytest.mark.parametrize(("call", "exc", "regex"), FUNCTIONAL_BAD)
def test_reference_rejects_with_the_same_message(call, exc, regex):
    """The reference raises the same exception with the same message as the fast path."""
    with pytest.raises(exc, match=regex) as fast:
        call(fastcnn.functional)
    with pytest.raises(exc) as ref:
        call(fastcnn.reference)
    assert str(ref.value) == str(fast.value)


# Valid calls of ops that run kernels: with the tripwires armed each must trip, which
# shows the tripwires cover the paths the bad inputs above would have taken.
VALID_CALLS = [
    pytest.param(lambda: fastcnn.functional.conv2d(a(*X), a(*W), a(4)), id="conv2d"),
    pytest.param(
        lambda: fastcnn.functional.conv2d_grad_input(X, a(*W), a(*G)), id="conv2d_grad_input"
    ),
    pytest.param(
        lambda: fastcnn.functional.conv2d_grad_weight(a(*X), W, a(*G)), id="conv2d_grad_weight"
    ),
    pytest.param(lambda: fastcnn.functional.max_pool2d(a(*X), 2), id="max_pool2d"),
    pytest.param(
        lambda: fastcnn.functional.batch_norm2d(a(*X), a(3), a(3), a(3), a(3)), id="batch_norm2d"
    ),
    pytest.param(lambda: fastcnn.functional.relu(a(*X)), id="relu"),
    pytest.param(lambda: fastcnn.functional.sigmoid(a(*X)), id="sigmoid"),
    pytest.param(lambda: fastcnn.functional.softmax(a(4, 3)), id="softmax"),
    pytest.param(
        lambda: fastcnn.functional.cross_entropy(a(4, 3), ints(0, 1, 2, 0)), id="cross_entropy"
    ),
    pytest.param(lambda: nn.Conv2d(3, 4, 3, rng=rng())(a(*X)), id="Conv2d"),
]


@pytest.mark.parametrize("call", VALID_CALLS)
def test_tripwires_fire_on_valid_calls(call, tripwires):
    with pytest.raises(AssertionError, match="kernel .* ran"):
        call()
    assert tripwires


def test_rejected_batch_norm_leaves_running_stats_untouched():
    x = np.arange(96, dtype=np.float32).reshape(2, 3, 4, 4)
    mean, var = np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32)
    for bad in ({"momentum": 1.5}, {"eps": -1.0}, {"weight": a(2)}, {"training": "yes"}):
        kwargs = {"weight": None, "bias": None, "running_mean": mean, "running_var": var} | bad
        with pytest.raises((ValueError, TypeError)):
            fastcnn.functional.batch_norm2d(x, **kwargs)
    np.testing.assert_array_equal(mean, np.full(3, 0.5, np.float32))
    np.testing.assert_array_equal(var, np.full(3, 2.0, np.float32))


def test_failed_load_state_dict_changes_nothing():
    """A state dict with one bad entry is refused whole: the good entries are not loaded."""
    net = _net()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    state = {k: v + 1 for k, v in before.items()}
    state["3.bias"] = a(4)  # wrong shape, after the good "0.weight" in key order
    with pytest.raises(ValueError, match=r"3\.bias"):
        net.load_state_dict(state)
    after = net.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_rejected_forward_leaves_the_layer_untouched():
    bn = nn.BatchNorm2d(3)
    before = {k: v.copy() for k, v in bn.state_dict().items()}
    with pytest.raises(ValueError):
        bn(a(2, 4, 4, 4))
    for key, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
