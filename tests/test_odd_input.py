"""Odd but valid input works, through ``fastcnn.functional`` and the layers.

- Memory layouts: views, strided, Fortran-ordered, reversed (negative strides) and
  read-only arrays give bitwise the result of the same values in a fresh C-contiguous
  array, leave the caller's arrays alone, and match the reference.
- A batch of one, and an unbatched sample through the layers.
- An empty batch: each op's choice (an empty result or a ValueError) is pinned here.
- Huge logits (1e30) stay finite in softmax, log-softmax, cross-entropy and sigmoid.
- NaN and inf propagate exactly as in the reference: NaN in the same places, the same
  infinities, through every op and through a whole network.

Tolerances are those of :data:`cases.TOL` (float32 rtol 1e-4, float64 rtol 1e-10).
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import DTYPES, assert_close

import fastcnn.functional as F
import fastcnn.nn as nn
import fastcnn.reference as R

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


# --- one valid call of every op ------------------------------------------------------
# builder(rng, dtype) -> (args, kwargs, inplace): ``inplace`` names the positions of the
# arguments the op updates in place (batch norm's running statistics).


def _randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _conv(rng, dt, op):
    x, w = _randn(rng, (2, 3, 7, 6), dt), _randn(rng, (4, 3, 3, 2), dt)
    kw = {"stride": (2, 1), "padding": 1, "dilation": (1, 2)}
    g = _randn(rng, R.conv2d(x, w, **kw).shape, dt)
    args = {
        "conv2d": (x, w, _randn(rng, 4, dt)),
        "conv2d_grad_input": (x.shape, w, g),
        "conv2d_grad_weight": (x, w.shape, g),
        "conv2d_grad_bias": (g,),
    }[op]
    return args, (kw if op != "conv2d_grad_bias" else {}), ()


def _pool(rng, dt, op):
    x = _randn(rng, (2, 3, 7, 8), dt)
    if op == "max_pool2d":
        return (x, 3, 2, 1), {}, ()
    y, idx = R.max_pool2d(x, 3, 2, 1)
    return (_randn(rng, y.shape, dt), idx, x.shape), {}, ()


def _bn(rng, dt, op):
    x, c = _randn(rng, (3, 4, 5, 2), dt), 4
    weight, bias = _randn(rng, c, dt), _randn(rng, c, dt)
    if op == "batch_norm2d":
        mean, var = _randn(rng, c, dt), rng.uniform(0.5, 2, c).astype(dt)
        return (x, weight, bias, mean, var), {"training": True, "momentum": 0.2}, (3, 4)
    if op == "batch_norm2d-eval":
        mean, var = _randn(rng, c, dt), rng.uniform(0.5, 2, c).astype(dt)
        return (x, weight, bias, mean, var), {"training": False}, ()
    _, mean, invstd = R.batch_norm2d(x, weight, bias, None, None)
    return (_randn(rng, x.shape, dt), x, weight, mean, invstd), {}, ()


def _elementwise(rng, dt, op):
    x, g = _randn(rng, (3, 4, 5), dt), _randn(rng, (3, 4, 5), dt)
    args = {
        "relu": (x,),
        "relu_backward": (g, x),
        "sigmoid": (x,),
        "sigmoid_backward": (g, R.sigmoid(x)),
        "softmax": (x, 1),
        "log_softmax": (x, 0),
        "linear": (x, _randn(rng, (6, 5), dt), _randn(rng, 6, dt)),
    }[op]
    return args, {}, ()


def _loss(rng, dt, op):
    if op == "cross_entropy":
        return (_randn(rng, (6, 5), dt), rng.integers(0, 5, 6)), {}, ()
    probs, targets = rng.uniform(0.01, 0.99, (4, 5)), rng.uniform(0, 1, (4, 5))
    return (probs.astype(dt), targets.astype(dt)), {"eps": 1e-6}, ()


def _op(name, builder, op=None):
    return pytest.param(name, lambda rng, dt: builder(rng, dt, op or name), id=op or name)


OPS = [
    _op("conv2d", _conv),
    _op("conv2d_grad_input", _conv),
    _op("conv2d_grad_weight", _conv),
    _op("conv2d_grad_bias", _conv),
    _op("max_pool2d", _pool),
    _op("max_pool2d_backward", _pool),
    _op("batch_norm2d", _bn),
    _op("batch_norm2d", _bn, "batch_norm2d-eval"),
    _op("batch_norm2d_backward", _bn),
    _op("relu", _elementwise),
    _op("relu_backward", _elementwise),
    _op("sigmoid", _elementwise),
    _op("sigmoid_backward", _elementwise),
    _op("softmax", _elementwise),
    _op("log_softmax", _elementwise),
    _op("linear", _elementwise),
    _op("cross_entropy", _loss),
    _op("binary_cross_entropy", _loss),
]


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _copies(args):
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


# --- memory layouts ------------------------------------------------------------------


def _view(a):
    """The same values as a non-contiguous view into a larger array (offset start)."""
    big = np.zeros(tuple(s + 2 for s in a.shape), a.dtype)
    inner = big[tuple(slice(1, s + 1) for s in a.shape)]
    inner[...] = a
    return inner


def _strided(a):
    """Every other element of the last axis of a twice-as-wide array."""
    big = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _fortran(a):
    return np.asfortranarray(a)


def _reversed(a):
    """Negative strides on every axis."""
    flipped = np.flip(a).copy()
    return np.flip(flipped)


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


LAYOUTS = [
    pytest.param(_view, id="view"),
    pytest.param(_strided, id="strided"),
    pytest.param(_fortran, id="fortran"),
    pytest.param(_reversed, id="negative-strides"),
    pytest.param(_readonly, id="readonly"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("name", "builder"), OPS)
def test_layouts_give_the_contiguous_result(name, builder, layout):
    """Bitwise the result of C-contiguous copies; arguments untouched; equal to reference.

    In-place outputs (running statistics) keep the caller's layout and are updated
    exactly as contiguous ones; a read-only running statistic is an error in training
    (``test_bad_input``), so those keep their layout but stay writeable.
    """
    rng = np.random.default_rng(1)
    args, kwargs, inplace = builder(rng, F32)
    contiguous = _copies(args)
    odd = []
    for i, a in enumerate(args):
        if not isinstance(a, np.ndarray):
            odd.append(a)
        elif i in inplace and layout.__name__ == "_readonly":
            odd.append(a.copy())
        else:
            odd.append(layout(a))
    arrays = [a for a in odd if isinstance(a, np.ndarray)]
    assert any(not (a.flags.c_contiguous and a.flags.writeable) for a in arrays)
    before = _copies(odd)
    expected = _as_tuple(getattr(F, name)(*contiguous, **kwargs))
    got = _as_tuple(getattr(F, name)(*odd, **kwargs))
    reference = _as_tuple(getattr(R, name)(*_copies(args), **kwargs))
    for g, e, r in zip(got, expected, reference, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)
        assert_close(g, r, r.dtype) if r.dtype.kind == "f" else np.testing.assert_array_equal(g, r)
    for i, (a, b, c) in enumerate(zip(odd, before, contiguous, strict=True)):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, c if i in inplace else b, err_msg=f"argument {i}")


def test_broadcast_zero_stride_input():
    """A read-only broadcast view (stride 0) works as its materialised copy."""
    row = np.linspace(-3, 3, 10, dtype=np.float32)
    x = np.broadcast_to(row, (4, 10))
    w = np.random.default_rng(2).standard_normal((3, 10)).astype(np.float32)
    np.testing.assert_array_equal(F.softmax(x), F.softmax(x.copy()))
    np.testing.assert_array_equal(F.linear(x, w), F.linear(x.copy(), w))
    np.testing.assert_array_equal(F.relu(x), F.relu(x.copy()))


# --- the layers: a small network -----------------------------------------------------


def _net(dtype=F32):
    """Conv2d(1, 2, 3) - BatchNorm2d - ReLU - MaxPool2d(2) - Flatten - Linear(8, 3)."""
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, rng=1, dtype=dtype),
        nn.BatchNorm2d(2, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8, 3, rng=2, dtype=dtype),
    )


def _reference_net(state, x, training=True):
    """The forward pass of ``_net`` with ``state``'s weights, composed of reference ops."""
    y = R.conv2d(x, state["0.weight"], state["0.bias"])
    mean, var = state["1.running_mean"].copy(), state["1.running_var"].copy()
    y, _, _ = R.batch_norm2d(y, state["1.weight"], state["1.bias"], mean, var, training)
    y, _ = R.max_pool2d(R.relu(y), 2)
    return R.linear(y.reshape(len(y), -1), state["5.weight"], state["5.bias"])


