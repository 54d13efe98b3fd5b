"""Inverted dropout."""

from __future__ import annotations

import numpy as np

from fastcnn._checks import as_float, as_generator
from fastcnn.nn.module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each element with probability ``p`` in training and scale the rest by ``1/(1-p)``.

    The identity in evaluation mode, as ``torch.nn.Dropout``. Any input shape.

    Args:
        p: drop probability in ``[0, 1]``.
        rng: ``numpy.random.Generator`` or int seed drawing the masks (``None``: fresh
            entropy). Its state (``layer.rng.bit_generator.state``) belongs in a checkpoint
            for a bitwise resume.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p = as_float(p, "p", "Dropout", low=0.0, high=1.0)
        self.rng = as_generator(rng, "Dropout")
        self._uniform = None  # reused buffer for the uniform draws

    def _forward(self, x):
        if not self.training or self.p == 0.0:
            self._cache = (x.shape, None)
            return x
        if (
            self._uniform is None
            or self._uniform.shape != x.shape
            or (self._uniform.dtype != x.dtype)
        ):
            self._uniform = np.empty(x.shape, x.dtype)
        self.rng.random(out=self._uniform, dtype=x.dtype)
        scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        # the scaled mask: 1/(1-p) where kept (probability 1-p), 0 where dropped
        mask = (self._uniform >= self.p) * x.dtype.type(scale)
        self._cache = (x.shape, mask)
        return x * mask

    def _backward(self, grad_out, need_input_grad):
        shape, mask = self._cache
        if grad_out.shape != shape:
            raise ValueError(f"Dropout: grad_out must have shape {shape}, got {grad_out.shape}")
        if not need_input_grad:
            return None
        return grad_out if mask is None else grad_out * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
