"""The named benchmark presets: the one list shared by ``benchmarks/`` and ``fastcnn bench``.

A preset names a problem size. Expanding its shapes over their directions gives the
benchmark cases (``conv2d forward mnist-conv2``, ``max_pool2d backward mnist-pool1``, ...).
Each case knows its FLOP count and builds, from a seed, a zero-argument callable that runs
it with one implementation on fixed inputs:

- ``fastcnn``: :mod:`fastcnn.functional` (and :mod:`fastcnn.nn` for the training step);
- ``reference``: :mod:`fastcnn.reference`, affordable on small presets only;
- ``torch``: PyTorch's CPU kernels, imported only when asked for (fastcnn never needs it);
- ``tutorial``: :mod:`fastcnn._tutorial`, a ``scipy.signal.correlate2d`` layer of the
  from-scratch style, for the conv cases of small presets (imports SciPy when asked for).

Every implementation of a case gets the same input arrays (same seed), so their results
can be compared (:func:`assert_same`) before they are timed.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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
        return None  # memory-bound: time is the measure

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
        return None

    def __str__(self) -> str:
        return f"{self.n}x{self.c}x{self.h}x{self.w}"


@dataclass(frozen=True)
class TrainStepShape:
    """One SGD step (momentum 0.9, cross-entropy) of :data:`MNIST_NET` on a batch of 28x28."""

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


Shape = ConvShape | PoolShape | BatchNormShape | TrainStepShape


# --- presets and cases ---------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A named problem size (``tiny`` holds one small shape of every op, for tests)."""

    name: str
    shapes: tuple[Shape, ...]
    small: bool  # fastcnn.reference (and the tutorial baseline) are affordable here
    quick: bool  # part of ``fastcnn bench --quick``


