"""The workloads of the benchmark cases: one zero-argument callable per case and
implementation, on fixed inputs.

Every implementation of a case gets the same input arrays (same seed), so their results
can be compared (:func:`assert_same`) before they are timed. :func:`gemm_workload` is the
yardstick: NumPy's float32 matmul.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import numpy as np

from fastcnn.bench.presets import (
    IMPLEMENTATIONS,
    BatchNormShape,
    Case,
    ConvShape,
    LinearShape,
    LossShape,
    PoolShape,
)

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

    The training step is timed on these rather than on uniform noise: torch's max-pool is
    data-dependent, slower on noise than on digits, and on these it runs as on real digits.
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
    if isinstance(s, LinearShape):
        return {
            "x": _normal(rng, s.n, s.in_features),
            "weight": _normal(rng, s.out_features, s.in_features),
            "bias": _normal(rng, s.out_features),
        }
    if isinstance(s, LossShape) and s.op == "cross_entropy":
        return {"x": _normal(rng, s.n, s.c), "targets": rng.integers(0, s.c, s.n)}
    if isinstance(s, LossShape):  # probabilities away from 0 and 1, where clipping differs
        return {
            "x": rng.uniform(0.05, 0.95, (s.n, s.c)).astype(np.float32),
            "targets": rng.integers(0, 2, (s.n, s.c)).astype(np.float32),
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
        lib = importlib.import_module("fastcnn.bench.tutorial")
    else:
        raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if case.op == "train_step":
        if impl != "fastcnn":
            raise ValueError(f"{case}: no {impl} implementation of the training step")
        return fastcnn_train_step(inputs(case, seed))
    return numpy_workload(case, lib, seed)


def numpy_workload(case: Case, lib, seed: int = 0) -> Callable[[], object]:
    """Like :func:`workload` for any module with the functional contract's NumPy API
    (``fastcnn.functional``, ``fastcnn.reference``, the tutorial baseline)."""
    a = inputs(case, seed)
    s = case.shape
    x, grad_out = a["x"], a.get("grad_out")
    if case.op == "linear":
        return lambda: lib.linear(x, a["weight"], a["bias"])
    if case.op == "cross_entropy":
        return lambda: lib.cross_entropy(x, a["targets"])
    if case.op == "binary_cross_entropy":
        return lambda: lib.binary_cross_entropy(x, a["targets"])
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


def _mnist_net(nn):
    """:data:`MNIST_NET` built from ``nn``, ``fastcnn.nn`` or ``torch.nn``: the same layer
    names and arguments in both."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def fastcnn_train_step(a: dict) -> Callable[[], object]:
    """One SGD step of the MNIST net with :mod:`fastcnn.nn` on the arrays ``a`` of
    :func:`inputs` (batch, targets, initial weights); the callable returns the loss."""
    from fastcnn import nn, optim

    net = _mnist_net(nn)
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
    if case.op == "linear":
        return lambda: torch.nn.functional.linear(t["x"], t["weight"], t["bias"])
    if case.op in ("cross_entropy", "binary_cross_entropy"):
        return _torch_loss(torch, case.op, t["x"], t["targets"])
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
    return torch_train_step(torch, t)


def _torch_loss(torch, op: str, x, targets) -> Callable[[], object]:
    """The loss and its input's gradient with the kernels autograd calls on the CPU (mean
    reduction), as fastcnn's losses return them."""
    aten, one = torch.ops.aten, torch.ones(())
    if op == "binary_cross_entropy":
        return lambda: (
            aten.binary_cross_entropy(x, targets, None, 1),
            aten.binary_cross_entropy_backward(one, x, targets, None, 1),
        )

    def cross_entropy():
        log_p = aten._log_softmax(x, 1, False)
        loss, total_weight = aten.nll_loss_forward(log_p, targets, None, 1, -100)
        grad = aten.nll_loss_backward(one, log_p, targets, None, 1, -100, total_weight)
        return loss, aten._log_softmax_backward_data(grad, log_p, 1, x.dtype)

    return cross_entropy


def torch_train_step(torch, t: dict) -> Callable[[], object]:
    """:func:`fastcnn_train_step` with torch, on the tensors ``t`` of the same arrays."""
    nn = torch.nn
    net = _mnist_net(nn)
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
