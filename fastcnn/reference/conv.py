"""2-D convolution (cross-correlation, as PyTorch) and its three gradients.

One loop over the kernel offsets ``(i, j)``: for each, the input pixels that offset sees
form a strided slice of the zero-padded input, shaped like the output, and that slice meets
the weights ``weight[:, :, i, j]`` in one matrix product over the channels. Computed in float64,
returned in the input dtype.
"""

import numpy as np

from fastcnn import _checks


def _padded(x, g):
    """``x`` in float64 with ``padding`` zeros around each plane: (N, C, H + 2ph, W + 2pw)."""
    pad = ((0, 0), (0, 0), (g.ph, g.ph), (g.pw, g.pw))
    return np.pad(x.astype(np.float64), pad)


def _window(g, i, j):
    """Index of the padded-input pixels that kernel offset ``(i, j)`` sees: (..., OH, OW)."""
    rows = slice(i * g.dh, i * g.dh + g.sh * (g.oh - 1) + 1, g.sh)
    cols = slice(j * g.dw, j * g.dw + g.sw * (g.ow - 1) + 1, g.sw)
    return (..., rows, cols)


def _columns(a, g):
    """(N, D, OH, OW) -> (N, D, OH * OW): one column per output pixel, ready for ``@``."""
    return a.reshape(g.n, a.shape[1], g.oh * g.ow)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Convolve ``x`` (N, C, H, W) with ``weight`` (K, C, kh, kw), plus ``bias`` (K,).

    ``stride``, ``padding`` (zeros) and ``dilation`` are ints or ``(h, w)`` pairs.
    Returns ``y`` (N, K, OH, OW) of ``x``'s dtype, as ``torch.nn.functional.conv2d``.
    """
    g = _checks.conv2d_args(x, weight, bias, stride, padding, dilation)
    xp = _padded(x, g)
    w = weight.astype(np.float64)
    y = np.zeros((g.n, g.k, g.oh * g.ow))
    for i in range(g.kh):
        for j in range(g.kw):
            # (K, C) @ (N, C, OH*OW): every output pixel's tap (i, j), all images at once.
            y += w[:, :, i, j] @ _columns(xp[_window(g, i, j)], g)
    if bias is not None:
        y += bias.astype(np.float64)[:, None]
    return y.reshape(g.n, g.k, g.oh, g.ow).astype(x.dtype)


def conv2d_grad_input(input_shape, weight, grad_out, stride=1, padding=0, dilation=1):
    """Gradient of ``conv2d`` with respect to its input, as ``torch.nn.grad.conv2d_input``.

    ``input_shape`` (N, C, H, W), ``weight`` (K, C, kh, kw), ``grad_out`` (N, K, OH, OW).
    Returns ``grad_x`` of ``input_shape`` and ``weight``'s dtype.
    """
    g = _checks.conv2d_grad_input_args(input_shape, weight, grad_out, stride, padding, dilation)
    w = weight.astype(np.float64)
    go = _columns(grad_out.astype(np.float64), g)
    grad_xp = np.zeros((g.n, g.c, g.h + 2 * g.ph, g.w + 2 * g.pw))
    for i in range(g.kh):
        for j in range(g.kw):
            # (C, K) @ (N, K, OH*OW). Within one offset the window's pixels are distinct,
            # so ``+=`` on the slice adds each contribution once.
            grad_xp[_window(g, i, j)] += (w[:, :, i, j].T @ go).reshape(g.n, g.c, g.oh, g.ow)
    grad_x = grad_xp[:, :, g.ph : g.ph + g.h, g.pw : g.pw + g.w]
    return grad_x.astype(weight.dtype)


def conv2d_grad_weight(x, weight_shape, grad_out, stride=1, padding=0, dilation=1):
    """Gradient of ``conv2d`` with respect to its weight, as ``torch.nn.grad.conv2d_weight``.

    ``x`` (N, C, H, W), ``weight_shape`` (K, C, kh, kw), ``grad_out`` (N, K, OH, OW).
    Returns ``grad_w`` of ``weight_shape`` and ``x``'s dtype.
    """
    g = _checks.conv2d_grad_weight_args(x, weight_shape, grad_out, stride, padding, dilation)
    xp = _padded(x, g)
    go = _columns(grad_out.astype(np.float64), g)
    grad_w = np.zeros((g.k, g.c, g.kh, g.kw))
    for i in range(g.kh):
        for j in range(g.kw):
            # (N, K, OH*OW) @ (N, OH*OW, C), summed over the images.
            patches = _columns(xp[_window(g, i, j)], g)
            grad_w[:, :, i, j] = np.sum(go @ patches.transpose(0, 2, 1), axis=0)
    return grad_w.astype(x.dtype)


def conv2d_grad_bias(grad_out):
    """Gradient of ``conv2d`` with respect to its bias: ``grad_out`` (N, K, OH, OW) summed
    over N, OH and OW. Returns ``grad_b`` (K,) of ``grad_out``'s dtype."""
    _checks.conv2d_grad_bias_args(grad_out)
    return grad_out.astype(np.float64).sum(axis=(0, 2, 3)).astype(grad_out.dtype)
