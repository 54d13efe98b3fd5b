"""2-D convolution layer."""

from __future__ import annotations

import numpy as np

from fastcnn import functional as F
from fastcnn._checks import as_bool, as_dtype, as_generator, as_pair, as_size
from fastcnn.nn.module import Module, Parameter, dtype_repr, uniform_init

__all__ = ["Conv2d"]


class Conv2d(Module):
    """2-D cross-correlation over NCHW input, as ``torch.nn.Conv2d`` (groups=1, zeros padding).

    Args:
        in_channels, out_channels: channel counts, ``>= 1``.
        kernel_size, stride, padding, dilation: an int or an ``(h, w)`` pair.
        bias: learn an additive bias per output channel.
        rng: ``numpy.random.Generator`` or int seed for the initial weights (``None``:
            fresh entropy). Weight and bias are drawn from U(-1/sqrt(fan_in),
            1/sqrt(fan_in)), fan_in = in_channels * kh * kw, as torch's default.
        dtype: float32 (default) or float64.

    Shapes: input (N, C_in, H, W) or one sample (C_in, H, W); output (N, C_out, OH, OW)
    or (C_out, OH, OW). Parameters: ``weight`` (C_out, C_in, kh, kw), ``bias`` (C_out,).
    """

    _batched_ndim = 4

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=True,
        rng=None,
        dtype=np.float32,
    ):
        super().__init__()
        op = "Conv2d"
        self.in_channels = as_size(in_channels, "in_channels", op)
        self.out_channels = as_size(out_channels, "out_channels", op)
        self.kernel_size = as_pair(kernel_size, "kernel_size", op, minimum=1)
        self.stride = as_pair(stride, "stride", op, minimum=1)
        self.padding = as_pair(padding, "padding", op, minimum=0)
        self.dilation = as_pair(dilation, "dilation", op, minimum=1)
        has_bias = as_bool(bias, "bias", op)
        dtype = as_dtype(dtype, op)
        rng = as_generator(rng, op)
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        shape = (self.out_channels, self.in_channels, kh, kw)
        self.weight = Parameter(uniform_init(rng, shape, fan_in, dtype))
        self.bias = (
            Parameter(uniform_init(rng, (self.out_channels,), fan_in, dtype)) if has_bias else None
        )

    def _forward(self, x):
        self._check_channels(x, self.in_channels, "in_channels")
        bias = None if self.bias is None else self.bias.data
        y = F.conv2d(x, self.weight.data, bias, self.stride, self.padding, self.dilation)
        self._cache = x
        return y

    def _backward(self, grad_out, need_input_grad):
        x, w = self._cache, self.weight.data
        s, p, d = self.stride, self.padding, self.dilation
        self.weight.add_grad(F.conv2d_grad_weight(x, w.shape, grad_out, s, p, d))
        if self.bias is not None:
            self.bias.add_grad(F.conv2d_grad_bias(grad_out))
        if not need_input_grad:
            return None
        return F.conv2d_grad_input(x.shape, w, grad_out, s, p, d)

    def extra_repr(self) -> str:
        parts = [str(self.in_channels), str(self.out_channels)]
        parts += [f"kernel_size={self.kernel_size}", f"stride={self.stride}"]
        if self.padding != (0, 0):
            parts.append(f"padding={self.padding}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts + dtype_repr(self.weight.dtype))
