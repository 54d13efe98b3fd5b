"""Convolutions with few taps (C*KH*KW small: the first layer of a net, one or three
input channels), with SIMD vectors along the output pixels.

With a handful of taps per output pixel, the reduction of a direct block
(:mod:`fastcnn._kernels.conv_direct`) would be too short to pay for its setup. Here each
image's column matrix (taps x OH*OW) is built once from the image (zero where a tap
meets the padding), and the blocks hold 4 channels x 3 vectors of pixels (or taps), 12
accumulators. At stride 1 the taps of one kernel column meet the same pixels a row
apart, so the matrix holds one copy per kernel column over every padded row, and tap
``(c, i, j)`` starts ``i*dh`` rows into its column's copy (:func:`_columns`,
:func:`column_offsets`).

- :func:`forward` (stride 1): blocks of 4 output channels x 3 vectors of pixels over the
  taps, stored straight into ``y``;
- :func:`grad_weight` (stride 1): blocks of 4 channels x 3 taps over the vectors of
  pixels, with per-lane sums kept across the part's images and added at the end;
- :func:`grad_input` (any stride): an image's products ``weight.T @ grad_out`` (taps x
  OH*OW) in blocks of 3 taps x 4 vectors of pixels over the output channels, each tap's
  row then added into the input rows it meets (col2im, in tap order as the reference). It
  multiplies no padding, so any weight, NaN or inf, gives the reference's result.

Every kernel works on images ``n0 .. n1-1``, one part of :func:`fastcnn._threads.run`,
with its own rows of the scratch arrays. The obvious twin is ``fastcnn.reference.conv``.
"""

from __future__ import annotations

import functools

import numpy as np

from fastcnn._config import jit
from fastcnn._kernels.simd import (
    lanes,
    vadd_run,
    vbroadcast,
    vcopy,
    vfma,
    vload,
    vload_head,
    vstore,
    vzero,
)

PIXEL_VECTORS = 3  # vectors of output pixels per block of the forward
PRODUCT_VECTORS = 4  # vectors of grad_out pixels per block of the input gradient
CHANNELS = 4  # output channels per block (forward and weight gradient)
TAPS = 3  # taps per block (weight and input gradient)


@jit(inline=True)
def _fma_4x3(acc, v0, v1, v2, v3, s0, s1, s2):
    """``acc`` plus ``v_i * s_j`` for row ``i`` and column ``j``: 12 fused multiply-adds."""
    a00, a01, a02, a10, a11, a12, a20, a21, a22, a30, a31, a32 = acc
    a00, a01, a02 = vfma(v0, s0, a00), vfma(v0, s1, a01), vfma(v0, s2, a02)
    a10, a11, a12 = vfma(v1, s0, a10), vfma(v1, s1, a11), vfma(v1, s2, a12)
    a20, a21, a22 = vfma(v2, s0, a20), vfma(v2, s1, a21), vfma(v2, s2, a22)
    a30, a31, a32 = vfma(v3, s0, a30), vfma(v3, s1, a31), vfma(v3, s2, a32)
    return (a00, a01, a02, a10, a11, a12, a20, a21, a22, a30, a31, a32)


@jit(inline=True)
def _load_4x3(src, o0, o1, o2, o3, p0, p1, p2, vec):
    """The block whose vector ``(i, j)`` is at ``src[o_i + p_j]``."""
    return (
        vload(src, o0 + p0, vec), vload(src, o0 + p1, vec), vload(src, o0 + p2, vec),
        vload(src, o1 + p0, vec), vload(src, o1 + p1, vec), vload(src, o1 + p2, vec),
        vload(src, o2 + p0, vec), vload(src, o2 + p1, vec), vload(src, o2 + p2, vec),
        vload(src, o3 + p0, vec), vload(src, o3 + p1, vec), vload(src, o3 + p2, vec),
    )  # fmt: skip


@jit(inline=True)
def _store_4x3(dst, o0, o1, o2, o3, p0, p1, p2, acc):
    """Vector ``(i, j)`` of the block to ``dst[o_i + p_j]``."""
    a00, a01, a02, a10, a11, a12, a20, a21, a22, a30, a31, a32 = acc
    vstore(dst, o0 + p0, a00)
    vstore(dst, o0 + p1, a01)
    vstore(dst, o0 + p2, a02)
    vstore(dst, o1 + p0, a10)
    vstore(dst, o1 + p1, a11)
    vstore(dst, o1 + p2, a12)
    vstore(dst, o2 + p0, a20)
    vstore(dst, o2 + p1, a21)
    vstore(dst, o2 + p2, a22)
    vstore(dst, o3 + p0, a30)
    vstore(dst, o3 + p1, a31)
    vstore(dst, o3 + p2, a32)


