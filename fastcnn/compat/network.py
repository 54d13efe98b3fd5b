"""The tutorials' loops: ``predict(network, input)`` and ``train(network, loss,
loss_prime, x_train, y_train, epochs, learning_rate, verbose)``.

A network is a list of layers, each with ``forward(input)`` and ``backward(
output_gradient, learning_rate)``: the layers of :mod:`fastcnn.compat`, a user's own
tutorial-style classes, or a mix.
"""

from __future__ import annotations

import numpy as np

from fastcnn import warmup
from fastcnn._checks import _is_int, as_bool, as_float
from fastcnn.compat.layers import Layer

__all__ = ["predict", "train"]


def _layers(network, op: str) -> list:
    if isinstance(network, (str, bytes)) or not hasattr(network, "__iter__"):
        raise TypeError(f"{op}: network must be a list of layers, got {type(network).__name__}")
    layers = list(network)
    if not layers:
        raise ValueError(f"{op}: network must hold at least one layer, got an empty list")
    for i, layer in enumerate(layers):
        for method in ("forward", "backward"):
            if not callable(getattr(layer, method, None)):
                raise TypeError(
                    f"{op}: network[{i}] must have forward and backward methods, "
                    f"got {type(layer).__name__}"
                )
    return layers


def predict(network, input):
    """Run ``input`` through every layer of ``network`` in order; return the output."""
    output = input
    for layer in _layers(network, "predict"):
        output = layer.forward(output)
    return output


def _backward_steps(layers: list, learning_rate: float) -> list:
    """One callable per layer, ``grad -> input gradient``, for the backward pass.

    fastcnn's own layers are called past the learning rate's check (done once), and the
    network's first layer, if it is one of them, skips its input gradient, which nothing
    uses; any other layer gets the tutorial call ``backward(grad, learning_rate)``.
    """
    steps = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Layer) and type(layer).backward is Layer.backward:
            steps.append(lambda g, f=layer._backward, need=(i > 0): f(g, learning_rate, need))
        else:
            steps.append(lambda g, f=layer.backward: f(g, learning_rate))
    return steps


def _warm_up(layers: list, verbose: bool) -> None:
    """The first time on this machine, compile the kernels that the network's fastcnn
    layers run in parallel worker processes (:mod:`fastcnn.warmup`), loading each here as
    it is done; with ``verbose``, say so and how long it took."""
    dtype = next(
        (a.dtype.name for layer in layers for a in (getattr(layer, "weights", None),
         getattr(layer, "kernels", None)) if isinstance(a, np.ndarray)),
        "float64",
    )  # fmt: skip
    jobs = warmup.longest_first(
        dict.fromkeys(
            job
            for i, layer in enumerate(layers)
            if isinstance(layer, Layer)
            for job in layer._warmup_jobs(i == 0, dtype)
        )
    )
    if not jobs or not warmup.needed(jobs):
        return
    if verbose:
        print("compiling fastcnn's kernels for this CPU, once: later runs load them from the "
              "cache", flush=True)  # fmt: skip
    try:
        seconds = warmup.warmup(jobs, progress=False, load=True)
    except (OSError, RuntimeError) as exc:
        if verbose:
            first = str(exc).splitlines()[0]
            print(f"warm-up failed ({first}); compiling on first use", flush=True)
        return
    if verbose:
        print(f"compiled the kernels in {seconds:.1f} s", flush=True)


def train(
    network,
    loss,
    loss_prime,
    x_train,
    y_train,
    epochs=1000,
    learning_rate=0.01,
    verbose=True,
):
    """Plain per-sample gradient descent, as the tutorials' ``train``.

    For each epoch and each ``(x, y)`` of ``zip(x_train, y_train)`` in order: forward,
    ``loss(y, output)``, ``grad = loss_prime(y, output)``, then every layer's backward in
    reverse with ``learning_rate``. With ``verbose``, prints ``"{epoch}/{epochs},
    error={mean loss}"`` after each epoch.

    Args:
        network: list of layers.
        loss, loss_prime: functions of ``(y_true, y_pred)``, e.g. :func:`binary_cross_entropy`
            and :func:`binary_cross_entropy_prime`.
        x_train, y_train: sequences (arrays) of samples and targets of the same length.
        epochs: int >= 0.
        learning_rate: real number >= 0.
        verbose: bool.

    Returns:
        The mean loss of each epoch, a list (the tutorials return nothing; ignoring it is
        fine).
    """
    op = "train"
    layers = _layers(network, op)
    for name, f in (("loss", loss), ("loss_prime", loss_prime)):
        if not callable(f):
            raise TypeError(f"{op}: {name} must be callable, got {type(f).__name__}")
    for name, data in (("x_train", x_train), ("y_train", y_train)):
        if not hasattr(data, "__len__") or isinstance(data, (str, bytes)):
            raise TypeError(f"{op}: {name} must be an array or a list, got {type(data).__name__}")
    if len(x_train) != len(y_train):
        raise ValueError(
            f"{op}: x_train and y_train must have the same length, got {len(x_train)} and "
            f"{len(y_train)}"
        )
    if not _is_int(epochs):
        raise TypeError(f"{op}: epochs must be an int, got {epochs!r}")
    if epochs < 0:
        raise ValueError(f"{op}: epochs must be >= 0, got {epochs!r}")
    lr = as_float(learning_rate, "learning_rate", op, low=0.0)
    verbose = as_bool(verbose, "verbose", op)
    if epochs and not len(x_train):
        raise ValueError(f"{op}: x_train must hold at least one sample, got none")

    if epochs:
        _warm_up(layers, verbose)
    steps = _backward_steps(layers, lr)[::-1]
    history = []
    for e in range(epochs):
        error = 0
        for x, y in zip(x_train, y_train, strict=True):
            output = x
            for layer in layers:
                output = layer.forward(output)
            error += loss(y, output)
            grad = loss_prime(y, output)
            for step in steps:
                grad = step(grad)
        error /= len(x_train)
        if verbose:
            print(f"{e + 1}/{epochs}, error={error}")
        history.append(error)
    return history
