"""From-scratch NumPy/SciPy layers in the style of the classic CNN tutorials.

The baseline that ``fastcnn.compat`` replaces: the same class names, constructors,
attributes and update rule, written with NumPy and ``scipy.signal`` loops. A program
using these ports to fastcnn by importing the same names from ``fastcnn.compat``
(see ``binary_mnist.py``).
"""
# The tutorials draw from NumPy's global random state (seeded by np.random.seed): so do
# these, so that one seed gives the scratch and the fastcnn network the same weights.
# ruff: noqa: NPY002

import numpy as np
from scipy import signal


class Layer:
    def __init__(self):
        self.input = None
        self.output = None

    def forward(self, input):
        raise NotImplementedError

    def backward(self, output_gradient, learning_rate):
        raise NotImplementedError


class Dense(Layer):
    """weights (output_size, input_size) @ input (input_size, 1) + bias (output_size, 1)."""

    def __init__(self, input_size, output_size):
        super().__init__()
        self.weights = np.random.randn(output_size, input_size)
        self.bias = np.random.randn(output_size, 1)

    def forward(self, input):
        self.input = input
        return self.weights @ input + self.bias

    def backward(self, output_gradient, learning_rate):
        grad_weights = output_gradient @ self.input.T
        grad_input = self.weights.T @ output_gradient
        self.weights -= learning_rate * grad_weights
        self.bias -= learning_rate * output_gradient
        return grad_input


class Convolutional(Layer):
    """depth kernels (depth, input_depth, k, k) and one bias per output element."""

    def __init__(self, input_shape, kernel_size, depth):
        super().__init__()
        input_depth, height, width = input_shape
        self.input_shape = input_shape
        self.depth, self.input_depth = depth, input_depth
        self.output_shape = (depth, height - kernel_size + 1, width - kernel_size + 1)
        self.kernels_shape = (depth, input_depth, kernel_size, kernel_size)
        self.kernels = np.random.randn(*self.kernels_shape)
        self.biases = np.random.randn(*self.output_shape)

    def forward(self, input):
        self.input = input
        self.output = self.biases.copy()
        for i in range(self.depth):
            for j in range(self.input_depth):
                self.output[i] += signal.correlate2d(input[j], self.kernels[i, j], "valid")
        return self.output

    def backward(self, output_gradient, learning_rate):
        grad_kernels = np.zeros(self.kernels_shape)
        grad_input = np.zeros(self.input_shape)
        for i in range(self.depth):
            for j in range(self.input_depth):
                grad_kernels[i, j] = signal.correlate2d(self.input[j], output_gradient[i], "valid")
                grad_input[j] += signal.convolve2d(output_gradient[i], self.kernels[i, j], "full")
        self.kernels -= learning_rate * grad_kernels
        self.biases -= learning_rate * output_gradient
        return grad_input


class Reshape(Layer):
    def __init__(self, input_shape, output_shape):
        super().__init__()
        self.input_shape, self.output_shape = input_shape, output_shape

    def forward(self, input):
        return np.reshape(input, self.output_shape)

    def backward(self, output_gradient, learning_rate):
        return np.reshape(output_gradient, self.input_shape)


class Sigmoid(Layer):
    def forward(self, input):
        self.input = input
        return 1 / (1 + np.exp(-input))

    def backward(self, output_gradient, learning_rate):
        s = 1 / (1 + np.exp(-self.input))
        return output_gradient * s * (1 - s)


def binary_cross_entropy(y_true, y_pred):
    return np.mean(-y_true * np.log(y_pred) - (1 - y_true) * np.log(1 - y_pred))


def binary_cross_entropy_prime(y_true, y_pred):
    return ((1 - y_true) / (1 - y_pred) - y_true / y_pred) / np.size(y_true)


def predict(network, input):
    output = input
    for layer in network:
        output = layer.forward(output)
    return output


def train(
    network, loss, loss_prime, x_train, y_train, epochs=1000, learning_rate=0.01, verbose=True
):
    for e in range(epochs):
        error = 0
        for x, y in zip(x_train, y_train, strict=True):
            output = predict(network, x)
            error += loss(y, output)
            grad = loss_prime(y, output)
            for layer in reversed(network):
                grad = layer.backward(grad, learning_rate)
        error /= len(x_train)
        if verbose:
            print(f"{e + 1}/{epochs}, error={error}")
