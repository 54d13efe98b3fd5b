"""Hypothesis drives random, often malformed, shapes and parameters through every public
function of ``fastcnn.functional`` and ``fastcnn.reference``, and through the layers.

The only outcomes allowed: both return, with equal results (:func:`cases.assert_close`
tolerances, max-pool indices exactly equal), or both raise the same ``ValueError`` /
``TypeError`` with the same message. Any other exception fails the test; a crash of the
interpreter is caught by ``test_fuzzing_in_a_subprocess_does_not_crash``, which runs the
same fuzzers in a child process and checks it exits normally, not by a signal. An opt-in
run (``FASTCNN_BOUNDSCHECK_FUZZ=1``) repeats them with Numba's bounds checks compiled into
every kernel, so an out-of-bounds index raises instead of reading or writing memory.

Sizes are tiny (so each example costs microseconds) and include 0; conv channel counts
are small or around the direct kernels' channel blocks (``cases.channel_counts``); each
parameter is mostly valid and sometimes nonsense (0, negative, bool, float, string,
3-tuple, None), so every check of :mod:`fastcnn._checks` is reached and so is every kernel.
``FASTCNN_FUZZ_EXAMPLES`` sets the number of examples per function (default 30).
"""

from __future__ import annotations

import os
import subprocess
import sys
from math import prod
from pathlib import Path

import numpy as np
import pytest
from cases import assert_close, channel_counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastcnn.functional as F
import fastcnn.nn as nn
import fastcnn.reference as R

