"""The catalogue of bad input: every public op, layer, loss, state dict, optimiser, the
thread count and saving refuse it with a ValueError or TypeError whose message names the
argument, says what was expected and echoes what was given, before any kernel runs.

``CATALOGUE`` has one row per bad call, ``bad(id, call, exception, message)``:

- ``call`` is ``OP.name(arguments)`` for an op of both ``fastcnn.functional`` and
  ``fastcnn.reference`` (they share the checks of ``fastcnn._checks``; this catalogue is
  those checks' test). The row runs on both modules, each time on fresh copies of the
  arguments (read-only ones stay read-only): the same exception and message from both, and
  no argument changed. Any other ``call`` is a function of no arguments (layers, losses,
  state dicts, optimisers, the thread count, saving): the fast path only.
- ``message`` is literal text (not a regex) the message must contain: the whole message,
  except where that echoes a whole array.

"Before any kernel runs" is proved with tripwires: every function and Numba dispatcher
defined in ``fastcnn._kernels`` (and every name other modules imported from there) is
replaced by a function that records the call and raises. ``test_tripwires_fire_on_valid_calls``
shows the tripwires catch valid calls, so their silence on bad input means something.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import re
import sys
from typing import NamedTuple

import numpy as np
import pytest
from cases import MAX_THREADS

import fastcnn
import fastcnn.functional
import fastcnn.nn as nn
import fastcnn.optim
import fastcnn.reference

MODULES = [
    pytest.param(fastcnn.functional, id="functional"),
    pytest.param(fastcnn.reference, id="reference"),
]

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

    Covers the Python functions of ``fastcnn._kernels.*`` (the drivers, and
    ``launch.launch``, through which every kernel runs) and any name another fastcnn
    module imported from there. Numba dispatchers stay: they are run through
    ``launch.launch``, never called from Python.
    """
    for mod in _kernel_modules():
        # What kernels call stays (intrinsics, helpers): they resolve it as a global when
        # they compile, and a Python tripwire there would fail their compilation.
        inner = {
            name
            for obj in vars(mod).values()
            if hasattr(obj, "py_func")
            for name in obj.py_func.__code__.co_names
        }
        for attr, obj in list(vars(mod).items()):
            if (
                _origin(obj).startswith("fastcnn._kernels")
                and not hasattr(obj, "py_func")
                and attr not in inner
            ):
                monkeypatch.setattr(mod, attr, _tripwire(f"{mod.__name__}.{attr}", obj))
    for modname, mod in list(sys.modules.items()):
        if not modname.startswith("fastcnn.") or modname.startswith("fastcnn._kernels"):
            continue
        for attr, obj in list(vars(mod).items()):
            if _origin(obj).startswith("fastcnn._kernels") and not hasattr(obj, "py_func"):
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


# --- rows ----------------------------------------------------------------------------


class Call(NamedTuple):
    """A call of the op ``name`` of a functional module, not yet made."""

    name: str
    args: tuple
    kwargs: dict

    def __call__(self, module=fastcnn.functional):
        return getattr(module, self.name)(*_fresh(self.args), **_fresh(self.kwargs))


class _Ops:
    """``OP.conv2d(x, w, stride=0)`` is ``Call("conv2d", (x, w), {"stride": 0})``."""

    def __getattr__(self, name):
        assert name in fastcnn.functional.__all__ and name in fastcnn.reference.__all__, name
        return lambda *args, **kwargs: Call(name, args, kwargs)


OP = _Ops()


def _fresh(value):
    """A deep copy of ``value``; arrays keep their dtype, memory order and write flag."""
    if isinstance(value, np.ndarray):
        copy = value.copy(order="K")
        copy.flags.writeable = value.flags.writeable
        return copy
    if isinstance(value, (list, tuple)):
        return type(value)(_fresh(v) for v in value)
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    return value


def bad(id, call, exc, message):
    return pytest.param(call, exc, message, id=id)


def a(*shape, dtype=np.float32):
    """Ones of ``shape`` and ``dtype`` (values do not matter here, shapes and dtypes do)."""
    return np.ones(shape, dtype=dtype)


def a64(*shape):
    return a(*shape, dtype=np.float64)


def ints(*values):
    return np.array(values, dtype=np.int64)


def readonly(x):
    x.flags.writeable = False
    return x


V, T = ValueError, TypeError
X, W, G = a(2, 3, 6, 6), a(4, 3, 3, 3), a(2, 4, 4, 4)  # a valid conv: 6x6 -> 4x4
B, C3 = a(2, 3, 4, 4), a(3)  # batch norm: x and a per-channel vector
P, IDX = a(1, 1, 2, 2), ints(0, 1, 4, 5).reshape(1, 1, 2, 2)  # a 2x2 pool of a 4x4 plane
NO_DIR = "/nonexistent-fastcnn-dir/model.npz"  # save must refuse before touching it


def _net():
    """Conv2d(1, 2, 3) - ReLU - Flatten - Linear(8, 3) on (N, 1, 4, 4) input; its state
    dict's keys are 0.weight, 0.bias, 3.weight, 3.bias."""
    return nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3, rng=0))


def _load(changes, module=None):
    """Load into ``module`` (a fresh ``_net()`` by default) its own state dict plus one,
    with ``changes`` (None deletes a key); a refused state must be refused whole, the
    module left as it was."""
    module = _net() if module is None else module
    before = {k: v.copy() for k, v in module.state_dict().items()}
    state = {k: v + 1 for k, v in before.items()}
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    try:
        module.load_state_dict(state)
    finally:
        after = module.state_dict()
        assert after.keys() == before.keys()
        for key in before:
            np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def _backward_after_forward(layer, x, grad_out, *learning_rate):
    with kernels_allowed():
        layer(x)
    layer.backward(grad_out, *learning_rate)


class _Param:
    """The least an optimiser needs: ``.data`` and ``.grad`` arrays."""

    def __init__(self, *shape):
        self.data, self.grad = a(*shape), a(*shape)


