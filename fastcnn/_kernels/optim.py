"""Optimiser updates over flat (1-D, C-contiguous) parameter arrays.

One pass per parameter instead of NumPy's four to six (Adam's: twelve). Big parameters
are split over threads (:mod:`fastcnn._threads`), each part updating its own elements.
"""

import numpy as np

from fastcnn import _threads
from fastcnn._config import jit


def _over_elements(kernel, data, *args) -> None:
    size = data.size
    _threads.run(kernel, _threads.parts(size, size, _threads.GRAIN_ELEMENTS), size, data, *args)


def sgd(data, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """One ``torch.optim.SGD`` step, in place: with ``g = grad + weight_decay * data``,
    ``buf = g`` on the ``first`` step, else ``buf = momentum * buf + (1 - dampening) * g``;
    ``data -= lr * (g + momentum * buf if nesterov else buf)``, or ``lr * g`` when
    ``momentum == 0`` (then ``buf`` is not touched: any array).

    data, grad, buf: (size,) of one float dtype; the hyper-parameters are Python floats,
    rounded to that dtype as torch does.
    """
    _over_elements(_sgd, data, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first)


@jit()
def _sgd(part, i0, i1, data, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    # The part's slices first: indexing from 0 lets LLVM vectorise.
    data, grad, buf = data[i0:i1], grad[i0:i1], buf[i0:i1]
    t = data.dtype.type
    lr_, m, keep, wd = t(lr), t(momentum), t(1.0 - dampening), t(weight_decay)
    for i in range(data.size):
        g = grad[i]
        if weight_decay != 0:
            g = g + wd * data[i]
        if momentum != 0:
            b = g if first else m * buf[i] + keep * g
            buf[i] = b
            g = g + m * b if nesterov else b
        data[i] = data[i] - lr_ * g


def adam(data, grad, exp_avg, exp_avg_sq, step_size, beta1, beta2, denom_scale, eps, weight_decay):
    """One ``torch.optim.Adam`` step (no amsgrad), in place: with
    ``g = grad + weight_decay * data``, ``exp_avg += (1 - beta1) * (g - exp_avg)``,
    ``exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g`` and
    ``data -= step_size * exp_avg / (sqrt(exp_avg_sq) / denom_scale + eps)``, in torch's
    order of operations (``step_size = lr / (1 - beta1**t)``,
    ``denom_scale = sqrt(1 - beta2**t)``, computed by the caller in double precision).

    data, grad, exp_avg, exp_avg_sq: (size,) of one float dtype; the scalars are Python
    floats, rounded to that dtype as torch does.
    """
    _over_elements(_adam, data, grad, exp_avg, exp_avg_sq, step_size, beta1, beta2, denom_scale,
                   eps, weight_decay)  # fmt: skip


@jit()
def _adam(part, i0, i1, data, grad, exp_avg, exp_avg_sq, step_size, beta1, beta2, denom_scale,
          eps, weight_decay):  # fmt: skip
    data, grad = data[i0:i1], grad[i0:i1]
    exp_avg, exp_avg_sq = exp_avg[i0:i1], exp_avg_sq[i0:i1]
    t = data.dtype.type
    w1, b2, w2 = t(1.0 - beta1), t(beta2), t(1.0 - beta2)
    neg_step, scale, eps_, wd = t(-step_size), t(denom_scale), t(eps), t(weight_decay)
    for i in range(data.size):
        g = grad[i]
        if weight_decay != 0:
            g = g + wd * data[i]
        m = exp_avg[i]
        m = m + w1 * (g - m)
        v = b2 * exp_avg_sq[i] + w2 * g * g
        exp_avg[i], exp_avg_sq[i] = m, v
        data[i] = data[i] + neg_step * m / (np.sqrt(v) / scale + eps_)
