"""Optimisers: the only code in fastcnn that writes parameters.

Each optimiser takes the parameters it updates (objects with ``.data`` and ``.grad``
arrays of one shape and dtype, such as :class:`fastcnn.nn.Parameter`), owns its state
(momentum buffers, moment estimates, the step count), and updates ``.data`` in place
with PyTorch's exact update rules (``torch.optim.SGD`` / ``torch.optim.Adam``, single
parameter group, the for-loop implementation). Every buffer is allocated once in the
constructor, so ``step()`` allocates no arrays: on glibc, large temporaries are fresh
``mmap`` s whose page faults would cost more than the update itself.

``state_dict()`` returns plain data that :func:`fastcnn.save` stores as is::

    {"kind": "SGD", "hyper": {"lr": 0.1, "momentum": 0.9, ...}, "steps": 12,
     "buffers": {"momentum_buffer": [array, ...]}}        # one array per parameter

(Adam: ``"buffers": {"exp_avg": [...], "exp_avg_sq": [...]}``). Loading it into an
optimiser over the same parameters restores the run bitwise.

Every hyper-parameter must be finite in the parameters' dtype: ``SGD(params, lr=1e39)``
over float32 parameters is refused (``ValueError`` naming ``lr``), since its first step
would write inf and NaN into every weight.

:class:`CosineSchedule` gives the learning rate of each epoch; :func:`fastcnn.train.fit`
sets it on the optimiser before the epoch runs.
"""

from __future__ import annotations

import math

import numpy as np

from fastcnn._checks import _is_int, as_float
from fastcnn._kernels import optim as kernels

__all__ = ["SGD", "Adam", "CosineSchedule", "Optimizer", "check_representable"]


def check_representable(value: float, name: str, op: str, dtypes) -> float:
    """Return ``value`` if it is finite in every one of ``dtypes``, else raise ValueError.

    A hyper-parameter finite in float64 may be inf in the parameters' float32 (``lr=1e39``):
    the first step would then write inf and NaN into every weight.
    """
    for dtype in dtypes:
        limit = float(np.finfo(dtype).max)
        if abs(value) > limit:
            raise ValueError(
                f"{op}: {name}={value!r} overflows {np.dtype(dtype).name}, the parameters' "
                f"dtype (largest finite value {limit:.6g})"
            )
    return value