# A layer row builds the layer and, mostly, feeds it otherwise-valid input, so a bad
# constructor argument may be rejected by the constructor or by the first forward; a row
# without input must be rejected by the constructor.
# fmt: off
CATALOGUE = [
    # --- conv2d ----------------------------------------------------------------------
    bad("conv2d-x-rank3", OP.conv2d(a(3, 6, 6), W),
        V, "conv2d: x must be a 4-D array (N, C, H, W), got shape (3, 6, 6)"),
    bad("conv2d-x-rank5", OP.conv2d(a(1, 2, 3, 6, 6), W),
        V, "conv2d: x must be a 4-D array (N, C, H, W), got shape (1, 2, 3, 6, 6)"),
    bad("conv2d-x-int32", OP.conv2d(a(2, 3, 6, 6, dtype=np.int32), W),
        T, "conv2d: x must have dtype float32 or float64, got int32"),
    bad("conv2d-x-complex", OP.conv2d(a(2, 3, 6, 6, dtype=np.complex64), W),
        T, "conv2d: x must have dtype float32 or float64, got complex64"),
    bad("conv2d-x-bool", OP.conv2d(a(2, 3, 6, 6, dtype=np.bool_), W),
        T, "conv2d: x must have dtype float32 or float64, got bool"),
    bad("conv2d-x-float16", OP.conv2d(a(2, 3, 6, 6, dtype=np.float16), W),
        T, "conv2d: x must have dtype float32 or float64, got float16"),
    bad("conv2d-x-big-endian", OP.conv2d(a(2, 3, 6, 6, dtype=">f4"), W),
        T, "conv2d: x must have dtype float32 or float64, got >f4"),
    bad("conv2d-x-list", OP.conv2d(X.tolist(), W),
        T, "conv2d: x must be a numpy.ndarray, got list"),
    bad("conv2d-x-none", OP.conv2d(None, W),
        T, "conv2d: x must be a numpy.ndarray, got NoneType"),
    bad("conv2d-weight-none", OP.conv2d(X, None),
        T, "conv2d: weight must be a numpy.ndarray, got NoneType"),
    bad("conv2d-weight-rank2", OP.conv2d(X, a(4, 27)),
        V, "conv2d: weight must be a 4-D array (out_channels, in_channels, kh, kw), got shape "
           "(4, 27)"),
    bad("conv2d-weight-complex", OP.conv2d(X, W.astype(np.complex128)),
        T, "conv2d: weight must have dtype float32 or float64, got complex128"),
    bad("conv2d-weight-float64-mixed", OP.conv2d(X, a64(4, 3, 3, 3)),
        T, "conv2d: arrays must share one dtype (float32 or float64), got x=float32, "
           "weight=float64"),
    bad("conv2d-channel-mismatch", OP.conv2d(X, a(4, 2, 3, 3)),
        V, "conv2d: weight has 2 input channels but the input has 3 (input shape "
           "(2, 3, 6, 6), weight shape (4, 2, 3, 3))"),
    bad("conv2d-kernel-too-big", OP.conv2d(a(2, 3, 4, 4), a(4, 3, 5, 5)),
        V, "conv2d: kernel (5, 5) with dilation (1, 1) is larger than the padded input (4, 4)"),
    bad("conv2d-dilated-kernel-too-big", OP.conv2d(X, W, dilation=3),
        V, "conv2d: kernel (3, 3) with dilation (3, 3) is larger than the padded input (6, 6)"),
    bad("conv2d-weight-zero-out-channels", OP.conv2d(X, a(0, 3, 3, 3)),
        V, "conv2d: weight must have non-zero sizes, got shape (0, 3, 3, 3)"),
    bad("conv2d-bias-length", OP.conv2d(X, W, a(3)),
        V, "conv2d: bias must have shape (4,), got (3,)"),
    bad("conv2d-bias-rank2", OP.conv2d(X, W, a(4, 1)),
        V, "conv2d: bias must have shape (4,), got (4, 1)"),
    bad("conv2d-bias-int", OP.conv2d(X, W, a(4, dtype=np.int64)),
        T, "conv2d: bias must have dtype float32 or float64, got int64"),
    bad("conv2d-bias-float64-mixed", OP.conv2d(X, W, a64(4)),
        T, "conv2d: arrays must share one dtype (float32 or float64), got x=float32, "
           "weight=float32, bias=float64"),
    bad("conv2d-bias-list", OP.conv2d(X, W, [0.0] * 4),
        T, "conv2d: bias must be a numpy.ndarray, got list"),
    bad("conv2d-stride-0", OP.conv2d(X, W, stride=0),
        V, "conv2d: stride must be >= 1, got 0"),
    bad("conv2d-stride-negative", OP.conv2d(X, W, stride=-2),
        V, "conv2d: stride must be >= 1, got -2"),
    bad("conv2d-stride-pair-0", OP.conv2d(X, W, stride=(1, 0)),
        V, "conv2d: stride must be >= 1, got (1, 0)"),
    bad("conv2d-stride-pair-negative", OP.conv2d(X, W, stride=(1, -2)),
        V, "conv2d: stride must be >= 1, got (1, -2)"),
    bad("conv2d-stride-bool", OP.conv2d(X, W, stride=True),
        T, "conv2d: stride must be an int or a pair of ints, got True"),
    bad("conv2d-stride-float", OP.conv2d(X, W, stride=1.5),
        T, "conv2d: stride must be an int or a pair of ints, got 1.5"),
    bad("conv2d-stride-integral-float", OP.conv2d(X, W, stride=1.0),
        T, "conv2d: stride must be an int or a pair of ints, got 1.0"),
    bad("conv2d-stride-3-tuple", OP.conv2d(X, W, stride=(1, 1, 1)),
        T, "conv2d: stride must be an int or a pair of ints, got (1, 1, 1)"),
    bad("conv2d-stride-string", OP.conv2d(X, W, stride="1"),
        T, "conv2d: stride must be an int or a pair of ints, got '1'"),
    bad("conv2d-stride-none", OP.conv2d(X, W, stride=None),
        T, "conv2d: stride must be an int or a pair of ints, got None"),
    bad("conv2d-padding-negative", OP.conv2d(X, W, padding=-1),
        V, "conv2d: padding must be >= 0, got -1"),
    bad("conv2d-padding-pair-negative", OP.conv2d(X, W, padding=(1, -1)),
        V, "conv2d: padding must be >= 0, got (1, -1)"),
    bad("conv2d-padding-float", OP.conv2d(X, W, padding=0.5),
        T, "conv2d: padding must be an int or a pair of ints, got 0.5"),
    bad("conv2d-padding-string", OP.conv2d(X, W, padding="same"),
        T, "conv2d: padding must be an int or a pair of ints, got 'same'"),
    bad("conv2d-padding-3-tuple", OP.conv2d(X, W, padding=(1, 1, 1)),
        T, "conv2d: padding must be an int or a pair of ints, got (1, 1, 1)"),
    bad("conv2d-dilation-0", OP.conv2d(X, W, dilation=0),
        V, "conv2d: dilation must be >= 1, got 0"),
    bad("conv2d-dilation-pair-negative", OP.conv2d(X, W, dilation=(2, -1)),
        V, "conv2d: dilation must be >= 1, got (2, -1)"),
    bad("conv2d-dilation-true", OP.conv2d(X, W, dilation=True),
        T, "conv2d: dilation must be an int or a pair of ints, got True"),
    bad("conv2d-dilation-false", OP.conv2d(X, W, dilation=False),
        T, "conv2d: dilation must be an int or a pair of ints, got False"),
    bad("conv2d-dilation-float-pair", OP.conv2d(X, W, dilation=(1.0, 1.0)),
        T, "conv2d: dilation must be an int or a pair of ints, got (1.0, 1.0)"),
    # --- conv2d_grad_input -----------------------------------------------------------
    bad("conv2d_grad_input-shape-3-entries", OP.conv2d_grad_input((2, 3, 6), W, G),
        V, "conv2d_grad_input: input_shape must be 4 non-negative ints, got (2, 3, 6)"),
    bad("conv2d_grad_input-shape-negative", OP.conv2d_grad_input((2, 3, -6, 6), W, G),
        V, "conv2d_grad_input: input_shape must be 4 non-negative ints, got (2, 3, -6, 6)"),
    bad("conv2d_grad_input-shape-float", OP.conv2d_grad_input((2.0, 3, 6, 6), W, G),
        T, "conv2d_grad_input: input_shape must be a tuple of 4 ints, got (2.0, 3, 6, 6)"),
    bad("conv2d_grad_input-shape-none", OP.conv2d_grad_input(None, W, G),
        T, "conv2d_grad_input: input_shape must be a tuple of 4 ints, got None"),
    bad("conv2d_grad_input-shape-is-array", OP.conv2d_grad_input(X, W, G),
        T, "conv2d_grad_input: input_shape must be a tuple of 4 ints, got array(["),
    bad("conv2d_grad_input-channel-mismatch", OP.conv2d_grad_input((2, 2, 6, 6), W, G),
        V, "conv2d_grad_input: weight has 3 input channels but the input has 2 (input shape "
           "(2, 2, 6, 6), weight shape (4, 3, 3, 3))"),
    bad("conv2d_grad_input-grad_out-shape", OP.conv2d_grad_input(X.shape, W, a(2, 4, 3, 3)),
        V, "conv2d_grad_input: grad_out must have shape (2, 4, 4, 4), got (2, 4, 3, 3)"),
    bad("conv2d_grad_input-grad_out-float64-mixed", OP.conv2d_grad_input(X.shape, W, a64(*G.shape)),
        T, "conv2d_grad_input: arrays must share one dtype (float32 or float64), got "
           "weight=float32, grad_out=float64"),
    bad("conv2d_grad_input-grad_out-none", OP.conv2d_grad_input(X.shape, W, None),
        T, "conv2d_grad_input: grad_out must be a numpy.ndarray, got NoneType"),
    bad("conv2d_grad_input-stride-0", OP.conv2d_grad_input(X.shape, W, G, stride=0),
        V, "conv2d_grad_input: stride must be >= 1, got 0"),
    # --- conv2d_grad_weight ----------------------------------------------------------
    bad("conv2d_grad_weight-channel-mismatch", OP.conv2d_grad_weight(X, (4, 2, 3, 3), G),
        V, "conv2d_grad_weight: weight has 2 input channels but the input has 3 (input shape "
           "(2, 3, 6, 6), weight shape (4, 2, 3, 3))"),
    bad("conv2d_grad_weight-channels-more", OP.conv2d_grad_weight(X, (4, 5, 3, 3), G),
        V, "conv2d_grad_weight: weight has 5 input channels but the input has 3 (input shape "
           "(2, 3, 6, 6), weight shape (4, 5, 3, 3))"),
    bad("conv2d_grad_weight-shape-5-entries", OP.conv2d_grad_weight(X, (4, 3, 3, 3, 1), G),
        V, "conv2d_grad_weight: weight_shape must be 4 non-negative ints, got (4, 3, 3, 3, 1)"),
    bad("conv2d_grad_weight-shape-negative", OP.conv2d_grad_weight(X, (4, 3, -3, 3), G),
        V, "conv2d_grad_weight: weight_shape must be 4 non-negative ints, got (4, 3, -3, 3)"),
    bad("conv2d_grad_weight-shape-string-entry", OP.conv2d_grad_weight(X, ("4", 3, 3, 3), G),
        T, "conv2d_grad_weight: weight_shape must be a tuple of 4 ints, got ('4', 3, 3, 3)"),
    bad("conv2d_grad_weight-grad_out-rank3", OP.conv2d_grad_weight(X, W.shape, a(4, 4, 4)),
        V, "conv2d_grad_weight: grad_out must be a 4-D array, got shape (4, 4, 4)"),
    bad("conv2d_grad_weight-grad_out-shape", OP.conv2d_grad_weight(X, W.shape, a(2, 5, 4, 4)),
        V, "conv2d_grad_weight: grad_out must have shape (2, 4, 4, 4), got (2, 5, 4, 4)"),
    bad("conv2d_grad_weight-x-int16", OP.conv2d_grad_weight(X.astype(np.int16), W.shape, G),
        T, "conv2d_grad_weight: x must have dtype float32 or float64, got int16"),
    bad("conv2d_grad_weight-padding-3-tuple",
        OP.conv2d_grad_weight(X, W.shape, G, padding=(0, 0, 0)),
        T, "conv2d_grad_weight: padding must be an int or a pair of ints, got (0, 0, 0)"),
    # --- conv2d_grad_bias ------------------------------------------------------------
    bad("conv2d_grad_bias-rank2", OP.conv2d_grad_bias(a(2, 4)),
        V, "conv2d_grad_bias: grad_out must be a 4-D array (N, out_channels, OH, OW), got "
           "shape (2, 4)"),
    bad("conv2d_grad_bias-int", OP.conv2d_grad_bias(G.astype(np.int64)),
        T, "conv2d_grad_bias: grad_out must have dtype float32 or float64, got int64"),
    bad("conv2d_grad_bias-list", OP.conv2d_grad_bias(G.tolist()),
        T, "conv2d_grad_bias: grad_out must be a numpy.ndarray, got list"),
    bad("conv2d_grad_bias-none", OP.conv2d_grad_bias(None),
        T, "conv2d_grad_bias: grad_out must be a numpy.ndarray, got NoneType"),
    # --- max_pool2d ------------------------------------------------------------------
    bad("max_pool2d-x-rank3", OP.max_pool2d(a(3, 6, 6), 2),
        V, "max_pool2d: x must be a 4-D array (N, C, H, W), got shape (3, 6, 6)"),
    bad("max_pool2d-x-uint8", OP.max_pool2d(X.astype(np.uint8), 2),
        T, "max_pool2d: x must have dtype float32 or float64, got uint8"),
    bad("max_pool2d-kernel-0", OP.max_pool2d(X, 0),
        V, "max_pool2d: kernel_size must be >= 1, got 0"),
    bad("max_pool2d-kernel-negative", OP.max_pool2d(X, -2),
        V, "max_pool2d: kernel_size must be >= 1, got -2"),
    bad("max_pool2d-kernel-string", OP.max_pool2d(X, "2"),
        T, "max_pool2d: kernel_size must be an int or a pair of ints, got '2'"),
    bad("max_pool2d-kernel-float", OP.max_pool2d(X, 2.0),
        T, "max_pool2d: kernel_size must be an int or a pair of ints, got 2.0"),
    bad("max_pool2d-kernel-3-tuple", OP.max_pool2d(X, (2, 2, 2)),
        T, "max_pool2d: kernel_size must be an int or a pair of ints, got (2, 2, 2)"),
    bad("max_pool2d-kernel-bool", OP.max_pool2d(X, True),
        T, "max_pool2d: kernel_size must be an int or a pair of ints, got True"),
    bad("max_pool2d-kernel-none", OP.max_pool2d(X, None),
        T, "max_pool2d: kernel_size must be an int or a pair of ints, got None"),
    bad("max_pool2d-kernel-too-big", OP.max_pool2d(a(1, 1, 3, 3), 4),
        V, "max_pool2d: kernel_size (4, 4) is larger than the padded input (3, 3)"),
    bad("max_pool2d-stride-0", OP.max_pool2d(X, 2, stride=0),
        V, "max_pool2d: stride must be >= 1, got 0"),
    bad("max_pool2d-stride-pair-negative", OP.max_pool2d(X, 2, stride=(2, -1)),
        V, "max_pool2d: stride must be >= 1, got (2, -1)"),
    bad("max_pool2d-stride-float", OP.max_pool2d(X, 2, stride=1.5),
        T, "max_pool2d: stride must be an int or a pair of ints, got 1.5"),
    bad("max_pool2d-padding-negative", OP.max_pool2d(X, 2, padding=-1),
        V, "max_pool2d: padding must be >= 0, got -1"),
    bad("max_pool2d-padding-over-half", OP.max_pool2d(X, 2, padding=2),
        V, "max_pool2d: padding must be at most half of kernel_size (2, 2), got (2, 2)"),
    bad("max_pool2d-padding-over-half-pair", OP.max_pool2d(X, (2, 4), padding=(1, 3)),
        V, "max_pool2d: padding must be at most half of kernel_size (2, 4), got (1, 3)"),
    # --- max_pool2d_backward: P (1, 1, 2, 2) and indices IDX of a 4x4 plane -----------
    bad("max_pool2d_backward-index-too-big",
        OP.max_pool2d_backward(P, ints(0, 1, 4, 16).reshape(1, 1, 2, 2), (1, 1, 4, 4)),
        V, "max_pool2d_backward: indices must lie in [0, 16) for input planes of 4x4, got "
           "values in [0, 16]"),
    bad("max_pool2d_backward-index-negative",
        OP.max_pool2d_backward(P, ints(0, -1, 4, 5).reshape(1, 1, 2, 2), (1, 1, 4, 4)),
        V, "max_pool2d_backward: indices must lie in [0, 16) for input planes of 4x4, got "
           "values in [-1, 5]"),
    bad("max_pool2d_backward-index-negative-big-endian",
        OP.max_pool2d_backward(P, ints(0, -1, 4, 5).reshape(1, 1, 2, 2).astype(">i4"),
                               (1, 1, 4, 4)),
        V, "max_pool2d_backward: indices must lie in [0, 16) for input planes of 4x4, got "
           "values in [-1, 5]"),
    bad("max_pool2d_backward-indices-float", OP.max_pool2d_backward(P, a(1, 1, 2, 2), (1, 1, 4, 4)),
        T, "max_pool2d_backward: indices must have an integer dtype, got float32"),
    bad("max_pool2d_backward-indices-bool",
        OP.max_pool2d_backward(P, a(1, 1, 2, 2, dtype=np.bool_), (1, 1, 4, 4)),
        T, "max_pool2d_backward: indices must have an integer dtype, got bool"),
    bad("max_pool2d_backward-indices-list",
        OP.max_pool2d_backward(P, [[[[0, 1], [4, 5]]]], (1, 1, 4, 4)),
        T, "max_pool2d_backward: indices must be a numpy.ndarray, got list"),
    bad("max_pool2d_backward-indices-shape",
        OP.max_pool2d_backward(P, ints(0, 1, 4).reshape(1, 1, 1, 3), (1, 1, 4, 4)),
        V, "max_pool2d_backward: indices must have the shape of grad_out (1, 1, 2, 2), got "
           "(1, 1, 1, 3)"),
    bad("max_pool2d_backward-batch-mismatch", OP.max_pool2d_backward(P, IDX, (2, 1, 4, 4)),
        V, "max_pool2d_backward: input_shape (2, 1, 4, 4) does not match grad_out "
           "(1, 1, 2, 2) in batch and channels"),
    bad("max_pool2d_backward-grad_out-batch-mismatch",
        OP.max_pool2d_backward(a(2, 1, 2, 2), np.zeros((2, 1, 2, 2), np.int64), (1, 1, 4, 4)),
        V, "max_pool2d_backward: input_shape (1, 1, 4, 4) does not match grad_out "
           "(2, 1, 2, 2) in batch and channels"),
    bad("max_pool2d_backward-shape-3-entries", OP.max_pool2d_backward(P, IDX, (1, 4, 4)),
        V, "max_pool2d_backward: input_shape must be 4 non-negative ints, got (1, 4, 4)"),
    bad("max_pool2d_backward-grad_out-int",
        OP.max_pool2d_backward(P.astype(np.int32), IDX, (1, 1, 4, 4)),
        T, "max_pool2d_backward: grad_out must have dtype float32 or float64, got int32"),
    # --- batch_norm2d: B (2, 3, 4, 4) ------------------------------------------------
    bad("batch_norm2d-x-rank3", OP.batch_norm2d(a(2, 3, 16), None, None, None, None),
        V, "batch_norm2d: x must be a 4-D array (N, C, H, W), got shape (2, 3, 16)"),
    bad("batch_norm2d-x-complex", OP.batch_norm2d(B.astype(np.complex128), None, None, None, None),
        T, "batch_norm2d: x must have dtype float32 or float64, got complex128"),
    bad("batch_norm2d-weight-length", OP.batch_norm2d(B, a(2), C3, None, None),
        V, "batch_norm2d: weight must have shape (3,), got (2,)"),
    bad("batch_norm2d-bias-length", OP.batch_norm2d(B, C3, a(4), None, None),
        V, "batch_norm2d: bias must have shape (3,), got (4,)"),
    bad("batch_norm2d-running_mean-length", OP.batch_norm2d(B, None, None, a(1), C3),
        V, "batch_norm2d: running_mean must have shape (3,), got (1,)"),
    bad("batch_norm2d-running_var-length", OP.batch_norm2d(B, None, None, C3, a(2)),
        V, "batch_norm2d: running_var must have shape (3,), got (2,)"),
    bad("batch_norm2d-running_var-rank2", OP.batch_norm2d(B, None, None, C3, a(3, 1)),
        V, "batch_norm2d: running_var must have shape (3,), got (3, 1)"),
    bad("batch_norm2d-running_mean-alone", OP.batch_norm2d(B, None, None, C3, None),
        V, "batch_norm2d: give both running_mean and running_var, or neither"),
    bad("batch_norm2d-running_mean-readonly", OP.batch_norm2d(B, None, None, readonly(a(3)), C3),
        V, "batch_norm2d: running_mean must be writeable: training updates it in place"),
    bad("batch_norm2d-running_var-float64-mixed", OP.batch_norm2d(B, C3, C3, C3, a64(3)),
        T, "batch_norm2d: arrays must share one dtype (float32 or float64), got x=float32, "
           "weight=float32, bias=float32, running_mean=float32, running_var=float64"),
    bad("batch_norm2d-running-stats-float64-mixed",
        OP.batch_norm2d(B, None, None, a64(3), a64(3)),
        T, "batch_norm2d: arrays must share one dtype (float32 or float64), got x=float32, "
           "running_mean=float64, running_var=float64"),
    bad("batch_norm2d-training-string", OP.batch_norm2d(B, None, None, None, None, training="yes"),
        T, "batch_norm2d: training must be a bool, got 'yes'"),
    bad("batch_norm2d-training-int", OP.batch_norm2d(B, None, None, None, None, training=1),
        T, "batch_norm2d: training must be a bool, got 1"),
    bad("batch_norm2d-momentum-over-1", OP.batch_norm2d(B, None, None, C3, C3, momentum=1.5),
        V, "batch_norm2d: momentum must be <= 1.0, got 1.5"),
    bad("batch_norm2d-momentum-negative", OP.batch_norm2d(B, None, None, C3, C3, momentum=-0.1),
        V, "batch_norm2d: momentum must be >= 0.0, got -0.1"),
    bad("batch_norm2d-momentum-none", OP.batch_norm2d(B, None, None, C3, C3, momentum=None),
        T, "batch_norm2d: momentum must be a real number, got None"),
    bad("batch_norm2d-eps-0", OP.batch_norm2d(B, None, None, None, None, eps=0),
        V, "batch_norm2d: eps must be > 0.0, got 0.0"),
    bad("batch_norm2d-eps-nan", OP.batch_norm2d(B, None, None, None, None, eps=float("nan")),
        V, "batch_norm2d: eps must be finite, got nan"),
    bad("batch_norm2d-eps-string", OP.batch_norm2d(B, None, None, None, None, eps="1e-5"),
        T, "batch_norm2d: eps must be a real number, got '1e-5'"),
    bad("batch_norm2d-one-value-per-channel",
        OP.batch_norm2d(a(1, 3, 1, 1), None, None, None, None),
        V, "batch_norm2d: training needs more than one value per channel, got input shape "
           "(1, 3, 1, 1)"),
    bad("batch_norm2d-train-empty-batch",
        OP.batch_norm2d(a(0, 3, 4, 4), None, None, None, None),
        V, "batch_norm2d: training needs more than one value per channel, got input shape "
           "(0, 3, 4, 4)"),
    bad("batch_norm2d-eval-without-stats",
        OP.batch_norm2d(B, None, None, None, None, training=False),
        V, "batch_norm2d: evaluation (training=False) needs running_mean and running_var"),
    # --- batch_norm2d_backward -------------------------------------------------------
    bad("batch_norm2d_backward-grad_out-shape",
        OP.batch_norm2d_backward(a(2, 3, 4, 5), B, C3, C3, C3),
        V, "batch_norm2d_backward: grad_out must have the shape of x (2, 3, 4, 4), got "
           "(2, 3, 4, 5)"),
    bad("batch_norm2d_backward-weight-length", OP.batch_norm2d_backward(B, B, a(2), C3, C3),
        V, "batch_norm2d_backward: weight must have shape (3,), got (2,)"),
    bad("batch_norm2d_backward-save_mean-length", OP.batch_norm2d_backward(B, B, C3, a(4), C3),
        V, "batch_norm2d_backward: save_mean must have shape (3,), got (4,)"),
    bad("batch_norm2d_backward-save_mean-none", OP.batch_norm2d_backward(B, B, None, None, C3),
        T, "batch_norm2d_backward: save_mean must be a numpy.ndarray, got NoneType"),
    bad("batch_norm2d_backward-save_invstd-none", OP.batch_norm2d_backward(B, B, C3, C3, None),
        T, "batch_norm2d_backward: save_invstd must be a numpy.ndarray, got NoneType"),
    # --- relu, relu_backward, sigmoid, sigmoid_backward ------------------------------
    bad("relu-int", OP.relu(a(3, 4, dtype=np.int64)),
        T, "relu: x must have dtype float32 or float64, got int64"),
    bad("relu-half", OP.relu(a(3, dtype=np.float16)),
        T, "relu: x must have dtype float32 or float64, got float16"),
    bad("relu-list", OP.relu([1.0, -1.0]),
        T, "relu: x must be a numpy.ndarray, got list"),
    bad("relu-none", OP.relu(None),
        T, "relu: x must be a numpy.ndarray, got NoneType"),
    bad("relu-float", OP.relu(3.0),
        T, "relu: x must be a numpy.ndarray, got float"),
    bad("relu-numpy-scalar", OP.relu(np.float32(1.0)),
        T, "relu: x must be a numpy.ndarray, got float32"),
    bad("relu_backward-shape", OP.relu_backward(a(3, 4), a(4, 3)),
        V, "relu_backward: grad_out must have the shape of x (4, 3), got (3, 4)"),
    bad("relu_backward-dtype-mixed", OP.relu_backward(a64(3, 4), a(3, 4)),
        T, "relu_backward: arrays must share one dtype (float32 or float64), got "
           "grad_out=float64, x=float32"),
    bad("sigmoid-bool", OP.sigmoid(a(3, dtype=np.bool_)),
        T, "sigmoid: x must have dtype float32 or float64, got bool"),
    bad("sigmoid-float16", OP.sigmoid(a(3, dtype=np.float16)),
        T, "sigmoid: x must have dtype float32 or float64, got float16"),
    bad("sigmoid-none", OP.sigmoid(None),
        T, "sigmoid: x must be a numpy.ndarray, got NoneType"),
    bad("sigmoid_backward-shape", OP.sigmoid_backward(a(3, 4), a(3, 5)),
        V, "sigmoid_backward: grad_out must have the shape of y (3, 5), got (3, 4)"),
    bad("sigmoid_backward-shape-same-size", OP.sigmoid_backward(a(2, 2), a(4)),
        V, "sigmoid_backward: grad_out must have the shape of y (4,), got (2, 2)"),
    bad("sigmoid_backward-y-none", OP.sigmoid_backward(a(3, 4), None),
        T, "sigmoid_backward: y must be a numpy.ndarray, got NoneType"),
    # --- linear ----------------------------------------------------------------------
    bad("linear-x-list", OP.linear([1.0, 2.0], a(3, 2)),
        T, "linear: x must be a numpy.ndarray, got list"),
    bad("linear-x-int", OP.linear(a(4, 6, dtype=np.int32), a(3, 6)),
        T, "linear: x must have dtype float32 or float64, got int32"),
    bad("linear-x-0d", OP.linear(np.array(1.0, np.float32), a(3, 1)),
        V, "linear: x must have shape (..., 1) to match weight (3, 1), got ()"),
    bad("linear-features-mismatch", OP.linear(a(4, 5), a(3, 6)),
        V, "linear: x must have shape (..., 6) to match weight (3, 6), got (4, 5)"),
    bad("linear-features-too-many", OP.linear(a(2, 4), a(5, 3)),
        V, "linear: x must have shape (..., 3) to match weight (5, 3), got (2, 4)"),
    bad("linear-weight-rank1", OP.linear(a(2, 3), a(3)),
        V, "linear: weight must be a 2-D array (out_features, in_features), got shape (3,)"),
    bad("linear-weight-rank3", OP.linear(a(4, 6), a(3, 6, 1)),
        V, "linear: weight must be a 2-D array (out_features, in_features), got shape "
           "(3, 6, 1)"),
    bad("linear-weight-float64-mixed", OP.linear(a(2, 3), a64(4, 3)),
        T, "linear: arrays must share one dtype (float32 or float64), got x=float32, "
           "weight=float64"),
    bad("linear-bias-length", OP.linear(a(4, 6), a(3, 6), a(4)),
        V, "linear: bias must have shape (3,), got (4,)"),
    bad("linear-bias-rank2", OP.linear(a(2, 3), a(5, 3), a(5, 1)),
        V, "linear: bias must have shape (5,), got (5, 1)"),
    bad("linear-bias-float64-mixed", OP.linear(a(4, 6), a(3, 6), a64(3)),
        T, "linear: arrays must share one dtype (float32 or float64), got x=float32, "
           "weight=float32, bias=float64"),
    # --- softmax, log_softmax --------------------------------------------------------
    bad("softmax-x-0d", OP.softmax(np.array(1.0)),
        V, "softmax: x must have at least one dimension, got a 0-D array"),
    bad("softmax-axis-out-of-range", OP.softmax(a(3, 4), axis=2),
        V, "softmax: axis must be in [-2, 1], got 2"),
    bad("softmax-axis-float", OP.softmax(a(3, 4), axis=1.0),
        T, "softmax: axis must be an int, got 1.0"),
    bad("softmax-axis-none", OP.softmax(a(3, 4), axis=None),
        T, "softmax: axis must be an int, got None"),
    bad("log_softmax-axis-negative", OP.log_softmax(a(3, 4), axis=-3),
        V, "log_softmax: axis must be in [-2, 1], got -3"),
    bad("log_softmax-axis-float", OP.log_softmax(a(2, 3), axis=1.0),
        T, "log_softmax: axis must be an int, got 1.0"),
    bad("log_softmax-x-bool", OP.log_softmax(a(3, 4, dtype=np.bool_)),
        T, "log_softmax: x must have dtype float32 or float64, got bool"),
    # --- cross_entropy: logits (4, 3) ------------------------------------------------
    bad("cross_entropy-logits-rank1", OP.cross_entropy(a(12), ints(0)),
        V, "cross_entropy: logits must be a 2-D array (N, C), got shape (12,)"),
    bad("cross_entropy-logits-int", OP.cross_entropy(a(4, 3, dtype=np.int64), ints(0, 1, 2, 0)),
        T, "cross_entropy: logits must have dtype float32 or float64, got int64"),
    bad("cross_entropy-empty-batch", OP.cross_entropy(a(0, 3), ints()),
        V, "cross_entropy: logits must have at least one row and one class, got (0, 3)"),
    bad("cross_entropy-target-too-big", OP.cross_entropy(a(4, 3), ints(0, 1, 2, 3)),
        V, "cross_entropy: targets must be class indices in [0, 3), got values in [0, 3]"),
    bad("cross_entropy-target-negative", OP.cross_entropy(a(4, 3), ints(0, -1, 2, 1)),
        V, "cross_entropy: targets must be class indices in [0, 3), got values in [-1, 2]"),
    bad("cross_entropy-target-negative-int8",
        OP.cross_entropy(a(4, 3), ints(0, -128, 2, 1).astype(np.int8)),
        V, "cross_entropy: targets must be class indices in [0, 3), got values in [-128, 2]"),
    bad("cross_entropy-target-negative-big-endian",
        OP.cross_entropy(a(4, 3), ints(0, -1, 2, 1).astype(">i4")),
        V, "cross_entropy: targets must be class indices in [0, 3), got values in [-1, 2]"),
    bad("cross_entropy-target-too-big-uint16",
        OP.cross_entropy(a(4, 3), ints(0, 1, 2, 3).astype(">u2")),
        V, "cross_entropy: targets must be class indices in [0, 3), got values in [0, 3]"),
    bad("cross_entropy-targets-float", OP.cross_entropy(a(4, 3), a(4)),
        T, "cross_entropy: targets must have an integer dtype, got float32"),
    bad("cross_entropy-targets-bool", OP.cross_entropy(a(4, 3), a(4, dtype=np.bool_)),
        T, "cross_entropy: targets must have an integer dtype, got bool"),
    bad("cross_entropy-targets-list", OP.cross_entropy(a(4, 3), [0, 1, 2, 0]),
        T, "cross_entropy: targets must be a numpy.ndarray, got list"),
    bad("cross_entropy-targets-column", OP.cross_entropy(a(4, 3), ints(0, 1, 2, 0).reshape(4, 1)),
        V, "cross_entropy: targets must have shape (4,), got (4, 1)"),
    bad("cross_entropy-targets-length", OP.cross_entropy(a(4, 3), ints(0, 1, 2)),
        V, "cross_entropy: targets must have shape (4,), got (3,)"),
    # --- binary_cross_entropy --------------------------------------------------------
    bad("binary_cross_entropy-probs-list", OP.binary_cross_entropy([0.5] * 4, a(4)),
        T, "binary_cross_entropy: probs must be a numpy.ndarray, got list"),
    bad("binary_cross_entropy-targets-int", OP.binary_cross_entropy(a(4), a(4, dtype=np.int64)),
        T, "binary_cross_entropy: targets must have dtype float32 or float64, got int64"),
    bad("binary_cross_entropy-float64-mixed", OP.binary_cross_entropy(a(3), a64(3)),
        T, "binary_cross_entropy: arrays must share one dtype (float32 or float64), got "
           "probs=float32, targets=float64"),
    bad("binary_cross_entropy-shape", OP.binary_cross_entropy(a(4, 3), a(3, 4)),
        V, "binary_cross_entropy: targets must have the shape of probs (4, 3), got (3, 4)"),
    bad("binary_cross_entropy-empty", OP.binary_cross_entropy(a(0), a(0)),
        V, "binary_cross_entropy: probs must not be empty, got shape (0,)"),
    bad("binary_cross_entropy-probs-over-1",
        OP.binary_cross_entropy(np.array([0.5, 1.5], np.float32), a(2)),
        V, "binary_cross_entropy: probs must lie in [0, 1], got values in [0.5, 1.5]"),
    bad("binary_cross_entropy-probs-over-1-beside-nan",
        OP.binary_cross_entropy(np.array([np.nan, 1.5, 0.5], np.float32), a(3)),
        V, "binary_cross_entropy: probs must lie in [0, 1], got values in [0.5, 1.5]"),
    bad("binary_cross_entropy-targets-negative",
        OP.binary_cross_entropy(a(4), np.full(4, -0.5, np.float32)),
        V, "binary_cross_entropy: targets must lie in [0, 1], got values in [-0.5, -0.5]"),
    bad("binary_cross_entropy-eps-too-big", OP.binary_cross_entropy(a(4), a(4), eps=0.6),
        V, "binary_cross_entropy: eps must be <= 0.5, got 0.6"),
    bad("binary_cross_entropy-eps-negative", OP.binary_cross_entropy(a(4), a(4), eps=-1e-7),
        V, "binary_cross_entropy: eps must be >= 0.0, got -1e-07"),
    # --- Conv2d ----------------------------------------------------------------------
    bad("Conv2d-kernel-0", lambda: nn.Conv2d(3, 4, 0, rng=0)(X),
        V, "Conv2d: kernel_size must be >= 1, got 0"),
    bad("Conv2d-kernel-string", lambda: nn.Conv2d(3, 4, "3", rng=0)(X),
        T, "Conv2d: kernel_size must be an int or a pair of ints, got '3'"),
    bad("Conv2d-kernel-3-tuple", lambda: nn.Conv2d(3, 4, (3, 3, 3), rng=0)(X),
        T, "Conv2d: kernel_size must be an int or a pair of ints, got (3, 3, 3)"),
    bad("Conv2d-stride-0", lambda: nn.Conv2d(3, 4, 3, stride=0, rng=0)(X),
        V, "Conv2d: stride must be >= 1, got 0"),
    bad("Conv2d-stride-float", lambda: nn.Conv2d(3, 4, 3, stride=1.5, rng=0)(X),
        T, "Conv2d: stride must be an int or a pair of ints, got 1.5"),
    bad("Conv2d-padding-negative", lambda: nn.Conv2d(3, 4, 3, padding=-1, rng=0)(X),
        V, "Conv2d: padding must be >= 0, got -1"),
    bad("Conv2d-padding-string", lambda: nn.Conv2d(3, 4, 3, padding="same", rng=0)(X),
        T, "Conv2d: padding must be an int or a pair of ints, got 'same'"),
    bad("Conv2d-dilation-bool", lambda: nn.Conv2d(3, 4, 3, dilation=True, rng=0)(X),
        T, "Conv2d: dilation must be an int or a pair of ints, got True"),
    bad("Conv2d-in_channels-0", lambda: nn.Conv2d(0, 4, 3, rng=0)(a(2, 0, 6, 6)),
        V, "Conv2d: in_channels must be >= 1, got 0"),
    bad("Conv2d-out_channels-negative", lambda: nn.Conv2d(3, -4, 3, rng=0)(X),
        V, "Conv2d: out_channels must be >= 1, got -4"),
    bad("Conv2d-in_channels-float", lambda: nn.Conv2d(3.0, 4, 3, rng=0)(X),
        T, "Conv2d: in_channels must be an int, got 3.0"),
    bad("Conv2d-bias-int", lambda: nn.Conv2d(1, 2, 3, bias=1),
        T, "Conv2d: bias must be a bool, got 1"),
    bad("Conv2d-dtype-int", lambda: nn.Conv2d(1, 2, 3, dtype=np.int32),
        T, "Conv2d: dtype must be float32 or float64, got <class 'numpy.int32'>"),
    bad("Conv2d-rng-negative", lambda: nn.Conv2d(1, 2, 3, rng=-1),
        V, "Conv2d: rng seed must be a non-negative int, got -1"),
    bad("Conv2d-rng-string", lambda: nn.Conv2d(1, 2, 3, rng="x"),
        T, "Conv2d: rng must be None, an int seed or a numpy.random.Generator, got 'x'"),
    bad("Conv2d-forward-channel-mismatch", lambda: nn.Conv2d(3, 4, 3, rng=0)(a(2, 2, 6, 6)),
        V, "Conv2d: x must have 3 channels (in_channels=3), got shape (2, 2, 6, 6)"),
    bad("Conv2d-forward-rank2", lambda: nn.Conv2d(3, 4, 3, rng=0)(a(6, 6)),
        V, "conv2d: x must be a 4-D array (N, C, H, W), got shape (6, 6)"),
    bad("Conv2d-forward-int", lambda: nn.Conv2d(3, 4, 3, rng=0)(X.astype(np.int64)),
        T, "conv2d: x must have dtype float32 or float64, got int64"),
    bad("Conv2d-forward-float64-into-float32", lambda: nn.Conv2d(3, 4, 3, rng=0)(X.astype(float)),
        T, "conv2d: arrays must share one dtype (float32 or float64), got x=float64, "
           "weight=float32, bias=float32"),
    bad("Conv2d-forward-list", lambda: nn.Conv2d(3, 4, 3, rng=0)(X.tolist()),
        T, "Conv2d: x must be a numpy.ndarray, got list"),
    bad("Conv2d-forward-input-too-small", lambda: nn.Conv2d(3, 4, 3, rng=0)(a(2, 3, 2, 2)),
        V, "conv2d: kernel (3, 3) with dilation (1, 1) is larger than the padded input (2, 2)"),
    bad("Conv2d-backward-grad_out-shape",
        lambda: _backward_after_forward(nn.Conv2d(3, 4, 3, rng=0), X, a(2, 4, 3, 3)),
        V, "conv2d_grad_weight: grad_out must have shape (2, 4, 4, 4), got (2, 4, 3, 3)"),
    bad("Conv2d-backward-learning_rate",
        lambda: _backward_after_forward(nn.Conv2d(3, 4, 3, rng=0), X, G, 0.1),
        T, "Conv2d.backward: learning_rate is not accepted; fastcnn.nn layers add into "
           "Parameter.grad and an optimiser (fastcnn.optim.SGD) steps. For the tutorials' "
           "backward(output_gradient, learning_rate), use the layers of fastcnn.compat"),
    # --- MaxPool2d, BatchNorm2d ------------------------------------------------------
    bad("MaxPool2d-kernel-0", lambda: nn.MaxPool2d(0)(X),
        V, "MaxPool2d: kernel_size must be >= 1, got 0"),
    bad("MaxPool2d-padding-over-half", lambda: nn.MaxPool2d(2, padding=2)(X),
        V, "MaxPool2d: padding must be at most half of kernel_size (2, 2), got 2"),
    bad("MaxPool2d-stride-negative", lambda: nn.MaxPool2d(2, stride=-1)(X),
        V, "MaxPool2d: stride must be >= 1, got -1"),
    bad("MaxPool2d-forward-rank2", lambda: nn.MaxPool2d(2)(a(6, 6)),
        V, "max_pool2d: x must be a 4-D array (N, C, H, W), got shape (6, 6)"),
    bad("MaxPool2d-backward-grad_out-shape",
        lambda: _backward_after_forward(nn.MaxPool2d(2), X, a(2, 3, 2, 2)),
        V, "MaxPool2d: grad_out must have the last output's shape (2, 3, 3, 3), got "
           "(2, 3, 2, 2)"),
    bad("BatchNorm2d-num_features-0", lambda: nn.BatchNorm2d(0)(a(2, 0, 4, 4)),
        V, "BatchNorm2d: num_features must be >= 1, got 0"),
    bad("BatchNorm2d-eps-0", lambda: nn.BatchNorm2d(3, eps=0)(X),
        V, "BatchNorm2d: eps must be > 0.0, got 0.0"),
    bad("BatchNorm2d-eps-negative", lambda: nn.BatchNorm2d(2, eps=-1.0),
        V, "BatchNorm2d: eps must be > 0.0, got -1.0"),
    bad("BatchNorm2d-momentum-2", lambda: nn.BatchNorm2d(3, momentum=2.0)(X),
        V, "BatchNorm2d: momentum must be <= 1.0, got 2.0"),
    bad("BatchNorm2d-forward-channel-mismatch", lambda: nn.BatchNorm2d(4)(X),
        V, "BatchNorm2d: x must have 4 channels (num_features=4), got shape (2, 3, 6, 6)"),
    bad("BatchNorm2d-forward-one-value", lambda: nn.BatchNorm2d(3)(a(1, 3, 1, 1)),
        V, "batch_norm2d: training needs more than one value per channel, got input shape "
           "(1, 3, 1, 1)"),
    # --- Linear, ReLU, Sigmoid, Flatten, Dropout, Sequential, losses -----------------
    bad("Linear-in_features-negative", lambda: nn.Linear(-1, 3, rng=0)(a(4, 1)),
        V, "Linear: in_features must be >= 1, got -1"),
    bad("Linear-out_features-string", lambda: nn.Linear(5, "3", rng=0)(a(4, 5)),
        T, "Linear: out_features must be an int, got '3'"),
    bad("Linear-dtype-float16", lambda: nn.Linear(2, 3, dtype="float16"),
        T, "Linear: dtype must be float32 or float64, got 'float16'"),
    bad("Linear-forward-none", lambda: nn.Linear(5, 3, rng=0)(None),
        T, "Linear: x must be a numpy.ndarray, got NoneType"),
    bad("Linear-forward-features-mismatch", lambda: nn.Linear(5, 3, rng=0)(a(4, 6)),
        V, "linear: x must have shape (..., 5) to match weight (3, 5), got (4, 6)"),
    bad("Linear-backward-grad_out-shape",
        lambda: _backward_after_forward(nn.Linear(5, 3, rng=0), a(4, 5), a(4, 4)),
        V, "Linear: grad_out must have shape (4, 3), got (4, 4)"),
    bad("ReLU-forward-int", lambda: nn.ReLU()(a(3, 4, dtype=np.int32)),
        T, "relu: x must have dtype float32 or float64, got int32"),
    bad("ReLU-backward-grad_out-shape",
        lambda: _backward_after_forward(nn.ReLU(), a(3, 4), a(4, 3)),
        V, "relu_backward: grad_out must have the shape of x (3, 4), got (4, 3)"),
    bad("ReLU-train-mode-string", lambda: nn.ReLU().train("yes"),
        T, "ReLU.train: mode must be a bool, got 'yes'"),
    bad("Sigmoid-forward-list", lambda: nn.Sigmoid()([0.5, 1.0]),
        T, "Sigmoid: x must be a numpy.ndarray, got list"),
    bad("Flatten-forward-none", lambda: nn.Flatten()(None),
        T, "Flatten: x must be a numpy.ndarray, got NoneType"),
    bad("Dropout-p-over-1", lambda: nn.Dropout(1.5, rng=0)(a(3, 4)),
        V, "Dropout: p must be <= 1.0, got 1.5"),
    bad("Dropout-p-negative", lambda: nn.Dropout(-0.1, rng=0)(a(3, 4)),
        V, "Dropout: p must be >= 0.0, got -0.1"),
    bad("Dropout-p-string", lambda: nn.Dropout("0.5", rng=0)(a(3, 4)),
        T, "Dropout: p must be a real number, got '0.5'"),
    bad("Sequential-layer-not-a-module", lambda: nn.Sequential(nn.ReLU(), "relu"),
        T, "Sequential: layer 1 must be a fastcnn.nn.Module, got str"),
    bad("CrossEntropyLoss-target-too-big", lambda: nn.CrossEntropyLoss()(a(4, 3), ints(0, 1, 2, 3)),
        V, "cross_entropy: targets must be class indices in [0, 3), got values in [0, 3]"),
    bad("CrossEntropyLoss-targets-float", lambda: nn.CrossEntropyLoss()(a(4, 3), a(4)),
        T, "cross_entropy: targets must have an integer dtype, got float32"),
    bad("BCELoss-probs-over-1", lambda: nn.BCELoss()(np.full(4, 1.5, np.float32), a(4)),
        V, "binary_cross_entropy: probs must lie in [0, 1], got values in [1.5, 1.5]"),
    # --- load_state_dict of _net() ---------------------------------------------------
    bad("BCELoss-eps-over-half", lambda: nn.BCELoss(eps=0.9),
        V, "BCELoss: eps must be <= 0.5, got 0.9"),
    bad("load_state_dict-missing-key", lambda: _load({"0.bias": None}),
        V, "Sequential.load_state_dict: state does not match the module: missing keys "
           "['0.bias'], unexpected keys []"),
    bad("load_state_dict-extra-key", lambda: _load({"5.weight": a(3, 8)}),
        V, "Sequential.load_state_dict: state does not match the module: missing keys [], "
           "unexpected keys ['5.weight']"),
    bad("load_state_dict-int-key", lambda: _load({"0.bias": None, 0: a(2)}),
        V, "Sequential.load_state_dict: state does not match the module: missing keys "
           "['0.bias'], unexpected keys [0]"),
    bad("load_state_dict-wrong-shape", lambda: _load({"3.bias": a(4)}),
        V, "Sequential.load_state_dict: state['3.bias'] must have shape (3,), got (4,)"),
    bad("load_state_dict-float64-into-float32", lambda: _load({"0.weight": a64(2, 1, 3, 3)}),
        T, "Sequential.load_state_dict: state['0.weight'] must have dtype float32, got float64"),
    bad("load_state_dict-int-dtype", lambda: _load({"3.weight": a(3, 8, dtype=np.int64)}),
        T, "Sequential.load_state_dict: state['3.weight'] must have dtype float32, got int64"),
    bad("load_state_dict-complex-dtype", lambda: _load({"3.bias": a(3, dtype=np.complex64)}),
        T, "Sequential.load_state_dict: state['3.bias'] must have dtype float32, got complex64"),
    bad("load_state_dict-list-value", lambda: _load({"3.bias": [0.0, 0.0, 0.0]}),
        T, "Sequential.load_state_dict: state['3.bias'] must be a numpy.ndarray, got list"),
    bad("load_state_dict-not-a-mapping", lambda: _net().load_state_dict([("0.weight", W)]),
        T, "Sequential.load_state_dict: state must be a mapping, got list"),
    bad("BatchNorm2d-load_state_dict-missing-buffers",
        lambda: _load({"running_var": None, "num_batches_tracked": None}, nn.BatchNorm2d(3)),
        V, "BatchNorm2d.load_state_dict: state does not match the module: missing keys "
           "['running_var', 'num_batches_tracked'], unexpected keys []"),
    bad("BatchNorm2d-load_state_dict-float-counter",
        lambda: _load({"num_batches_tracked": np.zeros((), np.float32)}, nn.BatchNorm2d(3)),
        T, "BatchNorm2d.load_state_dict: state['num_batches_tracked'] must have dtype int64, "
           "got float32"),
    # --- optimisers, the thread count, saving (the folder does not even exist) --------
    bad("SGD-lr-negative", lambda: fastcnn.optim.SGD([_Param(3)], lr=-0.1),
        V, "SGD: lr must be >= 0.0, got -0.1"),
    bad("SGD-lr-string", lambda: fastcnn.optim.SGD([_Param(3)], lr="0.1"),
        T, "SGD: lr must be a real number, got '0.1'"),
    bad("SGD-nesterov-without-momentum",
        lambda: fastcnn.optim.SGD([_Param(3)], lr=0.1, nesterov=True),
        V, "SGD: nesterov needs momentum > 0 and dampening == 0, got momentum=0.0, "
           "dampening=0.0"),
    bad("SGD-params-array", lambda: fastcnn.optim.SGD(a(3), lr=0.1),
        T, "SGD: params must be an iterable of parameters (objects with .data and .grad "
           "arrays, e.g. model.parameters()), got ndarray"),
    bad("Adam-beta1-1", lambda: fastcnn.optim.Adam([_Param(3)], betas=(1.0, 0.999)),
        V, "Adam: betas[0] must be < 1.0, got 1.0"),
    bad("Adam-params-empty", lambda: fastcnn.optim.Adam([], lr=0.1),
        V, "Adam: params is an empty list: nothing to optimise"),
    bad("set_num_threads-0", lambda: fastcnn.set_num_threads(0),
        V, f"set_num_threads: n must be in [1, {MAX_THREADS}], got 0"),
    bad("set_num_threads-float", lambda: fastcnn.set_num_threads(2.0),
        T, "set_num_threads: n must be an int, got 2.0"),
    bad("set_num_threads-bool", lambda: fastcnn.set_num_threads(True),
        T, "set_num_threads: n must be an int, got True"),
    bad("save-state-array", lambda: fastcnn.save(a(3), NO_DIR),
        T, "save: state must be a mapping, got ndarray"),
    bad("save-set-value", lambda: fastcnn.save({"model": {"w": [a(2), {3}]}}, NO_DIR),
        T, "save: 'model/w/1' has type set; only mappings, lists, numpy arrays and scalars, "
           "None, bool, int, float and str can be saved"),
    bad("save-object-array", lambda: fastcnn.save({"a": np.array([object()])}, NO_DIR),
        T, "save: 'a' is an object array, which needs pickle"),
    bad("save-int-key", lambda: fastcnn.save({1: a(3)}, NO_DIR),
        T, "save: keys must be str, got 1 in 'state'"),
    bad("save-path-None", lambda: fastcnn.save({"a": a(3)}, None),
        T, "save: path must be a str or os.PathLike, got NoneType"),
]
# fmt: on


