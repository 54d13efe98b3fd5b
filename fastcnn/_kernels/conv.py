"""2-D convolution: column matrices built in Numba, matrix products in BLAS.

Layouts: input ``x`` (N, C, H, W), weight (K, C, KH, KW), output (N, K, OH, OW), all
C-contiguous, one float dtype. With ``CKK = C*KH*KW`` and ``P = OH*OW``, the convolution of
image ``n`` is the matrix product ``weight(K, CKK) @ cols_n(CKK, P)``, where row
``(c*KH + i)*KW + j`` of ``cols_n`` holds the zero-padded input pixels that kernel tap
``(c, i, j)`` meets at each of the ``P`` output positions (im2col). The obvious twin of
every function here is ``fastcnn.reference.conv``.

Paths, chosen per geometry by the drivers (``forward``, ``grad_input``, ``grad_weight``,
``grad_bias``):

- stride 1, more than ``DIRECT_MAX_TAPS`` taps, wide rows, and channels that the blocked
  kernel takes only on narrower vectors (e.g. 16 float32) or not at all:
  the forward and input gradient of :mod:`fastcnn._kernels.conv_rows`, SIMD along
  wrapped output rows (:func:`_rows_fit`), and its weight gradient where the blocked
  kernel does not take the channels (:func:`_rows_grad_weight_fits`);
- channels in whole blocks of two SIMD vectors (e.g. 8, 16, 32, 64 float32 channels) and
  more than ``DIRECT_MAX_TAPS`` taps: the register-blocked direct convolution of
  :mod:`fastcnn._kernels.conv_blocked`, all in Numba on all threads (forward, input
  gradient and weight gradient at any stride; the stride-1 input gradient with a finite
  weight may run as a forward convolution of the padded ``grad_out``);
- few taps (``CKK <= DIRECT_MAX_TAPS``, e.g. a 1-channel input): the forward and the
  weight gradient (stride 1) and the input gradient (any stride) of
  :mod:`fastcnn._kernels.conv_few_taps`, SIMD along the output pixels of a per-image
  column matrix;
- the GEMM paths below cover every other geometry. Stride 1, "wrapped" columns: each
  padded image plane is copied once, and every column row is then one contiguous run of
  it (see :func:`_im2col_wrap`); the ``WP - OW`` extra columns per output row are computed
  and dropped (forward) or met by zeros (gradients).
- other strides: classic im2col/col2im tiles (:func:`_im2col`, :func:`_col2im`);
- 1x1 kernels with stride 1 and no padding: the input is its own column matrix.

Work goes in chunks of images (or of output rows of one image) so the column matrix stays
a few MiB whatever the batch; all scratch comes from a per-thread cache
(``fastcnn._workspace``), since fresh large allocations cost a page fault per 4 KiB here.
The GEMM paths alternate Numba kernels with BLAS calls (``np.matmul``) many times per op.
On several threads they run as slices of the batch, one per thread, each with Numba and
BLAS on one thread (:func:`_over_images`): no pool hands the cores to another, and the
slices meet only at the end. Where the batch cannot be split (one image), BLAS takes the
threads and the Numba kernels between its calls run serially (:func:`_serial_numba`).

Padding is materialised as exact zeros and multiplied like any other pixel, so NaN and inf
propagate as in the reference (``inf * 0 = nan`` where a weight or gradient meets the
padding). The wrapped gradient paths multiply extra columns by zeros, which is exact only
for finite operands: they are taken only when :func:`_all_finite` says so.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba
import numpy as np
from numba import prange

from fastcnn._config import jit
from fastcnn._kernels import conv_blocked, conv_few_taps, conv_rows
from fastcnn._simd import VECTOR_BYTES, centred_sums, token, vcopy
from fastcnn._threads import run_slices, slices, sum_over_slices
from fastcnn._workspace import scratch

# Column-matrix bytes per chunk: large enough for efficient GEMMs, small enough to stay
# near the caches and keep peak memory independent of the batch size.
CHUNK_BYTES = 2 << 20

# Up to this many taps (C*KH*KW) per output pixel, stride-1 convolutions run with SIMD along
# the output pixels (conv_few_taps): the blocked kernels' tap loop would be too short.
DIRECT_MAX_TAPS = 16


@jit()
def _tap_range(offset, stride, size, out_size):
    """Output indices ``[lo, hi)`` whose input index ``o*stride + offset`` is in ``[0, size)``."""
    lo = min(out_size, max(0, (stride - 1 - offset) // stride))
    hi = min(out_size, max(lo, (size - 1 - offset) // stride + 1))
    return lo, hi


@jit(parallel=True)
def _im2col(x, tile, kh, kw, sh, sw, ph, pw, dh, dw, ow, cols, image_row, image_col):
    """Fill the column matrix of one tile: output rows ``oy0 .. oy1-1`` of images
    ``n0 .. n0+nb-1``, where ``tile = (n0, nb, oy0, oy1)``.

    x: (N, C, H, W). cols: 2-D, C-contiguous; image ``b`` of the tile, tap ``r`` and output
    pixel ``(oy, ox)`` go to ``cols[b*image_row + r, b*image_col + (oy - oy0)*ow + ox]``:
    ``image_row = CKK, image_col = 0`` stacks the images' (CKK, T) matrices;
    ``image_row = 0, image_col = T`` puts them side by side in one (CKK, nb*T) matrix.

    Parallel over (image, channel) pairs: each owns the rows of its taps in its own image's
    block, so no two iterations write the same element.
    """
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    n0, nb, oy0, oy1 = tile
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
                for oy in range(oy0, oy1):
                    iy = oy * sh - ph + i * dh
                    dst = b * image_col + (oy - oy0) * ow
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
def _col2im(cols, tile, kh, kw, sh, sw, ph, pw, dh, dw, ow, out, image_row, image_col):
    """Add the column matrix of one tile onto ``out[n0 : n0+nb]`` (im2col's adjoint).

    cols: laid out as in :func:`_im2col`, ``tile = (n0, nb, oy0, oy1)``. out: (N, C, H, W).
    A tile starting at output row 0 first zeroes its planes, so pixels no tap reaches get 0
    and later row tiles of the same images accumulate.

    Parallel over (image, channel) pairs: each zeroes and accumulates only its own output
    plane ``out[n0+b, c]``, reading its own rows of ``cols``, so no element is shared.
    """
    c, h, w = out.shape[1], out.shape[2], out.shape[3]
    n0, nb, oy0, oy1 = tile
    for t in prange(nb * c):
        b = t // c
        ci = t - b * c
        plane = out[n0 + b, ci]
        if oy0 == 0:
            plane[:] = 0
        for i in range(kh):
            for j in range(kw):
                r = b * image_row + (ci * kh + i) * kw + j
                off = j * dw - pw
                lo, hi = _tap_range(off, sw, w, ow)
                row = cols[r]
                for oy in range(oy0, oy1):
                    iy = oy * sh - ph + i * dh
                    if 0 <= iy < h:
                        dst = plane[iy]
                        src = b * image_col + (oy - oy0) * ow
                        if sw == 1:
                            for ox in range(lo, hi):
                                dst[ox + off] += row[src + ox]
                        else:
                            for ox in range(lo, hi):
                                dst[ox * sw + off] += row[src + ox]


@jit(parallel=True)
def _pad_planes(x, n0, nb, ph, pw, xp, vec):
    """Copy images ``n0 .. n0+nb-1`` of x (N, C, H, W) into xp (nb*C*HP*WP + tail,) as
    zero-padded planes of HP = H + 2*ph rows of WP = W + 2*pw; the tail is zeroed.

    Parallel over (image, channel) pairs: each writes only its own padded plane.
    """
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    wp = w + 2 * pw
    size = (h + 2 * ph) * wp
    if ph or pw:
        xp[:] = 0  # the borders; the interiors are overwritten below
    else:
        xp[nb * c * size :] = 0
    flat = x.reshape(-1)
    for t in prange(nb * c):
        for y in range(h):
            vcopy(flat, (n0 * c + t) * h * w + y * w, xp, t * size + (ph + y) * wp + pw, w, vec)


@jit(parallel=True)
def _im2col_wrap(xp, nb, c, hp, wp, kh, kw, dh, dw, oy0, length, cols, image_row, image_col):
    """Column matrix of stride-1 output rows ``oy0 ..`` of nb padded images, in "wrapped" form.

    xp: padded planes from :func:`_pad_planes`. Each image's columns are ``length =
    rows*WP`` wide: column ``q = (oy - oy0)*WP + ox`` covers every ``ox < WP``, so row
    ``(c, i, j)`` is one contiguous run of xp starting at ``(oy0 + i*dh)*WP + j*dw``.
    Columns with ``ox >= OW`` wrap into the next padded row: their results are computed and
    thrown away (or met by zeros). Image ``b``'s row ``r`` goes to
    ``cols[b*image_row + r, b*image_col : b*image_col + length]`` (layouts as in
    :func:`_im2col`).

    Parallel over (image, channel) pairs: each owns its KH*KW rows of its image's block.
    """
    size = hp * wp
    for t in prange(nb * c):
        b = t // c
        ci = t - b * c
        for i in range(kh):
            for j in range(kw):
                start = t * size + (oy0 + i * dh) * wp + j * dw
                dst = b * image_col
                row = b * image_row + (ci * kh + i) * kw + j
                cols[row, dst : dst + length] = xp[start : start + length]


@jit(parallel=True)
def _wrap_rows(src, n0, nb, wp, dst, image_row, image_col, vec):
    """Copy images ``n0 .. n0+nb-1`` of src (N, K, OH, OW) into wrapped rows of width WP,
    zero in the columns ``ox >= OW``: channel ``k`` of image ``b`` goes to
    ``dst[b*image_row + k, b*image_col : b*image_col + OH*WP]`` (layouts as in
    :func:`_im2col`).

    Parallel over (image, channel) pairs: each writes its own wrapped row.
    """
    k, oh, ow = src.shape[1], src.shape[2], src.shape[3]
    flat = src.reshape(-1)
    zero = flat.dtype.type(0)
    for t in prange(nb * k):
        b = t // k
        ki = t - b * k
        row = dst[b * image_row + ki]
        base = b * image_col
        for oy in range(oh):
            q = base + oy * wp
            vcopy(flat, ((n0 * k + t) * oh + oy) * ow, row, q, ow, vec)
            for i in range(q + ow, q + wp):
                row[i] = zero


@jit(parallel=True)
def _col2im_wrap(cols, n0, hp, wp, kh, kw, dh, dw, ph, pw, plane_size, xp, out, vec):
    """Stride-1 col2im of wrapped columns, then the crop of the padding: for nb images,
    ``out[n0+b]`` (C, H, W) gets the sum of the taps of ``cols`` (CKK, nb*OH*WP), the
    images' columns side by side.

    xp: scratch of nb*C planes of ``plane_size = HP*WP + (KW-1)*dw`` (a private tail per
    plane, so no plane's wrapped columns spill into another's). The wrapped columns must
    hold zeros (finite weights times zero-filled wrapped ``grad_out``).

    Parallel over (image, channel) pairs: each accumulates its own padded plane and writes
    its own output plane.
    """
    c, h, w = out.shape[1], out.shape[2], out.shape[3]
    length = (hp - (kh - 1) * dh) * wp
    nb = cols.shape[1] // length
    for t in prange(nb * c):
        b = t // c
        ci = t - b * c
        plane = xp[t * plane_size : (t + 1) * plane_size]
        plane[:] = 0
        for i in range(kh):
            for j in range(kw):
                row = cols[(ci * kh + i) * kw + j, b * length : (b + 1) * length]
                acc = plane[i * dh * wp + j * dw : i * dh * wp + j * dw + length]
                for q in range(length):
                    acc[q] += row[q]
        dst = out[n0 + b, ci].reshape(-1)
        for y in range(h):
            vcopy(xp, t * plane_size + (ph + y) * wp + pw, dst, y * w, w, vec)


@jit()
def _all_finite(a):
    """True when no element of the C-contiguous array ``a`` is NaN or infinite.

    ``|v| < inf`` fails exactly for NaN and inf; a branch-free count (no early exit)
    vectorises.
    """
    flat = a.reshape(-1)
    inf = flat.dtype.type(np.inf)
    finite = 0
    for i in range(flat.size):
        finite += abs(flat[i]) < inf
    return finite == flat.size


@jit(parallel=True)
def _unwrap(tmp, nb, y, n0, oy0, wp, bias):
    """``y[n0+b, k, oy0+r, ox] = tmp[k, b*L + r*WP + ox] + bias[k]``: drop the wrapped columns.

    tmp: (K, nb*L) GEMM result on :func:`_im2col_wrap`'s side-by-side columns, ``L =
    rows*WP``. y: (N, K, OH, OW).
    Parallel over (image, channel) pairs: each writes its own output rows.
    """
    k = tmp.shape[0]
    length = tmp.shape[1] // nb
    ow = y.shape[3]
    rows = length // wp
    for t in prange(nb * k):
        b = t // k
        ki = t - b * k
        bk = bias[ki]
        for r in range(rows):
            dst = y[n0 + b, ki, oy0 + r]
            start = b * length + r * wp
            src = tmp[ki, start : start + ow]
            for ox in range(ow):
                dst[ox] = src[ox] + bk


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
def _sum_bias(grad_out, out, width):
    """``out[k] = sum over n, p of grad_out[n, k, p]`` for grad_out (N, K, P), out (K,).

    Parallel over channels: each iteration owns ``out[k]``. A row's sum is in the dtype,
    in SIMD vectors (:func:`fastcnn._simd.centred_sums`); the rows are added in float64.
    """
    n, k, p = grad_out.shape
    flat = grad_out.reshape(-1)
    zero = flat.dtype.type(0)
    for ki in prange(k):
        acc = 0.0
        for b in range(n):
            acc += centred_sums(flat, zero, None, zero, (b * k + ki) * p, p, width)[0]
        out[ki] = acc


# --- drivers ---------------------------------------------------------------------------


@contextmanager
def _serial_numba():
    """Run this thread's Numba kernels on one thread while BLAS keeps the thread count.

    The GEMM paths alternate Numba kernels with BLAS calls many times per op; two thread
    pools handing the cores back and forth (each spins a while after its work) cost more
    than the cheap copy kernels gain from parallelism. Numba's count is per thread.
    """
    n = numba.get_num_threads()
    if n == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(n)


def _tiles(g, itemsize: int):
    """Split the work into tiles ``(n0, nb, oy0, oy1)`` whose column matrix fits
    :data:`CHUNK_BYTES`: several whole images while one image fits, else blocks of output
    rows of one image (so the matrix stays in cache between im2col and the GEMM)."""
    row_bytes = g.c * g.kh * g.kw * g.ow * itemsize
    if row_bytes * g.oh <= CHUNK_BYTES:
        nb = max(1, CHUNK_BYTES // (row_bytes * g.oh))
        for n0 in range(0, g.n, nb):
            yield n0, min(nb, g.n - n0), 0, g.oh
    else:
        rows = max(1, CHUNK_BYTES // row_bytes)
        for n0 in range(g.n):
            for oy0 in range(0, g.oh, rows):
                yield n0, 1, oy0, min(g.oh, oy0 + rows)


def _max_tile(g, itemsize: int) -> int:
    """Output pixels (images x positions) in the largest tile of :func:`_tiles`."""
    return max(nb * (oy1 - oy0) * g.ow for _, nb, oy0, oy1 in _tiles(g, itemsize))


def _geometry_args(g):
    return g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.ow


def _is_pointwise(g) -> bool:
    """A 1x1 kernel with stride 1 and no padding: the input is its own column matrix."""
    return (g.kh, g.kw, g.sh, g.sw, g.ph, g.pw) == (1, 1, 1, 1, 0, 0)


def _simd_kernels(g, channels: int, dtype):
    """The SIMD module that takes a forward or weight gradient of geometry ``g`` with
    ``channels`` output (or grad_out) channels: :mod:`conv_blocked` for many taps in whole
    channel blocks, :mod:`conv_few_taps` for few taps at stride 1, else None (GEMMs)."""
    ckk = g.c * g.kh * g.kw
    if ckk > DIRECT_MAX_TAPS and conv_blocked.fits(channels, dtype):
        return conv_blocked
    if g.sh == g.sw == 1 and ckk <= DIRECT_MAX_TAPS:
        return conv_few_taps
    return None


def _rows_fit(g, channels: int, row_width: int, dtype) -> bool:
    """Whether a forward-type convolution of geometry ``g`` with ``channels`` output
    channels, whose padded source rows are ``row_width`` wide, runs on :mod:`conv_rows`:
    stride 1, more than ``DIRECT_MAX_TAPS`` taps, channels that the blocked kernel does
    not take at full vector width, and at most an eighth of each row dropped.

    Measured at 1 and 2 threads, interleaved in one process (ms, rows / blocked): on an
    Intel Xeon (two 512-bit FMAs a cycle), with the blocked forward's chunks of taps,
    cifar-16x32's forward (one full-width block of 32 channels, a 34-wide padded row)
    5.68 / 5.02 and 2.87 / 2.59, C = 32 to 32 channels on 18-wide rows 2.83 / 2.28 and
    1.44 / 1.17; its input gradient (C = 16: half-width vectors) 5.65 / 7.50 and 2.91 /
    3.68, C = 16 on 18-wide rows 1.39 / 1.74. (Before those chunks, on AMD Zen 4 and Zen 5,
    one full block on rows this wide had been faster on rows, 0.8 and 0.96 of the blocked
    time; two or more never.) The weight gradient: :func:`_rows_grad_weight_fits`."""
    if not (g.sh == g.sw == 1 and g.c * g.kh * g.kw > DIRECT_MAX_TAPS):
        return False
    if conv_blocked.vector_bytes(channels, dtype) == conv_blocked.VECTOR_BYTES:
        return False
    return conv_rows.pays(row_width, g.dw * (g.kw - 1), 8)


def forward(x, weight, bias, g, out):
    """Convolution: ``out (N, K, OH, OW) = conv2d(x (N, C, H, W), weight (K, C, KH, KW)) + bias``.

    ``bias`` is (K,) or None. The SIMD kernels where they fit (see the module docstring):
    wide rows at stride 1 take :mod:`conv_rows`; otherwise GEMMs, on slices of the batch
    (:func:`_over_images`): stride 1 takes the wrapped path of :func:`_forward_wrapped`;
    other strides, per tile, im2col, then one (batched) GEMM that writes the tile's pixels
    of the NCHW output in place.
    """
    if g.n == 0:
        return
    bias_or_zero = _bias_or_zero(bias, g.k, x.dtype)
    if _rows_fit(g, g.k, g.w + 2 * g.pw, x.dtype):
        conv_rows.forward(x, weight, bias_or_zero, g, out)
        return
    kernels = _simd_kernels(g, g.k, x.dtype)
    if kernels is not None:
        kernels.forward(x, weight, bias_or_zero, g, out)
        return

    def work(n0, n1):
        _forward_gemm(x[n0:n1], weight, bias, g._replace(n=n1 - n0), out[n0:n1])

    _over_images(g.n, work)


def _bias_or_zero(bias, k: int, dtype):
    if bias is not None:
        return bias
    zero = scratch("conv.zero_bias", (k,), dtype)
    zero[:] = 0
    return zero


def _forward_gemm(x, weight, bias, g, out):
    """The GEMM paths of :func:`forward`, on one thread's slice of the batch."""
    ckk, p = g.c * g.kh * g.kw, g.oh * g.ow
    w2d = weight.reshape(g.k, ckk)
    y = out.reshape(g.n, g.k, p)
    if _is_pointwise(g):
        np.matmul(w2d, x.reshape(g.n, g.c, p), out=y)
    elif g.sh == g.sw == 1:
        _forward_wrapped(x, weight, _bias_or_zero(bias, g.k, x.dtype), g, out)
        return
    else:
        buf = scratch("conv.cols", (ckk * _max_tile(g, x.itemsize),), x.dtype)
        for tile in _tiles(g, x.itemsize):
            n0, nb, oy0, oy1 = tile
            t = (oy1 - oy0) * g.ow
            cols = buf[: nb * ckk * t].reshape(nb * ckk, t)
            _im2col(x, tile, *_geometry_args(g), cols, ckk, 0)
            dst = y[n0 : n0 + nb, :, oy0 * g.ow : oy1 * g.ow]
            np.matmul(w2d, cols.reshape(nb, ckk, t), out=dst)
    if bias is not None:
        _add_bias(y, bias)


def _forward_wrapped(x, weight, bias, g, out):
    """Stride-1 forward on wrapped columns (see :func:`_im2col_wrap`): each column row is one
    contiguous copy of a padded plane instead of OH short runs, at the price of computing
    WP - OW discarded columns per output row and one pass to drop them (fused with bias)."""
    hp, wp = g.h + 2 * g.ph, g.w + 2 * g.pw
    ckk = g.c * g.kh * g.kw
    w2d = weight.reshape(g.k, ckk)
    tail = (g.kw - 1) * g.dw  # the last row of the last plane reads this far past its end
    row_bytes = ckk * wp * x.itemsize
    nb = max(1, min(g.n, CHUNK_BYTES // (row_bytes * g.oh)))
    rows = g.oh if nb > 1 else max(1, min(g.oh, CHUNK_BYTES // row_bytes))
    xp = scratch("conv.padded", (nb * g.c * hp * wp + tail,), x.dtype)
    cols_buf = scratch("conv.cols", (nb * ckk * rows * wp,), x.dtype)
    tmp_buf = scratch("conv.wrapped_out", (nb * g.k * rows * wp,), x.dtype)
    for n0 in range(0, g.n, nb):
        m = min(nb, g.n - n0)
        xp_m = xp[: m * g.c * hp * wp + tail]
        _pad_planes(x, n0, m, g.ph, g.pw, xp_m, token(VECTOR_BYTES))
        for oy0 in range(0, g.oh, rows):
            length = (min(g.oh, oy0 + rows) - oy0) * wp
            tmp = tmp_buf[: g.k * m * length].reshape(g.k, m * length)
            cols = cols_buf[: ckk * m * length].reshape(ckk, m * length)
            _im2col_wrap(xp, m, g.c, hp, wp, g.kh, g.kw, g.dh, g.dw, oy0, length, cols, 0, length)
            np.matmul(w2d, cols, out=tmp)  # one GEMM for the whole chunk
            _unwrap(tmp, m, out, n0, oy0, wp, bias)


def grad_input(weight, grad_out, g, out):
    """Input gradient: for few taps (``C*KH*KW <= DIRECT_MAX_TAPS``) by
    :mod:`conv_few_taps` at any stride; else at stride 1 a forward convolution of the
    padded grad_out where it can be (:func:`_forward_form_fits`, and a finite weight: the
    padding zeros meet every weight, and ``inf * 0`` would be NaN where the reference has
    no term): by :mod:`conv_rows` on wide rows, else by the blocked kernel in whole channel
    blocks where that form pays (:func:`conv_blocked.forward_form_pays`); else, in whole
    channel blocks, the blocked scatter form (any weight); otherwise :func:`_grad_input` on
    slices of the batch (:func:`_over_images`)."""
    if g.n == 0:
        return
    if g.c * g.kh * g.kw <= DIRECT_MAX_TAPS:
        conv_few_taps.grad_input(weight, grad_out, g, out)
        return
    blocks = g.k * g.kh * g.kw > DIRECT_MAX_TAPS and conv_blocked.fits(g.c, weight.dtype)
    if _forward_form_fits(g):
        # As a forward convolution: grad_out's K channels in, C out, rows W + reach wide.
        rows = _rows_fit(g._replace(c=g.k), g.c, g.w + g.dw * (g.kw - 1), weight.dtype)
        # The weight is scanned only where a forward form would run.
        pays = rows or (blocks and conv_blocked.forward_form_pays(g, weight.dtype))
        if pays and _all_finite(weight):
            (conv_rows if rows else conv_blocked).grad_input(weight, grad_out, g, out)
            return
    if blocks:
        conv_blocked.grad_input_scatter(weight, grad_out, g, out)
        return

    def work(n0, n1):
        _grad_input(weight, grad_out[n0:n1], g._replace(n=n1 - n0), out[n0:n1])

    _over_images(g.n, work)


def _forward_form_fits(g) -> bool:
    """Whether the input gradient may run as the forward convolution of grad_out padded by
    ``d*(k-1) - p`` (given a finite weight): stride 1, that padding not negative, and more
    taps than ``DIRECT_MAX_TAPS``."""
    return (
        g.sh == g.sw == 1
        and g.ph <= g.dh * (g.kh - 1)
        and g.pw <= g.dw * (g.kw - 1)
        and g.k * g.kh * g.kw > DIRECT_MAX_TAPS
    )


def grad_weight(x, grad_out, g, out):
    """Weight gradient: the blocked kernel where it fits, else :func:`_grad_weight` on
    slices of the batch (:func:`_over_images`), each slice's sum into its own buffer, then
    added in slice order."""
    if g.n and _rows_grad_weight_fits(x, g):
        conv_rows.grad_weight(x, grad_out, g, out)
        return
    kernels = _simd_kernels(g, g.k, x.dtype) if g.n else None
    if kernels is not None:
        kernels.grad_weight(x, grad_out, g, out)
        return

    def work(n0, n1, dst):
        _grad_weight(x[n0:n1], grad_out[n0:n1], g._replace(n=n1 - n0), dst)

    parts = slices(g.n)
    sum_over_slices(parts, work, out, lambda each: _over_images(g.n, each, parts))


def _rows_grad_weight_fits(x, g) -> bool:
    """The wrapped-rows weight gradient where the blocked kernel does not take the
    channels and :func:`_rows_grad_weight_runs`. Where both run, the blocked one is faster
    on AMD Zen 5 (blocked / rows time, interleaved, 1 and 2 threads: cifar-16x32 0.70-0.74,
    C = 16 on 16-wide rows 0.49-0.57, float64 0.73-0.84); on Zen 4 the rows kernel won
    (cifar-16x32 at 2 threads: 5.3-5.6 ms, blocked 6.5-6.6)."""
    return not conv_blocked.fits(g.k, x.dtype) and _rows_grad_weight_runs(x, g)


def _rows_grad_weight_runs(x, g) -> bool:
    """Whether :func:`conv_rows.grad_weight` may run: where the forward would take wrapped
    rows (:func:`_rows_fit`), with its per-lane partial sums small enough to stay in the
    cache (:func:`conv_rows.partials_fit`) and a finite x (the dropped pixels read x, times
    zero)."""
    return (
        _rows_fit(g, g.k, g.w + 2 * g.pw, x.dtype)
        and conv_rows.partials_fit(g.k * g.c * g.kh * g.kw)
        and _all_finite(x)
    )


def _over_images(n: int, work, parts=None) -> None:
    """Run ``work(n0, n1)`` over images ``0 .. n-1``: on several threads, one slice of the
    batch each (:func:`fastcnn._threads.run_slices`), or, with one slice, on this thread
    with its Numba kernels serial beside a multithreaded BLAS."""
    parts = slices(n) if parts is None else parts
    if len(parts) > 1:
        run_slices(work, parts)
        return
    with _serial_numba():
        work(0, n)


def _grad_input(weight, grad_out, g, out):
    """Input gradient: ``out (N, C, H, W)`` from weight (K, C, KH, KW), grad_out (N, K, OH, OW).

    Per tile: ``cols = weight(K, CKK).T @ grad_out(K, T)`` by one (batched) GEMM, then
    col2im adds the taps back onto the input planes.
    """
    if g.n == 0:
        return
    ckk, p = g.c * g.kh * g.kw, g.oh * g.ow
    w2d_t = weight.reshape(g.k, ckk).T
    go = grad_out.reshape(g.n, g.k, p)
    if _is_pointwise(g):
        np.matmul(w2d_t, go, out=out.reshape(g.n, g.c, p))
        return
    if g.sh == g.sw == 1 and _all_finite(weight):
        _grad_input_wrapped(weight, grad_out, g, out)
        return
    buf = scratch("conv.cols", (ckk * _max_tile(g, grad_out.itemsize),), grad_out.dtype)
    for tile in _tiles(g, grad_out.itemsize):
        n0, nb, oy0, oy1 = tile
        t = (oy1 - oy0) * g.ow
        cols = buf[: nb * ckk * t].reshape(nb * ckk, t)
        src = go[n0 : n0 + nb, :, oy0 * g.ow : oy1 * g.ow]
        np.matmul(w2d_t, src, out=cols.reshape(nb, ckk, t))
        _col2im(cols, tile, *_geometry_args(g), out, ckk, 0)


def _grad_weight(x, grad_out, g, out):
    """Weight gradient: ``out (K, C, KH, KW)`` from x (N, C, H, W), grad_out (N, K, OH, OW).

    Per tile: im2col into one (CKK, nb*T) matrix, grad_out's tile as (K, nb*T) (a view
    for one image, regrouped for several), and one GEMM ``grad_out @ cols.T`` summing over
    the tile's images and pixels at once. Tiles after the first are added serially.
    """
    ckk, p = g.c * g.kh * g.kw, g.oh * g.ow
    gw = out.reshape(g.k, ckk)
    if g.n == 0:
        gw[:] = 0
        return
    if g.sh == g.sw == 1 and _all_finite(x):
        _grad_weight_wrapped(x, grad_out, g, gw)
        return
    go = grad_out.reshape(g.n, g.k, p)
    size = _max_tile(g, x.itemsize)
    cols_buf = scratch("conv.cols", (ckk * size,), x.dtype)
    go_buf = scratch("conv.grad_out", (g.k * size,), x.dtype)
    partial = scratch("conv.partial", (g.k, ckk), x.dtype)
    for tile in _tiles(g, x.itemsize):
        n0, nb, oy0, oy1 = tile
        t = (oy1 - oy0) * g.ow
        cols = cols_buf[: ckk * nb * t].reshape(ckk, nb * t)
        _im2col(x, tile, *_geometry_args(g), cols, 0, t)
        src = go[n0 : n0 + nb, :, oy0 * g.ow : oy1 * g.ow]
        if nb == 1:
            go_t = src[0]
        else:
            go_t = go_buf[: g.k * nb * t].reshape(g.k, nb * t)
            go_t.reshape(g.k, nb, t)[...] = src.transpose(1, 0, 2)
        if n0 == 0 and oy0 == 0:
            np.matmul(go_t, cols.T, out=gw)
        else:
            np.matmul(go_t, cols.T, out=partial)
            gw += partial


def _wrapped_images(g, itemsize: int, rows: int) -> int:
    """Images per chunk of the wrapped paths: ``rows`` matrix rows of OH*WP per image."""
    per_image = rows * g.oh * (g.w + 2 * g.pw) * itemsize
    return max(1, min(g.n, CHUNK_BYTES // per_image))


def _grad_input_wrapped(weight, grad_out, g, out):
    """Stride-1 input gradient on wrapped rows: grad_out regrouped side by side (K, nb*L)
    with zero wrapped columns, one GEMM ``weight.T @ grad_out`` per chunk, and a col2im
    whose taps are long contiguous adds. Exact only for finite weights (the wrapped columns hold
    ``weight * 0``), which the caller checks."""
    hp, wp = g.h + 2 * g.ph, g.w + 2 * g.pw
    ckk, length = g.c * g.kh * g.kw, g.oh * wp
    plane = hp * wp + (g.kw - 1) * g.dw
    nb = _wrapped_images(g, grad_out.itemsize, ckk + g.k)
    go_buf = scratch("conv.grad_out", (nb * g.k * length,), grad_out.dtype)
    cols_buf = scratch("conv.cols", (nb * ckk * length,), grad_out.dtype)
    xp = scratch("conv.padded", (nb * g.c * plane,), grad_out.dtype)
    w2d_t = weight.reshape(g.k, ckk).T
    vec = token(VECTOR_BYTES)
    for n0 in range(0, g.n, nb):
        m = min(nb, g.n - n0)
        go_w = go_buf[: g.k * m * length].reshape(g.k, m * length)
        _wrap_rows(grad_out, n0, m, wp, go_w, 0, length, vec)
        cols = cols_buf[: ckk * m * length].reshape(ckk, m * length)
        np.matmul(w2d_t, go_w, out=cols)  # one GEMM for the whole chunk
        _col2im_wrap(cols, n0, hp, wp, g.kh, g.kw, g.dh, g.dw, g.ph, g.pw, plane, xp, out, vec)


def _grad_weight_wrapped(x, grad_out, g, gw):
    """Stride-1 weight gradient on wrapped rows: per chunk, wrapped columns of the padded
    images side by side (CKK, nb*L), grad_out regrouped alike with zero wrapped columns
    (K, nb*L), and one GEMM ``grad_out @ cols.T``; chunks after the first are added
    serially. Exact only for finite ``x`` (wrapped columns meet zeros), which the caller
    checks."""
    hp, wp = g.h + 2 * g.ph, g.w + 2 * g.pw
    ckk, length = g.c * g.kh * g.kw, g.oh * wp
    tail = (g.kw - 1) * g.dw
    nb = _wrapped_images(g, x.itemsize, ckk + g.k)
    xp = scratch("conv.padded", (nb * g.c * hp * wp + tail,), x.dtype)
    cols_buf = scratch("conv.cols", (nb * ckk * length,), x.dtype)
    go_buf = scratch("conv.grad_out", (nb * g.k * length,), x.dtype)
    partial = scratch("conv.partial", (g.k, ckk), x.dtype)
    vec = token(VECTOR_BYTES)
    for n0 in range(0, g.n, nb):
        m = min(nb, g.n - n0)
        xp_m = xp[: m * g.c * hp * wp + tail]
        _pad_planes(x, n0, m, g.ph, g.pw, xp_m, vec)
        cols = cols_buf[: ckk * m * length].reshape(ckk, m * length)
        _im2col_wrap(xp_m, m, g.c, hp, wp, g.kh, g.kw, g.dh, g.dw, 0, length, cols, 0, length)
        go_w = go_buf[: g.k * m * length].reshape(g.k, m * length)
        _wrap_rows(grad_out, n0, m, wp, go_w, 0, length, vec)
        if n0 == 0:
            np.matmul(go_w, cols.T, out=gw)
        else:
            np.matmul(go_w, cols.T, out=partial)
            gw += partial


def grad_bias(grad_out, out):
    """Bias gradient: ``out (K,)`` = sum of grad_out (N, K, OH, OW) over images and positions."""
    n, k, oh, ow = grad_out.shape
    _sum_bias(grad_out.reshape(n, k, oh * ow), out, token(VECTOR_BYTES))
