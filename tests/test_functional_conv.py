"""fastcnn.functional's convolution against fastcnn.reference (and torch where installed).

Every conv op (forward, input, weight and bias gradients) runs on the shared case table of
``cases.py`` and on Hypothesis-drawn geometries, in float32 and float64, with one thread
and with all threads.

Tolerances (``cases.assert_close``: ``|a - e| <= atol * scale + rtol * |e|`` with ``scale``
the largest finite ``|e|``): float64 rtol 1e-10, atol 1e-12; float32 rtol 1e-4 and
``atol = 1e-6 * sqrt(R)`` (at least 1e-5), where ``R`` is the number of terms in each sum
(C*KH*KW for the forward, K*KH*KW for the input gradient, N*OH*OW for the weight
gradient, N*OH*OW for the bias gradient): float32 round-off of a sum grows like sqrt(R)
times its largest terms, while the reference sums in float64.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from cases import (
    CONV_CASES,
    DTYPES,
    MAX_THREADS,
    SPECIAL_VALUES,
    assert_close,
    channel_counts,
    conv_inputs,
    conv_kwargs,
    make_rng,
    randn,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st

import fastcnn
from fastcnn import _checks
from fastcnn import functional as F
from fastcnn import reference as R
from fastcnn._kernels import conv as conv_kernels
from fastcnn._kernels import plan
from fastcnn._kernels.geometry import channel_block

HYPOTHESIS = settings(max_examples=40, deadline=None)


def atol_for(dtype, terms: int):
    """The absolute tolerance (times the largest magnitude) of a sum of ``terms`` values."""
    if np.dtype(dtype) == np.float64:
        return None  # cases.TOL's default
    return max(1e-5, 1e-6 * np.sqrt(terms))


def check_conv(x, weight, bias, grad_out, kwargs):
    """All four conv ops of fastcnn equal the reference's."""
    dtype = x.dtype
    n, c = x.shape[:2]
    k, _, kh, kw = weight.shape
    oh, ow = grad_out.shape[2:]
    assert_close(
        F.conv2d(x, weight, bias, **kwargs),
        R.conv2d(x, weight, bias, **kwargs),
        dtype,
        atol=atol_for(dtype, c * kh * kw),
    )
    assert_close(
        F.conv2d_grad_input(x.shape, weight, grad_out, **kwargs),
        R.conv2d_grad_input(x.shape, weight, grad_out, **kwargs),
        dtype,
        atol=atol_for(dtype, k * kh * kw),
    )
    assert_close(
        F.conv2d_grad_weight(x, weight.shape, grad_out, **kwargs),
        R.conv2d_grad_weight(x, weight.shape, grad_out, **kwargs),
        dtype,
        atol=atol_for(dtype, n * oh * ow),
    )
    assert_close(
        F.conv2d_grad_bias(grad_out),
        R.conv2d_grad_bias(grad_out),
        dtype,
        atol=atol_for(dtype, n * oh * ow),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_ops_match_reference(case, dtype, threads):
    x, weight, bias, grad_out = conv_inputs(case, dtype, make_rng(0))
    check_conv(x, weight, bias, grad_out, conv_kwargs(case))


@st.composite
def conv_problems(draw):
    """Arrays and keyword arguments of a valid convolution, for every kernel of the plan:
    half the draws have few taps (C*KH*KW <= plan.FEW_TAPS, mostly at stride 1, where the
    few_taps kernel runs), half more (the direct kernel for every op), their C from
    ``cases.channel_counts`` (small, whole channel blocks of the direct kernels and a
    block +- 1), K always from it; output sizes from one pixel to several pixel blocks,
    batches of 0 to 2 images."""
    dtype = draw(st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)]))
    counts = st.sampled_from(channel_counts(dtype))
    k = draw(counts)
    if draw(st.booleans()):
        c, kh = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        kernel = (kh, draw(st.integers(1, min(3, plan.FEW_TAPS // (c * kh)))))
        stride = draw(st.sampled_from([(1, 1), (1, 1), (2, 1), (2, 3)]))
    else:  # more taps than few_taps takes: every op runs the direct kernel
        kernel = draw(st.tuples(st.integers(1, 4), st.integers(1, 4)))
        taps = kernel[0] * kernel[1]
        c = max(draw(counts), plan.FEW_TAPS // taps + 1)
        stride = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = draw(st.tuples(st.integers(0, 2), st.integers(0, 2)))
    dilation = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    reach = [d * (kk - 1) + 1 for d, kk in zip(dilation, kernel, strict=True)]
    h = draw(st.integers(max(1, reach[0] - 2 * padding[0]), reach[0] + 6))  # the kernel fits
    w = draw(st.integers(max(1, reach[1] - 2 * padding[1]), reach[1] + 6))
    case = {
        "x_shape": (draw(st.sampled_from([1, 2, 0])), c, h, w),  # an empty batch last
        "w_shape": (k, c, *kernel),
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "bias": draw(st.booleans()),
    }
    x, weight, bias, grad_out = conv_inputs(case, dtype, make_rng(draw(st.integers(0, 2**32 - 1))))
    return x, weight, bias, grad_out, conv_kwargs(case)


def test_conv_ops_hypothesis():
    """Hypothesis-drawn convolutions give the reference's results, with one thread and all
    of them, and the draws run every kernel of the plan for every op."""
    ran = set()

    # Derandomized: the same draws on every run, so whether they reach every kernel (the
    # assertion below) is a property of the strategy, not of a run's luck.
    @settings(HYPOTHESIS, max_examples=100, derandomize=True)
    @given(problem=conv_problems(), n_threads=st.sampled_from([1, MAX_THREADS]))
    def check(problem, n_threads):
        x, weight, bias, grad_out, kwargs = problem
        g = _checks.conv2d_args(x, weight, bias, **kwargs)
        block = channel_block(x.dtype)
        for op, blocked in (("forward", g.k), ("grad_input", g.c), ("grad_weight", g.k)):
            kernel = plan.choose(op, g).kernel
            event(f"{x.dtype} {op} {kernel}, channels % block: {blocked % block}")
            if g.n:
                ran.add((op, kernel))
        fastcnn.set_num_threads(n_threads)
        try:
            check_conv(x, weight, bias, grad_out, kwargs)
        finally:
            fastcnn.set_num_threads(MAX_THREADS)

    check()
    assert ran == {(op, kernel) for op in plan.OPS for kernel in plan.KERNELS}


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"padding": 1}, id="3x3-padding1"),
        pytest.param({"stride": 2, "dilation": 2}, id="stride2-dilation2"),
        pytest.param({"stride": 1}, id="3x3"),
    ],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_many_chunks(kwargs, dtype, monkeypatch):
    """Batches split into one-image chunks (partial weight gradients summed) and into
    uneven chunks give the reference's result."""
    rng = make_rng(3)
    x = randn(rng, (7, 3, 9, 8), dtype)
    weight = randn(rng, (5, 3, 3, 3), dtype)
    bias = randn(rng, 5, dtype)
    grad_out = randn(rng, F.conv2d(x, weight, **kwargs).shape, dtype)
    for chunk_bytes in (1, 3 * x.itemsize * 27 * grad_out[0, 0].size):
        monkeypatch.setattr(conv_kernels, "CHUNK_BYTES", chunk_bytes)
        check_conv(x, weight, bias, grad_out, kwargs)


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"padding": 1}, id="padding1"),
        pytest.param({"stride": 3}, id="stride-gt-kernel"),
        pytest.param({"padding": (2, 1), "dilation": 2}, id="padding-dilation"),
    ],
)
def test_conv_nan_inf_propagate_like_the_reference(kwargs, dtype, threads):
    """NaN and inf land where the reference puts them, including ``inf * 0 = nan`` where an
    infinite weight or gradient meets the zero padding."""
    rng = make_rng(4)
    x = randn(rng, (2, 2, 7, 8), dtype)
    weight = randn(rng, (3, 2, 3, 2), dtype)
    bias = randn(rng, 3, dtype)
    x_finite = x.copy()
    x[0, 0, 1, 1] = np.nan
    x[1, 1, 5, 2] = np.inf
    x[1, 0, 0, 0] = -np.inf
    grad_out = randn(rng, F.conv2d(x, weight, **kwargs).shape, dtype)
    grad_out[0, 1, 0, 0] = np.inf
    grad_out[1, 2, -1, -1] = np.nan
    weight_inf = weight.copy()
    weight_inf[1, 0, 0, 1] = np.inf
    weight_inf[2, 1, 2, 0] = np.nan
    # Special values in x, in the weights, in grad_out only (fast paths differ by case).
    for xx, w in ((x, weight), (x, weight_inf), (x_finite, weight), (x_finite, weight_inf)):
        check_conv(xx, w, bias, grad_out, kwargs)
    assert np.isnan(R.conv2d(x, weight, bias, **kwargs)).any()
    # Only the padding meets the infinite weight here: the output is NaN there, not 0.
    zeros = np.zeros_like(x)
    y = F.conv2d(zeros, weight_inf, None, padding=1)
    assert_close(y, R.conv2d(zeros, weight_inf, None, padding=1), dtype)
    assert np.isnan(y).any()


