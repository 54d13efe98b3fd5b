"""The named benchmark presets: the one list shared by ``benchmarks/`` and ``fastcnn bench``.

A preset names a problem size. Expanding its shapes over their directions gives the
benchmark cases (``conv2d forward mnist-conv2``, ``max_pool2d backward mnist-pool1``, ...),
each with its FLOP count. :mod:`fastcnn.bench.workloads` builds the callables that run a
case with each implementation:

- ``fastcnn``: :mod:`fastcnn.functional` (and :mod:`fastcnn.nn` for the training step);
- ``reference``: :mod:`fastcnn.reference`, affordable on small presets only;
- ``torch``: PyTorch's CPU kernels, imported only when asked for (fastcnn never needs it);
- ``tutorial``: :mod:`fastcnn.bench.tutorial`, a ``scipy.signal.correlate2d`` layer of the
  from-scratch style, for the conv cases of small presets (imports SciPy when asked for).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastcnn import _checks
from fastcnn._kernels import plan

IMPLEMENTATIONS = ("fastcnn", "reference", "torch", "tutorial")

# --- shapes --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvShape:
    """A 3x3-style convolution: input (n, c, h, w), weight (k, c, kh, kw), stride 1."""

    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int = 3
    kw: int = 3
    padding: int = 0

    op = "conv2d"
    directions = ("forward", "grad_input", "grad_weight")

    @property
    def out_hw(self) -> tuple[int, int]:
        """The output's height and width."""
        return self.h + 2 * self.padding - self.kh + 1, self.w + 2 * self.padding - self.kw + 1

    def flops(self, direction: str) -> int:
        """Multiply-adds times two; each direction is one GEMM of the same size."""
        oh, ow = self.out_hw
        return 2 * self.n * self.k * self.c * self.kh * self.kw * oh * ow

    def __str__(self) -> str:
        pad = f" pad {self.padding}" if self.padding else ""
        return f"N{self.n} C{self.c} {self.h}x{self.w} K{self.k} {self.kh}x{self.kw}{pad}"


@dataclass(frozen=True)
class PoolShape:
    """A max-pool with a square window and stride equal to it over (n, c, h, w)."""

    n: int
    c: int
    h: int
    w: int
    kernel: int = 2

    op = "max_pool2d"
    directions = ("forward", "backward")

    def flops(self, direction: str) -> None:
        """None: memory-bound, time is the measure."""
        return None

    def __str__(self) -> str:
        return f"{self.n}x{self.c}x{self.h}x{self.w} window {self.kernel}"


@dataclass(frozen=True)
class BatchNormShape:
    """Training-mode batchnorm over (n, c, h, w), forward then backward."""

    n: int
    c: int
    h: int
    w: int

    op = "batch_norm2d"
    directions = ("forward+backward",)

    def flops(self, direction: str) -> None:
        """None: memory-bound, time is the measure."""
        return None

    def __str__(self) -> str:
        return f"{self.n}x{self.c}x{self.h}x{self.w}"


@dataclass(frozen=True)
class LinearShape:
    """``linear``: x (n, in_features) times the transposed weight (out_features,
    in_features), plus a bias."""

    n: int
    in_features: int
    out_features: int

    op = "linear"
    directions = ("forward",)

    def flops(self, direction: str) -> int:
        """Multiply-adds times two."""
        return 2 * self.n * self.in_features * self.out_features

    def __str__(self) -> str:
        return f"{self.n}x{self.in_features} -> {self.out_features}"


LOSSES = ("cross_entropy", "binary_cross_entropy")


@dataclass(frozen=True)
class LossShape:
    """A loss and its input's gradient, one call, over (n, c): ``cross_entropy`` of logits
    against integer classes, or ``binary_cross_entropy`` of probabilities against 0/1."""

    op: str
    n: int
    c: int

    directions = ("forward+backward",)

    def __post_init__(self):
        if self.op not in LOSSES:
            raise ValueError(f"op must be one of {LOSSES}, got {self.op!r}")

    def flops(self, direction: str) -> None:
        """None: memory-bound, time is the measure."""
        return None

    def __str__(self) -> str:
        return f"{self.n}x{self.c}"


@dataclass(frozen=True)
class TrainStepShape:
    """One SGD step (momentum 0.9, cross-entropy) of the MNIST net
    (:data:`fastcnn.bench.workloads.MNIST_NET`) on a batch of 28x28 images."""

    batch: int

    op = "train_step"
    directions = ("sgd",)

    def flops(self, direction: str) -> int:
        """The convolutions and matmuls a step needs (the first conv's input gradient is
        not needed, so it is not counted even where an implementation computes it)."""
        conv1 = ConvShape(self.batch, 1, 28, 28, 32).flops("forward")
        conv2 = ConvShape(self.batch, 32, 13, 13, 64).flops("forward")
        linear = 2 * self.batch * (64 * 5 * 5 * 128 + 128 * 10)
        return 2 * conv1 + 3 * conv2 + 3 * linear

    def __str__(self) -> str:
        return f"MNIST net, batch {self.batch}"


