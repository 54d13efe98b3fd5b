"""Register-blocked direct convolution: no im2col, no GEMM call, all cores in one kernel.

The micro-kernel keeps a block of 6 output pixels x 2 vectors of output channels (12
SIMD accumulators, see :mod:`fastcnn._simd`) in registers while it runs over every
tap ``r = (c, i, j)``: per tap, 2 vector loads of weights, 6 broadcasts of input pixels
and 12 fused multiply-adds. A pixel is a broadcast scalar, so any stride, dilation and
padding costs the same, and no work is spent on wrapped or padded columns.

- :func:`_forward`: ``y = conv2d(x, w) + bias``; also the stride-1 input gradient in
  *forward form*, the forward convolution of the zero-padded ``grad_out`` with the
  flipped, transposed weight. A band of blocks runs over the taps in chunks whose weights
  stay in L1 (:data:`CHUNK_BYTES`). Its blocks are pixel-major, ``y`` channel-major: they go to
  a band of pixel-major rows, transposed into ``y`` in square SIMD tiles (where a scalar
  copy of each block had cost 8-9% of the time: mnist-conv2's forward 0.93-0.97,
  cifar-64x64's 0.98-0.995 of that version's, the same bits; Zen 4).
- :func:`_grad_input`: the input gradient in *scatter form*, any stride: the block is 6
  pixels of ``grad_out`` x 2 vectors of input channels, summed over the output channels
  for one tap at a time and added where that tap sends them. It multiplies no padding
  zeros, which the forward form does (15% of its work on mnist-conv2), but adds into
  memory after every K terms; :func:`forward_form_pays` picks the form. With AVX-512 two
  blocks of consecutive pixels run side by side (:data:`PAIRS`).
- :func:`_grad_weight`: the same block over (6 taps x 2 channel vectors), reduced over the
  output pixels of every image.

Kernels take the batch in ``parts`` (one per thread, a static split) and each part owns
its rows of the scratch arrays: its zero-padded input planes (an input with no padding is
read in place: its pixels are only ever broadcast), its block buffer, its partial sums.
They need the output channels (forward) or the ``grad_out`` channels (weight gradient) in
whole blocks of two vectors (:func:`channel_block`: 32 float32
channels with 64-byte vectors, 16 or 8 with 32- or 16-byte ones; :func:`vector_bytes`
picks the widest that fits); the drivers in :mod:`fastcnn._kernels.conv` check this and
take the GEMM paths otherwise. With AVX-512 the forward also takes 128-byte vectors
(:data:`FORWARD_BYTES`, two native ones each: 24 of the 32 registers accumulate): then
multiples of 64 float32 channels share each pixel's broadcast between four native
vectors. The obvious twin is ``fastcnn.reference.conv``; summation runs over taps in
order, then (weight gradient) over parts in order, so results are bitwise repeatable at a
thread count.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import prange

from fastcnn._config import jit
from fastcnn._kernels.blocks import add_6x2, fma_6x2, load_6x2, store_6x2
from fastcnn._simd import (
    VECTOR_BYTES,
    WIDE_BYTES,
    lanes,
    load,
    token,
    vadd,
    vbroadcast,
    vcopy,
    vfma,
    vload,
    vload_rows,
    vstore,
    vstore_rows,
    vtranspose,
    vzero,
)
from fastcnn._workspace import scratch

PIXELS = 6  # output pixels per block (forward) / taps per block (weight gradient)
BAND_TILES = 2  # the forward's pixel-major band: this many lcm(PIXELS, tile) pixels
# The forward's chunks of taps: this many bytes of weights (taps x K), reused from L1 by
# every block of a band. One pass over all taps streamed the weights from L2 for each block
# (cifar-64x64's 144 KiB, mnist-conv2's 72 KiB). Chunks of 24 KiB: mnist-conv2 and
# cifar-64x64 0.92-0.96 of the time, 32 channels 0.81-0.94, 128 channels 0.90-0.95 (Intel
# Xeon with two 512-bit FMAs a cycle, 1 and 2 threads, old and new code alternating; the
# same bits); 12-18 KiB chunks and bands of one tile were slower at two threads.
CHUNK_BYTES = 24 * 1024
# Two blocks side by side on 12 consecutive pixels, broadcast at fixed offsets from one
# pointer (:func:`pairs_fit`): in the scatter-form input gradient, its whole pairs of
# blocks (mnist-conv2 0.81-0.89, cifar-64x64 0.82 of the time of single blocks; other bits:
# the pair adds tap by tap); in the forward, 12 pixels of one row (cifar-16x32 0.81-0.86,
# 32 to 32 channels 0.91-0.92; the same bits). Intel Xeon, 1 and 2 threads. Twelve pixels
# scattered over rows, each with its own pointer, had spilled registers: 1.35-1.6x the time.
PAIRS = True
# A last block of at most this many pixels runs them one at a time (:func:`_one_pixel`,
# whose one chain of FMAs per vector waits on their latency: a pixel costs about a quarter
# of a block). mnist-conv2's 121 pixels end in a block of one: its forward 0.98, the
# padded 13x13 of `fastcnn train` 0.95-0.98 of the time (Zen 4, the same bits).
SINGLES = 2

# The forward's widest vector: :data:`fastcnn._simd.WIDE_BYTES` (6 x 4 native accumulators)
# was measured 9-17% faster than native vectors on 64 channels (mnist-conv2, cifar-64x64;
# one and two threads, old and new code in one process) on AMD Zen 4, 1-22% on Zen 5 and
# 10-37% on an Intel Xeon (its time 0.73-0.90). The weight gradient, whose accumulators go
# to memory between chunks of pixels, was 17-24% slower so (Zen 5: 2.0-2.4x at one
# thread): it keeps native vectors.
FORWARD_BYTES = WIDE_BYTES


def channel_block(dtype, nbytes: int = VECTOR_BYTES) -> int:
    """Channels per block of the micro-kernel: two SIMD vectors of ``nbytes`` of ``dtype``."""
    return 2 * nbytes // np.dtype(dtype).itemsize


def vector_bytes(channels: int, dtype, widest: int = VECTOR_BYTES) -> int:
    """The widest vector (in bytes, at most ``widest``) whose channel blocks tile
    ``channels`` exactly, or 0 where none does (then the GEMM paths run).

    Narrower vectors cost little: two 32-byte FMAs issue per cycle where one 64-byte FMA
    does (AMD Zen 4), and 16-byte vectors still beat the GEMM paths on so few channels.
    """
    for nbytes in (128, 64, 32, 16):
        if nbytes <= widest and channels % channel_block(dtype, nbytes) == 0:
            return nbytes
    return 0


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# The offset tables depend only on the geometry; building them took 20-45 us a call
# (measured), a few percent of an MNIST-sized convolution, so they are kept.
@functools.lru_cache(maxsize=256)
def tap_offsets(c, kh, kw, hp, wp, dh, dw, channels_last=False) -> np.ndarray:
    """Offset of tap ``(c, i, j)`` in padded planes of ``hp x wp``: ``(c*hp + i*dh)*wp + j*dw``
    (int64, C*KH*KW, read-only and shared), the taps in (c, i, j) order, or in (i, j, c)
    order if ``channels_last`` (the taps of one kernel row then come together)."""
    ci, i, j = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
    offsets = (ci * hp + i * dh) * wp + j * dw
    if channels_last:
        offsets = offsets.transpose(1, 2, 0)
    return _frozen(offsets.reshape(-1).astype(np.int64))


@functools.lru_cache(maxsize=256)
def every_tap(oh: int, taps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row tap ranges ``(first, end)`` (int64, OH each, read-only and shared) that take
    every tap in every output row."""
    return _frozen(np.zeros(oh, np.int64)), _frozen(np.full(oh, taps, np.int64))


