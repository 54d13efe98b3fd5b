"""fastcnn.compat against from-scratch twins written here from the tutorials' formulas.

Each twin is the tutorial's formula in plain NumPy (SciPy's ``correlate2d`` and
``convolve2d`` for the convolution): forward, input gradient and the parameters after one
``backward(grad, learning_rate)``. Tolerances: float64 ``rtol=1e-12`` (times the largest
magnitude as ``atol``), float32 ``rtol=1e-5``; initial weights from one seed are compared
bitwise. Also: the dtype rules, the random state, ``train``/``predict`` against a twin
loop, bad input (an error naming the argument, raised before any kernel runs and before
any parameter changes), and the HWC layout helpers against a channels-last model.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastcnn
import fastcnn.compat as C
from fastcnn import functional as F
from fastcnn import nn

F64, F32 = np.dtype(np.float64), np.dtype(np.float32)
TOL = {F64: {"rtol": 1e-12, "atol": 1e-12}, F32: {"rtol": 1e-5, "atol": 1e-5}}
LR = 0.1


def close(actual, expected, dtype):
    """``actual`` has ``dtype`` and ``expected``'s shape and values within TOL[dtype]
    (``atol`` scaled by the largest magnitude of ``expected``, at least 1)."""
    expected = np.asarray(expected, np.float64)
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


def rand(shape, seed=0, dtype=F64, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


# --- twins: the tutorials' formulas, written fresh ----------------------------------------


def twin_dense(w, b, x, g, lr):
    """Forward ``w @ x + b``; backward ``w.T @ g`` and the step with ``g @ x.T``."""
    y = np.dot(w, x) + b
    grad_x = np.dot(w.T, g)
    return y, grad_x, w - lr * np.dot(g, x.T), b - lr * g


def twin_conv(kernels, biases, x, g, lr):
    """Valid correlation plus untied biases; gradients with correlate2d and convolve2d."""
    signal = pytest.importorskip("scipy.signal")
    depth, input_depth = kernels.shape[:2]
    y = biases.copy()
    grad_k = np.zeros(kernels.shape)
    grad_x = np.zeros(x.shape)
    for i in range(depth):
        for j in range(input_depth):
            y[i] += signal.correlate2d(x[j], kernels[i, j], "valid")
            grad_k[i, j] = signal.correlate2d(x[j], g[i], "valid")
            grad_x[j] += signal.convolve2d(g[i], kernels[i, j], "full")
    return y, grad_x, kernels - lr * grad_k, biases - lr * g


def twin_maxpool(x, g, size):
    """Max over size x size windows (first maximum wins); gradient to the winner."""
    c, h, w = x.shape
    oh, ow = h // size, w // size
    y = np.empty((c, oh, ow))
    grad_x = np.zeros(x.shape)
    for k in range(c):
        for i in range(oh):
            for j in range(ow):
                window = x[k, i * size : (i + 1) * size, j * size : (j + 1) * size]
                r, s = np.unravel_index(np.argmax(window), window.shape)
                y[k, i, j] = window[r, s]
                grad_x[k, i * size + r, j * size + s] += g[k, i, j]
    return y, grad_x


def twin_softmax(x, g):
    s = np.exp(x) / np.sum(np.exp(x))
    n = np.size(s)
    return s, np.dot((np.identity(n) - s.T) * s, g)


ACTIVATION_TWINS = {
    "Sigmoid": (lambda x: 1 / (1 + np.exp(-x)), lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
    "Tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "ReLU": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(x.dtype)),
}


def twin_bce(t, p):
    return np.mean(-t * np.log(p) - (1 - t) * np.log(1 - p))


def twin_bce_prime(t, p):
    return ((1 - t) / (1 - p) - t / p) / np.size(t)


# --- initialisation and the random state --------------------------------------------------


def test_one_seed_gives_the_tutorials_weights():
    """After np.random.seed, Dense draws randn (output_size, input_size) then (output_size,
    1), Convolutional randn kernels then biases: the tutorial's draws, bitwise."""
    np.random.seed(7)  # noqa: NPY002
    w, b = np.random.randn(4, 6), np.random.randn(4, 1)  # noqa: NPY002
    k, kb = np.random.randn(3, 2, 3, 3), np.random.randn(3, 5, 4)  # noqa: NPY002
    np.random.seed(7)  # noqa: NPY002
    dense, conv = C.Dense(6, 4), C.Convolutional((2, 7, 6), 3, 3)
    for got, want in ((dense.weights, w), (dense.bias, b), (conv.kernels, k), (conv.biases, kb)):
        assert got.dtype == F64
        np.testing.assert_array_equal(got, want)
    np.random.seed(7)  # noqa: NPY002
    np.testing.assert_array_equal(C.Dense(6, 4, dtype=np.float32).weights, w.astype(F32))


