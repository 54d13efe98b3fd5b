"""Register-blocked direct convolution: no im2col, no GEMM call.

The micro-kernel keeps a block of 6 pixels x 2 SIMD vectors of channels (12 accumulators)
in registers while it runs over a reduction: per step, 2 vector loads, 6 broadcasts and
12 fused multiply-adds. A pixel is a broadcast scalar read through the offset tables of
:mod:`fastcnn._kernels.geometry`, so any stride, padding and dilation costs the same.
Channels go in blocks of two vectors; a channel count that is not a whole number of
blocks is padded with zero weights (or zero gradients) in scratch, and the padding
channels are never written out.

- :func:`forward`: ``y = conv2d(x, w) + bias``. Blocks of 6 output pixels x 2 vectors of
  output channels, reduced over every tap; their sums go to a pixel-major band, which is
  transposed into ``y`` in square SIMD tiles.
- :func:`grad_weight`: blocks of 6 taps x 2 vectors of ``grad_out`` channels, reduced over
  the output pixels of every image, with ``grad_out`` first transposed to pixel-major.
- :func:`grad_input`: *scatter form*, any stride: blocks of 6 ``grad_out`` pixels x 2
  vectors of input channels, summed over the output channels for one tap at a time and
  added where that tap sends them in a pixel-major gradient of the padded image, whose
  interior is then transposed into ``out``; where the input channels fit one vector,
  blocks of 6 pixels x 2 taps instead. It multiplies only what the reference's
  col2im adds, so NaN and inf land as in the reference.

Every kernel works on images ``n0 .. n1-1`` of its batch, one part of
:func:`fastcnn._threads.run`, with its own rows of the scratch arrays; sums run in a fixed
order, so results are bitwise repeatable. The obvious twin is ``fastcnn.reference.conv``.
"""

from __future__ import annotations

import numpy as np

from fastcnn._config import jit
from fastcnn._kernels.geometry import padded_image
from fastcnn._kernels.simd import (
    lanes,
    load,
    vadd,
    vbroadcast,
    vfma,
    vload,
    vload_rows,
    vstore,
    vstore_rows,
    vtranspose,
    vzero,
)

PIXELS = 6  # pixels (forward, input gradient) or taps (weight gradient) per block


@jit(inline=True)
def _block(src, o0, o1, o2, o3, o4, o5, table, i0, i1, wt, s, step, acc, vec):
    """``acc`` plus, for each ``i`` in ``i0 .. i1-1``, the 6 scalars ``src[table[i] + o_p]``
    times the 2 vectors at ``wt[s + (i - i0)*step]``: the reduction loop of every block."""
    lane = lanes(wt, vec)
    a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51 = acc
    for i in range(i0, i1):
        t = load(table, i)
        u, v = vload(wt, s, vec), vload(wt, s + lane, vec)
        b = vbroadcast(src, t + o0, vec)
        a00, a01 = vfma(u, b, a00), vfma(v, b, a01)
        b = vbroadcast(src, t + o1, vec)
        a10, a11 = vfma(u, b, a10), vfma(v, b, a11)
        b = vbroadcast(src, t + o2, vec)
        a20, a21 = vfma(u, b, a20), vfma(v, b, a21)
        b = vbroadcast(src, t + o3, vec)
        a30, a31 = vfma(u, b, a30), vfma(v, b, a31)
        b = vbroadcast(src, t + o4, vec)
        a40, a41 = vfma(u, b, a40), vfma(v, b, a41)
        b = vbroadcast(src, t + o5, vec)
        a50, a51 = vfma(u, b, a50), vfma(v, b, a51)
        s += step
    return (a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51)


@jit(inline=True)
def _load(src, o0, o1, o2, o3, o4, o5, vec):
    """The block whose row ``p`` is the 2 vectors at ``src[o_p]``."""
    lane = lanes(src, vec)
    return (
        vload(src, o0, vec), vload(src, o0 + lane, vec),
        vload(src, o1, vec), vload(src, o1 + lane, vec),
        vload(src, o2, vec), vload(src, o2 + lane, vec),
        vload(src, o3, vec), vload(src, o3 + lane, vec),
        vload(src, o4, vec), vload(src, o4 + lane, vec),
        vload(src, o5, vec), vload(src, o5 + lane, vec),
    )  # fmt: skip


