"""Element-wise activations over flat (1-D, C-contiguous) arrays, and ``exp_nonpos``.

Each kernel runs over elements ``i0 .. i1-1``; big arrays are split over threads
(:mod:`fastcnn._threads`), each part writing only its own elements. NaN propagates as in
PyTorch: ``relu(nan) = nan``, ``sigmoid(nan) = nan``.

``exp_nonpos`` is an exponential that LLVM can vectorise (``math.exp`` is a scalar libm
call per element); sigmoid, softmax and the cross-entropy only ever need ``exp`` of a
non-positive argument (``-|x|`` or ``x - max``), which keeps it simple.
"""

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from fastcnn import _threads
from fastcnn._config import jit


@intrinsic
def _pow2(typingctx, n, like):
    """``2**n`` in ``like``'s float type, built from the exponent bits; ``n`` (a float
    holding an integer) must give a normal number of that type."""
    if like == types.float32:
        int_type, bias, mantissa, float_type = ir.IntType(32), 127, 23, ir.FloatType()
    elif like == types.float64:
        int_type, bias, mantissa, float_type = ir.IntType(64), 1023, 52, ir.DoubleType()
    else:
        return None

    def codegen(context, builder, signature, args):
        exponent = builder.add(builder.fptosi(args[0], int_type), ir.Constant(int_type, bias))
        bits = builder.shl(exponent, ir.Constant(int_type, mantissa))
        return builder.bitcast(bits, float_type)

    return like(n, like), codegen


def exp_nonpos(t):
    """``exp(t)`` for ``t <= 0`` (or NaN) in ``t``'s float type; jitted code only.

    Cody-Waite reduction ``t = n ln2 + r`` with ``|r| <= ln2 / 2``, a Taylor polynomial
    for ``exp(r)`` (degree 7 for float32, 12 for float64: truncation error below
    1e-8 and 2e-16 relative), times ``2**n``. Below the normal range the result is 0.
    """
    raise NotImplementedError("exp_nonpos is for Numba-compiled code")


def _exp_nonpos_impl(ftype, lowest, degree):
    log2e, half, zero = ftype(1.4426950408889634), ftype(0.5), ftype(0)
    ln2_hi, ln2_lo = ftype(0.693145751953125), ftype(1.4286068203094173e-06)
    lowest = ftype(lowest)  # exp(lowest) is still a normal number
    coefs = tuple(ftype(1 / math.factorial(k)) for k in range(degree - 1, -1, -1))
    top = ftype(1 / math.factorial(degree))

    def impl(t):
        tc = max(t, lowest)
        n = np.floor(tc * log2e + half)
        r = (tc - n * ln2_hi) - n * ln2_lo
        p = top
        for c in coefs:
            p = p * r + c
        e = p * _pow2(n, t)
        e = zero if t < lowest else e
        return t if t != t else e

    return impl


@overload(exp_nonpos, inline="always")
def _exp_nonpos_overload(t):
    if t == types.float32:
        return _exp_nonpos_impl(np.float32, -87.0, 7)
    if t == types.float64:
        return _exp_nonpos_impl(np.float64, -708.0, 12)
    return None


def _elementwise(kernel, *arrays) -> None:
    """Run ``kernel`` over the elements of the flat ``arrays`` (the last one the output)."""
    size = arrays[-1].size
    _threads.run(kernel, _threads.parts(size, size, _threads.GRAIN_ELEMENTS), size, *arrays)


def relu(x, out):
    """out = max(x, 0), NaN kept. x, out: (size,)."""
    _elementwise(_relu, x, out)


def relu_backward(grad_out, x, out):
    """out = grad_out where x > 0 or x is NaN, else 0 (torch's ``threshold_backward``)."""
    _elementwise(_relu_backward, grad_out, x, out)


def sigmoid(x, out):
    """out = 1 / (1 + exp(-x)), without overflow. x, out: (size,)."""
    _elementwise(_sigmoid, x, out)


def sigmoid_backward(grad_out, y, out):
    """out = grad_out * y * (1 - y), y the sigmoid's output. All (size,)."""
    _elementwise(_sigmoid_backward, grad_out, y, out)


# Each kernel slices its part of the arrays first: indexing from 0 lets LLVM drop the
# negative-index checks and vectorise.


@jit()
def _relu(part, i0, i1, x, out):
    x, out = x[i0:i1], out[i0:i1]
    zero = x.dtype.type(0)
    for i in range(out.size):
        v = x[i]
        out[i] = zero if v <= zero else v


@jit()
def _relu_backward(part, i0, i1, grad_out, x, out):
    grad_out, x, out = grad_out[i0:i1], x[i0:i1], out[i0:i1]
    zero = x.dtype.type(0)
    for i in range(out.size):
        out[i] = zero if x[i] <= zero else grad_out[i]


@jit()
def _sigmoid(part, i0, i1, x, out):
    """Evaluated as 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0 with e = exp(-|x|) <= 1,
    so nothing overflows."""
    x, out = x[i0:i1], out[i0:i1]
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in range(out.size):
        v = x[i]
        e = exp_nonpos(-abs(v))  # NaN for NaN
        s = one / (one + e)
        out[i] = s if v >= zero else e * s


@jit()
def _sigmoid_backward(part, i0, i1, grad_out, y, out):
    grad_out, y, out = grad_out[i0:i1], y[i0:i1], out[i0:i1]
    one = y.dtype.type(1)
    for i in range(out.size):
        out[i] = grad_out[i] * y[i] * (one - y[i])
