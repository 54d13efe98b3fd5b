"""The tutorials' MNIST "0 against 1" classifier, from scratch and ported to fastcnn.

One conv layer with untied biases, sigmoid, a reshape to a column vector, two dense
layers, binary cross-entropy, trained one image at a time with
``layer.backward(grad, learning_rate)``. The program runs on the from-scratch
NumPy/SciPy classes of ``scratch_layers.py`` and again on ``fastcnn.compat``, which has
the same names, so the port is the import line::

    -from scratch_layers import Convolutional, Dense, Reshape, Sigmoid, train, predict, ...
    +from fastcnn.compat import Convolutional, Dense, Reshape, Sigmoid, train, predict, ...

Both start from the same weights (one ``np.random.seed``). Prints the training time, the
time per image and the test accuracy of each, and of the same per-sample loop in torch
if torch is installed.

    python examples/binary_mnist.py [--data-dir DIR] [--epochs 20] [--limit 100]
                                    [--threads N] [--float32] [--no-torch] [--verbose]

MNIST is read from ``--data-dir`` (default ``../shared/data/mnist`` beside the
repository); without it, scikit-learn's bundled 8x8 digits stand in.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import scratch_layers
from threadpoolctl import threadpool_limits

import fastcnn
import fastcnn.compat
from fastcnn.data import load_digits, load_mnist

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
LEARNING_RATE = 0.1


def prepare(images, labels, limit):
    """The first ``limit`` zeros and ones, shuffled: (N, 1, H, W) float32 images in [0, 1]
    and one-hot column targets (N, 2, 1), as the tutorial prepares them."""
    index = np.hstack([np.flatnonzero(labels == 0)[:limit], np.flatnonzero(labels == 1)[:limit]])
    index = np.random.permutation(index)  # noqa: NPY002 (the tutorial's global state)
    targets = np.eye(2, dtype=np.float32)[labels[index]].reshape(-1, 2, 1)
    return images[index], targets


def load(data_dir: Path, limit: int):
    if (data_dir / "train-images-idx3-ubyte.gz").exists():
        train, test, source = load_mnist(data_dir), load_mnist(data_dir, train=False), "MNIST"
    else:
        train, test = load_digits(), load_digits(train=False)
        source = f"scikit-learn's 8x8 digits (no MNIST in {data_dir})"
    return prepare(*train, limit), prepare(*test, limit), source


def build(lib, image_shape, dtype):
    """The tutorial's network, from the classes of ``lib``."""
    _, h, w = image_shape
    flat = 5 * (h - 2) * (w - 2)
    options = {"dtype": dtype} if dtype != np.float64 else {}  # scratch has float64 only
    return [
        lib.Convolutional(image_shape, 3, 5, **options),
        lib.Sigmoid(),
        lib.Reshape((5, h - 2, w - 2), (flat, 1)),
        lib.Dense(flat, 100, **options),
        lib.Sigmoid(),
        lib.Dense(100, 2, **options),
        lib.Sigmoid(),
    ]


