"""The training loop: :func:`fit`, :func:`evaluate`, checkpoints, and :func:`lenet`.

:func:`fit` trains for whole epochs. After each epoch it writes one checkpoint with
:func:`fastcnn.save` (atomic: the file always holds the last *complete* epoch)::

    {"format": "fastcnn-checkpoint", "epoch": 3,
     "model": model.state_dict(), "optimizer": optimizer.state_dict(),
     "rng": rng.bit_generator.state, "layer_rngs": {"3": dropout.rng.bit_generator.state},
     "history": [{"epoch": 1, ...}, ...], "config": {...}, "start_loss": 2.30,
     "data": {"train_size": 60000, "image_shape": [1, 28, 28], "labels_sha256": "..."}}

and ``fit(..., resume=True)`` restores all of it, so a run that was killed and resumed
ends bitwise equal to one that never stopped (same seed and thread count). The random
generator drives the batch order only; the model's initial weights come from the caller.

A diverging run never reaches a checkpoint: the parameters are checked after every step
and the whole state before every checkpoint, and :func:`fit` raises
:class:`TrainingDiverged` (a ``FloatingPointError``) when a value is not finite or when the
loss stays above its starting value for a whole epoch. The last checkpoint then still
holds the last good epoch, and resuming from it with a lower learning rate is allowed.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fastcnn import io, nn
from fastcnn._checks import as_float
from fastcnn.data import iterate_batches

__all__ = [
    "CHECKPOINT_FORMAT", "TrainingDiverged", "check_resume", "data_record", "evaluate", "fit",
    "lenet", "load_checkpoint", "non_finite",
]  # fmt: skip

CHECKPOINT_FORMAT = "fastcnn-checkpoint"

#: A run diverges when every batch loss of an epoch is above the starting loss and at least
#: this many in a row were (across epochs, for epochs of few batches): a run that does not
#: learn has about half its batch losses above its start, so a short streak means little.
DIVERGENCE_STREAK = 8

#: Settings in ``config`` that a resumed run may change: more epochs, or a lower learning
#: rate after a run diverged (the change is logged).
RESUMABLE_CHANGES = frozenset({"epochs", "lr"})


class TrainingDiverged(FloatingPointError):
    """:func:`fit` stopped because the training diverged; nothing of it was saved.

    ``epoch``: the epoch that diverged; ``checkpoint``: the checkpoint path (or ``None``);
    ``last_good_epoch``: the epoch that checkpoint holds from this run or the one it
    resumed (0: none was written).
    """

    def __init__(self, message: str, epoch: int, checkpoint, last_good_epoch: int):
        super().__init__(message)
        self.epoch, self.checkpoint, self.last_good_epoch = epoch, checkpoint, last_good_epoch


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


def check_resume(path, saved: dict, config: dict | None) -> dict:
    """Compare the ``config`` of a run resuming from checkpoint ``path`` with the one saved.

    Returns ``{key: (saved, new)}`` for the changes allowed on resume
    (:data:`RESUMABLE_CHANGES`, ``epochs`` left out); raises ``ValueError`` naming every
    other changed setting. ``config=None`` checks nothing.
    """
    if config is None:
        return {}
    changed = {
        key: (saved.get(key), config.get(key))
        for key in saved.keys() | config.keys()
        if saved.get(key) != config.get(key)
    }
    refused = {k: v for k, v in changed.items() if k not in RESUMABLE_CHANGES}
    if refused:
        detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(refused.items()))
        raise ValueError(
            f"cannot resume from {os.fspath(path)!r}: it was written with other settings "
            f"({detail}); use the same settings, or another checkpoint directory"
        )
    return {k: v for k, v in changed.items() if k != "epochs"}


def data_record(train_data) -> dict:
    """What identifies the training data in a checkpoint: the number of images, their
    shape and the sha256 of the labels (as little-endian int64)."""
    x, y = train_data
    digest = hashlib.sha256(np.ascontiguousarray(y, dtype="<i8").tobytes())
    return {
        "train_size": len(y),
        "image_shape": [int(n) for n in np.shape(x)[1:]],
        "labels_sha256": digest.hexdigest(),
    }


def _check_data(path, saved: dict | None, current: dict) -> None:
    if saved is None:  # a checkpoint from before data records
        return
    differ = [
        f"{key}: {saved.get(key)!r} -> {current[key]!r}"
        for key in current
        if saved.get(key) != current[key]
    ]
    if differ:
        raise ValueError(
            f"cannot resume from {os.fspath(path)!r}: it was trained on other data "
            f"({', '.join(differ)}); resume with the data it was trained on, or use "
            "another checkpoint directory"
        )


def non_finite(state, prefix: str = "") -> list[str]:
    """The key paths of the arrays (and floats) in ``state`` (nested mappings and lists,
    as :func:`fastcnn.save` takes) that hold a NaN or an infinity."""
    if isinstance(state, dict):
        return [k for key, v in state.items() for k in non_finite(v, f"{prefix}{key}/")]
    if isinstance(state, (list, tuple)):
        return [k for i, v in enumerate(state) for k in non_finite(v, f"{prefix}{i}/")]
    if isinstance(state, (np.ndarray, np.floating, float)):
        array = np.asarray(state)
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            return [prefix.rstrip("/")]
    return []


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
    stop_on_divergence: bool = True,
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
            the stored ones, so a run is never continued with other hyper-parameters by
            mistake. ``epochs`` may differ, and so may ``lr``: a lower rate is how a
            diverged run continues; the change is logged and the optimiser keeps the
            rate it was built with instead of the checkpoint's.
        lr_schedule: called with each epoch (1-based) before it runs; the optimiser's
            ``lr`` is set to what it returns (e.g. :class:`fastcnn.optim.CosineSchedule`),
            which must be finite in the parameters' dtype. ``None`` leaves ``lr`` alone.
        progress: show a tqdm bar per epoch with the loss and images/s (``None``: only
            on a terminal).
        log: called with one line per epoch (default: ``tqdm.write`` to stdout).
        stop_on_divergence: raise :class:`TrainingDiverged` when the loss stays above
            its starting value (the first batch's) for a whole epoch (and for at least
            :data:`DIVERGENCE_STREAK` batches in a row). Non-finite values always stop
            the run.

    The checkpoint also records the training data (:func:`data_record`); resuming with
    other data raises ``ValueError``. After every step the parameters are checked (one
    ``np.isfinite`` pass each), and the whole state before every checkpoint: a NaN or
    inf raises :class:`TrainingDiverged` before anything is written.

    Returns:
        The history, one dict per epoch: ``epoch``, ``lr``, ``train_loss`` (mean over
        the epoch's images), ``test_accuracy`` (or ``None``), ``seconds`` (training
        only, without the evaluation), ``first_step_seconds`` (the first step loads or
        compiles the kernels) and ``images_per_second`` (after the first step).
    """
    from tqdm import tqdm

    from fastcnn.optim import check_representable

    if log is None:
        log = tqdm.write
    x, y = train_data
    history: list[dict] = []
    start = 0
    start_loss = None
    data = data_record(train_data)
    params = model.named_parameters()
    dtypes = {p.data.dtype for _, p in params}
    if resume:
        if checkpoint is None:
            raise ValueError("fit: resume=True needs a checkpoint path")
        state = load_checkpoint(checkpoint)
        changes = check_resume(checkpoint, state["config"], config)
        _check_data(checkpoint, state.get("data"), data)
        lr = getattr(optimizer, "lr", None)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        generators = _layer_generators(model)
        for path, saved in state.get("layer_rngs", {}).items():
            generators[path].bit_generator.state = saved
        history = list(state["history"])
        start = int(state["epoch"])
        start_loss = state.get("start_loss")
        log(f"resumed from {os.fspath(checkpoint)} after epoch {start}")
        if "lr" in changes:
            optimizer.lr = lr
            old, new = changes["lr"]
            log(f"learning rate changed on resume: {old!r} -> {new!r}")
    last_good, streak = start, 0
    model.train()
    n_batches = math.ceil(len(y) / batch_size)
    for epoch in range(start + 1, epochs + 1):
        if lr_schedule is not None:
            name = f"lr_schedule({epoch})"
            rate = as_float(lr_schedule(epoch), name, "fit", low=0.0)
            optimizer.lr = check_representable(rate, name, "fit", dtypes)
        loss_sum, seen = 0.0, 0
        judged, below = 0, False  # batches compared with start_loss; any not above it?
        bar = tqdm(
            total=n_batches,
            desc=f"epoch {epoch}/{epochs}",
            unit="batch",
            leave=False,
            disable=None if progress is None else not progress,
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        first_step, steady_t0, steady_seen = None, t0, 0
        with bar:
            for xb, yb in iterate_batches(x, y, batch_size, rng):
                optimizer.zero_grad()
                loss = float(loss_fn.forward(model(xb), yb))
                if not math.isfinite(loss):
                    raise _diverged(f"the loss became {loss}", epoch, checkpoint, last_good)
                model.backward(loss_fn.backward(), need_input_grad=False)
                optimizer.step()
                for name, p in params:
                    if not np.isfinite(p.data).all():
                        what = f"the step wrote NaN or inf into {name} (loss {loss:.4g})"
                        raise _diverged(what, epoch, checkpoint, last_good)
                if start_loss is None:
                    start_loss = loss  # the first batch of the run sets the bar
                else:
                    judged += 1
                    below = below or loss <= start_loss
                    streak = 0 if loss <= start_loss else streak + 1
                loss_sum += loss * len(yb)
                seen += len(yb)
                bar.update(1)
                if first_step is None:  # it loads (or compiles) the kernels: timed apart
                    steady_t0, steady_seen = time.perf_counter(), seen
                    first_step = steady_t0 - t0
                if bar.n % 10 == 0 or bar.n == n_batches:
                    rate = (seen - steady_seen) / (time.perf_counter() - steady_t0)
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{rate:.0f}")
        end = time.perf_counter()
        seconds = end - t0
        if seen > steady_seen:
            rate = (seen - steady_seen) / (end - steady_t0)
        else:
            rate = seen / seconds if seconds > 0 else 0.0
        if stop_on_divergence and judged and not below and streak >= DIVERGENCE_STREAK:
            what = (
                f"the loss stayed above its starting value {start_loss:.4g} for the whole "
                f"epoch (mean {loss_sum / seen:.4g})"
            )
            raise _diverged(what, epoch, checkpoint, last_good)
        accuracy = evaluate(model, *test_data) if test_data is not None else None
        record = {
            "epoch": epoch,
            "lr": optimizer.lr,
            "train_loss": loss_sum / max(seen, 1),
            "test_accuracy": accuracy,
            "seconds": seconds,
            "first_step_seconds": first_step,
            "images_per_second": rate,
        }
        history.append(record)
        log(_epoch_line(record, epochs, first=epoch == start + 1))
        if checkpoint is not None:
            state = _checkpoint_state(model, optimizer, rng, epoch, history, config)
            state.update(start_loss=start_loss, data=data)
            bad = non_finite(state)
            if bad:
                what = f"the state to checkpoint holds NaN or inf in {', '.join(bad[:5])}"
                raise _diverged(what, epoch, checkpoint, last_good)
            _save_checkpoint(checkpoint, state)
            last_good = epoch
    return history


def _diverged(what: str, epoch: int, checkpoint, last_good: int) -> TrainingDiverged:
    if checkpoint is None:
        kept = "no checkpoint is written"
    elif last_good == 0:
        kept = "no checkpoint of this run was written"
    else:
        kept = f"{os.fspath(checkpoint)} still holds epoch {last_good}"
    return TrainingDiverged(
        f"fit: training diverged in epoch {epoch}: {what}; nothing of this epoch was saved "
        f"({kept}); lower the learning rate",
        epoch,
        checkpoint,
        last_good,
    )


def _epoch_line(r: dict, epochs: int, first: bool) -> str:
    acc = "" if r["test_accuracy"] is None else f"  test accuracy {100 * r['test_accuracy']:.2f}%"
    first = first and r["first_step_seconds"] is not None
    step = f" (first step {r['first_step_seconds']:.1f} s)" if first else ""
    return (
        f"epoch {r['epoch']}/{epochs}  lr {r['lr']:.3g}  train loss {r['train_loss']:.4f}{acc}  "
        f"{r['seconds']:.1f} s{step}  {r['images_per_second']:.0f} images/s"
    )


def _checkpoint_state(model, optimizer, rng, epoch, history, config) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng.bit_generator.state,
        "layer_rngs": {k: g.bit_generator.state for k, g in _layer_generators(model).items()},
        "history": history,
        "config": config or {},
    }


def _save_checkpoint(path, state: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    io.save(state, path)
