"""Stride-1 convolution with SIMD vectors along wrapped output rows.

At stride 1, output pixel ``(oy, ox)`` of tap ``(c, i, j)`` reads padded pixel
``c*HP*WP + (oy + i*dh)*WP + ox + j*dw``: with the wrapped pixel index ``q = oy*WP + ox``
that is ``toff[r] + q``, so a run of consecutive ``q`` reads a contiguous run of the
padded planes, across row ends. :func:`_forward` keeps a block of 4 output channels x 3
vectors of wrapped pixels (12 accumulators) in registers over every tap: per tap, 3
vector loads of the padded planes, 4 broadcast weights and 12 fused multiply-adds. The
``WP - OW`` pixels past each row's end are computed into a band buffer and dropped when
the band is copied into the output (cheap where rows are wide: :func:`pays`); the
blocks are stored with whole vector stores, with no transposition. With one output
channel (the input gradient of a one-channel image with more than 16 taps; with fewer,
:mod:`conv_few_taps` takes it) a block is that channel x 12 vectors
(:func:`_one_channel`: per tap 12 loads, 1 broadcast, 12 FMAs), where 4 x 3 would compute
it four times: mnist-conv1's input gradient, when it ran here, 0.61-0.65 of the 4 x 3
block's time.

- ``forward``: ``y = conv2d(x, w) + bias``, any channel counts, padding and dilation;
- ``grad_input``: the stride-1 input gradient, as the forward convolution of the
  zero-padded ``grad_out`` with the flipped, transposed weight (as in
  :func:`fastcnn._kernels.conv_blocked.grad_input`, whose operands it uses);
- ``grad_weight``: :func:`_grad_weight`, a block of 4 channels x 3 taps over the vectors
  of wrapped pixels of each image, with ``grad_out`` copied into wrapped rows whose
  dropped pixels are zero (so x must be finite: ``0 * inf`` is NaN); the sums stay per
  lane across images and are added once at the end.

The batch runs in ``parts`` (one per thread, a static split); each part owns its rows of
the scratch arrays. Sums run in a fixed order, so results are bitwise repeatable. The
obvious twin is ``fastcnn.reference.conv``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from fastcnn._config import jit
from fastcnn._kernels.blocks import fma_1x12, fma_4x3, load_4x3, store_4x3
from fastcnn._kernels.conv_blocked import (
    _pad_into,
    every_tap,
    grad_input_operands,
    sum_parts,
    tap_offsets,
)
from fastcnn._simd import VECTOR_BYTES, lanes, token, vbroadcast, vcopy, vfma, vload, vstore
from fastcnn._workspace import scratch

CHANNELS = 4  # output channels per block
PIXEL_VECTORS = 3  # vectors of wrapped pixels per block
BAND_BYTES = 256 << 10  # wrapped output rows per band: K x rows x WP fit in this (L2)
PARTIAL_BYTES = 512 << 10  # the weight gradient's per-lane partial sums, per thread (L2)


def pays(row_width: int, reach: int, share: int) -> bool:
    """Whether at most ``1/share`` of a padded row of ``row_width`` pixels is dropped: its
    last ``reach`` = ``dw*(kw - 1)`` wrapped pixels."""
    return share * reach <= row_width


def partials_fit(weight_size: int) -> bool:
    """Whether the weight gradient's per-lane partial sums of a weight of ``weight_size``
    elements (a vector of :data:`VECTOR_BYTES` per element, per thread) fit in
    :data:`PARTIAL_BYTES`."""
    return weight_size * VECTOR_BYTES <= PARTIAL_BYTES


@jit(inline="always")
def _one_channel(xp, wt, bias, toff, r_first, r_end, q0, tmp, t, vec):
    """The block of :func:`_forward` for one output channel: 12 vectors of wrapped pixels
    from ``q0``, stored at ``tmp[t]``."""
    u = vbroadcast(bias, 0, vec)
    acc = (u, u, u, u, u, u, u, u, u, u, u, u)
    for r in range(r_first, r_end):
        acc = fma_1x12(acc, vbroadcast(wt, r, vec), xp, toff[r] + q0, vec)
    lane = lanes(wt, vec)
    step = PIXEL_VECTORS * lane  # the 12 vectors as 4 rows of 3
    store_4x3(tmp, t, t + step, t + 2 * step, t + 3 * step, 0, lane, 2 * lane, acc)


@jit(inline="always")
def _one_channel_short(xp, wt, bias, toff, r_first, r_end, q0, tmp, t, vec):
    """:func:`_one_channel` on 3 vectors (a block's last pixels)."""
    lane = lanes(wt, vec)
    a0 = a1 = a2 = vbroadcast(bias, 0, vec)
    for r in range(r_first, r_end):
        v, o = vbroadcast(wt, r, vec), toff[r] + q0
        a0 = vfma(v, vload(xp, o, vec), a0)
        a1 = vfma(v, vload(xp, o + lane, vec), a1)
        a2 = vfma(v, vload(xp, o + 2 * lane, vec), a2)
    vstore(tmp, t, a0)
    vstore(tmp, t + lane, a1)
    vstore(tmp, t + 2 * lane, a2)


@jit(inline="always")
def _four_channels(xp, wt, bias, toff, r_first, r_end, q0, tmp, t, stride, vec):
    """The blocks of :func:`_forward` for every output channel, 4 at a time (a short last
    block repeats its last channel into a spare row): 3 vectors of wrapped pixels from
    ``q0``, stored at ``tmp[k*stride + t]``."""
    k = bias.size
    lane = lanes(wt, vec)
    for k0 in range(0, k, CHANNELS):
        k1, k2, k3 = min(k0 + 1, k - 1), min(k0 + 2, k - 1), min(k0 + 3, k - 1)
        u0, u1 = vbroadcast(bias, k0, vec), vbroadcast(bias, k1, vec)
        u2, u3 = vbroadcast(bias, k2, vec), vbroadcast(bias, k3, vec)
        acc = (u0, u0, u0, u1, u1, u1, u2, u2, u2, u3, u3, u3)
        for r in range(r_first, r_end):
            o, w = toff[r] + q0, r * k
            s0 = vload(xp, o, vec)
            s1 = vload(xp, o + lane, vec)
            s2 = vload(xp, o + 2 * lane, vec)
            v0, v1 = vbroadcast(wt, w + k0, vec), vbroadcast(wt, w + k1, vec)
            v2, v3 = vbroadcast(wt, w + k2, vec), vbroadcast(wt, w + k3, vec)
            acc = fma_4x3(acc, v0, v1, v2, v3, s0, s1, s2)
        o0, o1 = k0 * stride + t, (k0 + 1) * stride + t
        o2, o3 = (k0 + 2) * stride + t, (k0 + 3) * stride + t
        store_4x3(tmp, o0, o1, o2, o3, 0, lane, 2 * lane, acc)


@jit(parallel=True)
def _forward(src, wt, bias, toff, first, end, wp, ph, pw, band, y, parts, xps, tmps, vec):
    """``y[b, k, oy, ox] = bias[k] + sum_r wt[r*K + k] * padded(src[b])[toff[r] + oy*WP + ox]``,
    the sum over taps ``first[oy] <= r < end[oy]`` (the others meet only padding zeros).

    src (N, C, H, W); wt (taps*K,): the weight as (taps, K); bias (K,); toff (taps,):
    offsets of the taps in padded planes of width ``wp``; first, end (OH,): non-increasing
    in ``oy``; band: output rows per band; y (N, K, OH, OW), any K; vec: the vector width,
    a :func:`fastcnn._simd.token`. Scratch: xps (parts, C*HP*WP + 3*lanes), tmps (parts,
    (K + 4)*stride) with ``stride`` = band*WP rounded up to whole blocks.

    Parallel over parts of the batch: each pads its images into its own planes and writes
    only its images of y.
    """
    n = src.shape[0]
    k, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    lane = lanes(wt, vec)
    block = PIXEL_VECTORS * lane
    stride = tmps.shape[1] // (k + CHANNELS)  # per row of the band buffer
    for part in prange(parts):
        xp, tmp = xps[part], tmps[part]
        xp[:] = 0
        for b in range(part * n // parts, (part + 1) * n // parts):
            _pad_into(src[b], ph, pw, xp, vec)
            for oy0 in range(0, oh, band):
                oy1 = min(oh, oy0 + band)
                start, stop = oy0 * wp, (oy1 - 1) * wp + ow
                q0 = start
                while q0 < stop:
                    # One channel runs 12 vectors at a time while they fit, then 3.
                    size = 4 * block if k == 1 and q0 + 4 * block <= stop else block
                    # Rows of the block: the last one's first tap, the first one's end.
                    r_first = first[(min(q0 + size, stop) - 1) // wp]
                    r_end = end[q0 // wp]
                    t = q0 - start
                    if size > block:
                        _one_channel(xp, wt, bias, toff, r_first, r_end, q0, tmp, t, vec)
                    elif k == 1:
                        _one_channel_short(xp, wt, bias, toff, r_first, r_end, q0, tmp, t, vec)
                    else:
                        _four_channels(xp, wt, bias, toff, r_first, r_end, q0, tmp, t, stride, vec)
                    q0 += size
                yb = y[b].reshape(-1)
                for kk in range(k):
                    for oy in range(oy0, oy1):
                        s = kk * stride + (oy - oy0) * wp
                        vcopy(tmp, s, yb, (kk * oh + oy) * ow, ow, vec)


@jit(inline="always")
def _wrapped_sums(xp, go, acc, s0, s1, s2, g0, g1, g2, g3, stride, vec):
    """A block of :func:`_grad_weight`: ``acc`` (4 x 3) plus grad_out rows at ``g0..g3``
    times padded planes at ``s0..s2``, over the ``stride`` wrapped pixels (a helper, for the
    reason given at :func:`fastcnn._kernels.conv_blocked._block_sums`)."""
    lane = lanes(go, vec)
    for q in range(0, stride, lane):
        c0, c1, c2 = vload(xp, s0 + q, vec), vload(xp, s1 + q, vec), vload(xp, s2 + q, vec)
        v0, v1 = vload(go, g0 + q, vec), vload(go, g1 + q, vec)
        v2, v3 = vload(go, g2 + q, vec), vload(go, g3 + q, vec)
        acc = fma_4x3(acc, v0, v1, v2, v3, c0, c1, c2)
    return acc


@jit(parallel=True)
def _grad_weight(x, grad_out, toff, wp, ph, pw, parts, xps, gos, partial, vec):
    """``partial[part, (k*taps + t)*lanes + l] = sum over the part's images b and the wrapped
    pixels q = l (mod lanes) of wrapped(grad_out[b])[k, q] * padded(x[b])[toff[t] + q]``:
    the weight gradient (K, taps) of each part, lane by lane; the caller adds the lanes and
    the parts in order.

    x (N, C, H, W), finite (the dropped pixels read it, times zero); grad_out (N, K, OH,
    OW), any K; toff (taps,): offsets of the taps in padded planes of width ``wp``; vec:
    the vector width, a :func:`fastcnn._simd.token`. Scratch: xps (parts, C*HP*WP +
    2*lanes), gos (parts, K*stride) with ``stride`` = (OH - 1)*WP + OW rounded up to
    whole vectors, partial (parts, K*taps*lanes).

    Per image, a block of 4 channels x 3 taps (12 accumulators, loaded from and stored to
    the part's partial sums) runs over the vectors of wrapped pixels: 4 loads of
    ``grad_out``, 3 of the padded planes, 12 fused multiply-adds.
    """
    n = x.shape[0]
    k, oh, ow = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3]
    taps = toff.size
    lane = lanes(partial[0], vec)
    stride = gos.shape[1] // k
    for part in prange(parts):
        xp, go, acc = xps[part], gos[part], partial[part]
        xp[:] = 0
        go[:] = 0  # the dropped pixels of every row, and the tail, stay zero
        acc[:] = 0
        for b in range(part * n // parts, (part + 1) * n // parts):
            _pad_into(x[b], ph, pw, xp, vec)
            gb = grad_out[b].reshape(-1)
            for kk in range(k):
                for oy in range(oh):
                    vcopy(gb, (kk * oh + oy) * ow, go, kk * stride + oy * wp, ow, vec)
            for k0 in range(0, k, CHANNELS):
                # A short last block repeats its last channel or tap: the repeats load,
                # add and store the same sums as the originals, so nothing changes.
                k1, k2, k3 = min(k0 + 1, k - 1), min(k0 + 2, k - 1), min(k0 + 3, k - 1)
                g0, g1, g2, g3 = k0 * stride, k1 * stride, k2 * stride, k3 * stride
                row = taps * lane  # the partial sums of one channel
                h0, h1, h2, h3 = k0 * row, k1 * row, k2 * row, k3 * row
                for t0 in range(0, taps, 3):
                    t1, t2 = min(t0 + 1, taps - 1), min(t0 + 2, taps - 1)
                    s0, s1, s2 = toff[t0], toff[t1], toff[t2]
                    u0, u1, u2 = t0 * lane, t1 * lane, t2 * lane
                    a = load_4x3(acc, h0, h1, h2, h3, u0, u1, u2, vec)
                    a = _wrapped_sums(xp, go, a, s0, s1, s2, g0, g1, g2, g3, stride, vec)
                    store_4x3(acc, h0, h1, h2, h3, u0, u1, u2, a)


def forward(x, weight, bias, g, out):
    """Stride-1 ``out (N, K, OH, OW) = conv2d(x (N, C, H, W), weight (K, C, KH, KW)) + bias
    (K,)``, any padding and dilation."""
    hp, wp = g.h + 2 * g.ph, g.w + 2 * g.pw
    wt = np.ascontiguousarray(weight.reshape(g.k, -1).T).reshape(-1)
    toff = tap_offsets(g.c, g.kh, g.kw, hp, wp, g.dh, g.dw)
    first, end = every_tap(g.oh, toff.size)
    _run(x, wt, bias, toff, first, end, wp, g.ph, g.pw, out, g.c * hp * wp)


def grad_input(weight, grad_out, g, out):
    """Stride-1 input gradient ``out (N, C, H, W)`` from grad_out (N, K, OH, OW); needs
    ``p <= d*(k-1)`` and a finite weight (see :func:`conv_blocked.grad_input`)."""
    wt, toff, first, end, (qh, qw), (hp, wp) = grad_input_operands(weight, g)
    zero = np.zeros(g.c, weight.dtype)
    _run(grad_out, wt, zero, toff, first, end, wp, qh, qw, out, g.k * hp * wp)


def _run(src, wt, bias, toff, first, end, wp, ph, pw, out, plane_size):
    """:func:`_forward` of ``src`` into ``out``, on one part of the batch per thread, each
    with padded planes of ``plane_size`` elements and a band buffer."""
    parts = min(src.shape[0], numba.get_num_threads())
    if parts == 0:
        return
    k, oh = out.shape[1], out.shape[2]
    lane = VECTOR_BYTES // src.itemsize
    block = PIXEL_VECTORS * lane
    band = max(1, min(oh, BAND_BYTES // (src.itemsize * (k + CHANNELS) * wp)))
    stride = -(-band * wp // block) * block
    xps = scratch("rows.planes", (parts, plane_size + block + 16), src.dtype)
    # A spare block row per channel block takes the repeats of a short last channel block.
    tmps = scratch("rows.band", (parts, (k + CHANNELS) * stride), src.dtype)
    vec = token(VECTOR_BYTES)
    _forward(src, wt, bias, toff, first, end, wp, ph, pw, band, out, parts, xps, tmps, vec)


def grad_weight(x, grad_out, g, out):
    """Stride-1 weight gradient ``out (K, C, KH, KW)`` from a finite x (N, C, H, W) and
    grad_out (N, K, OH, OW), any padding and dilation; lanes and parts added in order."""
    parts = min(g.n, numba.get_num_threads())
    if parts == 0:
        out[...] = 0
        return
    hp, wp = g.h + 2 * g.ph, g.w + 2 * g.pw
    taps = g.c * g.kh * g.kw
    lane = VECTOR_BYTES // x.itemsize
    stride = -(-((g.oh - 1) * wp + g.ow) // lane) * lane
    toff = tap_offsets(g.c, g.kh, g.kw, hp, wp, g.dh, g.dw)
    xps = scratch("rows.planes", (parts, g.c * hp * wp + lane + 16), x.dtype)
    gos = scratch("rows.grad_out", (parts, g.k * stride), x.dtype)
    partial = scratch("rows.partial", (parts, g.k * taps * lane), x.dtype)
    vec = token(VECTOR_BYTES)
    _grad_weight(x, grad_out, toff, wp, g.ph, g.pw, parts, xps, gos, partial, vec)
    out.reshape(-1)[:] = sum_parts(partial).reshape(g.k * taps, lane).sum(axis=1)
