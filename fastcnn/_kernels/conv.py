"""2-D convolution: im2col tiles in Numba, matrix products in BLAS.

Layouts: input ``x`` (N, C, H, W), weight (K, C, KH, KW), output (N, K, OH, OW), all
C-contiguous, one float dtype. With ``CKK = C*KH*KW`` and ``P = OH*OW``, the convolution of
image ``n`` is the matrix product ``weight(K, CKK) @ cols_n(CKK, P)``, where row
``(c*KH + i)*KW + j`` of ``cols_n`` holds the zero-padded input pixels that kernel tap
``(c, i, j)`` meets at each of the ``P`` output positions. The obvious twin of every
function here is ``fastcnn.reference.conv``.

The drivers (``forward``, ``grad_input``, ``grad_weight``, ``grad_bias``) walk the batch
in chunks of images so the column matrix stays a few MiB, whatever the batch, and reuse it
from a per-thread scratch cache (``fastcnn._workspace``). Each chunk alternates one
parallel Numba kernel (im2col or col2im) with one BLAS call from NumPy; the two thread
pools never run at the same time.

Padding is materialised as exact zeros in ``cols`` and multiplied like any other pixel, so
NaN and inf propagate as in the reference (``inf * 0 = nan`` where a weight or gradient
meets the padding).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from fastcnn._config import jit
from fastcnn._workspace import scratch

# Column-matrix bytes per chunk: large enough for efficient GEMMs, small enough to stay
# near the caches and keep peak memory independent of the batch size.
CHUNK_BYTES = 4 << 20


@jit()
def _tap_range(offset, stride, size, out_size):
    """Output indices ``[lo, hi)`` whose input index ``o*stride + offset`` is in ``[0, size)``."""
    lo = min(out_size, max(0, (stride - 1 - offset) // stride))
    hi = min(out_size, max(lo, (size - 1 - offset) // stride + 1))
    return lo, hi


@jit(parallel=True)
def _im2col(x, n0, nb, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols, image_row, image_col):
    """Fill the column matrix of images ``n0 .. n0+nb-1``.

    x: (N, C, H, W). cols: 2-D, C-contiguous; image ``b`` of the chunk, tap ``r`` and output
    position ``p`` go to ``cols[b*image_row + r, b*image_col + p]``: ``image_row = CKK,
    image_col = 0`` stacks the images' (CKK, P) matrices; ``image_row = 0, image_col = P``
    puts them side by side in one (CKK, nb*P) matrix.

    Parallel over (image, channel) pairs: each owns the rows of its taps in its own image's
    block, so no two iterations write the same element.
    """
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    zero = cols.dtype.type(0)
    for t in prange(nb * c):
        b = t // c
        ci = t - b * c
        plane = x[n0 + b, ci]
        for i in range(kh):
            for j in range(kw):
                r = b * image_row + (ci * kh + i) * kw + j
                off = j * dw - pw
                lo, hi = _tap_range(off, sw, w, ow)
                row = cols[r]
                for oy in range(oh):
                    iy = oy * sh - ph + i * dh
                    dst = b * image_col + oy * ow
                    if iy < 0 or iy >= h:
                        for ox in range(ow):
                            row[dst + ox] = zero
                    else:
                        for ox in range(lo):
                            row[dst + ox] = zero
                        src = plane[iy]
                        if sw == 1:  # the common case: a contiguous copy LLVM vectorises
                            for ox in range(lo, hi):
                                row[dst + ox] = src[ox + off]
                        else:
                            for ox in range(lo, hi):
                                row[dst + ox] = src[ox * sw + off]
                        for ox in range(hi, ow):
                            row[dst + ox] = zero


@jit(parallel=True)
def _col2im(cols, n0, nb, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, out, image_row, image_col):
    """Overwrite ``out[n0 : n0+nb]`` with the sum of the column matrix's taps (im2col's adjoint).

    cols: laid out as in :func:`_im2col`. out: (N, C, H, W); pixels no tap reaches get 0.

    Parallel over (image, channel) pairs: each zeroes and accumulates only its own output
    plane ``out[n0+b, c]``, reading its own rows of ``cols``, so no element is shared.
    """
    c, h, w = out.shape[1], out.shape[2], out.shape[3]
    for t in prange(nb * c):
        b = t // c
        ci = t - b * c
        plane = out[n0 + b, ci]
        plane[:] = 0
        for i in range(kh):
            for j in range(kw):
                r = b * image_row + (ci * kh + i) * kw + j
                off = j * dw - pw
                lo, hi = _tap_range(off, sw, w, ow)
                row = cols[r]
                for oy in range(oh):
                    iy = oy * sh - ph + i * dh
                    if 0 <= iy < h:
                        dst = plane[iy]
                        src = b * image_col + oy * ow
                        if sw == 1:
                            for ox in range(lo, hi):
                                dst[ox + off] += row[src + ox]
                        else:
                            for ox in range(lo, hi):
                                dst[ox * sw + off] += row[src + ox]


@jit(parallel=True)
def _add_bias(y, bias):
    """``y[n, k, :] += bias[k]`` for y (N, K, P), bias (K,).

    Parallel over (image, channel) rows: each iteration owns one row of ``y``.
    """
    n, k = y.shape[0], y.shape[1]
    for t in prange(n * k):
        b = t // k
        ki = t - b * k
        y[b, ki] += bias[ki]


@jit(parallel=True)
def _sum_bias(grad_out, out):
    """``out[k] = sum over n, p of grad_out[n, k, p]`` for grad_out (N, K, P), out (K,).

    Parallel over channels: each iteration owns ``out[k]`` and sums its rows serially.
    """
    n, k = grad_out.shape[0], grad_out.shape[1]
    for ki in prange(k):
        acc = out.dtype.type(0)
        for b in range(n):
            acc += grad_out[b, ki].sum()
        out[ki] = acc


# --- drivers ---------------------------------------------------------------------------


def _chunk(g, itemsize: int) -> int:
    """Images per chunk: as many as keep the column matrix within :data:`CHUNK_BYTES`."""
    per_image = g.c * g.kh * g.kw * g.oh * g.ow * itemsize
    return max(1, min(g.n, CHUNK_BYTES // max(per_image, 1)))


def _geometry_args(g):
    return g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.oh, g.ow


def _is_pointwise(g) -> bool:
    """A 1x1 kernel with stride 1 and no padding: the input is its own column matrix."""
    return (g.kh, g.kw, g.sh, g.sw, g.ph, g.pw) == (1, 1, 1, 1, 0, 0)


def forward(x, weight, bias, g, out):
    """Convolution: ``out (N, K, OH, OW) = conv2d(x (N, C, H, W), weight (K, C, KH, KW)) + bias``.

    ``bias`` is (K,) or None. Per chunk of images: im2col, then one batched GEMM that writes
    NCHW output directly.
    """
    if g.n == 0:
        return
    ckk, p = g.c * g.kh * g.kw, g.oh * g.ow
    w2d = weight.reshape(g.k, ckk)
    y = out.reshape(g.n, g.k, p)
    if _is_pointwise(g):
        np.matmul(w2d, x.reshape(g.n, g.c, p), out=y)
    else:
        nb = _chunk(g, x.itemsize)
        buf = scratch("conv.cols", (nb * ckk, p), x.dtype)
        for n0 in range(0, g.n, nb):
            m = min(nb, g.n - n0)
            cols = buf[: m * ckk]
            _im2col(x, n0, m, *_geometry_args(g), cols, ckk, 0)
            np.matmul(w2d, cols.reshape(m, ckk, p), out=y[n0 : n0 + m])
    if bias is not None:
        _add_bias(y, bias)


def grad_input(weight, grad_out, g, out):
    """Input gradient: ``out (N, C, H, W)`` from weight (K, C, KH, KW), grad_out (N, K, OH, OW).

    Per chunk of images: ``cols = weight(K, CKK).T @ grad_out_n(K, P)`` by one batched GEMM,
    then col2im scatters the taps back onto the input planes.
    """
    if g.n == 0:
        return
    ckk, p = g.c * g.kh * g.kw, g.oh * g.ow
    w2d_t = weight.reshape(g.k, ckk).T
    go = grad_out.reshape(g.n, g.k, p)
    if _is_pointwise(g):
        np.matmul(w2d_t, go, out=out.reshape(g.n, g.c, p))
        return
    nb = _chunk(g, grad_out.itemsize)
    buf = scratch("conv.cols", (nb * ckk, p), grad_out.dtype)
    for n0 in range(0, g.n, nb):
        m = min(nb, g.n - n0)
        cols = buf[: m * ckk]
        np.matmul(w2d_t, go[n0 : n0 + m], out=cols.reshape(m, ckk, p))
        _col2im(cols, n0, m, *_geometry_args(g), out, ckk, 0)


def grad_weight(x, grad_out, g, out):
    """Weight gradient: ``out (K, C, KH, KW)`` from x (N, C, H, W), grad_out (N, K, OH, OW).

    Per chunk of images: im2col into one (CKK, nb*P) matrix, grad_out regrouped as
    (K, nb*P), and one GEMM ``grad_out @ cols.T`` summing over images and positions at once.
    Chunks after the first are added serially.
    """
    ckk, p = g.c * g.kh * g.kw, g.oh * g.ow
    gw = out.reshape(g.k, ckk)
    if g.n == 0:
        gw[:] = 0
        return
    go = grad_out.reshape(g.n, g.k, p)
    nb = _chunk(g, x.itemsize)
    cols_buf = scratch("conv.cols", (ckk, nb * p), x.dtype)
    go_buf = scratch("conv.grad_out", (g.k, nb * p), x.dtype)
    partial = scratch("conv.partial", (g.k, ckk), x.dtype)
    for n0 in range(0, g.n, nb):
        m = min(nb, g.n - n0)
        cols = cols_buf.reshape(-1)[: ckk * m * p].reshape(ckk, m * p)
        go_t = go_buf.reshape(-1)[: g.k * m * p].reshape(g.k, m * p)
        _im2col(x, n0, m, *_geometry_args(g), cols, 0, p)
        go_t.reshape(g.k, m, p)[...] = go[n0 : n0 + m].transpose(1, 0, 2)
        if n0 == 0:
            np.matmul(go_t, cols.T, out=gw)
        else:
            np.matmul(go_t, cols.T, out=partial)
            gw += partial


def grad_bias(grad_out, out):
    """Bias gradient: ``out (K,)`` = sum of grad_out (N, K, OH, OW) over images and positions."""
    n, k, oh, ow = grad_out.shape
    _sum_bias(grad_out.reshape(n, k, oh * ow), out)
