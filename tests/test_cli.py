"""The ``fastcnn`` command: help, info, argument errors, missing extras, data errors."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pytest import param

from fastcnn import cli


def run(argv, capsys):
    """Run ``fastcnn argv`` in-process; return (exit code, stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


FASTCNN_SCRIPT = Path(sys.executable).parent / "fastcnn"


@pytest.mark.parametrize(
    "command",
    [
        param([str(FASTCNN_SCRIPT)], id="entry-point"),
        param([sys.executable, "-m", "fastcnn"], id="python-m"),
    ],
)
def test_help_in_a_subprocess(command):
    if not Path(command[0]).is_file():
        pytest.skip("the fastcnn script is not installed beside this Python")
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("train", "info", "bench"):
        assert f"\n    {name} " in done.stdout


def test_help_does_not_load_numba():
    script = (
        "import sys\nfrom fastcnn.cli import main\ntry:\n    main(['train', '--help'])\n"
        "except SystemExit:\n    print('numba' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip().endswith("False"), done.stdout + done.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        param(
            ["train", "--help"], ["--dataset {digits,mnist}", "--resume", "--plot PNG"], id="train"
        ),
        param(["--version"], ["fastcnn 0."], id="version"),
    ],
)
def test_help_texts(capsys, argv, expected):
    code, out, _ = run(argv, capsys)
    assert code == 0
    for text in expected:
        assert text in out


def test_info(capsys):
    code, out, _ = run(["info"], capsys)
    assert code == 0
    for key in ("numba", "numpy", "simd", "thread", "data cache"):
        assert key in out.lower()


def test_bench_is_wired(capsys):
    pytest.importorskip("fastcnn.bench")
    code, out, _ = run(["bench", "--help"], capsys)
    assert code == 0 and "usage: fastcnn bench" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        param([], "required: COMMAND", id="no-command"),
        param(["fit"], "invalid choice: 'fit'", id="unknown-command"),
        param(["train", "--dataset", "cifar"], "--dataset: invalid choice: 'cifar'", id="dataset"),
        param(["train", "--epochs", "0"], "--epochs: must be >= 1", id="epochs-zero"),
        param(["train", "--epochs", "two"], "--epochs: invalid _positive_int", id="epochs-text"),
        param(["train", "--batch-size", "-4"], "--batch-size: must be >= 1", id="batch"),
        param(["train", "--lr", "0"], "--lr: must be > 0", id="lr-zero"),
        param(["train", "--lr", "nan"], "--lr: must be > 0", id="lr-nan"),
        param(["train", "--momentum", "-0.5"], "--momentum: must be >= 0", id="momentum"),
        param(["train", "--optimizer", "rmsprop"], "--optimizer: invalid choice", id="optimizer"),
        param(["train", "--threads", "0"], "--threads: must be >= 1", id="threads"),
        param(["train", "--seed", "1.5"], "--seed: invalid _non_negative_int value", id="seed"),
        param(["train", "--frobnicate"], "unrecognized arguments: --frobnicate", id="unknown"),
    ],
)
def test_bad_arguments_are_usage_errors(capsys, argv, message):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert message in err and "usage: fastcnn" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "blocked", "message"),
    [
        param(["train"], "sklearn", "pip install 'fastcnn[train]'", id="digits"),
        param(["train", "--plot", "c.png"], "matplotlib", "--plot needs matplotlib", id="plot"),
    ],
)
def test_missing_train_extra(capsys, monkeypatch, tmp_path, argv, blocked, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, blocked, None)  # import raises ImportError
    code, out, err = run([*argv, "--epochs", "1"], capsys)
    assert code == 2
    assert message in err and "pip install 'fastcnn[train]'" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written


def test_missing_extra_in_a_subprocess(tmp_path):
    """The real console path: sklearn made unimportable before fastcnn starts."""
    script = (
        "import sys; sys.modules['sklearn'] = None; "
        "from fastcnn.cli import main; sys.exit(main(['train']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "pip install 'fastcnn[train]'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        param(["--dataset", "mnist", "--data-dir", "{tmp}"], 2, "add --download", id="no-mnist"),
        param(["--resume"], 2, "--resume: no checkpoint at", id="resume-nothing"),
        param(["--resume", "--no-checkpoint"], 2, "drop --no-checkpoint", id="resume-none"),
        param(["--optimizer", "adam", "--momentum", "0.9"], 2, "sgd only", id="adam-momentum"),
    ],
)
def test_train_errors(capsys, monkeypatch, tmp_path, argv, code, message):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    got, out, err = run(["train", *argv], capsys)
    assert got == code
    assert message in err and "Traceback" not in err


