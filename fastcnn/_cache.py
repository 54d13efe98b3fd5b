"""Numba's on-disk kernel cache, made robust to damaged entries and unwritable locations.

Every kernel is built by :func:`njit` (through ``fastcnn._config.jit``), which is
``numba.njit`` except that ``cache=True`` installs a :class:`RobustCache` instead of
Numba's ``FunctionCache``. Where the compiled kernels are kept, first that applies:

1. ``$NUMBA_CACHE_DIR`` (Numba's own variable), if set;
2. ``$FASTCNN_CACHE_DIR/numba``, if ``FASTCNN_CACHE_DIR`` is set (the data cache lives
   beside it, see :func:`fastcnn.data.cache_dir`);
3. Numba's default: ``__pycache__`` beside fastcnn's modules if writable, else the
   user-wide cache (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``).

A location named by a variable is used or not at all: if it cannot be written (for
example a path under a regular file), or no default location is writable (a read-only
install without a writable home), kernels are compiled in memory, every process again,
and one line on stderr says so. A damaged entry (an empty or garbage ``.nbi``/``.nbc``
file left by a full disk, a killed process or a copied image layer) is removed and the
kernel compiled again, with one line saying so; where it cannot be removed the kernel
runs without the cache. A failure to save is reported once and never fails the call.
The lines go to the ``"fastcnn"`` logger (on stderr unless logging is configured).
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
import threading

import numba
from numba.core import caching, config
from numba.core.dispatcher import Dispatcher
from numba.core.registry import CPUDispatcher
from numba.misc.appdirs import AppDirs

__all__ = ["RobustCache", "cache_root", "describe", "njit"]

_log = logging.getLogger("fastcnn")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(kind: str, message: str) -> None:
    """Log ``message`` the first time a warning of this ``kind`` comes up in the process."""
    with _warned_lock:
        if kind in _warned:
            return
        _warned.add(kind)
    _log.warning("fastcnn: %s", message)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def cache_root() -> tuple[str | None, str]:
    """The folder named by the environment for the kernel cache, and which variable named
    it: ``(path, "NUMBA_CACHE_DIR" | "FASTCNN_CACHE_DIR")``, or ``(None, "default")``
    when Numba's default locations apply."""
    if config.CACHE_DIR:
        return os.path.abspath(os.path.expanduser(config.CACHE_DIR)), "NUMBA_CACHE_DIR"
    if os.environ.get("FASTCNN_CACHE_DIR"):
        root = os.path.expanduser(os.environ["FASTCNN_CACHE_DIR"])
        return os.path.abspath(os.path.join(root, "numba")), "FASTCNN_CACHE_DIR"
    return None, "default"


class _RootLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Caches under :func:`cache_root`'s folder, in Numba's per-source-folder layout (the
    files are those Numba itself writes for ``NUMBA_CACHE_DIR``)."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        root, _ = cache_root()
        self._cache_path = os.path.join(root, self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self):
        return self._cache_path


class _Impl(caching.CompileResultCacheImpl):
    @property
    def _locator_classes(self):
        # A folder the user named is the only candidate: Numba would silently fall back
        # to writing beside the sources instead.
        if cache_root()[0] is not None:
            return [_RootLocator]
        return caching.CompileResultCacheImpl._locator_classes


