"""Register-blocked matrix products for ``linear`` and its layer.

- :func:`product`, ``c (M, N) = A (M, R) @ b (R, N)``: a block of 6 rows of ``c`` x 2 SIMD
  vectors of its columns (12 accumulators, :mod:`fastcnn._kernels.simd`) runs over ``r``:
  per step, 2 vector loads of a row of ``b``, 6 broadcasts of ``A``, 12 fused
  multiply-adds. ``A`` is read through strides, so it may be a transposed view (the
  weight gradient ``grad_out.T @ x``) at no cost.
- :func:`dots`, ``c (M, N) = a (M, R) @ b (N, R).T`` (the forward ``x @ weight.T``): the
  vectors run along ``r``, where both rows are contiguous: a block of 4 rows of ``a`` x 3
  of ``b`` (12 accumulators, the 3 of ``b`` and one of ``a`` in registers: 16, AVX2's
  count), per step 7 vector loads and 12 multiply-adds, then each accumulator's lanes are
  summed. No transposed copy of the weight is needed.
- :func:`outer_update`, ``c (M, N) += s * g (M,) x (N,)``: the weight gradient (or, in
  :mod:`fastcnn.compat`, the step) of a dense layer on one sample, row by row in one pass
  over ``c``, where a (M, 1) x (1, N) :func:`product` would stream ``c`` once per block
  of columns.

Each output element is one sum in a fixed order, and big products are split over
threads by blocks of columns of ``c`` (:mod:`fastcnn._threads`), each part owning its
columns: the result does not depend on the thread count.
"""

from __future__ import annotations

import numpy as np

from fastcnn import _threads
from fastcnn._config import jit
from fastcnn._kernels.simd import (
    VECTOR_BYTES,
    lanes,
    token,
    vbroadcast,
    vfill,
    vfma,
    vload,
    vstore,
    vsum,
    vzero,
)
from fastcnn._workspace import scratch

ROWS = 6  # rows of c per block of product
DOT_ROWS, DOT_COLS = 4, 3  # rows of a and of b per block of dots
DOT_CHUNK = 1024  # elements of r per pass of dots: a chunk of a's rows stays in L2
GRAIN = 1_000_000  # multiply-adds that pay for a thread


