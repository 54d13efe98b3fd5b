"""The ``fastcnn`` command: ``fastcnn train``, ``info``, ``warmup`` and ``bench``.

Exit codes: 0 success, 1 a runtime error (missing or corrupt data or checkpoint, failed
download or write, diverged training, a checkpoint folder in use by another run), 2 a
usage error (a bad option value, reported as argparse reports its own) or a missing
optional extra, 130 Ctrl-C.

``fastcnn train`` checks every option before it loads data or trains: numbers finite
and representable in float32 (the training dtype), ``--threads`` within the threads
available, output paths writable and not folders, the checkpoint file not shared with
``--save``, an existing checkpoint not replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

TRAIN_EXTRA = "pip install 'fastcnn[train]'"

#: Per-dataset defaults of ``fastcnn train`` (any option given on the command line wins).
DEFAULTS = {
    "digits": {"epochs": 10, "batch_size": 32, "lr": 0.05, "momentum": 0.9},
    "mnist": {"epochs": 1, "batch_size": 64, "lr": 0.05, "momentum": 0.9},
}
_ADAM_LR = 1e-3
_LOCK_NAME = "fastcnn.lock"  # fastcnn._lock.LOCK_NAME, without importing it for --help


#: The training dtype: every number given to ``fastcnn train`` must be finite in it.
TRAIN_DTYPE = "float32"

CACHE_HELP = (
    "Compiled kernels are cached on disk so that the next process starts without "
    "compiling: in $NUMBA_CACHE_DIR if set, else in $FASTCNN_CACHE_DIR/numba if "
    "FASTCNN_CACHE_DIR is set, else beside fastcnn's modules or in ~/.cache/numba. A "
    "damaged cache entry is removed and recompiled; if the cache folder cannot be "
    "written, kernels are compiled in memory (one line on stderr says so). `fastcnn "
    "info` shows where the cache is. Downloaded data go to $FASTCNN_CACHE_DIR (default "
    "~/.cache/fastcnn)."
)


class UsageError(Exception):
    """A problem the user fixes by changing the command (exit code 2)."""


class ArgumentError(UsageError):
    """A bad option value, reported as argparse reports its own: the command's usage
    line, then ``fastcnn COMMAND: error: argument --OPTION: ...`` (exit code 2)."""

    def __init__(self, option: str, message: str):
        super().__init__(f"argument {option}: {message}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _as_train_dtype(text: str, value: float) -> float:
    """``value`` if finite and, unless 0, neither overflowing nor rounding to 0 in float32."""
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    rounded = struct.unpack("f", struct.pack("f", value))[0]
    if math.isinf(rounded):
        raise argparse.ArgumentTypeError(
            f"{text} overflows {TRAIN_DTYPE}, the training dtype (largest finite value 3.40282e+38)"
        )
    if value != 0 and rounded == 0:
        raise argparse.ArgumentTypeError(f"{text} rounds to 0 in {TRAIN_DTYPE}, the training dtype")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return _as_train_dtype(text, value)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return _as_train_dtype(text, value)


def build_parser(bench_options: bool = True) -> argparse.ArgumentParser:
    """Return the ``fastcnn`` argument parser with its ``train``/``info``/``bench`` commands.

    ``bench_options=False`` leaves out the options of ``fastcnn bench``, whose module
    (:mod:`fastcnn.bench`) is then not imported.
    """
    from fastcnn import __version__

    parser = argparse.ArgumentParser(
        prog="fastcnn",
        description="Train and benchmark convolutional networks on the CPU with Numba kernels.",
        epilog=CACHE_HELP,
    )
    parser.add_argument("--version", action="version", version=f"fastcnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train",
        help="train a LeNet-style CNN (default: the bundled 8x8 digits)",
        description=(
            "Train a LeNet-style CNN and report the test accuracy after every epoch. "
            "A checkpoint is written after each epoch; --resume continues from it. "
            "Every option is checked before any data loads. The checkpoint folder is locked "
            "while a run uses it; a run that diverges (NaN or inf, or a loss above its "
            "starting value for a whole epoch) stops with exit status 1 and keeps the last "
            "good checkpoint, which --resume with a lower --lr continues. "
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
    opt.add_argument(
        "--seed", type=_non_negative_int, help="seed of weights and batch order (default: 0)"
    )
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
    fresh = out.add_mutually_exclusive_group()
    fresh.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint in --checkpoint-dir (with the same settings; "
        "--epochs and --lr may change)",
    )
    fresh.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh even if --checkpoint-dir holds a checkpoint (it is replaced "
        "after the first epoch)",
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
    train.set_defaults(handler=_train, command_parser=train)

    info = commands.add_parser(
        "info",
        help="versions, threads, kernel cache, CPU features; the conv plan for given shapes",
        description="Show what fastcnn runs on. " + CACHE_HELP,
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
    from fastcnn._lock import LockedError

    try:
        return args.handler(args)
    except ArgumentError as exc:
        args.command_parser.print_usage(sys.stderr)
        print(f"fastcnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"fastcnn {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastcnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, FloatingPointError, LockedError) as exc:
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
            "--data-dir at a folder holding the four original files (.gz or decompressed)"
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


def _probe_writable(option: str, folder: Path) -> None:
    """Raise ArgumentError unless a file can be created in ``folder`` (an existing folder)."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise ArgumentError(option, f"cannot write in {folder}: {exc.strerror or exc}") from None


