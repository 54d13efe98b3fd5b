"""``fastcnn.reference`` checked against central finite differences and hand-worked answers.

Finite differences run in float64 on the named case table of ``cases.py``. The scalar
checked is ``L = sum(f(x) * G)`` for a fixed random ``G``, so ``dL/dx`` is exactly the
backward of ``f`` applied to ``G``. Each backward is compared on up to :data:`FD_POINTS`
coordinates (all of them for small arrays); with ``s = max(1, max |analytic|)``:

- largest error  <= ``FD_MAX_ERR * s``
- mean error     <= ``FD_MEAN_ERR * s``

Central differences with step 1e-6 carry a round-off error of about 1e-16 * |L| / 1e-6 and
a truncation error of about 1e-12 * |f'''|, well inside both bounds.
"""

import math
import subprocess
import sys

import numpy as np
import pytest
from cases import (
    BCE_SHAPES,
    BN_SHAPES,
    CE_CASES,
    CONV_CASES,
    DTYPES,
    ELEMENTWISE_SHAPES,
    LINEAR_CASES,
    POOL_CASES,
    SOFTMAX_CASES,
    assert_close,
    bce_inputs,
    ce_inputs,
    conv_inputs,
    conv_kwargs,
    distinct,
    linear_inputs,
    make_rng,
    pool_kwargs,
    pool_out_shape,
    randn,
)

from fastcnn import reference as ref

FD_STEP = 1e-6
FD_POINTS = 40
FD_MAX_ERR = 1e-6
FD_MEAN_ERR = 1e-7


def _small(table):
    """The cases worth differentiating: drops the empty batches (nothing to check) and the
    MNIST-sized ones (there for the kernel tests; slow here, and no new geometry)."""
    return [p for p in table if not p.id.startswith(("empty", "mnist"))]


def assert_fd(loss, x, analytic, seed=0):
    """Compare ``analytic`` with central differences of the scalar ``loss`` at ``x``.

    ``x`` is perturbed in place and restored; up to ``FD_POINTS`` coordinates are checked.
    """
    assert analytic.shape == x.shape and analytic.dtype == np.float64
    flat = x.reshape(-1)  # a view: x is contiguous
    assert np.shares_memory(flat, x)
    points = np.arange(flat.size)
    if flat.size > FD_POINTS:
        points = make_rng(seed).choice(flat.size, FD_POINTS, replace=False)
    numeric = np.empty(points.size)
    for n, p in enumerate(points):
        saved = flat[p]
        flat[p] = saved + FD_STEP
        up = loss(x)
        flat[p] = saved - FD_STEP
        down = loss(x)
        flat[p] = saved
        numeric[n] = (up - down) / (2 * FD_STEP)
    err = np.abs(numeric - analytic.reshape(-1)[points])
    scale = max(1.0, float(np.abs(analytic).max()))
    assert err.max() <= FD_MAX_ERR * scale, f"max error {err.max():.3g} (scale {scale:.3g})"
    assert err.mean() <= FD_MEAN_ERR * scale, f"mean error {err.mean():.3g}"


# --- convolution ---------------------------------------------------------------------


@pytest.mark.parametrize("case", _small(CONV_CASES))
def test_conv2d_gradients_match_finite_differences(case):
    x, weight, bias, g = conv_inputs(case, np.float64, make_rng(1))
    kw = conv_kwargs(case)
    bias_for_fd = np.zeros(weight.shape[0]) if bias is None else bias
    assert_fd(
        lambda x_: np.sum(ref.conv2d(x_, weight, bias, **kw) * g),
        x,
        ref.conv2d_grad_input(x.shape, weight, g, **kw),
    )
    assert_fd(
        lambda w_: np.sum(ref.conv2d(x, w_, bias, **kw) * g),
        weight,
        ref.conv2d_grad_weight(x, weight.shape, g, **kw),
    )
    assert_fd(
        lambda b_: np.sum(ref.conv2d(x, weight, b_, **kw) * g),
        bias_for_fd,
        ref.conv2d_grad_bias(g),
    )


