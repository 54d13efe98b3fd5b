"""fastcnn.functional (all but conv) against fastcnn.reference.

Every op runs on the shared case table of ``cases.py`` in float32 and float64, with one
thread and with all threads, plus Hypothesis-drawn shapes. Tolerances are ``cases.TOL``
(float32: rtol 1e-4, atol 1e-5 times the largest magnitude; float64: rtol 1e-10, atol
1e-12 times it). Max-pooling only selects values, so its outputs and indices must be
exactly equal. NaN and inf must land where the reference puts them.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import (
    BCE_SHAPES,
    BN_SHAPES,
    CE_CASES,
    DTYPES,
    ELEMENTWISE_SHAPES,
    LINEAR_CASES,
    MAX_THREADS,
    POOL_CASES,
    SOFTMAX_CASES,
    SPECIAL_VALUES,
    assert_close,
    bce_inputs,
    ce_inputs,
    linear_inputs,
    make_rng,
    pool_input,
    pool_kwargs,
    randn,
    row_lengths,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcnn
from fastcnn import functional as F
from fastcnn import reference as R

HYPOTHESIS = settings(max_examples=30, deadline=None)


def assert_same(actual, expected):
    """Bitwise-equal arrays of equal dtype and shape (NaN equal to NaN)."""
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected, strict=True)


# --- max-pooling ---------------------------------------------------------------------


def check_pool(x, kwargs):
    y, idx = F.max_pool2d(x, **kwargs)
    y_ref, idx_ref = R.max_pool2d(x, **kwargs)
    assert_same(y, y_ref)
    assert idx.dtype == np.int64
    assert_same(idx, idx_ref)
    grad_out = randn(make_rng(1), y.shape, x.dtype)
    assert_close(
        F.max_pool2d_backward(grad_out, idx, x.shape),
        R.max_pool2d_backward(grad_out, idx_ref, x.shape),
        x.dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d(case, dtype, threads):
    check_pool(pool_input(case, dtype, make_rng(0)), pool_kwargs(case))


@st.composite
def pool_problems(draw):
    """An input and keyword arguments of a valid max-pool: half the draws take the 2x2
    stride-2 kernel (SIMD along output rows) with rows of ``cases.row_lengths`` (shorter
    than, as long as and longer than a vector), half any window, stride and padding."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    if draw(st.booleans()):
        kwargs = {"kernel_size": 2, "stride": 2, "padding": 0}
        h = 2 * draw(st.integers(1, 3)) + draw(st.integers(0, 1))
        w = 2 * draw(st.sampled_from(row_lengths(dtype))) + draw(st.integers(0, 1))
    else:
        k = draw(st.tuples(st.integers(1, 4), st.integers(1, 4)))
        p = draw(st.tuples(st.integers(0, k[0] // 2), st.integers(0, k[1] // 2)))
        s = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
        kwargs = {"kernel_size": k, "stride": s, "padding": p}
        h = draw(st.integers(max(1, k[0] - 2 * p[0]), 9))  # the window fits
        w = draw(st.integers(max(1, k[1] - 2 * p[1]), 9))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w)
    values = draw(st.sampled_from(["ties", "distinct"]))
    x = pool_input({"x_shape": shape, "values": values}, dtype, make_rng(draw(st.integers(0, 99))))
    return x, kwargs


def test_max_pool2d_hypothesis():
    """Hypothesis-drawn max-pools give the reference's results, with one thread and all of
    them, and the draws run both the 2x2 kernel and the general one."""
    ran = set()

    @HYPOTHESIS
    @given(problem=pool_problems(), n_threads=st.sampled_from([1, MAX_THREADS]))
    def check(problem, n_threads):
        x, kwargs = problem
        window = [np.broadcast_to(kwargs[key], 2).tolist() for key in kwargs]
        ran.add("2x2" if window == [[2, 2], [2, 2], [0, 0]] else "any window")
        fastcnn.set_num_threads(n_threads)
        try:
            check_pool(x, kwargs)
        finally:
            fastcnn.set_num_threads(MAX_THREADS)

    check()
    assert ran == {"2x2", "any window"}


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"kernel_size": 2}, id="2x2"),
        pytest.param({"kernel_size": 3, "stride": 1, "padding": 1}, id="3x3-padded"),
    ],
)
def test_max_pool2d_nan_inf(kwargs, dtype, threads):
    x = randn(make_rng(2), (2, 2, 6, 6), dtype)
    x[0, 0, 0, 0] = np.nan  # NaN beats a larger value later in its window
    x[0, 0, 0, 1] = 5
    x[0, 0, 2, 2] = x[0, 0, 3, 3] = np.nan  # two NaNs in one window
    x[0, 1, 0:2, 0:2] = -np.inf  # a window of -inf only (beside the padding)
    x[1, 0, 4, 4] = np.inf
    x[1, 1, 1, 1] = -np.inf
    check_pool(x, kwargs)