def test_corrupt_mnist_is_a_runtime_error(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    code, out, err = run(["train", "--dataset", "mnist", "--data-dir", str(tmp_path)], capsys)
    assert code == 1
    assert "fastcnn train: error:" in err and "train-images-idx3-ubyte.gz" in err


@pytest.fixture
def restore_threads():
    import fastcnn

    before = fastcnn.get_num_threads()
    yield
    fastcnn.set_num_threads(before)


def test_resume_keeps_the_run_settings(capsys, monkeypatch, tmp_path, restore_threads):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    first = ["train", "--epochs", "1", "--lr", "0.02", "--batch-size", "64", "--threads", "1"]
    assert run([*first, "--lr-schedule", "constant"], capsys)[0] == 0
    code, out, _ = run(["train", "--resume", "--epochs", "2", "--threads", "1"], capsys)
    assert code == 0
    assert "batch 64, sgd lr 0.02 (constant)" in out and "after epoch 1" in out
    assert "epoch 2/2  lr 0.02  train loss" in out
    code, _, err = run(["train", "--resume", "--epochs", "3", "--lr-schedule", "cosine"], capsys)
    assert code == 2 and "lr_schedule: 'constant' -> 'cosine'" in err
    code, _, err = run(["train", "--resume", "--epochs", "3", "--batchnorm"], capsys)
    assert code == 2 and "batchnorm: False -> True" in err
    # a new --lr is a deliberate change: allowed, and logged
    code, out, _ = run(["train", "--resume", "--epochs", "3", "--lr", "0.01"], capsys)
    assert code == 0 and "learning rate changed on resume: 0.02 -> 0.01" in out
    assert "epoch 3/3  lr 0.01  train loss" in out


def test_cosine_schedule_is_the_default(capsys, monkeypatch, tmp_path, restore_threads):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["train", "--epochs", "2", "--threads", "1", "--no-checkpoint"], capsys)
    assert code == 0 and "sgd lr 0.05 (cosine)" in out
    assert "epoch 1/2  lr 0.05  train loss" in out and "epoch 2/2  lr 0.025  train loss" in out


def test_info_prints_the_conv_plan(capsys):
    code, out, _ = run(["info", "--plan", "64,32,13,13:64,3,3", "--plan", "2,1,9,9:4,3,3"], capsys)
    assert code == 0
    assert out.count("conv2d x") == 2
    assert "grad_input   direct" in out and "forward      few_taps" in out


def test_info_plan_with_a_bad_shape_is_a_usage_error(capsys):
    code, _, err = run(["info", "--plan", "1,2,3:4,3,3"], capsys)
    assert code == 2
    assert "--plan: the input shape" in err


# --- every option checked before any data loads -----------------------------------------


@pytest.fixture
def no_data(monkeypatch):
    """Make loading any data a test failure: the checks must come first."""
    from fastcnn import data

    def refuse(*args, **kwargs):
        raise AssertionError("data loaded before the options were checked")

    monkeypatch.setattr(data, "load_digits", refuse)
    monkeypatch.setattr(data, "load_mnist", refuse)