def test_conv2d_vertical_edge_kernel():
    # Columns 0-2 are bright, 3-4 dark: the edge sits between columns 2 and 3.
    x = np.array([[1.0, 1.0, 1.0, 0.0, 0.0]] * 5)[None, None]
    weight = np.array([[1.0, 0.0, -1.0]] * 3)[None, None]
    # Output column j sees input columns j..j+2: 3 * (x[j] - x[j+2]) = 0, 3, 3.
    expected = np.array([[0.0, 3.0, 3.0]] * 3)[None, None]
    assert_close(ref.conv2d(x, weight), expected, np.float64)
    assert_close(ref.conv2d(x, weight, np.array([0.5])), expected + 0.5, np.float64)

    # With grad_out all ones, grad_x[r, c] = (#kernel rows over r) * (sum of the kernel
    # columns over c), an outer product.
    grad_x = ref.conv2d_grad_input(x.shape, weight, np.ones((1, 1, 3, 3)))
    expected = np.outer([1, 2, 3, 2, 1], [1, 1, 0, -1, -1]).astype(float)[None, None]
    assert_close(grad_x, expected, np.float64)


def test_conv2d_stride_padding_dilation_by_hand():
    # x[r, c] = 4r + c on 4x4, padding 1, a 2x2 kernel with dilation 2 and stride 2:
    # output (r, s) tap (i, j) reads x[2r + 2i - 1, 2s + 2j - 1] (0 outside).
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    weight = np.array([[1.0, 10.0], [100.0, 1000.0]])[None, None]
    y = ref.conv2d(x, weight, stride=2, padding=1, dilation=2)
    # (0, 0): 1000 x[1,1];  (0, 1): 100 x[1,1] + 1000 x[1,3];
    # (1, 0): 10 x[1,1] + 1000 x[3,1];  (1, 1): x[1,1] + 10 x[1,3] + 100 x[3,1] + 1000 x[3,3].
    expected = np.array([[5000.0, 7500.0], [13050.0, 16375.0]])[None, None]
    assert_close(y, expected, np.float64)


def test_conv2d_nan_spreads_only_to_windows_that_see_it():
    x = np.ones((2, 1, 5, 5))
    x[0, 0, 2, 3] = np.nan
    y = ref.conv2d(x, np.ones((2, 1, 3, 3)))
    nan_expected = np.zeros((2, 2, 3, 3), dtype=bool)
    nan_expected[0, :, 0:3, 1:3] = True  # output (r, s) sees rows r..r+2, columns s..s+2
    np.testing.assert_array_equal(np.isnan(y), nan_expected)
    assert np.all(y[~nan_expected] == 9.0)


# --- max-pooling ---------------------------------------------------------------------


@pytest.mark.parametrize("case", _small(POOL_CASES))
def test_max_pool2d_backward_matches_finite_differences(case):
    # Distinct values (even for the tie cases), at least 2e-4 apart, within [-1, 1]: a
    # perturbation of 1e-6 never moves an argmax, and the loss stays small.
    rng = make_rng(2)
    size = int(np.prod(case["x_shape"]))
    x = distinct(rng, case["x_shape"], np.float64, gap=min(0.1, 2 / size))
    g = randn(rng, pool_out_shape(case), np.float64)
    y, indices = ref.max_pool2d(x, **pool_kwargs(case))
    assert y.shape == g.shape and indices.dtype == np.int64
    assert_fd(
        lambda x_: np.sum(ref.max_pool2d(x_, **pool_kwargs(case))[0] * g),
        x,
        ref.max_pool2d_backward(g, indices, x.shape),
    )


def test_max_pool2d_4x4_by_hand():
    x = np.array(
        [
            [1.0, 2.0, 5.0, 3.0],
            [4.0, 0.0, 6.0, 7.0],
            [9.0, 8.0, 1.0, 1.0],
            [3.0, 2.0, 0.0, 4.0],
        ]
    )[None, None]
    y, indices = ref.max_pool2d(x, 2)
    assert_close(y, np.array([[4.0, 7.0], [9.0, 4.0]])[None, None], np.float64)
    np.testing.assert_array_equal(indices, np.array([[4, 7], [8, 15]])[None, None])
    assert indices.dtype == np.int64

    grad_x = ref.max_pool2d_backward(
        np.array([[1.0, 2.0], [3.0, 4.0]])[None, None], indices, x.shape
    )
    expected = np.zeros((4, 4))
    expected[1, 0], expected[1, 3], expected[2, 0], expected[3, 3] = 1, 2, 3, 4
    assert_close(grad_x, expected[None, None], np.float64)


