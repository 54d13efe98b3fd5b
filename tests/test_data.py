"""fastcnn.data: IDX parsing, verified MNIST download, bundled digits, batching."""

import gzip
import hashlib
import http.server
import importlib.util
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from pytest import param

from fastcnn import data

MNIST_DIR = Path(__file__).parents[1].parent / "shared/data/mnist"
needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(), reason="real MNIST files absent"
)
NAMES = sorted(data.MNIST_SHA256)


def idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    """Raw IDX bytes for a uint8 array; ``magic`` replaces the 4-byte magic number."""
    header = magic or bytes([0, 0, 0x08, array.ndim])
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def synthetic_mnist(n_train=7, n_test=3, seed=0) -> dict[str, bytes]:
    """The four MNIST file names mapped to small valid gzip IDX files."""
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels))
    return files


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (root / name).write_bytes(blob)
    return root


# --- IDX parsing ------------------------------------------------------------------------


@needs_mnist
@pytest.mark.parametrize(
    ("train", "count", "first_labels"),
    [
        param(True, 60000, [5, 0, 4, 1, 9, 2, 1, 3, 1, 4], id="train"),
        param(False, 10000, [7, 2, 1, 0, 4, 1, 4, 9, 5, 9], id="test"),
    ],
)
def test_real_mnist_files(train, count, first_labels):
    x, y = data.load_mnist(MNIST_DIR, train=train)
    assert x.shape == (count, 1, 28, 28) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.shape == (count,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert y[:10].tolist() == first_labels
    assert np.bincount(y, minlength=10).min() > count // 20


def test_synthetic_roundtrip(tmp_path):
    files = synthetic_mnist()
    write_files(tmp_path, files)
    x, y = data.load_mnist(tmp_path, train=True)
    raw = np.frombuffer(gzip.decompress(files["train-images-idx3-ubyte.gz"])[16:], np.uint8)
    np.testing.assert_array_equal(x.ravel(), raw.astype(np.float32) / 255)
    labels = np.frombuffer(gzip.decompress(files["train-labels-idx1-ubyte.gz"])[8:], np.uint8)
    np.testing.assert_array_equal(y, labels)
    assert data.read_idx(tmp_path / "t10k-images-idx3-ubyte.gz").shape == (3, 28, 28)


def test_uncompressed_idx_is_read(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.idx", ndim=2), array)


def decompressed(files: dict[str, bytes], dotted: bool) -> dict[str, bytes]:
    """``files`` decompressed, named without ``.gz`` (``dotted``: ``train-images.idx3-ubyte``,
    the name stored in the original gzip headers)."""
    out = {}
    for name, blob in files.items():
        plain = name.removesuffix(".gz")
        out[plain.replace("-idx", ".idx") if dotted else plain] = gzip.decompress(blob)
    return out


@pytest.mark.parametrize("dotted", [False, True], ids=["dash", "dot"])
def test_folder_of_decompressed_idx_files(tmp_path, dotted):
    """A folder of plain IDX files (gunzipped, in either naming) loads as the .gz one."""
    files = synthetic_mnist()
    write_files(tmp_path / "gz", files)
    write_files(tmp_path / "plain", decompressed(files, dotted))
    for train in (True, False):
        x, y = data.load_mnist(tmp_path / "plain", train=train)
        x_gz, y_gz = data.load_mnist(tmp_path / "gz", train=train)
        np.testing.assert_array_equal(x, x_gz)
        np.testing.assert_array_equal(y, y_gz)


def test_mixed_folder_prefers_the_gz(tmp_path):
    files = synthetic_mnist()
    write_files(tmp_path, files)
    other = decompressed(synthetic_mnist(seed=1), dotted=False)
    write_files(tmp_path, other)
    _, y = data.load_mnist(tmp_path, train=False)
    labels = np.frombuffer(gzip.decompress(files["t10k-labels-idx1-ubyte.gz"])[8:], np.uint8)
    np.testing.assert_array_equal(y, labels)


@needs_mnist
def test_real_mnist_decompressed(tmp_path):
    """The real test split, gunzipped: byte for byte the data of the .gz files."""
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        plain = gzip.decompress((MNIST_DIR / name).read_bytes())
        (tmp_path / name.removesuffix(".gz")).write_bytes(plain)
    x, y = data.load_mnist(tmp_path, train=False)
    x_ref, y_ref = data.load_mnist(MNIST_DIR, train=False)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)


IMAGES = np.zeros((2, 28, 28), np.uint8)
GOOD = idx_bytes(IMAGES)


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        param(
            gzip.compress(idx_bytes(IMAGES, b"\x08\x03\0\0")),
            "not an unsigned-byte IDX",
            id="bad-magic",
        ),
        param(
            gzip.compress(idx_bytes(IMAGES, b"\0\0\x0d\x03")),
            "not an unsigned-byte IDX",
            id="float-dtype",
        ),
        param(gzip.compress(b""), "magic missing", id="empty"),
        param(
            gzip.compress(idx_bytes(IMAGES[0])), "expected an IDX file of 3 dim", id="wrong-ndim"
        ),
        param(gzip.compress(GOOD[:10]), "header is incomplete", id="short-header"),
        param(gzip.compress(GOOD[:-5]), "truncated", id="short-payload"),
        param(gzip.compress(GOOD + b"xx"), "announces", id="trailing-bytes"),
        param(gzip.compress(GOOD)[:-20], "not a readable gzip", id="truncated-gzip"),
        param(b"\x1f\x8b" + b"garbage" * 10, "not a readable gzip", id="garbage-gzip"),
    ],
)
def test_corrupt_idx_is_rejected(tmp_path, blob, match):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match=match) as info:
        data.read_idx(path, ndim=3)
    assert str(path) in str(info.value)