class Optimizer:
    """Base class: holds the parameter list, the step count and named state buffers.

    Subclasses set ``_hyper_names`` (constructor keywords saved in ``state_dict``, stored
    as attributes), ``_buffer_names`` (per-parameter arrays of the parameter's shape and
    dtype saved in ``state_dict``; or override ``_buffers_for``) and implement
    ``_check_hyper(**hyper)`` and ``_update(i, data, grad)`` for one parameter.
    """

    _hyper_names: tuple[str, ...] = ()
    _buffer_names: tuple[str, ...] = ()

    def __init__(self, params, n_scratch: int):
        op = type(self).__name__
        if isinstance(params, np.ndarray) or not hasattr(params, "__iter__"):
            raise TypeError(
                f"{op}: params must be an iterable of parameters (objects with .data and "
                f".grad arrays, e.g. model.parameters()), got {type(params).__name__}"
            )
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{op}: params is an empty list: nothing to optimise")
        seen = set()
        for i, p in enumerate(self.params):
            data, grad = getattr(p, "data", None), getattr(p, "grad", None)
            if not isinstance(data, np.ndarray) or not isinstance(grad, np.ndarray):
                raise TypeError(
                    f"{op}: params[{i}] must have .data and .grad numpy arrays, "
                    f"got {type(p).__name__}"
                )
            if data.dtype.kind != "f" or grad.shape != data.shape or grad.dtype != data.dtype:
                raise ValueError(
                    f"{op}: params[{i}] must have float .data and a .grad of the same shape "
                    f"and dtype, got data {data.shape} {data.dtype}, grad {grad.shape} "
                    f"{grad.dtype}"
                )
            if id(p) in seen:
                raise ValueError(f"{op}: params[{i}] appears more than once")
            seen.add(id(p))
        self._check_range({name: getattr(self, name) for name in self._hyper_names})
        self.steps = 0
        self.buffers = {
            name: [np.zeros_like(p.data) for p in self.params]
            for name in self._buffers_for(self.__dict__)
        }
        self._scratch = [[np.empty_like(p.data) for p in self.params] for _ in range(n_scratch)]

    # --- public API ---------------------------------------------------------------------

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to zero, in place (the buffers are kept); a
        :class:`fastcnn.nn.Parameter` lazily (:meth:`~fastcnn.nn.Parameter.zero_grad`)."""
        for p in self.params:
            if hasattr(p, "zero_grad"):
                p.zero_grad()
            else:
                p.grad.fill(0)

    def step(self) -> None:
        """Update every parameter in place from its ``.grad``; increments ``steps``."""
        self.steps += 1
        for i, p in enumerate(self.params):
            self._update(i, p.data, p.grad)

    def state_dict(self) -> dict:
        """Return ``{"kind", "hyper", "steps", "buffers"}``; arrays are copies."""
        return {
            "kind": type(self).__name__,
            "hyper": {name: getattr(self, name) for name in self._hyper_names},
            "steps": self.steps,
            "buffers": {name: [b.copy() for b in bufs] for name, bufs in self.buffers.items()},
        }

    def load_state_dict(self, state) -> None:
        """Restore hyper-parameters, step count and buffers saved by :meth:`state_dict`.

        Buffers are copied into the existing arrays. Raises ``ValueError``/``TypeError``
        naming the entry that does not fit (other kind, count, shape or dtype) before
        anything is changed.
        """
        op = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state, "keys"):
            raise TypeError(f"{op}: state must be a mapping, got {type(state).__name__}")
        missing = {"kind", "hyper", "steps", "buffers"} - set(state.keys())
        if missing:
            raise ValueError(f"{op}: state lacks the entries {sorted(missing)}")
        if state["kind"] != type(self).__name__:
            raise ValueError(f"{op}: state is for optimiser {state['kind']!r}")
        hyper = dict(state["hyper"])
        if set(hyper) != set(self._hyper_names):
            raise ValueError(
                f"{op}: hyper must have the keys {sorted(self._hyper_names)}, got {sorted(hyper)}"
            )
        hyper = self._check_hyper(**hyper)
        self._check_range(hyper)
        steps = state["steps"]
        if isinstance(steps, np.ndarray) and steps.ndim == 0:
            steps = steps.item()
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"{op}: steps must be a non-negative int, got {steps!r}")
        buffers = state["buffers"]
        names = self._buffers_for(hyper)
        if not hasattr(buffers, "keys") or set(buffers) != set(names):
            raise ValueError(f"{op}: buffers must have the keys {sorted(names)}, got {buffers!r}")
        for name in names:
            given = buffers[name]
            if len(given) != len(self.params):
                raise ValueError(
                    f"{op}: buffers[{name!r}] has {len(given)} arrays for "
                    f"{len(self.params)} parameters"
                )
            for i, (src, p) in enumerate(zip(given, self.params, strict=True)):
                if not isinstance(src, np.ndarray):
                    raise TypeError(
                        f"{op}: buffers[{name!r}][{i}] must be a numpy.ndarray, "
                        f"got {type(src).__name__}"
                    )
                if src.shape != p.data.shape or src.dtype != p.data.dtype:
                    raise ValueError(
                        f"{op}: buffers[{name!r}][{i}] must have shape {p.data.shape} and "
                        f"dtype {p.data.dtype}, got {src.shape} {src.dtype}"
                    )
        # Everything fits: apply.
        self.__dict__.update(hyper)
        self.buffers = {
            name: self.buffers.get(name) or [np.zeros_like(p.data) for p in self.params]
            for name in names
        }
        for name in names:
            for dst, src in zip(self.buffers[name], buffers[name], strict=True):
                np.copyto(dst, src)
        self.steps = int(steps)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._hyper_names)
        return f"{type(self).__name__}({len(self.params)} parameters, {hyper})"

    def _check_range(self, hyper: dict) -> None:
        """Refuse float hyper-parameters that overflow a parameter's dtype."""
        dtypes = {p.data.dtype for p in self.params}
        for name, value in hyper.items():
            values = value if isinstance(value, tuple) else (value,)
            for i, v in enumerate(values):
                if isinstance(v, float):
                    label = f"{name}[{i}]" if isinstance(value, tuple) else name
                    check_representable(v, label, type(self).__name__, dtypes)

    # --- for subclasses -----------------------------------------------------------------

    def _check_hyper(self, **hyper) -> dict:
        """Validate hyper-parameters; return them normalised (no side effects)."""
        raise NotImplementedError

    def _buffers_for(self, hyper: dict) -> tuple[str, ...]:
        """Names of the per-parameter state buffers these hyper-parameters need."""
        return self._buffer_names

    def _update(self, i: int, data: np.ndarray, grad: np.ndarray) -> None:
        raise NotImplementedError


