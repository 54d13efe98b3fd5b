"""The SIMD intrinsics of ``fastcnn._kernels.simd`` at every vector width, on any CPU
(LLVM splits vectors wider than the hardware's), and the 2x2 max-pool built on them."""

from __future__ import annotations

import numpy as np
import pytest
from cases import DTYPES, make_rng, randn

from fastcnn import _threads
from fastcnn import reference as R
from fastcnn._config import jit
from fastcnn._kernels import pool as pool_kernels
from fastcnn._kernels.simd import (
    VECTOR_BYTES,
    WIDTHS,
    centred_sums,
    lanes,
    load,
    token,
    vadd,
    vadd_run,
    vbroadcast,
    vcopy,
    vdeinterleave,
    vfill,
    vfma,
    vkeep_max,
    vload,
    vload_head,
    vload_rows,
    vstore,
    vstore_head,
    vstore_offsets_head,
    vstore_rows,
    vsub,
    vsum,
    vtranspose,
    vzero,
)


@jit(python=True)
def _axpy_blocks(a, x, y, out, vec):
    """out[i] = a[0] * x[i] + y[i], a vector at a time, through every intrinsic."""
    lane = lanes(x, vec)
    for i in range(0, x.size, lane):
        acc = vfma(vbroadcast(a, 0, vec), vload(x, i, vec), vload(y, i, vec))
        vstore(out, i, vfma(vzero(x, vec), vzero(x, vec), acc))


