"""Convolutions with few taps (C*KH*KW small, e.g. a one-channel input image).

With a handful of taps per output pixel the column matrix of an image (taps x OH*OW) is
smaller than its output, so each image's is built once (from zero-padded planes) and
the work runs with SIMD vectors along the output pixels (:mod:`fastcnn._simd`). At stride
1 the taps of one kernel column meet the same pixels a row apart, so the matrix holds one
copy per kernel column, over every padded row, and tap ``(c, i, j)`` starts ``i*dh`` rows
into its column's (:func:`_columns`: a third of the copying for 3x3; mnist-conv1's forward
0.85-0.96 of its time with a row per tap, and its weight gradient, with the 8 x 3 blocks
below, 0.74-0.84; the same bits):

- :func:`_forward` (stride 1): a block of 4 output channels x 3 vectors of pixels (12
  accumulators) runs over the taps: per tap, 3 vector loads of columns, 4 broadcast
  weights, 12 fused multiply-adds, and the block is stored straight into the output
  planes; with AVX-512's 32 registers, two blocks run side by side while they fit
  (:func:`_two_blocks`: mnist-conv1's forward 0.67-0.78 of one block's time, the same bits;
  :data:`TWO_BLOCKS`);
- :func:`_grad_input` (any stride): the same column matrix, the other way round: an
  image's products ``weight.T @ grad_out`` (taps x OH*OW) in blocks of 3 taps x 4 vectors
  of pixels over the output channels, then each tap's row of products added into the
  input rows it meets (col2im). Where the input gradient of a one-channel image had run
  as a forward convolution of the padded ``grad_out`` (:mod:`conv_rows`, 288 taps of 12
  unaligned loads each), this does a sixth fewer multiply-adds, 4 loads per 12 of them,
  and none with padding, so any weight goes: mnist-conv1's input gradient 0.47-0.53 of
  that time at 1 and 2 threads (Zen 4);
- :func:`_grad_weight` (stride 1): a block of 8 channels x 3 taps (24 accumulators) runs
  over the pixels: per vector of pixels, 8 loads of ``grad_out``, 3 of columns, 24
  multiply-adds (4 x 3 with 4 and 3 loads: 0.85-0.90 of that time, the same bits); with
  AVX2's 16 registers, its two halves of 4 x 3 one after the other. The
  sums stay per lane across the images of a part and are added once at the end (as in
  :mod:`fastcnn._kernels.conv_rows`): summing each block's lanes per image, with its last
  pixels one by one, had cost as much as a sixth of the time (mnist-conv1: 0.69-0.95 of
  that version's time; against a float64 reference, max error 5.6e-7 of the largest
  entry, against 1.5e-7 that way and torch's 2.9e-6).

All take the batch in ``parts`` (one per thread, a static split); each part owns its rows
of the scratch arrays. The obvious twin is ``fastcnn.reference.conv``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from fastcnn._config import jit
from fastcnn._kernels.blocks import fma_4x3, load_4x3, store_4x3
from fastcnn._kernels.conv_blocked import _pad_into, sum_parts
from fastcnn._simd import (
    REGISTERS,
    VECTOR_BYTES,
    lanes,
    token,
    vadd_run,
    vbroadcast,
    vcopy,
    vload,
    vload_head,
    vzero,
)
from fastcnn._workspace import scratch

PIXEL_VECTORS = 3  # vectors of output pixels per block of the forward
PRODUCT_VECTORS = 4  # vectors of grad_out pixels per block of the input gradient
CHANNELS = 4  # output channels per block (forward and weight gradient)
TAPS = 3  # taps per block of the weight gradient
# The forward's pairs of blocks and the weight gradient's 8 x 3 blocks hold 24 accumulators:
# with AVX2's 16 registers they spilled, and one block at a time (the weight gradient's two
# halves in turn) took 0.63-0.90 and 0.65-0.94 of the time at two threads, the weight
# gradient 0.73-0.83 at one (mnist-conv1, 1 to 16 channels; old and new code in one
# process; AMD Zen 1; the same bits).
TWO_BLOCKS = REGISTERS >= 32


@jit()
def _columns(xp, c, hp, wp, kw, dw, ow, stride, cols, vec):
    """Row ``r = ci*KW + j`` of the column matrix, ``cols[r*stride : r*stride + HP*OW]``,
    holds the pixels of padded planes xp (C, HP, WP, flat) that column tap j meets, on every
    padded row (stride 1): tap ``(ci, i, j)`` meets its OH*OW pixels from row i*dh on
    (:func:`_column_offsets`), so the kh taps of a column share one copy."""
    for r in range(c * kw):
        ci, j = r // kw, r % kw
        for y in range(hp):
            vcopy(xp, (ci * hp + y) * wp + j * dw, cols, r * stride + y * ow, ow, vec)


@jit()
def _column_offsets(c, kh, kw, dh, ow, stride):
    """Where in :func:`_columns`'s matrix the pixels of tap ``t = (ci*KH + i)*KW + j``
    start: row ``ci*KW + j``, from padded row ``i*dh`` on."""
    offsets = np.empty(c * kh * kw, np.int64)
    for t in range(c * kh * kw):
        ci, i, j = t // (kh * kw), t // kw % kh, t % kw
        offsets[t] = (ci * kw + j) * stride + i * dh * ow
    return offsets


@jit(inline="always")
def _one_block(cols, w2d, bias, k0, k1, k2, k3, taps, coff, q0, vec):
    """The block of :func:`_forward` for channels ``k0..k3`` and the 3 vectors of pixels
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
        acc = fma_4x3(acc, v0, v1, v2, v3, s0, s1, s2)
    return acc


