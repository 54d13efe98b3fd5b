"""Geometry shared by the convolution kernels: offset tables, padded planes, channel blocks.

A kernel reads an image through zero-padded planes of ``HP = H + 2*ph`` rows of
``WP = W + 2*pw`` pixels, flat, channel after channel. Tap ``(c, i, j)`` of the kernel
then sits at a fixed offset ``toff = (c*HP + i*dh)*WP + j*dw`` from the padded pixel of
output pixel ``(oy, ox)``, ``base = oy*sh*WP + ox*sw``: a convolution is a sum over
``toff[r] + base[q]`` for taps ``r`` and output pixels ``q``, whatever the stride,
padding and dilation. The tables depend only on the geometry, so they are built once
and kept (read-only and shared).
"""

from __future__ import annotations

import functools

import numpy as np

from fastcnn._config import jit
from fastcnn._kernels.simd import VECTOR_BYTES, vcopy


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=256)
def tap_offsets(c, kh, kw, hp, wp, dh, dw, channels_last=False) -> np.ndarray:
    """Offset of tap ``(c, i, j)`` in padded planes of ``hp x wp``: ``(c*hp + i*dh)*wp + j*dw``
    (int64, C*KH*KW), the taps in (c, i, j) order, or in (i, j, c) order if
    ``channels_last``."""
    ci, i, j = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
    offsets = (ci * hp + i * dh) * wp + j * dw
    if channels_last:
        offsets = offsets.transpose(1, 2, 0)
    return _frozen(offsets.reshape(-1).astype(np.int64))


@functools.lru_cache(maxsize=256)
def pixel_offsets(oh: int, ow: int, sh: int, sw: int, wp: int) -> np.ndarray:
    """Offset of output pixel ``(oy, ox)`` in a padded plane of width wp: ``oy*sh*wp + ox*sw``,
    flat in OH x OW order (int64)."""
    oy, ox = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    return _frozen((oy * sh * wp + ox * sw).reshape(-1).astype(np.int64))


def lanes(dtype) -> int:
    """Elements of ``dtype`` in one native SIMD vector."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


def channel_block(dtype) -> int:
    """Channels in one block of the direct kernels: two native vectors."""
    return 2 * lanes(dtype)


def padded_channels(channels: int, dtype) -> int:
    """``channels`` rounded up to whole channel blocks (:func:`channel_block`)."""
    block = channel_block(dtype)
    return -(-channels // block) * block


@jit(call=True)
def padded_image(xf, b, c, h, w, ph, pw, xp, vec):
    """Where image ``b`` of ``xf`` (N, C, H, W, flat) starts as zero-padded planes: in
    ``xf`` at ``b*C*H*W`` where there is no padding, else at 0 of ``xp`` (C, HP, WP, flat,
    its borders zero), into whose interiors it is copied. (A call, not inlined: the loops
    of the copy inside a kernel's loop nest cost LLVM more time than they save.)"""
    start = b * c * h * w
    if ph == 0 and pw == 0:
        return start
    wp = w + 2 * pw
    s, d = start, ph * wp + pw
    for _ in range(c):
        for _ in range(h):
            vcopy(xf, s, xp, d, w, vec)
            s += w
            d += wp
        d += 2 * ph * wp
    return 0