TINY = (ConvShape(2, 3, 7, 9, 4, padding=1), PoolShape(2, 3, 6, 8), BatchNormShape(2, 3, 5, 5))
PRESETS = (
    Preset("tiny", (*TINY, TrainStepShape(2)), small=True, quick=False),
    Preset("mnist-conv1", (ConvShape(64, 1, 28, 28, 32),), small=True, quick=True),
    Preset("mnist-conv2", (ConvShape(64, 32, 13, 13, 64),), small=True, quick=True),
    Preset("cifar-16x32", (ConvShape(64, 16, 32, 32, 32, padding=1),), small=False, quick=False),
    Preset("cifar-64x64", (ConvShape(32, 64, 32, 32, 64, padding=1),), small=False, quick=True),
    Preset("mnist-pool1", (PoolShape(64, 32, 26, 26),), small=True, quick=True),
    Preset("mnist-bn1", (BatchNormShape(64, 32, 26, 26),), small=True, quick=True),
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
        return self.shape.op

    @property
    def flops(self) -> int | None:
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


# --- inputs --------------------------------------------------------------------------

MNIST_NET = (
    "conv 1->32 3x3, relu, maxpool 2, conv 32->64 3x3, relu, maxpool 2, flatten, "
    "linear 1600->128, relu, linear 128->10"
)
MNIST_LR = 0.01
MNIST_MOMENTUM = 0.9


def _normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def stroke_images(rng: np.random.Generator, n: int, size: int = 28) -> np.ndarray:
    """``n`` digit-like float32 images (n, 1, size, size): three thick random strokes on a
    zero background, values in [0, 1], about 80% zeros like MNIST.

    The training step is timed on these rather than on uniform noise, on which torch's
    data-dependent max-pool is slower than on digits (its forward on the ReLU of a
    convolution: 3.6-3.9 ms on noise, 2.0 on real MNIST digits; its whole step, alternating
    samples at 2 threads: 16.9-18.3 ms on noise, 15.2-16.0 on these, 15.6-16.4 on real
    digits; fastcnn's 11.6-13.3 on all three).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.zeros((n, 1, size, size), np.float32)
    for image in images:
        for _ in range(3):
            (y0, x0), (y1, x1) = rng.uniform(4, size - 4, (2, 2))
            t = np.clip(((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0))
                        / max((y1 - y0) ** 2 + (x1 - x0) ** 2, 1e-6), 0, 1)  # fmt: skip
            dist = np.hypot(yy - y0 - t * (y1 - y0), xx - x0 - t * (x1 - x0))
            image[0] = np.maximum(image[0], np.clip(2.0 - dist, 0, 1))
    return images


def mnist_net_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Initial float32 parameters of :data:`MNIST_NET` under torch's ``Sequential`` key
    names, uniform in +-1/sqrt(fan_in) as torch's default initialisation."""
    layers = {"0": (32, 1, 3, 3), "3": (64, 32, 3, 3), "7": (128, 1600), "9": (10, 128)}
    state = {}
    for index, shape in layers.items():
        bound = 1 / math.sqrt(math.prod(shape[1:]))
        state[f"{index}.weight"] = rng.uniform(-bound, bound, shape).astype(np.float32)
        state[f"{index}.bias"] = rng.uniform(-bound, bound, shape[0]).astype(np.float32)
    return state


def inputs(case: Case, seed: int = 0) -> dict[str, np.ndarray]:
    """The float32 input arrays of ``case``, drawn from ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    s = case.shape
    if isinstance(s, ConvShape):
        oh, ow = s.out_hw
        return {
            "x": _normal(rng, s.n, s.c, s.h, s.w),
            "weight": _normal(rng, s.k, s.c, s.kh, s.kw),
            "bias": _normal(rng, s.k),
            "grad_out": _normal(rng, s.n, s.k, oh, ow),
        }
    if isinstance(s, PoolShape):
        return {
            "x": _normal(rng, s.n, s.c, s.h, s.w),
            "grad_out": _normal(rng, s.n, s.c, s.h // s.kernel, s.w // s.kernel),
        }
    if isinstance(s, BatchNormShape):
        return {
            "x": _normal(rng, s.n, s.c, s.h, s.w),
            "weight": 1 + 0.1 * _normal(rng, s.c),
            "bias": 0.1 * _normal(rng, s.c),
            "grad_out": _normal(rng, s.n, s.c, s.h, s.w),
        }
    return {
        "x": stroke_images(rng, s.batch),
        "targets": rng.integers(0, 10, s.batch),
        **mnist_net_state(rng),
    }


# --- workloads -----------------------------------------------------------------------


def workload(case: Case, impl: str, seed: int = 0) -> Callable[[], object]:
    """A zero-argument callable running ``case`` with implementation ``impl``.

    It returns the case's result (NumPy arrays for ``fastcnn``/``reference``, tensors for
    ``torch``; the loss for the training step) and has no effect but on buffers it owns
    (batchnorm running statistics, the training step's parameters). ``torch`` raises
    ``ImportError`` where PyTorch is not installed, ``tutorial`` where SciPy is not.
    """
    if impl == "torch":
        return _torch_workload(case, inputs(case, seed))
    if impl == "fastcnn":
        lib = importlib.import_module("fastcnn.functional")
    elif impl == "reference":
        lib = importlib.import_module("fastcnn.reference")
    elif impl == "tutorial":
        if case.op != "conv2d":
            raise ValueError(f"{case}: the tutorial implementation is of conv2d only")
        lib = importlib.import_module("fastcnn._tutorial")
    else:
        raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if case.op == "train_step":
        if impl != "fastcnn":
            raise ValueError(f"{case}: no {impl} implementation of the training step")
        return _fastcnn_train_step(inputs(case, seed))
    return numpy_workload(case, lib, seed)


def numpy_workload(case: Case, lib, seed: int = 0) -> Callable[[], object]:
    """Like :func:`workload` for any module with the functional contract's NumPy API
    (``fastcnn.functional``, ``fastcnn.reference``, the tutorial baseline)."""
    a = inputs(case, seed)
    s = case.shape
    x, grad_out = a["x"], a["grad_out"]
    if case.op == "conv2d":
        weight, p = a["weight"], s.padding
        return {
            "forward": lambda: lib.conv2d(x, weight, a["bias"], padding=p),
            "grad_input": lambda: lib.conv2d_grad_input(x.shape, weight, grad_out, padding=p),
            "grad_weight": lambda: lib.conv2d_grad_weight(x, weight.shape, grad_out, padding=p),
        }[case.direction]
    if case.op == "max_pool2d":
        if case.direction == "forward":
            return lambda: lib.max_pool2d(x, s.kernel)
        _, indices = lib.max_pool2d(x, s.kernel)
        return lambda: lib.max_pool2d_backward(grad_out, indices, x.shape)
    if case.op == "batch_norm2d":
        weight, bias = a["weight"], a["bias"]
        running_mean, running_var = np.zeros(s.c, np.float32), np.ones(s.c, np.float32)

        def forward_backward():
            _, mean, invstd = lib.batch_norm2d(x, weight, bias, running_mean, running_var)
            return lib.batch_norm2d_backward(grad_out, x, weight, mean, invstd)

        return forward_backward
    raise ValueError(f"{case}: not a single op")


def _fastcnn_train_step(a: dict) -> Callable[[], object]:
    from fastcnn import nn, optim

    net = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip
    net.load_state_dict({k: v.copy() for k, v in a.items() if "." in k})
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(net.parameters(), lr=MNIST_LR, momentum=MNIST_MOMENTUM)
    x, targets = a["x"], a["targets"]

    def step():
        opt.zero_grad()
        loss = loss_fn.forward(net.forward(x), targets)
        net.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
        return loss

    return step


def _torch_workload(case: Case, a: dict) -> Callable[[], object]:
    torch = importlib.import_module("torch")  # optional: only `fastcnn bench` asks for it
    t = {k: torch.from_numpy(v) for k, v in a.items()}
    s = case.shape
    if case.op == "conv2d":
        conv, grad = torch.nn.functional.conv2d, torch.nn.grad
        x, weight, grad_out, p = t["x"], t["weight"], t["grad_out"], s.padding
        return {
            "forward": lambda: conv(x, weight, t["bias"], padding=p),
            "grad_input": lambda: grad.conv2d_input(x.shape, weight, grad_out, padding=p),
            "grad_weight": lambda: grad.conv2d_weight(x, weight.shape, grad_out, padding=p),
        }[case.direction]
    if case.op == "max_pool2d":
        x, k = t["x"], s.kernel
        if case.direction == "forward":
            return lambda: torch.nn.functional.max_pool2d(x, k, return_indices=True)
        _, indices = torch.nn.functional.max_pool2d(x, k, return_indices=True)
        # the kernel autograd calls for max_pool2d's backward
        backward = torch.ops.aten.max_pool2d_with_indices_backward
        return lambda: backward(t["grad_out"], x, [k, k], [k, k], [0, 0], [1, 1], False, indices)
    if case.op == "batch_norm2d":
        x, weight, bias, grad_out = t["x"], t["weight"], t["bias"], t["grad_out"]
        running_mean, running_var = torch.zeros(s.c), torch.ones(s.c)
        aten = torch.ops.aten  # the kernels autograd calls for batch_norm on the CPU

        def forward_backward():
            _, mean, invstd = aten.native_batch_norm(
                x, weight, bias, running_mean, running_var, True, 0.1, 1e-5
            )
            return aten.native_batch_norm_backward(
                grad_out, x, weight, running_mean, running_var, mean, invstd, True, 1e-5,
                [True, True, True],
            )  # fmt: skip

        return forward_backward
    return _torch_train_step(torch, t)


def _torch_train_step(torch, t: dict) -> Callable[[], object]:
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip
    net.load_state_dict({k: v.clone() for k, v in t.items() if "." in k})
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=MNIST_LR, momentum=MNIST_MOMENTUM)
    x, targets = t["x"], t["targets"]

    def step():
        opt.zero_grad()
        loss = loss_fn(net(x), targets)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


# --- results -------------------------------------------------------------------------


def result_arrays(result) -> list[np.ndarray]:
    """A workload's result as a list of float64 NumPy arrays (tensors converted)."""
    items = result if isinstance(result, (tuple, list)) else [result]
    return [np.asarray(r.numpy() if hasattr(r, "numpy") else r, np.float64) for r in items]


def assert_same(got, want, rtol: float = 1e-3) -> None:
    """Raise ``AssertionError`` unless two workload results agree: float32 sums taken in
    different orders, so within ``rtol`` relative and ``rtol`` times the largest magnitude
    absolute (the training step returns its loss: same weights, same batch)."""
    got, want = result_arrays(got), result_arrays(want)
    assert len(got) == len(want), f"{len(got)} results, expected {len(want)}"
    for g, w in zip(got, want, strict=True):
        scale = max(1.0, float(np.abs(w).max(initial=0)))
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale)


# --- GEMM ----------------------------------------------------------------------------

GEMM_SIZE = 1024


def gemm_workload(size: int = GEMM_SIZE, seed: int = 0) -> tuple[Callable[[], object], int]:
    """NumPy float32 ``a @ b`` of two ``size`` x ``size`` matrices into a reused output
    (this machine's BLAS peak, the yardstick of the conv GFLOP/s), and its FLOP count."""
    rng = np.random.default_rng(seed)
    a, b = _normal(rng, size, size), _normal(rng, size, size)
    out = np.empty((size, size), np.float32)
    return (lambda: np.matmul(a, b, out=out)), 2 * size**3