@jit(call=True)
def _columns(xf, start, c, h, w, ph, pw, kw, dw, ow, stride, cols, vec):
    """Row ``r = ci*KW + j`` of the column matrix, ``cols[r*stride : r*stride + HP*OW]``,
    holds the pixels of the image at ``xf[start]`` (C, H, W, flat), zero-padded, that
    column tap j meets, on every padded row (stride 1). Only the pixels inside the image
    are written: the padding's stay as they are (zero)."""
    for r in range(c * kw):
        ci, j = r // kw, r % kw
        # Output column ox meets input column ox + j*dw - pw: those inside the row.
        lo, hi = max(0, pw - j * dw), min(ow, w + pw - j * dw)
        if lo >= hi:
            continue
        s, d = start + ci * h * w + lo + j * dw - pw, r * stride + ph * ow + lo
        for _ in range(h):
            vcopy(xf, s, cols, d, hi - lo, vec)
            s += w
            d += ow


@functools.lru_cache(maxsize=256)
def column_offsets(c, kh, kw, dh, ow, stride) -> np.ndarray:
    """Where in :func:`_columns`'s matrix the pixels of tap ``t = (ci*KH + i)*KW + j`` start:
    row ``ci*KW + j``, from padded row ``i*dh`` on (int64, C*KH*KW, read-only and shared)."""
    ci, i, j = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
    offsets = ((ci * kw + j) * stride + i * dh * ow).reshape(-1).astype(np.int64)
    offsets.setflags(write=False)
    return offsets


@jit(inline=True)
def _forward_block(cols, w2d, bias, k0, k1, k2, k3, taps, coff, q0, vec):
    """The block of :func:`forward` for channels ``k0..k3`` and the 3 vectors of pixels
    from ``q0``: ``bias`` plus the ``taps`` columns (from ``cols[coff[t]]``) times ``w2d``."""
    lane = lanes(cols, vec)
    u0, u1 = vbroadcast(bias, k0, vec), vbroadcast(bias, k1, vec)
    u2, u3 = vbroadcast(bias, k2, vec), vbroadcast(bias, k3, vec)
    acc = (u0, u0, u0, u1, u1, u1, u2, u2, u2, u3, u3, u3)
    for t in range(taps):
        col = coff[t] + q0
        s0 = vload(cols, col, vec)
        s1 = vload(cols, col + lane, vec)
        s2 = vload(cols, col + 2 * lane, vec)
        v0, v1 = vbroadcast(w2d[k0], t, vec), vbroadcast(w2d[k1], t, vec)
        v2, v3 = vbroadcast(w2d[k2], t, vec), vbroadcast(w2d[k3], t, vec)
        acc = _fma_4x3(acc, v0, v1, v2, v3, s0, s1, s2)
    return acc


@jit()
def forward(part, n0, n1, x, weight, bias, ph, pw, dh, dw, coff, y, colss, stride, tails, vec):
    """``y[b, k] = bias[k] + sum_t weight[k, t] * columns_b[t]`` for images ``b`` in
    ``n0 .. n1-1`` (stride 1), with the scratch rows of ``part``.

    x (N, C, H, W); weight (K, C, KH, KW); bias (K,); coff (taps,): the taps' column
    offsets (:func:`column_offsets`); y (N, K, OH, OW); stride: the length of a column
    row, HP*OW plus the pixels that round OH*OW up to whole blocks. Scratch rows: colss
    (C*KW*stride): the column matrix; tails (CHANNELS * block) for the short last block.
    """
    cols, tail = colss[part], tails[part]
    zero = np.int64(0)  # not the constant 0, which would compile its own _store_4x3
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    k, kw = weight.shape[0], weight.shape[3]
    oh, ow = y.shape[2], y.shape[3]
    taps, p = coff.size, oh * ow
    lane = lanes(cols, vec)
    block = PIXEL_VECTORS * lane
    whole = p // block * block
    w2d = weight.reshape(k, taps)
    xf, yf = x.reshape(-1), y.reshape(-1)
    cols[:] = 0
    for b in range(n0, n1):
        _columns(xf, b * c * h * w, c, h, w, ph, pw, kw, dw, ow, stride, cols, vec)
        for k0 in range(0, k, CHANNELS):
            # A short last block repeats its last channel, storing the same values.
            k1, k2, k3 = min(k0 + 1, k - 1), min(k0 + 2, k - 1), min(k0 + 3, k - 1)
            o0, o1 = (b * k + k0) * p, (b * k + k1) * p
            o2, o3 = (b * k + k2) * p, (b * k + k3) * p
            for q0 in range(0, whole, block):
                acc = _forward_block(cols, w2d, bias, k0, k1, k2, k3, taps, coff, q0, vec)
                _store_4x3(yf, o0 + q0, o1 + q0, o2 + q0, o3 + q0, zero, lane, 2 * lane, acc)
            if whole < p:  # the last, short block through tail
                acc = _forward_block(cols, w2d, bias, k0, k1, k2, k3, taps, coff, whole, vec)
                _store_4x3(tail, zero, block, 2 * block, 3 * block, zero, lane, 2 * lane, acc)
                for i, oi in enumerate((o0, o1, o2, o3)):
                    vcopy(tail, i * block, yf, oi + whole, p - whole, vec)


