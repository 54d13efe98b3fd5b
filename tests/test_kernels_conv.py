"""The convolution plan and every conv kernel, each run through the plan's own switch.

``fastcnn._kernels.plan.choose`` is asserted for named shapes (the presets and the layers
of ``fastcnn train``'s nets). Then every kernel that can run a geometry
(``plan.supports``) runs it through ``fastcnn._kernels.conv.forward / grad_input /
grad_weight(..., kernel=...)``, the same switch the plan drives, and is compared with the
reference: channel counts below, at and above the direct kernels' block of two vectors,
odd sizes, stride, padding, dilation, batch 1, both dtypes, one thread and all threads.
Tolerances as in ``test_functional_conv.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import DTYPES, SPECIAL_VALUES, assert_close, make_rng, randn
from test_functional_conv import atol_for

import fastcnn
from fastcnn import _checks
from fastcnn import reference as R
from fastcnn._kernels import conv, plan
from fastcnn._kernels.geometry import channel_block, lanes


def _geometry(x_shape, w_shape, stride=1, padding=0, dilation=1):
    x = np.empty(x_shape, np.float32)
    w = np.empty(w_shape, np.float32)
    return _checks.conv2d_args(x, w, None, stride, padding, dilation)


# --- the plan --------------------------------------------------------------------------

NAMED = [
    # (name, x shape, weight shape, padding, stride, kernels of forward, grad_input, grad_weight)
    ("mnist-conv1", (64, 1, 28, 28), (32, 1, 3, 3), 0, 1, ("few_taps",) * 3),
    ("mnist-conv2", (64, 32, 13, 13), (64, 32, 3, 3), 0, 1, ("direct",) * 3),
    ("cifar-16x32", (64, 16, 32, 32), (32, 16, 3, 3), 1, 1, ("direct",) * 3),
    ("cifar-64x64", (32, 64, 32, 32), (64, 64, 3, 3), 1, 1, ("direct",) * 3),
    ("lenet-mnist conv1", (64, 1, 28, 28), (32, 1, 3, 3), 1, 1, ("few_taps",) * 3),
    ("lenet-digits conv2", (32, 16, 4, 4), (32, 16, 3, 3), 1, 1, ("direct",) * 3),
    ("cifar rgb 3x3", (8, 3, 32, 32), (16, 3, 3, 3), 1, 1, ("direct",) * 3),
    ("rgb 2x2 few taps", (8, 3, 32, 32), (16, 3, 2, 2), 0, 1, ("few_taps",) * 3),
    (
        "stride 2, few taps",
        (8, 1, 28, 28),
        (16, 1, 3, 3),
        1,
        2,
        ("direct", "few_taps", "direct"),
    ),
    (
        "resnet downsample 1x1",
        (8, 16, 32, 32),
        (32, 16, 1, 1),
        0,
        2,
        ("direct", "few_taps", "direct"),
    ),
    ("resnet 1x1, 64 channels", (8, 64, 8, 8), (64, 64, 1, 1), 0, 1, ("direct",) * 3),
]


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "padding", "stride", "kernels"),
    [pytest.param(*row[1:], id=row[0]) for row in NAMED],
)
def test_plan_for_named_shapes(x_shape, w_shape, padding, stride, kernels):
    g = _geometry(x_shape, w_shape, stride, padding)
    assert tuple(plan.choose(op, g).kernel for op in plan.OPS) == kernels


def test_every_op_has_a_rule_that_always_holds_last():
    """The table ends each op with a rule for every geometry: no problem is left without a
    kernel, and every kernel named is one that exists."""
    for op in plan.OPS:
        rules = [rule for rule in plan.RULES if rule.op == op]
        assert rules[-1].test(_geometry((1, 1, 1, 1), (1, 1, 1, 1)))
        assert rules[-1].kernel == "direct"
    assert {rule.kernel for rule in plan.RULES} == set(plan.KERNELS)


def test_plan_rejects_unknown_ops_and_kernels():
    g = _geometry((1, 1, 3, 3), (1, 1, 3, 3))
    with pytest.raises(ValueError, match="no rule for op 'backward'"):
        plan.choose("backward", g)
    with pytest.raises(ValueError, match="unknown kernel 'gemm'"):
        plan.supports("forward", "gemm", g)


# --- every kernel against the reference ------------------------------------------------


def _channel_cases():
    """Geometries whose channel counts straddle the direct kernels' block on this CPU."""
    block = channel_block(np.float32)  # float64's block is half: both sides are covered
    cases = []
    # C of one float32 vector: the input gradient's blocks of two taps in float32, not in
    # float64 (whose vectors hold half as many); C = 3 takes them in both.
    one_vector = lanes(np.float32)
    pairs = ((block, block), (block - 3, block + 5), (3, 2 * block), (2 * block, 1))
    for c, k in (*pairs, (one_vector, 5)):
        cases.append(pytest.param(dict(x=(2, c, 7, 9), w=(k, c, 3, 3)), id=f"c{c}-k{k}"))
    cases += [
        pytest.param(dict(x=(1, 1, 28, 28), w=(32, 1, 3, 3)), id="mnist-conv1-batch1"),
        pytest.param(dict(x=(3, 5, 11, 9), w=(7, 5, 3, 2), stride=2, padding=1), id="stride2"),
        pytest.param(dict(x=(2, 3, 12, 10), w=(5, 3, 3, 3), padding=2, dilation=2), id="dil2"),
        pytest.param(dict(x=(2, 6, 7, 7), w=(4, 6, 1, 1)), id="pointwise"),
        pytest.param(dict(x=(2, 4, 6, 13), w=(9, 4, 2, 4), padding=(1, 2)), id="non-square"),
        pytest.param(dict(x=(1, 20, 9, 9), w=(10, 20, 3, 3), stride=2, padding=1), id="batch1"),
        pytest.param(dict(x=(2, 1, 5, 5), w=(1, 1, 5, 5)), id="kernel-equals-input"),
    ]
    return cases