@jit()
def _pad_into(src, ph, pw, xp, vec):
    """Copy one image ``src`` (C, H, W) into the interiors of xp's zero-padded planes
    (C, H + 2*ph, W + 2*pw, flat; the borders must already be zero), a row at a time by
    :func:`fastcnn._simd.vcopy`."""
    c, h, w = src.shape
    wp = w + 2 * pw
    size = (h + 2 * ph) * wp
    flat = src.reshape(-1)
    for ci in range(c):
        for y in range(h):
            vcopy(flat, (ci * h + y) * w, xp, ci * size + (ph + y) * wp + pw, w, vec)


@jit()
def _transpose_tiles(src, s, rows, cols, dst, d, stride, readable, vec):
    """``dst[d + j*stride + i] = src[s + i*cols + j]`` for ``i < rows, j < cols``: the
    transpose of a (rows, cols) C-contiguous block of a flat array into rows ``stride``
    apart, in square SIMD tiles of ``vec``'s lanes (:func:`fastcnn._simd.vtranspose`)
    wherever a whole tile lies within ``cols`` columns and ``readable`` rows (``readable >=
    rows``: the caller's promise that rows up to it may be read; the lanes of rows past
    ``rows`` are not stored), element by element elsewhere. Copied element by element, the
    transposes had taken 5-8% of mnist-conv2's weight gradient and scatter-form input
    gradient; so, 0.85-0.99 and 0.94-1.0 of their time (Zen 4, the same bits)."""
    n = lanes(src, vec)
    whole = cols - cols % n
    tiled = 0
    while tiled < rows and tiled + n <= readable:
        count = min(n, rows - tiled)
        for j0 in range(0, whole, n):
            tile = vtranspose(vload_rows(src, s + tiled * cols + j0, cols, vec))
            vstore_rows(dst, d + j0 * stride + tiled, stride, tile, count)
        tiled += n
    tiled = min(tiled, rows)
    for i in range(rows):
        for j in range(0 if i >= tiled else whole, cols):
            dst[d + j * stride + i] = src[s + i * cols + j]


@functools.lru_cache(maxsize=256)
def pixel_offsets(oh: int, ow: int, sh: int, sw: int, wp: int) -> np.ndarray:
    """Offset of output pixel ``(oy, ox)`` in a padded plane of width wp: ``oy*sh*wp + ox*sw``,
    flat in OH x OW order (int64, read-only and shared)."""
    oy, ox = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    return _frozen((oy * sh * wp + ox * sw).reshape(-1).astype(np.int64))