def _threads_available():
    import numba

    return numba.config.NUMBA_NUM_THREADS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        param(["--lr", "1e39"], "--lr: 1e39 overflows float32, the training dtype", id="lr-1e39"),
        param(["--lr", "1e300"], "--lr: 1e300 overflows float32", id="lr-1e300"),
        param(["--lr", "inf"], "--lr: must be a finite number, got inf", id="lr-inf"),
        param(["--lr", "1e-50"], "--lr: 1e-50 rounds to 0 in float32", id="lr-underflow"),
        param(["--momentum", "inf"], "--momentum: must be a finite number", id="momentum-inf"),
        param(["--momentum", "1e39"], "--momentum: 1e39 overflows float32", id="momentum-big"),
        param(["--seed", "-5"], "--seed: must be >= 0, got -5", id="seed-negative"),
        param(["--threads", "1000"], "--threads: must be <= {threads}, the threads available "
              "(NUMBA_NUM_THREADS), got 1000", id="threads-1000"),
        param(["--save", ""], "--save: the path is empty", id="save-empty"),
        param(["--save", "  "], "--save: the path is empty", id="save-blank"),
        param(["--save", "{tmp}"], "--save: {tmp} is a folder; name a file in it", id="save-dir"),
        param(["--save", "{tmp}/missing/x.npz"], "--save: the folder {tmp}/missing does not "
              "exist", id="save-missing-parent"),
        param(["--save", "{file}/x.npz"], "--save: {file} is not a folder", id="save-under-file"),
        param(["--plot", "{tmp}"], "--plot: {tmp} is a folder", id="plot-dir"),
        param(["--plot", "{tmp}/c.xyz"], "--plot: unknown image format '.xyz' (one of ",
              id="plot-format"),
        param(["--plot", "{tmp}/w.png", "--save", "{tmp}/w.png"], "--plot: {tmp}/w.png is also "
              "the --save file", id="plot-is-save"),
        param(["--data-dir", "{tmp}"], "--data-dir: applies to --dataset mnist only",
              id="data-dir-digits"),
        param(["--download"], "--download: applies to --dataset mnist only", id="download-digits"),
        param(["--dataset", "mnist", "--data-dir", "{tmp}/nope"], "--data-dir: {tmp}/nope does "
              "not exist (add --download to fetch MNIST into it)", id="data-dir-missing"),
        param(["--dataset", "mnist", "--data-dir", "{file}"], "--data-dir: {file} is a file, not "
              "a folder", id="data-dir-file"),
        param(["--dataset", "mnist", "--data-dir", "{file}/m", "--download"], "--data-dir: {file} "
              "is a file, not a folder", id="download-under-file"),
        param(["--checkpoint-dir", ""], "--checkpoint-dir: the path is empty", id="ckpt-empty"),
        param(["--checkpoint-dir", "{file}"], "--checkpoint-dir: {file} is a file, not a folder",
              id="ckpt-is-file"),
        param(["--checkpoint-dir", "{file}/sub/dir"], "--checkpoint-dir: {file} is a file, not "
              "a folder", id="ckpt-under-file"),
        param(["--checkpoint-dir", "{tmp}/ck", "--save", "{tmp}/ck/digits.npz"], "--save: "
              "{tmp}/ck/digits.npz is the run's checkpoint file in --checkpoint-dir",
              id="save-is-checkpoint"),
        param(["--checkpoint-dir", "{tmp}/ck", "--save", "{tmp}/ck/../ck/digits.npz"], "--save: "
              "{tmp}/ck/../ck/digits.npz is the run's checkpoint file", id="save-is-ckpt-alias"),
    ],
)  # fmt: skip
def test_bad_train_options_are_refused_before_data_loads(
    capsys, monkeypatch, tmp_path, no_data, argv, message
):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    regular = tmp_path / "a-file"
    regular.write_text("")
    values = {"tmp": tmp_path, "file": regular, "threads": _threads_available()}
    argv = [a.format(**values) for a in argv]
    code, out, err = run(["train", "--epochs", "1", *argv], capsys)
    assert code == 2, err
    assert err.startswith("usage: fastcnn train ")
    assert f"fastcnn train: error: argument {message.format(**values)}" in err
    assert "Traceback" not in err and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing created


def test_unwritable_output_folder_is_refused(capsys, monkeypatch, tmp_path, no_data):
    """A read-only mount, simulated (root may write anywhere): creating a file fails."""
    import tempfile

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), dir)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    code, _, err = run(["train", "--no-checkpoint", "--save", "out/w.npz"], capsys)
    assert code == 2 and "argument --save: the folder out does not exist" in err
    (tmp_path / "out").mkdir()
    code, _, err = run(["train", "--no-checkpoint", "--save", "out/w.npz"], capsys)
    assert code == 2 and "argument --save: cannot write in out: Read-only file system" in err
    code, _, err = run(["train", "--checkpoint-dir", "out/ck"], capsys)
    assert code == 2
    assert "argument --checkpoint-dir: cannot write in out: Read-only file system" in err