# --- the tests -----------------------------------------------------------------------


def test_catalogue_covers_the_api():
    """Every functional op, every layer and loss, state dicts, the optimisers, the thread
    count and saving have rows, under unique ids."""
    ids = [param.id for param in CATALOGUE]
    assert len(set(ids)) == len(ids)
    layers = [name for name in nn.__all__ if name not in ("Module", "Parameter")]
    others = ["load_state_dict", "SGD", "Adam", "set_num_threads", "save"]
    for name in [*fastcnn.functional.__all__, *layers, *others]:
        assert any(i.startswith(f"{name}-") for i in ids), name


@pytest.mark.parametrize(("call", "exc", "message"), CATALOGUE)
def test_bad_input_is_rejected_before_any_kernel(call, exc, message, tripwires):
    """The exception type, the message, and no kernel call; an op's row raises the same
    in fastcnn.functional and fastcnn.reference and changes none of its arguments."""
    match = re.escape(message)
    if not isinstance(call, Call):
        with pytest.raises(exc, match=match):
            call()
        assert tripwires == []
        return
    messages = []
    for module in (fastcnn.functional, fastcnn.reference):
        args, kwargs = _fresh(call.args), _fresh(call.kwargs)
        with pytest.raises(exc, match=match) as raised:
            getattr(module, call.name)(*args, **kwargs)
        assert tripwires == []
        np.testing.assert_equal((args, kwargs), (call.args, call.kwargs), err_msg=module.__name__)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]


