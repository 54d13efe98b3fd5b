"""2-D max pooling layer."""

from __future__ import annotations

import numpy as np

from fastcnn import functional as F
from fastcnn._checks import as_pair
from fastcnn._kernels import pool
from fastcnn.nn.module import Module

__all__ = ["MaxPool2d"]


class MaxPool2d(Module):
    """2-D max pooling over NCHW input, as ``torch.nn.MaxPool2d`` (floor mode, dilation 1).

    Args:
        kernel_size: window, an int or an ``(h, w)`` pair.
        stride: step, an int or a pair; ``None`` (default) means ``kernel_size``.
        padding: implicit minus-infinity padding, at most half the window.

    Shapes: input (N, C, H, W) or (C, H, W); output (N, C, OH, OW) or (C, OH, OW).
    Forward saves the int64 argmax indices; backward scatters through them.
    """

    _batched_ndim = 4

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        op = "MaxPool2d"
        self.kernel_size = as_pair(kernel_size, "kernel_size", op, minimum=1)
        self.stride = (
            self.kernel_size if stride is None else as_pair(stride, "stride", op, minimum=1)
        )
        self.padding = as_pair(padding, "padding", op, minimum=0)
        kh, kw = self.kernel_size
        if self.padding[0] > kh // 2 or self.padding[1] > kw // 2:
            raise ValueError(
                f"{op}: padding must be at most half of kernel_size {self.kernel_size}, "
                f"got {padding!r}"
            )

    def _forward(self, x):
        y, indices = F.max_pool2d(x, self.kernel_size, self.stride, self.padding)
        self._cache = (indices, x.shape, y.dtype)
        return y

    def _backward(self, grad_out, need_input_grad):
        if not need_input_grad:
            return None
        indices, input_shape, dtype = self._cache
        if grad_out.shape != indices.shape:  # else the functional op blames ``indices``
            raise ValueError(
                f"MaxPool2d: grad_out must have the last output's shape {indices.shape}, "
                f"got {grad_out.shape}"
            )
        flags = grad_out.flags
        if grad_out.dtype != dtype or not (flags.c_contiguous and flags.writeable):
            return F.max_pool2d_backward(grad_out, indices, input_shape)  # checks, converts
        # The indices are the forward's own, in range by construction: no scan over them.
        grad_x = np.empty(input_shape, grad_out.dtype)
        pool.max_pool_backward(grad_out, indices, grad_x)
        return grad_x

    def extra_repr(self) -> str:
        parts = [f"kernel_size={_short(self.kernel_size)}"]
        if self.stride != self.kernel_size:
            parts.append(f"stride={_short(self.stride)}")
        if self.padding != (0, 0):
            parts.append(f"padding={_short(self.padding)}")
        return ", ".join(parts)


def _short(pair):
    return pair[0] if pair[0] == pair[1] else pair
