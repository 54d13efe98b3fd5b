"""2-D convolution: each op runs the kernel that :mod:`fastcnn._kernels.plan` names.

Layouts: input ``x`` (N, C, H, W), weight (K, C, KH, KW), output (N, K, OH, OW), all
C-contiguous, one float dtype; ``g`` is the :class:`fastcnn._checks.ConvGeometry` of the
call. Each op prepares the kernel's operands (the weight transposed or its channels
padded, offset tables) once, then runs the kernel on parts of the batch, one per thread
(:mod:`fastcnn._threads`), each part with scratch arrays of its own thread
(:mod:`fastcnn._workspace`). The weight gradient's parts each sum into their own buffer,
added in part order afterwards: the same bits at a given thread count.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from fastcnn import _threads
from fastcnn._config import jit
from fastcnn._kernels import conv_direct, conv_few_taps, plan
from fastcnn._kernels.geometry import (
    lanes,
    padded_channels,
    pixel_offsets,
    tap_offsets,
)
from fastcnn._kernels.simd import VECTOR_BYTES, centred_sums, token
from fastcnn._workspace import scratch

# Multiply-adds that pay for a thread: smaller convolutions run on the calling thread.
GRAIN = 2_000_000
BAND_BYTES = 12 << 10  # the direct forward's pixel-major band of sums
CHUNK_BYTES = 24 << 10  # the direct forward's weights per pass over a band (L1)
_VEC = token(VECTOR_BYTES)  # the intrinsics' width argument


def _parts(g) -> int:
    return _threads.parts(g.n, g.n * g.k * g.c * g.kh * g.kw * g.oh * g.ow, GRAIN)


def _rows(name: str, parts: int, size: int, dtype) -> np.ndarray:
    """Scratch of ``parts`` rows of ``size`` elements, each row on cache lines of its own."""
    return scratch(name, (parts, -(-size // 16) * 16 + 16), dtype)


# A layer calls an op with the same geometry every step: what a kernel needs besides the
# data (offset tables, block sizes) is worked out once per geometry and dtype by the
# ``_*_layout`` functions below, and kept.
_layout = functools.lru_cache(maxsize=256)


def forward(x, weight, bias, g, out, kernel=None):
    """``out (N, K, OH, OW) = conv2d(x (N, C, H, W), weight (K, C, KH, KW)) + bias (K,)``;
    ``bias`` may be None. ``kernel`` overrides the plan's choice (tests)."""
    if g.n == 0:
        return
    kernel = kernel or plan.choose("forward", g).kernel
    if kernel == "few_taps":
        _few_taps_forward(x, weight, bias, g, out)
    else:
        _direct_forward(x, weight, bias, g, out)


def grad_input(weight, grad_out, g, out, kernel=None):
    """``out (N, C, H, W)``: the gradient of ``conv2d`` with respect to its input, from
    weight (K, C, KH, KW) and grad_out (N, K, OH, OW)."""
    if g.n == 0:
        return
    kernel = kernel or plan.choose("grad_input", g).kernel
    if kernel == "few_taps":
        _few_taps_grad_input(weight, grad_out, g, out)
    else:
        _direct_grad_input(weight, grad_out, g, out)


def grad_weight(x, grad_out, g, out, kernel=None):
    """``out (K, C, KH, KW)``: the gradient of ``conv2d`` with respect to its weight, summed
    over the batch, from x (N, C, H, W) and grad_out (N, K, OH, OW)."""
    if g.n == 0:
        out[...] = 0
        return
    kernel = kernel or plan.choose("grad_weight", g).kernel
    if kernel == "few_taps":
        _few_taps_grad_weight(x, grad_out, g, out)
    else:
        _direct_grad_weight(x, grad_out, g, out)


def grad_bias(grad_out, out):
    """``out (K,)``: ``grad_out (N, K, OH, OW)`` summed over images and pixels."""
    n, k, oh, ow = grad_out.shape
    count = _threads.parts(k, grad_out.size, _threads.GRAIN_ELEMENTS)
    _threads.run(_bias_sums, count, k, grad_out.reshape(n, k, oh * ow), out, _VEC)


@jit()
def _bias_sums(part, k0, k1, grad_out, out, vec):
    """``out[k] = sum over n, p of grad_out[n, k, p]`` for channels ``k0 .. k1-1``: a plane's
    sum in the dtype, in SIMD vectors (:func:`fastcnn._kernels.simd.centred_sums`), the
    planes added in float64."""
    n, k, p = grad_out.shape
    flat = grad_out.reshape(-1)
    zero = flat.dtype.type(0)
    for ki in range(k0, k1):
        acc = 0.0
        for b in range(n):
            acc += centred_sums(flat, zero, None, zero, (b * k + ki) * p, p, vec)[0]
        out[ki] = acc