def run(lib, train, test, args, dtype):
    """Train the network from seed 0; return the seconds it took, the test accuracy and
    the seconds of a first step on a throwaway network (for fastcnn, loading its kernels
    from Numba's disk cache, or compiling them on the very first run: not training)."""
    (x_train, y_train), (x_test, y_test) = train, test
    loss, loss_prime = lib.binary_cross_entropy, lib.binary_cross_entropy_prime
    np.random.seed(1)  # noqa: NPY002
    start = time.perf_counter()
    lib.train(
        build(lib, x_train.shape[1:], dtype),
        loss,
        loss_prime,
        x_train[:1],
        y_train[:1],
        epochs=1,
        learning_rate=LEARNING_RATE,
        verbose=False,
    )
    first_step = time.perf_counter() - start
    np.random.seed(0)  # noqa: NPY002
    network = build(lib, x_train.shape[1:], dtype)
    start = time.perf_counter()
    lib.train(
        network,
        loss,
        loss_prime,
        x_train,
        y_train,
        epochs=args.epochs,
        learning_rate=LEARNING_RATE,
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - start
    outputs = np.stack([lib.predict(network, x) for x in x_test])
    return seconds, np.mean(outputs.argmax(axis=1) == y_test.argmax(axis=1)), first_step


def run_torch(train, test, init, args, dtype):
    """The same network and per-sample loop in torch, from the weights ``init``."""
    import torch

    torch.set_num_threads(args.threads)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    params = [torch.tensor(a, dtype=tdtype, requires_grad=True) for a in init]
    kernels, biases, w1, b1, w2, b2 = params
    (x_train, y_train), (x_test, y_test) = [
        (torch.tensor(x, dtype=tdtype), torch.tensor(y, dtype=tdtype)) for x, y in (train, test)
    ]

    def forward(x):
        h = torch.sigmoid(torch.nn.functional.conv2d(x[None], kernels)[0] + biases)
        h = torch.sigmoid(w1 @ h.reshape(-1, 1) + b1)
        return torch.sigmoid(w2 @ h + b2)

    forward(x_train[0])  # warm-up
    start = time.perf_counter()
    for _ in range(args.epochs):
        for x, y in zip(x_train, y_train, strict=True):
            p = forward(x)
            torch.mean(-y * torch.log(p) - (1 - y) * torch.log(1 - p)).backward()
            with torch.no_grad():
                for t in params:
                    t -= LEARNING_RATE * t.grad
                    t.grad = None
    seconds = time.perf_counter() - start
    with torch.no_grad():
        outputs = torch.stack([forward(x) for x in x_test]).numpy()
    return seconds, np.mean(outputs.argmax(axis=1) == y_test.numpy().argmax(axis=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--limit", type=int, default=100, help="images per class and split")
    parser.add_argument("--threads", type=int, default=fastcnn.get_num_threads())
    parser.add_argument("--float32", action="store_true", help="fastcnn and torch in float32")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print every epoch's error")
    args = parser.parse_args(argv)

    fastcnn.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # NumPy's BLAS, for the scratch classes
    np.random.seed(0)  # noqa: NPY002
    train, test, source = load(args.data_dir, args.limit)
    dtype = np.float32 if args.float32 else np.float64
    n_steps = args.epochs * len(train[0])
    print(
        f"{source}: {len(train[0])} training and {len(test[0])} test images, "
        f"{args.epochs} epochs, {args.threads} thread(s)"
    )
    print(f"{'implementation':<34} {'training':>9} {'per image':>10} {'accuracy':>9}")

    def row(name, seconds, accuracy):
        per_image = 1e3 * seconds / max(n_steps, 1)
        print(f"{name:<34} {seconds:8.2f}s {per_image:7.3f} ms {100 * accuracy:8.1f}%")

    s_time, s_acc, _ = run(scratch_layers, train, test, args, np.float64)
    row("from scratch (NumPy + SciPy)", s_time, s_acc)
    f_time, f_acc, f_first = run(fastcnn.compat, train, test, args, dtype)
    row(f"fastcnn.compat ({np.dtype(dtype).name})", f_time, f_acc)
    if not args.no_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch is not installed: no torch row")
        else:
            np.random.seed(0)  # noqa: NPY002
            net = build(fastcnn.compat, train[0].shape[1:], np.float64)
            init = [
                net[0].kernels,
                net[0].biases,
                net[3].weights,
                net[3].bias,
                net[5].weights,
                net[5].bias,
            ]
            t_time, t_acc = run_torch(train, test, init, args, dtype)
            row(f"torch, per sample ({np.dtype(dtype).name})", t_time, t_acc)
    print(
        f"fastcnn.compat trained {s_time / f_time:.1f}x as fast as the scratch classes "
        "(same start; per-sample steps amplify round-off, so the weights end apart);\n"
        f"its first step, before the timing, took {f_first:.2f} s (loading its kernels "
        "from Numba's cache, or compiling them on a first run)"
    )


if __name__ == "__main__":
    main()
