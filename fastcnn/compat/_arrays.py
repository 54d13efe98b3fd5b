"""Argument handling shared by the compat layers, losses and loops.

The tutorials mix dtypes freely (float32 images into float64 weights, integer labels), so
compat casts where fastcnn's functional API refuses: a layer with parameters casts its
input and gradient to its own dtype; any other array keeps float32 or float64 and
becomes float64 from any other real dtype. Shapes are checked, never guessed.
"""

from __future__ import annotations

import numpy as np

from fastcnn._checks import FLOAT_DTYPES, _is_int, as_generator

_REAL_KINDS = "biuf"


def as_float_array(value, name: str, op: str, dtype=None, *, array_like=False) -> np.ndarray:
    """``value`` as a float array: of ``dtype`` if given, else float32/float64 kept and
    any other real dtype (bool, int, uint, float16) as float64.

    Layers take only ``numpy.ndarray``; with ``array_like`` (the losses) lists and
    scalars are accepted too. Complex, object and string data are a ``TypeError``.
    """
    if not isinstance(value, np.ndarray):
        if not array_like:
            raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(value).__name__}")
        if isinstance(value, (str, bytes)):
            raise TypeError(f"{op}: {name} must be an array of numbers, got {type(value).__name__}")
        value = np.asarray(value)
    if value.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{op}: {name} must hold real numbers, got dtype {value.dtype}")
    if dtype is None:
        dtype = value.dtype if value.dtype in FLOAT_DTYPES else np.dtype(np.float64)
    return value if value.dtype == dtype else value.astype(dtype)


def of_shape(value, shape: tuple[int, ...], name: str, op: str, dtype=None) -> np.ndarray:
    """:func:`as_float_array`, then require exactly ``shape``."""
    a = as_float_array(value, name, op, dtype)
    if a.shape != shape:
        raise ValueError(f"{op}: {name} must have shape {shape}, got {a.shape}")
    return a


def as_shape(value, name: str, op: str, ndim: int | None = None) -> tuple[int, ...]:
    """A shape given as a tuple (or list) of positive ints, of ``ndim`` entries if given."""
    if _is_int(value) and ndim in (None, 1):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not value or not all(map(_is_int, value)):
        what = f"a tuple of {ndim} ints" if ndim else "a tuple of ints"
        raise TypeError(f"{op}: {name} must be {what}, got {value!r}")
    if (ndim is not None and len(value) != ndim) or min(value) < 1:
        what = f"{ndim} positive ints" if ndim else "positive ints"
        raise ValueError(f"{op}: {name} must be {what}, got {tuple(value)!r}")
    return tuple(int(v) for v in value)


def randn(rng, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Standard normal draws as the tutorials' ``np.random.randn(*shape)``.

    ``rng=None`` draws from NumPy's global random state, so ``np.random.seed(...)`` makes
    a tutorial program repeatable and the same seed gives the same weights as the
    tutorial's own classes. Otherwise ``rng`` is a Generator or an int seed (already
    checked by :func:`checked_rng`).
    """
    # the global state on purpose: the tutorials seed it with np.random.seed
    values = np.random.randn(*shape) if rng is None else rng.standard_normal(shape)  # noqa: NPY002
    return values.astype(dtype, copy=False)


def checked_rng(rng, op: str):
    """``None`` (NumPy's global state) or a ``numpy.random.Generator``."""
    return None if rng is None else as_generator(rng, op)