def test_max_pool2d_overlapping_windows_accumulate_gradient():
    # 3x3 windows, stride 1, on a 4x4 input whose maximum (9, index 5) is in all 4 windows.
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = 9.0
    y, indices = ref.max_pool2d(x, 3, stride=1)
    np.testing.assert_array_equal(indices, np.full((1, 1, 2, 2), 5))
    grad_x = ref.max_pool2d_backward(np.ones((1, 1, 2, 2)), indices, x.shape)
    assert grad_x[0, 0, 1, 1] == 4.0 and grad_x.sum() == 4.0


TIE_CASES = [
    pytest.param([[1.0, 3.0], [3.0, 2.0]], 1, id="first-in-row-major-order"),
    pytest.param([[2.0, 2.0], [2.0, 2.0]], 0, id="all-equal"),
    pytest.param([[-np.inf, -np.inf], [-np.inf, -np.inf]], 0, id="all-minus-inf"),
    pytest.param([[np.nan, 5.0], [1.0, 2.0]], 0, id="nan-wins"),
    pytest.param([[1.0, 5.0], [np.nan, 2.0]], 2, id="nan-beats-larger"),
    # torch's CPU test is `v > best or isnan(v)`: a later NaN takes over from an earlier one.
    pytest.param([[1.0, np.nan], [np.nan, 0.0]], 2, id="last-nan-as-torch"),
    pytest.param([[np.inf, 1.0], [np.inf, 2.0]], 0, id="inf-ties"),
]


@pytest.mark.parametrize(("window", "index"), TIE_CASES)
def test_max_pool2d_ties_and_nan(window, index):
    x = np.array(window)[None, None]
    y, indices = ref.max_pool2d(x, 2)
    assert indices[0, 0, 0, 0] == index
    assert_close(y, x.reshape(-1)[index].reshape(1, 1, 1, 1), np.float64)


def test_max_pool2d_padding_never_wins():
    # All -inf with padding 1: every window's index is its first real pixel (as torch).
    x = np.full((1, 1, 3, 3), -np.inf)
    y, indices = ref.max_pool2d(x, 3, stride=2, padding=1)
    np.testing.assert_array_equal(indices[0, 0], [[0, 1], [3, 4]])
    assert np.all(y == -np.inf)
    # Negative values with padding: the maximum is a real pixel, not the padding.
    x = -1.0 - np.arange(9.0).reshape(1, 1, 3, 3)
    y, indices = ref.max_pool2d(x, 3, stride=2, padding=1)
    np.testing.assert_array_equal(indices[0, 0], [[0, 1], [3, 4]])
    assert_close(y, np.array([[-1.0, -2.0], [-4.0, -5.0]])[None, None], np.float64)


# --- batch norm ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", _small(BN_SHAPES))
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
def test_batch_norm2d_backward_matches_finite_differences(shape, affine):
    rng = make_rng(3)
    c = shape[1]
    x = randn(rng, shape, np.float64, scale=2.0) + 0.5
    weight = randn(rng, c, np.float64) if affine else None
    bias = randn(rng, c, np.float64) if affine else None
    g = randn(rng, shape, np.float64)

    def loss(x_=x, weight_=weight, bias_=bias):
        return np.sum(ref.batch_norm2d(x_, weight_, bias_, None, None)[0] * g)

    _, mean, invstd = ref.batch_norm2d(x, weight, bias, None, None)
    grad_x, grad_w, grad_b = ref.batch_norm2d_backward(g, x, weight, mean, invstd)
    assert_fd(lambda x_: loss(x_=x_), x, grad_x)
    if affine:
        assert_fd(lambda w_: loss(weight_=w_), weight, grad_w)
        assert_fd(lambda b_: loss(bias_=b_), bias, grad_b)
    else:
        # Without weight and bias their gradients are those of weight = 1, bias = 0.
        ones, zeros = np.ones(c), np.zeros(c)
        assert_fd(lambda w_: loss(weight_=w_, bias_=zeros), ones, grad_w)
        assert_fd(lambda b_: loss(weight_=ones, bias_=b_), zeros, grad_b)


