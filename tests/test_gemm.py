"""The register-blocked matrix product (``fastcnn._kernels.gemm``) against float64 NumPy,
and the Linear layer's backward, which uses it where the columns fit.

Tolerances as in ``cases.TOL``, with ``atol = 1e-6 * sqrt(R)`` for float32 sums of R terms.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import DTYPES, MAX_THREADS, SPECIAL_VALUES, assert_close, make_rng, randn

import fastcnn
from fastcnn import nn
from fastcnn._kernels import conv_blocked, gemm
from fastcnn._simd import VECTOR_BYTES, WIDTHS
from fastcnn._threads import guard

NBYTES = [pytest.param(n, id=f"{n}-byte") for n in WIDTHS if n <= VECTOR_BYTES]


def _atol(dtype, terms):
    return max(1e-5, 1e-6 * np.sqrt(terms)) if np.dtype(dtype) == np.float32 else None


@pytest.fixture
def product_calls(monkeypatch):
    calls = []
    kernel = gemm._product

    def counted(*args):
        calls.append(args)
        return kernel(*args)

    monkeypatch.setattr(gemm, "_product", counted)
    return calls


@SPECIAL_VALUES
@pytest.mark.parametrize("nbytes", NBYTES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transposed", [False, True], ids=["a", "a.T"])
@pytest.mark.parametrize(("m", "r", "blocks"), [(1, 1, 1), (7, 9, 2), (13, 64, 1), (6, 0, 1)])
def test_product_matches_numpy(m, r, blocks, transposed, dtype, nbytes, threads):
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
