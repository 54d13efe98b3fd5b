"""Stride-1 convolution with SIMD vectors along wrapped output rows.

At stride 1, output pixel ``(oy, ox)`` of tap ``(c, i, j)`` reads padded pixel
``c*HP*WP + (oy + i*dh)*WP + ox + j*dw``: with the wrapped pixel index ``q = oy*WP + ox``
that is ``toff[r] + q``, so a run of consecutive ``q`` reads a contiguous run of the
padded planes, across row ends. :func:`_forward` keeps a block of 4 output channels x 3
vectors of wrapped pixels (12 accumulators) in registers over every tap: per tap, 3
vector loads of the padded planes, 4 broadcast weights and 12 fused multiply-adds. The
``WP - OW`` pixels past each row's end are computed into a band buffer and dropped when
the band is copied into the output (cheap where rows are wide: :func:`pays`); the
blocks are stored with whole vector stores, with no transposition.

- ``forward``: ``y = conv2d(x, w) + bias``, any channel counts, padding and dilation;
- ``grad_input``: the stride-1 input gradient, as the forward convolution of the
  zero-padded ``grad_out`` with the flipped, transposed weight (as in
  :func:`fastcnn._kernels.conv_blocked.grad_input`, whose operands it uses).

The batch runs in ``parts`` (one per thread, a static split); each part owns its rows of
the scratch arrays. Taps are summed in order, so results are bitwise repeatable. The
obvious twin is ``fastcnn.reference.conv``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from fastcnn._config import jit
from fastcnn._kernels.conv_blocked import _pad_into, grad_input_operands, tap_offsets
from fastcnn._simd import VECTOR_BYTES, lanes, token, vbroadcast, vfma, vload, vstore
from fastcnn._workspace import scratch

CHANNELS = 4  # output channels per block
PIXEL_VECTORS = 3  # vectors of wrapped pixels per block
BAND_BYTES = 256 << 10  # wrapped output rows per band: K x rows x WP fit in this (L2)


def pays(row_width: int, reach: int) -> bool:
    """Whether wrapped rows pay for a padded row of ``row_width`` pixels whose last
    ``reach`` = ``dw*(kw - 1)`` wrapped pixels are dropped: at most an eighth wasted."""
    return 8 * reach <= row_width


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
            _pad_into(src[b], ph, pw, xp)
            for oy0 in range(0, oh, band):
                oy1 = min(oh, oy0 + band)
                start, stop = oy0 * wp, (oy1 - 1) * wp + ow
                for q0 in range(start, stop, block):
                    # Rows of the block: the last one's first tap, the first one's end.
                    r_first = first[(min(q0 + block, stop) - 1) // wp]
                    r_end = end[q0 // wp]
                    t = q0 - start
                    for k0 in range(0, k, CHANNELS):
                        # A short last block repeats its last channel into a spare row.
                        k1, k2, k3 = min(k0 + 1, k - 1), min(k0 + 2, k - 1), min(k0 + 3, k - 1)
                        a00 = a01 = a02 = vbroadcast(bias, k0, vec)
                        a10 = a11 = a12 = vbroadcast(bias, k1, vec)
                        a20 = a21 = a22 = vbroadcast(bias, k2, vec)
                        a30 = a31 = a32 = vbroadcast(bias, k3, vec)
                        for r in range(r_first, r_end):
                            o, w = toff[r] + q0, r * k
                            s0 = vload(xp, o, vec)
                            s1 = vload(xp, o + lane, vec)
                            s2 = vload(xp, o + 2 * lane, vec)
                            v = vbroadcast(wt, w + k0, vec)
                            a00, a01, a02 = vfma(v, s0, a00), vfma(v, s1, a01), vfma(v, s2, a02)
                            v = vbroadcast(wt, w + k1, vec)
                            a10, a11, a12 = vfma(v, s0, a10), vfma(v, s1, a11), vfma(v, s2, a12)
                            v = vbroadcast(wt, w + k2, vec)
                            a20, a21, a22 = vfma(v, s0, a20), vfma(v, s1, a21), vfma(v, s2, a22)
                            v = vbroadcast(wt, w + k3, vec)
                            a30, a31, a32 = vfma(v, s0, a30), vfma(v, s1, a31), vfma(v, s2, a32)
                        o0, o1 = k0 * stride + t, (k0 + 1) * stride + t
                        o2, o3 = (k0 + 2) * stride + t, (k0 + 3) * stride + t
                        vstore(tmp, o0, a00)
                        vstore(tmp, o0 + lane, a01)
                        vstore(tmp, o0 + 2 * lane, a02)
                        vstore(tmp, o1, a10)
                        vstore(tmp, o1 + lane, a11)
                        vstore(tmp, o1 + 2 * lane, a12)
                        vstore(tmp, o2, a20)
                        vstore(tmp, o2 + lane, a21)
                        vstore(tmp, o2 + 2 * lane, a22)
                        vstore(tmp, o3, a30)
                        vstore(tmp, o3 + lane, a31)
                        vstore(tmp, o3 + 2 * lane, a32)
                for kk in range(k):
                    for oy in range(oy0, oy1):
                        s = kk * stride + (oy - oy0) * wp
                        y[b, kk, oy, :] = tmp[s : s + ow]


def forward(x, weight, bias, g, out):
    """Stride-1 ``out (N, K, OH, OW) = conv2d(x (N, C, H, W), weight (K, C, KH, KW)) + bias
    (K,)``, any padding and dilation."""
    hp, wp = g.h + 2 * g.ph, g.w + 2 * g.pw
    wt = np.ascontiguousarray(weight.reshape(g.k, -1).T).reshape(-1)
    toff = tap_offsets(g.c, g.kh, g.kw, hp, wp, g.dh, g.dw)
    first, end = np.zeros(g.oh, np.int64), np.full(g.oh, toff.size, np.int64)  # every tap
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