def _step(net, x, targets):
    """One forward and backward; returns (output, input gradient, parameter gradients)."""
    loss_fn = nn.CrossEntropyLoss()
    out = net(x)
    loss_fn(out, targets)
    grad_x = net.backward(loss_fn.backward())
    return out, grad_x, [p.grad.copy() for p in net.parameters()]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layers_accept_odd_layouts(layout):
    """A network's forward and backward on an odd-layout batch equal those on a C copy."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 1, 6, 6)).astype(np.float32)
    targets = rng.integers(0, 3, 4)
    expected = _step(_net(), x.copy(), targets)
    odd = layout(x)
    got = _step(_net(), odd, layout(targets))
    np.testing.assert_array_equal(odd, x)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    for g, e in zip(got[2], expected[2], strict=True):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_of_one(dtype):
    """Every conv/pool/linear op and a whole network on a batch of one equal the reference;
    an unbatched (C, H, W) sample gives the batch-of-one result without its batch axis."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 1, 6, 6)).astype(dtype)
    net = _net(dtype)
    state = {k: v.copy() for k, v in net.state_dict().items()}
    out = net(x)
    assert_close(out, _reference_net(state, x), dtype)
    net.eval()
    batched, unbatched = net(x), net(x[0])
    assert unbatched.shape == (3,)
    np.testing.assert_array_equal(unbatched, batched[0])
    assert_close(batched, _reference_net(net.state_dict(), x, training=False), dtype)
    for op in ("relu", "sigmoid"):
        assert_close(getattr(F, op)(x), getattr(R, op)(x), dtype)
    w = rng.standard_normal((3, 1, 3, 3)).astype(dtype)
    assert_close(F.conv2d(x, w, padding=1), R.conv2d(x, w, padding=1), dtype)
    assert_close(F.max_pool2d(x, 3)[0], R.max_pool2d(x, 3)[0], dtype)
    logits = rng.standard_normal((1, 4)).astype(dtype)
    for f, r in zip(
        F.cross_entropy(logits, np.array([2])), R.cross_entropy(logits, np.array([2])), strict=True
    ):
        assert_close(f, r, dtype)


