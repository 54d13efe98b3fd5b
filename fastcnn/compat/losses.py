"""The tutorials' losses, in their argument order: ``loss(y_true, y_pred)``.

``fastcnn.nn.BCELoss`` takes ``(probs, targets)`` as torch does; these take the target
first, like the tutorials' ``losses.py``, so a ported program keeps its calls. Both
arguments must have the same shape (the tutorials' formulas would broadcast a (2,) target
against a (2, 1) prediction into a (2, 2) array and train on that without a word). The
computation runs in ``y_pred``'s dtype (float32 or float64; other real dtypes in float64).
These are a handful of NumPy operations on a few values: a fastcnn kernel call would cost
more in argument checks than it could save.
"""

from __future__ import annotations

import numpy as np

from fastcnn.compat._arrays import as_float_array

__all__ = ["binary_cross_entropy", "binary_cross_entropy_prime", "mse", "mse_prime"]


def _pair(y_true, y_pred, op: str) -> tuple[np.ndarray, np.ndarray]:
    pred = as_float_array(y_pred, "y_pred", op, array_like=True)
    true = as_float_array(y_true, "y_true", op, pred.dtype, array_like=True)
    if true.shape != pred.shape:
        raise ValueError(
            f"{op}: y_true and y_pred must have the same shape, got {true.shape} and {pred.shape}"
        )
    if pred.size == 0:
        raise ValueError(f"{op}: y_pred must not be empty, got shape {pred.shape}")
    return true, pred


def mse(y_true, y_pred):
    """Mean squared error ``mean((y_true - y_pred) ** 2)``, a NumPy scalar."""
    true, pred = _pair(y_true, y_pred, "mse")
    return np.mean(np.power(true - pred, 2))


def mse_prime(y_true, y_pred) -> np.ndarray:
    """Gradient of :func:`mse` with respect to ``y_pred``: ``2 * (y_pred - y_true) / size``,
    shape of ``y_pred``."""
    true, pred = _pair(y_true, y_pred, "mse_prime")
    return 2 * (pred - true) / pred.size


_EPS = {
    np.dtype(np.float32): float(np.finfo(np.float32).eps),
    np.dtype(np.float64): float(np.finfo(np.float64).eps),
}


def _bounds(a: np.ndarray):
    """``(min, max)`` of a non-empty array; a NaN makes them NaN or leaves them out.

    The tutorials' targets and predictions are a few values: as a Python list, twice as
    fast as two NumPy reductions, which matters once per sample.
    """
    if a.size > 64:
        return a.min(), a.max()
    values = a.ravel().tolist()
    return min(values), max(values)


def _bce_args(y_true, y_pred, op: str):
    """Checked ``(y_true, y_pred clipped to [eps, 1 - eps])``."""
    true, pred = _pair(y_true, y_pred, op)
    ranges = []
    for name, a in (("y_true", true), ("y_pred", pred)):
        lo, hi = _bounds(a)
        if lo < 0 or hi > 1:  # NaN compares False and passes, as in the tutorial's formula
            raise ValueError(
                f"{op}: {name} must lie in [0, 1], got values in [{np.nanmin(a)}, "
                f"{np.nanmax(a)}] (the order is (y_true, y_pred))"
            )
        ranges.append((lo, hi))
    # Clipping at the dtype's epsilon changes nothing the tutorial's formula computes
    # finitely; a saturated sigmoid (exactly 0 or 1) gives finite values, not inf/NaN.
    eps = _EPS[pred.dtype]
    lo, hi = ranges[1]
    if not (lo >= eps and hi <= 1 - eps):
        pred = np.clip(pred, eps, 1 - eps)
    return true, pred


def binary_cross_entropy(y_true, y_pred):
    """Mean binary cross-entropy ``mean(-y_true * log(y_pred) - (1 - y_true) * log(1 -
    y_pred))``, a NumPy scalar; ``y_pred`` is clipped to ``[eps, 1 - eps]`` (``eps`` the
    dtype's machine epsilon). Values outside [0, 1] are a ``ValueError``."""
    true, pred = _bce_args(y_true, y_pred, "binary_cross_entropy")
    return (-true * np.log(pred) - (1 - true) * np.log(1 - pred)).sum() / pred.size


def binary_cross_entropy_prime(y_true, y_pred) -> np.ndarray:
    """Gradient of :func:`binary_cross_entropy` with respect to ``y_pred``:
    ``((1 - y_true) / (1 - y_pred) - y_true / y_pred) / size`` (``y_pred`` clipped as
    there), shape of ``y_pred``."""
    true, pred = _bce_args(y_true, y_pred, "binary_cross_entropy_prime")
    return ((1 - true) / (1 - pred) - true / pred) / pred.size
