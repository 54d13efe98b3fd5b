"""``Sequential`` and ``Flatten``."""

from __future__ import annotations

import math

from fastcnn.nn.activation import ReLU
from fastcnn.nn.module import Module
from fastcnn.nn.pool import MaxPool2d

__all__ = ["Flatten", "Sequential"]


class Flatten(Module):
    """Flatten all but the batch axis: (N, C, H, W) -> (N, C*H*W).

    A 3-D input is one unbatched sample (C, H, W) and becomes (C*H*W,), so that an
    unbatched sample flows from conv layers into :class:`~fastcnn.nn.Linear`. Inputs of
    rank 1 or 2 pass unchanged.
    """

    def _forward(self, x):
        self._cache = x.shape
        if x.ndim == 3:
            return x.reshape(-1)
        # explicit sizes, not -1: an empty batch (0, C, H, W) must become (0, C*H*W)
        return x.reshape(x.shape[0], math.prod(x.shape[1:])) if x.ndim > 2 else x

    def _backward(self, grad_out, need_input_grad):
        shape = self._cache
        if grad_out.size != math.prod(shape):
            raise ValueError(
                f"Flatten: grad_out must have {math.prod(shape)} elements to match the "
                f"input shape {shape}, got shape {grad_out.shape}"
            )
        return grad_out.reshape(shape) if need_input_grad else None


class Sequential(Module):
    """Layers applied in order; its parameters and state are the layers', named
    ``"<index>.<name>"`` as in torch (``"0.weight"``, ``"3.running_var"``).

    ``backward(grad_out)`` runs the layers' backward in reverse and returns the input
    gradient; a training loop that does not need it passes ``need_input_grad=False``,
    which skips the first layer's input gradient (the costliest part of a first conv).

    A ``ReLU`` directly followed by a ``MaxPool2d`` runs after it instead: ReLU is
    monotonic, so it commutes with max, and pool-then-ReLU gives the same output and the
    same gradients (up to the sign of a zero where overlapping windows add up) with the
    ReLU on the pooled, smaller tensor. Each layer still sees the input it runs on.
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential: layer {i} must be a fastcnn.nn.Module, got {type(layer).__name__}"
                )
            setattr(self, str(i), layer)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        layers = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*layers[index])
        return layers[index]

    def _schedule(self) -> list[Module]:
        """The layers in the order they run: each ReLU-then-MaxPool2d pair swapped. Kept
        while the layers stay the same (a layer may be replaced by assignment)."""
        layers = tuple(self._modules.values())
        kept = self.__dict__.get("_kept_schedule")
        if kept is not None and kept[0] == layers:
            return kept[1]
        schedule = self._swap_relu_pool(list(layers))
        object.__setattr__(self, "_kept_schedule", (layers, schedule))
        return schedule

    @staticmethod
    def _swap_relu_pool(layers: list[Module]) -> list[Module]:
        i = 0
        while i + 1 < len(layers):
            if type(layers[i]) is ReLU and type(layers[i + 1]) is MaxPool2d:
                layers[i], layers[i + 1] = layers[i + 1], layers[i]
                i += 1
            i += 1
        return layers

    def _forward(self, x):
        layers = self._schedule()
        for layer in layers:
            x = layer(x)
        self._cache = layers
        return x

    def _backward(self, grad_out, need_input_grad):
        layers = self._cache
        for i in range(len(layers) - 1, -1, -1):
            grad_out = layers[i].backward(grad_out, need_input_grad=need_input_grad or i > 0)
        return grad_out

    def __repr__(self) -> str:
        if not self._modules:
            return "Sequential()"
        lines = [
            f"  ({name}): {layer!r}".replace("\n", "\n  ") for name, layer in self._modules.items()
        ]
        return "Sequential(\n" + "\n".join(lines) + "\n)"