def test_resume_and_overwrite_exclude_each_other(capsys):
    code, _, err = run(["train", "--resume", "--overwrite"], capsys)
    assert code == 2 and "argument --overwrite: not allowed with argument --resume" in err


def test_help_documents_the_safety_options_and_the_cache(capsys):
    code, out, _ = run(["train", "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    for phrase in ("--overwrite", "locked while a run uses it", "exit status 1",
                   "--resume with a lower --lr"):  # fmt: skip
        assert phrase in text
    code, out, _ = run(["--help"], capsys)
    text = " ".join(out.split())
    assert "$NUMBA_CACHE_DIR" in text and "$FASTCNN_CACHE_DIR/numba" in text
    assert "compiled in memory" in text


# --- runs that go wrong ----------------------------------------------------------------------


@pytest.fixture
def digits_run(monkeypatch, tmp_path, restore_threads):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    return ["train", "--threads", "1", "--no-progress"]


def test_fresh_run_over_a_checkpoint_needs_overwrite(capsys, tmp_path, digits_run):
    assert run([*digits_run, "--epochs", "1"], capsys)[0] == 0
    ckpt = tmp_path / "checkpoints" / "digits.npz"
    before = ckpt.read_bytes()
    code, out, err = run([*digits_run, "--epochs", "1", "--lr", "0.02"], capsys)
    assert code == 2 and out == ""
    assert (
        "fastcnn train: error: argument --checkpoint-dir: checkpoints/digits.npz holds a "
        "checkpoint of an earlier run; add --resume to continue it, --overwrite to start "
        "afresh (it is replaced after the first epoch), or choose another --checkpoint-dir"
    ) in err
    assert ckpt.read_bytes() == before
    code, out, _ = run([*digits_run, "--epochs", "1", "--lr", "0.02", "--overwrite"], capsys)
    assert code == 0 and "sgd lr 0.02" in out
    assert fastcnn_train().load_checkpoint(ckpt)["config"]["lr"] == 0.02


def fastcnn_train():
    from fastcnn import train

    return train


def test_collapsing_run_exits_1_and_saves_nothing(capsys, tmp_path, digits_run):
    """--lr 50 used to end at chance level with exit status 0."""
    code, out, err = run([*digits_run, "--lr", "50", "--save", "w.npz"], capsys)
    assert code == 1
    assert err.startswith(
        "fastcnn train: error: fit: training diverged in epoch 1: the loss stayed above its "
        "starting value "
    )
    assert (
        "nothing of this epoch was saved (no checkpoint of this run was written); lower the "
        "learning rate\nstart again with a --lr below 50.0\n"
    ) in err
    assert "test accuracy" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no checkpoint, no w.npz


def test_nan_keeps_the_good_checkpoint_and_resume_takes_a_lower_lr(capsys, tmp_path, digits_run):
    """The issue's sequence: a NaN, the advice to lower the rate, and that advice working."""
    ckpt = tmp_path / "checkpoints" / "digits.npz"
    good = [*digits_run, "--lr-schedule", "constant"]
    assert run([*good, "--epochs", "1"], capsys)[0] == 0
    before = ckpt.read_bytes()
    code, out, err = run([*good, "--epochs", "2", "--resume", "--lr", "1e30"], capsys)
    assert code == 1
    assert "learning rate changed on resume: 0.05 -> 1e+30" in out
    assert "fastcnn train: error: fit: training diverged in epoch 2: the " in err
    assert (
        "nothing of this epoch was saved (checkpoints/digits.npz still holds epoch 1); lower "
        "the learning rate\nto continue from epoch 1, run the same command with --resume and a "
        "--lr below 1e+30\n"
    ) in err
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["digits.npz"]  # lock released
    code, out, err = run([*good, "--epochs", "2", "--resume", "--lr", "0.01"], capsys)
    assert code == 0, err
    assert "learning rate changed on resume: 0.05 -> 0.01" in out
    assert "epoch 2/2  lr 0.01  train loss" in out
    state = fastcnn_train().load_checkpoint(ckpt)
    assert state["epoch"] == 2 and fastcnn_train().non_finite(state) == []


def test_disk_full_while_checkpointing_names_the_path(capsys, monkeypatch, tmp_path, digits_run):
    import fastcnn.io

    assert run([*digits_run, "--epochs", "1"], capsys)[0] == 0
    ckpt = tmp_path / "checkpoints" / "digits.npz"
    before = ckpt.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fastcnn.io.os, "fsync", full)
    code, _, err = run([*digits_run, "--epochs", "2", "--resume"], capsys)
    assert code == 1
    assert (
        "fastcnn train: error: [Errno 28] cannot save 'checkpoints/digits.npz': No space left "
        "on device\n"
    ) in err
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["digits.npz"]


