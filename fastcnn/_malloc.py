"""Keep freed memory in the process, for training loops (glibc only).

glibc serves blocks of 128 KiB and more as fresh ``mmap``s, and trims the top of its heap
after large frees; either way the next array of that size starts on untouched pages, and
the first touch of each 4 KiB page is a page fault. A training step allocates and frees
the same few-MiB activations and gradients every step, so it pays that again and again;
keeping freed memory saves it (``docs/performance.md``). Results are the same to the bit.
"""

from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 32 << 20  # glibc's largest accepted value on 64-bit
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


def _is_glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not a GNU system
        return False


def keep_freed_memory() -> bool:
    """Let glibc's ``malloc`` serve blocks of up to 32 MiB from its heap and keep up to 1 GiB
    of freed memory in the process instead of returning it to the system, as the variables
    ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` would at start-up.

    Process-wide and for the rest of the process: a loop that allocates the same arrays
    every step reuses pages already touched, and the resident memory stays at its peak.
    ``fastcnn train`` calls it. Returns ``True`` if applied, ``False`` where the C library
    is not glibc (then nothing changes).
    """
    if not _is_glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