@jit(inline=True)
def _store(dst, o0, o1, o2, o3, o4, o5, acc, vec):
    """Row ``p`` of the block to the 2 vectors at ``dst[o_p]``."""
    lane = lanes(dst, vec)
    a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51 = acc
    vstore(dst, o0, a00)
    vstore(dst, o0 + lane, a01)
    vstore(dst, o1, a10)
    vstore(dst, o1 + lane, a11)
    vstore(dst, o2, a20)
    vstore(dst, o2 + lane, a21)
    vstore(dst, o3, a30)
    vstore(dst, o3 + lane, a31)
    vstore(dst, o4, a40)
    vstore(dst, o4 + lane, a41)
    vstore(dst, o5, a50)
    vstore(dst, o5 + lane, a51)


@jit(inline=True)
def _add(dst, o0, o1, o2, o3, o4, o5, acc, vec):
    """Row ``p`` of the block added to the 2 vectors at ``dst[o_p]``."""
    a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51 = acc
    old = _load(dst, o0, o1, o2, o3, o4, o5, vec)
    b00, b01, b10, b11, b20, b21, b30, b31, b40, b41, b50, b51 = old
    total = (
        vadd(b00, a00), vadd(b01, a01), vadd(b10, a10), vadd(b11, a11),
        vadd(b20, a20), vadd(b21, a21), vadd(b30, a30), vadd(b31, a31),
        vadd(b40, a40), vadd(b41, a41), vadd(b50, a50), vadd(b51, a51),
    )  # fmt: skip
    _store(dst, o0, o1, o2, o3, o4, o5, total, vec)


@jit(inline=True)
def _add_split(dst, e0, e1, e2, e3, e4, e5, count, left, right, spare, acc, vec):
    """Row ``p`` of a block of ``count`` pixels at ``e0 .. e5`` by two taps: its first vector
    added at ``dst[e_p + left]``, its second at ``dst[e_p + right]``, one vector after the
    other (two may meet); a short block's repeats, and a ``right`` of -1 (no second tap),
    go to the ``spare`` pixel."""
    a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51 = acc
    rc = count if right >= 0 else 0  # pixels whose second vector has a place
    _add_vector(dst, e0 + left, a00, vec)
    _add_vector(dst, e0 + right if rc > 0 else spare, a01, vec)
    _add_vector(dst, e1 + left if count > 1 else spare, a10, vec)
    _add_vector(dst, e1 + right if rc > 1 else spare, a11, vec)
    _add_vector(dst, e2 + left if count > 2 else spare, a20, vec)
    _add_vector(dst, e2 + right if rc > 2 else spare, a21, vec)
    _add_vector(dst, e3 + left if count > 3 else spare, a30, vec)
    _add_vector(dst, e3 + right if rc > 3 else spare, a31, vec)
    _add_vector(dst, e4 + left if count > 4 else spare, a40, vec)
    _add_vector(dst, e4 + right if rc > 4 else spare, a41, vec)
    _add_vector(dst, e5 + left if count > 5 else spare, a50, vec)
    _add_vector(dst, e5 + right if rc > 5 else spare, a51, vec)


@jit(inline=True)
def _add_vector(dst, o, a, vec):
    """``a`` added to the vector at ``dst[o]``."""
    vstore(dst, o, vadd(vload(dst, o, vec), a))


@jit(inline=True)
def _tile(src, i0, j0, stride, dst, dst_stride, vec):
    """The square tile of :func:`_transpose` at row ``i0``, column ``j0`` of ``src``."""
    tile = vtranspose(vload_rows(src, i0 * stride + j0, stride, vec))
    vstore_rows(dst, j0 * dst_stride + i0, dst_stride, tile, lanes(src, vec))