@jit(inline="always")
def _block_sums(acc, xb, table, i0, i1, offsets, src, s, step, vec):
    """The reduction loop of a 6 x 2 block: ``acc`` plus, for each ``i`` in ``i0..i1``, the
    2 vectors at ``src[s + (i - i0)*step]`` times the 6 pixels ``xb[table[i] + offsets[p]]``.
    The forward runs it over taps (``table`` the taps' offsets, ``offsets`` the block's
    pixels, ``src`` the weight), the weight gradient over pixels (the pixels' offsets, the
    block's taps, the transposed grad_out).

    A helper of its own, reading ``table`` with :func:`fastcnn._simd.load` and stepping
    ``s``, because LLVM kept the 12 accumulators in registers only so on AVX2's 16: the
    weight gradient's loop, written out in its kernel's loop nest, spilled 11 vectors every
    two pixels (asm read), and with ``bases[q]`` and ``q*K + k0`` per pixel the kernel took
    2.2-2.7x the time (mnist-conv2, cifar-16x32, cifar-64x64; 1 and 2 threads, old and new
    code in one process; AMD Zen 3; the same bits); the forward 1.03-1.14x.
    """
    lane = lanes(src, vec)
    p0, p1, p2, p3, p4, p5 = offsets
    for i in range(i0, i1):
        t = load(table, i)
        u, v = vload(src, s, vec), vload(src, s + lane, vec)
        acc = fma_6x2(acc, xb, t + p0, t + p1, t + p2, t + p3, t + p4, t + p5, u, v, vec)
        s += step
    return acc


@jit(inline="always")
def _one_pixel(xp, wt, bias, toff, base, r_first, r_end, dst, o, vec):
    """One output pixel of :func:`_forward` (padded offset ``base``), every channel block
    over taps ``r_first..r_end`` in order, as in a block (the same bits), to ``dst[o]``."""
    k = bias.size
    lane = lanes(wt, vec)
    for k0 in range(0, k, 2 * lane):
        a0, a1 = vload(bias, k0, vec), vload(bias, k0 + lane, vec)
        for r in range(r_first, r_end):
            s = vbroadcast(xp, base + toff[r], vec)
            a0 = vfma(vload(wt, r * k + k0, vec), s, a0)
            a1 = vfma(vload(wt, r * k + k0 + lane, vec), s, a1)
        vstore(dst, o + k0, a0)
        vstore(dst, o + k0 + lane, a1)


@jit(inline="always")
def _block_start(bias, dst, o, k0, resume, vec):
    """The starting sums of a block of :func:`_forward` for the channels from ``k0``: its
    partial sums at ``dst[o + k0]`` (pixel-major rows K apart) if ``resume``, else the bias."""
    k = bias.size
    if resume:
        o += k0
        return load_6x2(dst, o, o + k, o + 2 * k, o + 3 * k, o + 4 * k, o + 5 * k, vec)
    lane = lanes(bias, vec)
    u0, u1 = vload(bias, k0, vec), vload(bias, k0 + lane, vec)
    return (u0, u1, u0, u1, u0, u1, u0, u1, u0, u1, u0, u1)


@jit(inline="always")
def _block_store(dst, o, k0, k, acc, vec):
    """A block's sums for the channels from ``k0`` to ``dst[o + k0]``, rows K apart."""
    o += k0
    store_6x2(dst, o, o + k, o + 2 * k, o + 3 * k, o + 4 * k, o + 5 * k, acc, vec)


@jit(inline="always")
def _block(xb, wt, bias, toff, pixels, r0, r1, resume, dst, o, vec):
    """One block of :func:`_forward`: the 6 pixels at padded offsets ``pixels``, every
    channel block over taps ``r0..r1`` in order, starting from the partial sums at ``dst[o]``
    (pixel-major, K apart) if ``resume``, else from the bias; the sums back to ``dst[o]``."""
    k = bias.size
    lane = lanes(wt, vec)
    for k0 in range(0, k, 2 * lane):
        acc = _block_start(bias, dst, o, k0, resume, vec)
        acc = _block_sums(acc, xb, toff, r0, r1, pixels, wt, r0 * k + k0, k, vec)
        _block_store(dst, o, k0, k, acc, vec)


@jit(inline="always")
def _block_pair(xb, wt, bias, toff, b0, r0, r1, resume, dst, o, vec):
    """Two blocks of :func:`_block` side by side on the 12 consecutive pixels from padded
    offset ``b0`` (one row at stride 1), to ``dst[o]`` and 6 rows on: each pair of weight
    loads feeds 24 FMAs, and the pixels are broadcast at fixed offsets from one pointer."""
    k = bias.size
    lane = lanes(wt, vec)
    m = o + PIXELS * k
    for k0 in range(0, k, 2 * lane):
        acc = _block_start(bias, dst, o, k0, resume, vec)
        more = _block_start(bias, dst, m, k0, resume, vec)
        for r in range(r0, r1):
            g = b0 + toff[r]
            w0 = vload(wt, r * k + k0, vec)
            w1 = vload(wt, r * k + k0 + lane, vec)
            acc = fma_6x2(acc, xb, g, g + 1, g + 2, g + 3, g + 4, g + 5, w0, w1, vec)
            more = fma_6x2(more, xb, g + 6, g + 7, g + 8, g + 9, g + 10, g + 11, w0, w1, vec)
        _block_store(dst, o, k0, k, acc, vec)
        _block_store(dst, m, k0, k, more, vec)


