"""The fast functional API: PyTorch-style CNN operations computed by parallel Numba kernels.

Same names, signatures and results as :mod:`fastcnn.reference` (its pure-NumPy twin,
checked against it in the tests). Layout NCHW, conv weights (out_channels, in_channels,
kh, kw); float32 or float64, one dtype per call; every output has the input's dtype
(max-pool indices are int64). ``stride``, ``padding``, ``dilation`` and ``kernel_size``
take an int or an ``(h, w)`` pair.

Each function checks its arguments with :mod:`fastcnn._checks` (bad input raises
``ValueError``/``TypeError`` naming the argument before any kernel runs), makes its
inputs C-contiguous and writeable (views, strided, Fortran-ordered and read-only arrays are
accepted: they are copied once), allocates its outputs and calls the kernels of
:mod:`fastcnn._kernels`, which split big work over :func:`fastcnn.get_num_threads`
threads. Kernels compile on first use and are cached on disk.
"""

from __future__ import annotations

import math

import numpy as np

from fastcnn import _checks
from fastcnn._kernels import activation, conv, gemm, loss, norm, pool

__all__ = [
    "batch_norm2d",
    "batch_norm2d_backward",
    "binary_cross_entropy",
    "conv2d",
    "conv2d_grad_bias",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "cross_entropy",
    "linear",
    "log_softmax",
    "max_pool2d",
    "max_pool2d_backward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
]


def _c(a, dtype=None):
    """``a`` as a C-contiguous, writeable array (a copy only where needed).

    Writeable because Numba compiles a separate specialisation of every kernel for
    read-only arrays; copying the rare read-only input is cheaper than that compile.
    """
    if (
        type(a) is np.ndarray
        and a.flags.c_contiguous
        and a.flags.writeable
        and (dtype is None or a.dtype == dtype)
    ):
        return a  # what np.require returns here, without its Python overhead
    return np.require(a, dtype, "CW")  # unlike np.ascontiguousarray, keeps 0-D arrays 0-D


def _opt(a):
    return None if a is None else _c(a)


# --- convolution ---------------------------------------------------------------------


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d`` (no groups).

    ``x`` (N, C, H, W), ``weight`` (K, C, KH, KW), ``bias`` (K,) or ``None``; zero
    padding. Returns ``y`` (N, K, OH, OW) of ``x``'s dtype, where
    ``OH = (H + 2*ph - dh*(KH - 1) - 1) // sh + 1`` (likewise OW).
    """
    g = _checks.conv2d_args(x, weight, bias, stride, padding, dilation)
    x, weight, bias = _c(x), _c(weight), _opt(bias)
    out = np.empty((g.n, g.k, g.oh, g.ow), x.dtype)
    conv.forward(x, weight, bias, g, out)
    return out


def conv2d_grad_input(input_shape, weight, grad_out, stride=1, padding=0, dilation=1):
    """Gradient of ``conv2d`` with respect to its input, as ``torch.nn.grad.conv2d_input``.

    ``input_shape`` (N, C, H, W) of the forward's ``x``; ``weight`` (K, C, KH, KW);
    ``grad_out`` (N, K, OH, OW). Returns ``grad_x`` of ``input_shape`` and the dtype
    of ``weight``.
    """
    g = _checks.conv2d_grad_input_args(input_shape, weight, grad_out, stride, padding, dilation)
    weight, grad_out = _c(weight), _c(grad_out)
    out = np.empty((g.n, g.c, g.h, g.w), weight.dtype)
    conv.grad_input(weight, grad_out, g, out)
    return out


def conv2d_grad_weight(x, weight_shape, grad_out, stride=1, padding=0, dilation=1):
    """Gradient of ``conv2d`` with respect to its weight, as ``torch.nn.grad.conv2d_weight``.

    ``x`` (N, C, H, W); ``weight_shape`` (K, C, KH, KW); ``grad_out`` (N, K, OH, OW).
    Returns ``grad_weight`` of ``weight_shape`` and ``x``'s dtype, summed over the batch.
    """
    g = _checks.conv2d_grad_weight_args(x, weight_shape, grad_out, stride, padding, dilation)
    x, grad_out = _c(x), _c(grad_out)
    out = np.empty((g.k, g.c, g.kh, g.kw), x.dtype)
    conv.grad_weight(x, grad_out, g, out)
    return out


def conv2d_grad_bias(grad_out):
    """Gradient of ``conv2d`` with respect to its bias: ``grad_out`` (N, K, OH, OW) summed
    over N, OH and OW. Returns shape (K,), ``grad_out``'s dtype."""
    _checks.conv2d_grad_bias_args(grad_out)
    grad_out = _c(grad_out)
    out = np.empty(grad_out.shape[1], grad_out.dtype)
    conv.grad_bias(grad_out, out)
    return out


