"""Per-thread scratch buffers reused across calls.

Allocating a fresh scratch array in every call is slow here: glibc serves allocations of
128 KiB and more with new ``mmap`` pages, and the first touch of each 4 KiB page costs
microseconds. So each Python thread keeps one growing buffer per (name, dtype) and the
kernels take views of it. Buffers are per thread because several Python threads may run
kernels at once; they are freed when their thread ends (or by :func:`clear`).
"""

from __future__ import annotations

import math
import threading

import numpy as np

_local = threading.local()
ALIGN = 64  # bytes: a cache line


def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``.

    The memory belongs to the calling thread's buffer ``name`` and is handed out again by
    the next call with the same ``name`` and ``dtype``: a caller uses at most one view of
    each name at a time and never keeps it past its own return.
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    buffers = _local.__dict__.setdefault("buffers", {})
    buf = buffers.get((name, dtype))
    if buf is None or buf.size < size:
        buf = _aligned(size, dtype)
        buffers[(name, dtype)] = buf
    return buf[:size].reshape(shape)


def _aligned(size: int, dtype: np.dtype) -> np.ndarray:
    """An empty array of ``size`` elements starting on a cache line (malloc gives 16
    bytes): a vector load that straddles two lines costs twice."""
    raw = np.empty(size * dtype.itemsize + ALIGN, np.uint8)
    skip = -raw.ctypes.data % ALIGN
    return raw[skip : skip + size * dtype.itemsize].view(dtype)


def clear() -> None:
    """Drop the calling thread's scratch buffers."""
    _local.__dict__.pop("buffers", None)
