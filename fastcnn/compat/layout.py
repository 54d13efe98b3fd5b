"""Bring channels-last (HWC) arrays into fastcnn's channels-first (CHW / NCHW) layout.

Code written with channels last (the conv-with-loops tutorials, Keras) stores
activations as (H, W, C) or (N, H, W, C), conv kernels as (kh, kw, C_in, C_out), and
the dense layer after a flatten as a kernel (in_features, out_features) whose rows follow
the HWC flatten order ``(h * W + w) * C + c``. fastcnn flattens CHW, ``(c * H + h) * W +
w``: transposing the images alone leaves the dense rows in the wrong order and the
outputs silently wrong. The three functions below convert each kind of array::

    x = from_hwc(images)                                      # (N, H, W, C) -> (N, C, H, W)
    conv.weight.data[:] = conv_weight_from_hwc(keras_kernel)  # (kh, kw, Ci, Co) -> (Co, Ci, kh, kw)
    fc.weight.data[:] = dense_weight_from_hwc(keras_dense, (7, 7, 64))  # -> (out, 7*7*64)

A conv-with-loops tutorial that keeps its filters as (num_filters, k, k) for a
one-channel image already has (C_out, k, k): add the input axis with ``filters[:, None]``.
"""

from __future__ import annotations

import numpy as np

from fastcnn.compat._arrays import as_float_array, as_shape

__all__ = ["conv_weight_from_hwc", "dense_weight_from_hwc", "from_hwc"]


def from_hwc(x) -> np.ndarray:
    """Activations (H, W, C) -> (C, H, W), or a batch (N, H, W, C) -> (N, C, H, W).

    Returns a C-contiguous copy; float32 and float64 are kept, other real dtypes become
    float64.
    """
    a = as_float_array(x, "x", "from_hwc")
    if a.ndim not in (3, 4):
        raise ValueError(f"from_hwc: x must be (H, W, C) or (N, H, W, C), got shape {a.shape}")
    axes = (2, 0, 1) if a.ndim == 3 else (0, 3, 1, 2)
    return np.ascontiguousarray(a.transpose(axes))


def conv_weight_from_hwc(kernel) -> np.ndarray:
    """A conv kernel (kh, kw, C_in, C_out) (Keras' layout) -> (C_out, C_in, kh, kw), as
    ``fastcnn.nn.Conv2d.weight`` and ``compat.Convolutional.kernels``; a contiguous copy.
    """
    a = as_float_array(kernel, "kernel", "conv_weight_from_hwc")
    if a.ndim != 4:
        raise ValueError(
            f"conv_weight_from_hwc: kernel must be (kh, kw, C_in, C_out), got shape {a.shape}"
        )
    return np.ascontiguousarray(a.transpose(3, 2, 0, 1))


def dense_weight_from_hwc(kernel, hwc_shape) -> np.ndarray:
    """The dense kernel after a channels-last flatten -> the weight after a CHW flatten.

    Args:
        kernel: (in_features, out_features), as Keras' ``Dense`` and the loops tutorials'
            ``input @ weights``, where ``in_features = H * W * C`` in HWC flatten order.
        hwc_shape: ``(H, W, C)`` of the activations that were flattened.

    Returns:
        (out_features, in_features) with columns in CHW flatten order: the layout of
        ``fastcnn.nn.Linear.weight`` and ``compat.Dense.weights``; a contiguous copy.
    """
    op = "dense_weight_from_hwc"
    a = as_float_array(kernel, "kernel", op)
    h, w, c = as_shape(hwc_shape, "hwc_shape", op, 3)
    if a.ndim != 2 or a.shape[0] != h * w * c:
        raise ValueError(
            f"{op}: kernel must be (in_features, out_features) with in_features = "
            f"{h} * {w} * {c} = {h * w * c} (hwc_shape {(h, w, c)}), got shape {a.shape}"
        )
    out = a.shape[1]
    return np.ascontiguousarray(a.reshape(h, w, c, out).transpose(3, 2, 0, 1).reshape(out, -1))
