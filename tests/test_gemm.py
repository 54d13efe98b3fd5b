"""The register-blocked matrix products (``fastcnn._kernels.gemm``) against float64 NumPy,
and ``linear`` and the Linear layer, which use them.

Tolerances as in ``cases.TOL``, with ``atol = 1e-6 * sqrt(R)`` for float32 sums of R terms.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import DTYPES, MAX_THREADS, SPECIAL_VALUES, assert_close, make_rng, randn

import fastcnn
from fastcnn import functional as F
from fastcnn import nn
from fastcnn._kernels import gemm
from fastcnn._kernels.geometry import channel_block


def _atol(dtype, terms):
    return max(1e-5, 1e-6 * np.sqrt(terms)) if np.dtype(dtype) == np.float32 else None


def _columns():
    """Column counts below, at and around the blocks of two vectors (a short last block)."""
    block = channel_block(np.float32)
    return sorted({1, 3, block // 2 - 1, block, block + 5, 3 * block})


@pytest.mark.parametrize("transposed", [False, True], ids=["a", "a.T"])
@pytest.mark.parametrize("n", _columns())
@pytest.mark.parametrize(("m", "r"), [(1, 1), (5, 7), (13, 30), (64, 1600)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_product_matches_numpy(m, r, n, transposed, dtype, threads):
    rng = make_rng(1)
    a = randn(rng, (r, m) if transposed else (m, r), dtype)
    b = randn(rng, (r, n), dtype)
    a_view = a.T if transposed else a
    out = np.full((m, n), np.nan, dtype)
    gemm.product(a_view, b, out)
    want = a_view.astype(np.float64) @ b.astype(np.float64)
    assert_close(out, want, dtype, atol=_atol(dtype, r))


def test_product_copies_other_layouts():
    rng = make_rng(2)
    a = randn(rng, (6, 20), np.float32)[:, ::2]  # neither C- nor F-contiguous
    b, out = randn(rng, (10, 16), np.float32), np.empty((6, 16), np.float32)
    gemm.product(a, b, out)
    assert_close(out, a.astype(np.float64) @ b, np.float32)


@pytest.mark.parametrize(
    ("m", "n", "extra"), [(1, 1, 0), (4, 5, 3), (7, 9, 1), (3, 4, 2 * gemm.DOT_CHUNK + 5)]
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dots_match_numpy(m, n, extra, dtype, threads):
    rng = make_rng(3)
    r = 8 * 16 + extra
    a, b = randn(rng, (m, r), dtype), randn(rng, (n, r), dtype)
    out = np.full((m, n), np.nan, dtype)
    gemm.dots(a, b, out)
    assert_close(out, a.astype(np.float64) @ b.T.astype(np.float64), dtype, atol=_atol(dtype, r))


@pytest.mark.parametrize("r", [0, 1, 3])
def test_dots_of_short_rows(r):
    """Fewer elements per row than a vector holds: the tail loop does it all."""
    rng = make_rng(4)
    a, b = randn(rng, (5, r), np.float64), randn(rng, (3, r), np.float64)
    out = np.full((5, 3), np.nan)
    gemm.dots(a, b, out)
    assert_close(out, a @ b.T, np.float64)


@pytest.mark.parametrize("kernel", ["product", "dots"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_products_are_the_same_on_any_thread_count(kernel, dtype):
    """Each output element is one sum in a fixed order, whatever part computes it."""
    rng = make_rng(5)
    a, b = randn(rng, (64, 1600), dtype), randn(rng, (1600, 130), dtype)
    if kernel == "dots":
        b = np.ascontiguousarray(b.T)
    results = []
    before = fastcnn.get_num_threads()
    try:
        for threads in (1, MAX_THREADS):
            fastcnn.set_num_threads(threads)
            out = np.empty((64, 130), dtype)
            getattr(gemm, kernel)(a, b, out)
            results.append(out)
    finally:
        fastcnn.set_num_threads(before)
    np.testing.assert_array_equal(results[0], results[1])


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_layer_against_float64(dtype, threads):
    """The layer's forward (dots) and both backward products (product, a.T view included)
    on a batch and on one sample, NaN and inf included."""
    rng = make_rng(6)
    layer = nn.Linear(70, 35, rng=rng, dtype=dtype)
    w = layer.weight.data.astype(np.float64)
    for shape in ((9, 70), (70,)):
        x = randn(rng, shape, dtype)
        x[..., 3] = np.inf if len(shape) == 2 else 1.5
        g = randn(rng, shape[:-1] + (35,), dtype)
        layer.zero_grad()
        y = layer(x)
        assert_close(y, x.astype(np.float64) @ w.T + layer.bias.data, dtype, atol=_atol(dtype, 70))
        gx = layer.backward(g)
        assert_close(gx, g.astype(np.float64) @ w, dtype, atol=_atol(dtype, 35))
        x2, g2 = x.reshape(-1, 70).astype(np.float64), g.reshape(-1, 35).astype(np.float64)
        assert_close(layer.weight.grad, g2.T @ x2, dtype, atol=_atol(dtype, len(x2)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_functional_linear_with_bias(dtype, threads):
    rng = make_rng(7)
    x, w, b = randn(rng, (4, 3, 20), dtype), randn(rng, (6, 20), dtype), randn(rng, 6, dtype)
    want = x.astype(np.float64) @ w.T.astype(np.float64) + b
    assert_close(F.linear(x, w, b), want, dtype, atol=_atol(dtype, 20))


@pytest.mark.parametrize("depth", [1, 7], ids=["outer-product", "product"])
@pytest.mark.parametrize("n", _columns())
@pytest.mark.parametrize("dtype", DTYPES)
def test_product_accumulates_into_its_output(depth, n, dtype, threads):
    """``out += a @ b``: a row's weight gradient (depth 1, an outer product) and a batch's,
    added in one pass to what the output held."""
    rng = make_rng(8)
    a, b = randn(rng, (13, depth), dtype), randn(rng, (depth, n), dtype)
    out = randn(rng, (13, n), dtype)
    want = out.astype(np.float64) + a.astype(np.float64) @ b
    gemm.product(a, b, out, accumulate=True)
    assert_close(out, want, dtype, atol=_atol(dtype, depth + 1))


@pytest.mark.parametrize("n", _columns())
@pytest.mark.parametrize("dtype", DTYPES)
def test_outer_update_adds_a_scaled_outer_product(n, dtype, threads):
    """``c += scale * outer(g, x)``, twice, with either sign of ``scale``."""
    rng = make_rng(9)
    g, x, c = randn(rng, 13, dtype), randn(rng, n, dtype), randn(rng, (13, n), dtype)
    want = c.astype(np.float64) - 0.5 * np.outer(g, x)
    gemm.outer_update(g, x, c, -0.5)
    assert_close(c, want, dtype, atol=_atol(dtype, 2))
    gemm.outer_update(g, x, c, 0.5)
    assert_close(c, want + 0.5 * np.outer(g, x), dtype, atol=_atol(dtype, 3))


@pytest.mark.parametrize("n", [1, 7, 37])
@pytest.mark.parametrize("dtype", DTYPES)
def test_outer_update_writes_when_not_accumulating(n, dtype):
    """``accumulate=False`` writes ``scale * outer(g, x)`` over whatever ``c`` held (NaN
    here): the bits of adding it to zeros."""
    rng = make_rng(13)
    g, x = randn(rng, 5, dtype), randn(rng, n, dtype)
    c, zeros = np.full((5, n), np.nan, dtype), np.zeros((5, n), dtype)
    gemm.outer_update(g, x, c, 0.5, accumulate=False)
    gemm.outer_update(g, x, zeros, 0.5)
    np.testing.assert_array_equal(c, zeros)


@pytest.mark.parametrize("dtype", DTYPES)
def test_outer_update_in_parts_matches_one_part(dtype):
    """A product big enough to split over threads gives the bits of one thread."""
    rng = make_rng(10)
    m, n = 40, 2 * gemm.GRAIN // 40 + 37
    g, x, w = randn(rng, m, dtype), randn(rng, n, dtype), randn(rng, (m, n), dtype)
    results = []
    for count in (1, MAX_THREADS):
        fastcnn.set_num_threads(count)
        c = w.copy()
        gemm.outer_update(g, x, c, 1.0)
        results.append(c)
    fastcnn.set_num_threads(MAX_THREADS)
    np.testing.assert_array_equal(results[0], results[1])
    assert_close(results[0], w + np.outer(g.astype(np.float64), x), dtype, atol=_atol(dtype, 2))


@pytest.mark.parametrize("batch", [(), (3,)], ids=["one-row", "batch"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_backward_into_a_strided_gradient(batch, dtype):
    """A weight gradient that the kernels cannot write in place (a user's strided array)
    still gets this call's gradient added, on one row and on a batch."""
    rng = make_rng(11)
    layer = nn.Linear(20, 6, rng=rng, dtype=dtype)
    start = randn(rng, (6, 40), dtype)
    layer.weight.grad = start[:, ::2]
    x, g = randn(rng, (*batch, 20), dtype), randn(rng, (*batch, 6), dtype)
    g2, x2 = g.reshape(-1, 6).astype(np.float64), x.reshape(-1, 20).astype(np.float64)
    want = start[:, ::2].astype(np.float64) + g2.T @ x2
    layer(x)
    gx = layer.backward(g)
    assert_close(layer.weight.grad, want, dtype, atol=_atol(dtype, 4))
    assert_close(gx, g.astype(np.float64) @ layer.weight.data, dtype, atol=_atol(dtype, 6))


def test_linear_row_backward_from_a_strided_weight():
    """A weight a user replaced by a strided view still gives the input gradient."""
    rng = make_rng(12)
    layer = nn.Linear(20, 6, rng=rng, dtype=np.float64)
    layer.weight.data = randn(rng, (6, 40), np.float64)[:, ::2]
    x, g = randn(rng, 20, np.float64), randn(rng, 6, np.float64)
    layer(x)
    gx = layer.backward(g)
    np.testing.assert_allclose(gx, g @ layer.weight.data, rtol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, np.outer(g, x), rtol=1e-12)