Shape = ConvShape | PoolShape | BatchNormShape | LinearShape | LossShape | TrainStepShape


# --- presets and cases ---------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A named problem size (``tiny`` holds one small shape of every op, for tests)."""

    name: str
    shapes: tuple[Shape, ...]
    small: bool  # fastcnn.reference (and the tutorial baseline) are affordable here
    quick: bool  # part of ``fastcnn bench --quick``


TINY = (
    ConvShape(2, 3, 7, 9, 4, padding=1),
    PoolShape(2, 3, 6, 8),
    BatchNormShape(2, 3, 5, 5),
    LinearShape(2, 6, 4),
    LossShape("cross_entropy", 2, 3),
    LossShape("binary_cross_entropy", 2, 3),
)
MNIST_LOSSES = (LossShape("cross_entropy", 64, 10), LossShape("binary_cross_entropy", 64, 1))
PRESETS = (
    Preset("tiny", (*TINY, TrainStepShape(2)), small=True, quick=False),
    Preset("mnist-conv1", (ConvShape(64, 1, 28, 28, 32),), small=True, quick=True),
    Preset("mnist-conv2", (ConvShape(64, 32, 13, 13, 64),), small=True, quick=True),
    Preset("cifar-16x32", (ConvShape(64, 16, 32, 32, 32, padding=1),), small=False, quick=False),
    Preset("cifar-64x64", (ConvShape(32, 64, 32, 32, 64, padding=1),), small=False, quick=True),
    Preset("mnist-pool1", (PoolShape(64, 32, 26, 26),), small=True, quick=True),
    Preset("mnist-bn1", (BatchNormShape(64, 32, 26, 26),), small=True, quick=True),
    Preset("mnist-fc1", (LinearShape(64, 1600, 128),), small=True, quick=True),
    Preset("mnist-loss", MNIST_LOSSES, small=True, quick=True),
    Preset("mnist-step", (TrainStepShape(64),), small=False, quick=True),
)
PRESET_NAMES = tuple(p.name for p in PRESETS)
DEFAULT_PRESETS = tuple(p.name for p in PRESETS if p.name != "tiny")
QUICK_PRESETS = tuple(p.name for p in PRESETS if p.quick)


@dataclass(frozen=True)
class Case:
    """One benchmark: a shape of a preset in one direction."""

    preset: str
    shape: Shape
    direction: str
    small: bool  # of a small preset: the reference is affordable

    @property
    def op(self) -> str:
        """The operation: ``conv2d``, ``max_pool2d``, ..., ``train_step``."""
        return self.shape.op

    @property
    def flops(self) -> int | None:
        """The case's FLOP count (None for memory-bound ops)."""
        return self.shape.flops(self.direction)

    @property
    def group(self) -> str:
        """The pytest-benchmark group: implementations of one case are compared together."""
        return f"{self.op} {self.direction} {self.preset}"

    @property
    def implementations(self) -> tuple[str, ...]:
        """The implementations worth timing here: the reference only where affordable, and
        only for single ops (it has no layer API for the training step); the tutorial layer
        only for the convolutions of small presets."""
        if not self.small or self.op == "train_step":
            return ("fastcnn", "torch")
        return IMPLEMENTATIONS if self.op == "conv2d" else ("fastcnn", "reference", "torch")

    @property
    def kernel(self) -> str | None:
        """The kernel fastcnn's conv plan (:func:`fastcnn._kernels.plan.choose`) picks for
        this case, in float32; None for ops other than conv2d."""
        if self.op != "conv2d":
            return None
        s = self.shape
        x = np.empty((s.n, s.c, s.h, s.w), np.float32)  # shapes only: never touched
        weight = np.empty((s.k, s.c, s.kh, s.kw), np.float32)
        geometry = _checks.conv2d_args(x, weight, None, 1, s.padding, 1)
        return plan.choose(self.direction, geometry).kernel

    def __str__(self) -> str:
        return f"{self.op}-{self.direction}-{self.preset}"


def cases(names=None) -> list[Case]:
    """The cases of the named presets (default :data:`DEFAULT_PRESETS`), in table order."""
    names = DEFAULT_PRESETS if names is None else (names,) if isinstance(names, str) else names
    unknown = sorted(set(names) - set(PRESET_NAMES))
    if unknown:
        raise ValueError(f"unknown preset(s) {unknown}; choose from {list(PRESET_NAMES)}")
    return [
        Case(p.name, shape, direction, p.small)
        for p in PRESETS
        if p.name in names
        for shape in p.shapes
        for direction in shape.directions
    ]