def test_rng_seeds_and_generators_leave_the_global_state_alone():
    """With rng, draws come from that generator (same seed, same weights) and NumPy's
    global state is not touched."""
    np.random.seed(3)  # noqa: NPY002
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    a = C.Convolutional((1, 5, 5), 3, 2, rng=11)
    b = C.Convolutional((1, 5, 5), 3, 2, rng=np.random.default_rng(11))
    np.testing.assert_array_equal(a.kernels, b.kernels)
    np.testing.assert_array_equal(a.biases, b.biases)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002


# --- layers against their twins ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_dense_matches_the_tutorial(dtype):
    """Output, input gradient (old weights) and the updated weights and bias; the input
    is float32 (as the tutorial's images) and is cast to the layer's dtype."""
    layer = C.Dense(6, 4, rng=0, dtype=dtype)
    w, b = layer.weights.astype(F64), layer.bias.astype(F64)
    x, g = rand((6, 1), 1, F32), rand((4, 1), 2)
    y, grad_x, w1, b1 = twin_dense(w, b, x.astype(dtype).astype(F64), g.astype(dtype), LR)
    close(layer.forward(x), y, dtype)
    close(layer.backward(g, LR), grad_x, dtype)
    close(layer.weights, w1, dtype)
    close(layer.bias, b1, dtype)


@pytest.mark.parametrize("cls", [C.Convolutional, C.CNNLayer], ids=["Convolutional", "CNNLayer"])
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_convolutional_matches_the_tutorial(cls, dtype):
    """Two input channels, three kernels, a non-square image: output with untied biases,
    input gradient, updated kernels and biases."""
    layer = cls((2, 7, 6), 3, 3, rng=1, dtype=dtype)
    assert layer.output_shape == (3, 5, 4) and layer.kernels_shape == (3, 2, 3, 3)
    k, kb = layer.kernels.astype(F64), layer.biases.astype(F64)
    x, g = rand((2, 7, 6), 3), rand((3, 5, 4), 4)
    y, grad_x, k1, kb1 = twin_conv(k, kb, x.astype(dtype), g.astype(dtype), LR)
    close(layer.forward(x), y, dtype)
    close(layer.backward(g, LR), grad_x, dtype)
    close(layer.kernels, k1, dtype)
    close(layer.biases, kb1, dtype)


@pytest.mark.parametrize("name", list(ACTIVATION_TWINS))
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_activations_match_the_tutorial(name, dtype):
    """Forward f(x) and backward g * f'(x), in the input's dtype; the gradient's float64
    is cast to it. The generic Activation with the twin's own functions agrees too."""
    f, f_prime = ACTIVATION_TWINS[name]
    x = rand((5, 1), 5, dtype, -4, 4)
    x[0, 0] = dtype.type(-0.5)  # a negative value for ReLU's kink side
    g = rand((5, 1), 6)
    for layer in (getattr(C, name)(), C.Activation(f, f_prime)):
        close(layer.forward(x), f(x.astype(F64)), dtype)
        close(layer.backward(g, LR), g.astype(dtype) * f_prime(x.astype(F64)), dtype)


