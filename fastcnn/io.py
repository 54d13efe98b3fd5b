"""Saving and loading models and training checkpoints as ``.npz`` files, never pickle.

``save(state, path)`` writes a nested structure of arrays and small JSON-able values;
``load(path)`` returns the same structure. A training checkpoint fits as it is::

    fastcnn.save({
        "model": net.state_dict(),            # {"0.weight": array, ...}
        "optimizer": opt.state_dict(),        # {"kind", "hyper", "steps", "buffers"}
        "epoch": 3, "step": 1200,
        "rng": rng.bit_generator.state,       # numpy Generator state (big ints are fine)
        "config": {"lr": 0.05, "batch_size": 64},
    }, "checkpoint.npz")

What may be saved (checked before anything is written; ``TypeError``/``ValueError``
naming the offending key path otherwise):

- mappings with ``str`` keys (returned as ``dict``), lists and tuples (returned as
  ``list``), nested to any depth;
- ``numpy.ndarray`` of any non-object dtype (returned as an array of the same dtype,
  shape and values) and NumPy scalars (returned as NumPy scalars of the same dtype);
- ``None``, ``bool``, ``int`` (any size), ``float`` (NaN and inf included) and ``str``.

File format (version 1): a ZIP archive readable by ``numpy.load(path)``. Each array is a
member ``<key path>.npy`` written by ``numpy.lib.format`` (the key path joins the keys
with ``/`` for people who inspect the file; it is not parsed back). The member
``__fastcnn__.npy`` is a uint8 array holding UTF-8 JSON::

    {"format": "fastcnn", "version": 1, "tree": <tree>}

where ``<tree>`` mirrors the saved structure with every array replaced by
``{"$array": "<member name>"}`` and every NumPy scalar by
``{"$array": "<member name>", "$scalar": true}``. A file without that member, or with a
newer version, is refused. Loading never unpickles (``allow_pickle=False``).

Writing is atomic: the archive goes to a temporary file in the target's directory, is
flushed and fsynced, then renamed over ``path`` with ``os.replace`` and the directory is
fsynced. After a crash or an exception, ``path`` holds either the old file or the new
one, never a mixture, and no temporary file is left behind (except after SIGKILL or a
power cut, where a hidden ``.<name>.<random>.tmp`` may remain; it is never read).
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from collections.abc import Mapping

import numpy as np

__all__ = ["save", "load", "FORMAT", "VERSION"]

FORMAT = "fastcnn"
VERSION = 1
_HEADER = "__fastcnn__"
_ARRAY, _SCALAR = "$array", "$scalar"


# --- save ----------------------------------------------------------------------------


def _encode(value, path: str, arrays: dict[str, np.ndarray]):
    """Return the JSON tree of ``value``; collect its arrays into ``arrays``."""
    where = path or "state"
    if isinstance(value, Mapping):
        tree = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"save: keys must be str, got {key!r} in {where!r}")
            if key == _ARRAY:
                raise ValueError(f"save: the key {_ARRAY!r} is reserved, found in {where!r}")
            tree[key] = _encode(item, f"{path}/{key}" if path else key, arrays)
        return tree
    if isinstance(value, (list, tuple)):
        return [
            _encode(item, f"{path}/{i}" if path else str(i), arrays) for i, item in enumerate(value)
        ]
    if isinstance(value, (np.ndarray, np.generic)) and not isinstance(value, np.str_):
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise TypeError(f"save: {where!r} is an object array, which needs pickle")
        name = path or "state"
        if name in arrays or name == _HEADER:
            name = f"{name}#{len(arrays)}"  # keys containing '/' can collide
        arrays[name] = array
        return {_ARRAY: name, _SCALAR: True} if isinstance(value, np.generic) else {_ARRAY: name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"save: {where!r} has type {type(value).__name__}; only mappings, lists, numpy "
        "arrays and scalars, None, bool, int, float and str can be saved"
    )


def _write_member(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with archive.open(name + ".npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, array, allow_pickle=False)


def _fsync_dir(directory: str) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows: directories cannot be opened
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _as_path(path, op: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{op}: path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"{op}: path must be a str or os.PathLike of str, got bytes")
    return path


def save(state, path) -> None:
    """Write ``state`` (nested mappings of arrays and JSON-able values) to ``path``.

    Args:
        state: a mapping with ``str`` keys; see the module docstring for what it may hold.
        path: file name (``str`` or ``os.PathLike``), written exactly as given; ``.npz``
            is the conventional suffix. Its directory must exist.

    Raises:
        TypeError/ValueError: ``state`` holds something that cannot be saved (nothing is
            written).
        OSError: the file cannot be written (the old file, if any, is left untouched); of
            the original type (``FileNotFoundError``, ``IsADirectoryError``, ...) and errno
            (``ENOSPC`` for a full disk), its message names ``path``, not the temporary.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"save: state must be a mapping, got {type(state).__name__}")
    path = _as_path(path, "save")
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(state, "", arrays)
    header = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree})
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        # O_EXCL: never reuse someone else's file; mode 0o666 lets the umask decide.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                _write_member(archive, _HEADER, np.frombuffer(header.encode(), np.uint8))
                for name, array in arrays.items():
                    _write_member(archive, name, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise
    try:
        _fsync_dir(directory)
    except OSError as exc:  # the file is in place, but perhaps not yet on disk
        raise _naming(exc, path) from exc


def _naming(exc: OSError, path: str) -> OSError:
    """``exc`` as an error of the same type and errno whose message names ``path``."""
    if exc.errno is not None and exc.strerror:
        return type(exc)(exc.errno, f"cannot save {path!r}: {exc.strerror}")
    return type(exc)(f"cannot save {path!r}: {exc}")


# --- load ----------------------------------------------------------------------------


def _decode(tree, members: Mapping[str, np.ndarray], path: str):
    if isinstance(tree, dict):
        if _ARRAY in tree:
            array = members[tree[_ARRAY]]
            return array[()] if tree.get(_SCALAR) else array
        return {key: _decode(item, members, f"{path}/{key}") for key, item in tree.items()}
    if isinstance(tree, list):
        return [_decode(item, members, f"{path}/{i}") for i, item in enumerate(tree)]
    return tree


def _array_names(tree) -> list[str]:
    if isinstance(tree, dict):
        if _ARRAY in tree:
            return [tree[_ARRAY]]
        return [name for item in tree.values() for name in _array_names(item)]
    if isinstance(tree, list):
        return [name for item in tree for name in _array_names(item)]
    return []


def _read(f) -> tuple[dict, dict[str, np.ndarray]]:
    """Read the header tree and the arrays it names from an open binary file."""
    loaded = np.load(f, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError("not a .npz archive (a single .npy array?)")
    with loaded as npz:
        if _HEADER not in npz.files:
            raise ValueError(f"no {_HEADER!r} entry: not a file written by fastcnn.save")
        raw = npz[_HEADER]
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"{_HEADER!r} entry is not a uint8 vector")
        header = json.loads(raw.tobytes().decode("utf-8"))
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"header does not name the format {FORMAT!r}")
        version = header.get("version")
        if not isinstance(version, int) or not 1 <= version <= VERSION:
            raise ValueError(
                f"format version {version!r} is not supported (this fastcnn reads "
                f"versions 1 to {VERSION}): upgrade fastcnn"
            )
        tree = header.get("tree")
        if not isinstance(tree, dict):
            raise ValueError("header has no 'tree' mapping")
        names = _array_names(tree)
        missing = sorted(set(names) - set(npz.files))
        if missing:
            raise ValueError(f"the arrays {missing[:5]} are missing")
        return tree, {name: npz[name] for name in names}


def load(path):
    """Read a file written by :func:`save` and return the saved structure.

    Args:
        path: file name (``str`` or ``os.PathLike``).

    Returns:
        The saved mapping (``dict``), with arrays as ``numpy.ndarray`` (in memory, the
        file is closed) and NumPy scalars, lists and JSON values as saved.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is truncated, corrupted, not a fastcnn file, or from a newer
            fastcnn; the message names ``path``.
    """
    path = _as_path(path, "load")
    try:
        # np.load is given an open file: on a damaged archive it would leak its own.
        with open(path, "rb") as f:
            tree, members = _read(f)
        return _decode(tree, members, "")
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as exc:  # BadZipFile, bad CRC, truncated .npy, bad JSON, ...
        raise ValueError(f"cannot load {path!r}: {type(exc).__name__}: {exc}") from exc