# --- the empty batch -----------------------------------------------------------------


def _e(*shape, dtype=F32):
    return np.zeros(shape, dtype)


# (call, outcome): outcome is the tuple of result shapes, or (exception, message regex).
EMPTY_BATCH = [
    pytest.param(
        lambda m: m.conv2d(_e(0, 2, 5, 5), _e(3, 2, 3, 3), _e(3), padding=1),
        [(0, 3, 5, 5)],
        id="conv2d",
    ),
    pytest.param(
        lambda m: m.conv2d_grad_input((0, 2, 5, 5), _e(3, 2, 3, 3), _e(0, 3, 3, 3)),
        [(0, 2, 5, 5)],
        id="conv2d_grad_input",
    ),
    pytest.param(
        lambda m: m.conv2d_grad_weight(_e(0, 2, 5, 5), (3, 2, 3, 3), _e(0, 3, 3, 3)),
        [(3, 2, 3, 3)],
        id="conv2d_grad_weight",
    ),
    pytest.param(lambda m: m.conv2d_grad_bias(_e(0, 3, 3, 3)), [(3,)], id="conv2d_grad_bias"),
    pytest.param(
        lambda m: m.max_pool2d(_e(0, 2, 6, 6), 2), [(0, 2, 3, 3), (0, 2, 3, 3)], id="max_pool2d"
    ),
    pytest.param(
        lambda m: m.max_pool2d_backward(
            _e(0, 2, 3, 3), _e(0, 2, 3, 3, dtype=np.int64), (0, 2, 6, 6)
        ),
        [(0, 2, 6, 6)],
        id="max_pool2d_backward",
    ),
    pytest.param(
        lambda m: m.batch_norm2d(_e(0, 2, 4, 4), None, None, _e(2), _e(2) + 1, training=False),
        [(0, 2, 4, 4), (2,), (2,)],
        id="batch_norm2d-eval",
    ),
    pytest.param(
        lambda m: m.batch_norm2d(_e(0, 2, 4, 4), None, None, None, None),
        (ValueError, r"batch_norm2d: training needs more than one value per channel"),
        id="batch_norm2d-train",
    ),
    pytest.param(lambda m: m.relu(_e(0, 3)), [(0, 3)], id="relu"),
    pytest.param(lambda m: m.sigmoid(_e(0, 3)), [(0, 3)], id="sigmoid"),
    pytest.param(lambda m: m.linear(_e(0, 4), _e(3, 4), _e(3)), [(0, 3)], id="linear"),
    pytest.param(lambda m: m.softmax(_e(0, 5)), [(0, 5)], id="softmax"),
    pytest.param(
        lambda m: m.log_softmax(_e(0, 5), axis=0), [(0, 5)], id="log_softmax-along-empty-axis"
    ),
    pytest.param(
        lambda m: m.cross_entropy(_e(0, 5), np.zeros(0, np.int64)),
        (ValueError, r"cross_entropy: logits must have at least one row"),
        id="cross_entropy",
    ),
    pytest.param(
        lambda m: m.binary_cross_entropy(_e(0, 5), _e(0, 5)),
        (ValueError, r"binary_cross_entropy: probs must not be empty"),
        id="binary_cross_entropy",
    ),
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's log of an empty sum
@pytest.mark.parametrize(
    "module", [pytest.param(F, id="functional"), pytest.param(R, id="reference")]
)
@pytest.mark.parametrize(("call", "outcome"), EMPTY_BATCH)
def test_empty_batch(call, outcome, module):
    """An empty batch gives empty (or, for a sum over the batch, zero) results, except
    where a mean over the batch or batch statistics would be undefined: a ValueError."""
    if isinstance(outcome, tuple):
        exc, regex = outcome
        with pytest.raises(exc, match=regex):
            call(module)
        return
    results = _as_tuple(call(module))
    assert [r.shape for r in results] == outcome
    for got, want in zip(results, _as_tuple(call(R)), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)  # zeros where a sum over the batch


@pytest.mark.parametrize(
    "module", [pytest.param(F, id="functional"), pytest.param(R, id="reference")]
)
def test_max_pool2d_refuses_an_empty_plane(module):
    """A plane of no pixels is refused, as torch does: with padding a window would fit
    and hold padding only, its index outside the plane (found by test_fuzz.py's
    test_layers, with MaxPool2d)."""
    for shape in ((1, 1, 1, 0), (1, 1, 0, 3), (2, 3, 0, 0)):
        with pytest.raises(ValueError, match=r"^max_pool2d: x must have planes of at least"):
            module.max_pool2d(_e(*shape), 2, None, 1)


def test_empty_batch_through_the_layers():
    """A network maps an empty batch to an empty output in evaluation (training batch norm
    has no statistics to use: a ValueError), and the loss refuses an empty batch. Without
    batch norm it trains on one: an empty input gradient, zero parameter gradients."""
    net = _net()
    with pytest.raises(ValueError, match="more than one value per channel"):
        net(_e(0, 1, 6, 6))
    net.eval()
    out = net(_e(0, 1, 6, 6))
    assert out.shape == (0, 3) and out.dtype == F32
    with pytest.raises(ValueError, match="at least one row"):
        nn.CrossEntropyLoss()(out, np.zeros(0, np.int64))
    no_bn = nn.Sequential(*(layer for i, layer in enumerate(_net()) if i != 1))
    out = no_bn(_e(0, 1, 6, 6))
    grad_x = no_bn.backward(np.ones_like(out))
    assert out.shape == (0, 3) and grad_x.shape == (0, 1, 6, 6) and grad_x.dtype == F32
    for p in no_bn.parameters():
        np.testing.assert_array_equal(p.grad, np.zeros_like(p.data), strict=True)


# --- huge logits ---------------------------------------------------------------------

HUGE = np.array([[1e30, 0.0, -1e30], [-1e30, -1e30, 1e30], [1e30, 1e30, 0.0], [-1e30] * 3])


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits_stay_finite(dtype):
    logits, targets = HUGE.astype(dtype), np.array([0, 1, 2, 1])
    for name in ("softmax", "log_softmax"):
        got = getattr(F, name)(logits)
        assert np.isfinite(got).all(), name
        assert_close(got, getattr(R, name)(logits), dtype)
    loss, grad = F.cross_entropy(logits, targets)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    ref_loss, ref_grad = R.cross_entropy(logits, targets)
    assert_close(loss, ref_loss, dtype)
    assert_close(grad, ref_grad, dtype)
    loss_fn = nn.CrossEntropyLoss()
    layer_loss = loss_fn(logits, targets)
    assert np.isfinite(layer_loss)
    assert_close(loss_fn.backward(), ref_grad, dtype)
    y = F.sigmoid(logits)
    assert np.isfinite(y).all()
    assert_close(y, R.sigmoid(logits), dtype)


@pytest.mark.parametrize("dtype", ["int8", "uint8", ">i4", ">u2", "<u8"])
def test_cross_entropy_takes_targets_of_any_integer_dtype(dtype):
    """Targets of any integer dtype and byte order give int64's result (the range check
    reads them as unsigned integers of their own size and order)."""
    logits = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    targets = np.array([0, 3, 1, 2, 3])
    want = F.cross_entropy(logits, targets)
    got = F.cross_entropy(logits, targets.astype(dtype))
    assert got[0] == want[0] and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("dtype", ["int8", "uint8", ">i4", ">u2", "<u8"])
def test_max_pool_backward_takes_indices_of_any_integer_dtype(dtype):
    """Indices of any integer dtype and byte order give int64's result (as the targets of
    cross_entropy: the range check reads them in their own size and order)."""
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    y, indices = F.max_pool2d(x, 2)
    want = F.max_pool2d_backward(y, indices, x.shape)
    got = F.max_pool2d_backward(y, indices.astype(dtype), x.shape)
    np.testing.assert_array_equal(got, want)


def test_bce_at_exact_zero_and_one_stays_finite():
    probs = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    targets = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
    loss, grad = F.binary_cross_entropy(probs, targets)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    ref = R.binary_cross_entropy(probs, targets)
    assert_close(loss, ref[0], F32)
    assert_close(grad, ref[1], F32)


# --- NaN and inf ---------------------------------------------------------------------


def _poison(a, rng):
    """A copy of float array ``a`` with a NaN, a +inf and a -inf at random places."""
    a = a.copy()
    flat = a.reshape(-1)
    for value in (np.nan, np.inf, -np.inf):
        flat[rng.integers(flat.size)] = value
    return a


# inf is not a probability: binary cross-entropy gets its NaN test below.
NAN_OPS = [op for op in OPS if op.id != "binary_cross_entropy"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "builder"), NAN_OPS)
def test_nan_and_inf_propagate_as_in_the_reference(name, builder, dtype):
    """Poison each float argument in turn: NaN in the same places, the same infinities."""
    rng = np.random.default_rng(5)
    args, kwargs, _ = builder(rng, dtype)
    floats = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    for i in floats:
        poisoned = _copies(args)
        poisoned[i] = _poison(args[i], rng)
        if name == "batch_norm2d_backward" and i == 4:
            # A forward pass gives a finite or NaN save_invstd, never inf (the kernel
            # factors it out of its sums, so an inf would give inf where the reference
            # gives NaN: outside the contract).
            poisoned[i][np.isinf(poisoned[i])] = np.nan
        got = _as_tuple(getattr(F, name)(*_copies(poisoned), **kwargs))
        want = _as_tuple(getattr(R, name)(*_copies(poisoned), **kwargs))
        for g, w in zip(got, want, strict=True):
            if w.dtype.kind != "f":
                np.testing.assert_array_equal(g, w, err_msg=f"argument {i}")
                continue
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"argument {i}")
            np.testing.assert_array_equal(np.isposinf(g), np.isposinf(w))
            np.testing.assert_array_equal(np.isneginf(g), np.isneginf(w))
            assert_close(g, w, dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_bce_nan():
    probs = np.array([0.2, np.nan, 0.7], np.float32)
    targets = np.array([1.0, 0.0, np.nan], np.float32)
    got, want = F.binary_cross_entropy(probs, targets), R.binary_cross_entropy(probs, targets)
    assert np.isnan(got[0]) and np.isnan(want[0])
    np.testing.assert_array_equal(np.isnan(got[1]), np.isnan(want[1]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_nan_and_inf_through_a_network(training):
    """One poisoned sample: the network's output has NaN exactly where the reference
    composition has it (in training, batch statistics spread it to the whole batch)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 1, 6, 6)).astype(np.float32)
    x[1, 0, 2, 3], x[2, 0, 0, 0] = np.nan, np.inf
    net = _net()
    if not training:
        net.eval()
    state = {k: v.copy() for k, v in net.state_dict().items()}
    got, want = net(x), _reference_net(state, x, training)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got).any()
    assert_close(got, want, F32)


# --- 0-D arrays and zero sizes --------------------------------------------------------


ZERO_D = [
    pytest.param(lambda m, x: m.relu(x), id="relu"),
    pytest.param(lambda m, x: m.relu_backward(x, x), id="relu_backward"),
    pytest.param(lambda m, x: m.sigmoid(x), id="sigmoid"),
    pytest.param(lambda m, x: m.sigmoid_backward(x, x), id="sigmoid_backward"),
    pytest.param(lambda m, x: m.binary_cross_entropy(x, x)[1], id="binary_cross_entropy"),
]


@pytest.mark.parametrize("call", ZERO_D)
def test_zero_dimensional_input_keeps_its_shape(call):
    x = np.array(0.5, np.float32)
    got = call(F, x)
    assert got.shape == ()
    assert_close(got, call(R, x), F32)


@pytest.mark.parametrize(
    ("x_shape", "w_shape"),
    [
        pytest.param((3, 0), (2, 0), id="no-in-features"),
        pytest.param((3, 4), (0, 4), id="no-out-features"),
        pytest.param((0, 2, 4), (3, 4), id="empty-leading-dims"),
    ],
)
def test_linear_with_zero_sizes(x_shape, w_shape):
    x, w = np.ones(x_shape, np.float32), np.ones(w_shape, np.float32)
    np.testing.assert_array_equal(F.linear(x, w), R.linear(x, w), strict=True)
