"""2-D batch normalisation (per channel over N, H and W) and its backward.

Computed in float64, returned in the input dtype. The running-statistics rule is
PyTorch's and differs from optimiser momentum::

    running = (1 - momentum) * running + momentum * batch_statistic

with the *unbiased* batch variance for ``running_var``, while the batch itself is
normalised with the *biased* variance.
"""

import numpy as np

from fastcnn import _checks

_AXES = (0, 2, 3)  # everything but the channel axis


def _per_channel(v):
    """A (C,) vector as float64 shaped (1, C, 1, 1) to broadcast against NCHW."""
    return v.astype(np.float64)[None, :, None, None]


def batch_norm2d(x, weight, bias, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    """Batch-normalise ``x`` (N, C, H, W), as ``torch.nn.functional.batch_norm``.

    ``weight``, ``bias`` (C,) may be ``None`` (meaning 1 and 0). ``running_mean`` and
    ``running_var`` (C,) are both ``None`` or both arrays. In training the batch mean and
    biased variance normalise ``x``, and the running statistics, if given, are updated in
    place (unbiased variance, see the module docstring). In evaluation
    (``training=False``) the running statistics normalise ``x`` and are left unchanged.

    Returns ``(y, save_mean, save_invstd)``, all of ``x``'s dtype: ``y`` (N, C, H, W);
    ``save_mean`` and ``save_invstd = 1 / sqrt(var + eps)`` (C,) are the batch statistics
    in training and the running ones in evaluation.
    """
    momentum, eps = _checks.batch_norm2d_args(
        x, weight, bias, running_mean, running_var, training, momentum, eps
    )
    x64 = x.astype(np.float64)
    if training:
        mean = x64.mean(axis=_AXES)
        var = x64.var(axis=_AXES)  # biased: divides by the count
        if running_mean is not None:
            count = x.shape[0] * x.shape[2] * x.shape[3]  # > 1: checked
            unbiased = var * count / (count - 1)
            old_mean, old_var = running_mean.astype(np.float64), running_var.astype(np.float64)
            running_mean[...] = (1 - momentum) * old_mean + momentum * mean
            running_var[...] = (1 - momentum) * old_var + momentum * unbiased
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
    invstd = 1 / np.sqrt(var + eps)
    y = (x64 - _per_channel(mean)) * _per_channel(invstd)
    if weight is not None:
        y *= _per_channel(weight)
    if bias is not None:
        y += _per_channel(bias)
    return y.astype(x.dtype), mean.astype(x.dtype), invstd.astype(x.dtype)


def batch_norm2d_backward(grad_out, x, weight, save_mean, save_invstd):
    """Gradients of training-mode ``batch_norm2d`` (batch statistics, which themselves
    depend on ``x``).

    ``grad_out`` and ``x`` (N, C, H, W); ``weight`` (C,) or ``None`` (meaning 1);
    ``save_mean``, ``save_invstd`` (C,) as returned by the forward. Returns
    ``(grad_x, grad_weight, grad_bias)`` of ``x``'s dtype, shapes (N, C, H, W), (C,), (C,);
    ``grad_weight`` and ``grad_bias`` are returned even when ``weight`` is ``None``.
    """
    _checks.batch_norm2d_backward_args(grad_out, x, weight, save_mean, save_invstd)
    go = grad_out.astype(np.float64)
    invstd = _per_channel(save_invstd)
    x_hat = (x.astype(np.float64) - _per_channel(save_mean)) * invstd
    grad_bias = go.sum(axis=_AXES)
    grad_weight = (go * x_hat).sum(axis=_AXES)
    gamma = 1.0 if weight is None else _per_channel(weight)
    count = max(x.shape[0] * x.shape[2] * x.shape[3], 1)  # an empty batch has zero sums
    # d/dx of gamma * x_hat: the direct term minus the parts that flow through the batch
    # mean and variance (mean of grad_out, and x_hat times the mean of grad_out * x_hat).
    grad_x = (
        gamma
        * invstd
        * (go - _per_channel(grad_bias) / count - x_hat * _per_channel(grad_weight) / count)
    )
    dtype = x.dtype
    return grad_x.astype(dtype), grad_weight.astype(dtype), grad_bias.astype(dtype)