def test_conv_from_several_python_threads():
    """Threads calling the conv ops at once, each with its own shapes (and so its own
    scratch buffers), all get the single-threaded result."""
    rng = make_rng(7)
    jobs = []
    for i in range(4):
        x = randn(rng, (3 + i, 2 + i, 9, 10), np.float32)
        weight = randn(rng, (4, 2 + i, 3, 3), np.float32)
        grad_out = randn(rng, (3 + i, 4, 9, 10), np.float32)
        jobs.append((x, weight, grad_out))

    def run(x, weight, grad_out):
        return (
            F.conv2d(x, weight, padding=1),
            F.conv2d_grad_input(x.shape, weight, grad_out, padding=1),
            F.conv2d_grad_weight(x, weight.shape, grad_out, padding=1),
        )

    expected = [run(*job) for job in jobs]
    results = [None] * len(jobs)
    errors = []

    def worker(i):
        try:
            for _ in range(5):
                results[i] = run(*jobs[i])
                for a, e in zip(results[i], expected[i], strict=True):
                    np.testing.assert_array_equal(a, e)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors


# --- torch parity on the benchmark presets' shapes (small batch) ------------------------

PRESET_SHAPES = [
    pytest.param(((2, 1, 28, 28), (32, 1, 3, 3), 0), id="mnist-conv1"),
    pytest.param(((2, 32, 13, 13), (64, 32, 3, 3), 0), id="mnist-conv2"),
    pytest.param(((2, 16, 32, 32), (32, 16, 3, 3), 1), id="cifar-16x32"),
    pytest.param(((1, 64, 32, 32), (64, 64, 3, 3), 1), id="cifar-64x64"),
]


