"""Fully connected layer: ``x @ weight.T + bias``."""

import numpy as np

from fastcnn import _checks


def linear(x, weight, bias=None):
    """``x @ weight.T + bias``, as ``torch.nn.functional.linear``.

    ``x`` (..., in_features), ``weight`` (out_features, in_features), ``bias``
    (out_features,) or ``None``. Computed in float64; returns (..., out_features) of
    ``x``'s dtype.
    """
    _checks.linear_args(x, weight, bias)
    y = x.astype(np.float64) @ weight.astype(np.float64).T
    if bias is not None:
        y += bias.astype(np.float64)
    return y.astype(x.dtype)
