"""2-D convolution (cross-correlation, as PyTorch) and its three gradients.

One loop over the kernel taps ``(i, j)``. The input pixels a tap sees form a strided slice
of the zero-padded input, shaped like the output; with channels first, (C, N, H, W), that
slice is a (C, N * OH * OW) matrix, and the tap's contribution is one matrix product with
the (K, C) weights ``weight[:, :, i, j]``. Computed in float64, returned in the input dtype.
"""

import numpy as np

from fastcnn import _checks


def _channels_first(a):
    """(N, D, H, W) -> (D, N, H, W) in float64."""
    return a.transpose(1, 0, 2, 3).astype(np.float64)


def _padded(x, g):
    """``x`` channels first with ``padding`` zeros around each plane: (C, N, H + 2ph, W + 2pw)."""
    return np.pad(_channels_first(x), ((0, 0), (0, 0), (g.ph, g.ph), (g.pw, g.pw)))


def _window(g, i, j):
    """Index of the padded-input pixels that tap ``(i, j)`` sees: (..., OH, OW)."""
    rows = slice(i * g.dh, i * g.dh + g.sh * (g.oh - 1) + 1, g.sh)
    cols = slice(j * g.dw, j * g.dw + g.sw * (g.ow - 1) + 1, g.sw)
    return (..., rows, cols)


def _taps(weight):
    """``weight`` (K, C, kh, kw) as (kh, kw, K, C) float64: ``taps[i, j]`` is tap
    ``(i, j)``'s (K, C) matrix, contiguous so that ``@`` hands it to BLAS."""
    return np.ascontiguousarray(weight.transpose(2, 3, 0, 1), dtype=np.float64)


def _matrix(a, g):
    """(D, N, OH, OW) -> (D, N * OH * OW): one column per output pixel."""
    return a.reshape(a.shape[0], g.n * g.oh * g.ow)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Convolve ``x`` (N, C, H, W) with ``weight`` (K, C, kh, kw), plus ``bias`` (K,).

    ``stride``, ``padding`` (zeros) and ``dilation`` are ints or ``(h, w)`` pairs.
    Returns ``y`` (N, K, OH, OW) of ``x``'s dtype, as ``torch.nn.functional.conv2d``.
    """
    g = _checks.conv2d_args(x, weight, bias, stride, padding, dilation)
    xp = _padded(x, g)
    taps = _taps(weight)
    y = np.zeros((g.k, g.n * g.oh * g.ow))
    for i in range(g.kh):
        for j in range(g.kw):
            y += taps[i, j] @ _matrix(xp[_window(g, i, j)], g)
    if bias is not None:
        y += bias.astype(np.float64)[:, None]
    return y.reshape(g.k, g.n, g.oh, g.ow).transpose(1, 0, 2, 3).astype(x.dtype)


def conv2d_grad_input(input_shape, weight, grad_out, stride=1, padding=0, dilation=1):
    """Gradient of ``conv2d`` with respect to its input, as ``torch.nn.grad.conv2d_input``.

    ``input_shape`` (N, C, H, W), ``weight`` (K, C, kh, kw), ``grad_out`` (N, K, OH, OW).
    Returns ``grad_x`` of ``input_shape`` and ``weight``'s dtype.
    """
    g = _checks.conv2d_grad_input_args(input_shape, weight, grad_out, stride, padding, dilation)
    taps = _taps(weight)
    go = _matrix(_channels_first(grad_out), g)
    grad_xp = np.zeros((g.c, g.n, g.h + 2 * g.ph, g.w + 2 * g.pw))
    for i in range(g.kh):
        for j in range(g.kw):
            # Within one tap the window's pixels are distinct, so ``+=`` on the slice adds
            # each contribution once; overlaps between taps accumulate across iterations.
            grad_xp[_window(g, i, j)] += (taps[i, j].T @ go).reshape(g.c, g.n, g.oh, g.ow)
    grad_x = grad_xp[:, :, g.ph : g.ph + g.h, g.pw : g.pw + g.w].transpose(1, 0, 2, 3)
    return grad_x.astype(weight.dtype)


def conv2d_grad_weight(x, weight_shape, grad_out, stride=1, padding=0, dilation=1):
    """Gradient of ``conv2d`` with respect to its weight, as ``torch.nn.grad.conv2d_weight``.

    ``x`` (N, C, H, W), ``weight_shape`` (K, C, kh, kw), ``grad_out`` (N, K, OH, OW).
    Returns ``grad_w`` of ``weight_shape`` and ``x``'s dtype.
    """
    g = _checks.conv2d_grad_weight_args(x, weight_shape, grad_out, stride, padding, dilation)
    xp = _padded(x, g)
    go = _matrix(_channels_first(grad_out), g)
    grad_w = np.zeros((g.k, g.c, g.kh, g.kw))
    for i in range(g.kh):
        for j in range(g.kw):
            grad_w[:, :, i, j] = go @ _matrix(xp[_window(g, i, j)], g).T
    return grad_w.astype(x.dtype)


def conv2d_grad_bias(grad_out):
    """Gradient of ``conv2d`` with respect to its bias: ``grad_out`` (N, K, OH, OW) summed
    over N, OH and OW. Returns ``grad_b`` (K,) of ``grad_out``'s dtype."""
    _checks.conv2d_grad_bias_args(grad_out)
    return grad_out.astype(np.float64).sum(axis=(0, 2, 3)).astype(grad_out.dtype)
