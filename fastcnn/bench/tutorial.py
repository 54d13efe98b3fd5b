"""A from-scratch convolution in the style of CNN tutorials: a comparison baseline only.

Each output plane is a sum of ``scipy.signal.correlate2d`` calls, one per (image, output
channel, input channel) triple, and each gradient likewise: the loops that fastcnn exists
to replace. Same signatures as ``fastcnn.functional`` (stride 1, dilation 1), so
``fastcnn bench`` and ``benchmarks/`` time it like the other implementations.

It imports SciPy, which is not a fastcnn dependency (it comes with the ``train`` extra,
through scikit-learn): importing this module raises ``ImportError`` where SciPy is missing,
and only the bench imports it, when asked to.
"""

import numpy as np
from scipy import signal


def _pad(x: np.ndarray, padding: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def conv2d(x, weight, bias=None, padding=0):
    """Cross-correlate ``x`` (N, C, H, W) with ``weight`` (K, C, kh, kw) -> (N, K, OH, OW)."""
    x = _pad(x, padding)
    n_images, n_out = x.shape[0], weight.shape[0]
    out = None
    for n in range(n_images):
        for k in range(n_out):
            plane = sum(
                signal.correlate2d(x[n, c], weight[k, c], mode="valid") for c in range(x.shape[1])
            )
            if out is None:
                out = np.zeros((n_images, n_out, *plane.shape), x.dtype)
            out[n, k] = plane if bias is None else plane + bias[k]
    return out


def conv2d_grad_input(input_shape, weight, grad_out, padding=0):
    """Gradient of :func:`conv2d` with respect to its input, shape ``input_shape``."""
    n_images, n_in, h, w = input_shape
    grad_x = np.zeros((n_images, n_in, h + 2 * padding, w + 2 * padding), grad_out.dtype)
    for n in range(n_images):
        for c in range(n_in):
            for k in range(weight.shape[0]):
                grad_x[n, c] += signal.convolve2d(grad_out[n, k], weight[k, c], mode="full")
    return grad_x[:, :, padding : padding + h, padding : padding + w]


def conv2d_grad_weight(x, weight_shape, grad_out, padding=0):
    """Gradient of :func:`conv2d` with respect to its weight, shape ``weight_shape``."""
    x = _pad(x, padding)
    grad_w = np.zeros(weight_shape, grad_out.dtype)
    for k in range(weight_shape[0]):
        for c in range(weight_shape[1]):
            for n in range(x.shape[0]):
                grad_w[k, c] += signal.correlate2d(x[n, c], grad_out[n, k], mode="valid")
    return grad_w