# --- direct ----------------------------------------------------------------------------


def _plane_size(g) -> int:
    """Elements of one image's zero-padded planes (0 without padding: none are made)."""
    return g.c * (g.h + 2 * g.ph) * (g.w + 2 * g.pw) if g.ph or g.pw else 0


@_layout
def _direct_forward_layout(g, dtype):
    """(padded channels, tap offsets, pixel offsets, pixels per band, weights per chunk)."""
    kp = padded_channels(g.k, dtype)
    wp = g.w + 2 * g.pw
    toff = tap_offsets(g.c, g.kh, g.kw, g.h + 2 * g.ph, wp, g.dh, g.dw)
    bases = pixel_offsets(g.oh, g.ow, g.sh, g.sw, wp)
    step = math.lcm(conv_direct.PIXELS, lanes(dtype))
    rows = max(1, BAND_BYTES // (kp * dtype.itemsize * step)) * step
    chunk = max(1, CHUNK_BYTES // (kp * dtype.itemsize))
    return kp, toff, bases, rows, chunk


def _direct_forward(x, weight, bias, g, out):
    dtype, parts = x.dtype, _parts(g)
    kp, toff, bases, rows, chunk = _direct_forward_layout(g, dtype)
    taps = g.c * g.kh * g.kw
    wt = scratch("conv.weight", (taps, kp), dtype)
    wt[:, : g.k] = weight.reshape(g.k, taps).T
    b = scratch("conv.bias", (kp,), dtype)
    b[: g.k] = 0 if bias is None else bias
    if kp > g.k:
        wt[:, g.k :] = 0
        b[g.k :] = 0
    xps = _rows("conv.planes", parts, _plane_size(g), dtype)
    bands = _rows("conv.band", parts, rows * kp, dtype)
    _threads.run(conv_direct.forward, parts, g.n, x, wt.reshape(-1), b, toff, bases, g.ph, g.pw,
                 out, xps, bands, rows, chunk, _VEC)  # fmt: skip


@_layout
def _direct_grad_weight_layout(g, dtype):
    """(padded channels, tap offsets, pixel offsets)."""
    wp = g.w + 2 * g.pw
    toff = tap_offsets(g.c, g.kh, g.kw, g.h + 2 * g.ph, wp, g.dh, g.dw)
    return padded_channels(g.k, dtype), toff, pixel_offsets(g.oh, g.ow, g.sh, g.sw, wp)


def _direct_grad_weight(x, grad_out, g, out):
    dtype, parts = x.dtype, _parts(g)
    kp, toff, bases = _direct_grad_weight_layout(g, dtype)
    taps = g.c * g.kh * g.kw
    partials = _rows("conv.partial", parts, taps * kp, dtype)
    xps = _rows("conv.planes", parts, _plane_size(g), dtype)
    gos = _rows("conv.grad_out", parts, g.oh * g.ow * kp, dtype)
    _threads.run(conv_direct.grad_weight, parts, g.n, x, grad_out, toff, bases, g.ph, g.pw, kp,
                 partials, xps, gos, _VEC)  # fmt: skip
    total = _sum_parts(partials)[: taps * kp].reshape(taps, kp)
    out.reshape(g.k, taps)[...] = total[:, : g.k].T


def paired_channels(dtype) -> int:
    """The most input channels for which the direct input gradient takes blocks of two
    taps instead of two vectors of channels (at least half of which would be padding):
    the channels of one vector."""
    return lanes(dtype)


@_layout
def _direct_grad_input_layout(g, dtype):
    """(paired, channels per block, tap offsets, pixel offsets, channel table)."""
    paired = g.c <= paired_channels(dtype)
    cp = lanes(dtype) if paired else padded_channels(g.c, dtype)
    hp, wp = g.h + 2 * g.ph, g.w + 2 * g.pw
    toff = tap_offsets(1, g.kh, g.kw, hp, wp, g.dh, g.dw)
    bases = pixel_offsets(g.oh, g.ow, g.sh, g.sw, wp)
    return paired, cp, toff, bases, _channels(g.k)


def _direct_grad_input(weight, grad_out, g, out):
    dtype, parts = weight.dtype, _parts(g)
    paired, cp, toff, bases, koff = _direct_grad_input_layout(g, dtype)
    taps = g.kh * g.kw
    if paired:
        wt = scratch("conv.weight", ((taps + 1) // 2, g.k, 2, cp), dtype)
        wt[...] = 0
        for j in (0, 1):  # taps j, j + 2, ...: the block's vector j
            w_j = weight.reshape(g.k, g.c, taps)[:, :, j::2]
            wt[: w_j.shape[2], :, j, : g.c] = w_j.transpose(2, 0, 1)
    else:
        wt = scratch("conv.weight", (g.kh, g.kw, g.k, cp), dtype)
        wt[..., : g.c] = weight.transpose(2, 3, 0, 1)
        if cp > g.c:
            wt[..., g.c :] = 0
    plane = (g.h + 2 * g.ph) * (g.w + 2 * g.pw)
    gts = _rows("conv.grad_out", parts, g.oh * g.ow * g.k, dtype)
    bufs = _rows("conv.gradient", parts, (plane + 1) * cp, dtype)
    _threads.run(conv_direct.grad_input, parts, g.n, grad_out, wt.reshape(-1), koff, toff, bases,
                 g.ph, g.pw, out, gts, bufs, plane * cp, True if paired else None,
                 _VEC)  # fmt: skip


@functools.lru_cache(maxsize=64)
def _channels(k: int) -> np.ndarray:
    table = np.arange(k, dtype=np.int64)
    table.setflags(write=False)
    return table


# --- few taps --------------------------------------------------------------------------


@_layout
def _few_taps_forward_layout(g, dtype):
    """(column row stride, column offsets): a column row runs on to whole pixel blocks."""
    block = conv_few_taps.PIXEL_VECTORS * lanes(dtype)
    p, hp = g.oh * g.ow, g.h + 2 * g.ph
    stride = hp * g.ow + -(-p // block) * block - p
    return stride, conv_few_taps.column_offsets(g.c, g.kh, g.kw, g.dh, g.ow, stride)


def _few_taps_forward(x, weight, bias, g, out):
    dtype, parts = x.dtype, _parts(g)
    stride, coff = _few_taps_forward_layout(g, dtype)
    if bias is None:
        bias = scratch("conv.bias", (g.k,), dtype)
        bias[:] = 0
    block = conv_few_taps.PIXEL_VECTORS * lanes(dtype)
    colss = _rows("conv.columns", parts, g.c * g.kw * stride, dtype)
    tails = _rows("conv.tail", parts, conv_few_taps.CHANNELS * block, dtype)
    _threads.run(conv_few_taps.forward, parts, g.n, x, weight, bias, g.ph, g.pw, g.dh, g.dw, coff,
                 out, colss, stride, tails, _VEC)  # fmt: skip


@_layout
def _few_taps_grad_weight_layout(g, dtype):
    """(column row stride, column offsets)."""
    stride = (g.h + 2 * g.ph) * g.ow
    return stride, conv_few_taps.column_offsets(g.c, g.kh, g.kw, g.dh, g.ow, stride)


def _few_taps_grad_weight(x, grad_out, g, out):
    dtype, parts = x.dtype, _parts(g)
    stride, coff = _few_taps_grad_weight_layout(g, dtype)
    taps, lane = g.c * g.kh * g.kw, lanes(dtype)
    partials = _rows("conv.partial", parts, g.k * taps * lane, dtype)
    colss = _rows("conv.columns", parts, g.c * g.kw * stride, dtype)
    _threads.run(conv_few_taps.grad_weight, parts, g.n, x, grad_out, g.kh, g.kw, g.ph, g.pw, g.dh,
                 g.dw, coff, partials, colss, stride, _VEC)  # fmt: skip
    total = _sum_parts(partials)[: g.k * taps * lane]
    out.reshape(-1)[:] = total.reshape(g.k * taps, lane).sum(axis=1)


def _few_taps_grad_input(weight, grad_out, g, out):
    dtype, parts = weight.dtype, _parts(g)
    block = conv_few_taps.PRODUCT_VECTORS * lanes(dtype)
    taps, p = g.c * g.kh * g.kw, g.oh * g.ow
    padded = -(-p // block) * block
    prods = _rows("conv.products", parts, taps * padded, dtype)
    _threads.run(conv_few_taps.grad_input, parts, g.n, weight, grad_out, g.sh, g.sw, g.ph, g.pw,
                 g.dh, g.dw, out, prods, padded, _VEC)  # fmt: skip


def _sum_parts(partials):
    """``partials[0] + partials[1] + ...`` in part order, into ``partials[0]``."""
    total = partials[0]
    for p in partials[1:]:
        total += p
    return total