def test_softmax_matches_the_tutorial():
    """Softmax over a column vector and the tutorial's n x n Jacobian product; stable
    where the tutorial's exp overflows."""
    x, g = rand((6, 1), 7, F64, -3, 3), rand((6, 1), 8)
    layer = C.Softmax()
    s, grad_x = twin_softmax(x, g)
    close(layer.forward(x), s, F64)
    close(layer.backward(g, LR), grad_x, F64)
    big = C.Softmax().forward(np.array([[1000.0], [1000.0]]))
    np.testing.assert_array_equal(big, [[0.5], [0.5]])


def test_reshape_and_maxpool_match_the_tutorial():
    """Reshape there and back; MaxPool(2) on a (2, 5, 6) sample drops the odd row."""
    r = C.Reshape((2, 3, 4), (24, 1))
    x = rand((2, 3, 4), 9)
    np.testing.assert_array_equal(r.forward(x), x.reshape(24, 1))
    np.testing.assert_array_equal(r.backward(x.reshape(24, 1), LR), x)
    pool = C.MaxPool(2)
    x, g = rand((2, 5, 6), 10), rand((2, 2, 3), 11)
    y, grad_x = twin_maxpool(x, g, 2)
    close(pool.forward(x), y, F64)
    close(pool.backward(g, LR), grad_x, F64)


# --- losses ------------------------------------------------------------------------------


def test_losses_match_the_tutorial_in_its_argument_order():
    """(y_true, y_pred): mse, mse_prime, binary_cross_entropy and its prime; float32
    targets against float64 predictions are cast to float64."""
    t = np.array([[1.0], [0.0], [1.0]], F32)
    p = np.array([[0.8], [0.3], [0.6]])
    tt = t.astype(F64)
    close(np.asarray(C.mse(t, p)), np.mean((tt - p) ** 2), F64)
    close(C.mse_prime(t, p), 2 * (p - tt) / 3, F64)
    close(np.asarray(C.binary_cross_entropy(t, p)), twin_bce(tt, p), F64)
    close(C.binary_cross_entropy_prime(t, p), twin_bce_prime(tt, p), F64)
    assert C.binary_cross_entropy_prime(t.astype(F32), p.astype(F32)).dtype == F32


def test_bce_is_finite_at_a_saturated_sigmoid():
    """y_pred exactly 0 or 1 (a saturated float64 sigmoid): the tutorial's formula gives
    inf or NaN, compat's clip at the dtype's epsilon gives finite values."""
    t, p = np.array([[1.0], [0.0]]), np.array([[1.0], [1.0]])
    assert np.isfinite(C.binary_cross_entropy(t, p))
    assert np.all(np.isfinite(C.binary_cross_entropy_prime(t, p)))


# --- dtypes -------------------------------------------------------------------------------


def test_mixed_dtypes_are_cast_not_refused():
    """A float64 network takes uint8 and float32 images and float32 gradients; a float32
    network stays float32 end to end."""
    for dtype in (F64, F32):
        conv = C.Convolutional((1, 6, 6), 3, 2, rng=0, dtype=dtype)
        dense = C.Dense(32, 2, rng=1, dtype=dtype)
        net = [conv, C.Sigmoid(), C.Reshape((2, 4, 4), (32, 1)), dense, C.Sigmoid()]
        image = np.arange(36, dtype=np.uint8).reshape(1, 6, 6)
        out = C.predict(net, image)
        assert out.dtype == dtype
        close(out, C.predict(net, image.astype(dtype)), dtype)
        grad = np.ones((2, 1), F32 if dtype == F64 else F64)
        for layer in reversed(net):
            grad = layer.backward(grad, LR)
        assert grad.dtype == dtype and conv.kernels.dtype == dtype


# --- train and predict ------------------------------------------------------------------


