"""fastcnn.io: round trips, the file format, atomic writes, and refusal of bad files."""

from __future__ import annotations

import errno
import json
import os
import zipfile

import numpy as np
import pytest

import fastcnn
import fastcnn.io as fio
import fastcnn.nn as nn
from fastcnn.optim import SGD


def _checkpoint():
    rng = np.random.default_rng(5)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.BatchNorm2d(2), nn.Flatten())
    opt = SGD(net.parameters(), lr=0.1, momentum=0.9)
    return {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "step": 1200,
        "rng": rng.bit_generator.state,
        "config": {"lr": 0.05, "batch_size": 64, "name": "lenet", "plot": None, "bn": True},
    }


def _assert_same(a, b, where="state"):
    """Equal structure, types, dtypes, shapes and values (NaN equal to NaN)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        pytest.param({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, id="flat"),
        pytest.param(
            {
                "f64": np.array([np.nan, -np.inf, 1e-300]),
                "i64": np.array(7, np.int64),
                "bool": np.array([True, False]),
                "f16": np.ones((2, 2), np.float16),
                "u8": np.arange(5, dtype=np.uint8),
                "empty": np.zeros((0, 3), np.float32),
                "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
                "strided": np.arange(10.0)[::3],
            },
            id="dtypes-and-layouts",
        ),
        pytest.param(
            {
                "scalars": [np.float32(1.5), np.int64(-3), np.bool_(True)],
                "json": {"big": 2**100, "nan": float("nan"), "text": "é/ü", "none": None},
                "nested": {"a": {"b": {"c": np.ones(2)}}, "list": [np.zeros(1), [1, 2]]},
            },
            id="scalars-json-nesting",
        ),
        pytest.param(_checkpoint(), id="training-checkpoint"),
        pytest.param({"a/b": np.ones(1), "a": {"b": np.zeros(1)}}, id="colliding-paths"),
    ],
)
def test_round_trip(state, tmp_path):
    """load(save(state)) gives back the structure, arrays (dtype, shape, values) and
    values; tuples come back as lists."""
    path = tmp_path / "state.npz"
    fastcnn.save(state, path)
    _assert_same(fastcnn.load(path), _lists(state))


def _lists(value):
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def test_checkpoint_restores_a_generator_and_a_model(tmp_path):
    """A saved Generator state and model state restore the same random stream and
    outputs."""
    rng = np.random.default_rng(11)
    rng.random(3)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2, rng=1))
    fastcnn.save({"rng": rng.bit_generator.state, "model": net.state_dict()}, tmp_path / "c.npz")
    expected = rng.random(4)
    loaded = fastcnn.load(tmp_path / "c.npz")
    restored = np.random.default_rng()
    restored.bit_generator.state = loaded["rng"]
    np.testing.assert_array_equal(restored.random(4), expected)
    other = nn.Sequential(
        nn.Conv2d(1, 2, 3, rng=5), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2, rng=6)
    )
    other.load_state_dict(loaded["model"])
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(other(x), net(x))


def test_file_is_a_plain_npz_with_a_format_marker(tmp_path):
    """numpy.load reads the file without pickle; the header names format and version."""
    path = tmp_path / "m.npz"
    fastcnn.save({"model": {"0.weight": np.ones(3, np.float32)}, "epoch": 2}, path)
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["__fastcnn__", "model/0.weight"]
        header = json.loads(npz["__fastcnn__"].tobytes())
        np.testing.assert_array_equal(npz["model/0.weight"], np.ones(3, np.float32))
    assert header == {
        "format": "fastcnn",
        "version": 1,
        "tree": {"model": {"0.weight": {"$array": "model/0.weight"}}, "epoch": 2},
    }


def test_loaded_arrays_are_writeable_and_detached(tmp_path):
    """Loaded arrays are ordinary in-memory arrays (the file is closed)."""
    path = tmp_path / "m.npz"
    fastcnn.save({"w": np.zeros(3)}, path)
    w = fastcnn.load(path)["w"]
    os.remove(path)
    w[0] = 1.0
    assert w.flags.writeable and w[0] == 1.0


@pytest.mark.parametrize(
    ("state", "exc", "match"),
    [
        pytest.param([np.ones(1)], TypeError, r"state must be a mapping", id="list-state"),
        pytest.param({1: np.ones(1)}, TypeError, r"keys must be str.*1", id="int-key"),
        pytest.param({"a": {"$array": "x"}}, ValueError, r"reserved.*'a'", id="reserved-key"),
        pytest.param({"a": np.array([None])}, TypeError, r"'a'.*object", id="object-array"),
        pytest.param({"a": {"b": {1, 2}}}, TypeError, r"'a/b'.*set", id="set"),
        pytest.param({"f": lambda: 0}, TypeError, r"'f'.*function", id="function"),
    ],
)
def test_save_rejects_unsavable_state_and_writes_nothing(state, exc, match, tmp_path):
    """Unsavable values are named; no file (and no temporary) is created."""
    with pytest.raises(exc, match=match):
        fastcnn.save(state, tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


# --- atomic writes --------------------------------------------------------------------------


def _fail_on_second_member(monkeypatch):
    real = fio._write_member
    calls = []

    def failing(archive, name, array):
        calls.append(name)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        real(archive, name, array)

    monkeypatch.setattr(fio, "_write_member", failing)


def _fail_fsync(monkeypatch):
    def failing(fd):
        raise OSError("I/O error (simulated)")

    monkeypatch.setattr(fio.os, "fsync", failing)


def _fail_replace(monkeypatch):
    def failing(src, dst):
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(fio.os, "replace", failing)


@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(_fail_on_second_member, id="mid-write"),
        pytest.param(_fail_fsync, id="fsync"),
        pytest.param(_fail_replace, id="rename"),
    ],
)
def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(inject, monkeypatch, tmp_path):
    """A failure at any stage re-raises, the old file stays loadable, nothing else is left."""
    path = tmp_path / "model.npz"
    fastcnn.save({"w": np.zeros(4), "epoch": 1}, path)
    old = path.read_bytes()
    inject(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        fastcnn.save({"w": np.ones(4), "v": np.ones(100), "epoch": 2}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.npz"]
    assert path.read_bytes() == old
    assert fastcnn.load(path)["epoch"] == 1


def test_save_replaces_and_respects_the_umask(tmp_path):
    """A second save replaces the file; its mode is what open() would give."""
    path = tmp_path / "m.npz"
    fastcnn.save({"epoch": 1}, path)
    fastcnn.save({"epoch": 2}, str(path))
    assert fastcnn.load(path)["epoch"] == 2
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["m.npz"]


def test_save_into_a_missing_directory(tmp_path):
    """A missing directory is a FileNotFoundError, and nothing is created."""
    with pytest.raises(FileNotFoundError):
        fastcnn.save({"a": 1}, tmp_path / "no" / "m.npz")
    assert os.listdir(tmp_path) == []


# --- refusing bad files ---------------------------------------------------------------------


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    fastcnn.save(_checkpoint(), path)
    return path


def _truncate(path, fraction):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _flip_byte(path, fraction):
    data = bytearray(path.read_bytes())
    data[int(len(data) * fraction)] ^= 0xFF
    path.write_bytes(bytes(data))


def _write_foreign_npz(path):
    with path.open("wb") as f:
        np.savez(f, weight=np.ones(3))


def _write_npy(path):
    with path.open("wb") as f:
        np.save(f, np.ones(3))


def _rewrite_header(path, header):
    with zipfile.ZipFile(path, "w") as z, z.open("__fastcnn__.npy", "w") as m:
        np.lib.format.write_array(m, np.frombuffer(header, np.uint8))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        pytest.param(lambda p: _truncate(p, 0.5), "cannot load", id="truncated-half"),
        pytest.param(lambda p: _truncate(p, 0.99), "cannot load", id="truncated-end"),
        pytest.param(lambda p: _truncate(p, 0.0), "cannot load", id="empty-file"),
        pytest.param(lambda p: _flip_byte(p, 0.3), "cannot load", id="corrupted-data"),
        pytest.param(lambda p: _flip_byte(p, 0.02), "cannot load", id="corrupted-header"),
        pytest.param(lambda p: p.write_bytes(os.urandom(1000)), "cannot load", id="random-bytes"),
        pytest.param(lambda p: p.write_text("hello"), "cannot load", id="text-file"),
        pytest.param(_write_foreign_npz, "not a file written by fastcnn.save", id="foreign-npz"),
        pytest.param(_write_npy, "not a .npz archive", id="npy-file"),
        pytest.param(
            lambda p: _rewrite_header(p, b'{"format": "fastcnn", "version": 99, "tree": {}}'),
            "version 99 is not supported",
            id="newer-version",
        ),
        pytest.param(
            lambda p: _rewrite_header(p, b'{"format": "other", "version": 1}'),
            "format 'fastcnn'",
            id="other-format",
        ),
        pytest.param(lambda p: _rewrite_header(p, b"{not json"), "JSONDecodeError", id="bad-json"),
        pytest.param(
            lambda p: _rewrite_header(
                p, b'{"format": "fastcnn", "version": 1, "tree": {"w": {"$array": "w"}}}'
            ),
            r"arrays \['w'\] are missing",
            id="missing-array",
        ),
    ],
)
def test_load_rejects_damaged_or_foreign_files(damage, match, good_file):
    """Every bad file is a ValueError that names the path; nothing is modified."""
    damage(good_file)
    before = good_file.read_bytes()
    with pytest.raises(ValueError, match=match) as info:
        fastcnn.load(good_file)
    assert str(good_file) in str(info.value)
    assert good_file.read_bytes() == before


def test_load_missing_file_is_file_not_found(tmp_path):
    """A path that does not exist is a FileNotFoundError, not a format error."""
    with pytest.raises(FileNotFoundError):
        fastcnn.load(tmp_path / "absent.npz")


def test_every_truncation_is_rejected(good_file):
    """Cutting the file at any of 40 points gives a ValueError, never another exception."""
    data = good_file.read_bytes()
    for cut in np.linspace(1, len(data) - 1, 40).astype(int):
        good_file.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cannot load"):
            fastcnn.load(good_file)


@pytest.mark.parametrize("path", [None, 3, b"state.npz"], ids=["None", "int", "bytes"])
def test_load_names_a_bad_path_argument(path):
    with pytest.raises(TypeError, match=r"load: path must be a str or os.PathLike"):
        fastcnn.load(path)


def _disk_full(monkeypatch):
    def failing(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fio.os, "fsync", failing)


def test_disk_full_names_the_file_and_keeps_the_old_one(monkeypatch, tmp_path):
    """ENOSPC (simulated at the fsync, where a full disk shows up) keeps its type and errno
    and names the file being saved, not the hidden temporary."""
    path = tmp_path / "model.npz"
    fastcnn.save({"epoch": 1}, path)
    _disk_full(monkeypatch)
    with pytest.raises(OSError) as info:
        fastcnn.save({"epoch": 2}, path)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"[Errno 28] cannot save {str(path)!r}: No space left on device"
    assert ".tmp" not in str(info.value)
    assert os.listdir(tmp_path) == ["model.npz"] and fastcnn.load(path)["epoch"] == 1


def test_failing_directory_fsync_names_the_file(monkeypatch, tmp_path):
    """The last step, syncing the folder after the rename, names the file too."""
    real = os.fsync

    def fail_on_folders(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd)

    if not os.path.isdir("/proc/self/fd") or not hasattr(os, "O_DIRECTORY"):
        pytest.skip("needs /proc and O_DIRECTORY")
    monkeypatch.setattr(fio.os, "fsync", fail_on_folders)
    path = tmp_path / "model.npz"
    with pytest.raises(OSError, match=r"^\[Errno 5\] cannot save '.*model.npz': Input/output"):
        fastcnn.save({"epoch": 1}, path)


@pytest.mark.parametrize(
    ("target", "exc", "strerror"),
    [
        pytest.param("folder", IsADirectoryError, "Is a directory", id="a-folder"),
        pytest.param("missing/m.npz", FileNotFoundError, "No such file", id="missing-folder"),
        pytest.param("file/m.npz", NotADirectoryError, "Not a directory", id="under-a-file"),
    ],
)
def test_unwritable_target_names_the_target(tmp_path, target, exc, strerror):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    path = tmp_path / target
    with pytest.raises(exc) as info:
        fastcnn.save({"a": 1}, path)
    assert f"cannot save {str(path)!r}: {strerror}" in str(info.value)
    assert ".tmp" not in str(info.value)
