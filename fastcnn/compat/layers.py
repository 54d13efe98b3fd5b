"""The tutorials' layers: ``Layer``, ``Dense``, ``Convolutional`` (``CNNLayer``),
``Reshape`` and ``MaxPool``, on one sample at a time.

Each has ``forward(input)`` and ``backward(output_gradient, learning_rate)``, which
applies the plain gradient step to the layer's own parameters (as the tutorials do) and
returns the input gradient computed with the weights from before the step. Attribute
names, shapes and initialisation are the tutorials': ``Dense.weights`` (output_size,
input_size) and ``Dense.bias`` (output_size, 1) on column vectors; ``Convolutional``'s
``kernels`` (depth, input_depth, k, k) and untied ``biases`` of the output's shape,
all drawn with ``randn``. Parameters are updated in place.
"""

from __future__ import annotations

import math

import numpy as np

from fastcnn import _checks, warmup
from fastcnn import functional as F
from fastcnn._checks import as_dtype, as_float, as_size
from fastcnn._kernels import gemm, plan
from fastcnn.compat._arrays import as_float_array, as_shape, checked_rng, of_shape, randn

__all__ = ["CNNLayer", "Convolutional", "Dense", "Layer", "MaxPool", "Reshape"]


class Layer:
    """Base class of the tutorials' layers: ``forward(input)`` returns the output,
    ``backward(output_gradient, learning_rate)`` updates the parameters and returns the
    input gradient.

    A user's own tutorial-style layer may subclass it and override both methods. The
    layers here implement ``_backward(output_gradient, learning_rate, need_input_grad)``
    instead; :func:`fastcnn.compat.train` calls it directly, skipping the first layer's
    input gradient, which nothing uses.
    """

    def __init__(self):
        self.input = None
        self.output = None

    def forward(self, input):
        """Return the layer's output for ``input`` and keep what backward needs."""
        raise NotImplementedError

    def backward(self, output_gradient, learning_rate):
        """Apply one gradient step of size ``learning_rate`` (a real number >= 0) to the
        parameters; return the gradient with respect to the last input."""
        lr = as_float(learning_rate, "learning_rate", f"{type(self).__name__}.backward", low=0.0)
        return self._backward(output_gradient, lr, True)

    def _backward(self, output_gradient, learning_rate: float, need_input_grad: bool):
        raise NotImplementedError

    def _warmup_jobs(self, first: bool, dtype: str) -> list[tuple[str, str]]:
        """The ``(workload, dtype)`` jobs of :mod:`fastcnn.warmup` that compile what this
        layer runs (:func:`fastcnn.compat.train` warms them up on a first run): none
        here. ``first``: the network's first layer, whose input gradient is never
        computed; ``dtype``: the network's, for layers without parameters."""
        return []

    def _last_input(self, op: str) -> np.ndarray:
        if self.input is None:
            raise RuntimeError(f"{op}: backward called before forward")
        return self.input

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Dense(Layer):
    """Fully connected layer on column vectors: ``output = weights @ input + bias``.

    Args:
        input_size, output_size: ints >= 1.
        dtype: float64 (default, as the tutorials) or float32; inputs and gradients of
            another dtype are cast to it.
        rng: ``None`` draws from NumPy's global random state (``np.random.randn``, like
            the tutorial), else a ``numpy.random.Generator`` or an int seed.

    Shapes: input (input_size, 1), output (output_size, 1); ``weights`` (output_size,
    input_size), ``bias`` (output_size, 1), both from the standard normal.

    Backward takes the input gradient ``weights.T @ output_gradient`` (BLAS), then the
    step ``weights -= learning_rate * output_gradient @ input.T`` in place, in one pass.
    """

    def __init__(self, input_size, output_size, *, dtype=np.float64, rng=None):
        super().__init__()
        op = "Dense"
        self.input_size = as_size(input_size, "input_size", op)
        self.output_size = as_size(output_size, "output_size", op)
        dtype = as_dtype(dtype, op)
        rng = checked_rng(rng, op)
        self.weights = randn(rng, (self.output_size, self.input_size), dtype)
        self.bias = randn(rng, (self.output_size, 1), dtype)

    def _warmup_jobs(self, first, dtype):
        return [("linear, one sample", self.weights.dtype.name)]

    def forward(self, input):
        """``weights @ input + bias`` for a column vector ``input`` (input_size, 1)."""
        w = self.weights
        x = of_shape(input, (self.input_size, 1), "input", "Dense.forward", w.dtype)
        self.input = x
        y = np.empty((self.output_size, 1), w.dtype)
        np.dot(w, x[:, 0], out=y[:, 0])
        y += self.bias
        return y

    def _backward(self, output_gradient, learning_rate, need_input_grad):
        op = "Dense.backward"
        x = self._last_input(op)
        w = self.weights
        g = of_shape(output_gradient, (self.output_size, 1), "output_gradient", op, w.dtype)
        grad_x = None
        if need_input_grad:  # weights.T @ g, before the step
            grad_x = np.empty((self.input_size, 1), w.dtype)
            np.dot(g[:, 0], w, out=grad_x[:, 0])
        if w.flags.c_contiguous and w.flags.writeable:  # the step in place, in one pass
            gemm.outer_update(g[:, 0], x[:, 0], w, -learning_rate)
        else:
            w -= learning_rate * (g @ x.T)
        self.bias -= learning_rate * g
        return grad_x

    def __repr__(self) -> str:
        return f"Dense({self.input_size}, {self.output_size}{_dtype_note(self.weights)})"