class TwinNet:
    """The tutorial's MNIST network (conv, sigmoid, reshape, dense, sigmoid, dense,
    sigmoid) on the twin formulas, trained per sample as the tutorial's train."""

    def __init__(self, net):
        self.k, self.kb = net[0].kernels.copy(), net[0].biases.copy()
        self.w1, self.b1 = net[3].weights.copy(), net[3].bias.copy()
        self.w2, self.b2 = net[5].weights.copy(), net[5].bias.copy()

    def predict(self, x):
        sig = ACTIVATION_TWINS["Sigmoid"][0]
        h0 = sig(twin_conv(self.k, self.kb, x, np.zeros(self.kb.shape), 0)[0])
        h1 = sig(np.dot(self.w1, h0.reshape(-1, 1)) + self.b1)
        return h0, h1, sig(np.dot(self.w2, h1) + self.b2)

    def step(self, x, t, lr):
        h0, h1, y = self.predict(x)
        g = twin_bce_prime(t, y) * y * (1 - y)
        _, g, self.w2, self.b2 = twin_dense(self.w2, self.b2, h1, g, lr)
        g = g * h1 * (1 - h1)
        _, g, self.w1, self.b1 = twin_dense(self.w1, self.b1, h0.reshape(-1, 1), g, lr)
        g = g.reshape(h0.shape) * h0 * (1 - h0)
        self.k, self.kb = twin_conv(self.k, self.kb, x, g, lr)[2:]
        return twin_bce(t, y)


def tutorial_net(rng=0):
    return [
        C.Convolutional((1, 8, 8), 3, 2, rng=rng),
        C.Sigmoid(),
        C.Reshape((2, 6, 6), (72, 1)),
        C.Dense(72, 5, rng=rng + 1),
        C.Sigmoid(),
        C.Dense(5, 2, rng=rng + 2),
        C.Sigmoid(),
    ]


def test_train_matches_the_tutorial_loop():
    """Two epochs over three samples: the same weights, the printed lines and the
    returned mean errors as the twin (few steps: per-sample training amplifies round-off
    over hundreds of steps)."""
    net = tutorial_net()
    twin = TwinNet(net)
    xs = rand((3, 1, 8, 8), 12, F32, 0, 1)
    ys = np.eye(2, dtype=F32)[[0, 1, 1]].reshape(3, 2, 1)
    errors = []
    for _ in range(2):
        errors.append(
            sum(twin.step(x.astype(F64), y, 0.5) for x, y in zip(xs, ys, strict=True)) / 3
        )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        history = C.train(net, C.binary_cross_entropy, C.binary_cross_entropy_prime, xs, ys, 2, 0.5)
    close(np.array(history), errors, F64)
    # (a first run on this machine prints the kernels' warm-up first)
    lines = [line for line in out.getvalue().splitlines() if not line.startswith("compil")]
    assert [re.sub(r"error=.*", "", line) for line in lines] == ["1/2, ", "2/2, "]
    assert float(lines[1].split("=")[1]) == pytest.approx(errors[1], rel=1e-12)
    for got, want in (
        (net[0].kernels, twin.k),
        (net[0].biases, twin.kb),
        (net[3].weights, twin.w1),
        (net[5].bias, twin.b2),
    ):
        close(got, want, F64)
    close(C.predict(net, xs[0]), twin.predict(xs[0].astype(F64))[2], F64)


def test_train_takes_the_users_own_layers_and_skips_only_the_first_input_gradient(monkeypatch):
    """A tutorial-style layer of the user's (forward/backward, no fastcnn base) trains in
    the same loop; the first layer's input gradient, which nothing uses, is not computed
    by train, and is by a public backward call."""
    calls = []
    real = F.conv2d_grad_input
    monkeypatch.setattr(F, "conv2d_grad_input", lambda *a: calls.append(1) or real(*a))

    class Scale:  # the user's own layer: y = 2 x
        def forward(self, input):
            return 2 * input

        def backward(self, output_gradient, learning_rate):
            return 2 * output_gradient

    net = tutorial_net()
    net.insert(2, Scale())
    xs, ys = rand((2, 1, 8, 8), 13, F64, 0, 1), np.eye(2).reshape(2, 2, 1)
    C.train(net, C.mse, C.mse_prime, xs, ys, epochs=1, verbose=False)
    assert calls == []
    net[0].forward(xs[0])
    net[0].backward(np.ones((2, 6, 6)), 0.1)
    assert calls == [1]


# --- bad input ---------------------------------------------------------------------------


