"""The shared table of named cases, input builders and tolerances for fastcnn's tests.

The reference tests (finite differences, torch parity) and the kernel tests (fast path
against the reference) run over the same cases, so one name means one shape everywhere.
Import it from a test module as ``from cases import CONV_CASES, assert_close, ...``.

Each case is a ``pytest.param`` holding a plain ``dict`` (shapes as tuples, ints or pairs),
so any test can turn it into arrays with the builders below and a seeded Generator.

Tolerance policy (:data:`TOL`): results are compared element-wise with
``|actual - expected| <= atol * scale + rtol * |expected|``, where ``scale`` is the largest
finite magnitude of ``expected`` (at least 1): a sum of many terms carries an absolute
round-off error proportional to its largest terms, not to each small result.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastcnn import _threads
from fastcnn._kernels.geometry import channel_block, lanes

# Kernels are checked with one thread and with all of them (the ``threads`` fixture of
# conftest.py; Hypothesis tests draw from the same two counts).
MAX_THREADS = _threads.MAX_THREADS
THREADS = [pytest.param(1, id="1thread"), pytest.param(MAX_THREADS, id="all-threads")]
# The reference (NumPy) warns where NaN and inf arise; the values are what is checked.
SPECIAL_VALUES = pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")

# --- dtypes and tolerances -----------------------------------------------------------

DTYPES = [
    pytest.param(np.dtype(np.float32), id="float32"),
    pytest.param(np.dtype(np.float64), id="float64"),
]

TOL = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}


def assert_close(actual, expected, dtype, *, rtol=None, atol=None) -> None:
    """Assert ``actual`` is an array (or NumPy scalar) of ``dtype`` and ``expected``'s shape,
    with NaN in the same places, infinities equal, and finite values within :data:`TOL`.

    ``rtol``/``atol`` override the dtype's defaults; ``atol`` is multiplied by the largest
    finite magnitude of ``expected`` (at least 1).
    """
    dtype = np.dtype(dtype)
    assert isinstance(actual, (np.ndarray, np.generic)), f"got {type(actual).__name__}"
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {dtype}"
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    tol = TOL[dtype]
    rtol = tol["rtol"] if rtol is None else rtol
    atol = tol["atol"] if atol is None else atol
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        expected.astype(np.float64),
        rtol=rtol,
        atol=atol * scale,
        equal_nan=True,
        strict=True,
    )


# --- input builders ------------------------------------------------------------------


def make_rng(seed: int = 0) -> np.random.Generator:
    """A fresh Generator; every test builds its inputs from its own seed."""
    return np.random.default_rng(seed)


def randn(rng: np.random.Generator, shape, dtype, scale: float = 1.0) -> np.ndarray:
    """Standard-normal values of ``dtype`` and ``shape``, times ``scale``."""
    return (scale * rng.standard_normal(shape)).astype(dtype)


def distinct(rng: np.random.Generator, shape, dtype, gap: float = 0.1) -> np.ndarray:
    """Values centred on zero, pairwise at least ``gap`` apart, in random order.

    With no ties the argmax of every window is stable under small perturbations, which
    finite differences of max-pooling need.
    """
    size = int(np.prod(shape))
    return ((rng.permutation(size) - size / 2) * gap).reshape(shape).astype(dtype)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _out_size(size, kernel, stride, pad, dilation) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


# --- convolution ---------------------------------------------------------------------


def _conv(x, w, stride=1, padding=0, dilation=1, bias=True):
    return {
        "x_shape": x,
        "w_shape": w,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "bias": bias,
    }


CONV_CASES = [
    pytest.param(_conv((1, 1, 5, 5), (1, 1, 3, 3)), id="batch1-1ch-3x3"),
    pytest.param(_conv((3, 1, 6, 6), (2, 1, 3, 3)), id="one-in-channel"),
    pytest.param(_conv((2, 3, 4, 5), (4, 3, 1, 1)), id="kernel-1x1"),
    pytest.param(_conv((2, 2, 4, 4), (3, 2, 4, 4)), id="kernel-equals-input"),
    pytest.param(_conv((2, 2, 5, 8), (3, 2, 3, 3)), id="h-ne-w"),
    pytest.param(_conv((2, 2, 7, 9), (3, 2, 3, 3), stride=2), id="odd-sizes-stride2"),
    pytest.param(_conv((2, 2, 5, 5), (2, 2, 3, 3), padding=1), id="padding1"),
    pytest.param(_conv((1, 2, 6, 7), (2, 2, 3, 3), stride=2, padding=2), id="stride2-padding2"),
    pytest.param(_conv((2, 2, 7, 7), (2, 2, 3, 3), dilation=2), id="dilation2"),
    pytest.param(
        _conv((1, 2, 8, 9), (2, 2, 3, 2), padding=(2, 1), dilation=(2, 1)),
        id="dilation-pair-padding-pair",
    ),
    pytest.param(_conv((2, 2, 6, 7), (3, 2, 2, 4)), id="non-square-kernel"),
    pytest.param(
        _conv((2, 1, 9, 8), (2, 1, 3, 3), stride=(2, 3), padding=(1, 0)), id="stride-pair"
    ),
    pytest.param(_conv((1, 2, 9, 9), (2, 2, 2, 2), stride=3), id="stride-gt-kernel"),
    pytest.param(_conv((2, 2, 5, 5), (2, 2, 3, 3), bias=False), id="no-bias"),
    pytest.param(_conv((2, 3, 12, 11), (6, 3, 5, 5), padding=2), id="kernel-5x5-padding2"),
    pytest.param(_conv((2, 8, 10, 10), (16, 8, 3, 3), padding=1), id="channels-8-16"),
    pytest.param(_conv((4, 1, 28, 28), (8, 1, 3, 3)), id="mnist-like"),
    pytest.param(_conv((0, 2, 5, 5), (3, 2, 3, 3), padding=1), id="empty-batch"),
]


def channel_counts(dtype) -> list[int]:
    """Channel counts that take every path of the direct conv kernels in ``dtype`` (float32's
    for any other dtype): small counts, one and two whole channel blocks (two SIMD vectors:
    :func:`fastcnn._kernels.geometry.channel_block`, 16 float32 or 8 float64 channels with
    AVX2, 32 or 16 with AVX-512) and one either side of a block."""
    block = channel_block(np.float64 if np.dtype(dtype) == np.float64 else np.float32)
    return sorted({1, 2, 3, block - 1, block, block + 1, 2 * block})


def conv_out_shape(case) -> tuple[int, int, int, int]:
    """Output shape ``(N, K, OH, OW)`` of a conv case."""
    n, _, h, w = case["x_shape"]
    k, _, kh, kw = case["w_shape"]
    (sh, sw), (ph, pw), (dh, dw) = map(_pair, (case["stride"], case["padding"], case["dilation"]))
    return n, k, _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw)


def conv_inputs(case, dtype, rng):
    """``(x, weight, bias_or_None, grad_out)`` for a conv case, standard-normal values."""
    x = randn(rng, case["x_shape"], dtype)
    weight = randn(rng, case["w_shape"], dtype)
    bias = randn(rng, case["w_shape"][0], dtype) if case["bias"] else None
    grad_out = randn(rng, conv_out_shape(case), dtype)
    return x, weight, bias, grad_out


def conv_kwargs(case) -> dict:
    """``stride``, ``padding``, ``dilation`` of a conv case as keyword arguments."""
    return {k: case[k] for k in ("stride", "padding", "dilation")}


# --- max-pooling ---------------------------------------------------------------------


def _pool(x, kernel_size, stride=None, padding=0, values="distinct"):
    return {
        "x_shape": x,
        "kernel_size": kernel_size,
        "stride": stride,
        "padding": padding,
        "values": values,
    }


POOL_CASES = [
    pytest.param(_pool((2, 3, 6, 6), 2), id="2x2-stride2"),
    pytest.param(_pool((1, 1, 4, 4), 2), id="batch1-1ch-2x2"),
    pytest.param(_pool((2, 2, 6, 7), 3, stride=1), id="overlap-3x3-stride1"),
    pytest.param(_pool((1, 2, 7, 7), 3, stride=2), id="overlap-3x3-stride2"),
    pytest.param(_pool((2, 2, 7, 8), 3, stride=2, padding=1), id="padding1"),
    pytest.param(_pool((1, 2, 6, 6), (3, 2), stride=(2, 1), padding=(1, 1)), id="pairs"),
    pytest.param(_pool((2, 2, 6, 9), (2, 3)), id="non-square-kernel"),
    pytest.param(_pool((1, 2, 8, 8), 2, stride=3), id="stride-gt-kernel"),
    pytest.param(_pool((2, 1, 7, 5), 2), id="odd-sizes-floor"),
    pytest.param(_pool((2, 2, 3, 4), 1), id="kernel-1x1"),
    pytest.param(_pool((2, 2, 4, 4), 4), id="kernel-equals-input"),
    pytest.param(_pool((2, 2, 6, 6), 2, values="ties"), id="ties-2x2"),
    pytest.param(_pool((2, 2, 7, 7), 3, stride=1, values="ties"), id="ties-overlap"),
    pytest.param(_pool((2, 2, 7, 6), 3, stride=2, padding=1, values="ties"), id="ties-padding"),
    pytest.param(_pool((4, 8, 26, 26), 2), id="mnist-like"),
    # rows of 35 outputs: whole SIMD vectors of them and a part one, in float32 and float64
    pytest.param(_pool((1, 3, 5, 71), 2), id="2x2-wide-rows"),
    pytest.param(_pool((1, 2, 9, 70), 2, values="ties"), id="ties-2x2-wide-rows"),
    pytest.param(_pool((0, 2, 6, 6), 2), id="empty-batch"),
]


def row_lengths(dtype) -> list[int]:
    """Output row lengths that take every path of the 2x2 max-pool kernel in ``dtype``: rows
    shorter than, as long as and longer than a 16-byte vector and a native one
    (:func:`fastcnn._kernels.geometry.lanes`), and more than two native vectors."""
    half, lane = 16 // np.dtype(dtype).itemsize, lanes(dtype)
    return sorted({1, half - 1, half, half + 1, lane - 1, lane, lane + 1, 2 * lane + 1})


def pool_out_shape(case) -> tuple[int, int, int, int]:
    """Output shape ``(N, C, OH, OW)`` of a pool case (floor mode)."""
    n, c, h, w = case["x_shape"]
    kh, kw = _pair(case["kernel_size"])
    sh, sw = (kh, kw) if case["stride"] is None else _pair(case["stride"])
    ph, pw = _pair(case["padding"])
    return n, c, _out_size(h, kh, sh, ph, 1), _out_size(w, kw, sw, pw, 1)


def pool_input(case, dtype, rng) -> np.ndarray:
    """Input of a pool case: pairwise distinct values, or small integers full of ties."""
    if case["values"] == "ties":
        return rng.integers(-1, 2, size=case["x_shape"]).astype(dtype)
    return distinct(rng, case["x_shape"], dtype)


def pool_kwargs(case) -> dict:
    """``kernel_size``, ``stride``, ``padding`` of a pool case as keyword arguments."""
    return {k: case[k] for k in ("kernel_size", "stride", "padding")}


# --- batch norm, element-wise, linear, softmax and losses -----------------------------

BN_SHAPES = [
    pytest.param((4, 3, 5, 5), id="n4-c3-5x5"),
    pytest.param((2, 1, 3, 4), id="one-channel"),
    pytest.param((1, 2, 3, 3), id="batch1"),
    pytest.param((3, 2, 1, 1), id="spatial-1x1"),
    pytest.param((2, 3, 5, 7), id="h-ne-w"),
    pytest.param((8, 16, 6, 6), id="channels-16"),
]

ELEMENTWISE_SHAPES = [
    pytest.param((7,), id="vector"),
    pytest.param((1, 1), id="single"),
    pytest.param((2, 3, 4, 5), id="nchw"),
    pytest.param((0, 3), id="empty"),
]


def _linear(x, out_features, bias=True):
    return {"x_shape": x, "out_features": out_features, "bias": bias}


LINEAR_CASES = [
    pytest.param(_linear((4, 6), 5), id="batch4-6to5"),
    pytest.param(_linear((1, 3), 1), id="batch1-3to1"),
    pytest.param(_linear((2, 3, 7), 4), id="extra-leading-dim"),
    pytest.param(_linear((5, 10), 3, bias=False), id="no-bias"),
    pytest.param(_linear((7,), 2), id="unbatched"),
    pytest.param(_linear((64, 1600), 128), id="mnist-fc1"),
    pytest.param(_linear((0, 4), 3), id="empty-batch"),
]


def linear_inputs(case, dtype, rng):
    """``(x, weight, bias_or_None, grad_out)`` for a linear case."""
    in_features = case["x_shape"][-1]
    out = case["out_features"]
    x = randn(rng, case["x_shape"], dtype)
    weight = randn(rng, (out, in_features), dtype, scale=in_features**-0.5)
    bias = randn(rng, out, dtype) if case["bias"] else None
    grad_out = randn(rng, (*case["x_shape"][:-1], out), dtype)
    return x, weight, bias, grad_out


SOFTMAX_CASES = [
    pytest.param({"shape": (4, 10), "axis": -1}, id="rows"),
    pytest.param({"shape": (3, 5), "axis": 0}, id="columns"),
    pytest.param({"shape": (2, 3, 4), "axis": 1}, id="middle-axis"),
    pytest.param({"shape": (1, 1), "axis": -1}, id="single"),
    pytest.param({"shape": (7,), "axis": 0}, id="vector"),
]

CE_CASES = [
    pytest.param({"n": 1, "c": 2}, id="batch1-2classes"),
    pytest.param({"n": 4, "c": 10}, id="batch4-10classes"),
    pytest.param({"n": 16, "c": 3}, id="batch16-3classes"),
    pytest.param({"n": 3, "c": 1}, id="one-class"),
    pytest.param({"n": 64, "c": 10}, id="mnist-batch"),
]


def ce_inputs(case, dtype, rng):
    """``(logits, targets)`` for a cross-entropy case; targets are int64."""
    logits = randn(rng, (case["n"], case["c"]), dtype, scale=2.0)
    targets = rng.integers(0, case["c"], size=case["n"])
    return logits, targets


BCE_SHAPES = [
    pytest.param((5,), id="vector"),
    pytest.param((4, 3), id="matrix"),
    pytest.param((2, 3, 4), id="3d"),
]


def bce_inputs(shape, dtype, rng):
    """``(probs, targets)``: probs in (0.05, 0.95), targets mixing 0, 1 and soft labels."""
    probs = rng.uniform(0.05, 0.95, size=shape).astype(dtype)
    targets = rng.choice([0.0, 1.0, 0.3], size=shape).astype(dtype)
    return probs, targets
