"""The from-scratch tutorials' vocabulary, backed by fastcnn's kernels.

A program written with the classic NumPy "neural network from scratch" classes
(``Dense``, ``Convolutional``, ``Reshape``, ``Sigmoid``, ``binary_cross_entropy(y_true,
y_pred)``, ``train``, ``predict``) ports by changing its imports::

    from fastcnn.compat import (Convolutional, Dense, Reshape, Sigmoid, train, predict,
                                binary_cross_entropy, binary_cross_entropy_prime)

Same constructors, attributes, shapes (column vectors ``(n, 1)`` for ``Dense``, one
``(depth, height, width)`` sample for ``Convolutional``), initialisation (``randn``,
from NumPy's global random state unless ``rng`` is given, so ``np.random.seed`` keeps
runs repeatable) and update rule (``backward(output_gradient, learning_rate)`` takes one
plain gradient step). Float64 by default like the tutorials, ``dtype=np.float32`` on
request; mixed dtypes are cast, not refused. Unlike the tutorials, bad arguments and
mismatched shapes raise a ``ValueError``/``TypeError`` naming the argument.

:mod:`fastcnn.nn` speaks PyTorch's vocabulary instead (batches, ``Parameter.grad``,
optimisers). :mod:`fastcnn.compat.layout` converts channels-last (HWC) weights and
activations to fastcnn's CHW.
"""

from fastcnn.compat.activations import Activation, ReLU, Sigmoid, Softmax, Tanh
from fastcnn.compat.layers import CNNLayer, Convolutional, Dense, Layer, MaxPool, Reshape
from fastcnn.compat.layout import conv_weight_from_hwc, dense_weight_from_hwc, from_hwc
from fastcnn.compat.losses import (
    binary_cross_entropy,
    binary_cross_entropy_prime,
    mse,
    mse_prime,
)
from fastcnn.compat.network import predict, train

__all__ = [
    "Activation",
    "CNNLayer",
    "Convolutional",
    "Dense",
    "Layer",
    "MaxPool",
    "ReLU",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "binary_cross_entropy",
    "binary_cross_entropy_prime",
    "conv_weight_from_hwc",
    "dense_weight_from_hwc",
    "from_hwc",
    "mse",
    "mse_prime",
    "predict",
    "train",
]