# --- batch norm ----------------------------------------------------------------------


def bn_inputs(shape, dtype, affine, seed=0):
    rng = make_rng(seed)
    dtype = np.dtype(dtype)
    c = shape[1]
    x = randn(rng, shape, dtype, scale=3.0) + dtype.type(2)  # a mean away from 0
    weight = randn(rng, c, dtype) if affine else None
    bias = randn(rng, c, dtype) if affine else None
    running_mean = randn(rng, c, dtype)
    running_var = rng.uniform(0.5, 2.0, c).astype(dtype)
    return x, weight, bias, running_mean, running_var


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm2d(shape, training, affine, dtype, threads):
    if training and shape[0] * shape[2] * shape[3] <= 1:
        pytest.skip("training needs more than one value per channel")
    x, weight, bias, rm, rv = bn_inputs(shape, dtype, affine)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    got = F.batch_norm2d(x, weight, bias, rm, rv, training=training, momentum=0.3)
    want = R.batch_norm2d(x, weight, bias, rm_ref, rv_ref, training=training, momentum=0.3)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, dtype)
    assert_close(rm, rm_ref, dtype)
    assert_close(rv, rv_ref, dtype)

    grad_out = randn(make_rng(3), shape, dtype)
    _, save_mean, save_invstd = want
    got = F.batch_norm2d_backward(grad_out, x, weight, save_mean, save_invstd)
    want = R.batch_norm2d_backward(grad_out, x, weight, save_mean, save_invstd)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm2d_without_running_stats(dtype, threads):
    x, weight, bias, _, _ = bn_inputs((3, 2, 4, 4), dtype, affine=True)
    got = F.batch_norm2d(x, weight, bias, None, None)
    want = R.batch_norm2d(x, weight, bias, None, None)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, dtype)


def test_batch_norm2d_float32_large_mean(threads):
    """Statistics of float32 data far from zero stay accurate (no naive sum of squares)."""
    x, weight, bias, rm, rv = bn_inputs((16, 4, 12, 12), np.float32, affine=True)
    x += np.float32(1000)  # float32 spacing 6e-5 here
    got = F.batch_norm2d(x, weight, bias, rm, rv)
    want = R.batch_norm2d(x, weight, bias, rm.copy(), rv.copy())
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, np.float32)


@HYPOTHESIS
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 7), st.integers(1, 7)),
    training=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    n_threads=st.sampled_from([1, MAX_THREADS]),
)
def test_batch_norm2d_hypothesis(shape, training, dtype, n_threads):
    if training and shape[0] * shape[2] * shape[3] <= 1:
        return
    x, weight, bias, rm, rv = bn_inputs(shape, dtype, affine=True, seed=sum(shape))
    rm_ref, rv_ref = rm.copy(), rv.copy()
    fastcnn.set_num_threads(n_threads)
    try:
        got = F.batch_norm2d(x, weight, bias, rm, rv, training=training)
        grad_out = randn(make_rng(4), shape, dtype)
        got_bwd = F.batch_norm2d_backward(grad_out, x, weight, got[1], got[2])
    finally:
        fastcnn.set_num_threads(MAX_THREADS)
    want = R.batch_norm2d(x, weight, bias, rm_ref, rv_ref, training=training)
    want_bwd = R.batch_norm2d_backward(grad_out, x, weight, got[1], got[2])
    for a, b in zip(got + got_bwd, want + want_bwd, strict=True):
        assert_close(a, b, dtype)
    assert_close(rm, rm_ref, dtype)
    assert_close(rv, rv_ref, dtype)


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm2d_nan_inf(dtype, threads):
    x, weight, bias, rm, rv = bn_inputs((2, 4, 3, 3), dtype, affine=True)
    x[0, 1, 1, 1] = np.nan
    x[1, 2, 0, 0] = np.inf
    rm_ref, rv_ref = rm.copy(), rv.copy()
    got = F.batch_norm2d(x, weight, bias, rm, rv)
    want = R.batch_norm2d(x, weight, bias, rm_ref, rv_ref)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, dtype)
    assert_close(rm, rm_ref, dtype)
    assert_close(rv, rv_ref, dtype)
    grad_out = randn(make_rng(5), x.shape, dtype)
    grad_out[1, 3, 2, 2] = np.nan
    got = F.batch_norm2d_backward(grad_out, x, weight, want[1], want[2])
    want = R.batch_norm2d_backward(grad_out, x, weight, want[1], want[2])
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, dtype)