class RobustCache(caching.FunctionCache):
    """Numba's per-function cache, where any error reading an entry counts as a miss:
    the damaged files of this function are removed (or, if they cannot be, the cache is
    disabled for it) and the kernel is compiled again. Errors while saving are reported
    once and ignored."""

    _impl_class = _Impl

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:  # EOFError, UnpicklingError, ValueError, LLVM errors, ...
            self._discard(exc)
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception as exc:
            _warn_once(
                "save",
                f"could not save the compiled kernel {self._py_func.__qualname__} in "
                f"{self._cache_path} ({_one_line(exc)}); it will be compiled again by the "
                "next process",
            )

    def entry_files(self) -> list[str]:
        """The index and data files of this function in the cache folder."""
        base = os.path.join(self._cache_path, glob.escape(self._impl.filename_base))
        return sorted(glob.glob(base + ".nbi") + glob.glob(base + ".*.nbc"))

    def _discard(self, exc: Exception) -> None:
        files = self.entry_files()
        try:
            for path in files:
                os.unlink(path)
        except OSError as err:
            self.disable()
            _warn_once(
                "damaged",
                f"the cached kernel {self._py_func.__qualname__} in {self._cache_path} is "
                f"damaged ({_one_line(exc)}) and cannot be removed ({_one_line(err)}); "
                "compiling it without the cache",
            )
            return
        _warn_once(
            "damaged",
            f"removed a damaged kernel cache entry ({_one_line(exc)}) for "
            f"{self._py_func.__qualname__} in {self._cache_path}; compiling it again",
        )


class _InMemory(caching.NullCache):
    """No cache: the first compile in the process says once why."""

    def __init__(self, reason: str):
        self.reason = reason

    def load_overload(self, sig, target_context):
        variable = cache_root()[1]
        variable = "FASTCNN_CACHE_DIR" if variable == "default" else variable
        _warn_once(
            "memory",
            f"cannot write the kernel cache ({self.reason}); compiling in memory, so every "
            f"new process compiles again (set {variable} to a writable folder)",
        )
        return None


def _unwritable_reason(py_file: str) -> str:
    root, variable = cache_root()
    if root is not None:
        try:
            os.makedirs(root, exist_ok=True)
            tempfile.TemporaryFile(dir=root).close()
        except OSError as exc:
            return f"{variable}: {_one_line(exc)}"
        return f"{variable} {root} is not usable"
    beside = os.path.join(os.path.dirname(os.path.abspath(py_file)), "__pycache__")
    user = AppDirs(appname="numba", appauthor=False).user_cache_dir
    return f"neither {beside} nor {user} is writable"


def _make_cache(py_func) -> caching._Cache:
    try:
        return RobustCache(py_func)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return _InMemory(_unwritable_reason(py_func.__code__.co_filename))


class NativeOnly(CPUDispatcher):
    """A function compiled without a Python entry point (``no_cpython_wrapper``), which
    Numba would call from Python as if it had one, crashing the interpreter: it raises
    ``TypeError`` instead. Kernels are run by :func:`fastcnn._threads.run`."""

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"{self.py_func.__qualname__} has no Python entry point: run a kernel with "
            "fastcnn._threads.run; helpers are called from kernels only"
        )


def njit(**options):
    """``numba.njit(**options)``, except that ``cache=True`` gives the kernel a
    :class:`RobustCache` (or compiles in memory when no cache location is writable), and
    a function without a Python entry point is a :class:`NativeOnly`."""
    cache = options.pop("cache", False)
    native_only = options.get("no_cpython_wrapper", False)
    decorate = numba.njit(**options)

    def decorator(func):
        dispatcher = decorate(func)
        if isinstance(dispatcher, Dispatcher):  # not under NUMBA_DISABLE_JIT
            if cache:
                dispatcher._cache = _make_cache(dispatcher.py_func)
            if native_only:
                dispatcher.__class__ = NativeOnly
        return dispatcher

    return decorator


def describe(dispatcher) -> dict:
    """Where ``dispatcher`` (a fastcnn kernel) is cached: ``{"dir": str or None,
    "writable": bool, "source": "NUMBA_CACHE_DIR" | "FASTCNN_CACHE_DIR" | "default",
    "note": str}``; ``dir`` is ``None`` when kernels are compiled in memory."""
    cache = getattr(dispatcher, "_cache", None)
    source = cache_root()[1]
    if isinstance(cache, _InMemory):
        return {"dir": None, "writable": False, "source": source, "note": cache.reason}
    path = getattr(cache, "cache_path", None)
    if path is None:
        return {"dir": None, "writable": False, "source": source, "note": "caching is off"}
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        return {"dir": path, "writable": False, "source": source, "note": _one_line(exc)}
    return {"dir": path, "writable": True, "source": source, "note": ""}