# Valid calls of ops that run kernels: with the tripwires armed each must trip, which
# shows the tripwires cover the paths the bad inputs above would have taken.
VALID_CALLS = [
    OP.conv2d(X, W, a(4)),
    OP.conv2d_grad_input(X.shape, W, G),
    OP.conv2d_grad_weight(X, W.shape, G),
    OP.max_pool2d(X, 2),
    OP.batch_norm2d(X, C3, C3, C3, C3),
    OP.relu(X),
    OP.sigmoid(X),
    OP.softmax(a(4, 3)),
    OP.cross_entropy(a(4, 3), ints(0, 1, 2, 0)),
]


@pytest.mark.parametrize(
    "call",
    [pytest.param(c, id=c.name) for c in VALID_CALLS]
    + [pytest.param(lambda: nn.Conv2d(3, 4, 3, rng=0)(X), id="Conv2d")],
)
def test_tripwires_fire_on_valid_calls(call, tripwires):
    with pytest.raises(AssertionError, match="kernel .* ran"):
        call()
    assert tripwires


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize(
    "bad_kwargs",
    [
        pytest.param({"momentum": 1.5}, id="momentum"),
        pytest.param({"eps": -1.0}, id="eps"),
        pytest.param({"weight": a(2)}, id="weight"),
        pytest.param({"training": "yes"}, id="training"),
        pytest.param({"dtype": np.float64}, id="float64-stats"),
    ],
)
def test_rejected_batch_norm_leaves_running_stats_untouched(bad_kwargs, module):
    """The checks run before anything is computed or written."""
    x = np.arange(96, dtype=np.float32).reshape(2, 3, 4, 4)
    kwargs = {"weight": None, "bias": None} | bad_kwargs
    dtype = kwargs.pop("dtype", np.float32)
    mean, var = np.full(3, 0.5, dtype), np.full(3, 2.0, dtype)
    with pytest.raises((ValueError, TypeError)):
        module.batch_norm2d(x, running_mean=mean, running_var=var, **kwargs)
    np.testing.assert_array_equal(mean, np.full(3, 0.5, dtype))
    np.testing.assert_array_equal(var, np.full(3, 2.0, dtype))


def test_rejected_forward_leaves_the_layer_untouched():
    bn = nn.BatchNorm2d(3)
    before = {k: v.copy() for k, v in bn.state_dict().items()}
    with pytest.raises(ValueError):
        bn(a(2, 4, 4, 4))
    for key, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_settings_equal_to_a_valid_one_stay_refused():
    """The conv geometry is checked once per (shapes, settings) and kept: ``True``, ``1.0``
    and ``(1, True)`` equal ``1`` and ``(1, 1)`` as keys, and must still be refused after
    a valid call has kept those."""
    fastcnn.functional.conv2d(X, W, stride=1, padding=(1, 1))
    fastcnn.functional.conv2d(X, W, stride=(1, 1), padding=1)
    for bad in (True, 1.0, (1, True), (1.0, 1), np.float64(1)):
        for name in ("stride", "padding", "dilation"):
            with pytest.raises(TypeError, match=f"{name} must be an int or a pair of ints"):
                fastcnn.functional.conv2d(X, W, **{name: bad})
