"""Max-pooling with int64 indices, and its backward, plane by plane: the forwards take
``(planes, H, W)`` arrays, the backward NCHW ones.

Every kernel runs over a range of the N*C planes (big inputs split over threads,
:mod:`fastcnn._threads`): a plane's outputs (and, backward, its whole input gradient,
overlapping windows included) belong to one part. Indices are flat within a
plane (``h * W + w``), as torch's ``return_indices``. Padding counts as minus infinity; a
window keeps its first maximum in row-major order, and a NaN wins its window (the last NaN
if several, as torch's CPU kernel and the reference).
"""

import numpy as np

from fastcnn import _threads
from fastcnn._config import jit
from fastcnn._kernels.simd import (
    SLOW_MASKED_STORES,
    VECTOR_BYTES,
    lanes,
    token,
    vdeinterleave,
    vfill,
    vkeep_max,
    vload_head,
    vstore_head,
    vstore_offsets_head,
    vzero,
)


@jit(inline=True)
def _beats(v, m):
    """Does ``v`` replace the running maximum ``m``? torch's test: larger, or NaN."""
    return v > m or v != v


def _over_planes(kernel, x, *args) -> None:
    planes = x.shape[0]
    count = _threads.parts(planes, x.size, _threads.GRAIN_ELEMENTS)
    _threads.run(kernel, count, planes, x, *args)


def max_pool(x, kh, kw, sh, sw, ph, pw, y, indices):
    """Any window, stride and padding. x: (P, H, W); y, indices: (P, OH, OW)."""
    _over_planes(_max_pool, x, kh, kw, sh, sw, ph, pw, y, indices)


@jit()
def _max_pool(part, p0, p1, x, kh, kw, sh, sw, ph, pw, y, indices):
    """Windows wholly inside the input skip the bounds tests; windows that overlap the
    padding test each tap."""
    planes, h, w = x.shape
    _, oh, ow = y.shape
    neg_inf = x.dtype.type(-np.inf)
    for p in range(p0, p1):
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


def max_pool_2x2(x, y, indices):
    """The common 2x2 window, stride 2, no padding. x: (P, H, W); y, indices: (P, OH, OW).

    Rows of 2**24 or more (whose offsets a float32 would not hold exactly) take
    :func:`max_pool`.
    """
    if x.shape[2] >= 1 << 24:
        max_pool(x, 2, 2, 2, 2, 0, 0, y, indices)
        return
    nbytes = VECTOR_BYTES
    while SLOW_MASKED_STORES and nbytes > 16 and y.shape[2] * y.itemsize < nbytes:
        nbytes //= 2  # vectors that a row's outputs fill: whole ones, with no masks
    _over_planes(_max_pool_2x2, x, y, indices, token(nbytes))


@jit()
def _max_pool_2x2(part, p0, p1, x, y, indices, vec):
    """:func:`max_pool_2x2` with vectors of width ``vec`` (:func:`fastcnn._kernels.simd.token`).

    SIMD along an output row, ``lanes`` outputs at a time (:func:`_window_maxima`). Rows of
    at least ``lanes`` outputs run in whole vectors, the last one overlapping the one
    before it (its outputs are computed twice, to the same bits); shorter rows in one
    masked vector.
    """
    h, w = x.shape[1], x.shape[2]
    _, oh, ow = y.shape
    xf, yf, jf = x.reshape(-1), y.reshape(-1), indices.reshape(-1)
    lane = lanes(xf, vec)
    zero = np.int64(0)  # not the constant 0, which would compile its own _window_maxima
    # Each candidate's offset from its window's first element.
    tags = (vzero(xf, vec), vfill(xf, 1, vec), vfill(xf, w, vec), vfill(xf, w + 1, vec))
    for p in range(p0, p1):
        for i in range(oh):
            row = 2 * i * w  # the window's top row, within the plane
            top, out = p * h * w + row, (p * oh + i) * ow
            if ow < lane:
                k0, k1 = min(2 * ow, lane), max(2 * ow - lane, 0)
                _window_maxima(xf, yf, jf, top, out, row, w, zero, ow, k0, k1, tags, vec)
                continue
            for j in range(0, ow, lane):
                # Whole vectors: constant counts, so the masks fold into plain loads and
                # stores.
                j0 = min(j, ow - lane)
                _window_maxima(xf, yf, jf, top, out, row, w, j0, lane, lane, lane, tags, vec)


@jit(inline=True)
def _window_maxima(xf, yf, jf, top, out, row, w, j0, n, k0, k1, tags, vec):
    """Outputs ``j0 .. j0 + n`` of the output row at ``yf[out]``, whose windows' top row
    starts at ``xf[top]`` (``row`` within its plane): the two input rows' ``2 * n``
    columns as two vectors each (``k0`` and ``k1`` elements), split into even and odd
    columns (the windows' four candidates, a vector each), a running maximum over them in
    row-major order tagged with the winner's offset in its window (``tags``), and the tags
    stored as indices."""
    lane = lanes(xf, vec)
    q = top + 2 * j0
    a, b = vdeinterleave(vload_head(xf, q, k0, vec), vload_head(xf, q + lane, k1, vec))
    c, d = vdeinterleave(vload_head(xf, q + w, k0, vec), vload_head(xf, q + w + lane, k1, vec))
    m, tag = vkeep_max(a, tags[0], b, tags[1])
    m, tag = vkeep_max(m, tag, c, tags[2])
    m, tag = vkeep_max(m, tag, d, tags[3])
    vstore_head(yf, out + j0, m, n)
    vstore_offsets_head(jf, out + j0, tag, n, row + 2 * j0, 2)


def max_pool_backward(grad_out, indices, grad_x):
    """grad_x[n, c].flat[indices[n, c, i, j]] += grad_out[n, c, i, j]; the rest of grad_x
    is zero. grad_out, indices: (N, C, OH, OW); grad_x: (N, C, H, W). Windows may overlap
    (several outputs pointing at one element): a plane belongs to one part, so its sums
    are serial."""
    n, c, h, w = grad_x.shape
    planes, per_plane = n * c, grad_out.shape[2] * grad_out.shape[3]
    _over_planes(_max_pool_backward, grad_x.reshape(planes, h * w),
                 grad_out.reshape(planes, per_plane), indices.reshape(planes, per_plane),
                 grad_x.dtype.type(0))  # fmt: skip


@jit()
def _max_pool_backward(part, p0, p1, grad_x, grad_out, indices, zero):
    # ``zero`` is an argument: a loop storing the constant 0 becomes a memset call per
    # plane, whose start-up costs more than plain vector stores on rows of a few KiB.
    size = grad_x.shape[1]
    for p in range(p0, p1):
        for k in range(size):
            grad_x[p, k] = zero
        for k in range(grad_out.shape[1]):
            grad_x[p, indices[p, k]] += grad_out[p, k]
