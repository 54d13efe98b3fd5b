"""Softmax, log-softmax and the two losses.

Softmax runs over the middle axis of a C-contiguous ``(outer, length, inner)`` view, so
one kernel serves every ``axis``: the kernels run over a range of lines ``x[a, :, b]``
(big inputs split over threads, :mod:`fastcnn._threads`). Lines are shifted by their
maximum before ``exp`` (no overflow for huge logits); a NaN anywhere in a line makes its
maximum NaN and so the whole line NaN, as in the reference. The shifted arguments are
never positive, so the vectorisable ``activation.exp_nonpos`` serves as ``exp``.

The losses sum their terms in float64: the cross-entropy's per-row terms after the rows
are done (in row order), the binary cross-entropy's per part, the parts in order.
"""

import math

import numpy as np

from fastcnn import _threads
from fastcnn._config import jit
from fastcnn._kernels.activation import exp_nonpos


@jit(call=True)
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


def _lines(kernel, x, out) -> None:
    lines = x.shape[0] * x.shape[2]
    _threads.run(kernel, _threads.parts(lines, x.size, _threads.GRAIN_ELEMENTS), lines, x, out)


def softmax(x, out):
    """out[a, :, b] = exp(x[a, :, b] - max) / sum(exp(...)). x, out: (outer, length, inner)."""
    _lines(_softmax, x, out)


def log_softmax(x, out):
    """out[a, :, b] = x - max - log(sum(exp(x - max))). x, out: (outer, length, inner)."""
    _lines(_log_softmax, x, out)


@jit()
def _softmax(part, l0, l1, x, out):
    outer, length, inner = x.shape
    for line in range(l0, l1):
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


@jit()
def _log_softmax(part, l0, l1, x, out):
    outer, length, inner = x.shape
    for line in range(l0, l1):
        a = line // inner
        b = line - a * inner
        m = _line_max(x, a, b)
        s = x.dtype.type(0)
        for k in range(length):
            s += exp_nonpos(x[a, k, b] - m)
        log_s = math.log(s)
        for k in range(length):
            out[a, k, b] = (x[a, k, b] - m) - log_s  # not x - (m + log_s): m may be huge


def cross_entropy(logits, targets, grad):
    """Mean cross-entropy of ``logits`` (N, C) against int64 ``targets`` (N,).

    Fills ``grad`` (N, C) with (softmax(logits) - onehot(targets)) / N and returns the loss
    as a float64: the rows' terms summed in row order, whatever the thread count.
    """
    n = logits.shape[0]
    row_loss = np.empty(n, np.float64)
    count = _threads.parts(n, logits.size, _threads.GRAIN_ELEMENTS)
    _threads.run(_cross_entropy, count, n, logits, targets, grad, row_loss)
    return _ordered_sum(row_loss) / n


@jit()
def _cross_entropy(part, i0, i1, logits, targets, grad, row_loss):
    n, c = logits.shape
    inv_n = logits.dtype.type(1) / logits.dtype.type(n)
    for i in range(i0, i1):
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


@jit(python=True)
def _ordered_sum(a):
    total = 0.0
    for i in range(a.size):
        total += a[i]
    return total


def binary_cross_entropy(probs, targets, eps, grad):
    """Mean binary cross-entropy of flat ``probs`` against flat ``targets`` (size,).

    Computed in float64 (so the clip at ``1 - eps`` is exact whatever the dtype): the logs
    see ``p`` clipped to ``[eps, 1 - eps]``, and ``grad`` (size,) receives
    (p_c - t) / (p_c (1 - p_c)) / size with p_c the clipped value. Returns the loss as a
    float64: each part's sum, the parts added in order.
    """
    size = probs.size
    count = _threads.parts(size, size, _threads.GRAIN_ELEMENTS)
    sums = np.zeros(count)
    _threads.run(_binary_cross_entropy, count, size, probs, targets, eps, grad, sums)
    return _ordered_sum(sums) / size


@jit()
def _binary_cross_entropy(part, i0, i1, probs, targets, eps, grad, sums):
    size = probs.size
    probs, targets, grad = probs[i0:i1], targets[i0:i1], grad[i0:i1]
    hi = 1.0 - eps
    total = 0.0
    for i in range(probs.size):
        p = float(probs[i])
        t = float(targets[i])
        pc = eps if p < eps else (hi if p > hi else p)  # NaN passes through
        total -= t * math.log(pc) + (1.0 - t) * math.log1p(-pc)
        grad[i] = (pc - t) / (pc * (1.0 - pc)) / size
    sums[part] = total
