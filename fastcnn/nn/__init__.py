"""Layers with ``forward``/``backward``, built on :mod:`fastcnn.functional`.

Familiar to PyTorch users (names, arguments, initialisation, ``state_dict`` keys): every
layer takes a batch or one unbatched sample; ``backward`` adds into each
``Parameter.grad`` and an optimiser of :mod:`fastcnn.optim` steps. The tutorials'
vocabulary (``Dense``, ``backward(grad, learning_rate)``) is :mod:`fastcnn.compat`.

Example::

    net = nn.Sequential(nn.Conv2d(1, 8, 3, rng=0), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 13 * 13, 10, rng=1))
    loss_fn = nn.CrossEntropyLoss()
    opt = fastcnn.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    opt.zero_grad()
    loss = loss_fn(net(x), y)
    net.backward(loss_fn.backward(), need_input_grad=False)
    opt.step()
"""

from fastcnn.nn.activation import ReLU, Sigmoid
from fastcnn.nn.container import Flatten, Sequential
from fastcnn.nn.conv import Conv2d
from fastcnn.nn.dropout import Dropout
from fastcnn.nn.linear import Linear
from fastcnn.nn.loss import BCELoss, CrossEntropyLoss
from fastcnn.nn.module import Module, Parameter
from fastcnn.nn.norm import BatchNorm2d
from fastcnn.nn.pool import MaxPool2d

__all__ = [
    "BCELoss",
    "BatchNorm2d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "Linear",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
]
