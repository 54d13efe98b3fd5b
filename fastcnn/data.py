"""Datasets and batching: scikit-learn's bundled digits, MNIST, and a batch iterator.

Every loader returns one split as ``(images, labels)``: images float32 ``(N, 1, H, W)``
scaled to ``[0, 1]`` (NCHW, C-contiguous), labels int64 ``(N,)``.

MNIST is read from the four original IDX gzip files, or from their decompressed versions
(``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``). :func:`load_mnist` with
``download=True`` fetches the missing ones once into a folder (by default
:func:`cache_dir` ``/ "mnist"``), checks each against its published sha256 and only then
moves it into place: a failed or corrupted download leaves no file behind.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.util
import os
import struct
import tempfile
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: Where ``download=True`` fetches from unless ``base_url`` or ``$FASTCNN_MNIST_URL`` say
#: otherwise (the mirror torchvision uses; the original site no longer serves the files).
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

#: sha256 of each original MNIST file, byte for byte as published.
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",  # noqa: E501
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",  # noqa: E501
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

_SPLITS = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_UBYTE = 0x08
_CHUNK = 1 << 16
_TRAIN_EXTRA = "pip install 'fastcnn[train]'"


def cache_dir() -> Path:
    """Return fastcnn's user cache folder (not created).

    ``$FASTCNN_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fastcnn``, else
    ``~/.cache/fastcnn``. Downloaded data go there. When ``FASTCNN_CACHE_DIR`` is set,
    its ``numba`` subfolder also holds the compiled kernels (unless ``NUMBA_CACHE_DIR`` is
    set; see :mod:`fastcnn._cache`).
    """
    if os.environ.get("FASTCNN_CACHE_DIR"):
        return Path(os.environ["FASTCNN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fastcnn"


# --- scikit-learn's digits ---------------------------------------------------------


def load_digits(train: bool = True, *, test_fraction: float = 0.2, seed: int = 0):
    """Load one split of scikit-learn's bundled 8x8 handwritten digits (no network).

    The 1797 images are split by a permutation drawn from ``seed``: the same seed gives
    the same split, and the train and test splits of one seed never overlap.

    Returns ``(images, labels)``: float32 ``(N, 1, 8, 8)`` in ``[0, 1]`` and int64 ``(N,)``.
    Raises ``ImportError`` naming the extra to install if scikit-learn is missing.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"load_digits: test_fraction must be in (0, 1), got {test_fraction!r}")
    pixels, labels = _digits()
    images = (pixels.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    labels = labels.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(len(labels) * test_fraction)
    part = order[n_test:] if train else order[:n_test]
    part = np.sort(part)  # keep the dataset's own order within a split
    return np.ascontiguousarray(images[part]), labels[part]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(pixels (1797, 64), labels (1797,))``: read from the CSV
    file scikit-learn ships, without importing scikit-learn (a second of CPU, which the
    kernels compiling for ``fastcnn train`` at the same time can use); through its loader
    if the file is not where it has always been."""
    spec = importlib.util.find_spec("sklearn")  # locates the package, imports nothing
    if spec is None or spec.origin is None:
        raise ImportError(f"the digits dataset needs scikit-learn: {_TRAIN_EXTRA}")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        data = np.loadtxt(path, delimiter=",")
        return data[:, :-1], data[:, -1]
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return bunch.data, bunch.target


# --- MNIST ---------------------------------------------------------------------------


def load_mnist(
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
    *,
    base_url: str | None = None,
    progress: bool | None = None,
):
    """Load the MNIST training (60000) or test (10000) split from its IDX gzip files.

    ``root`` is the folder holding ``train-images-idx3-ubyte.gz`` and the three other
    original files (default ``cache_dir() / "mnist"``); each may also be there
    decompressed, as ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte`` (the
    ``.gz`` is read first if both are). With ``download=True`` the files missing from
    ``root`` (in every form) are fetched from ``base_url`` (default
    ``$FASTCNN_MNIST_URL`` or :data:`MNIST_URL`), checked against :data:`MNIST_SHA256`
    and renamed into place only if they match; ``progress`` shows a tqdm bar (``None``:
    only on a terminal).

    Returns ``(images, labels)``: float32 ``(N, 1, 28, 28)`` in ``[0, 1]`` and int64
    ``(N,)``. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a
    corrupt one, naming its path.
    """
    root = Path(root).expanduser() if root is not None else cache_dir() / "mnist"
    image_name, label_name = _SPLITS[bool(train)]
    if download:
        url = base_url or os.environ.get("FASTCNN_MNIST_URL") or MNIST_URL
        for name in (image_name, label_name):
            if _find_idx(root, name) is None:
                download_file(_join_url(url, name), root / name, MNIST_SHA256[name], progress)
    image_path, label_path = (_find_idx(root, n) or root / n for n in (image_name, label_name))
    images = read_idx(image_path, ndim=3)
    labels = read_idx(label_path, ndim=1)
    if len(images) != len(labels):
        raise ValueError(
            f"load_mnist: {image_path} holds {len(images)} images but "
            f"{label_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"load_mnist: {label_path} holds a label > 9")
    x = images.astype(np.float32)[:, None, :, :]
    x /= np.float32(255)  # exactly rounded, as torchvision's ToTensor
    return x, labels.astype(np.int64)


def _idx_names(name: str) -> tuple[str, ...]:
    """The names one original MNIST file may have: as published, then decompressed, with
    a dash or with the dot that the name stored inside the gzip header has."""
    plain = name.removesuffix(".gz")
    return (name, plain, plain.replace("-idx", ".idx", 1))


def _find_idx(root: Path, name: str) -> Path | None:
    """The first of :func:`_idx_names` that is a file in ``root``, or ``None``."""
    return next((root / n for n in _idx_names(name) if (root / n).is_file()), None)


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file, gzip-compressed or not, as a uint8 array.

    Checks the magic number, the number of dimensions (against ``ndim`` if given) and
    that the payload holds exactly the bytes the header announces.
    Raises ``FileNotFoundError`` or ``ValueError`` naming ``path``.
    """
    path = Path(path)
    if not path.is_file():
        others = [n for n in _idx_names(path.name)[1:] if n != path.name]
        also = f" (nor {' or '.join(others)})" if path.name.endswith(".gz") else ""
        raise FileNotFoundError(
            f"{path} not found{also}; pass download=True, or --download on the command "
            "line, to fetch the MNIST files"
        )
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
        opener = gzip.open if compressed else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path} is not a readable gzip file: {exc}") from exc
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != _IDX_UBYTE:
        raise ValueError(
            f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex() or 'missing'})"
        )
    dims = data[3]
    if ndim is not None and dims != ndim:
        raise ValueError(f"{path}: expected an IDX file of {ndim} dimensions, found {dims}")
    header = 4 + 4 * dims
    if len(data) < header:
        raise ValueError(f"{path} is truncated: the IDX header is incomplete")
    shape = struct.unpack(f">{dims}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise ValueError(
            f"{path} holds {len(data)} bytes but its IDX header {shape} announces {expected}"
            + (" (truncated)" if len(data) < expected else "")
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _join_url(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def download_file(url: str, path: str | os.PathLike, sha256: str, progress=None) -> Path:
    """Fetch ``url`` into ``path`` if and only if its sha256 is ``sha256``.

    The bytes go to a temporary file beside ``path``, are hashed on the way, flushed to
    disk and renamed to ``path`` only after the checksum matches; on any failure (HTTP
    error, lost connection, wrong checksum, interruption) the temporary file is removed
    and ``path`` is left as it was. Returns ``path``; raises ``OSError`` (network) or
    ``ValueError`` (checksum mismatch) naming the url.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                _fetch(url, out, digest, path.name, progress)
            except (OSError, http.client.HTTPException) as exc:
                raise OSError(f"could not download {url}: {exc!r}") from exc
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise ValueError(
                f"download of {url} is corrupt: sha256 {digest.hexdigest()}, "
                f"expected {sha256}; nothing was saved"
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fetch(url, out, digest, desc, progress) -> None:
    from tqdm import tqdm

    received = 0
    with urllib.request.urlopen(url, timeout=60) as response:
        total = response.headers.get("Content-Length")
        with tqdm(
            total=int(total) if total else None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=None if progress is None else not progress,
            leave=False,
        ) as bar:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
                received += len(chunk)
    if total and received != int(total):
        raise OSError(f"connection closed after {received} of {total} bytes")


# --- batching ------------------------------------------------------------------------


def iterate_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x_batch, y_batch)`` pairs covering ``x`` and ``y`` once (one epoch).

    With ``shuffle=True`` the order is one permutation drawn from ``rng`` (a
    ``numpy.random.Generator``, required; its state advances by exactly one
    permutation per epoch), otherwise the data's own order. Batches are C-contiguous;
    the last one is smaller unless ``drop_last``. ``x`` and ``y`` must have the same
    length along axis 0.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"iterate_batches: x has {n} samples but y has {len(y)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"iterate_batches: batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"iterate_batches: batch_size must be >= 1, got {batch_size}")
    if shuffle and not isinstance(rng, np.random.Generator):
        raise TypeError(
            "iterate_batches: rng must be a numpy.random.Generator when shuffle=True, "
            f"got {type(rng).__name__}"
        )
    order = rng.permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            batch = slice(start, start + batch_size)
            yield np.ascontiguousarray(x[batch]), np.ascontiguousarray(y[batch])
        else:
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]