@jit(call=True)
def _transpose(src, rows, cols, stride, dst, dst_stride, vec):
    """``dst[j*dst_stride + i] = src[i*stride + j]`` for ``i < rows, j < cols``: in square
    tiles of ``lanes`` (:func:`fastcnn._kernels.simd.vtranspose`) where both fit, element by
    element at the edges. (Callers pass slices, not offsets: an integer constant argument
    would compile a copy of the helper for each value.)"""
    n = lanes(src, vec)
    rows_whole, cols_whole = rows - rows % n, cols - cols % n
    # Tiles run along the rows of whichever side has them further apart (often 4 KiB: one
    # L1 set), finishing those rows' cache lines before the next tile's rows evict them.
    if dst_stride > stride:
        for j0 in range(0, cols_whole, n):
            for i0 in range(0, rows_whole, n):
                _tile(src, i0, j0, stride, dst, dst_stride, vec)
    else:
        for i0 in range(0, rows_whole, n):
            for j0 in range(0, cols_whole, n):
                _tile(src, i0, j0, stride, dst, dst_stride, vec)
    for j in range(cols_whole, cols):
        for i in range(rows_whole):
            dst[j * dst_stride + i] = src[i * stride + j]
    for i in range(rows_whole, rows):
        for j in range(cols):
            dst[j * dst_stride + i] = src[i * stride + j]


@jit()
def forward(part, n0, n1, x, wt, bias, toff, bases, ph, pw, y, xps, bands, rows, chunk, vec):
    """``y[b, k, q] = bias[k] + sum_r wt[r*KP + k] * padded(x[b])[toff[r] + bases[q]]`` for
    images ``b`` in ``n0 .. n1-1``, with the scratch rows of ``part``.

    x (N, C, H, W); wt (taps*KP,): the weight as (taps, KP), its channels zero-padded to
    KP, a whole number of blocks; bias (KP,); toff (taps,), bases (OH*OW,): offset tables;
    y (N, K, OH, OW); rows: pixels per band, a multiple of 6 and of the lanes; chunk: taps
    per pass over a band. Scratch rows: xps (C*HP*WP) for zero-padded planes; bands
    (rows*KP): the pixel-major sums of a band.
    """
    xp, band = xps[part], bands[part]
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    k, p = y.shape[1], y.shape[2] * y.shape[3]
    kp, taps = bias.size, toff.size
    lane = lanes(wt, vec)
    last = p - 1
    xf, yf = x.reshape(-1), y.reshape(-1)
    xb = xf if ph == 0 and pw == 0 else xp
    xp[:] = 0
    for b in range(n0, n1):
        image = padded_image(xf, b, c, h, w, ph, pw, xp, vec)
        for start in range(0, p, rows):
            stop = min(p, start + rows)
            # The band's blocks run over the taps in chunks whose weights stay in L1, their
            # partial sums waiting in the band between chunks (the same bits as one pass).
            for r0 in range(0, taps, chunk):
                r1 = min(taps, r0 + chunk)
                for p0 in range(start, stop, PIXELS):
                    d = (p0 - start) * kp
                    o0 = image + load(bases, p0)
                    # A short last block repeats its last pixel into band rows never read.
                    o1 = image + load(bases, min(p0 + 1, last))
                    o2 = image + load(bases, min(p0 + 2, last))
                    o3 = image + load(bases, min(p0 + 3, last))
                    o4 = image + load(bases, min(p0 + 4, last))
                    o5 = image + load(bases, min(p0 + 5, last))
                    for k0 in range(0, kp, 2 * lane):
                        acc = _start(bias, band, d + k0, kp, r0, vec)
                        acc = _block(xb, o0, o1, o2, o3, o4, o5, toff, r0, r1, wt, r0 * kp + k0,
                                     kp, acc, vec)  # fmt: skip
                        _store(band, d + k0, d + kp + k0, d + 2 * kp + k0, d + 3 * kp + k0,
                               d + 4 * kp + k0, d + 5 * kp + k0, acc, vec)  # fmt: skip
            _transpose(band, stop - start, k, kp, yf[b * k * p + start :], p, vec)


@jit(inline=True)
def _start(bias, band, o, kp, r0, vec):
    """A block's starting sums: the bias for the first chunk of taps, else the partial
    sums waiting in the band (rows KP apart from ``band[o]``)."""
    if r0 == 0:
        lane = lanes(bias, vec)
        k0 = o % kp
        u, v = vload(bias, k0, vec), vload(bias, k0 + lane, vec)
        return (u, v, u, v, u, v, u, v, u, v, u, v)
    return _load(band, o, o + kp, o + 2 * kp, o + 3 * kp, o + 4 * kp, o + 5 * kp, vec)