def _bn_known_input():
    # x (N=2, C=2, H=1, W=2). Channel 0 holds 0, 0, 2, 2: mean 1, biased variance 1,
    # unbiased 4/3. Channel 1 holds 1, 3, 5, 7: mean 4, biased variance 5, unbiased 20/3.
    return np.array([[[[0.0, 0.0]], [[1.0, 3.0]]], [[[2.0, 2.0]], [[5.0, 7.0]]]])


def test_batch_norm2d_training_by_hand():
    x = _bn_known_input()
    weight, bias = np.array([2.0, 1.0]), np.array([0.0, 10.0])
    running_mean, running_var = np.zeros(2), np.ones(2)
    y, mean, invstd = ref.batch_norm2d(
        x, weight, bias, running_mean, running_var, training=True, momentum=0.1, eps=1e-5
    )
    s0, s1 = 1 / math.sqrt(1 + 1e-5), 1 / math.sqrt(5 + 1e-5)
    expected = np.array(
        [
            [[[-2 * s0, -2 * s0]], [[10 - 3 * s1, 10 - s1]]],
            [[[2 * s0, 2 * s0]], [[10 + s1, 10 + 3 * s1]]],
        ]
    )
    assert_close(y, expected, np.float64)
    assert_close(mean, [1.0, 4.0], np.float64)
    assert_close(invstd, [s0, s1], np.float64)
    # Running stats: (1 - 0.1) * old + 0.1 * batch, with the unbiased variance.
    assert_close(running_mean, [0.1, 0.4], np.float64)
    assert_close(running_var, [0.9 + 0.1 * 4 / 3, 0.9 + 0.1 * 20 / 3], np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm2d_updates_running_stats_in_place(dtype):
    x = _bn_known_input().astype(dtype)
    running_mean, running_var = np.full(2, 1.0, dtype), np.full(2, 2.0, dtype)
    before = running_mean, running_var
    ref.batch_norm2d(x, None, None, running_mean, running_var, momentum=0.5)
    assert before[0] is running_mean and before[1] is running_var
    assert running_mean.dtype == dtype and running_var.dtype == dtype
    assert_close(running_mean, np.array([1.0, 2.5]), dtype)
    assert_close(running_var, np.array([1 + 2 / 3, 1 + 10 / 3]), dtype)


def test_batch_norm2d_eval_uses_running_stats_and_leaves_them():
    x = _bn_known_input()
    running_mean, running_var = np.array([1.0, 2.0]), np.array([3.0, 0.5])
    y, mean, invstd = ref.batch_norm2d(
        x,
        np.array([2.0, 1.0]),
        np.array([0.0, -1.0]),
        running_mean,
        running_var,
        training=False,
        eps=1e-5,
    )
    s = 1 / np.sqrt(np.array([3.0, 0.5]) + 1e-5)
    expected = (x - np.array([1.0, 2.0])[:, None, None]) * s[:, None, None]
    expected = expected * np.array([2.0, 1.0])[:, None, None] + np.array([0.0, -1.0])[:, None, None]
    assert_close(y, expected, np.float64)
    assert_close(mean, [1.0, 2.0], np.float64)
    assert_close(invstd, s, np.float64)
    np.testing.assert_array_equal(running_mean, [1.0, 2.0])
    np.testing.assert_array_equal(running_var, [3.0, 0.5])


def test_batch_norm2d_training_output_is_normalised():
    x = randn(make_rng(4), (6, 3, 4, 5), np.float64, scale=3.0) + 7.0
    y, _, _ = ref.batch_norm2d(x, None, None, None, None, eps=1e-12)
    assert_close(y.mean(axis=(0, 2, 3)), np.zeros(3), np.float64)
    assert_close(y.var(axis=(0, 2, 3)), np.ones(3), np.float64)


# --- activations ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", _small(ELEMENTWISE_SHAPES))
def test_relu_and_sigmoid_backward_match_finite_differences(shape):
    rng = make_rng(5)
    # Distinct values shifted off zero: relu is differentiable at every point checked.
    x = distinct(rng, shape, np.float64, gap=0.37) + 0.05
    g = randn(rng, shape, np.float64)
    assert_fd(lambda x_: np.sum(ref.relu(x_) * g), x, ref.relu_backward(g, x))
    assert_fd(lambda x_: np.sum(ref.sigmoid(x_) * g), x, ref.sigmoid_backward(g, ref.sigmoid(x)))


def test_relu_and_sigmoid_by_hand():
    x = np.array([-2.0, -0.0, 0.0, 3.0, np.nan, np.inf, -np.inf])
    assert_close(ref.relu(x), [0.0, 0.0, 0.0, 3.0, np.nan, np.inf, 0.0], np.float64)
    g = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, np.nan])
    # torch's threshold_backward: 0 where x <= 0 (even if grad_out is NaN), grad elsewhere,
    # including where x is NaN.
    assert_close(ref.relu_backward(g, x), [0.0, 0.0, 0.0, 4.0, 5.0, 6.0, 0.0], np.float64)

    x = np.array([0.0, math.log(3.0), -1000.0, 1000.0, np.nan])
    y = ref.sigmoid(x)
    assert_close(y, [0.5, 0.75, 0.0, 1.0, np.nan], np.float64)
    assert_close(
        ref.sigmoid_backward(np.full(5, 2.0), y), [0.5, 0.375, 0.0, 0.0, np.nan], np.float64
    )


