"""Batch normalisation over NCHW input."""

from __future__ import annotations

import numpy as np

from fastcnn import functional as F
from fastcnn._checks import as_dtype, as_float, as_size
from fastcnn.nn.module import Module, Parameter, dtype_repr

__all__ = ["BatchNorm2d"]


class BatchNorm2d(Module):
    """Batch normalisation per channel, as ``torch.nn.BatchNorm2d`` (affine, tracked stats).

    Training normalises with the batch mean and biased variance and updates the running
    statistics in place: ``running = (1 - momentum) * running + momentum * batch_stat``
    with the *unbiased* batch variance (this momentum is a mixing weight, unlike an
    optimiser's). ``momentum=None`` uses the cumulative average
    ``1 / num_batches_tracked``. Evaluation normalises with the running statistics.

    Args:
        num_features: number of channels C.
        eps: added to the variance, ``> 0``.
        momentum: running-statistics weight in ``[0, 1]``, or ``None``.
        dtype: float32 (default) or float64.

    Parameters ``weight`` (ones) and ``bias`` (zeros), shape (C,); buffers
    ``running_mean`` (zeros), ``running_var`` (ones), shape (C,), and
    ``num_batches_tracked`` (0-d int64). Shapes: (N, C, H, W) or (C, H, W) in and out.
    """

    _batched_ndim = 4
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__()
        op = "BatchNorm2d"
        self.num_features = as_size(num_features, "num_features", op)
        self.eps = as_float(eps, "eps", op, low=0.0, low_open=True)
        self.momentum = (
            None if momentum is None else as_float(momentum, "momentum", op, low=0.0, high=1.0)
        )
        dtype = as_dtype(dtype, op)
        c = self.num_features
        self.weight = Parameter(np.ones(c, dtype))
        self.bias = Parameter(np.zeros(c, dtype))
        self.running_mean = np.zeros(c, dtype)
        self.running_var = np.ones(c, dtype)
        self.num_batches_tracked = np.zeros((), np.int64)

    def _forward(self, x):
        self._check_channels(x, self.num_features, "num_features")
        momentum = self.momentum
        if self.training and momentum is None:
            momentum = 1.0 / (int(self.num_batches_tracked) + 1)
        y, mean, invstd = F.batch_norm2d(
            x,
            self.weight.data,
            self.bias.data,
            self.running_mean,
            self.running_var,
            training=self.training,
            momentum=0.0 if momentum is None else momentum,
            eps=self.eps,
        )
        if self.training:
            self.num_batches_tracked += 1
        self._cache = (x, mean, invstd, self.training)
        return y

    def _backward(self, grad_out, need_input_grad):
        x, mean, invstd, training = self._cache
        if training:
            grad_x, grad_w, grad_b = F.batch_norm2d_backward(
                grad_out, x, self.weight.data, mean, invstd
            )
        else:
            # Evaluation is an affine map per channel: the statistics are constants.
            if not isinstance(grad_out, np.ndarray) or grad_out.shape != x.shape:
                raise ValueError(
                    f"BatchNorm2d: grad_out must have the shape of the input {x.shape}, "
                    f"got {getattr(grad_out, 'shape', None)}"
                )
            if grad_out.dtype != x.dtype:
                raise TypeError(
                    f"BatchNorm2d: grad_out must have dtype {x.dtype}, got {grad_out.dtype}"
                )
            per_channel = (slice(None), np.newaxis, np.newaxis)
            x_hat = (x - mean[per_channel]) * invstd[per_channel]
            grad_w = np.einsum("nchw,nchw->c", grad_out, x_hat)
            grad_b = grad_out.sum(axis=(0, 2, 3))
            grad_x = grad_out * (self.weight.data * invstd)[per_channel]
        self.weight.add_grad(grad_w)
        self.bias.add_grad(grad_b)
        return grad_x if need_input_grad else None

    def extra_repr(self) -> str:
        parts = [str(self.num_features)]
        if self.eps != 1e-5:
            parts.append(f"eps={self.eps}")
        if self.momentum != 0.1:
            parts.append(f"momentum={self.momentum}")
        return ", ".join(parts + dtype_repr(self.weight.dtype))