@jit(inline="always")
def _two_blocks(cols, w2d, bias, k0, k1, k2, k3, taps, coff, q0, dst, o0, o1, o2, o3, vec):
    """:func:`_one_block` at ``q0`` and at the next block, whose 12 accumulators share the
    broadcast weights (24 in registers: with taps this few, a block's setup and store
    weigh as much as its multiply-adds); channel ``i``'s 6 vectors stored at ``dst[o_i]``."""
    lane = lanes(cols, vec)
    block = PIXEL_VECTORS * lane
    u0, u1 = vbroadcast(bias, k0, vec), vbroadcast(bias, k1, vec)
    u2, u3 = vbroadcast(bias, k2, vec), vbroadcast(bias, k3, vec)
    acc = (u0, u0, u0, u1, u1, u1, u2, u2, u2, u3, u3, u3)
    acd = acc
    for t in range(taps):
        col = coff[t] + q0
        v0, v1 = vbroadcast(w2d[k0], t, vec), vbroadcast(w2d[k1], t, vec)
        v2, v3 = vbroadcast(w2d[k2], t, vec), vbroadcast(w2d[k3], t, vec)
        s0 = vload(cols, col, vec)
        s1 = vload(cols, col + lane, vec)
        s2 = vload(cols, col + 2 * lane, vec)
        acc = fma_4x3(acc, v0, v1, v2, v3, s0, s1, s2)
        s0 = vload(cols, col + block, vec)
        s1 = vload(cols, col + block + lane, vec)
        s2 = vload(cols, col + block + 2 * lane, vec)
        acd = fma_4x3(acd, v0, v1, v2, v3, s0, s1, s2)
    store_4x3(dst, o0, o1, o2, o3, 0, lane, 2 * lane, acc)
    store_4x3(dst, o0, o1, o2, o3, block, block + lane, block + 2 * lane, acd)


