"""Fully connected layer."""

from __future__ import annotations

import numpy as np

from fastcnn import _checks
from fastcnn import functional as F
from fastcnn._kernels import gemm
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
    (out_features,). One row (a sample, or a batch of one) takes a matrix-vector path:
    BLAS ``dot`` forward and for the input gradient; the weight gradient an outer
    product added straight into ``weight.grad``.
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        op = "Linear"
        self.in_features = _checks.as_size(in_features, "in_features", op)
        self.out_features = _checks.as_size(out_features, "out_features", op)
        has_bias = _checks.as_bool(bias, "bias", op)
        dtype = _checks.as_dtype(dtype, op)
        rng = _checks.as_generator(rng, op)
        shape = (self.out_features, self.in_features)
        self.weight = Parameter(uniform_init(rng, shape, self.in_features, dtype))
        self.bias = (
            Parameter(uniform_init(rng, (self.out_features,), self.in_features, dtype))
            if has_bias
            else None
        )
        self._scratch_w = None  # the weight gradient of one call, before it is added

    def _forward(self, x):
        bias = None if self.bias is None else self.bias.data
        if x.ndim >= 1 and x.size == x.shape[-1]:  # one row: a matrix-vector product
            y = self._forward_row(x, bias)
        else:
            y = F.linear(x, self.weight.data, bias)
        self._cache = x
        return y

    def _forward_row(self, x, bias):
        """``weight @ x + bias`` for one sample ``x`` (..., in_features) with one row.

        A BLAS matrix-vector product: the general path (rows of a GEMM) costs several
        times more for a single row. Same checks and messages as ``F.linear``.
        """
        _checks.linear_args(x, self.weight.data, bias)
        y = np.empty(x.shape[:-1] + (self.out_features,), x.dtype)
        np.dot(self.weight.data, x.reshape(-1), out=y.reshape(-1))
        if bias is not None:
            y += bias
        return y

    def _backward(self, grad_out, need_input_grad):
        x = self._cache
        expected = x.shape[:-1] + (self.out_features,)
        if grad_out.shape != expected:
            raise ValueError(f"Linear: grad_out must have shape {expected}, got {grad_out.shape}")
        if grad_out.dtype != x.dtype:
            raise TypeError(f"Linear: grad_out must have dtype {x.dtype}, got {grad_out.dtype}")
        if self._scratch_w is None or self._scratch_w.dtype != self.weight.dtype:
            self._scratch_w = np.empty_like(self.weight.data)
        if x.size == self.in_features:
            return self._backward_row(x, grad_out, need_input_grad)
        g2 = np.ascontiguousarray(grad_out.reshape(-1, self.out_features))
        x2 = np.ascontiguousarray(x.reshape(-1, self.in_features))
        self._add_weight_grad(lambda into, add: gemm.product(g2.T, x2, into, accumulate=add))
        if self.bias is not None:
            self.bias.add_grad(g2.sum(axis=0))
        if not need_input_grad:
            return None
        grad_x = np.empty(x2.shape, x.dtype)
        gemm.product(g2, self.weight.data, grad_x)
        return grad_x.reshape(x.shape)

    def _backward_row(self, x, grad_out, need_input_grad):
        """Backward of one row: the input gradient ``grad_out @ weight`` a BLAS
        matrix-vector product, the weight gradient an outer product added in place (not a
        (n, 1) x (1, m) GEMM)."""
        g, xv = grad_out.reshape(-1), x.reshape(-1)
        grad_x = None
        if need_input_grad:
            grad_x = np.empty(x.shape, x.dtype)
            np.dot(g, self.weight.data, out=grad_x.reshape(-1))
        self._add_weight_grad(lambda into, add: gemm.outer_update(g, xv, into, 1.0, add))
        if self.bias is not None:
            self.bias.add_grad(g)
        return grad_x

    def _add_weight_grad(self, add) -> None:
        """Add this call's weight gradient with ``add(into, accumulate)``, a kernel that adds
        it to the array ``into`` (writes it, if not ``accumulate``): straight into
        ``weight.grad`` (written after ``zero_grad``), or, if that is not an array the
        kernels can write, into the layer's reused buffer, then added from there."""
        into = self.weight.grad_into()
        if into is not None:
            add(*into)
            return
        add(self._scratch_w, False)
        self.weight.add_grad(self._scratch_w)

    def extra_repr(self) -> str:
        parts = [f"in_features={self.in_features}", f"out_features={self.out_features}"]
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts + dtype_repr(self.weight.dtype))
