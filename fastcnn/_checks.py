"""Argument checking shared by :mod:`fastcnn.functional`, :mod:`fastcnn.reference`, the
layers of :mod:`fastcnn.nn` and :mod:`fastcnn.compat`: the one home of argument checks.

Every public operation calls one ``*_args`` function here before touching data, so the
fast path and the reference reject the same input with the same message. Messages name
the operation and the argument, say what was expected and echo what was given.

This module imports NumPy only: ``fastcnn.reference`` must stay free of Numba.
"""

from __future__ import annotations

import functools
import operator
from typing import NamedTuple

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class ConvGeometry(NamedTuple):
    """Sizes of one 2-D convolution: input (n, c, h, w), weight (k, c, kh, kw), output."""

    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    oh: int
    ow: int


class PoolGeometry(NamedTuple):
    """Sizes of one 2-D max-pool: input (n, c, h, w), window, stride, padding, output."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    oh: int
    ow: int


# --- scalars -------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def as_size(value, name: str, op: str) -> int:
    """Check a positive int such as a channel or feature count."""
    if not _is_int(value):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {value!r}")
    return int(value)


def as_bool(value, name: str, op: str) -> bool:
    """Check a bool flag (``numpy.bool_`` included, ints refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
    return bool(value)


def as_dtype(dtype, op: str) -> np.dtype:
    """Normalise a float32/float64 dtype argument."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype!r}")
    return dt


def as_generator(rng, op: str) -> np.random.Generator:
    """Return ``rng`` if it is a Generator, a new one seeded by an int, or (``None``) a
    fresh one from OS entropy."""
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if _is_int(rng):
        if rng < 0:
            raise ValueError(f"{op}: rng seed must be a non-negative int, got {rng!r}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"{op}: rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")


def as_pair(value, name: str, op: str, *, minimum: int) -> tuple[int, int]:
    """Normalise an int or an ``(h, w)`` pair of ints, each at least ``minimum``."""
    if type(value) is tuple and len(value) == 2 and type(value[0]) is type(value[1]) is int:
        if min(value) >= minimum:
            return value  # the layers' own pairs, on every call: the checks below, faster
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(map(_is_int, value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return pair


def as_float(value, name: str, op: str, *, low=None, high=None, low_open=False) -> float:
    """Check a real scalar (not bool) and, optionally, its range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{op}: {name} must be finite, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{op}: {name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{op}: {name} must be <= {high}, got {value!r}")
    return value


def as_shape(value, name: str, op: str, ndim: int) -> tuple[int, ...]:
    """Check a shape given as a sequence of ``ndim`` non-negative ints."""
    if type(value) is tuple and len(value) == ndim and {*map(type, value)} == {int}:
        if min(value) >= 0:
            return value  # an array's own shape, on every call: the checks below, faster
    if not isinstance(value, (tuple, list)) or not all(map(_is_int, value)):
        raise TypeError(f"{op}: {name} must be a tuple of {ndim} ints, got {value!r}")
    if len(value) != ndim or min(value) < 0:
        raise ValueError(f"{op}: {name} must be {ndim} non-negative ints, got {tuple(value)!r}")
    return tuple(int(v) for v in value)


def as_axis(axis, ndim: int, name: str, op: str) -> int:
    """Normalise an axis index (negative counts from the end)."""
    if not _is_int(axis):
        raise TypeError(f"{op}: {name} must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: {name} must be in [{-ndim}, {ndim - 1}], got {axis}")
    return operator.index(axis) % ndim


# --- arrays --------------------------------------------------------------------------


def float_array(x, name: str, op: str, ndim: int | None = None, layout: str = "") -> np.ndarray:
    """Check that ``x`` is a float32/float64 ndarray, optionally of rank ``ndim``."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must have dtype float32 or float64, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        what = f"a {ndim}-D array {layout}".rstrip()
        raise ValueError(f"{op}: {name} must be {what}, got shape {x.shape}")
    return x


def same_dtype(op: str, **arrays) -> np.dtype:
    """All given arrays (``None`` skipped) must share one float dtype; return it."""
    given = {name: a.dtype for name, a in arrays.items() if a is not None}
    dtypes = set(given.values())
    if len(dtypes) > 1:
        listing = ", ".join(f"{name}={dt}" for name, dt in given.items())
        raise TypeError(f"{op}: arrays must share one dtype (float32 or float64), got {listing}")
    return dtypes.pop()


def vector(v, name: str, op: str, length: int) -> np.ndarray | None:
    """Check an optional per-channel vector of the given length."""
    if v is None:
        return None
    float_array(v, name, op)
    if v.shape != (length,):
        raise ValueError(f"{op}: {name} must have shape ({length},), got {v.shape}")
    return v


def _largest_unsigned(indices: np.ndarray) -> int:
    """The largest of the integer array ``indices`` read as unsigned integers of their own
    size and byte order: one reduction in which a negative index counts as larger than
    any valid one."""
    return int(indices.view(indices.dtype.str.replace("i", "u")).max())


def _out_size(size, kernel, stride, pad, dilation) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _grad_out(grad_out, op: str, expected: tuple[int, ...]) -> None:
    float_array(grad_out, "grad_out", op, 4)
    if grad_out.shape != expected:
        raise ValueError(f"{op}: grad_out must have shape {expected}, got {grad_out.shape}")


# --- convolution ---------------------------------------------------------------------


def _conv_geometry(op, input_shape, weight_shape, stride, padding, dilation) -> ConvGeometry:
    if _plain(stride) and _plain(padding) and _plain(dilation):
        return _known_conv_geometry(op, input_shape, weight_shape, stride, padding, dilation)
    return _new_conv_geometry(op, input_shape, weight_shape, stride, padding, dilation)


def _plain(value) -> bool:
    """An int or a pair of ints, exactly: a memo key that no other value equals (``True``
    and ``1.0`` equal ``1`` as keys, and must still be refused)."""
    t = type(value)
    return t is int or (t is tuple and len(value) == 2 and type(value[0]) is type(value[1]) is int)


def _new_conv_geometry(op, input_shape, weight_shape, stride, padding, dilation) -> ConvGeometry:
    n, c, h, w = input_shape
    k, wc, kh, kw = weight_shape
    sh, sw = as_pair(stride, "stride", op, minimum=1)
    ph, pw = as_pair(padding, "padding", op, minimum=0)
    dh, dw = as_pair(dilation, "dilation", op, minimum=1)
    if wc != c:
        raise ValueError(
            f"{op}: weight has {wc} input channels but the input has {c} "
            f"(input shape {tuple(input_shape)}, weight shape {tuple(weight_shape)})"
        )
    if min(k, kh, kw) < 1:
        raise ValueError(f"{op}: weight must have non-zero sizes, got shape {tuple(weight_shape)}")
    oh = _out_size(h, kh, sh, ph, dh)
    ow = _out_size(w, kw, sw, pw, dw)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: kernel {(kh, kw)} with dilation {(dh, dw)} is larger than the padded "
            f"input {(h + 2 * ph, w + 2 * pw)}"
        )
    return ConvGeometry(n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


# A layer asks for the same geometry on every call: the checks above run once per
# combination of shapes and plain settings (a bad one raises, and nothing is kept).
_known_conv_geometry = functools.lru_cache(maxsize=1024)(_new_conv_geometry)


def conv2d_args(x, weight, bias, stride, padding, dilation) -> ConvGeometry:
    """Check the arguments of ``conv2d``."""
    op = "conv2d"
    float_array(x, "x", op, 4, "(N, C, H, W)")
    float_array(weight, "weight", op, 4, "(out_channels, in_channels, kh, kw)")
    g = _conv_geometry(op, x.shape, weight.shape, stride, padding, dilation)
    vector(bias, "bias", op, g.k)
    same_dtype(op, x=x, weight=weight, bias=bias)
    return g


def conv2d_grad_input_args(input_shape, weight, grad_out, stride, padding, dilation):
    """Check the arguments of ``conv2d_grad_input``."""
    op = "conv2d_grad_input"
    input_shape = as_shape(input_shape, "input_shape", op, 4)
    float_array(weight, "weight", op, 4, "(out_channels, in_channels, kh, kw)")
    g = _conv_geometry(op, input_shape, weight.shape, stride, padding, dilation)
    _grad_out(grad_out, op, (g.n, g.k, g.oh, g.ow))
    same_dtype(op, weight=weight, grad_out=grad_out)
    return g


def conv2d_grad_weight_args(x, weight_shape, grad_out, stride, padding, dilation):
    """Check the arguments of ``conv2d_grad_weight``."""
    op = "conv2d_grad_weight"
    float_array(x, "x", op, 4, "(N, C, H, W)")
    weight_shape = as_shape(weight_shape, "weight_shape", op, 4)
    g = _conv_geometry(op, x.shape, weight_shape, stride, padding, dilation)
    _grad_out(grad_out, op, (g.n, g.k, g.oh, g.ow))
    same_dtype(op, x=x, grad_out=grad_out)
    return g


def conv2d_grad_bias_args(grad_out) -> None:
    """Check the argument of ``conv2d_grad_bias``."""
    float_array(grad_out, "grad_out", "conv2d_grad_bias", 4, "(N, out_channels, OH, OW)")


# --- pooling -------------------------------------------------------------------------


def max_pool2d_args(x, kernel_size, stride, padding) -> PoolGeometry:
    """Check the arguments of ``max_pool2d``; ``stride=None`` means the kernel size."""
    float_array(x, "x", "max_pool2d", 4, "(N, C, H, W)")
    if _plain(kernel_size) and (stride is None or _plain(stride)) and _plain(padding):
        return _known_pool_geometry(x.shape, kernel_size, stride, padding)
    return _new_pool_geometry(x.shape, kernel_size, stride, padding)


def _new_pool_geometry(shape, kernel_size, stride, padding) -> PoolGeometry:
    op = "max_pool2d"
    kh, kw = as_pair(kernel_size, "kernel_size", op, minimum=1)
    sh, sw = (kh, kw) if stride is None else as_pair(stride, "stride", op, minimum=1)
    ph, pw = as_pair(padding, "padding", op, minimum=0)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(
            f"{op}: padding must be at most half of kernel_size {(kh, kw)}, got {(ph, pw)}"
        )
    n, c, h, w = shape
    if h == 0 or w == 0:  # as torch: a window would hold padding only
        raise ValueError(f"{op}: x must have planes of at least one pixel, got {h}x{w}")
    oh = _out_size(h, kh, sh, ph, 1)
    ow = _out_size(w, kw, sw, pw, 1)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: kernel_size {(kh, kw)} is larger than the padded input "
            f"{(h + 2 * ph, w + 2 * pw)}"
        )
    return PoolGeometry(n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow)


# Memoised as the conv geometry above.
_known_pool_geometry = functools.lru_cache(maxsize=1024)(_new_pool_geometry)


def max_pool2d_backward_args(grad_out, indices, input_shape) -> tuple[int, ...]:
    """Check the arguments of ``max_pool2d_backward``; return the input shape."""
    op = "max_pool2d_backward"
    float_array(grad_out, "grad_out", op, 4, "(N, C, OH, OW)")
    input_shape = as_shape(input_shape, "input_shape", op, 4)
    if not isinstance(indices, np.ndarray):
        raise TypeError(f"{op}: indices must be a numpy.ndarray, got {type(indices).__name__}")
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must have an integer dtype, got {indices.dtype}")
    if indices.shape != grad_out.shape:
        raise ValueError(
            f"{op}: indices must have the shape of grad_out {grad_out.shape}, got {indices.shape}"
        )
    n, c, h, w = input_shape
    if (n, c) != grad_out.shape[:2]:
        raise ValueError(
            f"{op}: input_shape {input_shape} does not match grad_out {grad_out.shape} "
            "in batch and channels"
        )
    # The exact range is computed only for the message.
    if indices.size and _largest_unsigned(indices) >= h * w:
        lo, hi = int(indices.min()), int(indices.max())
        raise ValueError(
            f"{op}: indices must lie in [0, {h * w}) for input planes of {h}x{w}, "
            f"got values in [{lo}, {hi}]"
        )
    return input_shape


# --- batch norm ----------------------------------------------------------------------


def batch_norm2d_args(x, weight, bias, running_mean, running_var, training, momentum, eps):
    """Check the arguments of ``batch_norm2d``; return ``(momentum, eps)`` as floats."""
    op = "batch_norm2d"
    float_array(x, "x", op, 4, "(N, C, H, W)")
    c = x.shape[1]
    for name, v in (("weight", weight), ("bias", bias)):
        vector(v, name, op, c)
    for name, v in (("running_mean", running_mean), ("running_var", running_var)):
        vector(v, name, op, c)
        if v is not None and training and not v.flags.writeable:
            raise ValueError(f"{op}: {name} must be writeable: training updates it in place")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: give both running_mean and running_var, or neither")
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{op}: training must be a bool, got {training!r}")
    if not training and running_mean is None:
        raise ValueError(f"{op}: evaluation (training=False) needs running_mean and running_var")
    momentum = as_float(momentum, "momentum", op, low=0.0, high=1.0)
    eps = as_float(eps, "eps", op, low=0.0, low_open=True)
    same_dtype(
        op, x=x, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var
    )
    if training and x.shape[0] * x.shape[2] * x.shape[3] <= 1:
        raise ValueError(
            f"{op}: training needs more than one value per channel, got input shape {x.shape}"
        )
    return momentum, eps


def batch_norm2d_backward_args(grad_out, x, weight, save_mean, save_invstd) -> None:
    """Check the arguments of ``batch_norm2d_backward``."""
    op = "batch_norm2d_backward"
    float_array(x, "x", op, 4, "(N, C, H, W)")
    float_array(grad_out, "grad_out", op, 4, "(N, C, H, W)")
    if grad_out.shape != x.shape:
        raise ValueError(f"{op}: grad_out must have the shape of x {x.shape}, got {grad_out.shape}")
    c = x.shape[1]
    vector(weight, "weight", op, c)
    for name, v in (("save_mean", save_mean), ("save_invstd", save_invstd)):
        if v is None:
            raise TypeError(f"{op}: {name} must be a numpy.ndarray, got NoneType")
        vector(v, name, op, c)
    same_dtype(
        op, grad_out=grad_out, x=x, weight=weight, save_mean=save_mean, save_invstd=save_invstd
    )


# --- element-wise, linear and losses -------------------------------------------------


def unary_args(x, op: str, name: str = "x") -> None:
    """Check the argument of an element-wise op such as ``relu``."""
    float_array(x, name, op)


def binary_args(grad_out, other, op: str, other_name: str) -> None:
    """Check ``grad_out`` and a same-shaped, same-dtype second array."""
    float_array(grad_out, "grad_out", op)
    float_array(other, other_name, op)
    if grad_out.shape != other.shape:
        raise ValueError(
            f"{op}: grad_out must have the shape of {other_name} {other.shape}, "
            f"got {grad_out.shape}"
        )
    same_dtype(op, grad_out=grad_out, **{other_name: other})


def linear_args(x, weight, bias) -> None:
    """Check the arguments of ``linear``: x (..., in_features), weight (out, in)."""
    op = "linear"
    float_array(x, "x", op)
    float_array(weight, "weight", op, 2, "(out_features, in_features)")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{op}: x must have shape (..., {weight.shape[1]}) to match weight "
            f"{weight.shape}, got {x.shape}"
        )
    vector(bias, "bias", op, weight.shape[0])
    same_dtype(op, x=x, weight=weight, bias=bias)


def softmax_args(x, axis, op: str) -> int:
    """Check the arguments of ``softmax``/``log_softmax``; return the normalised axis."""
    float_array(x, "x", op)
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have at least one dimension, got a 0-D array")
    return as_axis(axis, x.ndim, "axis", op)


def cross_entropy_args(logits, targets) -> None:
    """Check ``cross_entropy``: logits (N, C) float, targets (N,) ints in [0, C)."""
    op = "cross_entropy"
    float_array(logits, "logits", op, 2, "(N, C)")
    if not isinstance(targets, np.ndarray):
        raise TypeError(f"{op}: targets must be a numpy.ndarray, got {type(targets).__name__}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must have an integer dtype, got {targets.dtype}")
    n, c = logits.shape
    if targets.shape != (n,):
        raise ValueError(f"{op}: targets must have shape ({n},), got {targets.shape}")
    if n == 0 or c == 0:
        raise ValueError(f"{op}: logits must have at least one row and one class, got {(n, c)}")
    if _largest_unsigned(targets) >= c:
        lo, hi = int(targets.min()), int(targets.max())
        raise ValueError(
            f"{op}: targets must be class indices in [0, {c}), got values in [{lo}, {hi}]"
        )


def binary_cross_entropy_args(probs, targets, eps) -> float:
    """Check ``binary_cross_entropy``: same-shaped float arrays, probs in [0, 1]."""
    op = "binary_cross_entropy"
    float_array(probs, "probs", op)
    float_array(targets, "targets", op)
    if probs.shape != targets.shape:
        raise ValueError(
            f"{op}: targets must have the shape of probs {probs.shape}, got {targets.shape}"
        )
    same_dtype(op, probs=probs, targets=targets)
    if probs.size == 0:
        raise ValueError(f"{op}: probs must not be empty, got shape {probs.shape}")
    eps = as_float(eps, "eps", op, low=0.0, high=0.5)
    for name, a in (("probs", probs), ("targets", targets)):
        # NaN passes (it propagates; fmin and fmax skip it); values outside [0, 1] are a
        # caller's bug.
        if np.fmin.reduce(a, axis=None) < 0 or np.fmax.reduce(a, axis=None) > 1:
            raise ValueError(
                f"{op}: {name} must lie in [0, 1], got values in [{np.nanmin(a)}, {np.nanmax(a)}]"
            )
    return eps