@pytest.fixture
def no_kernels(monkeypatch):
    """Every function of fastcnn.functional raises if called."""
    for name in F.__all__:
        monkeypatch.setattr(
            F, name, lambda *a, _n=name, **k: pytest.fail(f"kernel {_n} ran on bad input")
        )


def _after_forward(layer, x, *call):
    layer.forward(x)
    return layer, call


X8 = np.zeros((1, 8, 8))
BAD = [
    (lambda: C.Dense(0, 3), ValueError, r"Dense: input_size must be >= 1, got 0"),
    (lambda: C.Dense(3.0, 3), TypeError, r"Dense: input_size must be an int, got 3.0"),
    (lambda: C.Dense(3, 3, dtype=np.int32), TypeError, r"Dense: dtype must be float32 or"),
    (lambda: C.Dense(3, 3, rng="x"), TypeError, r"Dense: rng must be None, an int seed"),
    (
        lambda: C.Convolutional((1, 8), 3, 2),
        ValueError,
        r"Convolutional: input_shape must be 3 positive ints, got \(1, 8\)",
    ),
    (
        lambda: C.Convolutional((1, 8, 8), 9, 2),
        ValueError,
        r"Convolutional: kernel_size 9 is larger than the input's height or width",
    ),
    (
        lambda: C.Reshape((2, 3), (5, 1)),
        ValueError,
        r"Reshape: input_shape \(2, 3\) and output_shape \(5, 1\) must have the same number",
    ),
    (lambda: C.MaxPool(0), ValueError, r"MaxPool: size must be >= 1, got 0"),
    (
        lambda: C.Dense(4, 2).forward(np.zeros(4)),
        ValueError,
        r"Dense.forward: input must have shape \(4, 1\), got \(4,\)",
    ),
    (
        lambda: C.Dense(4, 2).forward([[0.0]] * 4),
        TypeError,
        r"Dense.forward: input must be a numpy.ndarray, got list",
    ),
    (
        lambda: C.Convolutional((1, 8, 8), 3, 2).forward(np.zeros((8, 8, 1))),
        ValueError,
        r"Convolutional.forward: input must have shape \(1, 8, 8\), got \(8, 8, 1\)",
    ),
    (
        lambda: C.Sigmoid().forward(np.zeros(3, complex)),
        TypeError,
        r"Sigmoid.forward: input must hold real numbers, got dtype complex128",
    ),
    (
        lambda: C.MaxPool(3).forward(np.zeros((1, 2, 8))),
        ValueError,
        r"MaxPool.forward: input must be \(channels, height, width\) with height and width",
    ),
    (
        lambda: C.Reshape((4,), (2, 2)).forward(np.zeros((2, 2))),
        ValueError,
        r"Reshape.forward: input must have shape \(4,\), got \(2, 2\)",
    ),
    (
        lambda: C.binary_cross_entropy(np.zeros(2), np.zeros((2, 1))),
        ValueError,
        r"binary_cross_entropy: y_true and y_pred must have the same shape, got \(2,\) and",
    ),
    (
        lambda: C.binary_cross_entropy_prime(np.zeros((2, 1)), np.full((2, 1), 3.0)),
        ValueError,
        r"binary_cross_entropy_prime: y_pred must lie in \[0, 1\], got values in \[3.0, 3.0\]",
    ),
    (
        lambda: C.mse("ab", np.zeros(2)),
        TypeError,
        r"mse: y_true must be an array of numbers, got str",
    ),
    (lambda: C.predict(C.Sigmoid(), X8), TypeError, r"predict: network must be a list of layers"),
    (lambda: C.predict([], X8), ValueError, r"predict: network must hold at least one layer"),
    (
        lambda: C.predict([C.Sigmoid(), np.zeros(2)], X8),
        TypeError,
        r"predict: network\[1\] must have forward and backward methods, got ndarray",
    ),
    (
        lambda: C.train([C.Sigmoid()], C.mse, C.mse_prime, [X8], [X8, X8]),
        ValueError,
        r"train: x_train and y_train must have the same length, got 1 and 2",
    ),
    (
        lambda: C.train([C.Sigmoid()], C.mse, None, [X8], [X8]),
        TypeError,
        r"train: loss_prime must be callable, got NoneType",
    ),
    (
        lambda: C.train([C.Sigmoid()], C.mse, C.mse_prime, [X8], [X8], epochs=1.5),
        TypeError,
        r"train: epochs must be an int, got 1.5",
    ),
    (
        lambda: C.train([C.Sigmoid()], C.mse, C.mse_prime, [X8], [X8], learning_rate=-1),
        ValueError,
        r"train: learning_rate must be >= 0.0, got -1",
    ),
    (
        lambda: C.train([C.Sigmoid()], C.mse, C.mse_prime, [X8], [X8], verbose=1),
        TypeError,
        r"train: verbose must be a bool, got 1",
    ),
    (
        lambda: C.from_hwc(np.zeros((2, 3))),
        ValueError,
        r"from_hwc: x must be \(H, W, C\) or \(N, H, W, C\), got shape \(2, 3\)",
    ),
    (
        lambda: C.dense_weight_from_hwc(np.zeros((10, 2)), (2, 2, 2)),
        ValueError,
        r"dense_weight_from_hwc: kernel must be \(in_features, out_features\) with "
        r"in_features = 2 \* 2 \* 2 = 8",
    ),
]