def test_missing_file_names_path_and_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        data.load_mnist(tmp_path, train=False)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in str(info.value)
    assert "(nor t10k-images-idx3-ubyte or t10k-images.idx3-ubyte)" in str(info.value)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        param({"train-labels-idx1-ubyte.gz": np.zeros(5, np.uint8)}, "7 images but", id="count"),
        param({"train-labels-idx1-ubyte.gz": np.full(7, 10, np.uint8)}, "label > 9", id="label"),
    ],
)
def test_inconsistent_split_is_rejected(tmp_path, edit, match):
    files = synthetic_mnist()
    files.update({name: gzip.compress(idx_bytes(a)) for name, a in edit.items()})
    write_files(tmp_path, files)
    with pytest.raises(ValueError, match=match):
        data.load_mnist(tmp_path, train=True)


# --- download ---------------------------------------------------------------------------


class Server:
    """A bounded HTTP server on 127.0.0.1 serving ``files`` (name -> bytes or status)."""

    def __init__(self, files):
        self.files = files
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                outer.requests.append(name)
                body = outer.files.get(name, 404)
                if isinstance(body, int):
                    self.send_error(body)
                    return
                if isinstance(body, tuple):  # (announced length, bytes): connection drops
                    length, body = body
                else:
                    length = len(body)
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/mnist/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def serve(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    servers = []

    def start(files):
        servers.append(Server(files))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def synthetic(monkeypatch):
    """Synthetic MNIST files, with their checksums standing in for the real ones."""
    files = synthetic_mnist()
    sums = {name: hashlib.sha256(blob).hexdigest() for name, blob in files.items()}
    monkeypatch.setattr(data, "MNIST_SHA256", sums)
    return files


def test_download_fetches_once_then_reads_local(tmp_path, serve, synthetic):
    server = serve(synthetic)
    root = tmp_path / "cache" / "mnist"
    x, y = data.load_mnist(root, train=True, download=True, base_url=server.url, progress=False)
    assert x.shape == (7, 1, 28, 28)
    assert sorted(server.requests) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    data.load_mnist(root, train=True, download=True, base_url=server.url, progress=False)
    data.load_mnist(root, train=False, download=True, base_url=server.url, progress=False)
    assert len(server.requests) == 4
    assert sorted(p.name for p in root.iterdir()) == NAMES


def test_download_url_and_root_from_environment(tmp_path, serve, synthetic, monkeypatch):
    server = serve(synthetic)
    monkeypatch.setenv("FASTCNN_MNIST_URL", server.url)
    monkeypatch.setenv("FASTCNN_CACHE_DIR", str(tmp_path / "c"))
    _, y = data.load_mnist(train=False, download=True, progress=False)
    assert y.shape == (3,)
    assert (tmp_path / "c" / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()


@pytest.mark.parametrize(
    ("fault", "error", "match"),
    [
        param(lambda blob: blob[:-1] + bytes([blob[-1] ^ 1]), ValueError, "corrupt", id="bitflip"),
        param(lambda blob: blob + b"\0", ValueError, "corrupt", id="extra-byte"),
        param(lambda blob: 404, OSError, "404", id="not-found"),
        param(lambda blob: 500, OSError, "500", id="server-error"),
        param(lambda blob: (len(blob), blob[:99]), OSError, "closed after 99 of", id="dropped"),
    ],
)
def test_failed_download_leaves_nothing(tmp_path, serve, synthetic, fault, error, match):
    name = "t10k-images-idx3-ubyte.gz"
    server = serve({**synthetic, name: fault(synthetic[name])})
    root = tmp_path / "mnist"
    with pytest.raises(error, match=match) as info:
        data.load_mnist(root, train=False, download=True, base_url=server.url, progress=False)
    assert server.url + name in str(info.value)
    assert list(root.iterdir()) == []


def test_download_skips_decompressed_files(tmp_path, serve, synthetic):
    """A file present decompressed is not fetched again."""
    server = serve(synthetic)
    name = "t10k-images-idx3-ubyte.gz"
    write_files(tmp_path, decompressed({name: synthetic[name]}, dotted=False))
    x, _ = data.load_mnist(tmp_path, train=False, download=True, base_url=server.url)
    assert server.requests == ["t10k-labels-idx1-ubyte.gz"] and x.shape == (3, 1, 28, 28)


def test_corrupt_second_file_keeps_verified_first(tmp_path, serve, synthetic):
    name = "train-labels-idx1-ubyte.gz"
    server = serve({**synthetic, name: b"not mnist"})
    with pytest.raises(ValueError, match="corrupt"):
        data.load_mnist(tmp_path, download=True, base_url=server.url, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["train-images-idx3-ubyte.gz"]


@needs_mnist
def test_download_real_files_with_published_checksums(tmp_path, serve):
    server = serve({name: (MNIST_DIR / name).read_bytes() for name in NAMES})
    x, y = data.load_mnist(tmp_path, train=False, download=True, base_url=server.url)
    x_ref, y_ref = data.load_mnist(MNIST_DIR, train=False)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)


@needs_mnist
def test_download_rejects_corrupted_real_file(tmp_path, serve):
    blob = bytearray((MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    blob[100] ^= 0xFF
    files = {name: (MNIST_DIR / name).read_bytes() for name in NAMES}
    server = serve({**files, "t10k-labels-idx1-ubyte.gz": bytes(blob)})
    with pytest.raises(ValueError, match="sha256"):
        data.load_mnist(tmp_path, train=False, download=True, base_url=server.url)
    assert [p.name for p in tmp_path.iterdir()] == ["t10k-images-idx3-ubyte.gz"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        param({"FASTCNN_CACHE_DIR": "/a/b"}, "/a/b", id="fastcnn"),
        param({"XDG_CACHE_HOME": "/x"}, "/x/fastcnn", id="xdg"),
        param({"HOME": "/h"}, "/h/.cache/fastcnn", id="home"),
    ],
)
def test_cache_dir(monkeypatch, env, expected):
    for var in ("FASTCNN_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert data.cache_dir() == Path(expected)


# --- digits -----------------------------------------------------------------------------


def test_digits_split():
    pytest.importorskip("sklearn")
    x, y = data.load_digits(train=True, seed=3)
    xt, yt = data.load_digits(train=False, seed=3)
    assert x.shape == (1438, 1, 8, 8) and xt.shape == (359, 1, 8, 8)
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.flags.c_contiguous
    assert 0.0 <= x.min() and x.max() == 1.0
    rows = {r.tobytes() for r in x.reshape(len(x), -1)}
    assert sum(r.tobytes() in rows for r in xt.reshape(len(xt), -1)) < 5  # a few true duplicates
    x_again, _ = data.load_digits(train=True, seed=3)
    np.testing.assert_array_equal(x, x_again)
    assert not np.array_equal(data.load_digits(train=False, seed=4)[1], yt)


def test_digits_without_sklearn_names_extra(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sklearn" else find_spec(name, *a),
    )
    with pytest.raises(ImportError, match=r"pip install 'fastcnn\[train\]'"):
        data.load_digits()


def test_digits_read_without_sklearn_are_sklearns():
    """The digits come from scikit-learn's own CSV file, not its loader (nor its import):
    the same pixels and labels."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    pixels, labels = data._digits()
    bunch = sklearn_datasets.load_digits()
    np.testing.assert_array_equal(pixels, bunch.data)
    np.testing.assert_array_equal(labels, bunch.target)
    code = (
        "import sys; from fastcnn import data; data.load_digits(); print('sklearn' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


def test_digits_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        data.load_digits(test_fraction=1.0)


# --- batching ---------------------------------------------------------------------------


def test_batches_deterministic_and_complete():
    x = np.arange(50, dtype=np.float32).reshape(25, 1, 1, 2)
    y = np.arange(25)
    runs = [list(data.iterate_batches(x, y, 4, rng=np.random.default_rng(7))) for _ in range(2)]
    for (xa, ya), (xb, yb) in zip(*runs, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    seen = np.concatenate([yb for _, yb in runs[0]])
    assert sorted(seen) == list(range(25)) and not np.array_equal(seen, y)
    assert [len(yb) for _, yb in runs[0]] == [4] * 6 + [1]
    for xb, yb in runs[0]:
        np.testing.assert_array_equal(xb[:, 0, 0, 0], 2 * yb)
        assert xb.flags.c_contiguous


def test_batches_advance_generator_once_per_epoch():
    rng = np.random.default_rng(1)
    first = np.concatenate([b for _, b in data.iterate_batches(np.zeros(9), np.arange(9), 2, rng)])
    second = np.concatenate([b for _, b in data.iterate_batches(np.zeros(9), np.arange(9), 2, rng)])
    ref = np.random.default_rng(1)
    np.testing.assert_array_equal(first, ref.permutation(9))
    np.testing.assert_array_equal(second, ref.permutation(9))


@pytest.mark.parametrize(
    ("drop_last", "sizes"), [param(False, [4, 4, 2], id="keep"), param(True, [4, 4], id="drop")]
)
def test_batches_in_order(drop_last, sizes):
    y = np.arange(10)
    batches = list(data.iterate_batches(y * 2, y, 4, shuffle=False, drop_last=drop_last))
    assert [len(b) for _, b in batches] == sizes
    np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), y[: sum(sizes)])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        param({"rng": None}, TypeError, "rng must be a numpy.random.Generator", id="no-rng"),
        param({"rng": 3}, TypeError, "rng must be", id="int-rng"),
        param({"batch_size": 0}, ValueError, "batch_size must be >= 1", id="zero-batch"),
        param({"batch_size": 2.0}, TypeError, "batch_size must be an int", id="float-batch"),
        param({"y": np.arange(3)}, ValueError, "y has 3", id="length"),
    ],
)
def test_batches_bad_arguments(kwargs, error, match):
    args = {"x": np.zeros(4), "y": np.arange(4), "batch_size": 2, "rng": np.random.default_rng()}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        next(data.iterate_batches(**args))