# --- linear, softmax and losses ------------------------------------------------------


@pytest.mark.parametrize("case", _small(LINEAR_CASES))
def test_linear_matches_finite_differences_of_its_gradient_formulas(case):
    # The gradients the layers build from ``linear``: g @ W, g^T x (over all leading
    # axes) and the sum of g.
    x, weight, bias, g = linear_inputs(case, np.float64, make_rng(6))
    b = np.zeros(weight.shape[0]) if bias is None else bias
    assert_fd(lambda x_: np.sum(ref.linear(x_, weight, b) * g), x, g @ weight)
    rows_g, rows_x = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
    assert_fd(lambda w_: np.sum(ref.linear(x, w_, b) * g), weight, rows_g.T @ rows_x)
    assert_fd(lambda b_: np.sum(ref.linear(x, weight, b_) * g), b, rows_g.sum(axis=0))


def test_linear_by_hand():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    weight = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]])
    expected = np.array([[1.0, 3.0, -4.0], [3.0, 7.0, -8.0], [0.0, 0.0, 0.0]])
    assert_close(ref.linear(x, weight), expected, np.float64)
    assert_close(ref.linear(x, weight, np.array([1.0, 2.0, 3.0])), expected + [1, 2, 3], np.float64)


@pytest.mark.parametrize("case", SOFTMAX_CASES)
def test_softmax_and_log_softmax_match_finite_differences(case):
    rng = make_rng(7)
    x = randn(rng, case["shape"], np.float64, scale=2.0)
    g = randn(rng, case["shape"], np.float64)
    axis = case["axis"]
    s = ref.softmax(x, axis)
    # Jacobian-vector products written out: softmax s * (g - <g, s>), log-softmax g - s <g, 1>.
    assert_fd(
        lambda x_: np.sum(ref.softmax(x_, axis) * g),
        x,
        s * (g - np.sum(g * s, axis=axis, keepdims=True)),
    )
    assert_fd(
        lambda x_: np.sum(ref.log_softmax(x_, axis) * g),
        x,
        g - s * np.sum(g, axis=axis, keepdims=True),
    )