@jit(inline=True)
def _weight_block(go, cols, acc, p, whole, g0, g1, g2, g3, c0, c1, c2, a0, a1, a2, a3,
                  u0, u1, u2, vec):  # fmt: skip
    """Add one image's block of 4 channels (grad_out rows at ``g0..g3``) x 3 taps (columns
    at ``c0..c2``) to the per-lane sums at ``acc[a_i + u_j]``: per vector of pixels, 4
    loads of grad_out, 3 of columns, 12 fused multiply-adds; the last, short vector with
    masked loads (zeros past the plane)."""
    a = _load_4x3(acc, a0, a1, a2, a3, u0, u1, u2, vec)
    lane = lanes(go, vec)
    for q in range(0, whole, lane):
        s0, s1, s2 = vload(cols, c0 + q, vec), vload(cols, c1 + q, vec), vload(cols, c2 + q, vec)
        v0, v1 = vload(go, g0 + q, vec), vload(go, g1 + q, vec)
        v2, v3 = vload(go, g2 + q, vec), vload(go, g3 + q, vec)
        a = _fma_4x3(a, v0, v1, v2, v3, s0, s1, s2)
    rest = p - whole
    if rest:
        q = whole
        s0, s1 = vload_head(cols, c0 + q, rest, vec), vload_head(cols, c1 + q, rest, vec)
        s2 = vload_head(cols, c2 + q, rest, vec)
        v0, v1 = vload_head(go, g0 + q, rest, vec), vload_head(go, g1 + q, rest, vec)
        v2, v3 = vload_head(go, g2 + q, rest, vec), vload_head(go, g3 + q, rest, vec)
        a = _fma_4x3(a, v0, v1, v2, v3, s0, s1, s2)
    _store_4x3(acc, a0, a1, a2, a3, u0, u1, u2, a)


@jit()
def grad_weight(part, n0, n1, x, grad_out, kh, kw, ph, pw, dh, dw, coff, partials, colss, stride,
                vec):  # fmt: skip
    """``partials[part, (k*taps + t)*lanes + l] = sum over images b in n0 .. n1-1 and pixels
    q = l (mod lanes) of grad_out[b, k, q] * columns_b[t, q]``: the part's weight gradient
    (K, C, KH, KW), lane by lane (stride 1); the caller adds the lanes.

    x (N, C, H, W); grad_out (N, K, OH, OW); coff (taps,): :func:`column_offsets`;
    stride: HP*OW. Scratch rows: colss (C*KW*stride).
    """
    partial, cols = partials[part], colss[part]
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    k, oh, ow = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3]
    taps, p = coff.size, oh * ow
    lane = lanes(cols, vec)
    whole = p - p % lane  # pixels in whole vectors
    row = taps * lane  # the partial sums of one channel
    xf = x.reshape(-1)
    partial[:] = 0
    cols[:] = 0
    for b in range(n0, n1):
        _columns(xf, b * c * h * w, c, h, w, ph, pw, kw, dw, ow, stride, cols, vec)
        go = grad_out[b].reshape(-1)
        for k0 in range(0, k, CHANNELS):
            # A short last block repeats its last channel or tap: the repeats load, add and
            # store the same sums as the originals, so nothing changes.
            k1, k2, k3 = min(k0 + 1, k - 1), min(k0 + 2, k - 1), min(k0 + 3, k - 1)
            for t0 in range(0, taps, TAPS):
                t1, t2 = min(t0 + 1, taps - 1), min(t0 + 2, taps - 1)
                _weight_block(go, cols, partial, p, whole,
                              k0 * p, k1 * p, k2 * p, k3 * p, coff[t0], coff[t1], coff[t2],
                              k0 * row, k1 * row, k2 * row, k3 * row,
                              t0 * lane, t1 * lane, t2 * lane, vec)  # fmt: skip


