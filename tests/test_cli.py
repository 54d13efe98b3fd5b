"""The ``fastcnn`` command: help, info, argument errors, missing extras, data errors."""

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
        param(["train", "--seed", "1.5"], "--seed: invalid int value", id="seed"),
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
        param(["train"], "sklearn.datasets", "pip install 'fastcnn[train]'", id="digits"),
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
    code, _, err = run(["train", "--resume", "--epochs", "3", "--lr", "0.5"], capsys)
    assert code == 1 and "lr: 0.02 -> 0.5" in err
    code, _, err = run(["train", "--resume", "--epochs", "3", "--lr-schedule", "cosine"], capsys)
    assert code == 1 and "lr_schedule: 'constant' -> 'cosine'" in err


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