@pytest.mark.parametrize(
    "call, exc, regex", BAD, ids=[re.sub(r"\W+", "-", regex[:48]).strip("-") for *_, regex in BAD]
)
def test_bad_arguments_raise_before_any_kernel(no_kernels, call, exc, regex):
    with pytest.raises(exc, match=regex):
        call()


@pytest.mark.parametrize(
    "make, x, grad, lr, exc, regex",
    [
        (
            lambda: C.Dense(4, 2, rng=0),
            np.zeros((4, 1)),
            np.zeros((2, 1)),
            "0.1",
            TypeError,
            r"Dense.backward: learning_rate must be a real number, got '0.1'",
        ),
        (
            lambda: C.Dense(4, 2, rng=0),
            np.zeros((4, 1)),
            np.zeros((1, 2)),
            0.1,
            ValueError,
            r"Dense.backward: output_gradient must have shape \(2, 1\), got \(1, 2\)",
        ),
        (
            lambda: C.Convolutional((1, 5, 5), 3, 2, rng=0),
            np.zeros((1, 5, 5)),
            np.zeros((2, 3, 3)),
            -0.5,
            ValueError,
            r"Convolutional.backward: learning_rate must be >= 0.0, got -0.5",
        ),
        (
            lambda: C.Convolutional((1, 5, 5), 3, 2, rng=0),
            np.zeros((1, 5, 5)),
            np.zeros((3, 3, 2)),
            0.1,
            ValueError,
            r"Convolutional.backward: output_gradient must have shape \(2, 3, 3\)",
        ),
        (
            C.Sigmoid,
            np.zeros((3, 1)),
            np.zeros((1, 3)),
            0.1,
            ValueError,
            r"Sigmoid.backward: output_gradient must have shape \(3, 1\), got \(1, 3\)",
        ),
    ],
    ids=["dense-lr-str", "dense-grad-shape", "conv-lr-negative", "conv-grad-hwc", "sigmoid"],
)
def test_bad_backward_changes_nothing(monkeypatch, make, x, grad, lr, exc, regex):
    """A bad backward raises naming the argument with no kernel run and every parameter
    as it was."""
    layer = make()
    layer.forward(x)
    before = {k: v.copy() for k, v in vars(layer).items() if isinstance(v, np.ndarray)}
    for name in F.__all__:
        monkeypatch.setattr(F, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} ran"))
    with pytest.raises(exc, match=regex):
        layer.backward(grad, lr)
    for key, value in before.items():
        np.testing.assert_array_equal(getattr(layer, key), value)


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match=r"Dense.backward: backward called before forward"):
        C.Dense(2, 2).backward(np.zeros((2, 1)), 0.1)


# --- layouts: channels-last code into NCHW ----------------------------------------------