def _run(op, kernel, x, w, go, g):
    out = {
        "forward": np.empty(go.shape, x.dtype),
        "grad_input": np.empty(x.shape, x.dtype),
        "grad_weight": np.empty(w.shape, x.dtype),
    }[op]
    if op == "forward":
        conv.forward(x, w, None, g, out, kernel)
    elif op == "grad_input":
        conv.grad_input(w, go, g, out, kernel)
    else:
        conv.grad_weight(x, go, g, out, kernel)
    return out


def _expected(op, x, w, go, kwargs):
    if op == "forward":
        return R.conv2d(x, w, None, **kwargs)
    if op == "grad_input":
        return R.conv2d_grad_input(x.shape, w, go, **kwargs)
    return R.conv2d_grad_weight(x, w.shape, go, **kwargs)


def _terms(op, x, w, go):
    n, c = x.shape[:2]
    k, _, kh, kw = w.shape
    return {"forward": c * kh * kw, "grad_input": k * kh * kw, "grad_weight": n * go[0, 0].size}[op]


def _kwargs(case):
    return {key: case[key] for key in ("stride", "padding", "dilation") if key in case}


def _kernel_cases():
    """Every (case, op, kernel) where the kernel can run the op (``plan.supports``)."""
    out = []
    for param in _channel_cases():
        case = param.values[0]
        g = _geometry(case["x"], case["w"], **_kwargs(case))
        for op in plan.OPS:
            for kernel in plan.KERNELS:
                if plan.supports(op, kernel, g):
                    out.append(pytest.param(case, op, kernel, id=f"{param.id}-{op}-{kernel}"))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("case", "op", "kernel"), _kernel_cases())
def test_every_kernel_matches_reference(case, op, kernel, dtype, threads):
    kwargs = _kwargs(case)
    g = _geometry(case["x"], case["w"], **kwargs)
    rng = make_rng(3)
    x, w = randn(rng, case["x"], dtype), randn(rng, case["w"], dtype)
    go = randn(rng, (g.n, g.k, g.oh, g.ow), dtype)
    got = _run(op, kernel, x, w, go, g)
    want = _expected(op, x, w, go, kwargs)
    assert_close(got, want, dtype, atol=atol_for(dtype, _terms(op, x, w, go)))


@SPECIAL_VALUES
@pytest.mark.parametrize("kernel", plan.KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_kernel_puts_nan_and_inf_where_the_reference_does(kernel, dtype, threads):
    """NaN and inf in the input, the weight and grad_out, near the borders and inside."""
    rng = make_rng(5)
    c = 3 if kernel == "direct" else 1
    x, w = randn(rng, (2, c, 8, 9), dtype), randn(rng, (5, c, 3, 3), dtype)
    kwargs = {"padding": 1}
    g = _geometry(x.shape, w.shape, **kwargs)
    go = randn(rng, (g.n, g.k, g.oh, g.ow), dtype)
    x[0, 0, 0, 0], x[1, c - 1, 4, 5] = np.inf, np.nan
    w[2, 0, 0, 2], w[4, c - 1, 1, 1] = -np.inf, np.nan
    go[0, 1, 7, 8], go[1, 3, 2, 2] = np.nan, np.inf
    for op in plan.OPS:
        got = _run(op, kernel, x, w, go, g)
        want = _expected(op, x, w, go, kwargs)
        assert_close(got, want, dtype, atol=atol_for(dtype, _terms(op, x, w, go)))


@pytest.mark.parametrize("kernel", plan.KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_kernel_is_bitwise_repeatable(kernel, dtype, threads):
    rng = make_rng(7)
    x, w = randn(rng, (9, 3, 10, 10), dtype), randn(rng, (20, 3, 3, 3), dtype)
    g = _geometry(x.shape, w.shape, padding=1)
    go = randn(rng, (g.n, g.k, g.oh, g.ow), dtype)
    for op in plan.OPS:
        first = _run(op, kernel, x, w, go, g)
        np.testing.assert_array_equal(_run(op, kernel, x, w, go, g), first)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_split_over_threads_agree_to_round_off(dtype):
    """The same op on one thread and on all: the forward and the input gradient bitwise
    (each image is one part's), the weight gradient to round-off (parts summed in order)."""
    rng = make_rng(9)
    x, w = randn(rng, (64, 16, 13, 13), dtype), randn(rng, (40, 16, 3, 3), dtype)
    g = _geometry(x.shape, w.shape)
    go = randn(rng, (g.n, g.k, g.oh, g.ow), dtype)
    before = fastcnn.get_num_threads()
    try:
        fastcnn.set_num_threads(1)
        one = {op: _run(op, "direct", x, w, go, g) for op in plan.OPS}
        fastcnn.set_num_threads(fastcnn._threads.MAX_THREADS)
        many = {op: _run(op, "direct", x, w, go, g) for op in plan.OPS}
    finally:
        fastcnn.set_num_threads(before)
    np.testing.assert_array_equal(many["forward"], one["forward"])
    np.testing.assert_array_equal(many["grad_input"], one["grad_input"])
    assert_close(many["grad_weight"], one["grad_weight"], dtype, atol=atol_for(dtype, 64 * 121))
