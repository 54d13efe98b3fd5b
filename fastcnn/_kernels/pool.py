"""Max-pooling with int64 indices, and its backward, over ``(planes, H, W)`` arrays.

Every kernel runs ``prange`` over the N*C planes: a plane's outputs (and, backward, its
whole input gradient, overlapping windows included) belong to one iteration, so nothing
races. Indices are flat within a plane (``h * W + w``), as torch's ``return_indices``.
Padding counts as minus infinity; a window keeps its first maximum in row-major order,
and a NaN wins its window (the last NaN if several, as torch's CPU kernel and the
reference).
"""

import numpy as np
from numba import prange

from fastcnn._config import jit


@jit()
def _beats(v, m):
    """Does ``v`` replace the running maximum ``m``? torch's test: larger, or NaN."""
    return v > m or v != v


@jit(parallel=True)
def max_pool(x, kh, kw, sh, sw, ph, pw, y, indices):
    """Any window, stride and padding. x: (P, H, W); y, indices: (P, OH, OW).

    Windows wholly inside the input skip the bounds tests (about 20% faster); windows
    that overlap the padding test each tap.
    """
    planes, h, w = x.shape
    _, oh, ow = y.shape
    neg_inf = x.dtype.type(-np.inf)
    for p in prange(planes):
        for i in range(oh):
            h0 = i * sh - ph
            for j in range(ow):
                w0 = j * sw - pw
                m = neg_inf
                at = max(h0, 0) * w + max(w0, 0)  # first real tap: padding never wins
                if h0 >= 0 and w0 >= 0 and h0 + kh <= h and w0 + kw <= w:
                    for a in range(kh):
                        for b in range(kw):
                            v = x[p, h0 + a, w0 + b]
                            if _beats(v, m):
                                m = v
                                at = (h0 + a) * w + w0 + b
                else:
                    for a in range(kh):
                        r = h0 + a
                        if 0 <= r < h:
                            for b in range(kw):
                                q = w0 + b
                                if 0 <= q < w and _beats(x[p, r, q], m):
                                    m = x[p, r, q]
                                    at = r * w + q
                y[p, i, j] = m
                indices[p, i, j] = at


@jit(parallel=True)
def max_pool_2x2(x, y, indices):
    """The common 2x2 window, stride 2, no padding. x: (P, H, W); y, indices: (P, OH, OW).

    Unrolled: four candidates per output, compared in row-major order.
    """
    planes, h, w = x.shape
    _, oh, ow = y.shape
    for p in prange(planes):
        for i in range(oh):
            r = 2 * i
            for j in range(ow):
                q = 2 * j
                m = x[p, r, q]
                at = r * w + q
                v = x[p, r, q + 1]
                if _beats(v, m):
                    m = v
                    at = r * w + q + 1
                v = x[p, r + 1, q]
                if _beats(v, m):
                    m = v
                    at = (r + 1) * w + q
                v = x[p, r + 1, q + 1]
                if _beats(v, m):
                    m = v
                    at = (r + 1) * w + q + 1
                y[p, i, j] = m
                indices[p, i, j] = at


@jit(parallel=True)
def max_pool_backward(grad_out, indices, grad_x):
    """grad_x[p, indices[p, k]] += grad_out[p, k]; the rest of grad_x is zero.

    grad_out, indices: (P, OH*OW); grad_x: (P, H*W). Windows may overlap (several k
    pointing at one element): one iteration owns the whole plane, so the sums are serial.
    """
    planes, size = grad_x.shape
    zero = grad_x.dtype.type(0)
    for p in prange(planes):
        for k in range(size):
            grad_x[p, k] = zero
        for k in range(grad_out.shape[1]):
            grad_x[p, indices[p, k]] += grad_out[p, k]
