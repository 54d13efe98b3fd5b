"""The register blocks of the convolution micro-kernels, as flat tuples of SIMD vectors.

A micro-kernel keeps a block of 12 accumulators in registers across its reduction loop.
The helpers here take and return the block as one tuple, so each kernel writes its loop
once: Numba inlines them (``inline="always"``) and LLVM keeps the tuple's vectors in
registers (measured: the same bits and speed as the accumulators written out in each
kernel). Two shapes:

- 6 x 2 (:mod:`fastcnn._kernels.conv_blocked`): 6 pixels (or taps), each a pair of
  vectors of channels; the block ``(a00, a01, a10, a11, ..., a51)``, pixel-major;
- 4 x 3 (:mod:`fastcnn._kernels.conv_rows`, :mod:`fastcnn._kernels.conv_few_taps`):
  4 channels, each 3 vectors of pixels (or taps); ``(a00, a01, a02, a10, ..., a32)``;
  one channel of 12 consecutive vectors (:func:`fma_1x12`) has the layout of 4 x 3 rows
  ``3*lanes`` apart, so :func:`store_4x3` stores it.

Offsets are into 1-D C-contiguous arrays and unchecked, like :func:`fastcnn._simd.vload`.
"""

from __future__ import annotations

from fastcnn._config import jit
from fastcnn._simd import lanes, vadd, vbroadcast, vfma, vload, vstore

# --- 6 x 2 ---------------------------------------------------------------------------


@jit(inline="always")
def fma_6x2(acc, src, i0, i1, i2, i3, i4, i5, u, v, vec):
    """``acc`` plus ``src[i_p] * (u, v)`` for each pixel ``p``: 6 broadcasts of ``src``
    (width ``vec``), 12 fused multiply-adds."""
    a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51 = acc
    s = vbroadcast(src, i0, vec)
    a00, a01 = vfma(u, s, a00), vfma(v, s, a01)
    s = vbroadcast(src, i1, vec)
    a10, a11 = vfma(u, s, a10), vfma(v, s, a11)
    s = vbroadcast(src, i2, vec)
    a20, a21 = vfma(u, s, a20), vfma(v, s, a21)
    s = vbroadcast(src, i3, vec)
    a30, a31 = vfma(u, s, a30), vfma(v, s, a31)
    s = vbroadcast(src, i4, vec)
    a40, a41 = vfma(u, s, a40), vfma(v, s, a41)
    s = vbroadcast(src, i5, vec)
    a50, a51 = vfma(u, s, a50), vfma(v, s, a51)
    return (a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51)


@jit(inline="always")
def load_6x2(src, o0, o1, o2, o3, o4, o5, vec):
    """The block whose pixel ``p`` is the pair of vectors at ``src[o_p]``."""
    lane = lanes(src, vec)
    return (
        vload(src, o0, vec), vload(src, o0 + lane, vec),
        vload(src, o1, vec), vload(src, o1 + lane, vec),
        vload(src, o2, vec), vload(src, o2 + lane, vec),
        vload(src, o3, vec), vload(src, o3 + lane, vec),
        vload(src, o4, vec), vload(src, o4 + lane, vec),
        vload(src, o5, vec), vload(src, o5 + lane, vec),
    )  # fmt: skip


@jit(inline="always")
def store_6x2(dst, o0, o1, o2, o3, o4, o5, acc, vec):
    """Pixel ``p`` of the block to the pair of vectors at ``dst[o_p]``."""
    a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51 = acc
    lane = lanes(dst, vec)
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


@jit(inline="always")
def add_6x2(dst, o0, o1, o2, o3, o4, o5, acc, vec):
    """Pixel ``p`` of the block added to the pair of vectors at ``dst[o_p]``."""
    a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51 = acc
    b00, b01, b10, b11, b20, b21, b30, b31, b40, b41, b50, b51 = load_6x2(
        dst, o0, o1, o2, o3, o4, o5, vec
    )
    total = (
        vadd(b00, a00), vadd(b01, a01), vadd(b10, a10), vadd(b11, a11),
        vadd(b20, a20), vadd(b21, a21), vadd(b30, a30), vadd(b31, a31),
        vadd(b40, a40), vadd(b41, a41), vadd(b50, a50), vadd(b51, a51),
    )  # fmt: skip
    store_6x2(dst, o0, o1, o2, o3, o4, o5, total, vec)


# --- 4 x 3 ---------------------------------------------------------------------------


@jit(inline="always")
def fma_4x3(acc, v0, v1, v2, v3, s0, s1, s2):
    """``acc`` plus ``v_i * s_j`` for channel ``i`` and vector ``j``: 12 fused
    multiply-adds."""
    a00, a01, a02, a10, a11, a12, a20, a21, a22, a30, a31, a32 = acc
    a00, a01, a02 = vfma(v0, s0, a00), vfma(v0, s1, a01), vfma(v0, s2, a02)
    a10, a11, a12 = vfma(v1, s0, a10), vfma(v1, s1, a11), vfma(v1, s2, a12)
    a20, a21, a22 = vfma(v2, s0, a20), vfma(v2, s1, a21), vfma(v2, s2, a22)
    a30, a31, a32 = vfma(v3, s0, a30), vfma(v3, s1, a31), vfma(v3, s2, a32)
    return (a00, a01, a02, a10, a11, a12, a20, a21, a22, a30, a31, a32)


@jit(inline="always")
def load_4x3(src, o0, o1, o2, o3, p0, p1, p2, vec):
    """The block whose vector ``(i, j)`` is at ``src[o_i + p_j]``."""
    return (
        vload(src, o0 + p0, vec), vload(src, o0 + p1, vec), vload(src, o0 + p2, vec),
        vload(src, o1 + p0, vec), vload(src, o1 + p1, vec), vload(src, o1 + p2, vec),
        vload(src, o2 + p0, vec), vload(src, o2 + p1, vec), vload(src, o2 + p2, vec),
        vload(src, o3 + p0, vec), vload(src, o3 + p1, vec), vload(src, o3 + p2, vec),
    )  # fmt: skip


@jit(inline="always")
def store_4x3(dst, o0, o1, o2, o3, p0, p1, p2, acc):
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


@jit(inline="always")
def fma_1x12(acc, v, src, o, vec):
    """``acc`` plus ``v * src[o + j*lanes : o + (j + 1)*lanes]`` for the 12 consecutive
    vectors ``j``: 12 loads, 12 fused multiply-adds."""
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11 = acc
    lane = lanes(src, vec)
    a0 = vfma(v, vload(src, o, vec), a0)
    a1 = vfma(v, vload(src, o + lane, vec), a1)
    a2 = vfma(v, vload(src, o + 2 * lane, vec), a2)
    a3 = vfma(v, vload(src, o + 3 * lane, vec), a3)
    a4 = vfma(v, vload(src, o + 4 * lane, vec), a4)
    a5 = vfma(v, vload(src, o + 5 * lane, vec), a5)
    a6 = vfma(v, vload(src, o + 6 * lane, vec), a6)
    a7 = vfma(v, vload(src, o + 7 * lane, vec), a7)
    a8 = vfma(v, vload(src, o + 8 * lane, vec), a8)
    a9 = vfma(v, vload(src, o + 9 * lane, vec), a9)
    a10 = vfma(v, vload(src, o + 10 * lane, vec), a10)
    a11 = vfma(v, vload(src, o + 11 * lane, vec), a11)
    return (a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11)