@pytest.mark.parametrize("shapes", PRESET_SHAPES)
def test_conv_matches_torch_on_presets(shapes):
    torch = pytest.importorskip("torch")
    x_shape, w_shape, padding = shapes
    rng = make_rng(8)
    x = randn(rng, x_shape, np.float32)
    weight = randn(rng, w_shape, np.float32)
    bias = randn(rng, w_shape[0], np.float32)
    y = F.conv2d(x, weight, bias, padding=padding)
    grad_out = randn(rng, y.shape, np.float32)
    tx, tw, tb, tg = map(torch.from_numpy, (x, weight, bias, grad_out))
    n, c, _, _ = x_shape
    k, _, kh, kw = w_shape
    pairs = [
        (y, torch.nn.functional.conv2d(tx, tw, tb, padding=padding), c * kh * kw),
        (
            F.conv2d_grad_input(x_shape, weight, grad_out, padding=padding),
            torch.nn.grad.conv2d_input(x_shape, tw, tg, padding=padding),
            k * kh * kw,
        ),
        (
            F.conv2d_grad_weight(x, w_shape, grad_out, padding=padding),
            torch.nn.grad.conv2d_weight(tx, w_shape, tg, padding=padding),
            n * y.shape[2] * y.shape[3],
        ),
        (F.conv2d_grad_bias(grad_out), tg.sum((0, 2, 3)), n * y.shape[2] * y.shape[3]),
    ]
    for actual, expected, terms in pairs:
        # torch sums in float32 too: twice the reference tolerance.
        assert_close(actual, expected.numpy(), np.float32, atol=2 * atol_for(np.float32, terms))