def test_disk_full_on_save_points_to_the_checkpoint(capsys, monkeypatch, tmp_path, digits_run):
    import fastcnn.io

    real_save, real_fsync = fastcnn.io.save, os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save(state, path):  # the disk fills up for the --save file only
        if Path(path).name != "w.npz":
            return real_save(state, path)
        monkeypatch.setattr(os, "fsync", full)
        try:
            return real_save(state, path)
        finally:
            monkeypatch.setattr(os, "fsync", real_fsync)

    monkeypatch.setattr(fastcnn.io, "save", save)
    code, out, err = run([*digits_run, "--epochs", "1", "--save", "w.npz"], capsys)
    assert code == 1 and "test accuracy:" in out
    assert (
        "fastcnn train: error: [Errno 28] cannot save 'w.npz': No space left on device; the "
        "trained weights are in the checkpoint checkpoints/digits.npz\n"
    ) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


# --- which data a checkpoint was trained on ------------------------------------------------


def write_mnist(folder: Path, seed: int, gz: bool) -> Path:
    """A tiny MNIST-format data set (12 training, 5 test images) in ``folder``."""
    import gzip
    import struct

    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for prefix, n in (("train", 12), ("t10k", 5)):
        for kind, shape in (("images-idx3", (n, 28, 28)), ("labels-idx1", (n,))):
            top = 256 if kind.startswith("images") else 10
            array = rng.integers(0, top, size=shape, dtype=np.uint8)
            blob = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *shape)
            blob += array.tobytes()
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
    return folder


def test_resume_with_other_data_is_refused(capsys, monkeypatch, tmp_path, restore_threads):
    monkeypatch.chdir(tmp_path)
    first = write_mnist(tmp_path / "a", seed=0, gz=True)
    other = write_mnist(tmp_path / "b", seed=1, gz=False)  # also: decompressed IDX files
    copy = tmp_path / "a-moved"
    first.rename(copy)
    base = ["train", "--dataset", "mnist", "--threads", "1", "--no-progress", "--batch-size", "4"]
    assert run([*base, "--data-dir", str(copy), "--epochs", "1"], capsys)[0] == 0
    ckpt = tmp_path / "checkpoints" / "mnist.npz"
    before = ckpt.read_bytes()
    code, out, err = run([*base, "--data-dir", str(other), "--epochs", "2", "--resume"], capsys)
    assert code == 1
    assert (
        "fastcnn train: error: cannot resume from 'checkpoints/mnist.npz': it was trained on "
        "other data (labels_sha256: '"
    ) in err
    assert "resume with the data it was trained on, or use another checkpoint directory" in err
    assert ckpt.read_bytes() == before
    # the same data, wherever it now is, resumes
    code, out, err = run([*base, "--data-dir", str(copy), "--epochs", "2", "--resume"], capsys)
    assert code == 0, err
    assert "after epoch 1" in out and "epoch 2/2" in out


def test_folder_of_decompressed_idx_files_trains(capsys, monkeypatch, tmp_path, restore_threads):
    """It used to say "MNIST is not in ..." for gunzipped files."""
    monkeypatch.chdir(tmp_path)
    folder = write_mnist(tmp_path / "plain", seed=0, gz=False)
    argv = ["train", "--dataset", "mnist", "--data-dir", str(folder), "--epochs", "1"]
    code, out, err = run([*argv, "--threads", "1", "--no-checkpoint", "--batch-size", "4"], capsys)
    assert code == 0, err
    assert "training on mnist: 12 train / 5 test images" in out
