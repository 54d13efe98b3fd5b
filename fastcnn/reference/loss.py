"""Losses that return their value and the gradient of their input in one call.

Computed in float64; the loss is a NumPy scalar and the gradient an array, both of the
input dtype.
"""

import numpy as np

from fastcnn import _checks
from fastcnn.reference.activation import _log_softmax64


def cross_entropy(logits, targets):
    """Mean cross-entropy of ``logits`` (N, C) against integer class ``targets`` (N,), as
    ``torch.nn.functional.cross_entropy`` with ``reduction="mean"``.

    Returns ``(loss, grad_logits)``: ``loss`` a scalar of ``logits``' dtype and
    ``grad_logits = (softmax(logits) - onehot(targets)) / N`` of shape (N, C). Stable for
    huge logits (log-sum-exp with the row maximum subtracted).
    """
    _checks.cross_entropy_args(logits, targets)
    n = logits.shape[0]
    rows = np.arange(n)
    with np.errstate(invalid="ignore"):  # inf - inf gives the NaN torch gives
        log_p = _log_softmax64(logits.astype(np.float64), axis=1)
    loss = -log_p[rows, targets].mean()
    grad = np.exp(log_p)
    grad[rows, targets] -= 1
    grad /= n
    return logits.dtype.type(loss), grad.astype(logits.dtype)


def binary_cross_entropy(probs, targets, eps=1e-7):
    """Mean binary cross-entropy of ``probs`` against ``targets`` (same shape, values in
    [0, 1]; soft targets allowed), over all elements.

    ``probs`` is clipped to ``[eps, 1 - eps]`` inside the logarithms and the gradient, so
    the loss stays finite at 0 and 1 (torch instead clamps each log at -100; the two agree
    for probabilities inside the clip range). Returns ``(loss, grad_probs)``: a scalar of the
    input dtype and an array of ``probs``' shape and dtype.
    """
    eps = _checks.binary_cross_entropy_args(probs, targets, eps)
    p = np.clip(probs.astype(np.float64), eps, 1 - eps)
    t = targets.astype(np.float64)
    loss = -np.mean(t * np.log(p) + (1 - t) * np.log1p(-p))
    grad = (p - t) / (p * (1 - p)) / probs.size
    return probs.dtype.type(loss), grad.astype(probs.dtype)
