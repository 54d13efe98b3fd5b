"""Faults and determinism of training: real SIGKILLs, corrupt checkpoints, thread counts.

A training run killed during an epoch or in the middle of a checkpoint write resumes
from the last complete checkpoint and ends bitwise equal to a run that never stopped.
"""

import io
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pytest import param

import fastcnn
from fastcnn import nn, optim, train
from fastcnn.cli import main

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="SIGKILL and fork semantics are POSIX"
)

STEPS_PER_EPOCH = 45  # 1438 training digits in batches of 32
EPOCHS = 2

# Runs `fastcnn train ARGS` and, if asked, freezes at a chosen point (touching a marker
# file first) so that the test can SIGKILL it exactly there.
CHILD = """
import os, sys, time
from pathlib import Path
import numpy as np
import fastcnn.io, fastcnn.optim
from fastcnn.cli import main

marker = Path(os.environ.get("FAULT_MARKER", "unused"))
mode, at = os.environ.get("FAULT_MODE", "none"), int(os.environ.get("FAULT_AT", "0"))

def freeze():
    marker.touch()
    time.sleep(600)

if mode == "step":  # after optimiser step number `at`
    real_step, steps = fastcnn.optim.SGD.step, [0]
    def step(self):
        real_step(self)
        steps[0] += 1
        if steps[0] == at:
            freeze()
    fastcnn.optim.SGD.step = step
elif mode == "checkpoint":  # halfway through writing checkpoint number `at`
    real_save, real_write, saves, members = fastcnn.io.save, np.lib.format.write_array, [0], [0]
    def save(state, path):
        saves[0] += 1
        members[0] = 0
        return real_save(state, path)
    def write_array(*args, **kwargs):
        real_write(*args, **kwargs)
        members[0] += 1
        if saves[0] == at and members[0] == 4:
            freeze()
    fastcnn.io.save = save
    np.lib.format.write_array = write_array
sys.exit(main(sys.argv[1:]))
"""


def train_args(directory: Path, *extra) -> list[str]:
    return [
        "train", "--epochs", str(EPOCHS), "--threads", "1", "--no-progress",
        "--checkpoint-dir", str(directory), *extra,
    ]  # fmt: skip


def run_child(args, **fault) -> subprocess.CompletedProcess:
    env = {**os.environ, **{f"FAULT_{k.upper()}": str(v) for k, v in fault.items()}}
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, timeout=600
    )


