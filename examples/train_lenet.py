"""Train fastcnn's LeNet on MNIST (or scikit-learn's 8x8 digits) from Python.

    python examples/train_lenet.py [--data-dir DIR] [--epochs 3] [--limit N]

MNIST is read from ``--data-dir`` (default ``../shared/data/mnist`` beside the
repository); without it, the bundled digits stand in. ``--limit`` trains on the first N
images only.
"""

import argparse
from pathlib import Path

import numpy as np

from fastcnn import nn, optim
from fastcnn.data import load_digits, load_mnist
from fastcnn.train import evaluate, fit, lenet

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument(
    "--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/mnist"
)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--limit", type=int, default=None, help="train on the first N images")
args = parser.parse_args()

if (args.data_dir / "train-images-idx3-ubyte.gz").exists():
    (x, y), test = load_mnist(args.data_dir), load_mnist(args.data_dir, train=False)
else:
    (x, y), test = load_digits(), load_digits(train=False)
model = lenet(x.shape[1:], rng=0)  # conv-pool-relu x2, then two dense layers; float32
optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
train = (x[: args.limit], y[: args.limit])
fit(
    model,
    optimizer,
    nn.CrossEntropyLoss(),
    train,
    test,
    epochs=args.epochs,
    batch_size=64,
    rng=np.random.default_rng(0),
    progress=False,
)
print(f"test accuracy {100 * evaluate(model, *test):.2f}% on {len(test[1])} images")