@jit(parallel=True)
def _forward(src, wt, bias, toff, bases, first, end, ph, pw, y, parts, xps, bands, chunk, pair,
             vec, tvec):  # fmt: skip
    """``y[b, k, q] = bias[k] + sum_r wt[r, k] * padded(src[b])[toff[r] + bases[q]]`` for
    every output pixel ``q = oy*OW + ox``, the sum over taps ``first[oy] <= r < end[oy]``
    (the others meet only padding zeros).

    src (N, C, H, W); wt (taps*K,): the weight as (taps, K), ``wt[r*K + k]``; bias (K,);
    toff (taps,): offsets of the taps in a padded plane; bases (OH*OW,):
    :func:`pixel_offsets`; first, end (OH,): non-increasing in ``oy``; y (N, K, OH, OW)
    with K a multiple of :func:`channel_block`; vec: the vector width, a
    :func:`fastcnn._simd.token`; tvec: the tiles' (at most native, dividing K). Scratch:
    xps (parts, C*HP*WP + 2*lanes), bands (parts, band*K): a band of pixel-major rows,
    ``band`` a multiple of PIXELS and of the tiles' lanes.

    A band of pixels runs over the taps in chunks of ``chunk``, every block of the band
    through one chunk before the next, so the chunk's weights stay in L1 while the band's
    blocks use them (:data:`CHUNK_BYTES`); a block's partial sums wait in the pixel-major
    band between chunks (stored and loaded exactly: the same bits as one pass). With
    ``pair``, 12 consecutive pixels run as two blocks side by side (:func:`_block_pair`);
    any 6 consecutive ones are broadcast from one pointer too. The band is then transposed
    into y[b] in square tiles of ``tvec``'s lanes (:func:`fastcnn._simd.vtranspose`: 16 x
    16 float32 with AVX-512). Parallel over parts of the batch: each pads its images into
    its own planes and writes only its images of y.
    """
    n = src.shape[0]
    k = y.shape[1]
    ow = y.shape[3]
    tile = lanes(wt, tvec)
    band = bands.shape[1] // k
    p = bases.size
    last = p - 1
    taps = toff.size
    yf = y.reshape(-1)
    for part in prange(parts):
        xp, img = xps[part], bands[part]
        xp[:] = 0
        for b in range(part * n // parts, (part + 1) * n // parts):
            # Pixels are read one at a time (broadcasts): with no padding, straight from src.
            if ph == 0 and pw == 0:
                xb = src[b].reshape(-1)
            else:
                _pad_into(src[b], ph, pw, xp, vec)
                xb = xp
            for start in range(0, p, band):
                stop = min(p, start + band)
                for t0 in range(0, taps, chunk):
                    p0 = start
                    while p0 < stop:
                        # Two blocks at once on 12 consecutive pixels (one row at stride 1;
                        # bases rise by at least 1 a pixel, so a span of 11 is all 1s).
                        size = PIXELS
                        if pair and p0 + 2 * PIXELS <= stop:
                            if bases[p0 + 2 * PIXELS - 1] - bases[p0] == 2 * PIXELS - 1:
                                size = 2 * PIXELS
                        # A short last block repeats its last pixel into rows past the end.
                        b0, b1 = bases[p0], bases[min(p0 + 1, last)]
                        b2, b3 = bases[min(p0 + 2, last)], bases[min(p0 + 3, last)]
                        b4, b5 = bases[min(p0 + 4, last)], bases[min(p0 + 5, last)]
                        # Rows of the block: the last one's first tap, the first one's end.
                        r_first = first[min(p0 + size - 1, last) // ow]
                        r_end = end[p0 // ow]
                        r0, r1 = max(r_first, t0), min(r_end, t0 + chunk)
                        o = (p0 - start) * k
                        if p - p0 <= SINGLES:  # a short last block: one pixel at a time,
                            if t0 == 0:  # each over all its taps at once
                                for q in range(p0, p):
                                    _one_pixel(xb, wt, bias, toff, bases[q], r_first, r_end,
                                               img, (q - start) * k, vec)  # fmt: skip
                        elif t0 > 0 and r0 >= r1:
                            pass  # none of the block's taps in this chunk
                        elif size > PIXELS:
                            _block_pair(xb, wt, bias, toff, b0, r0, r1, t0 > 0, img, o, vec)
                        elif b5 - b0 == PIXELS - 1:  # consecutive: fixed offsets from b0
                            pixels = (b0, b0 + 1, b0 + 2, b0 + 3, b0 + 4, b0 + 5)
                            _block(xb, wt, bias, toff, pixels, r0, r1, t0 > 0, img, o, vec)
                        else:
                            pixels = (b0, b1, b2, b3, b4, b5)
                            _block(xb, wt, bias, toff, pixels, r0, r1, t0 > 0, img, o, vec)
                        p0 += size
                for q0 in range(start, stop, tile):
                    count = min(tile, p - q0)  # the rows past the image's end are dropped
                    for k0 in range(0, k, tile):
                        cols = vtranspose(vload_rows(img, (q0 - start) * k + k0, k, tvec))
                        vstore_rows(yf, (b * k + k0) * p + q0, p, cols, count)


@jit(parallel=True)
def _grad_weight(x, grad_out, toff, bases, ph, pw, parts, xps, gos, partial, vec):
    """``partial[part, r, k] = sum over the part's images b and pixels q of
    grad_out[b, k, q] * padded(x[b])[toff[r] + bases[q]]``: the weight gradient (taps, K)
    of each part; the caller adds the parts in order.

    x (N, C, H, W); grad_out (N, K, OH, OW) with K a multiple of :func:`channel_block`;
    toff (taps,); bases (OH*OW,): :func:`pixel_offsets`; vec: the vector width, a
    :func:`fastcnn._simd.token`; scratch xps (parts, C*HP*WP + 2*lanes), gos (parts,
    OH*OW*K: one image of grad_out transposed to pixel-major); partial (parts, taps*K).

    Parallel over parts of the batch: each owns its planes, its transposed grad_out and
    its partial sum.
    """
    n = x.shape[0]
    k = grad_out.shape[1]
    taps, p = toff.size, bases.size
    lane = lanes(partial[0], vec)
    width = 2 * lane
    last = taps - 1
    # Pixels per chunk: its grad_out (chunk*K) stays in L1 while every tap block runs over it.
    chunk = max(1, 16384 // (k * grad_out.itemsize))
    for part in prange(parts):
        xp, go, acc = xps[part], gos[part], partial[part]
        xp[:] = 0
        acc[:] = 0
        for b in range(part * n // parts, (part + 1) * n // parts):
            if ph == 0 and pw == 0:  # pixels are broadcasts: straight from x
                xb = x[b].reshape(-1)
            else:
                _pad_into(x[b], ph, pw, xp, vec)
                xb = xp
            _transpose_tiles(grad_out[b].reshape(-1), 0, k, p, go, 0, k, k, vec)
            for q0 in range(0, p, chunk):
                q1 = min(p, q0 + chunk)
                for r0 in range(0, taps, PIXELS):
                    # A short last block repeats its last tap: the repeats compute and
                    # store the same sum as the original, so the result is unchanged.
                    r1, r2 = min(r0 + 1, last), min(r0 + 2, last)
                    r3, r4, r5 = min(r0 + 3, last), min(r0 + 4, last), min(r0 + 5, last)
                    t0, t1, t2 = toff[r0], toff[r1], toff[r2]
                    t3, t4, t5 = toff[r3], toff[r4], toff[r5]
                    for k0 in range(0, k, width):
                        o0, o1, o2 = r0 * k + k0, r1 * k + k0, r2 * k + k0
                        o3, o4, o5 = r3 * k + k0, r4 * k + k0, r5 * k + k0
                        a = load_6x2(acc, o0, o1, o2, o3, o4, o5, vec)
                        taps6 = (t0, t1, t2, t3, t4, t5)
                        a = _block_sums(a, xb, bases, q0, q1, taps6, go, q0 * k + k0, k, vec)
                        store_6x2(acc, o0, o1, o2, o3, o4, o5, a, vec)


@jit(inline="always")
def _add_pixels(buf, bases, q, c, d, acc, vec):
    """A block of :func:`_grad_input` for the 6 pixels from ``q`` added at
    ``bases[q + i]*C + d`` of ``buf``."""
    o0, o1, o2 = bases[q] * c + d, bases[q + 1] * c + d, bases[q + 2] * c + d
    o3, o4, o5 = bases[q + 3] * c + d, bases[q + 4] * c + d, bases[q + 5] * c + d
    add_6x2(buf, o0, o1, o2, o3, o4, o5, acc, vec)


@jit(inline="always")
def _channel_sums(go, wt, o, c, p, q0, q1, q2, q3, q4, q5, k, vec):
    """One block of :func:`_grad_input`: the sums over the K channels of grad_out ``go``
    (K*P,) at pixels ``q0..q5`` times the 2 vectors of ``wt`` from ``o``, ``c`` on per
    channel (a helper, with indices stepped, for the reason given at :func:`_block_sums`)."""
    lane = lanes(wt, vec)
    u = vzero(wt, vec)
    acc = (u, u, u, u, u, u, u, u, u, u, u, u)
    g = 0
    for _ in range(k):
        w0, w1 = vload(wt, o, vec), vload(wt, o + lane, vec)
        acc = fma_6x2(acc, go, g + q0, g + q1, g + q2, g + q3, g + q4, g + q5, w0, w1, vec)
        o += c
        g += p
    return acc


@jit(inline="always")
def _scatter_pair(go, wt, bases, p0, t, k, c, c0, d, buf, vec):
    """Two whole blocks of :func:`_grad_input` side by side: the sums over the K channels of
    pixels ``p0 .. p0 + 11`` of one image's grad_out ``go`` (K*P,) at tap ``t``, for the
    2 vectors of input channels from ``c0`` (of C), added at ``bases[q]*C + d`` of ``buf``.
    Each pair of weight loads feeds 24 FMAs, and the 12 pixels, being consecutive, are
    broadcast at fixed offsets from one pointer."""
    p = bases.size
    lane = lanes(wt, vec)
    u = vzero(wt, vec)
    acc = (u, u, u, u, u, u, u, u, u, u, u, u)
    more = acc
    o, g = t * k * c + c0, p0
    for _ in range(k):
        w0, w1 = vload(wt, o, vec), vload(wt, o + lane, vec)
        acc = fma_6x2(acc, go, g, g + 1, g + 2, g + 3, g + 4, g + 5, w0, w1, vec)
        more = fma_6x2(more, go, g + 6, g + 7, g + 8, g + 9, g + 10, g + 11, w0, w1, vec)
        o += c
        g += p
    _add_pixels(buf, bases, p0, c, d, acc, vec)
    _add_pixels(buf, bases, p0 + PIXELS, c, d, more, vec)


@jit(parallel=True)
def _grad_input(grad_out, wt, bases, toff, ph, pw, out, parts, bufs, blocks, pair, vec):
    """The input gradient in scatter form: for every pixel ``q`` of grad_out and tap ``t``,
    ``sum_k grad_out[b, k, q] * wt[(t*K + k)*C + c]`` is added at ``bases[q] + toff[t]`` of
    the image's zero-padded gradient planes, whose interior then goes to ``out[b]``.

    grad_out (N, K, OH, OW); wt (taps*K*C,): the weight as (KH, KW, K, C); bases (OH*OW,):
    :func:`pixel_offsets` of grad_out's pixels in the padded planes; toff (taps,): ``i*dh*WP
    + j*dw``; out (N, C, H, W) with C a multiple of :func:`channel_block`; vec: the vector
    width, a :func:`fastcnn._simd.token`. Scratch: bufs (parts, at least (HP*WP + lanes)*C): one
    image's padded gradient, pixel-major; blocks (parts, PIXELS*2*lanes). With ``pair``,
    the whole pairs of blocks run side by side (:func:`_scatter_pair`), the rest singly.

    Every product is one that the reference's ``col2im`` adds (the padding's share is
    dropped, not multiplied by zeros), so any stride, padding, dilation and weight work,
    and NaN and inf land as in the reference. Each pixel's sums run over ``k`` and are
    added block by block (or pair by pair) and tap by tap, in a fixed order: bitwise
    repeatable.

    Parallel over parts of the batch: each owns its buffers and its images of out.
    """
    n, k = grad_out.shape[0], grad_out.shape[1]
    c, h, w = out.shape[1], out.shape[2], out.shape[3]
    wp = w + 2 * pw
    lane = lanes(wt, vec)
    width = 2 * lane
    p, taps = bases.size, toff.size
    last = p - 1
    for part in prange(parts):
        buf, blk = bufs[part], blocks[part]
        for b in range(part * n // parts, (part + 1) * n // parts):
            buf[:] = 0
            go = grad_out[b].reshape(-1)
            whole = p - p % (2 * PIXELS) if pair else 0
            for p0 in range(0, whole, 2 * PIXELS):  # two whole blocks side by side
                for t in range(taps):
                    for c0 in range(0, c, width):
                        _scatter_pair(go, wt, bases, p0, t, k, c, c0, toff[t] * c + c0, buf, vec)
            for p0 in range(whole, p, PIXELS):
                # A short last block repeats its last pixel; the repeats are not added.
                q0, q1, q2 = p0, min(p0 + 1, last), min(p0 + 2, last)
                q3, q4, q5 = min(p0 + 3, last), min(p0 + 4, last), min(p0 + 5, last)
                count = min(PIXELS, p - p0)
                for t in range(taps):
                    for c0 in range(0, c, width):
                        o, d = t * k * c + c0, toff[t] * c + c0
                        # A whole block's pixels are consecutive, broadcast at fixed offsets
                        # from p0, and it adds straight from the registers (measured 8% faster).
                        if count == PIXELS:
                            acc = _channel_sums(go, wt, o, c, p, p0, p0 + 1, p0 + 2, p0 + 3,
                                                p0 + 4, p0 + 5, k, vec)  # fmt: skip
                            _add_pixels(buf, bases, p0, c, d, acc, vec)
                            continue
                        acc = _channel_sums(go, wt, o, c, p, q0, q1, q2, q3, q4, q5, k, vec)
                        store_6x2(
                            blk, 0, width, 2 * width, 3 * width, 4 * width, 5 * width, acc, vec
                        )
                        for i in range(count):
                            o = bases[p0 + i] * c + d
                            vstore(buf, o, vadd(vload(buf, o, vec), vload(blk, i * width, vec)))
                            o, e = o + lane, i * width + lane
                            vstore(buf, o, vadd(vload(buf, o, vec), vload(blk, e, vec)))
            flat = out[b].reshape(-1)
            readable = -(-w // lane) * lane  # bufs hold lanes*C elements past their planes
            for y in range(h):  # the interior rows of buf, pixel-major, to out's planes
                s = ((y + ph) * wp + pw) * c
                _transpose_tiles(buf, s, w, c, flat, y * w, h * w, readable, vec)


# --- drivers ---------------------------------------------------------------------------


def fits(channels: int, dtype) -> bool:
    """Whether a micro-kernel over ``channels`` (output channels of the forward, grad_out
    channels of the weight gradient) runs in whole blocks of some vector width."""
    return vector_bytes(channels, dtype) > 0


def sum_parts(partial):
    """``partial[0] + partial[1] + ...`` in part order (the same bits on every run), into
    ``partial[0]``, which is returned."""
    total = partial[0]
    for i in range(1, partial.shape[0]):
        total += partial[i]
    return total


def _scratch_planes(name: str, parts: int, size: int, dtype) -> np.ndarray:
    # Rows rounded up to whole 64-byte lines so no two threads write one cache line.
    row = -(-size // 16) * 16 + 16
    return scratch(name, (parts, row), dtype)


def forward(x, weight, bias, g, out):
    """``out (N, K, OH, OW) = conv2d(x (N, C, H, W), weight (K, C, KH, KW)) + bias (K,)``,
    any stride, padding and dilation; K a multiple of :func:`channel_block`."""
    hp, wp = g.h + 2 * g.ph, g.w + 2 * g.pw
    wt = np.ascontiguousarray(weight.reshape(g.k, -1).T).reshape(-1)
    toff = tap_offsets(g.c, g.kh, g.kw, hp, wp, g.dh, g.dw)
    first, end = every_tap(g.oh, toff.size)
    bases = pixel_offsets(g.oh, g.ow, g.sh, g.sw, wp)
    _run_forward(x, wt, bias, toff, bases, first, end, g.ph, g.pw, out, g.c * hp * wp)


def grad_input(weight, grad_out, g, out):
    """Stride-1 input gradient ``out (N, C, H, W)`` in forward form: the forward convolution
    of grad_out (N, K, OH, OW), zero-padded by ``d*(k-1) - p`` on each side, with the weight
    flipped in space and transposed to (C, K, KH, KW). Needs C a multiple of
    :func:`channel_block`, ``p <= d*(k-1)``, and a finite weight (the padding zeros meet
    every weight). :func:`forward_form_pays` says when it beats :func:`grad_input_scatter`."""
    wt, toff, first, end, (qh, qw), (hp, wp) = grad_input_operands(weight, g)
    zero = np.zeros(g.c, weight.dtype)
    bases = pixel_offsets(g.h, g.w, 1, 1, wp)
    _run_forward(grad_out, wt, zero, toff, bases, first, end, qh, qw, out, g.k * hp * wp)


# The forward form multiplies the zeros padding grad_out; the scatter form multiplies no
# zero, but adds each tap's sums over the K channels into memory. Measured (ms, forward /
# scatter form, in one process; 1 thread, then 2), on AMD Zen 4 before the scatter form's
# pairs of blocks: mnist-conv2, whose forward form does 1.18x the scatter form's
# multiply-adds, 3.5-4.4 / 3.2-3.8 and 2.1-2.3 / 1.6-1.9; cifar-64x64 (0.98x) 22.7 / 26.4
# and 12.3 / 14.5; mnist-conv2 with K = 2, 4, 8, 16 output channels at 2 threads 0.18 /
# 0.29, 0.27 / 0.32, 0.43 / 0.42, 0.70 / 0.55. So the forward form runs up to this ratio
# of work, and below this many channels. With pairs (Intel Xeon, both forms in pairs where
# they fit): where the forward form has no wider vectors than the scatter form, the
# scatter form is as fast or faster even at less work (C = 32: 14x14 padded, 0.95x the
# work, 3.64 / 3.51 and 1.88 / 1.76; 32x32 padded, 9.11 / 9.48 and 4.68 / 4.81; mnist-conv2
# 2.55 / 2.20 and 1.36 / 1.09); with them, the forward form is (cifar-64x64 16.6 / 18.8
# and 8.9 / 9.8; C = 64 on 14x14, 6.49 / 7.21 and 3.44 / 3.40; with K = 32, 3.30 / 3.98).
FORWARD_FORM_WORK = 1.1
SCATTER_MIN_K = 8


def pairs_fit(nbytes: int) -> bool:
    """Whether the forward and the scatter form run two blocks side by side (24
    accumulators) on vectors of ``nbytes``: with :data:`PAIRS`, where 32 registers hold
    them (AVX-512, native or narrower vectors), and on AVX2's 16-byte vectors, whose 24
    accumulators do not fit its 16 registers but took 0.91-1.04 of the time of single
    blocks (8 channels, forward and scatter form, 1 and 2 threads; AMD Zen 1)."""
    return PAIRS and 2 * nbytes <= WIDE_BYTES


def forward_form_pays(g, dtype) -> bool:
    """Whether a stride-1 input gradient that may run in forward form (:func:`grad_input`)
    should: fewer than :data:`SCATTER_MIN_K` output channels, or multiply-adds (padding
    zeros included) at most :data:`FORWARD_FORM_WORK` times those of the scatter form,
    unless the scatter form runs in pairs and the forward form would not have wider
    vectors for the C channels of ``dtype``."""
    if g.k < SCATTER_MIN_K:
        return True
    nbytes = vector_bytes(g.c, dtype)
    if pairs_fit(nbytes) and vector_bytes(g.c, dtype, FORWARD_BYTES) <= nbytes:
        return False
    _, first, end, *_ = _grad_input_taps(g._replace(n=0))
    work = g.w * int((end - first).sum())  # taps (all K channels) per output pixel, summed
    return work <= FORWARD_FORM_WORK * g.oh * g.ow * g.k * g.kh * g.kw


def grad_input_scatter(weight, grad_out, g, out):
    """Input gradient ``out (N, C, H, W)`` from weight (K, C, KH, KW) and grad_out
    (N, K, OH, OW) in scatter form (:func:`_grad_input`): any stride, padding, dilation and
    weight; C a multiple of :func:`channel_block`."""
    parts = min(g.n, numba.get_num_threads())
    if parts == 0:
        return
    hp, wp = g.h + 2 * g.ph, g.w + 2 * g.pw
    wt = np.ascontiguousarray(weight.transpose(2, 3, 0, 1)).reshape(-1)  # (KH, KW, K, C)
    toff = tap_offsets(1, g.kh, g.kw, hp, wp, g.dh, g.dw)
    bases = pixel_offsets(g.oh, g.ow, g.sh, g.sw, wp)
    nbytes = vector_bytes(g.c, weight.dtype)
    lane = nbytes // weight.itemsize  # the transposes read up to lanes pixels past a row
    bufs = _scratch_planes("blocked.gradient", parts, (hp * wp + lane) * g.c, weight.dtype)
    block = PIXELS * channel_block(weight.dtype, nbytes)
    blocks = scratch("blocked.block", (parts, block), weight.dtype)
    pair = pairs_fit(nbytes)
    _grad_input(grad_out, wt, bases, toff, g.ph, g.pw, out, parts, bufs, blocks, pair,
                token(nbytes))  # fmt: skip


def grad_input_operands(weight, g):
    """The operands of a stride-1 input gradient computed as a forward convolution:
    ``(wt, toff, first, end, (qh, qw), (hp, wp))``, with grad_out padded by ``(qh, qw) =
    d*(k-1) - p`` to planes of ``hp x wp``, the flipped weight as (taps, C) flat, and
    tap offsets and per-row tap ranges for :func:`_forward` (:func:`_grad_input_taps`)."""
    flipped = weight[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)  # (KH, KW, K, C)
    wt = np.ascontiguousarray(flipped).reshape(-1)
    return (wt, *_grad_input_taps(g._replace(n=0)))


@functools.lru_cache(maxsize=256)
def _grad_input_taps(g):
    """``(toff, first, end, (qh, qw), (hp, wp))`` of :func:`grad_input_operands` (read-only
    and shared: they depend only on the geometry).

    The taps go in (i, j, k) order, so those of one kernel row are contiguous, and each
    output row sums only the kernel rows that reach real rows of grad_out: skipping the
    padding rows (a sixth of the work of mnist-conv2's input gradient) is exact because
    the weight is finite.
    """
    qh, qw = g.dh * (g.kh - 1) - g.ph, g.dw * (g.kw - 1) - g.pw
    hp, wp = g.oh + 2 * qh, g.ow + 2 * qw
    toff = tap_offsets(g.k, g.kh, g.kw, hp, wp, g.dh, g.dw, channels_last=True)
    # Output row y meets padded row y + i*dh, a real one when qh <= y + i*dh < qh + OH.
    y = np.arange(g.h)
    lo = np.clip(-((y - qh) // g.dh), 0, g.kh)  # ceil((qh - y) / dh)
    hi = np.clip(-((y - qh - g.oh) // g.dh), 0, g.kh)  # ceil((qh + OH - y) / dh)
    per_row = g.kw * g.k
    first = _frozen((lo * per_row).astype(np.int64))
    end = _frozen((np.maximum(lo, hi) * per_row).astype(np.int64))
    return toff, first, end, (qh, qw), (hp, wp)


def _run_forward(src, wt, bias, toff, bases, first, end, ph, pw, out, plane_size):
    """:func:`_forward` of ``src`` into ``out``, on one part of the batch per thread, each
    with padded planes of ``plane_size`` elements."""
    parts = min(src.shape[0], numba.get_num_threads())
    if parts == 0:
        return
    nbytes = vector_bytes(out.shape[1], src.dtype, FORWARD_BYTES)
    tile_bytes = min(nbytes, VECTOR_BYTES)
    xps = _scratch_planes("blocked.planes", parts, plane_size, src.dtype)
    tile = tile_bytes // src.itemsize
    band = BAND_TILES * tile * PIXELS // math.gcd(tile, PIXELS)  # whole blocks, whole tiles
    bands = scratch("blocked.band", (parts, band * out.shape[1]), src.dtype)
    chunk = max(1, CHUNK_BYTES // (out.shape[1] * src.itemsize))
    pair = pairs_fit(nbytes)
    vec, tvec = token(nbytes), token(tile_bytes)
    _forward(src, wt, bias, toff, bases, first, end, ph, pw, out, parts, xps, bands, chunk, pair,
             vec, tvec)  # fmt: skip


def grad_weight(x, grad_out, g, out):
    """Weight gradient ``out (K, C, KH, KW)`` from x (N, C, H, W) and grad_out (N, K, OH, OW),
    any stride, padding and dilation; K a multiple of :func:`channel_block`."""
    hp, wp = g.h + 2 * g.ph, g.w + 2 * g.pw
    taps = g.c * g.kh * g.kw
    parts = min(g.n, numba.get_num_threads())
    if parts == 0:
        out[...] = 0
        return
    toff = tap_offsets(g.c, g.kh, g.kw, hp, wp, g.dh, g.dw)
    xps = _scratch_planes("blocked.planes", parts, g.c * hp * wp, x.dtype)
    gos = scratch("blocked.grad_out", (parts, g.oh * g.ow * g.k + 16), x.dtype)
    partial = scratch("blocked.partial", (parts, taps * g.k), x.dtype)
    bases = pixel_offsets(g.oh, g.ow, g.sh, g.sw, wp)
    vec = token(vector_bytes(g.k, x.dtype))
    _grad_weight(x, grad_out, toff, bases, g.ph, g.pw, parts, xps, gos, partial, vec)
    out.reshape(g.k, taps)[...] = sum_parts(partial).reshape(taps, g.k).T
