"""``fastcnn.reference`` against PyTorch (``torch.nn.functional``, ``torch.nn.grad`` and
autograd) on the shared case table, in float32 and float64.

Tolerances are those of ``cases.TOL`` (float32 rtol 1e-4, float64 rtol 1e-10, atol scaled
by the largest magnitude). Max-pool indices must be equal, not close. Skipped where torch
is not installed.
"""

import numpy as np
import pytest
from cases import (
    BCE_SHAPES,
    BN_SHAPES,
    CE_CASES,
    CONV_CASES,
    DTYPES,
    ELEMENTWISE_SHAPES,
    LINEAR_CASES,
    POOL_CASES,
    SOFTMAX_CASES,
    assert_close,
    bce_inputs,
    ce_inputs,
    conv_inputs,
    conv_kwargs,
    linear_inputs,
    make_rng,
    pool_input,
    pool_kwargs,
    randn,
)

from fastcnn import reference as ref

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a, grad=False):
    """A torch tensor sharing nothing with ``a`` (so in-place torch updates stay apart)."""
    return torch.tensor(a, requires_grad=grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_and_gradients_match_torch(case, dtype):
    x, weight, bias, g = conv_inputs(case, dtype, make_rng(20))
    kw = conv_kwargs(case)
    expected = F.conv2d(_t(x), _t(weight), None if bias is None else _t(bias), **kw)
    assert_close(ref.conv2d(x, weight, bias, **kw), expected.numpy(), dtype)

    expected = torch.nn.grad.conv2d_input(x.shape, _t(weight), _t(g), **kw)
    assert_close(ref.conv2d_grad_input(x.shape, weight, g, **kw), expected.numpy(), dtype)
    expected = torch.nn.grad.conv2d_weight(_t(x), weight.shape, _t(g), **kw)
    assert_close(ref.conv2d_grad_weight(x, weight.shape, g, **kw), expected.numpy(), dtype)

    b = _t(np.zeros(weight.shape[0], dtype), grad=True)
    F.conv2d(_t(x), _t(weight), b, **kw).backward(_t(g))
    assert_close(ref.conv2d_grad_bias(g), b.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_values_indices_and_backward_match_torch(case, dtype):
    rng = make_rng(21)
    x = pool_input(case, dtype, rng)
    y, indices = ref.max_pool2d(x, **pool_kwargs(case))
    xt = _t(x, grad=True)
    yt, it = F.max_pool2d(xt, **pool_kwargs(case), return_indices=True)
    assert_close(y, yt.detach().numpy(), dtype)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, it.numpy())

    g = randn(rng, y.shape, dtype)
    yt.backward(_t(g))
    assert_close(ref.max_pool2d_backward(g, indices, x.shape), xt.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_nan_and_inf_match_torch(dtype):
    x = pool_input(POOL_CASES[2].values[0], dtype, make_rng(22))  # overlapping 3x3 windows
    x[0, 0, 1, 1] = x[0, 0, 2, 3] = x[1, 1, 4, 4] = np.nan
    x[0, 1, 2, 2] = np.inf
    x[1, 0, :, :3] = -np.inf
    y, indices = ref.max_pool2d(x, 3, stride=1)
    yt, it = F.max_pool2d(_t(x), 3, stride=1, return_indices=True)
    assert_close(y, yt.numpy(), dtype)
    np.testing.assert_array_equal(indices, it.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm2d_training_matches_torch(shape, affine, dtype):
    rng = make_rng(23)
    c = shape[1]
    x = randn(rng, shape, dtype, scale=2.0) + 1.0
    weight = randn(rng, c, dtype) if affine else None
    bias = randn(rng, c, dtype) if affine else None
    running_mean, running_var = randn(rng, c, dtype), rng.uniform(0.5, 2, c).astype(dtype)
    rm_t, rv_t = _t(running_mean), _t(running_var)

    y, mean, invstd = ref.batch_norm2d(
        x, weight, bias, running_mean, running_var, training=True, momentum=0.2, eps=1e-4
    )
    yt, mean_t, invstd_t = torch.native_batch_norm(
        _t(x),
        None if weight is None else _t(weight),
        None if bias is None else _t(bias),
        rm_t,
        rv_t,
        True,
        0.2,
        1e-4,
    )
    assert_close(y, yt.numpy(), dtype)
    assert_close(mean, mean_t.numpy(), dtype)
    assert_close(invstd, invstd_t.numpy(), dtype)
    assert_close(running_mean, rm_t.numpy(), dtype)
    assert_close(running_var, rv_t.numpy(), dtype)

    # Backward through torch's autograd of the functional op.
    g = randn(rng, shape, dtype)
    xt = _t(x, grad=True)
    wt = _t(np.ones(c, dtype) if weight is None else weight, grad=True)
    bt = _t(np.zeros(c, dtype) if bias is None else bias, grad=True)
    F.batch_norm(xt, None, None, wt, bt, training=True, eps=1e-4).backward(_t(g))
    grad_x, grad_w, grad_b = ref.batch_norm2d_backward(g, x, weight, mean, invstd)
    assert_close(grad_x, xt.grad.numpy(), dtype)
    assert_close(grad_w, wt.grad.numpy(), dtype)
    assert_close(grad_b, bt.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm2d_eval_matches_torch(shape, dtype):
    rng = make_rng(24)
    c = shape[1]
    x = randn(rng, shape, dtype)
    weight, bias = randn(rng, c, dtype), randn(rng, c, dtype)
    running_mean, running_var = randn(rng, c, dtype), rng.uniform(0.5, 2, c).astype(dtype)
    before = running_mean.copy(), running_var.copy()
    y, mean, invstd = ref.batch_norm2d(
        x, weight, bias, running_mean, running_var, training=False, eps=1e-3
    )
    expected = F.batch_norm(
        _t(x), _t(running_mean), _t(running_var), _t(weight), _t(bias), training=False, eps=1e-3
    )
    assert_close(y, expected.numpy(), dtype)
    assert_close(mean, before[0], dtype)
    assert_close(invstd, 1 / np.sqrt(before[1].astype(np.float64) + 1e-3), dtype)
    np.testing.assert_array_equal(running_mean, before[0])
    np.testing.assert_array_equal(running_var, before[1])


SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -50.0, 50.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES)
def test_relu_and_sigmoid_match_torch(shape, dtype):
    rng = make_rng(25)
    x = randn(rng, shape, dtype, scale=3.0)
    x.reshape(-1)[: SPECIAL.size] = SPECIAL[: x.size]  # NaN, infinities, zeros when room
    g = randn(rng, shape, dtype)

    xt = _t(x, grad=True)
    yt = torch.relu(xt)
    yt.backward(_t(g))
    assert_close(ref.relu(x), yt.detach().numpy(), dtype)
    assert_close(ref.relu_backward(g, x), xt.grad.numpy(), dtype)

    xt = _t(x, grad=True)
    yt = torch.sigmoid(xt)
    yt.backward(_t(g))
    y = ref.sigmoid(x)
    assert_close(y, yt.detach().numpy(), dtype)
    assert_close(ref.sigmoid_backward(g, y), xt.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LINEAR_CASES)
def test_linear_matches_torch(case, dtype):
    x, weight, bias, _ = linear_inputs(case, dtype, make_rng(26))
    expected = F.linear(_t(x), _t(weight), None if bias is None else _t(bias))
    assert_close(ref.linear(x, weight, bias), expected.numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SOFTMAX_CASES)
def test_softmax_and_log_softmax_match_torch(case, dtype):
    x = randn(make_rng(27), case["shape"], dtype, scale=5.0)
    axis = case["axis"]
    assert_close(ref.softmax(x, axis), F.softmax(_t(x), dim=axis).numpy(), dtype)
    assert_close(ref.log_softmax(x, axis), F.log_softmax(_t(x), dim=axis).numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_special_values_match_torch(dtype):
    x = np.array(
        [[1e30, 1e30, -1e30], [np.inf, 0, 0], [-np.inf, 0, 1], [np.nan, 0, 0], [-np.inf] * 3],
        dtype=dtype,
    )
    assert_close(ref.softmax(x), F.softmax(_t(x), dim=1).numpy(), dtype)
    assert_close(ref.log_softmax(x), F.log_softmax(_t(x), dim=1).numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CE_CASES)
def test_cross_entropy_matches_torch(case, dtype):
    logits, targets = ce_inputs(case, dtype, make_rng(28))
    loss, grad = ref.cross_entropy(logits, targets)
    lt = _t(logits, grad=True)
    expected = F.cross_entropy(lt, torch.from_numpy(targets))
    expected.backward()
    assert_close(loss, expected.detach().numpy()[()], dtype)
    assert_close(grad, lt.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_huge_logits_match_torch(dtype):
    logits = np.array([[1e30, 0.0, -1e30], [3e38, 3e38, 0.0], [-1e4, 1e4, 0.0]], dtype=dtype)
    targets = np.array([1, 0, 1])
    loss, grad = ref.cross_entropy(logits, targets)
    lt = _t(logits, grad=True)
    expected = F.cross_entropy(lt, torch.from_numpy(targets))
    expected.backward()
    assert_close(loss, expected.detach().numpy()[()], dtype)
    assert_close(grad, lt.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BCE_SHAPES)
def test_binary_cross_entropy_matches_torch(shape, dtype):
    # Probabilities inside [eps, 1 - eps], where eps clipping and torch's log clamp agree.
    probs, targets = bce_inputs(shape, dtype, make_rng(29))
    loss, grad = ref.binary_cross_entropy(probs, targets)
    pt = _t(probs, grad=True)
    expected = F.binary_cross_entropy(pt, _t(targets))
    expected.backward()
    assert_close(loss, expected.detach().numpy()[()], dtype)
    assert_close(grad, pt.grad.numpy(), dtype)
