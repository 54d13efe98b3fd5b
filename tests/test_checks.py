"""Every bad input of issue 2 is rejected through the reference API by ``fastcnn._checks``,
with a ``ValueError``/``TypeError`` whose message names the argument, says what was
expected and echoes what was given.

One table, ``BAD_INPUTS``: ``pytest.param(call, exception, message_regex, id=...)``.
"""

import re

import numpy as np
import pytest

from fastcnn import reference as ref


def f32(*shape):
    """Zeros of ``shape`` in float32 (values never matter here, shapes and dtypes do)."""
    return np.zeros(shape, np.float32)


def f64(*shape):
    return np.zeros(shape, np.float64)


def readonly(x):
    x.flags.writeable = False
    return x


X, W, G = f32(2, 3, 6, 6), f32(4, 3, 3, 3), f32(2, 4, 4, 4)  # a valid conv: 6x6 -> 4x4
BN = f32(4, 3, 2, 2)
C3 = f32(3)
IDX = np.zeros((1, 1, 2, 2), np.int64)  # a valid 2x2 pool of a 4x4 plane
GP = f32(1, 1, 2, 2)


def esc(text):
    return re.escape(text)


BAD_INPUTS = [
    # --- wrong rank ---
    pytest.param(
        lambda: ref.conv2d(f32(3, 6, 6), W),
        ValueError,
        esc("conv2d: x must be a 4-D array (N, C, H, W), got shape (3, 6, 6)"),
        id="conv-x-3d",
    ),
    pytest.param(
        lambda: ref.conv2d(X, f32(4, 3, 3)),
        ValueError,
        esc("conv2d: weight must be a 4-D array (out_channels, in_channels, kh, kw)"),
        id="conv-weight-3d",
    ),
    pytest.param(
        lambda: ref.max_pool2d(f32(6, 6), 2),
        ValueError,
        esc("max_pool2d: x must be a 4-D array"),
        id="pool-x-2d",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(f32(4, 3), None, None, None, None),
        ValueError,
        esc("batch_norm2d: x must be a 4-D array"),
        id="bn-x-2d",
    ),
    pytest.param(
        lambda: ref.conv2d_grad_bias(f32(4, 4)),
        ValueError,
        esc("conv2d_grad_bias: grad_out must be a 4-D array"),
        id="grad-bias-2d",
    ),
    pytest.param(
        lambda: ref.linear(f32(2, 3), f32(3)),
        ValueError,
        esc("linear: weight must be a 2-D array (out_features, in_features), got shape (3,)"),
        id="linear-weight-1d",
    ),
    pytest.param(
        lambda: ref.cross_entropy(f32(4), np.zeros(4, np.int64)),
        ValueError,
        esc("cross_entropy: logits must be a 2-D array (N, C), got shape (4,)"),
        id="ce-logits-1d",
    ),
    pytest.param(
        lambda: ref.softmax(f32()),
        ValueError,
        esc("softmax: x must have at least one dimension"),
        id="softmax-0d",
    ),
    # --- channel mismatch ---
    pytest.param(
        lambda: ref.conv2d(X, f32(4, 2, 3, 3)),
        ValueError,
        esc("conv2d: weight has 2 input channels but the input has 3"),
        id="conv-channels",
    ),
    pytest.param(
        lambda: ref.conv2d_grad_weight(X, (4, 5, 3, 3), G),
        ValueError,
        esc("conv2d_grad_weight: weight has 5 input channels but the input has 3"),
        id="grad-weight-channels",
    ),
    pytest.param(
        lambda: ref.conv2d_grad_input((2, 1, 6, 6), W, G),
        ValueError,
        esc("conv2d_grad_input: weight has 3 input channels but the input has 1"),
        id="grad-input-channels",
    ),
    pytest.param(
        lambda: ref.linear(f32(2, 4), f32(5, 3)),
        ValueError,
        esc("linear: x must have shape (..., 3) to match weight (5, 3), got (2, 4)"),
        id="linear-features",
    ),
    # --- kernel larger than the padded input ---
    pytest.param(
        lambda: ref.conv2d(f32(1, 3, 2, 2), W),
        ValueError,
        esc("conv2d: kernel (3, 3) with dilation (1, 1) is larger than the padded input (2, 2)"),
        id="conv-kernel-too-large",
    ),
    pytest.param(
        lambda: ref.conv2d(f32(1, 3, 4, 4), W, dilation=2),
        ValueError,
        esc("kernel (3, 3) with dilation (2, 2) is larger than the padded input (4, 4)"),
        id="conv-dilated-kernel-too-large",
    ),
    pytest.param(
        lambda: ref.max_pool2d(f32(1, 1, 3, 3), 4, padding=0),
        ValueError,
        esc("max_pool2d: kernel_size (4, 4) is larger than the padded input (3, 3)"),
        id="pool-kernel-too-large",
    ),
    # --- stride / dilation < 1, negative padding, malformed int-or-pair ---
    pytest.param(
        lambda: ref.conv2d(X, W, stride=0),
        ValueError,
        esc("conv2d: stride must be >= 1, got 0"),
        id="conv-stride-0",
    ),
    pytest.param(
        lambda: ref.conv2d(X, W, stride=(1, -2)),
        ValueError,
        esc("conv2d: stride must be >= 1, got (1, -2)"),
        id="conv-stride-pair-negative",
    ),
    pytest.param(
        lambda: ref.conv2d(X, W, dilation=0),
        ValueError,
        esc("conv2d: dilation must be >= 1, got 0"),
        id="conv-dilation-0",
    ),
    pytest.param(
        lambda: ref.conv2d(X, W, padding=-1),
        ValueError,
        esc("conv2d: padding must be >= 0, got -1"),
        id="conv-padding-negative",
    ),
    pytest.param(
        lambda: ref.conv2d_grad_input(X.shape, W, G, stride=0),
        ValueError,
        esc("conv2d_grad_input: stride must be >= 1, got 0"),
        id="grad-input-stride-0",
    ),
    pytest.param(
        lambda: ref.conv2d(X, W, stride=1.5),
        TypeError,
        esc("conv2d: stride must be an int or a pair of ints, got 1.5"),
        id="conv-stride-float",
    ),
    pytest.param(
        lambda: ref.conv2d(X, W, padding=(1, 1, 1)),
        TypeError,
        esc("conv2d: padding must be an int or a pair of ints, got (1, 1, 1)"),
        id="conv-padding-triple",
    ),
    pytest.param(
        lambda: ref.conv2d(X, W, dilation=True),
        TypeError,
        esc("conv2d: dilation must be an int or a pair of ints, got True"),
        id="conv-dilation-bool",
    ),
    pytest.param(
        lambda: ref.max_pool2d(X, 0),
        ValueError,
        esc("max_pool2d: kernel_size must be >= 1, got 0"),
        id="pool-kernel-0",
    ),
    pytest.param(
        lambda: ref.max_pool2d(X, 2, stride=0),
        ValueError,
        esc("max_pool2d: stride must be >= 1, got 0"),
        id="pool-stride-0",
    ),
    pytest.param(
        lambda: ref.max_pool2d(X, 2, padding=-1),
        ValueError,
        esc("max_pool2d: padding must be >= 0, got -1"),
        id="pool-padding-negative",
    ),
    # --- padding over half the pooling kernel ---
    pytest.param(
        lambda: ref.max_pool2d(X, 3, padding=2),
        ValueError,
        esc("max_pool2d: padding must be at most half of kernel_size (3, 3), got (2, 2)"),
        id="pool-padding-over-half",
    ),
    pytest.param(
        lambda: ref.max_pool2d(X, (2, 4), padding=(1, 3)),
        ValueError,
        esc("padding must be at most half of kernel_size (2, 4), got (1, 3)"),
        id="pool-padding-over-half-pair",
    ),
    # --- integer, complex, half and mixed dtypes ---
    pytest.param(
        lambda: ref.conv2d(X.astype(np.int64), W),
        TypeError,
        esc("conv2d: x must have dtype float32 or float64, got int64"),
        id="conv-x-int",
    ),
    pytest.param(
        lambda: ref.conv2d(X, W.astype(np.complex128)),
        TypeError,
        esc("conv2d: weight must have dtype float32 or float64, got complex128"),
        id="conv-weight-complex",
    ),
    pytest.param(
        lambda: ref.relu(f32(3).astype(np.float16)),
        TypeError,
        esc("relu: x must have dtype float32 or float64, got float16"),
        id="relu-half",
    ),
    pytest.param(
        lambda: ref.max_pool2d(X.astype(np.uint8), 2),
        TypeError,
        esc("max_pool2d: x must have dtype float32 or float64, got uint8"),
        id="pool-x-uint8",
    ),
    pytest.param(
        lambda: ref.conv2d(X, W.astype(np.float64)),
        TypeError,
        esc(
            "conv2d: arrays must share one dtype (float32 or float64), got x=float32, "
            "weight=float64"
        ),
        id="conv-mixed-dtypes",
    ),
    pytest.param(
        lambda: ref.conv2d(X, W, f64(4)),
        TypeError,
        esc("got x=float32, weight=float32, bias=float64"),
        id="conv-bias-mixed-dtype",
    ),
    pytest.param(
        lambda: ref.conv2d_grad_input(X.shape, W, G.astype(np.float64)),
        TypeError,
        esc("conv2d_grad_input: arrays must share one dtype"),
        id="grad-input-mixed-dtypes",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(BN, C3, C3, C3, f64(3)),
        TypeError,
        esc("batch_norm2d: arrays must share one dtype"),
        id="bn-mixed-dtypes",
    ),
    pytest.param(
        lambda: ref.linear(f32(2, 3), f64(4, 3)),
        TypeError,
        esc("linear: arrays must share one dtype"),
        id="linear-mixed-dtypes",
    ),
    pytest.param(
        lambda: ref.binary_cross_entropy(f32(3), f64(3)),
        TypeError,
        esc("binary_cross_entropy: arrays must share one dtype"),
        id="bce-mixed-dtypes",
    ),
    # --- bias or BN parameter of the wrong length ---
    pytest.param(
        lambda: ref.conv2d(X, W, f32(3)),
        ValueError,
        esc("conv2d: bias must have shape (4,), got (3,)"),
        id="conv-bias-length",
    ),
    pytest.param(
        lambda: ref.linear(f32(2, 3), f32(5, 3), f32(5, 1)),
        ValueError,
        esc("linear: bias must have shape (5,), got (5, 1)"),
        id="linear-bias-shape",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(BN, f32(2), C3, None, None),
        ValueError,
        esc("batch_norm2d: weight must have shape (3,), got (2,)"),
        id="bn-weight-length",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(BN, C3, f32(4), None, None),
        ValueError,
        esc("batch_norm2d: bias must have shape (3,), got (4,)"),
        id="bn-bias-length",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(BN, None, None, f32(1), C3),
        ValueError,
        esc("batch_norm2d: running_mean must have shape (3,), got (1,)"),
        id="bn-running-mean-length",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(BN, None, None, C3, f32(3, 1)),
        ValueError,
        esc("batch_norm2d: running_var must have shape (3,), got (3, 1)"),
        id="bn-running-var-shape",
    ),
    pytest.param(
        lambda: ref.batch_norm2d_backward(BN, BN, None, f32(2), C3),
        ValueError,
        esc("batch_norm2d_backward: save_mean must have shape (3,), got (2,)"),
        id="bn-backward-save-mean-length",
    ),
    # --- other batch-norm arguments ---
    pytest.param(
        lambda: ref.batch_norm2d(BN, None, None, C3.copy(), None),
        ValueError,
        esc("batch_norm2d: give both running_mean and running_var, or neither"),
        id="bn-one-running-stat",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(BN, None, None, None, None, training=False),
        ValueError,
        esc("batch_norm2d: evaluation (training=False) needs running_mean and running_var"),
        id="bn-eval-without-stats",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(BN, None, None, readonly(f32(3)), f32(3)),
        ValueError,
        esc("batch_norm2d: running_mean must be writeable"),
        id="bn-running-mean-readonly",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(BN, None, None, None, None, training=1),
        TypeError,
        esc("batch_norm2d: training must be a bool, got 1"),
        id="bn-training-int",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(BN, None, None, None, None, momentum=1.5),
        ValueError,
        esc("batch_norm2d: momentum must be <= 1.0, got 1.5"),
        id="bn-momentum-over-1",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(BN, None, None, None, None, eps=0.0),
        ValueError,
        esc("batch_norm2d: eps must be > 0.0, got 0.0"),
        id="bn-eps-0",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(BN, None, None, None, None, eps=float("nan")),
        ValueError,
        esc("batch_norm2d: eps must be finite, got nan"),
        id="bn-eps-nan",
    ),
    # --- BN training with one value per channel ---
    pytest.param(
        lambda: ref.batch_norm2d(f32(1, 3, 1, 1), None, None, None, None),
        ValueError,
        esc(
            "batch_norm2d: training needs more than one value per channel, "
            "got input shape (1, 3, 1, 1)"
        ),
        id="bn-one-value-per-channel",
    ),
    pytest.param(
        lambda: ref.batch_norm2d(f32(0, 3, 4, 4), None, None, None, None),
        ValueError,
        esc("batch_norm2d: training needs more than one value per channel"),
        id="bn-train-empty-batch",
    ),
    # --- grad_out inconsistent with the shapes ---
    pytest.param(
        lambda: ref.conv2d_grad_input(X.shape, W, f32(2, 4, 5, 5)),
        ValueError,
        esc("conv2d_grad_input: grad_out must have shape (2, 4, 4, 4), got (2, 4, 5, 5)"),
        id="grad-input-grad-out-shape",
    ),
    pytest.param(
        lambda: ref.conv2d_grad_weight(X, W.shape, f32(2, 5, 4, 4)),
        ValueError,
        esc("conv2d_grad_weight: grad_out must have shape (2, 4, 4, 4), got (2, 5, 4, 4)"),
        id="grad-weight-grad-out-shape",
    ),
    pytest.param(
        lambda: ref.conv2d_grad_weight(X, W.shape, f32(4, 4, 4)),
        ValueError,
        esc("conv2d_grad_weight: grad_out must be a 4-D array"),
        id="grad-weight-grad-out-3d",
    ),
    pytest.param(
        lambda: ref.conv2d_grad_input((2, 3, 6), W, G),
        ValueError,
        esc("conv2d_grad_input: input_shape must be 4 non-negative ints, got (2, 3, 6)"),
        id="grad-input-shape-3",
    ),
    pytest.param(
        lambda: ref.conv2d_grad_weight(X, (4, 3, -3, 3), G),
        ValueError,
        esc("conv2d_grad_weight: weight_shape must be 4 non-negative ints, got (4, 3, -3, 3)"),
        id="grad-weight-shape-negative",
    ),
    pytest.param(
        lambda: ref.conv2d_grad_input(X, W, G),
        TypeError,
        esc("conv2d_grad_input: input_shape must be a tuple of 4 ints, got array"),
        id="grad-input-shape-is-array",
    ),
    pytest.param(
        lambda: ref.max_pool2d_backward(
            f32(2, 1, 2, 2), np.zeros((2, 1, 2, 2), np.int64), (1, 1, 4, 4)
        ),
        ValueError,
        esc(
            "max_pool2d_backward: input_shape (1, 1, 4, 4) does not match grad_out "
            "(2, 1, 2, 2) in batch and channels"
        ),
        id="pool-backward-batch-mismatch",
    ),
    pytest.param(
        lambda: ref.batch_norm2d_backward(f32(4, 3, 2, 1), BN, None, C3, C3),
        ValueError,
        esc(
            "batch_norm2d_backward: grad_out must have the shape of x (4, 3, 2, 2), "
            "got (4, 3, 2, 1)"
        ),
        id="bn-backward-grad-out-shape",
    ),
    pytest.param(
        lambda: ref.relu_backward(f32(3), f32(4)),
        ValueError,
        esc("relu_backward: grad_out must have the shape of x (4,), got (3,)"),
        id="relu-backward-shape",
    ),
    pytest.param(
        lambda: ref.sigmoid_backward(f32(2, 2), f32(4)),
        ValueError,
        esc("sigmoid_backward: grad_out must have the shape of y (4,), got (2, 2)"),
        id="sigmoid-backward-shape",
    ),
    # --- pooling indices out of range or not integer ---
    pytest.param(
        lambda: ref.max_pool2d_backward(GP, IDX + 16, (1, 1, 4, 4)),
        ValueError,
        esc(
            "max_pool2d_backward: indices must lie in [0, 16) for input planes of 4x4, "
            "got values in [16, 16]"
        ),
        id="pool-indices-too-large",
    ),
    pytest.param(
        lambda: ref.max_pool2d_backward(GP, IDX - 1, (1, 1, 4, 4)),
        ValueError,
        esc("indices must lie in [0, 16) for input planes of 4x4, got values in [-1, -1]"),
        id="pool-indices-negative",
    ),
    pytest.param(
        lambda: ref.max_pool2d_backward(GP, IDX.astype(np.float32), (1, 1, 4, 4)),
        TypeError,
        esc("max_pool2d_backward: indices must have an integer dtype, got float32"),
        id="pool-indices-float",
    ),
    pytest.param(
        lambda: ref.max_pool2d_backward(GP, IDX[..., :1], (1, 1, 4, 4)),
        ValueError,
        esc(
            "max_pool2d_backward: indices must have the shape of grad_out (1, 1, 2, 2), "
            "got (1, 1, 2, 1)"
        ),
        id="pool-indices-shape",
    ),
    # --- targets out of range or of the wrong kind ---
    pytest.param(
        lambda: ref.cross_entropy(f32(2, 3), np.array([0, 3])),
        ValueError,
        esc("cross_entropy: targets must be class indices in [0, 3), got values in [0, 3]"),
        id="ce-target-too-large",
    ),
    pytest.param(
        lambda: ref.cross_entropy(f32(2, 3), np.array([-1, 2])),
        ValueError,
        esc("targets must be class indices in [0, 3), got values in [-1, 2]"),
        id="ce-target-negative",
    ),
    pytest.param(
        lambda: ref.cross_entropy(f32(2, 3), np.array([0.0, 1.0])),
        TypeError,
        esc("cross_entropy: targets must have an integer dtype, got float64"),
        id="ce-targets-float",
    ),
    pytest.param(
        lambda: ref.cross_entropy(f32(2, 3), np.array([[0], [1]])),
        ValueError,
        esc("cross_entropy: targets must have shape (2,), got (2, 1)"),
        id="ce-targets-shape",
    ),
    pytest.param(
        lambda: ref.cross_entropy(f32(0, 3), np.zeros(0, np.int64)),
        ValueError,
        esc("cross_entropy: logits must have at least one row and one class, got (0, 3)"),
        id="ce-empty-batch",
    ),
    pytest.param(
        lambda: ref.binary_cross_entropy(np.array([0.5, 1.5]), f64(2)),
        ValueError,
        esc("binary_cross_entropy: probs must lie in [0, 1], got values in [0.5, 1.5]"),
        id="bce-probs-over-1",
    ),
    pytest.param(
        lambda: ref.binary_cross_entropy(f64(2), np.array([0.0, -1.0])),
        ValueError,
        esc("binary_cross_entropy: targets must lie in [0, 1]"),
        id="bce-targets-negative",
    ),
    pytest.param(
        lambda: ref.binary_cross_entropy(f64(2), f64(3)),
        ValueError,
        esc("binary_cross_entropy: targets must have the shape of probs (2,), got (3,)"),
        id="bce-shape",
    ),
    pytest.param(
        lambda: ref.binary_cross_entropy(f64(2), f64(2), eps=0.7),
        ValueError,
        esc("binary_cross_entropy: eps must be <= 0.5, got 0.7"),
        id="bce-eps",
    ),
    pytest.param(
        lambda: ref.softmax(f32(2, 3), axis=2),
        ValueError,
        esc("softmax: axis must be in [-2, 1], got 2"),
        id="softmax-axis-range",
    ),
    pytest.param(
        lambda: ref.log_softmax(f32(2, 3), axis=1.0),
        TypeError,
        esc("log_softmax: axis must be an int, got 1.0"),
        id="log-softmax-axis-float",
    ),
    # --- lists or None where arrays are required ---
    pytest.param(
        lambda: ref.conv2d([[[[1.0]]]], W),
        TypeError,
        esc("conv2d: x must be a numpy.ndarray, got list"),
        id="conv-x-list",
    ),
    pytest.param(
        lambda: ref.conv2d(X, None),
        TypeError,
        esc("conv2d: weight must be a numpy.ndarray, got NoneType"),
        id="conv-weight-none",
    ),
    pytest.param(
        lambda: ref.conv2d(X, W, [0.0] * 4),
        TypeError,
        esc("conv2d: bias must be a numpy.ndarray, got list"),
        id="conv-bias-list",
    ),
    pytest.param(
        lambda: ref.conv2d_grad_bias(None),
        TypeError,
        esc("conv2d_grad_bias: grad_out must be a numpy.ndarray, got NoneType"),
        id="grad-bias-none",
    ),
    pytest.param(
        lambda: ref.max_pool2d_backward(GP, [[[[0, 1], [4, 5]]]], (1, 1, 4, 4)),
        TypeError,
        esc("max_pool2d_backward: indices must be a numpy.ndarray, got list"),
        id="pool-indices-list",
    ),
    pytest.param(
        lambda: ref.batch_norm2d_backward(BN, BN, None, None, C3),
        TypeError,
        esc("batch_norm2d_backward: save_mean must be a numpy.ndarray, got NoneType"),
        id="bn-backward-save-mean-none",
    ),
    pytest.param(
        lambda: ref.relu(3.0),
        TypeError,
        esc("relu: x must be a numpy.ndarray, got float"),
        id="relu-float",
    ),
    pytest.param(
        lambda: ref.sigmoid(None),
        TypeError,
        esc("sigmoid: x must be a numpy.ndarray, got NoneType"),
        id="sigmoid-none",
    ),
    pytest.param(
        lambda: ref.linear([1.0, 2.0], f32(3, 2)),
        TypeError,
        esc("linear: x must be a numpy.ndarray, got list"),
        id="linear-x-list",
    ),
    pytest.param(
        lambda: ref.cross_entropy(f32(2, 3), [0, 1]),
        TypeError,
        esc("cross_entropy: targets must be a numpy.ndarray, got list"),
        id="ce-targets-list",
    ),
]


@pytest.mark.parametrize(("call", "exception", "message"), BAD_INPUTS)
def test_bad_input_is_rejected_with_a_message_naming_it(call, exception, message):
    with pytest.raises(exception, match=message):
        call()


def test_a_rejected_training_call_leaves_running_stats_alone():
    # The checks run before anything is computed or written.
    running_mean, running_var = np.full(3, 5.0), np.full(3, 7.0)
    with pytest.raises(TypeError, match="arrays must share one dtype"):
        ref.batch_norm2d(f32(4, 3, 2, 2), None, None, running_mean, running_var)
    np.testing.assert_array_equal(running_mean, np.full(3, 5.0))
    np.testing.assert_array_equal(running_var, np.full(3, 7.0))
