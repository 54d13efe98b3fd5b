"""Element-wise activations and their backwards, softmax and log-softmax.

``relu`` only selects values and stays in the input dtype; the rest compute in float64
and return the input dtype. NaN and infinities propagate as in PyTorch. Results are
arrays even for 0-D input (``np.asarray`` turns NumPy's 0-D ufunc scalars back into arrays).
"""

import numpy as np

from fastcnn import _checks


def relu(x):
    """``max(x, 0)`` element-wise, of ``x``'s shape and dtype; ``relu(NaN)`` is NaN, as torch."""
    _checks.unary_args(x, "relu")
    return np.asarray(np.maximum(x, x.dtype.type(0)))  # np.maximum propagates NaN


def relu_backward(grad_out, x):
    """Gradient of ``relu`` at input ``x``: 0 where ``x <= 0``, else ``grad_out``.

    Exactly torch's ``threshold_backward``: where ``x`` is NaN the gradient passes through,
    and a NaN in ``grad_out`` where ``x <= 0`` becomes 0. Shape and dtype of ``x``.
    """
    _checks.binary_args(grad_out, x, "relu_backward", "x")
    return np.where(x <= 0, grad_out.dtype.type(0), grad_out)


def sigmoid(x):
    """``1 / (1 + exp(-x))`` element-wise, of ``x``'s shape and dtype."""
    _checks.unary_args(x, "sigmoid")
    with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives the right 0
        return np.asarray(1 / (1 + np.exp(-x.astype(np.float64))), dtype=x.dtype)


def sigmoid_backward(grad_out, y):
    """Gradient of ``sigmoid`` given its output ``y``: ``grad_out * y * (1 - y)``.

    Shape and dtype of ``y``.
    """
    _checks.binary_args(grad_out, y, "sigmoid_backward", "y")
    y64 = y.astype(np.float64)
    return np.asarray(grad_out.astype(np.float64) * y64 * (1 - y64), dtype=y.dtype)


def _log_softmax64(x, axis):
    """log-softmax of float64 ``x`` along ``axis``: shift by the maximum, so huge values
    cannot overflow. A NaN or +inf in a slice makes the whole slice NaN, as torch."""
    # ``initial`` lets a zero-length axis through (its result is empty anyway).
    shifted = x - np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def log_softmax(x, axis=-1):
    """``log(softmax(x))`` along ``axis``, computed stably; shape and dtype of ``x``."""
    axis = _checks.softmax_args(x, axis, "log_softmax")
    with np.errstate(invalid="ignore"):  # inf - inf gives the NaN torch gives
        return _log_softmax64(x.astype(np.float64), axis).astype(x.dtype)


def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x))`` along ``axis``, computed stably; shape and dtype of ``x``."""
    axis = _checks.softmax_args(x, axis, "softmax")
    with np.errstate(invalid="ignore"):
        return np.exp(_log_softmax64(x.astype(np.float64), axis)).astype(x.dtype)