EXAMPLES = int(os.environ.get("FASTCNN_FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference on inf

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
BAD_DTYPES = [np.dtype(t) for t in (np.int32, np.int64, np.float16, np.complex64, np.bool_)]


# --- strategies ----------------------------------------------------------------------


def sometimes(valid, *invalid, p_invalid=0.2):
    """Mostly ``valid``; with probability about ``p_invalid`` one of ``invalid``."""
    weight = max(1, round((1 - p_invalid) / p_invalid))
    return st.one_of(*([valid] * weight), *invalid)


# Nonsense values for an int-or-pair argument.
NONSENSE = st.sampled_from([True, 1.0, 2.5, "1", None, (1, 1, 1), (1,), [2, 2.0], -1, 0])


def int_or_pair(lo, hi):
    """An int or an (h, w) pair in [lo, hi], sometimes nonsense."""
    ints = st.integers(lo, hi)
    return sometimes(st.one_of(ints, st.tuples(ints, ints)), NONSENSE, p_invalid=0.1)


def float_dtype():
    return sometimes(st.sampled_from([F32, F64]), st.sampled_from(BAD_DTYPES), p_invalid=0.1)


def mostly(value, *others):
    """``value`` with high probability, else one of ``others``."""
    return sometimes(st.just(value), st.sampled_from(others), p_invalid=0.15)


def maybe_wrong_shape(shape):
    """``shape``, or one entry off by one, or one rank more or less."""

    wrong = [shape[:i] + (shape[i] + 1,) + shape[i + 1 :] for i in range(len(shape))]
    wrong += [shape[1:], (*shape, 1)]
    return sometimes(st.just(shape), st.sampled_from(wrong), p_invalid=0.15)


class Arrays:
    """Array builders seeded by one Hypothesis-drawn integer."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def __call__(self, shape, dtype, low=None, high=None):
        dtype = np.dtype(dtype)
        if low is None:
            values = self.rng.standard_normal(shape)
        else:
            values = self.rng.uniform(low, high, shape)
        if dtype.kind == "c":
            return (values + 1j).astype(dtype)
        if dtype.kind == "b":
            return values > 0
        return values.astype(dtype)


def out_size(size, kernel, stride, pad, dilation=1):
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def as_pair(v):
    """``v`` as an (h, w) pair of ints, or None if it is not a valid int-or-pair."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, tuple) and len(v) == 2 and all(type(e) is int for e in v):
        return v
    return None


# --- the oracle: fast path against reference -----------------------------------------


def _copy(v):
    return v.copy() if isinstance(v, np.ndarray) else v


def agree(name, *args, exact=(), **kwargs):
    """Call ``F.name`` and ``R.name`` on copies of the arguments; assert they agree.

    Both raise the same ValueError/TypeError, or both return equal results and leave
    their inputs equal (in-place updates, such as batch norm's running statistics, must
    match too). Result positions listed in ``exact`` must be bitwise equal. Returns the
    fast result, or None if both raised.
    """
    outcomes = []
    for mod in (F, R):
        a, kw = [_copy(v) for v in args], {k: _copy(v) for k, v in kwargs.items()}
        try:
            result = getattr(mod, name)(*a, **kw)
        except (ValueError, TypeError) as e:
            outcomes.append((e, a, kw))
        else:
            outcomes.append((result, a, kw))
    (fast, fa, fkw), (ref, ra, rkw) = outcomes
    if isinstance(fast, Exception) or isinstance(ref, Exception):
        assert type(fast) is type(ref), f"{name}: fast path gave {fast!r}, reference {ref!r}"
        assert str(fast) == str(ref)
        return None
    fast_t, ref_t = (fast, ref) if isinstance(fast, tuple) else ((fast,), (ref,))
    assert len(fast_t) == len(ref_t)
    dtype = next(v.dtype for v in [*args, *kwargs.values()] if isinstance(v, np.ndarray))
    for i, (f, r) in enumerate(zip(fast_t, ref_t, strict=True)):
        if i in exact:
            assert f.dtype == r.dtype and f.shape == r.shape
            np.testing.assert_array_equal(f, r)
        else:
            assert_close(f, r, dtype)
    for f, r in zip([*fa, *fkw.values()], [*ra, *rkw.values()], strict=True):
        if isinstance(f, np.ndarray) and f.dtype.kind == "f" and f.size:
            assert_close(f, r, f.dtype)
    return fast


def _assert_inputs_unchanged(name, args, kwargs):
    """The fast path never writes into arrays it was given (batch norm aside)."""
    before = [_copy(v) for v in args], {k: _copy(v) for k, v in kwargs.items()}
    try:
        getattr(F, name)(*args, **kwargs)
    except (ValueError, TypeError):
        pass
    for new, old in zip([*args, *kwargs.values()], [*before[0], *before[1].values()], strict=True):
        if isinstance(new, np.ndarray):
            np.testing.assert_array_equal(new, old)


# --- convolution ---------------------------------------------------------------------


@st.composite
def conv_problems(draw):
    """Arrays and keyword arguments for the conv family, valid or not."""
    make = Arrays(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(float_dtype())
    counts = channel_counts(dtype)  # small, and around the direct kernels' channel blocks
    n, c = draw(st.integers(0, 3)), draw(st.sampled_from(counts))
    k = draw(st.sampled_from([0, *counts]))
    h, w = draw(st.integers(0, 7)), draw(st.integers(0, 7))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kwargs = {
        "stride": draw(int_or_pair(1, 3)),
        "padding": draw(int_or_pair(0, 2)),
        "dilation": draw(int_or_pair(1, 3)),
    }
    x_shape = draw(maybe_wrong_shape((n, c, h, w)))
    w_shape = draw(maybe_wrong_shape((k, c, kh, kw)))
    x = make(x_shape, dtype)
    weight = make(w_shape, draw(mostly(dtype, F32, F64)))
    bias = draw(st.sampled_from([None, (k,), (k + 1,)]))
    bias = None if bias is None else make(bias, draw(mostly(dtype, F32, F64)))
    pairs = [as_pair(kwargs[key]) for key in ("stride", "padding", "dilation")]
    if None in pairs or min(pairs[0] + pairs[2]) < 1 or min(pairs[1]) < 0:
        out_shape = (n, k, 1, 1)
    else:
        (sh, sw), (ph, pw), (dh, dw) = pairs
        out_shape = (n, k, out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw))
    out_shape = tuple(max(0, s) for s in draw(maybe_wrong_shape(out_shape)))
    grad_out = make(out_shape, draw(mostly(dtype, F32, F64)))
    return x, weight, bias, grad_out, kwargs


@FUZZ
@given(conv_problems())
def test_conv2d(problem):
    x, weight, bias, _, kwargs = problem
    agree("conv2d", x, weight, bias, **kwargs)
    _assert_inputs_unchanged("conv2d", (x, weight, bias), kwargs)


@FUZZ
@given(conv_problems())
def test_conv2d_grad_input(problem):
    x, weight, _, grad_out, kwargs = problem
    agree("conv2d_grad_input", x.shape, weight, grad_out, **kwargs)


@FUZZ
@given(conv_problems())
def test_conv2d_grad_weight(problem):
    x, weight, _, grad_out, kwargs = problem
    agree("conv2d_grad_weight", x, weight.shape, grad_out, **kwargs)


@FUZZ
@given(conv_problems())
def test_conv2d_grad_bias(problem):
    *_, grad_out, _ = problem
    agree("conv2d_grad_bias", grad_out)


# --- max-pooling ---------------------------------------------------------------------


@st.composite
def pool_problems(draw):
    make = Arrays(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(float_dtype())
    shape = draw(maybe_wrong_shape(tuple(draw(st.integers(0, 6)) for _ in range(4))))
    ties = draw(st.booleans())  # small integers make ties, the first maximum must win
    x = make(shape, dtype)
    if ties and dtype.kind == "f":
        x = np.round(x).astype(dtype)
    kernel = draw(int_or_pair(1, 4))
    stride = draw(st.one_of(st.none(), int_or_pair(1, 4)))
    padding = draw(int_or_pair(0, 2))
    return x, kernel, stride, padding


@FUZZ
@given(pool_problems())
def test_max_pool2d(problem):
    x, kernel, stride, padding = problem
    agree("max_pool2d", x, kernel, stride, padding, exact=(0, 1))


INDEX_DTYPES = st.sampled_from([np.int64, np.int64, np.int32, np.int16, np.uint64, np.float64])


@FUZZ
@given(
    pool_problems(),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["forward", "random", "off"]),
    INDEX_DTYPES,
)
def test_max_pool2d_backward(problem, seed, index_kind, index_dtype):
    """Indices from a real forward pass, random in-range ones, or some pushed out of range,
    of several integer dtypes (and a float one, which is refused)."""
    x, kernel, stride, padding = problem
    try:
        y, indices = R.max_pool2d(x, kernel, stride, padding)
    except (ValueError, TypeError):
        y, indices = x, np.zeros(x.shape, np.int64)
    make = Arrays(seed)
    grad_out = make(y.shape, y.dtype if y.dtype.kind == "f" else F32)
    plane = x.shape[-2] * x.shape[-1] if x.ndim >= 2 else 1
    if index_kind == "random" and plane > 0:
        indices = make.rng.integers(0, plane, size=indices.shape)
    elif index_kind == "off" and indices.size:
        indices = indices.copy()
        indices.flat[make.rng.integers(indices.size)] = make.rng.choice([-1, plane])
    if not (np.dtype(index_dtype).kind == "u" and indices.size and indices.min() < 0):
        indices = indices.astype(index_dtype)
    agree("max_pool2d_backward", grad_out, indices, x.shape)


# --- batch norm ----------------------------------------------------------------------


@st.composite
def bn_problems(draw):
    make = Arrays(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(float_dtype())
    n, c, h, w = (draw(st.integers(0, 4)) for _ in range(4))
    x = make(draw(maybe_wrong_shape((n, c, h, w))), dtype)

    def vec(low=None, high=None):
        length = draw(st.sampled_from([c, c, c, c + 1]))
        return make((length,), draw(mostly(dtype, F32, F64)), low, high)

    weight, bias = draw(st.sampled_from([(vec(), vec()), (None, None)]))
    stats = draw(st.sampled_from(["both", "both", "none", "mean-only"]))
    running_mean = vec() if stats != "none" else None
    running_var = vec(0.1, 2.0) if stats == "both" else None
    training = draw(mostly(True, False, 1, "yes"))
    momentum = draw(sometimes(st.floats(0, 1), st.sampled_from([-0.5, 1.5, "0.1", None])))
    eps = draw(sometimes(st.sampled_from([1e-5, 1e-3]), st.sampled_from([0, -1.0, np.nan])))
    save_invstd = vec(0.5, 2.0)
    return x, weight, bias, running_mean, running_var, training, momentum, eps, save_invstd


@FUZZ
@given(bn_problems())
def test_batch_norm2d(problem):
    x, weight, bias, running_mean, running_var, training, momentum, eps, _ = problem
    agree("batch_norm2d", x, weight, bias, running_mean, running_var, training, momentum, eps)


@FUZZ
@given(bn_problems(), st.integers(0, 2**32 - 1))
def test_batch_norm2d_backward(problem, seed):
    x, weight, _, save_mean, _, _, _, _, save_invstd = problem
    grad_out = Arrays(seed)(x.shape, x.dtype if x.dtype.kind == "f" else F32)
    agree("batch_norm2d_backward", grad_out, x, weight, save_mean, save_invstd)


# --- element-wise, linear, softmax and losses ----------------------------------------

SHAPES = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)  # 0-D included


@st.composite
def unary_problems(draw, low=None, high=None):
    make = Arrays(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(float_dtype())
    shape = draw(SHAPES)
    x = make(shape, dtype, low, high)
    if draw(st.booleans()) and dtype.kind == "f" and x.size:  # signed zeros and specials
        x.flat[0] = draw(st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan]))
    other = make(draw(maybe_wrong_shape(shape)), draw(mostly(dtype, F32, F64)), low, high)
    return x, other


@FUZZ
@given(unary_problems())
def test_relu(problem):
    x, grad_out = problem
    agree("relu", x, exact=(0,))
    agree("relu_backward", grad_out, x)
    _assert_inputs_unchanged("relu", (x,), {})


@FUZZ
@given(unary_problems())
def test_sigmoid(problem):
    x, grad_out = problem
    y = agree("sigmoid", x)
    if y is not None:
        agree("sigmoid_backward", grad_out, y)


@FUZZ
@given(st.integers(0, 2**32 - 1), float_dtype(), SHAPES, st.integers(0, 4), st.data())
def test_linear(seed, dtype, lead, out_features, data):
    """Any leading shape (none: one unbatched sample), zero features included."""
    make = Arrays(seed)
    lead = lead[:-1]
    in_features = data.draw(st.integers(0, 5))
    x = make((*lead, in_features), dtype)
    weight = make(data.draw(maybe_wrong_shape((out_features, in_features))), dtype)
    bias = data.draw(st.sampled_from([None, (out_features,), (out_features + 1,)]))
    bias = None if bias is None else make(bias, data.draw(mostly(dtype, F32, F64)))
    agree("linear", x, weight, bias)


@FUZZ
@given(unary_problems(), sometimes(st.integers(-4, 4), st.sampled_from([None, 1.0, "0"])))
def test_softmax_and_log_softmax(problem, axis):
    x, _ = problem
    agree("softmax", x, axis)
    agree("log_softmax", x, axis=axis)


@FUZZ
@given(st.integers(0, 2**32 - 1), float_dtype(), st.integers(0, 5), st.integers(0, 5), st.data())
def test_cross_entropy(seed, dtype, n, c, data):
    make = Arrays(seed)
    logits = make(data.draw(maybe_wrong_shape((n, c))), dtype)
    if dtype in (F32, F64):  # huge logits must stay finite
        logits *= data.draw(st.sampled_from([1, 1, 100, 1e30]))
    targets = make.rng.integers(0, max(c, 1), size=data.draw(maybe_wrong_shape((n,))))
    if targets.size and data.draw(st.booleans()):
        targets.flat[0] = data.draw(st.sampled_from([-1, c, c + 7]))
    targets = targets.astype(data.draw(mostly(np.int64, np.int32, np.uint8, np.float32)))
    agree("cross_entropy", logits, targets)


@FUZZ
@given(unary_problems(low=0.0, high=1.0), st.sampled_from([1e-7, 1e-3, 0.0, 0.5, 0.7, -1.0]))
def test_binary_cross_entropy(problem, eps):
    probs, targets = problem
    agree("binary_cross_entropy", probs, targets, eps)


# --- the layers -----------------------------------------------------------------------

LAYER_KINDS = ["Conv2d", "MaxPool2d", "BatchNorm2d", "Linear", "ReLU", "Sigmoid", "Flatten"]


@st.composite
def layer_problems(draw):
    """A layer with random (sometimes nonsense) settings and an input of random rank."""
    kind = draw(st.sampled_from(LAYER_KINDS))
    c, f = draw(st.sampled_from(channel_counts(F32))), draw(st.integers(1, 4))
    settings_ = {
        "Conv2d": lambda: {
            "in_channels": c,
            "out_channels": draw(st.sampled_from(channel_counts(F32))),
            "kernel_size": draw(int_or_pair(1, 3)),
            "stride": draw(int_or_pair(1, 2)),
            "padding": draw(int_or_pair(0, 2)),
            "dilation": draw(int_or_pair(1, 2)),
            "rng": 0,
            "dtype": draw(mostly(F32, F64)),
        },
        "MaxPool2d": lambda: {
            "kernel_size": draw(int_or_pair(1, 3)),
            "stride": draw(st.one_of(st.none(), int_or_pair(1, 3))),
            "padding": draw(int_or_pair(0, 1)),
        },
        "BatchNorm2d": lambda: {"num_features": c, "dtype": draw(mostly(F32, F64))},
        "Linear": lambda: {"in_features": f, "out_features": 2, "rng": 0},
    }.get(kind, dict)()
    dtype = draw(float_dtype())
    if kind == "Linear":
        shape = draw(maybe_wrong_shape((draw(st.integers(0, 3)), f)))
    else:
        shape = draw(maybe_wrong_shape((draw(st.integers(0, 3)), c, *draw(SHAPES)[:2])))
    return kind, settings_, Arrays(draw(st.integers(0, 2**32 - 1))), shape, dtype


def _reference_layer(kind, kw, state, x, g):
    """Output and input gradient of a fresh layer ``kind`` in training mode, composed of
    reference ops, for a batched ``x`` and output gradient ``g``."""
    if kind == "Conv2d":
        geo = {k: kw[k] for k in ("stride", "padding", "dilation")}
        w = state["weight"]
        y = R.conv2d(x, w, state["bias"], **geo)
        return y, (lambda g: R.conv2d_grad_input(x.shape, w, g, **geo))
    if kind == "MaxPool2d":
        y, idx = R.max_pool2d(x, kw["kernel_size"], kw["stride"], kw["padding"])
        return y, (lambda g: R.max_pool2d_backward(g, idx, x.shape))
    if kind == "BatchNorm2d":
        y, mean, invstd = R.batch_norm2d(
            x, state["weight"], state["bias"], state["running_mean"], state["running_var"]
        )
        return y, (lambda g: R.batch_norm2d_backward(g, x, state["weight"], mean, invstd)[0])
    if kind == "Linear":
        w = state["weight"]
        return R.linear(x, w, state["bias"]), (lambda g: (g @ w).astype(x.dtype))
    if kind == "ReLU":
        return R.relu(x), (lambda g: R.relu_backward(g, x))
    if kind == "Sigmoid":
        y = R.sigmoid(x)
        return y, (lambda g: R.sigmoid_backward(g, y))
    # Flatten: (N, ...) -> (N, rest); one unbatched sample (C, H, W) -> (C*H*W,)
    flat = x.shape if x.ndim < 3 else (x.size,) if x.ndim == 3 else (len(x), prod(x.shape[1:]))
    return x.reshape(flat), (lambda g: g.reshape(x.shape))


@FUZZ
@given(layer_problems())
def test_layers(problem):
    """A layer's forward and backward give the reference's results or a ValueError or
    TypeError naming the layer or the op (unbatched (C, H, W) input: as a batch of one)."""
    kind, kw, make, shape, dtype = problem
    x = make(shape, dtype)
    try:
        layer = getattr(nn, kind)(**kw)
        state = {k: v.copy() for k, v in layer.state_dict().items()}
        y = layer(x)
    except (ValueError, TypeError) as e:
        assert str(e).split(":")[0] in (kind, *F.__all__), str(e)
        return
    g = make(y.shape, y.dtype)
    grad_x = layer.backward(g)
    unbatched = kind in ("Conv2d", "MaxPool2d", "BatchNorm2d") and x.ndim == 3
    xb, gb = (x[None], g[None]) if unbatched else (x, g)
    want_y, backward = _reference_layer(kind, kw, state, xb, gb)
    want_grad = backward(gb)
    if unbatched:
        want_y, want_grad = want_y[0], want_grad[0]
    if kind == "Flatten":  # a reshape, of any dtype
        np.testing.assert_array_equal(y, want_y, strict=True)
        np.testing.assert_array_equal(grad_x, want_grad, strict=True)
        return
    assert_close(y, want_y, want_y.dtype)
    assert_close(grad_x, want_grad, x.dtype)


# --- coverage and the crash check ----------------------------------------------------

FUZZERS = [
    test_conv2d,
    test_conv2d_grad_input,
    test_conv2d_grad_weight,
    test_conv2d_grad_bias,
    test_max_pool2d,
    test_max_pool2d_backward,
    test_batch_norm2d,
    test_batch_norm2d_backward,
    test_relu,
    test_sigmoid,
    test_linear,
    test_softmax_and_log_softmax,
    test_cross_entropy,
    test_binary_cross_entropy,
    test_layers,
]


def test_every_public_function_is_fuzzed():
    """Each name of ``F.__all__`` (the same as ``R.__all__``) is called by some fuzzer."""
    assert sorted(F.__all__) == sorted(R.__all__)
    source = Path(__file__).read_text()
    for name in F.__all__:
        assert f'agree("{name}"' in source, name


def _run_fuzzers_in_a_child(examples, **env_vars):
    """Run every fuzzer in a child process; assert it exits 0, not by a signal."""
    code = "import test_fuzz\nfor f in test_fuzz.FUZZERS:\n    f()\nprint('done')"
    env = dict(os.environ, FASTCNN_FUZZ_EXAMPLES=str(examples), **env_vars)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode >= 0, f"child killed by signal {-proc.returncode}: {proc.stderr}"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "done"


def test_fuzzing_in_a_subprocess_does_not_crash():
    _run_fuzzers_in_a_child(5)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("FASTCNN_BOUNDSCHECK_FUZZ"),
    reason="opt-in (set FASTCNN_BOUNDSCHECK_FUZZ=1): recompiles every kernel with bounds "
    "checks, about 2 minutes",
)
def test_fuzzing_with_bounds_checks(tmp_path):
    """The fuzzers in a child whose kernels are compiled with Numba's bounds checks (into a
    fresh cache): a kernel indexing outside an array raises IndexError there, which fails
    the child."""
    _run_fuzzers_in_a_child(30, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