@jit(parallel=True)
def _forward(x, weight, bias, ph, pw, dh, dw, y, parts, xps, colss, tails, two, vec):
    """``y[b, k] = bias[k] + sum_t weight[k, t] * columns_b[t]`` for every image b.

    x (N, C, H, W); weight (K, C, KH, KW); bias (K,); y (N, K, OH, OW). vec: the vector
    width (:func:`fastcnn._simd.token`). Scratch: xps (parts, C*HP*WP), colss (parts,
    C*KW*stride) with ``stride`` = HP*OW + the pixels that round OH*OW up to whole blocks
    (:func:`_columns`), tails (parts, CHANNELS * block). two: :data:`TWO_BLOCKS`.

    Parallel over parts of the batch: each owns its scratch rows and its images of y.
    """
    n, c, h, w = x.shape
    k, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    oh, ow = y.shape[2], y.shape[3]
    hp, wp = h + 2 * ph, w + 2 * pw
    taps, p = c * kh * kw, oh * ow
    lane = lanes(xps[0], vec)
    block = PIXEL_VECTORS * lane
    coff = _column_offsets(c, kh, kw, dh, ow, colss.shape[1] // (c * kw))
    w2d = weight.reshape(k, taps)
    yf = y.reshape(-1)
    for part in prange(parts):
        xp, cols, tail = xps[part], colss[part], tails[part]
        xp[:] = 0
        cols[:] = 0
        for b in range(part * n // parts, (part + 1) * n // parts):
            _pad_into(x[b], ph, pw, xp, vec)
            _columns(xp, c, hp, wp, kw, dw, ow, cols.size // (c * kw), cols, vec)
            for k0 in range(0, k, CHANNELS):
                # A short last block repeats its last channel, storing the same values.
                k1, k2, k3 = min(k0 + 1, k - 1), min(k0 + 2, k - 1), min(k0 + 3, k - 1)
                pairs = p // (2 * block) * (2 * block) if two else 0  # while they fit
                for q0 in range(0, pairs, 2 * block):
                    o0, o1 = (b * k + k0) * p + q0, (b * k + k1) * p + q0
                    o2, o3 = (b * k + k2) * p + q0, (b * k + k3) * p + q0
                    _two_blocks(
                        cols, w2d, bias, k0, k1, k2, k3, taps, coff, q0, yf, o0, o1, o2, o3, vec
                    )
                # Whole blocks straight to y, the short last one through tail: 0.78-0.89 of
                # the time of a loop that chose each block's destination (Zen 1, blocks alone).
                whole = p // block * block
                for q0 in range(pairs, whole, block):
                    acc = _one_block(cols, w2d, bias, k0, k1, k2, k3, taps, coff, q0, vec)
                    o0, o1 = (b * k + k0) * p + q0, (b * k + k1) * p + q0
                    o2, o3 = (b * k + k2) * p + q0, (b * k + k3) * p + q0
                    store_4x3(yf, o0, o1, o2, o3, 0, lane, 2 * lane, acc)
                if whole < p:  # the last, short one through tail
                    acc = _one_block(cols, w2d, bias, k0, k1, k2, k3, taps, coff, whole, vec)
                    store_4x3(tail, 0, block, 2 * block, 3 * block, 0, lane, 2 * lane, acc)
                    for i, ki in enumerate((k0, k1, k2, k3)):
                        vcopy(tail, i * block, yf, (b * k + ki) * p + whole, p - whole, vec)


@jit(inline="always")
def _column_vectors(cols, c0, c1, c2, q, vec):
    """The vectors of columns ``cols`` at ``c0..c2 + q``."""
    return vload(cols, c0 + q, vec), vload(cols, c1 + q, vec), vload(cols, c2 + q, vec)


@jit(inline="always")
def _weight_sums(go, acc, g0, g1, g2, g3, q, s0, s1, s2, vec):
    """``acc`` (4 x 3) plus the vectors of ``grad_out`` at ``g0..g3 + q`` times columns
    ``s0..s2``."""
    v0, v1 = vload(go, g0 + q, vec), vload(go, g1 + q, vec)
    v2, v3 = vload(go, g2 + q, vec), vload(go, g3 + q, vec)
    return fma_4x3(acc, v0, v1, v2, v3, s0, s1, s2)


@jit(inline="always")
def _weight_block(go, cols, acc, k, p, whole, k0, t0, taps, coff, row, two, vec):
    """Add one image's block of channels ``k0..k0+7`` x taps ``t0..t0+2`` (short blocks
    repeat their last channel or tap) to the per-lane sums in ``acc``: per vector of
    pixels, 3 loads of columns shared by two 4 x 3 blocks, 8 of ``grad_out``, 24 fused
    multiply-adds (unless ``two`` is false: then the 4 x 3 blocks run over the pixels in
    turn, each sum in the same order); the last, short vector with masked loads (zeros
    past the plane's end, where the columns run on into the next rows)."""
    lane = lanes(go, vec)
    rest = p - whole
    k1, k2, k3 = min(k0 + 1, k - 1), min(k0 + 2, k - 1), min(k0 + 3, k - 1)
    k4, k5, k6, k7 = min(k0 + 4, k - 1), min(k0 + 5, k - 1), min(k0 + 6, k - 1), min(k0 + 7, k - 1)
    g0, g1, g2, g3 = k0 * p, k1 * p, k2 * p, k3 * p
    g4, g5, g6, g7 = k4 * p, k5 * p, k6 * p, k7 * p
    t1, t2 = min(t0 + 1, taps - 1), min(t0 + 2, taps - 1)
    c0, c1, c2 = coff[t0], coff[t1], coff[t2]
    u0, u1, u2 = t0 * lane, t1 * lane, t2 * lane
    a = load_4x3(acc, k0 * row, k1 * row, k2 * row, k3 * row, u0, u1, u2, vec)
    d = load_4x3(acc, k4 * row, k5 * row, k6 * row, k7 * row, u0, u1, u2, vec)
    if two:
        for q in range(0, whole, lane):
            s0, s1, s2 = _column_vectors(cols, c0, c1, c2, q, vec)
            a = _weight_sums(go, a, g0, g1, g2, g3, q, s0, s1, s2, vec)
            d = _weight_sums(go, d, g4, g5, g6, g7, q, s0, s1, s2, vec)
    else:
        for q in range(0, whole, lane):
            s0, s1, s2 = _column_vectors(cols, c0, c1, c2, q, vec)
            a = _weight_sums(go, a, g0, g1, g2, g3, q, s0, s1, s2, vec)
        for q in range(0, whole, lane):
            s0, s1, s2 = _column_vectors(cols, c0, c1, c2, q, vec)
            d = _weight_sums(go, d, g4, g5, g6, g7, q, s0, s1, s2, vec)
    if rest:
        q = whole
        s0, s1 = vload_head(cols, c0 + q, rest, vec), vload_head(cols, c1 + q, rest, vec)
        s2 = vload_head(cols, c2 + q, rest, vec)
        v0, v1 = vload_head(go, g0 + q, rest, vec), vload_head(go, g1 + q, rest, vec)
        v2, v3 = vload_head(go, g2 + q, rest, vec), vload_head(go, g3 + q, rest, vec)
        a = fma_4x3(a, v0, v1, v2, v3, s0, s1, s2)
        v0, v1 = vload_head(go, g4 + q, rest, vec), vload_head(go, g5 + q, rest, vec)
        v2, v3 = vload_head(go, g6 + q, rest, vec), vload_head(go, g7 + q, rest, vec)
        d = fma_4x3(d, v0, v1, v2, v3, s0, s1, s2)
    # The repeats load, add and store the same sums as the originals: nothing changes.
    store_4x3(acc, k0 * row, k1 * row, k2 * row, k3 * row, u0, u1, u2, a)
    store_4x3(acc, k4 * row, k5 * row, k6 * row, k7 * row, u0, u1, u2, d)


@jit(parallel=True)
def _grad_weight(x, grad_out, kh, kw, ph, pw, dh, dw, parts, xps, colss, partial, two, vec):
    """``partial[part, (k*taps + t)*lanes + l] = sum over the part's images b and the pixels
    q = l (mod lanes) of grad_out[b, k, q] * columns_b[t, q]``: the weight gradient (K, C,
    KH, KW) of each part, lane by lane; the caller adds the lanes and the parts in order.

    x (N, C, H, W); grad_out (N, K, OH, OW); vec: the vector width
    (:func:`fastcnn._simd.token`). Scratch: xps (parts, C*HP*WP), colss (parts,
    C*KW*HP*OW) (:func:`_columns`), partial (parts, K*taps*lanes). two: :data:`TWO_BLOCKS`.

    Per image, blocks of 8 channels x 3 taps (:func:`_weight_block`: 24 accumulators,
    loaded from and stored to the part's partial sums) run over the vectors of pixels.
    Parallel over parts of the batch: each owns its scratch rows.
    """
    n, c, h, w = x.shape
    k, oh, ow = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3]
    hp, wp = h + 2 * ph, w + 2 * pw
    taps, p = c * kh * kw, oh * ow
    lane = lanes(xps[0], vec)
    coff = _column_offsets(c, kh, kw, dh, ow, colss.shape[1] // (c * kw))
    whole = p - p % lane  # pixels in whole vectors
    row = taps * lane  # the partial sums of one channel
    for part in prange(parts):
        xp, cols, acc = xps[part], colss[part], partial[part]
        xp[:] = 0
        cols[:] = 0
        acc[:] = 0
        for b in range(part * n // parts, (part + 1) * n // parts):
            _pad_into(x[b], ph, pw, xp, vec)
            _columns(xp, c, hp, wp, kw, dw, ow, cols.size // (c * kw), cols, vec)
            go = grad_out[b].reshape(-1)
            for k0 in range(0, k, 2 * CHANNELS):
                for t0 in range(0, taps, TAPS):
                    _weight_block(go, cols, acc, k, p, whole, k0, t0, taps, coff, row, two, vec)


@jit(inline="always")
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
        acc = fma_4x3(acc, v0, v1, v2, v3, s0, s1, s2)
    o0, o1, o2, o3 = q0, q0 + lane, q0 + 2 * lane, q0 + 3 * lane
    store_4x3(prod, o0, o1, o2, o3, t0 * padded, t1 * padded, t2 * padded, acc)


@jit(parallel=True)
def _grad_input(weight, grad_out, sh, sw, ph, pw, dh, dw, out, parts, prods, vec):
    """``out[b] = col2im(weight.T @ grad_out[b])`` for every image b: the products of an
    image's pixels with the weight of each tap, then each tap's products added where the
    tap sends them (in tap order, as ``fastcnn.reference.conv.conv2d_grad_input``).

    weight (K, C, KH, KW); grad_out (N, K, OH, OW); out (N, C, H, W); any stride. vec: the
    vector width (:func:`fastcnn._simd.token`). Scratch: prods (parts, taps*padded) with
    ``padded`` = OH*OW rounded up to whole blocks of pixels.

    The products are blocks of 3 taps x 4 vectors of pixels (12 accumulators) over the K
    channels, the last, short block with masked loads; they multiply only what the
    reference's col2im adds, so any weight, NaN or inf, gives the reference's result.
    Parallel over parts of the batch: each owns its scratch row and its images of out.
    """
    n, k, oh, ow = grad_out.shape
    c, kh, kw = weight.shape[1], weight.shape[2], weight.shape[3]
    h, w = out.shape[2], out.shape[3]
    taps, p = c * kh * kw, oh * ow
    lane = lanes(prods[0], vec)
    block = PRODUCT_VECTORS * lane
    padded = prods.shape[1] // taps
    wt = weight.reshape(-1)  # wt[kk*taps + t]
    for part in prange(parts):
        prod = prods[part]
        for b in range(part * n // parts, (part + 1) * n // parts):
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
                # above, whose last vector they may overlap, took 2.3x as long (Zen 4).
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


# --- drivers ---------------------------------------------------------------------------


def forward(x, weight, bias, g, out):
    """Stride-1 ``out (N, K, OH, OW) = conv2d(x, weight) + bias (K,)`` for few taps."""
    parts = min(g.n, numba.get_num_threads())
    if parts == 0:
        return
    block = PIXEL_VECTORS * VECTOR_BYTES // x.itemsize
    p = g.oh * g.ow
    hp = g.h + 2 * g.ph
    stride = hp * g.ow + -(-p // block) * block - p  # a row of _columns, run on to whole blocks
    xps = scratch("few.planes", (parts, g.c * hp * (g.w + 2 * g.pw)), x.dtype)
    colss = scratch("few.cols", (parts, g.c * g.kw * stride), x.dtype)
    tails = scratch("few.tail", (parts, CHANNELS * block), x.dtype)
    vec = token(VECTOR_BYTES)
    args = (g.ph, g.pw, g.dh, g.dw, out, parts, xps, colss, tails, TWO_BLOCKS, vec)
    _forward(x, weight, bias, *args)


def grad_input(weight, grad_out, g, out):
    """Input gradient ``out (N, C, H, W)`` for few taps, any stride."""
    parts = min(g.n, numba.get_num_threads())
    if parts == 0:
        return
    block = PRODUCT_VECTORS * VECTOR_BYTES // weight.itemsize
    taps, p = g.c * g.kh * g.kw, g.oh * g.ow
    prods = scratch("few.products", (parts, taps * -(-p // block) * block), weight.dtype)
    vec = token(VECTOR_BYTES)
    _grad_input(weight, grad_out, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, out, parts, prods, vec)


def grad_weight(x, grad_out, g, out):
    """Stride-1 weight gradient ``out (K, C, KH, KW)`` for few taps, parts added in order."""
    parts = min(g.n, numba.get_num_threads())
    if parts == 0:
        out[...] = 0
        return
    taps, hp = g.c * g.kh * g.kw, g.h + 2 * g.ph
    xps = scratch("few.planes", (parts, g.c * hp * (g.w + 2 * g.pw)), x.dtype)
    lane = VECTOR_BYTES // x.itemsize
    colss = scratch("few.cols", (parts, g.c * g.kw * hp * g.ow), x.dtype)
    partial = scratch("few.partial", (parts, g.k * taps * lane), x.dtype)
    vec = token(VECTOR_BYTES)
    args = (g.kh, g.kw, g.ph, g.pw, g.dh, g.dw, parts, xps, colss, partial, TWO_BLOCKS, vec)
    _grad_weight(x, grad_out, *args)
    out.reshape(-1)[:] = sum_parts(partial).reshape(g.k * taps, lane).sum(axis=1)