def product(a, b, out, accumulate: bool = False) -> None:
    """``out (M, N) = a (M, R) @ b (R, N)``, or ``out += a @ b`` if ``accumulate``, all of
    one float dtype: ``a`` C-contiguous or the transpose of a C-contiguous array (read in
    place), else copied; ``b`` and ``out`` C-contiguous. With R = 1 it is an outer product
    (a layer's weight gradient of one sample)."""
    if not (a.flags.c_contiguous or a.T.flags.c_contiguous):
        a = np.ascontiguousarray(a)
    flat = a.reshape(-1) if a.flags.c_contiguous else a.T.reshape(-1)
    rows, cols = (s // a.itemsize for s in a.strides)
    m, n = out.shape
    if n == 0 or m == 0:
        return
    blocks = -(-n // (2 * (VECTOR_BYTES // out.itemsize)))
    count = _threads.parts(blocks, m * n * b.shape[0], GRAIN)
    _threads.run(
        _product, count, blocks, flat, rows, cols, b, out, bool(accumulate), token(VECTOR_BYTES)
    )


@jit()
def _product(part, block0, block1, a, row_step, col_step, b, c, accumulate, vec):
    """``c[i, j] = sum_r a[i*row_step + r*col_step] * b[r, j]`` (added to ``c[i, j]`` if
    ``accumulate``) for the columns of blocks ``block0 .. block1-1`` (2 vectors each; a
    short last block column by column).

    a: flat (any size covering the strides); b (R, N) and c (M, N) C-contiguous.
    """
    m, n = c.shape
    depth = b.shape[0]
    bf, cf = b.reshape(-1), c.reshape(-1)
    lane = lanes(cf, vec)
    width = 2 * lane
    last = m - 1
    for block in range(block0, block1):
        j0 = block * width
        if j0 + width > n:  # the short last block
            for i in range(m):
                for j in range(j0, n):
                    total = cf[i * n + j] if accumulate else cf.dtype.type(0)
                    for r in range(depth):
                        total += a[i * row_step + r * col_step] * bf[r * n + j]
                    cf[i * n + j] = total
            continue
        for i0 in range(0, m, ROWS):
            # A short last block repeats its last row, storing the same values.
            i1, i2 = min(i0 + 1, last), min(i0 + 2, last)
            i3, i4, i5 = min(i0 + 3, last), min(i0 + 4, last), min(i0 + 5, last)
            r0, r1, r2 = i0 * row_step, i1 * row_step, i2 * row_step
            r3, r4, r5 = i3 * row_step, i4 * row_step, i5 * row_step
            if accumulate:  # a short last block's repeated rows load and store the same sums
                a00, a01 = vload(cf, i0 * n + j0, vec), vload(cf, i0 * n + j0 + lane, vec)
                a10, a11 = vload(cf, i1 * n + j0, vec), vload(cf, i1 * n + j0 + lane, vec)
                a20, a21 = vload(cf, i2 * n + j0, vec), vload(cf, i2 * n + j0 + lane, vec)
                a30, a31 = vload(cf, i3 * n + j0, vec), vload(cf, i3 * n + j0 + lane, vec)
                a40, a41 = vload(cf, i4 * n + j0, vec), vload(cf, i4 * n + j0 + lane, vec)
                a50, a51 = vload(cf, i5 * n + j0, vec), vload(cf, i5 * n + j0 + lane, vec)
            else:
                a00 = a01 = a10 = a11 = a20 = a21 = vzero(cf, vec)
                a30 = a31 = a40 = a41 = a50 = a51 = a00
            for r in range(depth):
                b0 = vload(bf, r * n + j0, vec)
                b1 = vload(bf, r * n + j0 + lane, vec)
                step = r * col_step
                v = vbroadcast(a, r0 + step, vec)
                a00, a01 = vfma(v, b0, a00), vfma(v, b1, a01)
                v = vbroadcast(a, r1 + step, vec)
                a10, a11 = vfma(v, b0, a10), vfma(v, b1, a11)
                v = vbroadcast(a, r2 + step, vec)
                a20, a21 = vfma(v, b0, a20), vfma(v, b1, a21)
                v = vbroadcast(a, r3 + step, vec)
                a30, a31 = vfma(v, b0, a30), vfma(v, b1, a31)
                v = vbroadcast(a, r4 + step, vec)
                a40, a41 = vfma(v, b0, a40), vfma(v, b1, a41)
                v = vbroadcast(a, r5 + step, vec)
                a50, a51 = vfma(v, b0, a50), vfma(v, b1, a51)
            vstore(cf, i0 * n + j0, a00)
            vstore(cf, i0 * n + j0 + lane, a01)
            vstore(cf, i1 * n + j0, a10)
            vstore(cf, i1 * n + j0 + lane, a11)
            vstore(cf, i2 * n + j0, a20)
            vstore(cf, i2 * n + j0 + lane, a21)
            vstore(cf, i3 * n + j0, a30)
            vstore(cf, i3 * n + j0 + lane, a31)
            vstore(cf, i4 * n + j0, a40)
            vstore(cf, i4 * n + j0 + lane, a41)
            vstore(cf, i5 * n + j0, a50)
            vstore(cf, i5 * n + j0 + lane, a51)


def outer_update(g, x, c, scale, accumulate=True) -> None:
    """``c (M, N) += scale * outer(g (M,), x (N,))`` (``=`` if not ``accumulate``); ``c``
    C-contiguous and writeable, all of one float dtype; ``scale`` a Python float. (An input
    gradient ``g @ w`` is BLAS's matrix-vector product, best taken apart: fused into this
    pass over the rows, it made the pass slower than the two passes together.)"""
    g, x = (np.require(a, c.dtype, "CW") for a in (g, x))
    m, n = c.shape
    if m == 0 or n == 0:
        return
    if accumulate:
        old, old_step = c.reshape(-1), n
    else:  # every row of c written from a row of zeros: no pass to clear c first
        old, old_step = scratch("gemm.zeros", (n,), c.dtype), 0
        old[:] = 0
    blocks = -(-n // (VECTOR_BYTES // c.itemsize))
    count = _threads.parts(blocks, m * n, GRAIN)
    _threads.run(_outer_update, count, blocks, g, x, c, float(scale), old, old_step,
                 token(VECTOR_BYTES))  # fmt: skip


@jit()
def _outer_update(part, block0, block1, g, x, c, scale, old, old_step, vec):
    """For the columns of vector blocks ``block0 .. block1-1``: ``c[i, j] = old[i*old_step +
    j] + scale * g[i] * x[j]``; ``old`` is ``c`` (flat, ``old_step`` N) or one row of zeros
    (``old_step`` 0)."""
    m, n = c.shape
    cf = c.reshape(-1)
    lane = lanes(cf, vec)
    j0, j1 = block0 * lane, min(n, block1 * lane)
    whole = j0 + (j1 - j0) // lane * lane
    for i in range(m):
        row, orow = i * n, i * old_step
        step = cf.dtype.type(scale) * g[i]
        sv = vfill(cf, step, vec)
        for j in range(j0, whole, lane):
            vstore(cf, row + j, vfma(sv, vload(x, j, vec), vload(old, orow + j, vec)))
        for j in range(whole, j1):
            cf[row + j] = old[orow + j] + step * x[j]


def dots(a, b, out) -> None:
    """``out (M, N) = a (M, R) @ b (N, R).T``, all C-contiguous of one float dtype."""
    m, n = out.shape
    if a.shape[1] == 0:
        out[...] = 0
        return
    if out.size == 0:
        return
    blocks = -(-n // DOT_COLS)
    count = _threads.parts(blocks, m * n * a.shape[1], GRAIN)
    _threads.run(_dots, count, blocks, a, b, out, token(VECTOR_BYTES))


@jit()
def _dots(part, block0, block1, a, b, c, vec):
    """``c[i, j] = sum_r a[i, r] * b[j, r]`` for the rows ``j`` of b in blocks ``block0 ..
    block1-1`` of :data:`DOT_COLS`; a (M, R), b (N, R), c (M, N), all C-contiguous."""
    m, n = c.shape
    depth = a.shape[1]
    af, bf = a.reshape(-1), b.reshape(-1)
    lane = lanes(af, vec)
    for block in range(block0, block1):
        # A short last block repeats its last row or column; repeats are not stored.
        j0 = block * DOT_COLS
        j1, j2 = min(j0 + 1, n - 1), min(j0 + 2, n - 1)
        for r0 in range(0, depth, DOT_CHUNK):
            r1 = min(depth, r0 + DOT_CHUNK)
            whole = r0 + (r1 - r0) // lane * lane
            for i0 in range(0, m, DOT_ROWS):
                i1, i2, i3 = min(i0 + 1, m - 1), min(i0 + 2, m - 1), min(i0 + 3, m - 1)
                a00 = a01 = a02 = a10 = a11 = a12 = vzero(af, vec)
                a20 = a21 = a22 = a30 = a31 = a32 = a00
                x0, x1, x2, x3 = i0 * depth, i1 * depth, i2 * depth, i3 * depth
                y0, y1, y2 = j0 * depth, j1 * depth, j2 * depth
                for r in range(r0, whole, lane):
                    w0, w1, w2 = (
                        vload(bf, y0 + r, vec),
                        vload(bf, y1 + r, vec),
                        vload(bf, y2 + r, vec),
                    )
                    v = vload(af, x0 + r, vec)
                    a00, a01, a02 = vfma(v, w0, a00), vfma(v, w1, a01), vfma(v, w2, a02)
                    v = vload(af, x1 + r, vec)
                    a10, a11, a12 = vfma(v, w0, a10), vfma(v, w1, a11), vfma(v, w2, a12)
                    v = vload(af, x2 + r, vec)
                    a20, a21, a22 = vfma(v, w0, a20), vfma(v, w1, a21), vfma(v, w2, a22)
                    v = vload(af, x3 + r, vec)
                    a30, a31, a32 = vfma(v, w0, a30), vfma(v, w1, a31), vfma(v, w2, a32)
                sums = (
                    (vsum(a00), vsum(a01), vsum(a02)),
                    (vsum(a10), vsum(a11), vsum(a12)),
                    (vsum(a20), vsum(a21), vsum(a22)),
                    (vsum(a30), vsum(a31), vsum(a32)),
                )
                for di in range(min(DOT_ROWS, m - i0)):
                    row = (i0 + di) * depth
                    for dj in range(min(DOT_COLS, n - j0)):
                        total = sums[di][dj]
                        col = (j0 + dj) * depth
                        for r in range(whole, r1):
                            total += af[row + r] * bf[col + r]
                        if r0 == 0:
                            c[i0 + di, j0 + dj] = total
                        else:
                            c[i0 + di, j0 + dj] += total