def _check_output_file(option: str, path: str | None) -> Path | None:
    """An output file's path, checked: not empty, not a folder, in a writable folder."""
    if path is None:
        return None
    if not path.strip():
        raise ArgumentError(option, "the path is empty")
    file = Path(path).expanduser()
    if file.is_dir():
        raise ArgumentError(option, f"{path} is a folder; name a file in it")
    folder = file.parent
    if not folder.exists():
        raise ArgumentError(option, f"the folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise ArgumentError(option, f"{folder} is not a folder")
    _probe_writable(option, folder)
    return file


def _check_checkpoint_dir(path: str) -> Path:
    """The checkpoint folder, checked: a folder (or creatable), writable."""
    option = "--checkpoint-dir"
    if not path.strip():
        raise ArgumentError(option, "the path is empty")
    folder = Path(path).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = f"{path} is a file" if existing == folder else f"{existing} is a file"
        raise ArgumentError(option, f"{what}, not a folder")
    _probe_writable(option, existing)
    return folder


def _check_data_dir(args) -> None:
    """``--data-dir`` and ``--download``: for MNIST only; an existing folder, or with
    ``--download`` one that can be created."""
    for option, given in (("--data-dir", args.data_dir is not None), ("--download", args.download)):
        if given and args.dataset != "mnist":
            raise ArgumentError(option, "applies to --dataset mnist only")
    if args.data_dir is None:
        return
    folder = Path(args.data_dir).expanduser()
    if not args.data_dir.strip():
        raise ArgumentError("--data-dir", "the path is empty")
    if folder.exists() and not folder.is_dir():
        raise ArgumentError("--data-dir", f"{args.data_dir} is a file, not a folder")
    if not folder.exists() and not args.download:
        raise ArgumentError(
            "--data-dir", f"{args.data_dir} does not exist (add --download to fetch MNIST into it)"
        )
    if args.download:
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ArgumentError("--data-dir", f"{existing} is a file, not a folder")
        _probe_writable("--data-dir", existing)


def _same_file(a: Path | None, b: Path | None) -> bool:
    return a is not None and b is not None and os.path.realpath(a) == os.path.realpath(b)


def _check_plot_format(plot: Path) -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = plot.suffix[1:].lower()
    if suffix and suffix not in formats:
        raise ArgumentError(
            "--plot", f"unknown image format {plot.suffix!r} (one of {', '.join(sorted(formats))})"
        )


def _check_train_args(args) -> dict:
    """Check every option of ``fastcnn train`` before anything loads or trains.

    Raises ArgumentError (exit 2, naming the option) for a bad value; returns the checked
    paths: ``checkpoint`` (the checkpoint file, or None), ``save``, ``plot``.
    """
    if args.threads is not None:
        import numba

        available = numba.config.NUMBA_NUM_THREADS
        if args.threads > available:
            raise ArgumentError(
                "--threads",
                f"must be <= {available}, the threads available (NUMBA_NUM_THREADS), "
                f"got {args.threads}",
            )
    if args.resume and args.no_checkpoint:
        raise UsageError("--resume needs a checkpoint: drop --no-checkpoint")
    _check_data_dir(args)
    checkpoint = None
    if not args.no_checkpoint:
        checkpoint = _check_checkpoint_dir(args.checkpoint_dir) / f"{args.dataset}.npz"
        lock = checkpoint.parent / _LOCK_NAME
        for option, path in (("--save", args.save), ("--plot", args.plot)):
            if path and (_same_file(Path(path), checkpoint) or _same_file(Path(path), lock)):
                raise ArgumentError(
                    option,
                    f"{path} is the run's checkpoint file in --checkpoint-dir; name another file",
                )
    if args.save and args.plot and _same_file(Path(args.save), Path(args.plot)):
        raise ArgumentError("--plot", f"{args.plot} is also the --save file; name another file")
    save = _check_output_file("--save", args.save)
    plot = _check_output_file("--plot", args.plot)
    if plot is not None:
        _check_plot_format(plot)
    return {"checkpoint": checkpoint, "save": save, "plot": plot}


def _resume_or_start(args, checkpoint: Path | None) -> dict:
    """The run's settings; refuses (exit 2) before any data loads a resume that cannot
    work and a fresh run that would replace a checkpoint without ``--overwrite``."""
    from fastcnn import train

    saved = None
    if args.resume:
        if not checkpoint.exists():
            raise UsageError(f"--resume: no checkpoint at {checkpoint}")
        saved = train.load_checkpoint(checkpoint)["config"]
        missing = [key for key in ("dataset", *_SETTINGS) if key not in saved]
        if missing and not (saved.get("optimizer") == "adam" and missing == ["momentum"]):
            raise UsageError(
                f"--resume: {checkpoint} holds no settings of a `fastcnn train` run (no "
                f"{', '.join(missing)}); start afresh with --overwrite"
            )
    elif checkpoint is not None and checkpoint.exists() and not args.overwrite:
        raise ArgumentError(
            "--checkpoint-dir",
            f"{checkpoint} holds a checkpoint of an earlier run; add --resume to continue it, "
            "--overwrite to start afresh (it is replaced after the first epoch), or choose "
            "another --checkpoint-dir",
        )
    config = _settings(args, saved)
    if saved is not None:
        try:
            train.check_resume(checkpoint, saved, config)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return config


def _build(config: dict, image_shape: tuple[int, ...]):
    """The model, optimiser, schedule (or None) and batch-order generator of a run."""
    import numpy as np

    from fastcnn import optim, train

    init_seed, order_seed = np.random.SeedSequence(config["seed"]).spawn(2)
    model = train.lenet(
        image_shape, 10, batchnorm=config["batchnorm"], rng=np.random.default_rng(init_seed)
    )
    if config["optimizer"] == "sgd":
        optimizer = optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    else:
        optimizer = optim.Adam(model.parameters(), lr=config["lr"])
    schedule = None
    if config["lr_schedule"] == "cosine":
        schedule = optim.CosineSchedule(config["lr"], config["epochs"])
    return model, optimizer, schedule, np.random.default_rng(order_seed)


def _train(args) -> int:
    """``fastcnn train``: check every option, lock the checkpoint folder, then load the
    data and train (see the module docstring for the exit codes)."""
    import contextlib

    import fastcnn
    from fastcnn import _lock, nn, train

    plt = _import_pyplot() if args.plot else None
    paths = _check_train_args(args)
    checkpoint = paths["checkpoint"]

    def log(line: str) -> None:
        print(line, flush=True)

    lock = (
        _lock.lock_folder(checkpoint.parent, log=log)
        if checkpoint is not None
        else contextlib.nullcontext()
    )
    with lock:
        config = _resume_or_start(args, checkpoint)
        if args.threads is not None:
            fastcnn.set_num_threads(args.threads)
        fastcnn.keep_freed_memory()  # every step frees and reallocates the same arrays
        warming = _start_warmup(config)
        (x, y), (xt, yt) = _load_data(args)
        _finish_warmup(warming)
        model, optimizer, schedule, order_rng = _build(config, x.shape[1:])
        print(
            f"training on {args.dataset}: {len(y)} train / {len(yt)} test images, "
            f"{config['epochs']} epochs, batch {config['batch_size']}, {config['optimizer']} "
            f"lr {config['lr']} ({config['lr_schedule']}), {fastcnn.get_num_threads()} threads",
            flush=True,
        )
        t0 = time.perf_counter()
        try:
            history = train.fit(
                model,
                optimizer,
                nn.CrossEntropyLoss(),
                (x, y),
                (xt, yt),
                epochs=config["epochs"],
                batch_size=config["batch_size"],
                rng=order_rng,
                checkpoint=checkpoint,
                resume=args.resume,
                config=config,
                lr_schedule=schedule,
                progress=args.progress,
                log=log,
            )
        except train.TrainingDiverged as exc:
            raise FloatingPointError(_diverged_hint(exc, args, config)) from None
        seconds = time.perf_counter() - t0
        accuracy = history[-1]["test_accuracy"] if history else train.evaluate(model, xt, yt)
        print(
            f"test accuracy: {100 * accuracy:.2f}% ({args.dataset}, {len(history)} epochs, "
            f"{seconds:.1f} s)"
        )
        if paths["save"] is not None:
            _save_weights(model, paths["save"], checkpoint)
            print(f"saved the weights to {args.save}")
        if plt is not None:
            _plot(plt, history, paths["plot"])
            print(f"saved the curves to {args.plot}")
    return 0


def _start_warmup(config: dict):
    """The first time on this machine, compile the net's kernels in worker processes
    (``fastcnn warmup``) while the data load, loading each into this process as it is
    done; returns the future of it, or None."""
    from concurrent.futures import ThreadPoolExecutor

    from fastcnn import warmup

    names = list(warmup.LENET)
    if config.get("batchnorm"):
        names.append("batchnorm")
    if config.get("optimizer") == "adam":
        names.append("adam")
    jobs = warmup.jobs(names, (TRAIN_DTYPE,))
    if not warmup.needed(jobs):
        return None
    print("compiling the kernels for this CPU, once: later runs load them from the cache")
    pool = ThreadPoolExecutor(1, thread_name_prefix="fastcnn-warmup")
    future = pool.submit(warmup.warmup, jobs, progress=False, load=True)
    pool.shutdown(wait=False)  # the future still runs; _finish_warmup waits for it
    return future


def _finish_warmup(future) -> None:
    """Wait for :func:`_start_warmup`'s workers; if they failed, the kernels compile on
    first use instead (slower, one at a time)."""
    if future is None:
        return
    try:
        seconds = future.result()
    except (OSError, RuntimeError) as exc:
        first = str(exc).splitlines()[0]
        print(f"fastcnn train: warm-up failed ({first}); compiling on first use", file=sys.stderr)
    else:
        print(f"compiled the kernels in {seconds:.1f} s", flush=True)


def _diverged_hint(exc, args, config) -> str:
    """The message of a diverged run, with what continues it."""
    lower = f"a --lr below {config['lr']}"
    if exc.checkpoint is not None and exc.last_good_epoch > 0:
        instead = " (instead of --overwrite)" if args.overwrite else ""
        return (
            f"{exc}\nto continue from epoch {exc.last_good_epoch}, run the same command with "
            f"--resume{instead} and {lower}"
        )
    again = " and --overwrite" if exc.checkpoint is not None and exc.checkpoint.exists() else ""
    return f"{exc}\nstart again with {lower}{again}"


def _save_weights(model, path: Path, checkpoint: Path | None) -> None:
    """``--save``: the final weights, refused if not finite (fit checked each step)."""
    import fastcnn
    from fastcnn import train

    state = model.state_dict()
    bad = train.non_finite(state)
    if bad:
        raise FloatingPointError(f"not saving {path}: NaN or inf in {', '.join(bad[:5])}")
    try:
        fastcnn.save(state, path)
    except OSError as exc:
        kept = f"; the trained weights are in the checkpoint {checkpoint}" if checkpoint else ""
        raise OSError(f"{exc}{kept}") from exc


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