class Convolutional(Layer):
    """Valid 2-D cross-correlation of one sample with ``depth`` kernels, plus untied
    biases (one per output element), as the tutorials' ``Convolutional``/``CNNLayer``.

    Args:
        input_shape: ``(input_depth, height, width)``.
        kernel_size: int k, square kernels.
        depth: number of kernels (output channels).
        dtype, rng: as :class:`Dense`.

    Shapes: input ``input_shape``; output ``output_shape = (depth, height - k + 1,
    width - k + 1)``; ``kernels`` (depth, input_depth, k, k) then ``biases``
    ``output_shape``, both from the standard normal in that order. Runs on fastcnn's conv
    kernels (forward, input gradient, kernel gradient).
    """

    def __init__(self, input_shape, kernel_size, depth, *, dtype=np.float64, rng=None):
        super().__init__()
        op = type(self).__name__
        self.input_shape = as_shape(input_shape, "input_shape", op, 3)
        kernel_size = as_size(kernel_size, "kernel_size", op)
        self.depth = as_size(depth, "depth", op)
        dtype = as_dtype(dtype, op)
        rng = checked_rng(rng, op)
        input_depth, height, width = self.input_shape
        if kernel_size > min(height, width):
            raise ValueError(
                f"{op}: kernel_size {kernel_size} is larger than the input's height or width "
                f"(input_shape {self.input_shape})"
            )
        self.input_depth = input_depth
        self.output_shape = (self.depth, height - kernel_size + 1, width - kernel_size + 1)
        self.kernels_shape = (self.depth, input_depth, kernel_size, kernel_size)
        self.kernels = randn(rng, self.kernels_shape, dtype)
        self.biases = randn(rng, self.output_shape, dtype)

    def _warmup_jobs(self, first, dtype):
        k = self.kernels
        g = _checks.conv2d_args(np.empty((1, *self.input_shape), k.dtype), k, None, 1, 0, 1)
        ops = ("forward", "grad_weight") if first else plan.OPS
        return [(warmup.conv_job(op, plan.choose(op, g).kernel), k.dtype.name) for op in ops]

    def forward(self, input):
        """Correlate ``input`` (input_depth, height, width) with every kernel, add biases."""
        k = self.kernels
        x = of_shape(input, self.input_shape, "input", f"{type(self).__name__}.forward", k.dtype)
        self.input = x
        y = F.conv2d(x[np.newaxis], k)[0]
        y += self.biases
        self.output = y
        return y

    def _backward(self, output_gradient, learning_rate, need_input_grad):
        op = f"{type(self).__name__}.backward"
        x = self._last_input(op)
        k = self.kernels
        g = of_shape(output_gradient, self.output_shape, "output_gradient", op, k.dtype)
        x4, g4 = x[np.newaxis], g[np.newaxis]
        grad_k = F.conv2d_grad_weight(x4, self.kernels_shape, g4)
        grad_x = F.conv2d_grad_input(x4.shape, k, g4)[0] if need_input_grad else None
        grad_k *= learning_rate
        k -= grad_k
        self.biases -= learning_rate * g
        return grad_x

    def __repr__(self) -> str:
        args = f"{self.input_shape}, {self.kernels_shape[2]}, {self.depth}"
        return f"{type(self).__name__}({args}{_dtype_note(self.kernels)})"


