"""The training loop: :func:`fit`, :func:`evaluate`, checkpoints, and :func:`lenet`.

:func:`fit` trains for whole epochs. After each epoch it writes one checkpoint with
:func:`fastcnn.save` (atomic: the file always holds the last *complete* epoch)::

    {"format": "fastcnn-checkpoint", "epoch": 3,
     "model": model.state_dict(), "optimizer": optimizer.state_dict(),
     "rng": rng.bit_generator.state, "layer_rngs": {"3": dropout.rng.bit_generator.state},
     "history": [{"epoch": 1, ...}, ...], "config": {...}}

and ``fit(..., resume=True)`` restores all of it, so a run that was killed and resumed
ends bitwise equal to one that never stopped (same seed and thread count). The random
generator drives the batch order only; the model's initial weights come from the caller.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fastcnn import io, nn
from fastcnn._checks import as_float
from fastcnn.data import iterate_batches

__all__ = ["CHECKPOINT_FORMAT", "evaluate", "fit", "lenet", "load_checkpoint"]

CHECKPOINT_FORMAT = "fastcnn-checkpoint"


def lenet(
    image_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    *,
    batchnorm: bool = False,
    rng: np.random.Generator | int | None = None,
) -> nn.Sequential:
    """Build a LeNet-style net sized to ``image_shape`` ``(C, H, W)``.

    Two blocks of 3x3 convolution (padding 1), 2x2 max-pool and ReLU, then a hidden
    fully connected layer: ``conv32-pool-relu-conv64-pool-relu-fc128-relu-fc10`` for
    images of 16 pixels or more (MNIST: 28x28 -> 64x7x7 -> 128 -> 10), half as wide for
    smaller ones (8x8 digits: ``conv16-...-conv32-...-fc64``). ``batchnorm`` inserts a
    ``BatchNorm2d`` after each convolution (which then has no bias). Weights are drawn
    from ``rng`` with torch's default initialisation; the net is float32 and takes
    ``(N, C, H, W)`` batches, returning ``(N, num_classes)`` logits.
    """
    channels, height, width = image_shape
    if min(height, width) < 4:
        raise ValueError(f"lenet: image_shape must be at least 4x4, got {image_shape!r}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    c1, c2, hidden = (32, 64, 128) if min(height, width) >= 16 else (16, 32, 64)
    layers = []
    for c_in, c_out in ((channels, c1), (c1, c2)):
        layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm, rng=rng))
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        # Pool, then ReLU: the same values and gradients as ReLU then pool (ReLU is
        # monotonic, so it commutes with max), with the ReLU on a quarter of the values.
        layers += [nn.MaxPool2d(2), nn.ReLU()]
    flat = c2 * (height // 4) * (width // 4)
    layers += [
        nn.Flatten(),
        nn.Linear(flat, hidden, rng=rng),
        nn.ReLU(),
        nn.Linear(hidden, num_classes, rng=rng),
    ]
    return nn.Sequential(*layers)


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Return the accuracy (a float in [0, 1]) of ``model``'s argmax on ``(x, y)``.

    ``x``: ``(N, C, H, W)`` float array, ``y``: ``(N,)`` integer labels. The model runs
    in eval mode and is put back in its previous mode.
    """
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for xb, yb in iterate_batches(x, y, batch_size, shuffle=False):
            correct += int(np.count_nonzero(model(xb).argmax(axis=1) == yb))
    finally:
        model.train(was_training)
    return correct / max(len(y), 1)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`fit` and check that it is one.

    Returns the checkpoint mapping (see the module docstring). Raises
    ``FileNotFoundError`` if ``path`` is missing and ``ValueError`` naming ``path`` if
    it is truncated, corrupted or not a fastcnn training checkpoint.
    """
    state = io.load(path)
    keys = {"format", "epoch", "model", "optimizer", "rng", "history", "config"}
    if state.get("format") != CHECKPOINT_FORMAT or not keys <= state.keys():
        raise ValueError(
            f"{os.fspath(path)!r} is a fastcnn file but not a training checkpoint "
            f"(expected the keys {sorted(keys)})"
        )
    return state


def _layer_generators(module, prefix: str = "") -> dict[str, np.random.Generator]:
    """The random generators owned by layers (``Dropout.rng``), keyed by module path."""
    found = {}
    if isinstance(getattr(module, "rng", None), np.random.Generator):
        found[prefix or "."] = module.rng
    for name, child in getattr(module, "_modules", {}).items():
        found.update(_layer_generators(child, f"{prefix}.{name}" if prefix else name))
    return found


def _check_resume(path, saved: dict, config: dict | None) -> None:
    if config is None:
        return
    ignore = {"epochs"}
    changed = {
        key: (saved.get(key), config.get(key))
        for key in (saved.keys() | config.keys()) - ignore
        if saved.get(key) != config.get(key)
    }
    if changed:
        detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
        raise ValueError(
            f"cannot resume from {os.fspath(path)!r}: it was written with other settings "
            f"({detail}); use the same settings, or another checkpoint directory"
        )


def fit(
    model,
    optimizer,
    loss_fn,
    train_data: tuple[np.ndarray, np.ndarray],
    test_data: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    config: dict | None = None,
    lr_schedule: Callable[[int], float] | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Train ``model`` for ``epochs`` epochs (in total, counting resumed ones).

    Args:
        model: a :class:`fastcnn.nn.Module` mapping ``(N, C, H, W)`` to logits.
        optimizer: a :mod:`fastcnn.optim` optimiser over ``model.parameters()``.
        loss_fn: a loss module (``forward(logits, labels)`` -> scalar, ``backward()``).
        train_data, test_data: ``(images, labels)`` pairs (float32 NCHW, int64 ``(N,)``);
            the test accuracy is measured after every epoch if ``test_data`` is given.
        epochs: total number of epochs to reach.
        batch_size: images per step (the last batch of an epoch may be smaller).
        rng: the ``numpy.random.Generator`` that orders the batches (one permutation
            per epoch); it is saved in and restored from the checkpoint.
        checkpoint: file written atomically after every epoch (``None``: no checkpoints).
        resume: continue from ``checkpoint`` (which must exist): restores the model,
            optimiser, ``rng``, epoch and history, then trains the remaining epochs.
        config: JSON-able settings stored in the checkpoint; on resume they must equal
            the stored ones (``epochs`` may differ), so a run is never continued with
            other hyper-parameters by mistake.
        lr_schedule: called with each epoch (1-based) before it runs; the optimiser's
            ``lr`` is set to what it returns (e.g. :class:`fastcnn.optim.CosineSchedule`).
            ``None`` leaves ``lr`` alone.
        progress: show a tqdm bar per epoch with the loss and images/s (``None``: only
            on a terminal).
        log: called with one line per epoch (default: ``tqdm.write`` to stdout).

    Returns:
        The history, one dict per epoch: ``epoch``, ``lr``, ``train_loss`` (mean over
        the epoch's images), ``test_accuracy`` (or ``None``), ``seconds`` and
        ``images_per_second`` (training only, without the evaluation).
    """
    from tqdm import tqdm

    if log is None:
        log = tqdm.write
    x, y = train_data
    history: list[dict] = []
    start = 0
    if resume:
        if checkpoint is None:
            raise ValueError("fit: resume=True needs a checkpoint path")
        state = load_checkpoint(checkpoint)
        _check_resume(checkpoint, state["config"], config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        generators = _layer_generators(model)
        for path, saved in state.get("layer_rngs", {}).items():
            generators[path].bit_generator.state = saved
        history = list(state["history"])
        start = int(state["epoch"])
        log(f"resumed from {os.fspath(checkpoint)} after epoch {start}")
    model.train()
    n_batches = math.ceil(len(y) / batch_size)
    for epoch in range(start + 1, epochs + 1):
        if lr_schedule is not None:
            optimizer.lr = as_float(lr_schedule(epoch), f"lr_schedule({epoch})", "fit", low=0.0)
        loss_sum, seen = 0.0, 0
        bar = tqdm(
            total=n_batches,
            desc=f"epoch {epoch}/{epochs}",
            unit="batch",
            leave=False,
            disable=None if progress is None else not progress,
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        with bar:
            for xb, yb in iterate_batches(x, y, batch_size, rng):
                optimizer.zero_grad()
                loss = float(loss_fn.forward(model(xb), yb))
                model.backward(loss_fn.backward(), need_input_grad=False)
                optimizer.step()
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"fit: the loss became {loss} in epoch {epoch}; lower the learning "
                        "rate (the last checkpoint is unchanged)"
                    )
                loss_sum += loss * len(yb)
                seen += len(yb)
                bar.update(1)
                if bar.n % 10 == 0 or bar.n == n_batches:
                    rate = seen / (time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{rate:.0f}")
        seconds = time.perf_counter() - t0
        accuracy = evaluate(model, *test_data) if test_data is not None else None
        record = {
            "epoch": epoch,
            "lr": optimizer.lr,
            "train_loss": loss_sum / max(seen, 1),
            "test_accuracy": accuracy,
            "seconds": seconds,
            "images_per_second": seen / seconds if seconds > 0 else 0.0,
        }
        history.append(record)
        log(_epoch_line(record, epochs))
        if checkpoint is not None:
            _save_checkpoint(checkpoint, model, optimizer, rng, epoch, history, config)
    return history


def _epoch_line(r: dict, epochs: int) -> str:
    acc = "" if r["test_accuracy"] is None else f"  test accuracy {100 * r['test_accuracy']:.2f}%"
    return (
        f"epoch {r['epoch']}/{epochs}  lr {r['lr']:.3g}  train loss {r['train_loss']:.4f}{acc}  "
        f"{r['seconds']:.1f} s  {r['images_per_second']:.0f} images/s"
    )


def _save_checkpoint(path, model, optimizer, rng, epoch, history, config) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    io.save(
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng.bit_generator.state,
            "layer_rngs": {k: g.bit_generator.state for k, g in _layer_generators(model).items()},
            "history": history,
            "config": config or {},
        },
        path,
    )