def test_softmax_by_hand():
    x = np.log(np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 2.0]]))
    expected = np.array([[1 / 6, 1 / 3, 1 / 2], [1 / 4, 1 / 4, 1 / 2]])
    assert_close(ref.softmax(x), expected, np.float64)
    assert_close(ref.log_softmax(x), np.log(expected), np.float64)
    # Shifting a row changes nothing, even far beyond exp's range.
    assert_close(ref.softmax(x + 1000.0), expected, np.float64)
    assert_close(ref.softmax(x.T, axis=0), expected.T, np.float64)
    # +inf or NaN in a row make that row NaN (as torch); the other row is untouched.
    bad = np.array([[np.inf, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert_close(ref.softmax(bad), [[np.nan] * 3, [1 / 3] * 3], np.float64)


@pytest.mark.parametrize("case", CE_CASES)
def test_cross_entropy_gradient_matches_finite_differences(case):
    logits, targets = ce_inputs(case, np.float64, make_rng(8))
    loss, grad = ref.cross_entropy(logits, targets)
    assert isinstance(loss, np.float64)
    assert_fd(lambda z: ref.cross_entropy(z, targets)[0], logits, grad)


def test_cross_entropy_by_hand():
    logits = np.log(np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 2.0]]))
    targets = np.array([2, 0])
    loss, grad = ref.cross_entropy(logits, targets)
    # p(target) = 1/2 and 1/4: loss = (ln 2 + ln 4) / 2; grad = (softmax - onehot) / 2.
    assert_close(loss, np.float64(1.5 * math.log(2.0)), np.float64)
    assert_close(grad, [[1 / 12, 1 / 6, -1 / 4], [-3 / 8, 1 / 8, 1 / 4]], np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e30, 0.0, -1e30], [0.0, 1e30, 0.0]], dtype=dtype)
    loss, grad = ref.cross_entropy(logits, np.array([1, 1]))
    # Row 0 misses by 1e30, row 1 is certain: mean 5e29.
    assert_close(loss, np.array(5e29, dtype=dtype)[()], dtype)
    assert_close(grad, np.array([[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], dtype=dtype), dtype)


@pytest.mark.parametrize("shape", BCE_SHAPES)
def test_binary_cross_entropy_gradient_matches_finite_differences(shape):
    probs, targets = bce_inputs(shape, np.float64, make_rng(9))
    loss, grad = ref.binary_cross_entropy(probs, targets)
    assert isinstance(loss, np.float64)
    assert_fd(lambda p: ref.binary_cross_entropy(p, targets)[0], probs, grad)


def test_binary_cross_entropy_by_hand():
    probs = np.array([0.5, 0.8, 0.0, 1.0])
    targets = np.array([1.0, 0.0, 0.0, 0.0])
    loss, grad = ref.binary_cross_entropy(probs, targets, eps=1e-7)
    # -ln 0.5, -ln 0.2, -ln(1 - 1e-7) and -ln 1e-7 (the clipped ends), averaged.
    terms = [math.log(2), -math.log(0.2), -math.log1p(-1e-7), -math.log(1e-7)]
    assert_close(loss, np.float64(sum(terms) / 4), np.float64)
    # (p - t) / (p (1 - p)) / 4 with p clipped.
    clipped = np.array([0.5, 0.8, 1e-7, 1 - 1e-7])
    expected = (clipped - targets) / (clipped * (1 - clipped)) / 4
    assert_close(grad, expected, np.float64)


# --- every op: dtypes, empty batches, float64 inside, no Numba -----------------------


def _every_op(dtype):
    """One call of every public reference function on small float inputs of ``dtype``."""
    rng = make_rng(10)
    x = randn(rng, (2, 3, 6, 6), dtype)
    w = randn(rng, (4, 3, 3, 3), dtype)
    g = randn(rng, (2, 4, 4, 4), dtype)
    y, idx = ref.max_pool2d(x, 2)
    _, mean, invstd = ref.batch_norm2d(x, None, None, None, None)
    logits = randn(rng, (5, 4), dtype)
    probs = rng.uniform(0.1, 0.9, (5, 4)).astype(dtype)
    return {
        "conv2d": ref.conv2d(x, w, randn(rng, 4, dtype)),
        "conv2d_grad_input": ref.conv2d_grad_input(x.shape, w, g),
        "conv2d_grad_weight": ref.conv2d_grad_weight(x, w.shape, g),
        "conv2d_grad_bias": ref.conv2d_grad_bias(g),
        "max_pool2d": y,
        "max_pool2d_backward": ref.max_pool2d_backward(y, idx, x.shape),
        "batch_norm2d": ref.batch_norm2d(x, None, None, None, None),
        "batch_norm2d_backward": ref.batch_norm2d_backward(x, x, None, mean, invstd),
        "relu": ref.relu(x),
        "relu_backward": ref.relu_backward(x, x),
        "sigmoid": ref.sigmoid(x),
        "sigmoid_backward": ref.sigmoid_backward(x, x),
        "linear": ref.linear(logits, randn(rng, (3, 4), dtype)),
        "softmax": ref.softmax(logits),
        "log_softmax": ref.log_softmax(logits),
        "cross_entropy": ref.cross_entropy(logits, np.array([0, 1, 2, 3, 0])),
        "binary_cross_entropy": ref.binary_cross_entropy(probs, probs),
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_output_has_the_input_dtype(dtype):
    results = _every_op(dtype)
    assert sorted(results) == sorted(ref.__all__)
    for name, result in results.items():
        for out in result if isinstance(result, tuple) else (result,):
            assert isinstance(out, (np.ndarray, np.generic)), name
            assert out.dtype == dtype, name
    assert ref.max_pool2d(randn(make_rng(0), (1, 1, 2, 2), dtype), 2)[1].dtype == np.int64


def test_float32_results_are_float64_results_rounded():
    # The reference computes in float64: on float32 inputs its float32 results are the
    # float64 results of the same values rounded once (max-pool and relu select exactly).
    rng = make_rng(11)
    x32 = randn(rng, (2, 3, 7, 7), np.float32)
    w32 = randn(rng, (4, 3, 3, 3), np.float32)
    x64, w64 = x32.astype(np.float64), w32.astype(np.float64)
    np.testing.assert_array_equal(
        ref.conv2d(x32, w32, padding=1), ref.conv2d(x64, w64, padding=1).astype(np.float32)
    )
    np.testing.assert_array_equal(
        ref.batch_norm2d(x32, None, None, None, None)[0],
        ref.batch_norm2d(x64, None, None, None, None)[0].astype(np.float32),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_element_wise_ops_keep_0d_arrays(dtype):
    x = np.array(-1.5, dtype)
    for out in (ref.relu(x), ref.relu_backward(x, x), ref.sigmoid(x), ref.sigmoid_backward(x, x)):
        assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == dtype


@pytest.mark.parametrize("case", [p for p in CONV_CASES if p.id == "empty-batch"])
def test_empty_batch_gives_empty_outputs(case):
    x, weight, bias, g = conv_inputs(case, np.float32, make_rng(12))
    kw = conv_kwargs(case)
    assert ref.conv2d(x, weight, bias, **kw).shape == g.shape == (0, 3, 5, 5)
    assert ref.conv2d_grad_input(x.shape, weight, g, **kw).shape == x.shape
    assert_close(
        ref.conv2d_grad_weight(x, weight.shape, g, **kw), np.zeros(weight.shape), np.float32
    )
    assert_close(ref.conv2d_grad_bias(g), np.zeros(3), np.float32)
    y, indices = ref.max_pool2d(x, 2)
    assert y.shape == indices.shape == (0, 2, 2, 2)
    assert ref.max_pool2d_backward(y, indices, x.shape).shape == x.shape
    assert ref.relu(x).shape == ref.sigmoid(x).shape == x.shape
    y, _, _ = ref.batch_norm2d(
        x, None, None, np.zeros(2, np.float32), np.ones(2, np.float32), training=False
    )
    assert y.shape == x.shape and y.dtype == np.float32
    assert ref.linear(np.zeros((0, 4), np.float32), np.ones((3, 4), np.float32)).shape == (0, 3)


def test_importing_the_reference_does_not_load_numba():
    code = "import sys, fastcnn.reference; assert 'numba' not in sys.modules, 'numba loaded'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