# --- pooling -------------------------------------------------------------------------


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max-pool ``x`` (N, C, H, W), as ``torch.nn.functional.max_pool2d(...,
    return_indices=True)``.

    ``stride`` defaults to ``kernel_size``; ``padding`` (at most half the kernel) counts as
    minus infinity; floor mode. Returns ``(y, indices)``: ``y`` (N, C, OH, OW) of ``x``'s
    dtype and int64 ``indices`` of the same shape, flat within each input plane
    (``h * W + w``). Ties go to the first maximum in row-major window order; a NaN wins its
    window (with several NaNs, the last one, as torch).
    """
    g = _checks.max_pool2d_args(x, kernel_size, stride, padding)
    x = _c(x)
    planes = g.n * g.c
    y = np.empty((g.n, g.c, g.oh, g.ow), x.dtype)
    indices = np.empty(y.shape, np.int64)
    x3 = x.reshape(planes, g.h, g.w)
    y3 = y.reshape(planes, g.oh, g.ow)
    i3 = indices.reshape(planes, g.oh, g.ow)
    if (g.kh, g.kw, g.sh, g.sw, g.ph, g.pw) == (2, 2, 2, 2, 0, 0):
        pool.max_pool_2x2(x3, y3, i3)
    else:
        pool.max_pool(x3, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, y3, i3)
    return y, indices


def max_pool2d_backward(grad_out, indices, input_shape):
    """Gradient of ``max_pool2d``: each ``grad_out`` (N, C, OH, OW) value is added to the
    input element its ``indices`` entry (any integer dtype, flat per plane) names;
    overlapping windows accumulate.

    Returns ``grad_x`` of ``input_shape`` (N, C, H, W) and ``grad_out``'s dtype.
    """
    n, c, h, w = _checks.max_pool2d_backward_args(grad_out, indices, input_shape)
    grad_out = _c(grad_out)
    indices = _c(indices, np.int64)
    grad_x = np.empty((n, c, h, w), grad_out.dtype)
    pool.max_pool_backward(grad_out, indices, grad_x)
    return grad_x


# --- batch norm ----------------------------------------------------------------------


def batch_norm2d(x, weight, bias, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    """Batch-normalise ``x`` (N, C, H, W) per channel, as ``torch.nn.functional.batch_norm``.

    ``weight``, ``bias`` (C,) may be ``None`` (meaning 1 and 0). ``running_mean`` and
    ``running_var`` (C,) are both ``None`` or both arrays. Training normalises with the
    batch mean and biased variance and, if running statistics are given, updates them in
    place: ``running = (1 - momentum) * running + momentum * batch_stat``, with the
    unbiased variance. Evaluation (``training=False``) normalises with the running
    statistics and leaves them alone.

    Returns ``(y, save_mean, save_invstd)`` of ``x``'s dtype: ``y`` (N, C, H, W), and
    (C,) vectors of the mean and ``1 / sqrt(var + eps)`` used (batch statistics in
    training, running ones in evaluation), which ``batch_norm2d_backward`` takes.
    """
    momentum, eps = _checks.batch_norm2d_args(
        x, weight, bias, running_mean, running_var, training, momentum, eps
    )
    x = _c(x)
    n, c, h, w = x.shape
    dtype = x.dtype
    weight = np.ones(c, dtype) if weight is None else _c(weight)
    bias = np.zeros(c, dtype) if bias is None else _c(bias)
    y = np.empty_like(x)
    x3, y3 = x.reshape(n, c, h * w), y.reshape(n, c, h * w)
    if training:
        mean = np.empty(c, np.float64)
        var = np.empty(c, np.float64)
        invstd = norm.forward_train(x3, weight, bias, eps, y3, mean, var)
        if running_mean is not None:
            count = n * h * w  # > 1: checked
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * var * (count / (count - 1))
        return y, mean.astype(dtype), invstd.astype(dtype)
    mean = running_mean.astype(dtype)
    invstd = (1 / np.sqrt(running_var.astype(np.float64) + eps)).astype(dtype)
    norm.forward_eval(x3, weight, bias, mean, invstd, y3)
    return y, mean, invstd


def batch_norm2d_backward(grad_out, x, weight, save_mean, save_invstd):
    """Gradients of training-mode ``batch_norm2d`` (through the batch statistics too).

    ``grad_out`` and ``x`` (N, C, H, W); ``weight`` (C,) or ``None`` (meaning 1);
    ``save_mean``, ``save_invstd`` (C,) as returned by the forward. Returns
    ``(grad_x, grad_weight, grad_bias)`` of ``x``'s dtype, shapes (N, C, H, W), (C,), (C,);
    ``grad_weight`` and ``grad_bias`` are returned even when ``weight`` is ``None``.
    """
    _checks.batch_norm2d_backward_args(grad_out, x, weight, save_mean, save_invstd)
    grad_out, x = _c(grad_out), _c(x)
    n, c, h, w = x.shape
    weight = np.ones(c, x.dtype) if weight is None else _c(weight)
    grad_x = np.empty_like(x)
    grad_weight = np.empty(c, x.dtype)
    grad_bias = np.empty(c, x.dtype)
    norm.backward(
        grad_out.reshape(n, c, h * w),
        x.reshape(n, c, h * w),
        weight,
        _c(save_mean),
        _c(save_invstd),
        grad_x.reshape(n, c, h * w),
        grad_weight,
        grad_bias,
    )
    return grad_x, grad_weight, grad_bias


# --- element-wise --------------------------------------------------------------------


def _unary(kernel, x):
    x = _c(x)
    out = np.empty(x.shape, x.dtype)
    kernel(x.reshape(-1), out.reshape(-1))
    return out


def _binary(kernel, grad_out, other):
    grad_out, other = _c(grad_out), _c(other)
    out = np.empty(other.shape, other.dtype)
    kernel(grad_out.reshape(-1), other.reshape(-1), out.reshape(-1))
    return out


def relu(x):
    """``max(x, 0)`` element-wise; any shape, same shape and dtype. ``relu(NaN)`` is NaN."""
    _checks.unary_args(x, "relu")
    return _unary(activation.relu, x)


def relu_backward(grad_out, x):
    """Gradient of ``relu`` at input ``x``: 0 where ``x <= 0``, else ``grad_out`` (so it
    passes where ``x`` is NaN, as torch's ``threshold_backward``). Shape and dtype of ``x``.
    """
    _checks.binary_args(grad_out, x, "relu_backward", "x")
    return _binary(activation.relu_backward, grad_out, x)


def sigmoid(x):
    """``1 / (1 + exp(-x))`` element-wise, without overflow for large ``|x|``; any shape,
    same shape and dtype."""
    _checks.unary_args(x, "sigmoid")
    return _unary(activation.sigmoid, x)


def sigmoid_backward(grad_out, y):
    """Gradient of ``sigmoid`` given its output ``y``: ``grad_out * y * (1 - y)``.

    Shape and dtype of ``y``.
    """
    _checks.binary_args(grad_out, y, "sigmoid_backward", "y")
    return _binary(activation.sigmoid_backward, grad_out, y)


# --- linear, softmax and losses ------------------------------------------------------


def linear(x, weight, bias=None):
    """``x @ weight.T + bias``, as ``torch.nn.functional.linear``.

    ``x`` (..., in_features), ``weight`` (out_features, in_features), ``bias``
    (out_features,) or ``None``. Returns (..., out_features) of ``x``'s dtype.
    """
    _checks.linear_args(x, weight, bias)
    x, weight = _c(x), _c(weight)
    out_features, in_features = weight.shape
    rows = math.prod(x.shape[:-1])  # not -1: that is ambiguous when a size is 0
    out = np.empty(x.shape[:-1] + (out_features,), x.dtype)
    out2 = out.reshape(rows, out_features)
    gemm.dots(x.reshape(rows, in_features), weight, out2)
    if bias is not None:
        out2 += bias
    return out


def _lines(x, axis):
    """View of contiguous ``x`` as (outer, length, inner) with ``axis`` in the middle."""
    return x.reshape(math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1 :]))


def _softmax_family(kernel, x, axis):
    x = _c(x)
    out = np.empty(x.shape, x.dtype)
    if x.size:
        kernel(_lines(x, axis), _lines(out, axis))
    return out


def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x))`` along ``axis``, shifted by the maximum so huge values
    cannot overflow; shape and dtype of ``x``. A NaN or +inf in a slice makes the whole
    slice NaN, as torch."""
    axis = _checks.softmax_args(x, axis, "softmax")
    return _softmax_family(loss.softmax, x, axis)


def log_softmax(x, axis=-1):
    """``log(softmax(x))`` along ``axis``, computed stably as ``x - max - log(sum(exp(x -
    max)))``; shape and dtype of ``x``."""
    axis = _checks.softmax_args(x, axis, "log_softmax")
    return _softmax_family(loss.log_softmax, x, axis)


def cross_entropy(logits, targets):
    """Mean cross-entropy of ``logits`` (N, C) against integer class ``targets`` (N,), as
    ``torch.nn.functional.cross_entropy`` with ``reduction="mean"``.

    Returns ``(loss, grad_logits)``: ``loss`` a NumPy scalar of ``logits``' dtype and
    ``grad_logits = (softmax(logits) - onehot(targets)) / N`` (N, C) of that dtype. Stable
    for huge logits (log-sum-exp shifted by each row's maximum).
    """
    _checks.cross_entropy_args(logits, targets)
    logits = _c(logits)
    grad = np.empty(logits.shape, logits.dtype)
    total = loss.cross_entropy(logits, _c(targets, np.int64), grad)
    return logits.dtype.type(total), grad


def binary_cross_entropy(probs, targets, eps=1e-7):
    """Mean binary cross-entropy of ``probs`` against ``targets`` (same shape, values in
    [0, 1], soft targets allowed), over all elements.

    ``probs`` is clipped to ``[eps, 1 - eps]`` inside the logarithms and the gradient.
    Returns ``(loss, grad_probs)``: a NumPy scalar of the input dtype, and
    ``(p - t) / (p (1 - p)) / size`` (p clipped) of ``probs``' shape and dtype.
    """
    eps = _checks.binary_cross_entropy_args(probs, targets, eps)
    probs, targets = _c(probs), _c(targets)
    grad = np.empty(probs.shape, probs.dtype)
    total = loss.binary_cross_entropy(probs.reshape(-1), targets.reshape(-1), eps, grad.reshape(-1))
    return probs.dtype.type(total), grad