class CNNLayer(Convolutional):
    """The same layer under the name other tutorials give it (see :class:`Convolutional`)."""


class Reshape(Layer):
    """``np.reshape`` from ``input_shape`` to ``output_shape`` (same number of elements),
    and back for the gradient. The input must have exactly ``input_shape``."""

    def __init__(self, input_shape, output_shape):
        super().__init__()
        op = "Reshape"
        self.input_shape = as_shape(input_shape, "input_shape", op)
        self.output_shape = as_shape(output_shape, "output_shape", op)
        if math.prod(self.input_shape) != math.prod(self.output_shape):
            raise ValueError(
                f"{op}: input_shape {self.input_shape} and output_shape {self.output_shape} "
                "must have the same number of elements"
            )

    def forward(self, input):
        """``input`` (input_shape) reshaped to ``output_shape`` (a view where possible)."""
        x = of_shape(input, self.input_shape, "input", "Reshape.forward")
        self.input = x
        return x.reshape(self.output_shape)

    def _backward(self, output_gradient, learning_rate, need_input_grad):
        g = of_shape(output_gradient, self.output_shape, "output_gradient", "Reshape.backward")
        return g.reshape(self.input_shape)

    def __repr__(self) -> str:
        return f"Reshape({self.input_shape}, {self.output_shape})"


class MaxPool(Layer):
    """Max-pool one sample (channels, height, width) over ``size`` x ``size`` windows with
    stride ``size`` (rows and columns that do not fill a window are dropped).

    Backward sends each gradient value to the input element that won its window (the
    indices saved by forward; the first maximum wins a tie).
    """

    def __init__(self, size):
        super().__init__()
        self.size = as_size(size, "size", "MaxPool")
        self._indices = None

    def forward(self, input):
        """Pool ``input`` (C, H, W) with H and W at least ``size``; output (C, H//size,
        W//size)."""
        op = "MaxPool.forward"
        x = as_float_array(input, "input", op)
        if x.ndim != 3 or min(x.shape[1:]) < self.size:
            raise ValueError(
                f"{op}: input must be (channels, height, width) with height and width >= "
                f"{self.size}, got shape {x.shape}"
            )
        self.input = x
        y, self._indices = F.max_pool2d(x[np.newaxis], self.size)
        self.output = y[0]
        return self.output

    def _warmup_jobs(self, first, dtype):
        return [("pool 2x2" if self.size == 2 else "pool", dtype)]

    def _backward(self, output_gradient, learning_rate, need_input_grad):
        op = "MaxPool.backward"
        x = self._last_input(op)
        g = of_shape(output_gradient, self.output.shape, "output_gradient", op, x.dtype)
        return F.max_pool2d_backward(g[np.newaxis], self._indices, (1, *x.shape))[0]

    def __repr__(self) -> str:
        return f"MaxPool({self.size})"


def _dtype_note(a: np.ndarray) -> str:
    return "" if a.dtype == np.float64 else f", dtype={a.dtype.name}"