def hwc_model(x, kernel, bias, dense, dense_bias):
    """A channels-last net, Keras-style: conv (kh, kw, Ci, Co) valid + bias, ReLU, 2x2
    max-pool, flatten in HWC order, dense (in, out) + bias. x (N, H, W, Ci)."""
    n, h, w, _ = x.shape
    kh, kw, _, co = kernel.shape
    oh, ow = h - kh + 1, w - kw + 1
    y = np.zeros((n, oh, ow, co))
    for i in range(oh):
        for j in range(ow):
            y[:, i, j] = np.einsum("nabc,abcd->nd", x[:, i : i + kh, j : j + kw], kernel)
    y = np.maximum(y + bias, 0)
    y = y[:, : oh // 2 * 2, : ow // 2 * 2].reshape(n, oh // 2, 2, ow // 2, 2, co).max(axis=(2, 4))
    return y.reshape(n, -1) @ dense + dense_bias


def test_hwc_model_and_its_converted_nchw_twin_agree():
    """from_hwc, conv_weight_from_hwc and dense_weight_from_hwc turn a channels-last model
    into a fastcnn.nn one with the same outputs (float64, 1e-12); converting the images
    and the conv kernel but not the dense rows gives other outputs, so the test can
    fail."""
    x, kernel = rand((2, 9, 8, 3), 20), rand((3, 3, 3, 4), 21)
    bias, dense, dense_bias = rand((4,), 22), rand((3 * 3 * 4, 5), 23), rand((5,), 24)
    expected = hwc_model(x, kernel, bias, dense, dense_bias)

    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, dtype=np.float64, rng=0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(36, 5, dtype=np.float64, rng=0),
    )
    state = {
        "0.weight": C.conv_weight_from_hwc(kernel),
        "0.bias": bias,
        "4.weight": C.dense_weight_from_hwc(dense, (3, 3, 4)),
        "4.bias": dense_bias,
    }
    net.load_state_dict(state)
    close(net(C.from_hwc(x)), expected, F64)
    close(C.from_hwc(x[0]), x[0].transpose(2, 0, 1), F64)

    state["4.weight"] = np.ascontiguousarray(dense.T)  # the rows left in HWC order
    net.load_state_dict(state)
    assert np.max(np.abs(net(C.from_hwc(x)) - expected)) > 1e-3


def test_compat_is_a_submodule_of_fastcnn():
    assert fastcnn.compat is C


def test_warmup_jobs_follow_the_plan_and_skip_the_first_input_gradient():
    first = C.Convolutional((1, 8, 8), 3, 4)  # 9 taps: few_taps
    later = C.Convolutional((4, 8, 8), 3, 4, dtype=np.float32)  # 36 taps: direct
    assert first._warmup_jobs(True, "float64") == [
        ("conv forward few_taps", "float64"),
        ("conv grad_weight few_taps", "float64"),
    ]
    assert later._warmup_jobs(False, "float32") == [
        ("conv forward direct", "float32"),
        ("conv grad_input direct", "float32"),
        ("conv grad_weight direct", "float32"),
    ]
    assert C.Reshape((2, 2), (4,))._warmup_jobs(False, "float64") == []


def test_train_compiles_the_networks_kernels_once_and_says_so(tmp_path):
    """A first run warms up the network's kernels (in parallel, :mod:`fastcnn.warmup`) and
    prints how long it took; a second process finds them in the cache and says nothing."""
    code = textwrap.dedent(
        """
        import numpy as np
        from fastcnn import compat as C
        np.random.seed(0)
        net = [C.Dense(4, 2, dtype=np.float32), C.Sigmoid()]  # two jobs: two workers
        x, y = np.random.rand(2, 4, 1), np.random.rand(2, 2, 1)
        C.train(net, C.mse, C.mse_prime, x, y, epochs=1, learning_rate=0.1, verbose=True)
        """
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    first, second = (run.stdout.splitlines() for run in runs)
    assert first[0].startswith("compiling fastcnn's kernels for this CPU, once")
    assert first[1].startswith("compiled the kernels in ") and first[2].startswith("1/1, error=")
    assert second[0].startswith("1/1, error=") and len(second) == 1
