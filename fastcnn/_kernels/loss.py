"""Softmax, log-softmax and the two losses.

Softmax runs over the middle axis of a C-contiguous ``(outer, length, inner)`` view, so
one kernel serves every ``axis``: each ``prange`` iteration owns one line
``x[a, :, b]`` and writes only that line of the output. Lines are shifted by their
maximum before ``exp`` (no overflow for huge logits); a NaN anywhere in a line makes its
maximum NaN and so the whole line NaN, as in the reference. The shifted arguments are
never positive, so the vectorisable ``activation.exp_nonpos`` serves as ``exp``.

The loss kernels write per-row (or per-element) terms from the parallel loop and sum them
afterwards in float64, serially or through Numba's race-free reduction variables.
"""

import math

import numpy as np
from numba import prange

from fastcnn._config import jit
from fastcnn._kernels.activation import exp_nonpos


@jit()
def _line_max(x, a, b):
    """Maximum of x[a, :, b], NaN if the line holds a NaN."""
    m = x[a, 0, b]
    for k in range(1, x.shape[1]):
        v = x[a, k, b]
        if v > m or v != v:
            m = v
            if v != v:
                break
    return m


@jit(parallel=True)
def softmax(x, out):
    """out[a, :, b] = exp(x[a, :, b] - max) / sum(exp(...)). x, out: (outer, length, inner)."""
    outer, length, inner = x.shape
    for line in prange(outer * inner):
        a = line // inner
        b = line - a * inner
        m = _line_max(x, a, b)
        s = x.dtype.type(0)
        for k in range(length):
            e = exp_nonpos(x[a, k, b] - m)
            out[a, k, b] = e
            s += e
        for k in range(length):
            out[a, k, b] /= s


@jit(parallel=True)
def log_softmax(x, out):
    """out[a, :, b] = x - max - log(sum(exp(x - max))). x, out: (outer, length, inner)."""
    outer, length, inner = x.shape
    for line in prange(outer * inner):
        a = line // inner
        b = line - a * inner
        m = _line_max(x, a, b)
        s = x.dtype.type(0)
        for k in range(length):
            s += exp_nonpos(x[a, k, b] - m)
        log_s = math.log(s)
        for k in range(length):
            out[a, k, b] = (x[a, k, b] - m) - log_s  # not x - (m + log_s): m may be huge


@jit(parallel=True)
def cross_entropy(logits, targets, grad):
    """Mean cross-entropy of ``logits`` (N, C) against int64 ``targets`` (N,).

    Fills ``grad`` (N, C) with (softmax(logits) - onehot(targets)) / N and returns the loss
    as a float64. Rows are independent: one ``prange`` iteration per row, which writes
    its own row of ``grad`` and its own slot of ``row_loss``.
    """
    n, c = logits.shape
    row_loss = np.empty(n, np.float64)
    inv_n = logits.dtype.type(1) / logits.dtype.type(n)
    for i in prange(n):
        m = logits[i, 0]
        for j in range(1, c):
            v = logits[i, j]
            if v > m or v != v:
                m = v
                if v != v:
                    break
        s = logits.dtype.type(0)
        for j in range(c):
            e = exp_nonpos(logits[i, j] - m)
            grad[i, j] = e
            s += e
        t = targets[i]
        row_loss[i] = math.log(s) - (logits[i, t] - m)
        scale = inv_n / s
        for j in range(c):
            grad[i, j] *= scale
        grad[i, t] -= inv_n
    total = 0.0
    for i in range(n):
        total += row_loss[i]
    return total / n


@jit(parallel=True)
def binary_cross_entropy(probs, targets, eps, grad):
    """Mean binary cross-entropy of flat ``probs`` against flat ``targets`` (size,).

    Computed in float64 (so the clip at ``1 - eps`` is exact whatever the dtype): the logs
    see ``p`` clipped to ``[eps, 1 - eps]``, and ``grad`` (size,) receives
    (p_c - t) / (p_c (1 - p_c)) / size with p_c the clipped value. Returns the loss as a
    float64 (a ``prange`` reduction: Numba gives every thread its own partial sum).
    """
    hi = 1.0 - eps
    size = probs.size
    total = 0.0
    for i in prange(size):
        p = float(probs[i])
        t = float(targets[i])
        pc = eps if p < eps else (hi if p > hi else p)  # NaN passes through
        total -= t * math.log(pc) + (1.0 - t) * math.log1p(-pc)
        grad[i] = (pc - t) / (pc * (1.0 - pc)) / size
    return total / size
