"""Losses: ``forward(pred, target)`` returns the mean loss, ``backward()`` its gradient."""

from __future__ import annotations

import numpy as np

from fastcnn import functional as F
from fastcnn._checks import _is_int, as_float

__all__ = ["BCELoss", "CrossEntropyLoss"]


class _Loss:
    """Shared calling convention: ``loss(pred, target)``, then ``backward()``."""

    def __init__(self):
        self._grad = None
        self._unbatched = False

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def backward(self) -> np.ndarray:
        """Return the gradient of the last loss with respect to the prediction.

        Shape and dtype of the prediction given to the last ``forward``.
        """
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}: backward called before forward")
        return self._grad[0] if self._unbatched else self._grad

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CrossEntropyLoss(_Loss):
    """Mean softmax cross-entropy of logits against integer class targets.

    ``forward(logits, targets)``: logits (N, C) float32/float64 and targets (N,) integer
    class indices, or one sample: logits (C,) and an int target. Returns the loss as a
    NumPy scalar of the logits' dtype; ``backward()`` returns d loss / d logits
    (``(softmax - one_hot) / N``). As ``torch.nn.CrossEntropyLoss()`` (mean reduction).
    """

    def forward(self, logits, targets):
        """Return the mean cross-entropy (NumPy scalar of the logits' dtype)."""
        self._unbatched = isinstance(logits, np.ndarray) and logits.ndim == 1
        if self._unbatched:
            if _is_int(targets):
                targets = np.array([targets], np.int64)
            elif isinstance(targets, np.ndarray) and targets.ndim == 0:
                targets = targets.reshape(1)
            logits = logits[np.newaxis]
        loss, self._grad = F.cross_entropy(logits, targets)
        return loss


class BCELoss(_Loss):
    """Mean binary cross-entropy of probabilities against targets in [0, 1].

    ``forward(probs, targets)``: same-shaped float arrays (any shape). The logarithms
    clip ``probs`` to ``[eps, 1 - eps]`` (torch instead clamps each log at -100, which
    differs only for probabilities within ``eps`` of 0 or 1). Returns a NumPy scalar;
    ``backward()`` returns d loss / d probs.
    """

    def __init__(self, eps=1e-7):
        super().__init__()
        self.eps = as_float(eps, "eps", "BCELoss", low=0.0, high=0.5)

    def forward(self, probs, targets):
        """Return the mean binary cross-entropy (NumPy scalar of the probs' dtype)."""
        loss, self._grad = F.binary_cross_entropy(probs, targets, self.eps)
        return loss

    def __repr__(self) -> str:
        return "BCELoss()" if self.eps == 1e-7 else f"BCELoss(eps={self.eps})"
