"""Optimiser updates over flat (1-D, C-contiguous) parameter arrays.

One pass per parameter instead of NumPy's four to six: on the MNIST net's 225k parameters
the SGD momentum step took 0.13 ms as NumPy ufuncs on one thread and 0.04-0.05 ms here on
two (arrays warm in cache; measured). Each ``prange`` iteration writes only its own
elements, so nothing races.
"""

from numba import prange

from fastcnn._config import jit


@jit(parallel=True)
def sgd(data, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """One ``torch.optim.SGD`` step, in place: with ``g = grad + weight_decay * data``,
    ``buf = g`` on the ``first`` step, else ``buf = momentum * buf + (1 - dampening) * g``;
    ``data -= lr * (g + momentum * buf if nesterov else buf)``, or ``lr * g`` when
    ``momentum == 0`` (then ``buf`` is not touched: any array).

    data, grad, buf: (size,) of one float dtype; the hyper-parameters are Python floats,
    rounded to that dtype as torch does.
    """
    t = data.dtype.type
    lr_, m, keep, wd = t(lr), t(momentum), t(1.0 - dampening), t(weight_decay)
    for i in prange(data.size):
        g = grad[i]
        if weight_decay != 0:
            g = g + wd * data[i]
        if momentum != 0:
            b = g if first else m * buf[i] + keep * g
            buf[i] = b
            g = g + m * b if nesterov else b
        data[i] = data[i] - lr_ * g