@jit(inline=True)
def _products(go, wt, taps, k, p, q0, t0, t1, t2, count, prod, padded, vec):
    """Rows ``t0, t1, t2`` of an image's products ``wt.T @ grad_out`` (taps x P) for the 4
    vectors of pixels from ``q0``, of which the first ``count`` exist (the rest: zeros),
    stored at ``prod[t*padded + q0]``: per output channel, 4 loads of ``grad_out``, 3
    broadcast weights, 12 fused multiply-adds."""
    lane = lanes(go, vec)
    z = vzero(go, vec)
    acc = (z, z, z, z, z, z, z, z, z, z, z, z)
    n0, n1 = min(count, lane), min(max(count - lane, 0), lane)
    n2, n3 = min(max(count - 2 * lane, 0), lane), min(max(count - 3 * lane, 0), lane)
    whole = count == PRODUCT_VECTORS * lane
    for kk in range(k):
        o = kk * p + q0
        if whole:
            v0, v1 = vload(go, o, vec), vload(go, o + lane, vec)
            v2, v3 = vload(go, o + 2 * lane, vec), vload(go, o + 3 * lane, vec)
        else:
            v0, v1 = vload_head(go, o, n0, vec), vload_head(go, o + lane, n1, vec)
            v2, v3 = vload_head(go, o + 2 * lane, n2, vec), vload_head(go, o + 3 * lane, n3, vec)
        w = kk * taps
        s0, s1 = vbroadcast(wt, w + t0, vec), vbroadcast(wt, w + t1, vec)
        s2 = vbroadcast(wt, w + t2, vec)
        acc = _fma_4x3(acc, v0, v1, v2, v3, s0, s1, s2)
    o0, o1, o2, o3 = q0, q0 + lane, q0 + 2 * lane, q0 + 3 * lane
    _store_4x3(prod, o0, o1, o2, o3, t0 * padded, t1 * padded, t2 * padded, acc)


@jit()
def grad_input(part, n0, n1, weight, grad_out, sh, sw, ph, pw, dh, dw, out, prods, padded, vec):
    """``out[b] = col2im(weight.T @ grad_out[b])`` for images ``b`` in ``n0 .. n1-1``, any
    stride: the products of an image's pixels with the weight of each tap, then each tap's
    products added where the tap sends them, in tap order.

    weight (K, C, KH, KW); grad_out (N, K, OH, OW); out (N, C, H, W); padded: OH*OW rounded
    up to whole blocks of pixels. Scratch rows: prods (taps*padded).
    """
    prod = prods[part]
    k, oh, ow = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3]
    c, kh, kw = weight.shape[1], weight.shape[2], weight.shape[3]
    h, w = out.shape[2], out.shape[3]
    taps, p = c * kh * kw, oh * ow
    lane = lanes(prod, vec)
    block = PRODUCT_VECTORS * lane
    wt = weight.reshape(-1)  # wt[kk*taps + t]
    for b in range(n0, n1):
        go = grad_out[b].reshape(-1)
        for q0 in range(0, p, block):
            count = min(block, p - q0)
            for t0 in range(0, taps, TAPS):
                # A short last group repeats its last tap, storing the same values.
                t1, t2 = min(t0 + 1, taps - 1), min(t0 + 2, taps - 1)
                _products(go, wt, taps, k, p, q0, t0, t1, t2, count, prod, padded, vec)
        ob = out[b].reshape(-1)
        ob[:] = 0
        for t in range(taps):
            ci, i, j = t // (kh * kw), t // kw % kh, t % kw
            # Output pixel ox meets input column ox*sw + j*dw - pw: those inside the row.
            lo = max(0, -(-(pw - j * dw) // sw))
            hi = min(ow, (w - 1 + pw - j * dw) // sw + 1)
            if lo >= hi:
                continue
            # Even rows, then odd ones: a row's loads right after the stores of the row
            # above, whose last vector they may overlap, stall on store forwarding.
            for first in range(2):
                for oy in range(first, oh, 2):
                    y = oy * sh + i * dh - ph
                    if y < 0 or y >= h:
                        continue
                    src = t * padded + oy * ow
                    dst = (ci * h + y) * w + j * dw - pw
                    if sw == 1:
                        vadd_run(prod, src + lo, ob, dst + lo, hi - lo, vec)
                    else:
                        for ox in range(lo, hi):
                            ob[dst + ox * sw] += prod[src + ox]