def _flat_kernel_takes(*arrays) -> bool:
    """Whether the one-pass kernels take these arrays: C-contiguous float32 or float64
    (a parameter may be any float array; others take the NumPy ufunc path)."""
    return arrays[0].dtype in _KERNEL_DTYPES and all(a.flags.c_contiguous for a in arrays)


_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov, L2 decay.

    Exactly ``torch.optim.SGD``: with ``g = grad + weight_decay * p``, the buffer starts
    as ``b = g`` on the first step and is then ``b = momentum * b + (1 - dampening) * g``;
    the step is ``p -= lr * (g + momentum * b)`` with Nesterov, ``p -= lr * b`` without
    (``p -= lr * g`` when ``momentum == 0``).

    Args:
        params: iterable of parameters (``.data``/``.grad`` float arrays).
        lr: learning rate, ``>= 0``.
        momentum: momentum factor, ``>= 0``.
        weight_decay: L2 penalty added to the gradient, ``>= 0``.
        nesterov: use Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        dampening: dampening of the momentum, ``>= 0``.
    """

    _hyper_names = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, dampening=0.0):
        hyper = self._check_hyper(lr, momentum, dampening, weight_decay, nesterov)
        self.__dict__.update(hyper)
        # Scratch 0 holds the decayed gradient and then lr * direction; scratch 1 the
        # Nesterov direction and the dampened gradient.
        super().__init__(params, n_scratch=2)

    def _buffers_for(self, hyper):
        return ("momentum_buffer",) if hyper["momentum"] != 0 else ()

    def _check_hyper(self, lr, momentum, dampening, weight_decay, nesterov) -> dict:
        op = "SGD"
        lr = as_float(lr, "lr", op, low=0.0)
        momentum = as_float(momentum, "momentum", op, low=0.0)
        dampening = as_float(dampening, "dampening", op, low=0.0)
        weight_decay = as_float(weight_decay, "weight_decay", op, low=0.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"{op}: nesterov must be a bool, got {nesterov!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"{op}: nesterov needs momentum > 0 and dampening == 0, "
                f"got momentum={momentum!r}, dampening={dampening!r}"
            )
        return {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": bool(nesterov),
        }

    def _update(self, i, data, grad) -> None:
        buf = self.buffers["momentum_buffer"][i] if self.momentum != 0 else grad
        if _flat_kernel_takes(data, grad, buf):
            kernels.sgd(
                data.reshape(-1), grad.reshape(-1), buf.reshape(-1), self.lr, self.momentum,
                self.dampening, self.weight_decay, self.nesterov, self.steps == 1,
            )  # fmt: skip
            return
        s0, s1 = self._scratch[0][i], self._scratch[1][i]
        d = grad
        if self.weight_decay != 0:
            np.multiply(data, self.weight_decay, out=s0)
            s0 += grad
            d = s0
        if self.momentum != 0:
            if self.steps == 1:
                np.copyto(buf, d)
            else:
                buf *= self.momentum
                if self.dampening == 0:
                    buf += d
                else:
                    np.multiply(d, 1 - self.dampening, out=s1)
                    buf += s1
            if self.nesterov:
                np.multiply(buf, self.momentum, out=s1)
                s1 += d
                d = s1
            else:
                d = buf
        np.multiply(d, self.lr, out=s0)
        data -= s0


class Adam(Optimizer):
    """Adam (Kingma & Ba), exactly ``torch.optim.Adam`` without amsgrad.

    With ``g = grad + weight_decay * p`` and ``t`` the step count:
    ``m += (1 - beta1) * (g - m)``, ``v = beta2 * v + (1 - beta2) * g * g``,
    ``p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``.

    Args:
        params: iterable of parameters (``.data``/``.grad`` float arrays).
        lr: learning rate, ``>= 0``.
        betas: ``(beta1, beta2)``, each in ``[0, 1)``.
        eps: added to the denominator, ``>= 0``.
        weight_decay: L2 penalty added to the gradient (not decoupled), ``>= 0``.
    """

    _hyper_names = ("lr", "betas", "eps", "weight_decay")
    _buffer_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.__dict__.update(self._check_hyper(lr, betas, eps, weight_decay))
        super().__init__(params, n_scratch=2)

    def _check_hyper(self, lr, betas, eps, weight_decay) -> dict:
        op = "Adam"
        lr = as_float(lr, "lr", op, low=0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{op}: betas must be a pair of floats, got {betas!r}")
        b1 = as_float(betas[0], "betas[0]", op, low=0.0)
        b2 = as_float(betas[1], "betas[1]", op, low=0.0)
        for name, b in (("betas[0]", b1), ("betas[1]", b2)):
            if b >= 1.0:
                raise ValueError(f"{op}: {name} must be < 1.0, got {b!r}")
        eps = as_float(eps, "eps", op, low=0.0)
        weight_decay = as_float(weight_decay, "weight_decay", op, low=0.0)
        return {"lr": lr, "betas": (b1, b2), "eps": eps, "weight_decay": weight_decay}

    def _update(self, i, data, grad) -> None:
        m, v = self.buffers["exp_avg"][i], self.buffers["exp_avg_sq"][i]
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1**self.steps)
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        if _flat_kernel_takes(data, grad, m, v):
            kernels.adam(
                data.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1), step_size,
                beta1, beta2, bias_correction2_sqrt, self.eps, self.weight_decay,
            )  # fmt: skip
            return
        s0, s1 = self._scratch[0][i], self._scratch[1][i]
        g = grad
        if self.weight_decay != 0:
            np.multiply(data, self.weight_decay, out=s1)
            s1 += grad
            g = s1
        # torch's lerp_(g, w) for w < 0.5 computes m + w * (g - m)
        np.subtract(g, m, out=s0)
        s0 *= 1 - beta1
        m += s0
        # addcmul_(g, g, value=c) computes v + c * g * g, left to right
        v *= beta2
        np.multiply(g, 1 - beta2, out=s0)
        s0 *= g
        v += s0
        np.sqrt(v, out=s1)
        s1 /= bias_correction2_sqrt
        s1 += self.eps
        # addcdiv_(m, denom, value=-step_size) computes p + (-step_size * m) / denom
        np.multiply(m, -step_size, out=s0)
        s0 /= s1
        data += s0


class CosineSchedule:
    """The learning rate of each epoch, annealed from ``lr`` towards ``min_lr`` on a
    half cosine: epoch ``e`` of ``epochs`` (1-based) gets
    ``min_lr + (lr - min_lr) * (1 + cos(pi * (e - 1) / epochs)) / 2``.

    That is ``torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs,
    eta_min=min_lr)`` stepped once an epoch: the first epoch runs at ``lr``, the last at
    a few percent of it, so the last epochs settle instead of ending on one noisy step
    (a single epoch runs at ``lr``). Stateless: the rate depends on the epoch alone, so a
    resumed run gets the same rates.

    Args:
        lr: the first epoch's learning rate, ``>= 0``.
        epochs: the epochs to anneal over, an int ``>= 1``; later epochs get ``min_lr``.
        min_lr: the rate approached at the end, ``0 <= min_lr <= lr``.
    """

    def __init__(self, lr: float, epochs: int, min_lr: float = 0.0):
        op = "CosineSchedule"
        self.lr = as_float(lr, "lr", op, low=0.0)
        if not _is_int(epochs):
            raise TypeError(f"{op}: epochs must be an int, got {epochs!r}")
        if epochs < 1:
            raise ValueError(f"{op}: epochs must be >= 1, got {epochs!r}")
        self.epochs = int(epochs)
        self.min_lr = as_float(min_lr, "min_lr", op, low=0.0, high=self.lr)

    def __call__(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (1-based)."""
        progress = min(epoch - 1, self.epochs) / self.epochs
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2

    def __repr__(self) -> str:
        return f"CosineSchedule(lr={self.lr!r}, epochs={self.epochs!r}, min_lr={self.min_lr!r})"
