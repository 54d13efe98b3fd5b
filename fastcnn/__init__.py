"""fastcnn: parallel Numba kernels for convolutional networks on the CPU.

``import fastcnn`` is cheap: Numba and the kernels load on first use of
``fastcnn.functional``, ``fastcnn.nn`` and the rest (see ``__getattr__``).
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = {"functional", "reference", "nn", "compat", "optim", "data", "io", "train", "cli"}
_FROM = {
    "set_num_threads": "fastcnn._threads",
    "get_num_threads": "fastcnn._threads",
    "info": "fastcnn._info",
    "keep_freed_memory": "fastcnn._malloc",
    "save": "fastcnn.io",
    "load": "fastcnn.io",
}

__all__ = sorted(_SUBMODULES | set(_FROM) | {"__version__"})


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"fastcnn.{name}")
    if name in _FROM:
        return getattr(importlib.import_module(_FROM[name]), name)
    raise AttributeError(f"module 'fastcnn' has no attribute {name!r}")


def __dir__():
    return __all__
