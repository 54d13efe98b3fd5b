"""The tutorials' activation layers: ``Activation`` (any element-wise function and its
derivative), ``Sigmoid``, ``Tanh``, ``ReLU`` and ``Softmax``.

Any input shape; float32 and float64 are kept, other real dtypes become float64, and the
gradient is cast to the dtype of the forward. ``Sigmoid`` and ``ReLU`` run on fastcnn's
kernels; ``Softmax`` is stable for large inputs (shifted by the maximum), where the
tutorial's ``exp(x) / sum(exp(x))`` overflows.
"""

from __future__ import annotations

import numpy as np

from fastcnn import functional as F
from fastcnn.compat._arrays import as_float_array, of_shape
from fastcnn.compat.layers import Layer

__all__ = ["Activation", "ReLU", "Sigmoid", "Softmax", "Tanh"]


class Activation(Layer):
    """Element-wise ``activation(input)``; backward multiplies the output gradient by
    ``activation_prime(input)``, as the tutorials' ``Activation``.

    ``activation`` and ``activation_prime`` are NumPy functions of one array; subclasses
    here override forward and backward with faster equivalents.
    """

    def __init__(self, activation, activation_prime):
        super().__init__()
        for name, f in (("activation", activation), ("activation_prime", activation_prime)):
            if not callable(f):
                raise TypeError(f"{type(self).__name__}: {name} must be callable, got {f!r}")
        self.activation = activation
        self.activation_prime = activation_prime

    def forward(self, input):
        """Apply the activation to ``input`` (any shape) and keep the input."""
        self.input = as_float_array(input, "input", f"{type(self).__name__}.forward")
        return self.activation(self.input)

    def _backward(self, output_gradient, learning_rate, need_input_grad):
        g = self._gradient(output_gradient, self.input)
        return np.multiply(g, self.activation_prime(self.input))

    def _gradient(self, output_gradient, like) -> np.ndarray:
        """``output_gradient`` checked against the last forward's ``like`` array."""
        op = f"{type(self).__name__}.backward"
        self._last_input(op)
        return of_shape(output_gradient, like.shape, "output_gradient", op, like.dtype)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _sigmoid_prime(x):
    s = _sigmoid(x)
    return s * (1 - s)


def _tanh_prime(x):
    return 1 - np.tanh(x) ** 2


def _relu(x):
    return np.maximum(x, 0)


def _relu_prime(x):
    return (x > 0).astype(x.dtype)


class Sigmoid(Activation):
    """``1 / (1 + exp(-x))``; backward ``output_gradient * s * (1 - s)`` from the saved
    output ``s``, without overflow for large ``|x|``."""

    def __init__(self):
        super().__init__(_sigmoid, _sigmoid_prime)

    def _warmup_jobs(self, first, dtype):
        return [("sigmoid", dtype)]

    def forward(self, input):
        """Sigmoid of ``input``, any shape."""
        self.input = as_float_array(input, "input", "Sigmoid.forward")
        self.output = F.sigmoid(self.input)
        return self.output

    def _backward(self, output_gradient, learning_rate, need_input_grad):
        return F.sigmoid_backward(self._gradient(output_gradient, self.output), self.output)


class Tanh(Activation):
    """``tanh(x)``; backward ``output_gradient * (1 - tanh(x) ** 2)`` from the saved output."""

    def __init__(self):
        super().__init__(np.tanh, _tanh_prime)

    def forward(self, input):
        """Hyperbolic tangent of ``input``, any shape."""
        self.input = as_float_array(input, "input", "Tanh.forward")
        self.output = np.tanh(self.input)
        return self.output

    def _backward(self, output_gradient, learning_rate, need_input_grad):
        y = self.output
        return self._gradient(output_gradient, y) * (1 - y * y)


class ReLU(Activation):
    """``max(x, 0)``; backward passes the gradient where ``x > 0``."""

    def __init__(self):
        super().__init__(_relu, _relu_prime)

    def _warmup_jobs(self, first, dtype):
        return [("relu", dtype)]

    def forward(self, input):
        """Rectified ``input``, any shape."""
        self.input = as_float_array(input, "input", "ReLU.forward")
        self.output = F.relu(self.input)
        return self.output

    def _backward(self, output_gradient, learning_rate, need_input_grad):
        return F.relu_backward(self._gradient(output_gradient, self.input), self.input)


class Softmax(Layer):
    """``exp(x) / sum(exp(x))`` over all elements of the input (a column vector in the
    tutorials), computed shifted by the maximum.

    Backward is the Jacobian-vector product ``s * (g - sum(s * g))`` with the saved output
    ``s``: the tutorial's ``np.dot((np.identity(n) - s.T) * s, g)`` without the n x n
    matrix.
    """

    def _warmup_jobs(self, first, dtype):
        return [("losses", dtype)]

    def forward(self, input):
        """Softmax over every element of ``input`` (at least one), same shape."""
        x = as_float_array(input, "input", "Softmax.forward")
        if x.size == 0:
            raise ValueError(f"Softmax.forward: input must not be empty, got shape {x.shape}")
        self.input = x
        self.output = F.softmax(x.reshape(-1)).reshape(x.shape)
        return self.output

    def _backward(self, output_gradient, learning_rate, need_input_grad):
        op = "Softmax.backward"
        self._last_input(op)
        s = self.output
        g = of_shape(output_gradient, s.shape, "output_gradient", op, s.dtype)
        return s * (g - np.vdot(s, g))