@pytest.mark.parametrize("nbytes", [pytest.param(n, id=f"{n}-byte") for n in WIDTHS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_simd_intrinsics(dtype, nbytes):
    """Every width works on any CPU (LLVM splits vectors wider than the hardware's)."""
    rng = make_rng(11)
    size = 8 * nbytes // np.dtype(dtype).itemsize
    x, y = randn(rng, size, dtype), randn(rng, size, dtype)
    x[3], y[5] = np.inf, np.nan
    a = np.array([-0.5], dtype)  # a power of two: a * x is exact, so fma = a*x + y
    out = np.full(size, -1, dtype)
    _axpy_blocks(a, x, y, out, token(nbytes))
    want = a[0] * x + y
    np.testing.assert_array_equal(out, want)


@jit(python=True)
def _gather(a, idx):
    out = np.empty(idx.size, a.dtype)
    for i in range(idx.size):
        out[i] = load(a, idx[i])
    return out


@pytest.mark.parametrize("dtype", [*DTYPES, np.int64, np.uint8])
def test_load_reads_one_element_of_any_number_type(dtype):
    a = (np.arange(7) * 3).astype(dtype)
    idx = np.array([6, 0, 3, 3], np.int64)
    np.testing.assert_array_equal(_gather(a, idx), a[idx])
    with pytest.raises(TypeError, match="1-D C-contiguous"):
        _gather(a.reshape(1, 7), idx)


@jit(python=True)
def _deinterleave_and_keep_max(a, b, vec):
    """Evens and odds of a[:2*lanes], and the running maximum over the rows of b (lanes
    wide) tagged with the row number."""
    lane = lanes(a, vec)
    evens, odds = vdeinterleave(vload(a, 0, vec), vload(a, lane, vec))
    m, tag = vload(b, 0, vec), vzero(b, vec)
    for r in range(1, b.size // lane):
        m, tag = vkeep_max(m, tag, vload(b, r * lane, vec), vfill(b, r, vec))
    out = np.empty(4 * lane, a.dtype)
    for k, v in enumerate((evens, odds, m, tag)):
        vstore(out, k * lane, v)
    return out.reshape(4, lane)


@pytest.mark.parametrize("nbytes", [pytest.param(n, id=f"{n}-byte") for n in WIDTHS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_vdeinterleave_and_vkeep_max(dtype, nbytes):
    """vkeep_max keeps the first maximum unless a later value is a NaN (the last NaN
    wins), as the scalar test of the pooling kernels."""
    lane = nbytes // np.dtype(dtype).itemsize
    a = np.arange(2 * lane, dtype=dtype)
    b = make_rng(14).integers(0, 3, (4, lane)).astype(dtype)  # ties everywhere
    specials = [[np.nan, 0, 1, np.nan], [0, 1, np.nan, 1], [np.nan, 0, 0, 2], [1, 7, 7, -np.inf]]
    for j, column in enumerate(specials[:lane]):  # the last NaN wins, else the first max
        b[:, j] = column
    got = _deinterleave_and_keep_max(a, b.reshape(-1), token(nbytes))
    np.testing.assert_array_equal(got[0], a[0::2])
    np.testing.assert_array_equal(got[1], a[1::2])
    want_m, want_tag = b[0].copy(), np.zeros(lane, dtype)
    for r in range(1, 4):
        take = (b[r] > want_m) | np.isnan(b[r])
        want_m, want_tag = np.where(take, b[r], want_m), np.where(take, r, want_tag)
    np.testing.assert_array_equal(got[2], want_m)
    np.testing.assert_array_equal(got[3], want_tag)
    np.testing.assert_array_equal(got[3, :4], [3, 2, 0, 1][:lane])


@jit(python=True)
def _offsets(out, offsets, n, base, step, vec):
    vstore_offsets_head(out, 1, vload(offsets, 0, vec), n, base, step)


@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("dtype", DTYPES)
def test_vstore_offsets_head_writes_only_its_lanes(dtype, index_dtype):
    lane = VECTOR_BYTES // np.dtype(dtype).itemsize
    offsets = np.arange(lane, dtype=dtype) % 3 * 100
    for n in (0, 1, lane - 1, lane):
        out = np.full(lane + 2, -1, index_dtype)
        _offsets(out, offsets, n, 7, 2, token(VECTOR_BYTES))
        want = np.full(lane + 2, -1, index_dtype)
        want[1 : 1 + n] = 7 + 2 * np.arange(n) + offsets[:n].astype(index_dtype)
        np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("nbytes", [pytest.param(n, id=f"{n}-byte") for n in (16, 32, 64)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_2x2_at_every_width(dtype, nbytes):
    """Rows of fewer outputs than a vector holds (one masked vector), of one vector, and of
    more (whole vectors, the last overlapping the one before), ties, NaN and inf: values
    and indices exactly the reference's."""
    rng = make_rng(23)
    lane = nbytes // np.dtype(dtype).itemsize
    for w in sorted({2, 3, 2 * lane - 1, 2 * lane, 2 * lane + 3, 5 * lane + 1}):
        x = rng.integers(-1, 2, (3, 2, 5, w)).astype(dtype)
        x[0, 0, 1, w - 1], x[1, 1, 3, 0], x[2, 0, 0, w // 2] = np.nan, np.inf, -np.inf
        want_y, want_i = R.max_pool2d(x, 2)
        y, idx = np.empty_like(want_y), np.empty(want_i.shape, np.int64)
        oh, ow = want_y.shape[2:]
        _threads.run(
            pool_kernels._max_pool_2x2,
            1, 6, x.reshape(6, 5, w), y.reshape(6, oh, ow), idx.reshape(6, oh, ow), token(nbytes),
        )  # fmt: skip
        np.testing.assert_array_equal(y, want_y, err_msg=f"W={w}")
        np.testing.assert_array_equal(idx, want_i, err_msg=f"W={w}")


@jit(python=True)
def _sums(a, vec):
    lane = lanes(a, vec)
    out = np.empty(a.size // lane, a.dtype)
    for i in range(out.size):
        out[i] = vsum(vload(a, i * lane, vec))
    return out


@pytest.mark.parametrize("nbytes", [pytest.param(n, id=f"{n}-byte") for n in WIDTHS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_vsum_adds_the_lanes_pairwise(dtype, nbytes):
    lane = nbytes // np.dtype(dtype).itemsize
    a = randn(make_rng(13), 3 * lane, dtype)
    a[lane + 1] = np.inf
    want = a.reshape(3, lane).copy()
    while want.shape[1] > 1:  # the same tree: halves added lane by lane
        half = want.shape[1] // 2
        want = want[:, :half] + want[:, half:]
    np.testing.assert_array_equal(_sums(a, token(nbytes)), want[:, 0])


@jit(python=True)
def _copy(src, s, dst, d, n, vec):
    vcopy(src, s, dst, d, n, vec)


@jit(python=True)
def _centred_sums(a, ma, b, mb, s, n, vec):
    return centred_sums(a, ma, b, mb, s, n, vec)


@pytest.mark.parametrize("nbytes", [pytest.param(n, id=f"{n}-byte") for n in WIDTHS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_vcopy_copies_exactly_the_run(dtype, nbytes):
    """Runs shorter than a vector, of one, between one and two, and of several vectors,
    at odd offsets: the run is copied and nothing around it is touched."""
    lane = nbytes // np.dtype(dtype).itemsize
    src = randn(make_rng(19), 8 * lane, dtype)
    for n in (0, 1, lane - 1, lane, lane + 1, 2 * lane + 3, 5 * lane):
        dst = np.full(8 * lane, -7, dtype)
        _copy(src, 3, dst, 5, n, token(nbytes))
        want = np.full(8 * lane, -7, dtype)
        want[5 : 5 + n] = src[3 : 3 + n]
        np.testing.assert_array_equal(dst, want)


@jit(python=True)
def _add_run(src, s, dst, d, n, vec, scalar_tail):
    vadd_run(src, s, dst, d, n, vec, scalar_tail)


@jit(python=True)
def _add_run_default(src, s, dst, d, n, vec):
    vadd_run(src, s, dst, d, n, vec)


@jit(python=True)
def _heads(src, s, dst, d, n, vec):
    vstore_head(dst, d, vload_head(src, s, n, vec), n)


@pytest.mark.parametrize("nbytes", [pytest.param(n, id=f"{n}-byte") for n in WIDTHS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_loads_stores_and_vadd_run(dtype, nbytes):
    """``vload_head``/``vstore_head`` move the first n lanes and touch nothing else, also at
    the very end of an array; ``vadd_run`` adds exactly the run, with either tail."""
    lane = nbytes // np.dtype(dtype).itemsize
    rng = make_rng(31)
    src = randn(rng, 8 * lane, dtype)
    for n in (0, 1, lane - 1, lane):
        dst = np.full(8 * lane, -7, dtype)
        _heads(src, 8 * lane - n, dst, 3, n, token(nbytes))  # the last n elements of src
        want = np.full(8 * lane, -7, dtype)
        want[3 : 3 + n] = src[8 * lane - n :]
        np.testing.assert_array_equal(dst, want)
        end = np.full(n, -7, dtype)
        _heads(src, 2, end, 0, n, token(nbytes))  # into an array of exactly n elements
        np.testing.assert_array_equal(end, src[2 : 2 + n])
    for n in (0, 1, lane - 1, lane, lane + 1, 3 * lane + 2):
        for scalar_tail in (False, True):
            dst = randn(rng, 8 * lane, dtype)
            want = dst.copy()
            want[5 : 5 + n] += src[1 : 1 + n]
            _add_run(src, 1, dst, 5, n, token(nbytes), scalar_tail)
            np.testing.assert_array_equal(dst, want)
        end = randn(rng, n, dtype)  # a run to the very end of dst, the machine's tail
        want = end + src[:n]
        _add_run_default(src, 0, end, 0, n, token(nbytes))
        np.testing.assert_array_equal(end, want)


@jit(python=True)
def _transpose_tile(src, i, stride, dst, d, dstride, n, vec):
    vstore_rows(dst, d, dstride, vtranspose(vload_rows(src, i, stride, vec)), n)


@pytest.mark.parametrize("nbytes", [pytest.param(n, id=f"{n}-byte") for n in WIDTHS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_tiles_transpose_exactly(dtype, nbytes):
    """A square tile of ``lanes`` rows ``stride`` apart, transposed into rows ``dstride``
    apart: all of each row, or its first n lanes (masked), and nothing else is written."""
    lane = nbytes // np.dtype(dtype).itemsize
    src = randn(make_rng(37), (lane + 1) * 3 * lane, dtype)
    src[4] = np.nan
    tile = src[5 : 5 + lane * 3 * lane].reshape(lane, 3 * lane)[:, :lane]
    for n in (lane, lane - 1, 1, 0):
        dst = np.full(lane * 2 * lane + 7, -7, dtype)
        _transpose_tile(src, 5, 3 * lane, dst, 7, 2 * lane, n, token(nbytes))
        want = np.full_like(dst, -7)
        want[7:].reshape(lane, 2 * lane)[:, :n] = tile.T[:, :n]
        np.testing.assert_array_equal(dst, want)


@jit(python=True)
def _lanewise_ops(x, y, value, out, vec):
    lane = lanes(x, vec)
    for i in range(0, x.size, lane):
        u, v = vload(x, i, vec), vload(y, i, vec)
        vstore(out, i, vsub(vadd(u, v), vfill(x, value, vec)))


@pytest.mark.parametrize("nbytes", [pytest.param(n, id=f"{n}-byte") for n in WIDTHS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_vadd_vsub_vfill(dtype, nbytes):
    rng = make_rng(23)
    lane = nbytes // np.dtype(dtype).itemsize
    x, y = randn(rng, 3 * lane, dtype), randn(rng, 3 * lane, dtype)
    x[1], y[2] = np.inf, np.nan
    out = np.empty_like(x)
    _lanewise_ops(x, y, 0.1, out, token(nbytes))  # 0.1 is cast to the dtype
    np.testing.assert_array_equal(out, (x + y) - np.dtype(dtype).type(0.1))


def _centred_sum_in_order(a, ma, lane):
    """The first sum of ``centred_sums``, in its documented order, in NumPy."""
    d = a - a.dtype.type(ma)
    acc = np.zeros((4, lane), a.dtype)
    q = 0
    while q + 4 * lane <= d.size:
        acc += d[q : q + 4 * lane].reshape(4, lane)
        q += 4 * lane
    while q + lane <= d.size:
        acc[0] += d[q : q + lane]
        q += lane
    v = (acc[0] + acc[1]) + (acc[2] + acc[3])
    while v.size > 1:
        v = v[: v.size // 2] + v[v.size // 2 :]
    total = v[0]
    for e in d[q:]:
        total += e
    return total


@pytest.mark.parametrize("nbytes", [pytest.param(n, id=f"{n}-byte") for n in WIDTHS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_centred_sums(dtype, nbytes):
    """Runs of no, one, part of a, whole, four and more vectors at an odd offset: the
    plain sum follows the documented order bit for bit, the product sum agrees with
    float64, and on small integers (where every order is exact) both are exact."""
    lane = nbytes // np.dtype(dtype).itemsize
    rng = make_rng(29)
    vec = token(nbytes)
    for n in (0, 1, lane - 1, lane, 4 * lane - 1, 4 * lane, 4 * lane + 1, 9 * lane + 3):
        a, b = randn(rng, n + 5, dtype), randn(rng, n + 5, dtype)
        total, product = _centred_sums(a, 0.25, b, -0.5, 3, n, vec)
        assert total == _centred_sum_in_order(a[3 : 3 + n], 0.25, lane)
        want = np.sum((a[3 : 3 + n] - 0.25).astype(np.float64) * (b[3 : 3 + n] + 0.5))
        assert abs(product - want) <= 1e-5 * max(1.0, np.abs(a).sum() * np.abs(b).sum())
        total, squares = _centred_sums(a, 0.25, None, 7.0, 3, n, vec)  # b = a, mb = ma
        assert total == _centred_sum_in_order(a[3 : 3 + n], 0.25, lane)
        want = np.sum((a[3 : 3 + n] - 0.25).astype(np.float64) ** 2)
        assert abs(squares - want) <= 1e-5 * max(1.0, want)
        ints_a = rng.integers(-8, 9, n + 5).astype(dtype)
        ints_b = rng.integers(-8, 9, n + 5).astype(dtype)
        total, product = _centred_sums(ints_a, 1, ints_b, 2, 3, n, vec)
        assert total == np.sum(ints_a[3 : 3 + n] - 1)
        assert product == np.sum((ints_a[3 : 3 + n] - 1) * (ints_b[3 : 3 + n] - 2))
        assert _centred_sums(ints_a, 1, None, 0, 3, n, vec)[1] == np.sum(
            (ints_a[3 : 3 + n] - 1) ** 2
        )


def test_simd_rejects_other_types():
    @jit(python=True)
    def load(a, vec):
        return vload(a, 0, vec)

    with pytest.raises(Exception, match="float array"):
        load(np.zeros(64, np.int64), token(32))
    with pytest.raises(Exception, match="width must come from token"):
        load(np.zeros(64), 32)
    with pytest.raises(ValueError, match="nbytes must be one of"):
        token(8)
