"""2-D max-pooling with indices, and its backward.

Same loop over window offsets as :mod:`fastcnn.reference.conv`, over an input padded with
minus infinity. The forward only selects values, so it stays in the input dtype; the
backward sums in float64 and returns the input dtype.
"""

import numpy as np

from fastcnn import _checks


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max-pool ``x`` (N, C, H, W) over ``kernel_size`` windows, as
    ``torch.nn.functional.max_pool2d(..., return_indices=True)``.

    ``stride`` defaults to ``kernel_size``; ``padding`` (at most half the kernel) counts as
    minus infinity; floor mode. Returns ``(y, indices)``: ``y`` (N, C, OH, OW) of ``x``'s
    dtype and int64 ``indices`` of the same shape, flat within each input plane
    (``h * W + w``). Ties go to the first maximum in row-major window order. A NaN wins its
    window; with several NaNs the last one's index is returned, exactly as torch's CPU
    kernel (whose test is ``value > best or isnan(value)``).
    """
    g = _checks.max_pool2d_args(x, kernel_size, stride, padding)
    xp = np.full((g.n, g.c, g.h + 2 * g.ph, g.w + 2 * g.pw), -np.inf, dtype=x.dtype)
    xp[:, :, g.ph : g.ph + g.h, g.pw : g.pw + g.w] = x

    # Top-left input pixel of each window, in unpadded coordinates: (OH, 1) and (1, OW).
    top = (np.arange(g.oh) * g.sh - g.ph)[:, None]
    left = (np.arange(g.ow) * g.sw - g.pw)[None, :]

    # Start from minus infinity at the window's first real pixel (torch does the same), so
    # a window holding only -inf still points inside the input; padding never wins.
    y = np.full((g.n, g.c, g.oh, g.ow), -np.inf, dtype=x.dtype)
    first = np.maximum(top, 0) * g.w + np.maximum(left, 0)
    indices = np.broadcast_to(first, y.shape).astype(np.int64)
    for i in range(g.kh):
        for j in range(g.kw):
            rows = slice(i, i + g.sh * (g.oh - 1) + 1, g.sh)
            cols = slice(j, j + g.sw * (g.ow - 1) + 1, g.sw)
            v = xp[:, :, rows, cols]
            wins = (v > y) | np.isnan(v)
            y = np.where(wins, v, y)
            indices = np.where(wins, (top + i) * g.w + (left + j), indices)
    return y, indices


def max_pool2d_backward(grad_out, indices, input_shape):
    """Gradient of ``max_pool2d``: each ``grad_out`` (N, C, OH, OW) value is added to the
    input pixel its ``indices`` entry names (overlapping windows accumulate).

    Returns ``grad_x`` of ``input_shape`` (N, C, H, W) and ``grad_out``'s dtype.
    """
    n, c, h, w = _checks.max_pool2d_backward_args(grad_out, indices, input_shape)
    per_plane = grad_out.shape[2] * grad_out.shape[3]
    grad_x = np.zeros((n * c, h * w))
    planes = np.arange(n * c)[:, None]
    np.add.at(
        grad_x,
        (planes, indices.reshape(n * c, per_plane)),
        grad_out.reshape(n * c, per_plane),
    )
    return grad_x.reshape(n, c, h, w).astype(grad_out.dtype)
