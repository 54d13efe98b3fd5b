"""Fully connected layer."""

from __future__ import annotations

import numpy as np

from fastcnn import _matmul
from fastcnn import functional as F
from fastcnn._checks import as_bool, as_dtype, as_generator, as_size
from fastcnn._threads import guard
from fastcnn.nn.module import Module, Parameter, dtype_repr, uniform_init

__all__ = ["Linear"]


class Linear(Module):
    """``y = x @ weight.T + bias``, as ``torch.nn.Linear``.

    Args:
        in_features, out_features: sizes, ``>= 1``.
        bias: learn an additive bias.
        rng: ``numpy.random.Generator`` or int seed (``None``: fresh entropy); weight and
            bias from U(-1/sqrt(in_features), 1/sqrt(in_features)) as torch's default.
        dtype: float32 (default) or float64.

    Shapes: input (..., in_features), including one sample (in_features,); output
    (..., out_features). Parameters ``weight`` (out_features, in_features), ``bias``
    (out_features,).
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        op = "Linear"
        self.in_features = as_size(in_features, "in_features", op)
        self.out_features = as_size(out_features, "out_features", op)
        has_bias = as_bool(bias, "bias", op)
        dtype = as_dtype(dtype, op)
        rng = as_generator(rng, op)
        shape = (self.out_features, self.in_features)
        self.weight = Parameter(uniform_init(rng, shape, self.in_features, dtype))
        self.bias = (
            Parameter(uniform_init(rng, (self.out_features,), self.in_features, dtype))
            if has_bias
            else None
        )
        self._scratch_w = None  # grad_out.T @ x lands here before it is added to the grad

    def _forward(self, x):
        bias = None if self.bias is None else self.bias.data
        y = F.linear(x, self.weight.data, bias)
        self._cache = x
        return y

    def _backward(self, grad_out, need_input_grad):
        x = self._cache
        expected = x.shape[:-1] + (self.out_features,)
        if grad_out.shape != expected:
            raise ValueError(f"Linear: grad_out must have shape {expected}, got {grad_out.shape}")
        if grad_out.dtype != x.dtype:
            raise TypeError(f"Linear: grad_out must have dtype {x.dtype}, got {grad_out.dtype}")
        g2 = grad_out.reshape(-1, self.out_features)
        x2 = x.reshape(-1, self.in_features)
        if self._scratch_w is None:
            self._scratch_w = np.empty_like(self.weight.data)
        g2, x2 = np.ascontiguousarray(g2), np.ascontiguousarray(x2)
        with guard():
            _matmul.matmul_tn(g2, x2, self._scratch_w)
        self.weight.grad += self._scratch_w
        if self.bias is not None:
            self.bias.grad += g2.sum(axis=0)
        if not need_input_grad:
            return None
        grad_x = np.empty(x2.shape, x.dtype)
        with guard():
            _matmul.matmul(g2, self.weight.data, grad_x)
        return grad_x.reshape(x.shape)

    def extra_repr(self) -> str:
        parts = [f"in_features={self.in_features}", f"out_features={self.out_features}"]
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts + dtype_repr(self.weight.dtype))
