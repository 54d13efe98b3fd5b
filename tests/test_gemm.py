"""The register-blocked matrix products (``fastcnn._kernels.gemm``) against float64 NumPy,
and ``linear`` and the Linear layer, which use them where they fit.

Tolerances as in ``cases.TOL``, with ``atol = 1e-6 * sqrt(R)`` for float32 sums of R terms.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import DTYPES, MAX_THREADS, SPECIAL_VALUES, assert_close, make_rng, randn

import fastcnn
from fastcnn import functional as F
from fastcnn import nn
from fastcnn._kernels import conv_blocked, gemm
from fastcnn._simd import VECTOR_BYTES, WIDE_BYTES, WIDTHS
from fastcnn._threads import guard

NBYTES = [pytest.param(n, id=f"{n}-byte") for n in WIDTHS if n <= WIDE_BYTES]


def _atol(dtype, terms):
    return max(1e-5, 1e-6 * np.sqrt(terms)) if np.dtype(dtype) == np.float32 else None


def _calls(monkeypatch, name):
    calls = []
    kernel = getattr(gemm, name)

    def counted(*args):
        calls.append(args)
        return kernel(*args)

    monkeypatch.setattr(gemm, name, counted)
    return calls


@pytest.fixture
def product_calls(monkeypatch):
    return _calls(monkeypatch, "_product")


@pytest.fixture
def dots_calls(monkeypatch):
    return _calls(monkeypatch, "_dots")


@SPECIAL_VALUES
@pytest.mark.parametrize("nbytes", NBYTES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transposed", [False, True], ids=["a", "a.T"])
@pytest.mark.parametrize(("m", "r", "blocks"), [(1, 1, 1), (7, 9, 2), (13, 64, 1), (6, 0, 1)])
def test_product_matches_numpy(m, r, blocks, transposed, dtype, nbytes, threads, product_calls):
    n = blocks * conv_blocked.channel_block(dtype, nbytes)
    rng = make_rng(m + r)
    a = randn(rng, (r, m), dtype).T if transposed else randn(rng, (m, r), dtype)
    b = randn(rng, (r, n), dtype)
    if m * r:
        a[0, -1] = np.inf
        b[-1, n - 1] = np.nan
    out = np.full((m, n), -7, dtype)
    with guard():
        gemm.product(a, b, out)
    if blocks == 1:  # the widest vectors whose blocks tile n
        assert 16 * len(product_calls[-1][-1]) == nbytes
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert_close(out, want, dtype, atol=_atol(dtype, r))


def test_product_copies_other_layouts():
    rng = make_rng(1)
    a = randn(rng, (10, 12), np.float64)[::2, ::3]  # neither C- nor F-ordered
    b = randn(rng, (4, 16), np.float64)
    out = np.empty((5, 16))
    with guard():
        gemm.product(a, b, out)
    assert_close(out, a @ b, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_product_is_the_same_on_any_thread_count(dtype):
    rng = make_rng(2)
    a, b = randn(rng, (31, 50), dtype), randn(rng, (50, 8 * 32), dtype)
    results = []
    for n in (1, MAX_THREADS):
        fastcnn.set_num_threads(n)
        out = np.empty((31, 8 * 32), dtype)
        with guard():
            gemm.product(a, b, out)
        results.append(out)
    fastcnn.set_num_threads(MAX_THREADS)
    np.testing.assert_array_equal(*results)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_backward_blocked(dtype, threads, product_calls):
    """With whole blocks of in_features, both backward products run blocked."""
    block = conv_blocked.channel_block(dtype)
    layer = nn.Linear(3 * block, 2 * block, rng=3, dtype=dtype)
    rng = make_rng(4)
    x = randn(rng, (5, 3 * block), dtype)
    grad_out = randn(rng, (5, 2 * block), dtype)
    layer.zero_grad()
    layer.forward(x)
    grad_x = layer.backward(grad_out)
    assert len(product_calls) == 2
    w = layer.weight.data.astype(np.float64)
    g64, x64 = grad_out.astype(np.float64), x.astype(np.float64)
    assert_close(layer.weight.grad, g64.T @ x64, dtype, atol=_atol(dtype, 5))
    assert_close(grad_x, g64 @ w, dtype, atol=_atol(dtype, 2 * block))


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("m", "n", "extra"), [(1, 1, 0), (4, 5, 3), (7, 9, 1), (3, 4, 2 * gemm.DOT_CHUNK + 5)]
)
def test_dots_match_numpy(m, n, extra, dtype, threads):
    r = VECTOR_BYTES // np.dtype(dtype).itemsize + extra
    rng = make_rng(m + n + r)
    a, b = randn(rng, (m, r), dtype), randn(rng, (n, r), dtype)
    a[0, -1], b[-1, 0] = np.inf, np.nan
    out = np.full((m, n), -7, dtype)
    with guard():
        gemm.dots(a, b, out)
    assert_close(out, a.astype(np.float64) @ b.T.astype(np.float64), dtype, atol=_atol(dtype, r))


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_forward_runs_dots(dtype, threads, dots_calls):
    rng = make_rng(5)
    x, w, bias = randn(rng, (6, 70), dtype), randn(rng, (3, 70), dtype), randn(rng, 3, dtype)
    y = F.linear(x, w, bias)
    assert len(dots_calls) == 1
    want = x.astype(np.float64) @ w.T.astype(np.float64) + bias
    assert_close(y, want, dtype, atol=_atol(dtype, 70))


def test_dots_is_the_same_on_any_thread_count():
    rng = make_rng(6)
    a, b = randn(rng, (9, 300), np.float32), randn(rng, (13, 300), np.float32)
    results = []
    for n in (1, MAX_THREADS):
        fastcnn.set_num_threads(n)
        out = np.empty((9, 13), np.float32)
        with guard():
            gemm.dots(a, b, out)
        results.append(out)
    fastcnn.set_num_threads(MAX_THREADS)
    np.testing.assert_array_equal(*results)