# --- element-wise --------------------------------------------------------------------

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e4, -1e4, 88.0, -104.0, 1e-30, 0.5, -0.5]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES)
def test_activations(shape, dtype, threads):
    rng = make_rng(6)
    x = randn(rng, shape, dtype, scale=5.0)
    grad_out = randn(rng, shape, dtype)
    y = R.sigmoid(x)
    assert_same(F.relu(x), R.relu(x))
    assert_same(F.relu_backward(grad_out, x), R.relu_backward(grad_out, x))
    assert_close(F.sigmoid(x), y, dtype)
    assert_close(F.sigmoid_backward(grad_out, y), R.sigmoid_backward(grad_out, y), dtype)


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_nan_inf(dtype, threads):
    x = np.array(SPECIAL, dtype)
    grad_out = np.roll(x, 1)  # NaN and inf in the gradient too, at other places
    assert_same(F.relu(x), R.relu(x))
    assert_same(F.relu_backward(grad_out, x), R.relu_backward(grad_out, x))
    assert_close(F.sigmoid(x), R.sigmoid(x), dtype)
    y = R.sigmoid(x)
    assert_close(F.sigmoid_backward(grad_out, y), R.sigmoid_backward(grad_out, y), dtype)


# --- linear, softmax, losses ---------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LINEAR_CASES)
def test_linear(case, dtype, threads):
    x, weight, bias, _ = linear_inputs(case, dtype, make_rng(7))
    assert_close(F.linear(x, weight, bias), R.linear(x, weight, bias), dtype)


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_nan_inf(dtype, threads):
    x, weight, bias, _ = linear_inputs(LINEAR_CASES[0].values[0], dtype, make_rng(8))
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    assert_close(F.linear(x, weight, bias), R.linear(x, weight, bias), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SOFTMAX_CASES)
def test_softmax(case, dtype, threads):
    x = randn(make_rng(9), case["shape"], dtype, scale=4.0)
    assert_close(F.softmax(x, case["axis"]), R.softmax(x, case["axis"]), dtype)
    assert_close(F.log_softmax(x, case["axis"]), R.log_softmax(x, case["axis"]), dtype)


@HYPOTHESIS
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
    axis_seed=st.integers(0, 100),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_softmax_hypothesis(shape, axis_seed, dtype):
    axis = axis_seed % (2 * len(shape)) - len(shape)  # negative and positive axes
    x = randn(make_rng(axis_seed), shape, dtype, scale=10.0)
    assert_close(F.softmax(x, axis), R.softmax(x, axis), dtype)
    assert_close(F.log_softmax(x, axis), R.log_softmax(x, axis), dtype)


SOFTMAX_ROWS = [
    [np.nan, 1.0, 2.0],
    [np.inf, 1.0, 2.0],
    [-np.inf, 1.0, 2.0],
    [-np.inf, -np.inf, -np.inf],
    [1e30, 1e30, 0.0],  # huge: no overflow
    [-1e30, 0.0, 1e30],
    [3e38, -3e38, 0.0],
    [0.0, 0.0, 0.0],
]


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_nan_inf_huge(dtype, threads):
    x = np.array(SOFTMAX_ROWS, dtype)
    for axis in (-1, 0):
        assert_close(F.softmax(x, axis), R.softmax(x, axis), dtype)
        assert_close(F.log_softmax(x, axis), R.log_softmax(x, axis), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CE_CASES)
