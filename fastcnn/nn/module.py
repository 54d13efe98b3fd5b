"""The layer base class :class:`Module` and :class:`Parameter`.

A module owns its parameters (trainable arrays with a gradient buffer), its buffers
(state that is saved but not trained, such as batch-norm running statistics) and its
sub-modules. ``forward`` caches what ``backward`` needs; ``backward`` *adds* parameter
gradients into ``Parameter.grad`` and returns the gradient of the input. Only the
optimisers of :mod:`fastcnn.optim` write parameters, and this module does not import
them (the tutorials' ``backward(grad, learning_rate)`` lives in :mod:`fastcnn.compat`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fastcnn._checks import as_bool

__all__ = ["Module", "Parameter"]


class Parameter:
    """A trainable array ``data`` and its gradient ``grad`` (same shape and dtype).

    ``grad`` is allocated once and only ever updated in place: ``backward`` adds into it
    (:meth:`add_grad`, :meth:`grad_into`) and :meth:`zero_grad` clears it. Clearing is
    lazy: it marks the gradient zero, and the next ``backward`` writes it instead of adding
    to it, sparing a pass over memory per step (most of the cost of a step on one sample
    for a large ``Linear``). Reading ``grad`` in between gives zeros, as if filled.
    """

    __slots__ = ("data", "_grad", "_zero")

    def __init__(self, data: np.ndarray):
        self.data = data
        self._grad = np.zeros_like(data)
        self._zero = False  # True: the gradient is zero, whatever _grad holds

    @property
    def grad(self) -> np.ndarray:
        """The gradient, an array of ``data``'s shape and dtype."""
        if self._zero:
            self._grad.fill(0)
            self._zero = False
        return self._grad

    @grad.setter
    def grad(self, value: np.ndarray) -> None:
        self._grad = value
        self._zero = False

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``data``."""
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        """Dtype of ``data``."""
        return self.data.dtype

    def zero_grad(self) -> None:
        """Make ``grad`` zero (lazily: see the class)."""
        self._zero = True

    def add_grad(self, value) -> None:
        """``grad += value`` (``value`` broadcastable to ``grad``): written, not added, after
        :meth:`zero_grad`."""
        if self._zero:
            self._grad[...] = value
            self._zero = False
        else:
            self._grad += value

    def grad_into(self) -> tuple[np.ndarray, bool] | None:
        """``(grad, accumulate)`` for a kernel that adds this step's gradient into an array
        (``accumulate``) or writes all of it: after :meth:`zero_grad`, it must write.
        ``None`` where ``grad`` is not an array a kernel can write (not C-contiguous, or
        read-only: a user's assignment): then the caller computes the gradient elsewhere
        and hands it to :meth:`add_grad`."""
        if not (self._grad.flags.c_contiguous and self._grad.flags.writeable):
            return None
        accumulate = not self._zero
        self._zero = False
        return self._grad, accumulate

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` with ``strict=False`` skipped."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def uniform_init(rng: np.random.Generator, shape, fan_in: int, dtype: np.dtype) -> np.ndarray:
    """torch's default init for conv/linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (``kaiming_uniform_(a=sqrt(5))`` for weights reduces to this bound, and torch draws
    biases from the same interval.)
    """
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


_BOOKKEEPING = frozenset({"_cache", "_unbatched", "training"})


class Module:
    """Base class of every layer and of :class:`~fastcnn.nn.Sequential`.

    Subclasses implement ``_forward(x)`` and ``_backward(grad_out, need_input_grad)``
    on batched arrays and set ``_batched_ndim`` (4 for NCHW layers) so that one
    unbatched sample, one dimension short, is accepted and returned unbatched. They
    assign :class:`Parameter` attributes (registered automatically, in order) and name
    their buffers in ``_buffer_names``.
    """

    _batched_ndim: int | None = None  # None: any rank, no unbatched handling
    _buffer_names: tuple[str, ...] = ()

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        self.training = True
        self._cache = None  # what backward needs, set by forward
        self._unbatched = False

    def __setattr__(self, name, value):
        if name in _BOOKKEEPING:  # set on every call: never a parameter or a sub-module
            object.__setattr__(self, name, value)
            return
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError(f"{type(self).__name__}: call Module.__init__() first")
        # Register parameters and sub-modules; forget one that is being replaced.
        if isinstance(value, (Parameter, Module)) or name in params or name in self._modules:
            params.pop(name, None)
            self._modules.pop(name, None)
            if isinstance(value, Parameter):
                params[name] = value
            elif isinstance(value, Module):
                self._modules[name] = value
        object.__setattr__(self, name, value)

    # --- forward and backward -----------------------------------------------------------

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Apply the layer to a batch (or one unbatched sample) and cache for backward."""
        if not isinstance(x, np.ndarray):
            op = type(self).__name__
            raise TypeError(f"{op}: x must be a numpy.ndarray, got {type(x).__name__}")
        self._unbatched = self._batched_ndim is not None and x.ndim == self._batched_ndim - 1
        if self._unbatched:
            return self._forward(x[np.newaxis])[0]
        return self._forward(x)

    def backward(self, grad_out, learning_rate=None, *, need_input_grad=True):
        """Add the parameter gradients of the last forward; return the input gradient.

        Args:
            grad_out: gradient of the loss with respect to the last output, shaped like it
                (unbatched if the last input was).
            learning_rate: not accepted: a layer here never changes its parameters (an
                optimiser of :mod:`fastcnn.optim` does). Passing one raises ``TypeError``
                pointing to :mod:`fastcnn.compat`, whose layers speak the tutorials'
                ``backward(output_gradient, learning_rate)``.
            need_input_grad: ``False`` skips the input gradient (returns ``None``), e.g.
                for the first layer of a network.

        Returns:
            The gradient with respect to the last input (its shape and dtype), or ``None``.
        """
        if learning_rate is not None or self._cache is None or type(grad_out) is not np.ndarray:
            self._refuse_backward(grad_out, learning_rate)
        return self._backward_maybe_unbatched(grad_out, need_input_grad)

    def _refuse_backward(self, grad_out, learning_rate) -> None:
        """Raise the error of a ``backward`` call that cannot run, if this one cannot (an
        ndarray subclass can); kept out of ``backward``'s own path."""
        op = type(self).__name__
        if learning_rate is not None:
            raise TypeError(
                f"{op}.backward: learning_rate is not accepted; fastcnn.nn layers add into "
                "Parameter.grad and an optimiser (fastcnn.optim.SGD) steps. For the "
                "tutorials' backward(output_gradient, learning_rate), use the layers of "
                "fastcnn.compat"
            )
        if self._cache is None:
            raise RuntimeError(f"{op}: backward called before forward")
        if not isinstance(grad_out, np.ndarray):
            raise TypeError(
                f"{op}: grad_out must be a numpy.ndarray, got {type(grad_out).__name__}"
            )

    def _check_channels(self, x, expected: int, name: str) -> None:
        """Reject an NCHW input whose channel count is not ``expected`` (``name``)."""
        if x.ndim == 4 and x.shape[1] != expected:
            raise ValueError(
                f"{type(self).__name__}: x must have {expected} channels ({name}={expected}), "
                f"got shape {x.shape}"
            )

    def _backward_maybe_unbatched(self, grad_out, need_input_grad):
        if not self._unbatched:
            return self._backward(grad_out, need_input_grad)
        grad_in = self._backward(grad_out[np.newaxis], need_input_grad)
        return None if grad_in is None else grad_in[0]

    def _forward(self, x):
        raise NotImplementedError

    def _backward(self, grad_out, need_input_grad):
        raise NotImplementedError

    # --- modes, parameters, state -------------------------------------------------------

    def train(self, mode: bool = True):
        """Set training mode (``mode=True``) or evaluation mode, recursively; return self."""
        mode = as_bool(mode, "mode", f"{type(self).__name__}.train")
        self.training = mode
        for m in self._modules.values():
            m.train(mode)
        return self

    def eval(self):
        """Set evaluation mode recursively (batch norm uses running stats, dropout is off)."""
        return self.train(False)

    def named_parameters(self, prefix: str = "") -> list[tuple[str, Parameter]]:
        """Return ``[(name, Parameter)]`` with torch's dotted names, in registration order."""
        out = [(prefix + name, p) for name, p in self._parameters.items()]
        for mname, m in self._modules.items():
            out += m.named_parameters(f"{prefix}{mname}.")
        return out

    def parameters(self) -> list[Parameter]:
        """Return the trainable parameters (objects with ``.data`` and ``.grad``)."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        """Zero every parameter gradient (:meth:`Parameter.zero_grad`)."""
        for p in self.parameters():
            p.zero_grad()

    def _state_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The live arrays behind ``state_dict``: parameters, then buffers, then children."""
        out = {prefix + name: p.data for name, p in self._parameters.items()}
        out.update({prefix + name: getattr(self, name) for name in self._buffer_names})
        for mname, m in self._modules.items():
            out.update(m._state_arrays(f"{prefix}{mname}."))
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return copies of parameters and buffers under torch's names (``0.weight``, ...).

        Converting a torch ``state_dict`` with ``{k: v.numpy() for k, v in sd.items()}``
        gives a mapping :meth:`load_state_dict` accepts, and the reverse direction works
        with ``torch.from_numpy``.
        """
        return {name: array.copy() for name, array in self._state_arrays().items()}

    def load_state_dict(self, state, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays from ``state`` into this module's parameters and buffers, in place.

        Args:
            state: mapping of names (as :meth:`state_dict`) to ``numpy.ndarray``.
            strict: if ``True``, missing and unexpected keys are an error; if ``False``
                they are skipped and reported in the result.

        Returns:
            ``IncompatibleKeys(missing_keys, unexpected_keys)``.

        Raises:
            ValueError: missing/unexpected keys (strict) or a shape mismatch, naming the key.
            TypeError: ``state`` is not a mapping, a value is not an array, or a float
                array has another dtype than the module (integer buffers such as
                ``num_batches_tracked`` accept any integer dtype).
            Nothing is copied unless every entry fits.
        """
        op = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state, "keys") or not hasattr(state, "__getitem__"):
            raise TypeError(f"{op}: state must be a mapping, got {type(state).__name__}")
        strict = as_bool(strict, "strict", op)
        own = self._state_arrays()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state.keys() if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(
                f"{op}: state does not match the module: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        for key, dst in own.items():
            if key not in state:
                continue
            src = state[key]
            if not isinstance(src, (np.ndarray, np.generic)):
                raise TypeError(
                    f"{op}: state[{key!r}] must be a numpy.ndarray, got {type(src).__name__}"
                )
            if np.shape(src) != dst.shape:
                raise ValueError(
                    f"{op}: state[{key!r}] must have shape {dst.shape}, got {np.shape(src)}"
                )
            src_kind, dst_kind = np.asarray(src).dtype.kind, dst.dtype.kind
            if src.dtype != dst.dtype and not (src_kind in "iu" and dst_kind in "iu"):
                raise TypeError(
                    f"{op}: state[{key!r}] must have dtype {dst.dtype}, got {src.dtype}"
                )
        for key, dst in own.items():
            if key in state:
                np.copyto(dst, state[key], casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # --- repr ---------------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The settings shown inside ``repr``: only those that differ from the defaults."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def dtype_repr(dtype: np.dtype) -> list[str]:
    """``["dtype=float64"]`` when ``dtype`` is not the default float32, else ``[]``."""
    return [] if dtype == np.float32 else [f"dtype={dtype.name}"]