def kill_when_frozen(args, marker: Path, **fault) -> None:
    """Start the child, wait until it freezes at the fault point, SIGKILL it."""
    env = {**os.environ, "FAULT_MARKER": str(marker)}
    env.update({f"FAULT_{k.upper()}": str(v) for k, v in fault.items()})
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            if child.poll() is not None:
                out, err = child.communicate()
                pytest.fail(f"the child ended before the fault point:\n{out}\n{err}")
            if time.monotonic() > deadline:
                pytest.fail("the child never reached the fault point")
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The checkpoint of an uninterrupted run."""
    pytest.importorskip("sklearn")
    directory = tmp_path_factory.mktemp("reference")
    done = run_child(train_args(directory))
    assert done.returncode == 0, done.stderr
    return train.load_checkpoint(directory / "digits.npz")


def assert_same_run(checkpoint: dict, reference: dict) -> None:
    assert checkpoint["epoch"] == reference["epoch"] == EPOCHS
    for key, value in reference["model"].items():
        np.testing.assert_array_equal(checkpoint["model"][key], value, err_msg=key)
    opt, ref = checkpoint["optimizer"], reference["optimizer"]
    assert opt["steps"] == ref["steps"] == EPOCHS * STEPS_PER_EPOCH
    for mine, theirs in zip(
        opt["buffers"]["momentum_buffer"], ref["buffers"]["momentum_buffer"], strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)
    assert checkpoint["rng"] == reference["rng"]
    losses = [r["train_loss"] for r in checkpoint["history"]]
    assert losses == [r["train_loss"] for r in reference["history"]]


@pytest.mark.parametrize(
    ("mode", "at"),
    [
        param("step", STEPS_PER_EPOCH + 20, id="kill-during-epoch-2"),
        param("checkpoint", 2, id="kill-while-writing-checkpoint-2"),
    ],
)
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, reference, mode, at):
    directory = tmp_path / "ckpt"
    kill_when_frozen(train_args(directory), tmp_path / "frozen", mode=mode, at=at)
    survivor = train.load_checkpoint(directory / "digits.npz")
    assert survivor["epoch"] == 1  # the last complete checkpoint, intact
    done = run_child(train_args(directory, "--resume"))
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stdout and "after epoch 1" in done.stdout
    assert_same_run(train.load_checkpoint(directory / "digits.npz"), reference)


# --- corrupt checkpoints ------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    """The bytes of a real (short) training checkpoint."""
    path = tmp_path_factory.mktemp("good") / "digits.npz"
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 64)
    net = train.lenet((1, 8, 8), rng=rng)
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    train.fit(
        net, opt, nn.CrossEntropyLoss(), (x, y), epochs=1, batch_size=32, rng=rng,
        checkpoint=path, progress=False, log=lambda line: None,
    )  # fmt: skip
    return path.read_bytes()


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x55]) + blob[at + 1 :]


def flip_in_data(blob: bytes) -> bytes:
    """A bit flipped in the middle of the largest array's bytes (not in a zip header's
    extra field, which no check covers and nothing reads)."""
    info = max(zipfile.ZipFile(io.BytesIO(blob)).infolist(), key=lambda i: i.file_size)
    name, extra = struct.unpack("<HH", blob[info.header_offset + 26 : info.header_offset + 30])
    return flip(blob, info.header_offset + 30 + name + extra + info.file_size // 2)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        param(lambda b: b[: len(b) // 2], "cannot load", id="truncated-half"),
        param(lambda b: b[:100], "cannot load", id="truncated-header"),
        param(lambda b: b"", "cannot load", id="empty"),
        param(flip_in_data, "cannot load", id="bit-flip"),
        param(lambda b: b"epoch,loss\n1,0.5\n", "cannot load", id="foreign-text"),
        param(None, "not a training checkpoint", id="model-weights"),
    ],
)
def test_damaged_checkpoint_is_refused_and_kept(
    tmp_path, monkeypatch, capsys, good_checkpoint, damage, message
):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "checkpoints" / "digits.npz"
    path.parent.mkdir()
    if damage is None:  # a valid fastcnn file holding only weights
        (tmp_path / "good.npz").write_bytes(good_checkpoint)
        fastcnn.save(train.load_checkpoint(tmp_path / "good.npz")["model"], path)
    else:
        path.write_bytes(damage(good_checkpoint))
    before = path.read_bytes()
    assert main(["train", "--resume", "--epochs", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert message in err and "checkpoints/digits.npz" in err and "Traceback" not in err
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["digits.npz"]


def test_resume_refuses_a_checkpoint_without_run_settings(tmp_path, monkeypatch, capsys,
                                                          good_checkpoint):  # fmt: skip
    """A checkpoint that ``fit`` wrote without ``config`` (the API allows it) is no
    ``fastcnn train`` run to continue: refused with exit 2, the file kept."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "checkpoints" / "digits.npz"
    path.parent.mkdir()
    path.write_bytes(good_checkpoint)
    assert main(["train", "--resume", "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds no settings of a `fastcnn train` run" in err and "Traceback" not in err
    assert path.read_bytes() == good_checkpoint


# --- determinism --------------------------------------------------------------------------


@pytest.fixture
def set_threads():
    """``fastcnn.set_num_threads``, with the count restored after the test."""
    before = fastcnn.get_num_threads()
    yield fastcnn.set_num_threads
    fastcnn.set_num_threads(before)


def short_run(n_threads: int, set_threads) -> dict:
    set_threads(n_threads)
    x, y = fastcnn.data.load_digits()
    init, order = np.random.SeedSequence(11).spawn(2)
    net = train.lenet((1, 8, 8), batchnorm=True, rng=np.random.default_rng(init))
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    train.fit(
        net, opt, nn.CrossEntropyLoss(), (x[:640], y[:640]), epochs=1, batch_size=64,
        rng=np.random.default_rng(order), progress=False, log=lambda line: None,
    )  # fmt: skip
    return net.state_dict()


def test_same_seed_and_threads_is_bitwise_equal(set_threads):
    pytest.importorskip("sklearn")
    n = max(2, min(4, os.cpu_count() or 2))
    first, second = short_run(n, set_threads), short_run(n, set_threads)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_other_thread_count_agrees_to_round_off(set_threads):
    """Ten SGD steps: summation order differs, so equal up to float32 round-off only."""
    pytest.importorskip("sklearn")
    one, two = short_run(1, set_threads), short_run(2, set_threads)
    for key in one:
        scale = np.abs(one[key]).max()
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-5 * scale, err_msg=key)


# --- two runs on one checkpoint folder -----------------------------------------------------


def test_second_run_on_a_busy_checkpoint_folder_is_refused(tmp_path, capsys, set_threads):
    """A run frozen mid-epoch holds its folder: a second run is refused naming its pid,
    loads nothing and writes nothing; once it is killed, its stale lock is taken over."""
    pytest.importorskip("sklearn")
    directory = tmp_path / "ckpt"
    marker = tmp_path / "frozen"
    env = {**os.environ, "FAULT_MARKER": str(marker), "FAULT_MODE": "step", "FAULT_AT": "5"}
    first = subprocess.Popen(
        [sys.executable, "-c", CHILD, *train_args(directory)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never reached step 5"
            time.sleep(0.05)
        assert main(train_args(directory)) == 1
        out, err = capsys.readouterr()
        assert out == ""  # refused before loading data: no "training on ..." line
        assert err.startswith(
            f"fastcnn train: error: {directory} is in use by another training run (pid "
            f"{first.pid} on "
        )
        assert sorted(p.name for p in directory.iterdir()) == ["fastcnn.lock"]
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    assert main(train_args(directory)) == 0
    out = capsys.readouterr().out
    assert f"took over the stale lock {directory}/fastcnn.lock of pid {first.pid} (no " in out
    assert sorted(p.name for p in directory.iterdir()) == ["digits.npz"]
