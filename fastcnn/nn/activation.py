"""Element-wise activation layers."""

from __future__ import annotations

from fastcnn import functional as F
from fastcnn.nn.module import Module

__all__ = ["ReLU", "Sigmoid"]


class ReLU(Module):
    """``max(x, 0)`` element-wise, any shape; backward passes the gradient where ``x > 0``."""

    def _forward(self, x):
        self._cache = x
        return F.relu(x)

    def _backward(self, grad_out, need_input_grad):
        return F.relu_backward(grad_out, self._cache) if need_input_grad else None


class Sigmoid(Module):
    """``1 / (1 + exp(-x))`` element-wise, any shape; backward uses the saved output."""

    def _forward(self, x):
        y = F.sigmoid(x)
        self._cache = y
        return y

    def _backward(self, grad_out, need_input_grad):
        return F.sigmoid_backward(grad_out, self._cache) if need_input_grad else None
