"""Batch normalisation over the channels of ``(N, C, H*W)`` arrays.

The training kernels run over a range of channels (big inputs split over threads,
:mod:`fastcnn._threads`): a channel's statistics, its output values and its parameter
gradients belong to one part. One channel's data (N planes of H*W values) is small
enough to stay in cache across the passes. Sums run in the input dtype over one plane
(in SIMD vectors, by :func:`fastcnn._kernels.simd.centred_sums`) and are accumulated
across planes in float64, so float32 statistics stay accurate to about 1e-6 relative;
the variance is a second pass over ``x - mean`` (no cancellation).
"""

import math

import numpy as np

from fastcnn import _threads
from fastcnn._config import jit
from fastcnn._kernels.simd import VECTOR_BYTES, centred_sums, token


def forward_train(x, weight, bias, eps, y, mean, var):
    """Normalise with batch statistics. Returns the per-channel inverse std (float64).

    x, y: (N, C, HW) C-contiguous; weight, bias: (C,); eps: float. Fills ``mean`` and the
    biased ``var`` (both float64, (C,)) and y = (x - mean) * invstd * weight + bias.
    """
    invstd = np.empty(x.shape[1], np.float64)
    _over_channels(_forward_train, x, weight, bias, eps, y, mean, var, invstd)
    return invstd


def _over_channels(kernel, x, *args) -> None:
    c = x.shape[1]
    count = _threads.parts(c, x.size, _threads.GRAIN_ELEMENTS)
    _threads.run(kernel, count, c, x, *args, token(VECTOR_BYTES))


def backward(grad_out, x, weight, mean, invstd, grad_x, grad_weight, grad_bias):
    """Gradients of training-mode batch norm (statistics from the batch).

    grad_out, x, grad_x: (N, C, HW) C-contiguous; weight, mean, invstd, grad_weight,
    grad_bias: (C,). With xhat = (x - mean) * invstd and M = N*HW values per channel:
    grad_bias = sum(g), grad_weight = sum(g * xhat),
    grad_x = weight * invstd * (g - grad_bias / M - xhat * grad_weight / M).
    """
    _over_channels(_backward, x, grad_out, weight, mean, invstd, grad_x, grad_weight, grad_bias)


@jit()
def _forward_train(part, c0, c1, x, weight, bias, eps, y, mean, var, invstd, width):
    n, c, hw = x.shape
    count = n * hw
    flat = x.reshape(-1)
    zero = x.dtype.type(0)
    for ch in range(c0, c1):
        total = 0.0
        for i in range(n):
            total += centred_sums(flat, zero, None, zero, (i * c + ch) * hw, hw, width)[0]
        mu = x.dtype.type(total / count)
        total = 0.0
        for i in range(n):
            total += centred_sums(flat, mu, None, zero, (i * c + ch) * hw, hw, width)[1]
        mean[ch] = mu
        var[ch] = total / count
        invstd[ch] = 1.0 / math.sqrt(var[ch] + eps)
        scale = x.dtype.type(invstd[ch] * weight[ch])
        shift = bias[ch]
        for i in range(n):
            for k in range(hw):
                y[i, ch, k] = (x[i, ch, k] - mu) * scale + shift


def forward_eval(x, weight, bias, mean, invstd, y):
    """y = (x - mean) * invstd * weight + bias with given statistics.

    x, y: (N, C, HW); weight, bias, mean, invstd: (C,) of x's dtype.
    """
    planes = x.shape[0] * x.shape[1]
    count = _threads.parts(planes, x.size, _threads.GRAIN_ELEMENTS)
    _threads.run(_forward_eval, count, planes, x, weight, bias, mean, invstd, y)


@jit()
def _forward_eval(part, p0, p1, x, weight, bias, mean, invstd, y):
    n, c, hw = x.shape
    for p in range(p0, p1):
        i = p // c
        ch = p - i * c
        mu = mean[ch]
        scale = invstd[ch] * weight[ch]
        shift = bias[ch]
        for k in range(hw):
            y[i, ch, k] = (x[i, ch, k] - mu) * scale + shift


@jit()
def _backward(part, c0, c1, x, grad_out, weight, mean, invstd, grad_x, grad_weight, grad_bias,
              width):  # fmt: skip
    n, c, hw = x.shape
    count = n * hw
    g_flat, x_flat = grad_out.reshape(-1), x.reshape(-1)
    zero = x.dtype.type(0)
    for ch in range(c0, c1):
        mu = mean[ch]
        sum_g = 0.0
        sum_gd = 0.0
        for i in range(n):
            plane_g, plane_gd = centred_sums(g_flat, zero, x_flat, mu, (i * c + ch) * hw, hw, width)
            sum_g += plane_g
            sum_gd += plane_gd
        istd = float(invstd[ch])
        grad_bias[ch] = sum_g
        grad_weight[ch] = sum_gd * istd
        mean_g = x.dtype.type(sum_g / count)
        k2 = x.dtype.type(sum_gd * istd * istd / count)
        scale = x.dtype.type(istd * weight[ch])
        for i in range(n):
            for k in range(hw):
                d = x[i, ch, k] - mu
                grad_x[i, ch, k] = scale * (grad_out[i, ch, k] - mean_g - d * k2)
