"""Smoke tests: every script of examples/ runs to the end on small sizes.

Each runs in a subprocess, as a newcomer runs it, with few epochs and images. MNIST comes
from ../shared/data/mnist where it exists; the digits fallback is exercised by pointing
``--data-dir`` at an empty folder. A script whose optional dependency (SciPy for the
scratch classes, torch, scikit-learn for the digits) is missing is skipped, naming it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def needs(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def run(script, *args):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("data", ["mnist", "digits"])
def test_binary_mnist_runs_both_versions_and_prints_their_times(data, tmp_path):
    needs("scipy", *(["sklearn"] if data == "digits" else []))
    if data == "mnist" and not (MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"no MNIST in {MNIST}")
    data_dir = MNIST if data == "mnist" else tmp_path
    out = run(
        "binary_mnist.py", "--epochs", 1, "--limit", 4, "--threads", 1, "--data-dir", data_dir
    )
    assert out.startswith("MNIST:" if data == "mnist" else "scikit-learn's 8x8 digits")
    rows = [line for line in out.splitlines() if line.endswith("%")]
    names = ["from scratch (NumPy + SciPy)", "fastcnn.compat (float64)"]
    if importlib.util.find_spec("torch") is not None:
        names.append("torch, per sample (float64)")
    assert [row[:34].rstrip() for row in rows] == names
    assert "trained" in out.splitlines()[-2] and "first step" in out.splitlines()[-1]


def test_train_lenet_runs():
    needs("sklearn")
    out = run(
        "train_lenet.py", "--data-dir", EXAMPLES / "no-such-folder", "--epochs", 1, "--limit", 256
    )
    assert "epoch 1/1" in out and out.splitlines()[-1].startswith("test accuracy ")


@pytest.mark.parametrize("layer, batch", [("conv", 2), ("linear", 1), ("lenet", 1)])
def test_time_layer_runs(layer, batch):
    needs("torch")
    out = run("time_layer.py", "--layer", layer, "--batch", batch, "--threads", 1, "--repeat", 2)
    assert "fastcnn/torch" in out.splitlines()[-1]