@jit()
def grad_weight(part, n0, n1, x, grad_out, toff, bases, ph, pw, kp, partials, xps, gos, vec):
    """``partials[part, r*KP + k] = sum over images b in n0 .. n1-1 and pixels q of
    grad_out[b, k, q] * padded(x[b])[toff[r] + bases[q]]``: the part's weight gradient as
    (taps, KP), KP the channels K padded to whole blocks (those past K: zero).

    x (N, C, H, W); grad_out (N, K, OH, OW); toff (taps,), bases (OH*OW,): offset tables.
    Scratch rows: xps (C*HP*WP) for zero-padded planes; gos (OH*OW*KP) for one image of
    grad_out, pixel-major.
    """
    partial, xp, go = partials[part], xps[part], gos[part]
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    k = grad_out.shape[1]
    p = bases.size
    taps = toff.size
    lane = lanes(partial, vec)
    last = taps - 1
    # Pixels per chunk: the chunk of grad_out (chunk*KP) stays in L1 for every block of taps.
    chunk = max(1, 16384 // (kp * grad_out.itemsize))
    partial[:] = 0
    xp[:] = 0
    go[:] = 0  # channels K .. KP stay zero
    xf = x.reshape(-1)
    xb = xf if ph == 0 and pw == 0 else xp
    for b in range(n0, n1):
        image = padded_image(xf, b, c, h, w, ph, pw, xp, vec)
        _transpose(grad_out[b].reshape(-1), k, p, p, go, kp, vec)  # (K, P) -> (P, KP)
        for q0 in range(0, p, chunk):
            q1 = min(p, q0 + chunk)
            for r0 in range(0, taps, PIXELS):
                # A short last block repeats its last tap: the repeats store the same sums.
                r1, r2, r3 = min(r0 + 1, last), min(r0 + 2, last), min(r0 + 3, last)
                r4, r5 = min(r0 + 4, last), min(r0 + 5, last)
                t0, t1 = image + load(toff, r0), image + load(toff, r1)
                t2, t3 = image + load(toff, r2), image + load(toff, r3)
                t4, t5 = image + load(toff, r4), image + load(toff, r5)
                for k0 in range(0, kp, 2 * lane):
                    d0, d1, d2 = r0 * kp + k0, r1 * kp + k0, r2 * kp + k0
                    d3, d4, d5 = r3 * kp + k0, r4 * kp + k0, r5 * kp + k0
                    acc = _load(partial, d0, d1, d2, d3, d4, d5, vec)
                    acc = _block(xb, t0, t1, t2, t3, t4, t5, bases, q0, q1, go, q0 * kp + k0, kp,
                                 acc, vec)  # fmt: skip
                    _store(partial, d0, d1, d2, d3, d4, d5, acc, vec)


@jit()
def grad_input(part, n0, n1, grad_out, wt, koff, toff, bases, ph, pw, out, gts, bufs, spare,
               paired, vec):  # fmt: skip
    """Input gradient in scatter form, for images ``b`` in ``n0 .. n1-1``: for every pixel
    ``q`` of grad_out and tap ``t``, ``sum_k grad_out[b, k, q] * wt[(t*K + k)*CP + c]`` is
    added at ``(bases[q] + toff[t])*CP + c`` of the image's zero-padded gradient, kept
    pixel-major in ``buf``, whose interior then goes to ``out[b]``.

    grad_out (N, K, OH, OW); wt (taps*K*CP,): the weight as (KH, KW, K, CP), its channels
    zero-padded to CP, a whole number of blocks; or, if ``paired`` is not None (C fits one
    vector of CP lanes), as (taps/2 rounded up, K, 2, CP), a block's two vectors two taps
    (:func:`_paired_taps`; with ``paired=None``, Numba prunes that branch before it types
    it, and compiles what the other layers need alone); koff (K,): ``0 .. K-1``; toff
    (taps,): ``i*dh*WP + j*dw``; bases (OH*OW,): pixel offsets; out (N, C, H, W); spare:
    HP*WP*CP, where a spare pixel takes the repeats of a short last block. Scratch rows of ``part``:
    gts (OH*OW*K): one image of grad_out, pixel-major (read channel-major, rows OH*OW apart
    would fall in one cache set when OH*OW*4 is a multiple of 4 KiB); bufs ((HP*WP + 1)*CP):
    the padded gradient and the spare.
    """
    gt, buf = gts[part], bufs[part]
    first = np.int64(0)  # not the constant 0: see _transpose
    k = grad_out.shape[1]
    c, h, w = out.shape[1], out.shape[2], out.shape[3]
    wp = w + 2 * pw
    p, taps = bases.size, toff.size
    lane = lanes(wt, vec)
    cp = lane if paired is not None else wt.size // (taps * k)
    outf = out.reshape(-1)
    for b in range(n0, n1):
        buf[: spare + cp] = 0
        _transpose(grad_out[b].reshape(-1), k, p, p, gt, k, vec)  # (K, P) -> (P, K)
        for p0 in range(0, p, PIXELS):
            # A short last block repeats its last pixel, and adds the repeats to the spare.
            count = min(PIXELS, p - p0)
            last = p0 + count - 1
            q1, q2, q3 = min(p0 + 1, last), min(p0 + 2, last), min(p0 + 3, last)
            q4, q5 = min(p0 + 4, last), min(p0 + 5, last)
            e0, e1, e2 = load(bases, p0) * cp, load(bases, q1) * cp, load(bases, q2) * cp
            e3, e4, e5 = load(bases, q3) * cp, load(bases, q4) * cp, load(bases, q5) * cp
            if paired is not None:
                _paired_taps(gt, p0, q1, q2, q3, q4, q5, count, e0, e1, e2, e3, e4, e5, k, koff,
                             wt, toff, buf, spare, vec)  # fmt: skip
                continue
            for t in range(taps):
                d = load(toff, t) * cp
                for c0 in range(0, cp, 2 * lane):
                    u = vzero(wt, vec)
                    acc = (u, u, u, u, u, u, u, u, u, u, u, u)
                    acc = _block(gt, p0 * k, q1 * k, q2 * k, q3 * k, q4 * k, q5 * k, koff, first, k,
                                 wt, t * k * cp + c0, cp, acc, vec)  # fmt: skip
                    o, x = d + c0, spare + c0
                    f1 = e1 + o if count > 1 else x
                    f2 = e2 + o if count > 2 else x
                    f3 = e3 + o if count > 3 else x
                    f4 = e4 + o if count > 4 else x
                    f5 = e5 + o if count > 5 else x
                    _add(buf, e0 + o, f1, f2, f3, f4, f5, acc, vec)
        for y in range(h):  # the interior rows of buf, pixel-major, to out's planes
            s = ((y + ph) * wp + pw) * cp
            _transpose(buf[s:], w, c, cp, outf[(b * c * h + y) * w :], h * w, vec)


@jit(call=True)
def _paired_taps(gt, p0, q1, q2, q3, q4, q5, count, e0, e1, e2, e3, e4, e5, k, koff, wt, toff,
                 buf, spare, vec):  # fmt: skip
    """:func:`grad_input`'s block of pixels ``p0, q1 .. q5`` (``count`` real ones, at ``e0
    .. e5`` in ``buf``) for a weight in pairs of taps: blocks of 6 pixels x 2 taps, summed
    over the K channels of grad_out, where 2 vectors of channels would be mostly padding."""
    cp, taps = lanes(wt, vec), toff.size
    first = np.int64(0)
    for t in range(0, taps, 2):
        u = vzero(wt, vec)
        acc = (u, u, u, u, u, u, u, u, u, u, u, u)
        acc = _block(gt, p0 * k, q1 * k, q2 * k, q3 * k, q4 * k, q5 * k, koff, first, k,
                     wt, t * k * cp, 2 * cp, acc, vec)  # fmt: skip
        right = load(toff, t + 1) * cp if t + 1 < taps else -1  # -1: no second tap
        _add_split(buf, e0, e1, e2, e3, e4, e5, count, load(toff, t) * cp, right, spare, acc,
                   vec)  # fmt: skip
