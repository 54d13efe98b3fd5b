"""Matrix products for ``linear`` and its layer.

The register-blocked kernels of :mod:`fastcnn._kernels.gemm` run on all threads where they
fit: the forward's ``x @ weight.T`` as dot products of rows (at least one SIMD vector of
in_features), the layer's two backward products where the columns of the result come in
whole SIMD blocks (e.g. 128 or 1600 float32 columns). Otherwise they are BLAS GEMMs on
slices of the rows: on several threads each slice is one single-threaded GEMM on its own
thread (:func:`fastcnn._threads.run_slices`), like the GEMM paths of the convolutions:
fastcnn never wakes BLAS's own thread pool, whose threads spin after each call and would
take the cores from the Numba kernels that run next.
"""

from __future__ import annotations

import numpy as np

from fastcnn._kernels import gemm
from fastcnn._threads import run_slices, slices, sum_over_slices


def matmul(a, b, out):
    """``out (M, N) = a (M, K) @ b (K, N)``: blocked, or split over the rows of ``a`` and
    ``out``."""
    if b.flags.c_contiguous and gemm.fits(out.shape[1], out.dtype):
        gemm.product(a, b, out)
        return
    if a.flags.c_contiguous and b.T.flags.c_contiguous and gemm.dots_fit(a.shape[1], a.dtype):
        gemm.dots(a, b.T, out)  # b is a transposed weight: dot products of rows
        return
    parts = slices(a.shape[0])
    if len(parts) == 1:
        np.matmul(a, b, out=out)
        return

    def work(r0, r1):
        np.matmul(a[r0:r1], b, out=out[r0:r1])

    run_slices(work, parts)


def matmul_tn(a, b, out):
    """``out (M, N) = a (K, M).T @ b (K, N)``: blocked, or a sum over the K rows split into
    slices of rows whose partial products are added in slice order."""
    if gemm.fits(out.shape[1], out.dtype):
        gemm.product(a.T, b, out)
        return
    parts = slices(a.shape[0])
    if len(parts) == 1:
        np.matmul(a.T, b, out=out)
        return

    def work(r0, r1, dst):
        np.matmul(a[r0:r1].T, b[r0:r1], out=dst)

    sum_over_slices(parts, work, out, lambda each: run_slices(each, parts))
