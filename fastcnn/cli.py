"""The ``fastcnn`` command: ``fastcnn train``, ``info``, ``warmup`` and ``bench``.

Exit codes: 0 success, 1 a runtime error (missing or corrupt data or checkpoint, failed
download, diverged training), 2 a usage error or a missing optional extra, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

TRAIN_EXTRA = "pip install 'fastcnn[train]'"

#: Per-dataset defaults of ``fastcnn train`` (any option given on the command line wins).
DEFAULTS = {
    "digits": {"epochs": 10, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
    "mnist": {"epochs": 1, "batch_size": 64, "lr": 0.05, "momentum": 0.9},
}
_ADAM_LR = 1e-3


class UsageError(Exception):
    """A problem the user fixes by changing the command (exit code 2)."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser(bench_options: bool = True) -> argparse.ArgumentParser:
    """Return the ``fastcnn`` argument parser with its ``train``/``info``/``bench`` commands.

    ``bench_options=False`` leaves out the options of ``fastcnn bench``, whose module
    (:mod:`fastcnn.bench`) is then not imported.
    """
    from fastcnn import __version__

    parser = argparse.ArgumentParser(
        prog="fastcnn",
        description="Train and benchmark convolutional networks on the CPU with Numba kernels.",
    )
    parser.add_argument("--version", action="version", version=f"fastcnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train",
        help="train a LeNet-style CNN (default: the bundled 8x8 digits)",
        description=(
            "Train a LeNet-style CNN and report the test accuracy after every epoch. "
            "A checkpoint is written after each epoch; --resume continues from it. "
            "Defaults: digits "
            + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in DEFAULTS["digits"].items())
            + "; mnist "
            + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in DEFAULTS["mnist"].items())
            + f"; adam lr {_ADAM_LR}."
        ),
    )
    data = train.add_argument_group("data")
    data.add_argument("--dataset", choices=sorted(DEFAULTS), default="digits")
    data.add_argument(
        "--data-dir", metavar="DIR", help="folder of the MNIST .gz files (default: user cache)"
    )
    data.add_argument(
        "--download", action="store_true", help="fetch missing MNIST files (sha256-checked)"
    )
    opt = train.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=_positive_int, metavar="N")
    opt.add_argument("--batch-size", type=_positive_int, metavar="N")
    opt.add_argument("--lr", type=_positive_float, metavar="LR", help="learning rate")
    opt.add_argument("--optimizer", choices=["sgd", "adam"], help="(default: sgd)")
    opt.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine"],
        help="cosine: anneal the learning rate towards 0 over the epochs, set once an epoch "
        "(default); constant: keep it",
    )
    opt.add_argument("--momentum", type=_non_negative_float, metavar="M", help="SGD momentum")
    opt.add_argument(
        "--batchnorm",
        action="store_true",
        default=None,
        help="add BatchNorm2d after each convolution",
    )
    opt.add_argument("--seed", type=int, help="seed of weights and batch order (default: 0)")
    opt.add_argument(
        "--threads", type=_positive_int, metavar="N", help="kernel threads (default: all cores)"
    )
    out = train.add_argument_group("output")
    out.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        default="checkpoints",
        help="where the per-epoch checkpoint is written (default: ./checkpoints)",
    )
    out.add_argument("--no-checkpoint", action="store_true", help="do not write checkpoints")
    out.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir"
    )
    out.add_argument("--save", metavar="PATH", help="save the trained weights (.npz)")
    out.add_argument(
        "--plot", metavar="PNG", help="plot loss and accuracy curves (needs matplotlib)"
    )
    out.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="per-batch progress bar (default: only on a terminal)",
    )
    train.set_defaults(handler=_train)

    info = commands.add_parser(
        "info", help="versions, threads, CPU features; the conv plan for given shapes"
    )
    info.add_argument(
        "--plan",
        action="append",
        metavar="N,C,H,W:K,KH,KW[:stride=S][:padding=P][:dilation=D]",
        help="print which conv kernel runs each direction of this convolution (repeatable)",
    )
    info.set_defaults(handler=_info)

    warm = commands.add_parser(
        "warmup",
        help="compile kernels ahead of use, in parallel worker processes",
        description="Compile fastcnn's kernels for this CPU into Numba's cache, one worker "
        "process per core, so that later runs start at once. Default: every kernel in "
        "both dtypes.",
    )
    warm.add_argument(
        "--for",
        dest="target",
        choices=["all", "lenet"],
        default="all",
        help="every kernel (default) or what fastcnn train's LeNet needs",
    )
    warm.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
    warm.add_argument("--workers", type=_positive_int, metavar="N", help="(default: one per core)")
    warm.set_defaults(handler=_warmup)

    bench = commands.add_parser(
        "bench", help="time the kernels against the NumPy reference (and torch, if installed)"
    )
    if bench_options:
        from fastcnn import bench as bench_module

        bench_module.add_arguments(bench)
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``fastcnn`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(bench_options="bench" in argv)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"fastcnn {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastcnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, FloatingPointError) as exc:
        print(f"fastcnn {args.command}: error: {exc}", file=sys.stderr)
        return 1


# --- info and bench ------------------------------------------------------------------


def _info(args) -> int:
    from fastcnn import _info
    from fastcnn.data import cache_dir

    if args.plan:
        try:
            plans = [_info.format_plan(_info.parse_conv(spec)) for spec in args.plan]
        except ValueError as exc:
            raise UsageError(f"--plan: {exc}") from None
        print("\n".join(plans))
        return 0
    print(_info.format_info())
    print(f"data cache: {cache_dir()}")
    return 0


def _warmup(args) -> int:
    from fastcnn import warmup

    names = warmup.LENET if args.target == "lenet" else None
    dtypes = warmup.DTYPES if args.dtype == "both" else (args.dtype,)
    jobs = warmup.jobs(names, dtypes)
    try:
        seconds = warmup.warmup(jobs, workers=args.workers)
    except RuntimeError as exc:
        print(f"fastcnn warmup: {exc}", file=sys.stderr)
        return 1
    print(f"compiled {len(jobs)} workloads in {seconds:.1f} s; later runs load them from the cache")
    return 0


def _bench(args) -> int:
    from fastcnn import bench

    return bench.run(args)


# --- train ---------------------------------------------------------------------------


_SETTINGS = (
    "optimizer", "batchnorm", "seed", "epochs", "batch_size", "lr", "lr_schedule", "momentum",
)  # fmt: skip


def _settings(args, saved: dict | None = None) -> dict:
    """The training settings: the options given, over ``saved`` (a resumed run's) or defaults."""
    given = {key: getattr(args, key) for key in _SETTINGS if getattr(args, key) is not None}
    if saved is None:
        optimizer = given.get("optimizer", "sgd")
        base = {
            "dataset": args.dataset,
            "optimizer": optimizer,
            "lr_schedule": "cosine",
            "batchnorm": False,
            "seed": 0,
        }
        base.update(DEFAULTS[args.dataset])
        if optimizer == "adam":
            base["lr"] = _ADAM_LR
            del base["momentum"]
    else:
        base = dict(saved)
    if given.get("optimizer", base.get("optimizer")) == "adam" and "momentum" in given:
        raise UsageError("--momentum applies to --optimizer sgd only")
    return {**base, **given}


def _load_data(args):
    from fastcnn import data

    if args.dataset == "digits":
        try:
            return data.load_digits(train=True), data.load_digits(train=False)
        except ImportError as exc:
            raise UsageError(f"{exc}, or train on MNIST with --dataset mnist") from exc
    root = args.data_dir
    try:
        train = data.load_mnist(root, train=True, download=args.download)
        test = data.load_mnist(root, train=False, download=args.download)
    except FileNotFoundError as exc:
        where = root or data.cache_dir() / "mnist"
        raise UsageError(
            f"{exc}.\nMNIST is not in {where}: add --download to fetch it (11 MB), or point "
            "--data-dir at a folder holding the four original .gz files"
        ) from None
    return train, test


def _import_pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise UsageError(f"--plot needs matplotlib: {TRAIN_EXTRA}") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _train(args) -> int:
    import numpy as np

    import fastcnn
    from fastcnn import nn, optim, train

    plt = _import_pyplot() if args.plot else None
    checkpoint = None if args.no_checkpoint else Path(args.checkpoint_dir) / f"{args.dataset}.npz"
    saved = None
    if args.resume:
        if checkpoint is None:
            raise UsageError("--resume needs a checkpoint: drop --no-checkpoint")
        if not checkpoint.exists():
            raise UsageError(f"--resume: no checkpoint at {checkpoint}")
        saved = train.load_checkpoint(checkpoint)["config"]
    config = _settings(args, saved)
    fastcnn.keep_freed_memory()  # every step frees and reallocates the same arrays
    (x, y), (xt, yt) = _load_data(args)
    if args.threads is not None:
        fastcnn.set_num_threads(args.threads)

    init_seed, order_seed = np.random.SeedSequence(config["seed"]).spawn(2)
    model = train.lenet(
        x.shape[1:], 10, batchnorm=config["batchnorm"], rng=np.random.default_rng(init_seed)
    )
    if config["optimizer"] == "sgd":
        optimizer = optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    else:
        optimizer = optim.Adam(model.parameters(), lr=config["lr"])
    schedule = None
    if config["lr_schedule"] == "cosine":
        schedule = optim.CosineSchedule(config["lr"], config["epochs"])
    print(
        f"training on {args.dataset}: {len(y)} train / {len(yt)} test images, "
        f"{config['epochs']} epochs, batch {config['batch_size']}, {config['optimizer']} "
        f"lr {config['lr']} ({config['lr_schedule']}), {fastcnn.get_num_threads()} threads",
        flush=True,
    )
    t0 = time.perf_counter()
    history = train.fit(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        (x, y),
        (xt, yt),
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        rng=np.random.default_rng(order_seed),
        checkpoint=checkpoint,
        resume=args.resume,
        config=config,
        lr_schedule=schedule,
        progress=args.progress,
        log=lambda line: print(line, flush=True),
    )
    seconds = time.perf_counter() - t0
    accuracy = history[-1]["test_accuracy"] if history else train.evaluate(model, xt, yt)
    print(
        f"test accuracy: {100 * accuracy:.2f}% ({args.dataset}, {len(history)} epochs, "
        f"{seconds:.1f} s)"
    )
    if args.save:
        fastcnn.save(model.state_dict(), args.save)
        print(f"saved the weights to {args.save}")
    if plt is not None:
        _plot(plt, history, args.plot)
        print(f"saved the curves to {args.plot}")
    return 0


def _plot(plt, history: list[dict], path: str) -> None:
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    ax_acc.plot(epochs, [100 * (r["test_accuracy"] or 0) for r in history], marker="o")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.savefig(os.fspath(path), dpi=120)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
