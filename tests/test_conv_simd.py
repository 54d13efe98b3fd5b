"""The SIMD convolutions (``fastcnn._kernels.conv_blocked``, ``conv_rows``,
``conv_few_taps``) and their intrinsics (``fastcnn._simd``) against the reference.

The shared case table has too few channels for the blocked paths, which need the output
channels (forward, weight gradient) or the input channels (input gradient) in whole blocks
of two SIMD vectors (``channel_block``: 32 float32 channels with 64-byte vectors, 16 with
32-byte and 8 with 16-byte ones; half as many float64). The cases here are built from that
block for every width this CPU has, and each test checks that the blocked kernel really
ran, so none of them passes on a fallback path. The blocked tests keep the wrapped-rows
kernels out (they would take the wide, few-channel cases); the wrapped-rows tests send
every stride-1 case to them, wide rows or not.
Tolerances as in ``test_functional_conv.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import DTYPES, SPECIAL_VALUES, assert_close, make_rng, randn
from test_functional_conv import atol_for, check_conv

from fastcnn import _checks, _presets
from fastcnn import functional as F
from fastcnn import reference as R
from fastcnn._config import jit
from fastcnn._kernels import conv as conv_kernels
from fastcnn._kernels import conv_blocked, conv_few_taps, conv_rows
from fastcnn._kernels import pool as pool_kernels
from fastcnn._kernels.conv_blocked import FORWARD_BYTES
from fastcnn._simd import (
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


def _count_calls(monkeypatch, module, names=("forward", "grad_weight")):
    calls = dict.fromkeys(names, 0)
    for name in calls:
        kernel = getattr(module, f"_{name}")

        def counted(*args, _kernel=kernel, _name=name):
            calls[_name] += 1
            return _kernel(*args)

        monkeypatch.setattr(module, f"_{name}", counted)
    return calls


@pytest.fixture
def blocked_calls(monkeypatch):
    """Counts the calls of the three blocked kernels, with the wrapped-rows kernel off."""
    monkeypatch.setattr(conv_kernels, "_rows_fit", lambda *args: False)
    return _count_calls(monkeypatch, conv_blocked, ("forward", "grad_input", "grad_weight"))


@pytest.fixture
def rows_calls(monkeypatch):
    """Counts the calls of the wrapped-rows kernels, which take every stride-1 forward,
    input gradient and (finite x) weight gradient with more than ``DIRECT_MAX_TAPS``
    taps, whatever their rows."""

    def forced(g, channels, row_width, dtype):
        return g.sh == g.sw == 1 and g.c * g.kh * g.kw > conv_kernels.DIRECT_MAX_TAPS

    monkeypatch.setattr(conv_kernels, "_rows_fit", forced)
    # The weight gradient too, where the blocked kernel would take it.
    monkeypatch.setattr(conv_kernels, "_rows_grad_weight_fits", conv_kernels._rows_grad_weight_runs)
    return _count_calls(monkeypatch, conv_rows)


@pytest.fixture
def few_taps_calls(monkeypatch):
    """Counts the calls of the three few-taps kernels."""
    return _count_calls(monkeypatch, conv_few_taps, ("forward", "grad_input", "grad_weight"))


# (x shape, weight shape, kwargs) with C = K = "B" (one channel block) or "2B".
CASES = [
    pytest.param((2, "B", 7, 9), ("B", "B", 3, 3), {}, id="3x3-odd-sizes"),
    pytest.param((1, "B", 5, 6), ("2B", "B", 3, 3), {"padding": 1}, id="batch1-padding1"),
    pytest.param((3, "B", 9, 8), ("B", "B", 3, 3), {"stride": 2}, id="stride2"),
    pytest.param(
        (2, "B", 8, 11), ("B", "B", 3, 2), {"stride": (2, 1), "padding": (1, 0)}, id="pairs"
    ),
    pytest.param((2, "B", 9, 9), ("B", "B", 3, 3), {"dilation": 2, "padding": 2}, id="dilation2"),
    pytest.param((2, "2B", 4, 5), ("2B", "2B", 1, 1), {}, id="kernel-1x1"),
    pytest.param((1, "B", 3, 3), ("B", "B", 3, 3), {}, id="one-output-pixel"),
    pytest.param((2, "B", 5, 5), ("B", "B", 5, 5), {"padding": 3}, id="padding-gt-half"),
    pytest.param((4, "2B", 6, 6), ("2B", "2B", 3, 3), {"padding": 1}, id="two-blocks"),
    # Rows of 30: pairs of blocks in a row, then a block across the row's end.
    pytest.param((2, "B", 4, 30), ("B", "B", 3, 3), {"padding": 1}, id="wide-rows"),
]


NBYTES = [pytest.param(n, id=f"{n}-byte") for n in WIDTHS if n <= VECTOR_BYTES]


def _shape(shape, block):
    return tuple({"B": block, "2B": 2 * block}.get(v, v) for v in shape)


def _check_blocked_case(x_shape, w_shape, kwargs, dtype, block, seed):
    """Check the three conv ops of a case of CASES against the reference; the weight."""
    rng = make_rng(seed)
    x = randn(rng, _shape(x_shape, block), dtype)
    weight = randn(rng, _shape(w_shape, block), dtype, scale=0.2)
    bias = randn(rng, weight.shape[0], dtype)
    grad_out = randn(rng, R.conv2d(x, weight, **kwargs).shape, dtype)
    check_conv(x, weight, bias, grad_out, kwargs)
    return weight


@pytest.mark.parametrize("nbytes", NBYTES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), CASES)
def test_blocked_conv_ops_match_reference(
    x_shape, w_shape, kwargs, dtype, nbytes, threads, blocked_calls
):
    block = conv_blocked.channel_block(dtype, nbytes)
    assert conv_blocked.vector_bytes(block, dtype) == nbytes
    weight = _check_blocked_case(x_shape, w_shape, kwargs, dtype, block, seed=7)
    k, c, kh, kw = weight.shape
    many_taps = c * kh * kw > conv_kernels.DIRECT_MAX_TAPS  # else the few-taps kernels
    # The input gradient: a blocked forward (forward form) or the blocked scatter form.
    input_grad_blocked = k * kh * kw > conv_kernels.DIRECT_MAX_TAPS
    assert blocked_calls["forward"] + blocked_calls["grad_input"] == many_taps + input_grad_blocked
    assert blocked_calls["grad_weight"] == many_taps


# Vectors wider than the native ones, which the blocked forward takes (none without AVX-512).
WIDE = [pytest.param(n, id=f"{n}-byte") for n in WIDTHS if VECTOR_BYTES < n <= FORWARD_BYTES] or [
    pytest.param(0, id="none", marks=pytest.mark.skip(reason="no AVX-512: no wider vectors here"))
]


@pytest.mark.parametrize("nbytes", WIDE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), CASES)
def test_blocked_forward_wide_vectors_match_reference(
    x_shape, w_shape, kwargs, dtype, nbytes, threads, monkeypatch
):
    """Channels in blocks of two wide vectors: the forward (and the input gradient in
    forward form) runs on them, the weight gradient and the scatter form on native ones."""
    widths = {"forward": set(), "grad_input": set(), "grad_weight": set()}
    for name, seen in widths.items():
        kernel = getattr(conv_blocked, f"_{name}")

        def recorded(*args, _kernel=kernel, _seen=seen, _last=-2 if name == "forward" else -1):
            _seen.add(16 * len(args[_last]))  # the width token (the forward's tiles' follows)
            return _kernel(*args)

        monkeypatch.setattr(conv_blocked, f"_{name}", recorded)
    monkeypatch.setattr(conv_kernels, "_rows_fit", lambda *args: False)
    block = conv_blocked.channel_block(dtype, nbytes)
    weight = _check_blocked_case(x_shape, w_shape, kwargs, dtype, block, seed=17)
    if weight[0].size > conv_kernels.DIRECT_MAX_TAPS:
        assert widths["forward"] == {nbytes}
        assert widths["grad_weight"] == {VECTOR_BYTES}
    assert widths["grad_input"] <= {VECTOR_BYTES}


@pytest.mark.parametrize("dtype", DTYPES)
def test_blocked_conv_bitwise_repeatable(dtype, threads):
    block = conv_blocked.channel_block(dtype)
    rng = make_rng(8)
    x = randn(rng, (5, block, 8, 7), dtype)
    weight = randn(rng, (block, block, 3, 3), dtype)
    grad_out = randn(rng, (5, block, 6, 5), dtype)
    for op in (
        lambda: F.conv2d(x, weight),
        lambda: F.conv2d_grad_input(x.shape, weight, grad_out),
        lambda: F.conv2d_grad_weight(x, weight.shape, grad_out),
    ):
        np.testing.assert_array_equal(op(), op())


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
def test_blocked_conv_nan_inf_like_the_reference(dtype, threads, blocked_calls):
    """NaN and inf in x, grad_out and the weight land where the reference puts them; an
    infinite weight sends the input gradient to the scatter form (the forward form's
    padding zeros would make NaN where the reference has no term)."""
    block = conv_blocked.channel_block(dtype)
    rng = make_rng(9)
    x = randn(rng, (2, block, 6, 7), dtype)
    weight = randn(rng, (block, block, 3, 3), dtype)
    bias = randn(rng, block, dtype)
    grad_out = randn(rng, (2, block, 6, 7), dtype)
    x[0, 3, 1, 1], x[1, 0, 5, 6] = np.nan, np.inf
    grad_out[1, 2, 0, 0] = -np.inf
    weight[4, 1, 0, 2] = np.inf
    check_conv(x, weight, bias, grad_out, {"padding": 1})
    assert blocked_calls == {"forward": 1, "grad_input": 1, "grad_weight": 1}
    assert np.isnan(F.conv2d(np.zeros_like(x), weight, padding=1)).any()


@pytest.mark.parametrize(
    ("preset", "forward_form"), [("mnist-conv2", False), ("cifar-64x64", True)]
)
def test_input_gradient_form_follows_the_work(preset, forward_form, threads, blocked_calls):
    """The forward form where its padding zeros add little work (cifar-64x64: 0.98x the
    scatter form's multiply-adds), the scatter form where they add more (mnist-conv2:
    1.18x); both match the reference."""
    (case,) = [c for c in _presets.cases(preset) if c.direction == "grad_input"]
    s = case.shape
    w_shape, x_shape = (s.k, s.c, s.kh, s.kw), (2, s.c, s.h, s.w)
    g = _checks._conv_geometry("conv2d", x_shape, w_shape, 1, s.padding, 1)
    assert conv_blocked.forward_form_pays(g, np.float32) == forward_form
    dtype = np.dtype(np.float32)
    rng = make_rng(11)
    weight = randn(rng, w_shape, dtype, scale=0.2)
    grad_out = randn(rng, (2, s.k, g.oh, g.ow), dtype)
    got = F.conv2d_grad_input(x_shape, weight, grad_out, padding=s.padding)
    want = R.conv2d_grad_input(x_shape, weight, grad_out, padding=s.padding)
    assert_close(got, want, dtype, atol=atol_for(dtype, s.k * s.kh * s.kw))
    assert blocked_calls["forward" if forward_form else "grad_input"] == 1


@pytest.mark.parametrize("chunk_bytes", [1, 1300])
@pytest.mark.parametrize("dtype", DTYPES)
def test_blocked_forward_in_chunks_of_taps(chunk_bytes, dtype, monkeypatch, threads, blocked_calls):
    """The forward's taps in chunks of one, and of a few that divide neither the taps nor
    the input gradient's per-row tap ranges (forward form): the bits of one pass over all
    taps (the partial sums wait exactly in the band), with a one-pixel last block (25
    pixels), and the reference's result."""
    block = conv_blocked.channel_block(dtype, FORWARD_BYTES)  # so the forward form pays
    rng = make_rng(12)
    x = randn(rng, (2, block, 5, 5), dtype)
    weight = randn(rng, (block, block, 3, 3), dtype, scale=0.2)
    bias = randn(rng, block, dtype)
    grad_out = randn(rng, (2, block, 5, 5), dtype)

    def both():
        return F.conv2d(x, weight, bias, padding=1), F.conv2d_grad_input(
            x.shape, weight, grad_out, padding=1
        )

    taps = 9 * block
    monkeypatch.setattr(conv_blocked, "CHUNK_BYTES", taps * block * dtype.itemsize)
    once = both()  # one chunk
    monkeypatch.setattr(conv_blocked, "CHUNK_BYTES", chunk_bytes)
    chunk = max(1, chunk_bytes // (block * dtype.itemsize))
    assert chunk == 1 or (taps % chunk and 3 * block % chunk)  # cuts a kernel row's taps
    chunked = both()
    for got, want in zip(chunked, once, strict=True):
        np.testing.assert_array_equal(got, want)
    assert blocked_calls["forward"] == 4  # the input gradient ran in forward form
    check_conv(x, weight, bias, grad_out, {"padding": 1})


@pytest.mark.parametrize("pairs", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_form_with_and_without_pairs(pairs, dtype, monkeypatch, threads, blocked_calls):
    """The scatter-form input gradient with its whole blocks in pairs (where AVX-512 has
    the registers) and one block at a time: 35 pixels, two pairs and a short last block,
    at stride 1 and 2; the reference's result either way."""
    monkeypatch.setattr(conv_blocked, "PAIRS", pairs)
    block = conv_blocked.channel_block(dtype)
    rng = make_rng(13)
    weight = randn(rng, (block, block, 3, 3), dtype, scale=0.2)
    for stride, x_shape in ((1, (2, block, 7, 9)), (2, (2, block, 11, 15))):
        grad_out = randn(rng, (2, block, 5, 7), dtype)
        got = F.conv2d_grad_input(x_shape, weight, grad_out, stride=stride)
        want = R.conv2d_grad_input(x_shape, weight, grad_out, stride=stride)
        assert_close(got, want, dtype, atol=atol_for(dtype, 9 * block))
    assert blocked_calls["grad_input"] == 2


def test_blocked_grad_weight_odd_tap_count(threads, blocked_calls):
    """C*KH*KW not a multiple of the taps per block: the repeated last tap changes nothing."""
    dtype = np.dtype(np.float32)
    block = conv_blocked.channel_block(dtype)
    rng = make_rng(10)
    x = randn(rng, (3, 1, 9, 9), dtype)
    grad_out = randn(rng, (3, block, 5, 5), dtype)
    got = F.conv2d_grad_weight(x, (block, 1, 5, 5), grad_out)  # 25 taps
    want = R.conv2d_grad_weight(x, (block, 1, 5, 5), grad_out)
    assert blocked_calls["grad_weight"] == 1
    assert_close(got, want, dtype, atol=atol_for(dtype, 75))


# --- wrapped rows ----------------------------------------------------------------------

ROWS_CASES = [
    pytest.param((2, 16, 12, 32), (32, 16, 3, 3), {"padding": 1}, id="cifar-like"),
    pytest.param((1, 3, 7, 9), (5, 3, 3, 3), {}, id="batch1-odd-sizes"),
    pytest.param((2, 4, 9, 30), (1, 4, 3, 3), {"padding": (2, 1)}, id="one-channel-out"),
    # One input channel: the input gradient's forward has one output channel.
    pytest.param((2, 1, 15, 28), (6, 1, 5, 5), {"padding": 2}, id="one-channel-in"),
    pytest.param((3, 2, 11, 40), (13, 2, 3, 5), {"padding": (1, 2)}, id="non-square-kernel"),
    pytest.param((2, 5, 20, 33), (7, 5, 3, 3), {"dilation": 2, "padding": 2}, id="dilation2"),
    pytest.param((2, 6, 3, 41), (6, 6, 3, 3), {}, id="one-output-row"),
    pytest.param((2, 3, 6, 6), (6, 3, 3, 3), {"padding": 3}, id="padding-gt-reach"),
    pytest.param((2, 20, 5, 8), (3, 20, 1, 1), {}, id="kernel-1x1"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), ROWS_CASES)
def test_rows_conv_matches_reference(x_shape, w_shape, kwargs, dtype, threads, rows_calls):
    rng = make_rng(13)
    x = randn(rng, x_shape, dtype)
    weight = randn(rng, w_shape, dtype, scale=0.2)
    bias = randn(rng, w_shape[0], dtype)
    grad_out = randn(rng, R.conv2d(x, weight, **kwargs).shape, dtype)
    check_conv(x, weight, bias, grad_out, kwargs)
    k, _, kh, kw = weight.shape
    padding = np.broadcast_to(kwargs.get("padding", 0), 2)
    reach = np.broadcast_to(kwargs.get("dilation", 1), 2) * (np.array([kh, kw]) - 1)
    # The input gradient is a wrapped-rows forward where it can be.
    input_grad = (padding <= reach).all() and k * kh * kw > conv_kernels.DIRECT_MAX_TAPS
    assert rows_calls == {"forward": 1 + input_grad, "grad_weight": 1}


@pytest.mark.parametrize(("c", "size"), [(5, 3), (1, 5)])
@pytest.mark.parametrize("band_bytes", [1, 3000, 6000])
def test_rows_conv_in_bands(band_bytes, c, size, monkeypatch, threads, rows_calls):
    """Output rows in bands of one row, and of a few rows that do not divide OH: the
    blocks that run past a band's end are dropped and computed again in the next (one
    input channel: the input gradient's blocks of one channel)."""
    monkeypatch.setattr(conv_rows, "BAND_BYTES", band_bytes)
    rng = make_rng(14)
    x = randn(rng, (2, c, 13, 17), np.float64)
    weight = randn(rng, (6, c, size, size), np.float64)
    grad_out = randn(rng, (2, 6, 16 - size, 20 - size), np.float64)
    check_conv(x, weight, randn(rng, 6, np.float64), grad_out, {"padding": 1})
    assert rows_calls == {"forward": 2, "grad_weight": 1}


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_conv_nan_inf_like_the_reference(dtype, threads, rows_calls):
    """NaN and inf at row ends and starts stay in the output pixels that meet them: the
    dropped pixels past each row's end read them, the kept ones do not. A non-finite x
    sends the weight gradient elsewhere (its dropped pixels multiply x by zero), an
    infinite weight the input gradient (its padding zeros meet every weight)."""
    rng = make_rng(15)
    x = randn(rng, (2, 3, 6, 20), dtype)
    weight = randn(rng, (5, 3, 3, 3), dtype)
    bias = randn(rng, 5, dtype)
    grad_out = randn(rng, (2, 5, 6, 20), dtype)
    grad_out[1, 2, 0, 19], grad_out[0, 4, 4, 0] = -np.inf, np.nan
    check_conv(x, weight, bias, grad_out, {"padding": 1})
    assert rows_calls == {"forward": 2, "grad_weight": 1}
    x[0, 1, 2, 0], x[0, 2, 3, 19], x[1, 0, 5, 19] = np.nan, np.inf, -np.inf
    check_conv(x, weight, bias, grad_out, {"padding": 1})
    assert rows_calls == {"forward": 4, "grad_weight": 1}
    weight[4, 1, 0, 2] = np.inf
    check_conv(x, weight, bias, grad_out, {"padding": 1})
    assert rows_calls == {"forward": 5, "grad_weight": 1}


def test_rows_grad_weight_needs_room_for_its_partial_sums(monkeypatch, threads, rows_calls):
    monkeypatch.setattr(conv_rows, "PARTIAL_BYTES", 0)
    rng = make_rng(18)
    x = randn(rng, (2, 3, 6, 20), np.float32)
    F.conv2d_grad_weight(x, (5, 3, 3, 3), randn(rng, (2, 5, 4, 18), np.float32))
    assert rows_calls["grad_weight"] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_conv_bitwise_repeatable(dtype, threads, rows_calls):
    rng = make_rng(16)
    x = randn(rng, (5, 6, 9, 30), dtype)
    weight = randn(rng, (7, 6, 3, 3), dtype)
    grad_out = randn(rng, (5, 7, 9, 30), dtype)
    for op in (
        lambda: F.conv2d(x, weight, padding=1),
        lambda: F.conv2d_grad_input(x.shape, weight, grad_out, padding=1),
        lambda: F.conv2d_grad_weight(x, weight.shape, grad_out, padding=1),
    ):
        np.testing.assert_array_equal(op(), op())
    assert rows_calls == {"forward": 4, "grad_weight": 2}


def test_conv_dispatch_by_rows_and_channels(monkeypatch, threads):
    """Unforced: channels in full-width blocks take the blocked kernels; others the
    wrapped rows (forward and input gradient) where rows are wide, else the blocked kernels
    at narrower widths; the weight gradient takes the blocked kernel wherever it fits.
    (Blocked "forward" counts the input gradient in either form.)"""
    dtype = np.dtype(np.float32)
    block = conv_blocked.channel_block(dtype)
    rows = _count_calls(monkeypatch, conv_rows)
    blocked = _count_calls(monkeypatch, conv_blocked, ("forward", "grad_input", "grad_weight"))
    rng = make_rng(17)

    def run(c, k, width):
        x = randn(rng, (2, c, 5, width), dtype)
        weight = randn(rng, (k, c, 3, 3), dtype)
        grad_out = randn(rng, (2, k, 5, width), dtype)
        F.conv2d(x, weight, padding=1)
        F.conv2d_grad_input(x.shape, weight, grad_out, padding=1)
        F.conv2d_grad_weight(x, weight.shape, grad_out, padding=1)
        forms = blocked["forward"] + blocked["grad_input"]
        counts = (dict(rows), {"forward": forms, "grad_weight": blocked["grad_weight"]})
        for calls in (rows, blocked):
            calls.update(dict.fromkeys(calls, 0))
        return counts

    both = {"forward": 2, "grad_weight": 1}
    none = {"forward": 0, "grad_weight": 0}
    # The forward on the blocked kernel, the input gradient (C = 16, narrow vectors) on rows.
    split = ({"forward": 1, "grad_weight": 0}, {"forward": 1, "grad_weight": 1})
    assert run(block // 2, block, 32) == split  # cifar-16x32
    assert run(block // 2, block, 14) == split  # rows of 16: 8 * 2 <= 16
    assert run(block // 2, block, 13) == (none, both)  # rows of 15: 8 * 2 > 15
    assert run(block // 2, block - 1, 32) == (both, none)  # channels the blocked kernel lacks
    assert run(2 * block, 2 * block, 32) == (none, both)  # cifar-64x64
    assert run(block, block, 32) == (none, both)  # one full block


# --- few taps --------------------------------------------------------------------------


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs"),
    [
        pytest.param((3, 1, 28, 28), (32, 1, 3, 3), {}, id="mnist-conv1"),
        pytest.param((2, 1, 7, 9), (5, 1, 3, 3), {"padding": 1}, id="channels-not-by-4"),
        pytest.param((2, 1, 14, 15), (7, 1, 3, 3), {}, id="block-pairs-channels-not-by-4"),
        pytest.param((1, 2, 5, 6), (6, 2, 2, 2), {"dilation": 2, "padding": 1}, id="dilation"),
        pytest.param((2, 1, 4, 4), (3, 1, 4, 4), {}, id="one-pixel"),
        pytest.param((2, 1, 40, 37), (4, 1, 3, 3), {"padding": (2, 0)}, id="long-pixel-tail"),
    ],
)
def test_few_taps_conv_matches_reference(x_shape, w_shape, kwargs, dtype, threads, few_taps_calls):
    rng = make_rng(12)
    x = randn(rng, x_shape, dtype)
    weight = randn(rng, w_shape, dtype)
    bias = randn(rng, w_shape[0], dtype)
    grad_out = randn(rng, R.conv2d(x, weight, **kwargs).shape, dtype)
    check_conv(x, weight, bias, grad_out, kwargs)
    assert few_taps_calls == {"forward": 1, "grad_input": 1, "grad_weight": 1}
    # NaN and inf in the input and in grad_out, an infinite weight meeting the padding.
    x[0, 0, 1, 2], x[-1, 0, -1, -1] = np.nan, -np.inf
    grad_out[0, -1, 0, 0] = np.inf
    weight[0, 0, 0, 0] = np.inf
    check_conv(x, weight, bias, grad_out, kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_few_taps_with_and_without_two_blocks(dtype, monkeypatch, threads, few_taps_calls):
    """The forward's pairs of blocks and the weight gradient's 8 x 3 blocks (AVX-512), and
    one block at a time (AVX2): the same bits either way, and the reference's result; 7
    channels (short last blocks) on 12 x 13 pixels (pairs, then a short block)."""
    rng = make_rng(14)
    x = randn(rng, (2, 1, 14, 15), dtype)
    weight = randn(rng, (7, 1, 3, 3), dtype)
    bias = randn(rng, 7, dtype)
    grad_out = randn(rng, (2, 7, 12, 13), dtype)
    results = []
    for two in (True, False):
        monkeypatch.setattr(conv_few_taps, "TWO_BLOCKS", two)
        y = F.conv2d(x, weight, bias)
        results.append((y, F.conv2d_grad_weight(x, weight.shape, grad_out)))
    for got, want in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(got, want)
    assert_close(results[0][0], R.conv2d(x, weight, bias), dtype, atol=atol_for(dtype, 9))
    want = R.conv2d_grad_weight(x, weight.shape, grad_out)
    assert_close(results[0][1], want, dtype, atol=atol_for(dtype, 2 * 12 * 13))
    assert few_taps_calls["forward"] == few_taps_calls["grad_weight"] == 2


@SPECIAL_VALUES
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs"),
    [
        pytest.param((3, 1, 28, 28), (32, 1, 3, 3), {"stride": 2}, id="stride2"),
        pytest.param((2, 1, 9, 13), (5, 1, 3, 2), {"stride": (3, 2), "padding": 1}, id="pairs"),
        pytest.param((1, 1, 11, 10), (6, 1, 3, 3), {"stride": 2, "dilation": 2}, id="dilation"),
        pytest.param((2, 1, 5, 5), (3, 1, 4, 4), {"stride": 2, "padding": 2}, id="padding-gt-half"),
        pytest.param((2, 16, 6, 7), (9, 16, 1, 1), {}, id="kernel-1x1"),
        pytest.param((2, 1, 2, 40), (4, 1, 2, 3), {"padding": (0, 1)}, id="one-output-row"),
    ],
)
def test_few_taps_grad_input_at_any_stride(
    x_shape, w_shape, kwargs, dtype, threads, few_taps_calls
):
    """The input gradient of few taps takes every stride (its products meet no padding;
    the column stride is added pixel by pixel): against the reference, and with NaN and
    inf in grad_out and the weight in the same places as the reference's."""
    rng = make_rng(21)
    weight = randn(rng, w_shape, dtype)
    grad_out = randn(rng, R.conv2d(randn(rng, x_shape, dtype), weight, **kwargs).shape, dtype)
    for _ in range(2):
        got = F.conv2d_grad_input(x_shape, weight, grad_out, **kwargs)
        want = R.conv2d_grad_input(x_shape, weight, grad_out, **kwargs)
        assert_close(got, want, dtype, atol=atol_for(dtype, weight.size))
        grad_out[0, -1, 0, 0], grad_out[-1, 0, -1, -1] = np.inf, np.nan
        weight[-1, 0, 0, -1] = -np.inf
    assert few_taps_calls["grad_input"] == 2


# --- the intrinsics --------------------------------------------------------------------


@jit()
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
    size = 4 * conv_blocked.channel_block(dtype, nbytes)
    x, y = randn(rng, size, dtype), randn(rng, size, dtype)
    x[3], y[5] = np.inf, np.nan
    a = np.array([-0.5], dtype)  # a power of two: a * x is exact, so fma = a*x + y
    out = np.full(size, -1, dtype)
    _axpy_blocks(a, x, y, out, token(nbytes))
    want = a[0] * x + y
    np.testing.assert_array_equal(out, want)


@jit()
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


@jit()
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


@jit()
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
        pool_kernels._max_pool_2x2(
            x.reshape(6, 5, w), y.reshape(6, oh, ow), idx.reshape(6, oh, ow), 2, token(nbytes)
        )
        np.testing.assert_array_equal(y, want_y, err_msg=f"W={w}")
        np.testing.assert_array_equal(idx, want_i, err_msg=f"W={w}")


@jit()
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


@pytest.mark.parametrize("nbytes", [pytest.param(n, id=f"{n}-byte") for n in WIDTHS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_vcopy_copies_exactly_the_run(dtype, nbytes):
    """Runs shorter than a vector, of one, between one and two, and of several vectors,
    at odd offsets: the run is copied and nothing around it is touched."""
    lane = nbytes // np.dtype(dtype).itemsize
    src = randn(make_rng(19), 8 * lane, dtype)
    for n in (0, 1, lane - 1, lane, lane + 1, 2 * lane + 3, 5 * lane):
        dst = np.full(8 * lane, -7, dtype)
        vcopy(src, 3, dst, 5, n, token(nbytes))
        want = np.full(8 * lane, -7, dtype)
        want[5 : 5 + n] = src[3 : 3 + n]
        np.testing.assert_array_equal(dst, want)


@jit()
def _add_run(src, s, dst, d, n, vec, scalar_tail):
    vadd_run(src, s, dst, d, n, vec, scalar_tail)


@jit()
def _add_run_default(src, s, dst, d, n, vec):
    vadd_run(src, s, dst, d, n, vec)


@jit()
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


@jit()
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


@jit()
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
        total, product = centred_sums(a, 0.25, b, -0.5, 3, n, vec)
        assert total == _centred_sum_in_order(a[3 : 3 + n], 0.25, lane)
        want = np.sum((a[3 : 3 + n] - 0.25).astype(np.float64) * (b[3 : 3 + n] + 0.5))
        assert abs(product - want) <= 1e-5 * max(1.0, np.abs(a).sum() * np.abs(b).sum())
        total, squares = centred_sums(a, 0.25, None, 7.0, 3, n, vec)  # b = a, mb = ma
        assert total == _centred_sum_in_order(a[3 : 3 + n], 0.25, lane)
        want = np.sum((a[3 : 3 + n] - 0.25).astype(np.float64) ** 2)
        assert abs(squares - want) <= 1e-5 * max(1.0, want)
        ints_a = rng.integers(-8, 9, n + 5).astype(dtype)
        ints_b = rng.integers(-8, 9, n + 5).astype(dtype)
        total, product = centred_sums(ints_a, 1, ints_b, 2, 3, n, vec)
        assert total == np.sum(ints_a[3 : 3 + n] - 1)
        assert product == np.sum((ints_a[3 : 3 + n] - 1) * (ints_b[3 : 3 + n] - 2))
        assert centred_sums(ints_a, 1, None, 0, 3, n, vec)[1] == np.sum(
            (ints_a[3 : 3 + n] - 1) ** 2
        )


def test_simd_rejects_other_types():
    @jit()
    def load(a, vec):
        return vload(a, 0, vec)

    with pytest.raises(Exception, match="float array"):
        load(np.zeros(64, np.int64), token(32))
    with pytest.raises(Exception, match="width must come from token"):
        load(np.zeros(64), 32)
    with pytest.raises(ValueError, match="nbytes must be one of"):
        token(8)