def test_cross_entropy(case, dtype, threads):
    logits, targets = ce_inputs(case, dtype, make_rng(10))
    loss, grad = F.cross_entropy(logits, targets)
    loss_ref, grad_ref = R.cross_entropy(logits, targets)
    assert isinstance(loss, dtype.type)
    assert_close(loss, loss_ref, dtype)
    assert_close(grad, grad_ref, dtype)


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([[1e4, 0.0, -1e4], [-1e30, 1e30, 0.0]], id="huge"),
        pytest.param([[np.nan, 0.0, 1.0], [0.0, 1.0, 2.0]], id="nan"),
        pytest.param([[np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]], id="inf"),
        pytest.param([[-np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]], id="minus-inf-not-target"),
    ],
)
def test_cross_entropy_special(rows, dtype, threads):
    logits = np.array(rows, dtype)
    targets = np.array([1, 2], dtype=np.int32)  # any integer dtype
    loss, grad = F.cross_entropy(logits, targets)
    loss_ref, grad_ref = R.cross_entropy(logits, targets)
    assert_close(loss, loss_ref, dtype)
    assert_close(grad, grad_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BCE_SHAPES)
def test_binary_cross_entropy(shape, dtype, threads):
    probs, targets = bce_inputs(shape, dtype, make_rng(11))
    probs.flat[0], probs.flat[-1] = 0, 1  # clipped inside the logs
    loss, grad = F.binary_cross_entropy(probs, targets)
    loss_ref, grad_ref = R.binary_cross_entropy(probs, targets)
    assert isinstance(loss, dtype.type)
    assert_close(loss, loss_ref, dtype)
    assert_close(grad, grad_ref, dtype)
    loss, grad = F.binary_cross_entropy(probs, targets, eps=1e-3)
    loss_ref, grad_ref = R.binary_cross_entropy(probs, targets, eps=1e-3)
    assert_close(loss, loss_ref, dtype)
    assert_close(grad, grad_ref, dtype)


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_nan(dtype, threads):
    probs, targets = bce_inputs((6,), dtype, make_rng(12))
    probs[2] = np.nan
    loss, grad = F.binary_cross_entropy(probs, targets)
    loss_ref, grad_ref = R.binary_cross_entropy(probs, targets)
    assert np.isnan(loss)
    assert_close(loss, loss_ref, dtype)
    assert_close(grad, grad_ref, dtype)


# --- index dtypes, running statistics in views, aliasing (layouts: test_odd_input) ---


def test_max_pool2d_backward_any_index_dtype_and_layout():
    x = randn(make_rng(14), (2, 3, 6, 6), np.float32)
    y, idx = F.max_pool2d(x, 2)
    grad_out = randn(make_rng(15), y.shape, np.float32)
    want = F.max_pool2d_backward(grad_out, idx, x.shape)
    assert_same(F.max_pool2d_backward(grad_out, idx.astype(np.int32), x.shape), want)
    assert_same(F.max_pool2d_backward(np.asfortranarray(grad_out), idx.T.copy().T, x.shape), want)


def test_batch_norm2d_updates_strided_running_stats():
    x, weight, bias, rm, rv = bn_inputs((2, 3, 4, 4), np.float64, affine=True)
    store = np.zeros((2, 3))
    store[0], store[1] = rm, rv
    rm_view, rv_view = store[0], store[1]
    F.batch_norm2d(x, weight, bias, rm_view, rv_view)
    R.batch_norm2d(x, weight, bias, rm, rv)
    assert_close(store[0], rm, np.float64)
    assert_close(store[1], rv, np.float64)


def test_outputs_do_not_alias_inputs():
    """Eval-mode save_mean is a copy: later running-stat updates do not change it."""
    x, weight, bias, rm, rv = bn_inputs((2, 3, 4, 4), np.float32, affine=True)
    _, save_mean, _ = F.batch_norm2d(x, weight, bias, rm, rv, training=False)
    assert not np.shares_memory(save_mean, rm)
