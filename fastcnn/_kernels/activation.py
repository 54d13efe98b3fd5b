"""Element-wise activations over flat (1-D, C-contiguous) arrays.

Each kernel is a ``prange`` over elements; every iteration writes only its own output
element, so nothing races. (A parallel launch costs a few microseconds, which even the
smallest layer of a small net hardly notices, so there is no separate serial build.)
NaN propagates as in PyTorch: ``relu(nan) = nan``, ``sigmoid(nan) = nan``.
"""

import math

from numba import prange

from fastcnn._config import jit


@jit(parallel=True)
def relu(x, out):
    """out = max(x, 0), NaN kept. x, out: (size,)."""
    zero = x.dtype.type(0)
    for i in prange(x.size):
        v = x[i]
        out[i] = zero if v <= zero else v


@jit(parallel=True)
def relu_backward(grad_out, x, out):
    """out = grad_out where x > 0 or x is NaN, else 0 (torch's ``threshold_backward``)."""
    zero = x.dtype.type(0)
    for i in prange(x.size):
        out[i] = zero if x[i] <= zero else grad_out[i]


@jit(parallel=True)
def sigmoid(x, out):
    """out = 1 / (1 + exp(-x)), evaluated so that no exp overflows: for x < 0 as
    exp(x) / (1 + exp(x)). x, out: (size,)."""
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in prange(x.size):
        v = x[i]
        if v >= zero:
            out[i] = one / (one + math.exp(-v))
        else:
            e = math.exp(v)  # also NaN for NaN
            out[i] = e / (one + e)


@jit(parallel=True)
def sigmoid_backward(grad_out, y, out):
    """out = grad_out * y * (1 - y), y the sigmoid's output. All (size,)."""
    one = y.dtype.type(1)
    for i in prange(y.size):
        out[i] = grad_out[i] * y[i] * (one - y[i])
