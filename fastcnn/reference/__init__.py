"""The pure-NumPy twin of :mod:`fastcnn.functional`: the oracle the kernels are checked against.

Same names, signatures and results as the fast path, PyTorch semantics, NCHW layout and
OIHW conv weights. Each function first calls the matching check in :mod:`fastcnn._checks`
(so both paths reject the same input with the same message), then computes in float64 and
casts the result back to the input dtype (the max-pool forward and ReLU only select values
and stay in the input dtype). Written to be obviously right, not fast; this package never imports
Numba.
"""

from fastcnn.reference.activation import (
    log_softmax,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
)
from fastcnn.reference.conv import conv2d, conv2d_grad_bias, conv2d_grad_input, conv2d_grad_weight
from fastcnn.reference.linear import linear
from fastcnn.reference.loss import binary_cross_entropy, cross_entropy
from fastcnn.reference.norm import batch_norm2d, batch_norm2d_backward
from fastcnn.reference.pool import max_pool2d, max_pool2d_backward

__all__ = [
    "batch_norm2d",
    "batch_norm2d_backward",
    "binary_cross_entropy",
    "conv2d",
    "conv2d_grad_bias",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "cross_entropy",
    "linear",
    "log_softmax",
    "max_pool2d",
    "max_pool2d_backward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
]
