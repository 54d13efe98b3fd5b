"""fastcnn.train: the LeNet builder, fit/evaluate, checkpoints and exact resume, real MNIST."""

import re
from pathlib import Path

import numpy as np
import pytest
from pytest import param

import fastcnn
from fastcnn import nn, optim, train
from fastcnn.cli import main
from fastcnn.data import load_mnist

MNIST_DIR = Path(__file__).parents[1].parent / "shared/data/mnist"
needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(), reason="real MNIST files absent"
)


def conv_params(c_in, c_out, bias=True):
    return c_out * c_in * 9 + (c_out if bias else 0)


@pytest.mark.parametrize(
    ("shape", "batchnorm", "n_params", "n_layers"),
    [
        # conv32-pool-relu-conv64-pool-relu-fc128-relu-fc10 on 28x28 (64 x 7 x 7 features)
        param(
            (1, 28, 28),
            False,
            conv_params(1, 32) + conv_params(32, 64) + 64 * 49 * 128 + 128 + 128 * 10 + 10,
            10,
            id="mnist",
        ),
        param(
            (1, 28, 28),
            True,
            conv_params(1, 32, False)
            + 64
            + conv_params(32, 64, False)
            + 128
            + 64 * 49 * 128
            + 128
            + 128 * 10
            + 10,
            12,
            id="mnist-bn",
        ),
        # half as wide on 8x8 digits: conv16-conv32 (32 x 2 x 2 features)-fc64-fc10
        param(
            (1, 8, 8),
            False,
            conv_params(1, 16) + conv_params(16, 32) + 128 * 64 + 64 + 64 * 10 + 10,
            10,
            id="digits",
        ),
    ],
)
def test_lenet_architecture(shape, batchnorm, n_params, n_layers):
    net = train.lenet(shape, 10, batchnorm=batchnorm, rng=0)
    assert len(net) == n_layers
    assert sum(p.data.size for p in net.parameters()) == n_params
    out = net(np.zeros((3, *shape), np.float32))
    assert out.shape == (3, 10) and out.dtype == np.float32
    keys = net.state_dict().keys()
    assert "0.weight" in keys and ("1.running_var" in keys) == batchnorm
    twin = train.lenet(shape, 10, batchnorm=batchnorm, rng=0)
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_lenet_pool_then_relu_equals_relu_then_pool(batchnorm):
    """lenet pools before its ReLUs: outputs and every gradient are bitwise those of the
    usual ReLU-then-pool order, run layer by layer (NaN and ties included)."""
    net = train.lenet((1, 16, 16), batchnorm=batchnorm, rng=1)
    layers = list(net)
    usual = list(layers)
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            usual[i], usual[i + 1] = layers[i + 1], layer
    assert usual != layers
    x = np.random.default_rng(2).standard_normal((3, 1, 16, 16)).astype(np.float32)
    x[0, 0, :4, :4] = 0  # ties
    x[1, 0, 5, 5] = np.nan
    grad = np.random.default_rng(3).standard_normal((3, 10)).astype(np.float32)
    results = []
    for order in (layers, usual):
        net.zero_grad()
        h = x
        for layer in order:  # the same layer objects: the same parameters
            h = layer(h)
        g = grad
        for layer in reversed(order):
            g = layer.backward(g)
        results.append([h, g] + [p.grad.copy() for p in net.parameters()])
    for got, want in zip(*results, strict=True):
        np.testing.assert_array_equal(got, want)


def test_lenet_rejects_tiny_images():
    with pytest.raises(ValueError, match="image_shape"):
        train.lenet((1, 3, 3))


def test_evaluate_counts_and_restores_mode():
    net = train.lenet((1, 8, 8), rng=1)
    x = np.random.default_rng(0).random((7, 1, 8, 8), dtype=np.float32)
    predicted = net(x).argmax(axis=1)
    y = predicted.copy()
    y[:2] = (y[:2] + 1) % 10
    assert train.evaluate(net, x, y, batch_size=3) == pytest.approx(5 / 7)
    assert net.training


# --- fit, checkpoints and resume --------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    (x, y), test = fastcnn.data.load_digits(), fastcnn.data.load_digits(train=False)
    return (x[:480], y[:480]), test


def make_run(kind, batchnorm, seed=0):
    """A fresh model, optimiser and batch-order generator for a small digits run."""
    init, order = np.random.SeedSequence(seed).spawn(2)
    net = train.lenet((1, 8, 8), batchnorm=batchnorm, rng=np.random.default_rng(init))
    if kind == "sgd":
        opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    else:
        opt = optim.Adam(net.parameters(), lr=1e-3)
    return net, opt, np.random.default_rng(order)


def run_fit(
    digits, kind, batchnorm, epochs, checkpoint=None, resume=False, seed=0, config=None,
    schedule=None,
):  # fmt: skip
    net, opt, rng = make_run(kind, batchnorm, seed)
    history = train.fit(
        net,
        opt,
        nn.CrossEntropyLoss(),
        *digits,
        epochs=epochs,
        batch_size=32,
        rng=rng,
        checkpoint=checkpoint,
        resume=resume,
        config=config or {"kind": kind},
        lr_schedule=schedule,
        progress=False,
        log=lambda line: None,
    )
    return net, opt, rng, history


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


@pytest.mark.parametrize(
    ("kind", "batchnorm", "schedule"),
    [
        param("sgd", True, optim.CosineSchedule(0.05, 3), id="sgd-nesterov-bn-cosine"),
        param("adam", False, None, id="adam"),
    ],
)
def test_resume_equals_uninterrupted(tmp_path, digits, kind, batchnorm, schedule):
    whole, whole_opt, whole_rng, whole_history = run_fit(
        digits, kind, batchnorm, epochs=3, schedule=schedule
    )
    ckpt = tmp_path / "run.npz"
    run_fit(digits, kind, batchnorm, epochs=1, checkpoint=ckpt, schedule=schedule)
    assert train.load_checkpoint(ckpt)["epoch"] == 1
    # a different seed: every bit of state must come from the checkpoint
    net, opt, rng, history = run_fit(
        digits, kind, batchnorm, epochs=3, checkpoint=ckpt, resume=True, seed=99,
        schedule=schedule,
    )  # fmt: skip
    assert_same_state(net, whole)
    assert opt.steps == whole_opt.steps == 3 * 15
    for name, buffers in opt.buffers.items():
        for mine, ref in zip(buffers, whole_opt.buffers[name], strict=True):
            np.testing.assert_array_equal(mine, ref)
    assert rng.bit_generator.state == whole_rng.bit_generator.state
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in whole_history]
    assert [r["lr"] for r in history] == [r["lr"] for r in whole_history]
    assert train.load_checkpoint(ckpt)["epoch"] == 3


def test_lr_schedule_sets_each_epochs_rate(digits):
    rates = {1: 0.04, 2: 0.01, 3: 0.0}
    net, opt, _, history = run_fit(digits, "sgd", False, epochs=3, schedule=rates.get)
    assert [r["lr"] for r in history] == [0.04, 0.01, 0.0]
    assert opt.lr == 0.0
    # the last epoch ran at rate 0: the weights are those after two epochs
    two, _, _, _ = run_fit(digits, "sgd", False, epochs=2, schedule=rates.get)
    assert_same_state(net, two)


@pytest.mark.parametrize(
    ("rate", "exc", "match"),
    [
        param(-0.1, ValueError, r"fit: lr_schedule\(1\) must be >= 0.0, got -0.1", id="negative"),
        param(float("nan"), ValueError, r"lr_schedule\(1\) must be finite", id="nan"),
        param("0.1", TypeError, r"lr_schedule\(1\) must be a real number", id="str"),
    ],
)
def test_lr_schedule_giving_a_bad_rate_is_refused(tmp_path, digits, rate, exc, match):
    ckpt = tmp_path / "c.npz"
    with pytest.raises(exc, match=match):
        run_fit(digits, "sgd", False, epochs=1, checkpoint=ckpt, schedule=lambda epoch: rate)
    assert not ckpt.exists()


def test_history_and_checkpoint_contents(tmp_path, digits):
    ckpt = tmp_path / "sub" / "c.npz"
    net, opt, _, history = run_fit(digits, "sgd", False, epochs=2, checkpoint=ckpt)
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[1]["test_accuracy"] == train.evaluate(net, *digits[1])
    assert all(r["images_per_second"] > 0 for r in history)
    state = train.load_checkpoint(ckpt)
    assert state["config"] == {"kind": "sgd"} and state["history"] == history
    assert state["optimizer"]["steps"] == opt.steps
    fresh = train.lenet((1, 8, 8), rng=5)
    fresh.load_state_dict(state["model"])
    assert_same_state(fresh, net)


def test_resume_restores_dropout_generator(tmp_path, digits):
    def run(epochs, seed, resume):
        net = nn.Sequential(*train.lenet((1, 8, 8), rng=0), nn.Dropout(0.2, rng=seed))
        opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        train.fit(
            net,
            opt,
            nn.CrossEntropyLoss(),
            digits[0],
            epochs=epochs,
            batch_size=64,
            rng=np.random.default_rng(seed),
            checkpoint=tmp_path / "d.npz",
            resume=resume,
            progress=False,
            log=lambda line: None,
        )
        return net

    whole = run(2, 0, False)
    run(1, 0, False)
    assert_same_state(run(2, 7, True), whole)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        param({"kind": "sgd", "batch_size": 64}, r"batch_size: None -> 64", id="new-key"),
        param({"kind": "adam"}, r"kind: 'sgd' -> 'adam'", id="changed"),
    ],
)
def test_resume_with_other_settings_is_refused(tmp_path, digits, config, match):
    ckpt = tmp_path / "c.npz"
    run_fit(digits, "sgd", False, epochs=1, checkpoint=ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match=match):
        run_fit(digits, "sgd", False, epochs=2, checkpoint=ckpt, resume=True, config=config)
    assert ckpt.read_bytes() == before


def test_resume_missing_checkpoint(tmp_path, digits):
    with pytest.raises(FileNotFoundError):
        run_fit(digits, "sgd", False, epochs=1, checkpoint=tmp_path / "none.npz", resume=True)
    with pytest.raises(ValueError, match="needs a checkpoint"):
        run_fit(digits, "sgd", False, epochs=1, resume=True)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_divergence_stops_before_checkpoint(tmp_path, digits):
    net, _, rng = make_run("sgd", False)
    opt = optim.SGD(net.parameters(), lr=1e6)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train.fit(
            net,
            opt,
            nn.CrossEntropyLoss(),
            digits[0],
            epochs=1,
            batch_size=32,
            rng=rng,
            checkpoint=tmp_path / "c.npz",
            progress=False,
            log=lambda line: None,
        )
    assert not (tmp_path / "c.npz").exists()


class PoisonAt(optim.SGD):
    """SGD whose step number ``at`` ends by writing NaN into one entry of ``target`` (a
    parameter's or buffer's array): a step that overflows, made deterministic."""

    def __init__(self, params, target, at, **hyper):
        super().__init__(params, **hyper)
        self.target, self.at = target, at

    def step(self):
        super().step()
        if self.steps == self.at:
            self.target.reshape(-1)[0] = np.nan


def fit_quietly(net, opt, data, test=None, **kwargs):
    lines = []
    kwargs = {"epochs": 1, "batch_size": 32, "rng": np.random.default_rng(0), **kwargs}
    history = train.fit(
        net, opt, nn.CrossEntropyLoss(), data, test, progress=False, log=lines.append, **kwargs
    )
    return history, lines


def test_last_step_of_a_one_step_epoch_is_checked(tmp_path, digits):
    """The issue's case: one step an epoch (a batch larger than the data); the step writes
    NaN. It used to be saved, since only the loss computed before the step was checked."""
    (x, y), _ = digits
    net = train.lenet((1, 8, 8), rng=0)
    name, weight = net.named_parameters()[2]
    opt = PoisonAt(net.parameters(), weight.data, at=1, lr=0.05)
    ckpt = tmp_path / "c.npz"
    with pytest.raises(train.TrainingDiverged) as info:
        fit_quietly(net, opt, (x, y), batch_size=len(y) + 1, checkpoint=ckpt)
    assert name == "3.weight"
    assert re.fullmatch(
        r"fit: training diverged in epoch 1: the step wrote NaN or inf into 3\.weight \(loss "
        r"2\.\d+\); nothing of this epoch was saved \(no checkpoint of this run was "
        r"written\); lower the learning rate",
        str(info.value),
    )
    assert isinstance(info.value, FloatingPointError)
    assert (info.value.epoch, info.value.last_good_epoch) == (1, 0)
    assert not ckpt.exists() and list(tmp_path.iterdir()) == []


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, digits):
    (x, y), _ = digits
    ckpt = tmp_path / "c.npz"
    net = train.lenet((1, 8, 8), rng=0)
    opt = PoisonAt(net.parameters(), net.parameters()[0].data, at=15 + 4, lr=0.05)
    fit_quietly(net, opt, (x, y), checkpoint=ckpt)  # epoch 1: 15 steps
    good = ckpt.read_bytes()
    with pytest.raises(train.TrainingDiverged, match=r"still holds epoch 1\)") as info:
        fit_quietly(net, opt, (x, y), checkpoint=ckpt, epochs=2, resume=True)
    assert "diverged in epoch 2: the step wrote NaN or inf into 0.weight" in str(info.value)
    assert info.value.last_good_epoch == 1 and info.value.checkpoint == ckpt
    assert ckpt.read_bytes() == good
    assert train.non_finite(train.load_checkpoint(ckpt)) == []


def test_non_finite_buffer_is_never_checkpointed(tmp_path, digits):
    """A NaN outside the parameters (a batch-norm running variance) is caught before the
    checkpoint is written."""
    (x, y), _ = digits
    net = train.lenet((1, 8, 8), batchnorm=True, rng=0)
    opt = PoisonAt(net.parameters(), net[1].running_var, at=15, lr=0.05)
    with pytest.raises(train.TrainingDiverged, match=r"holds NaN or inf in model/1.running_var"):
        fit_quietly(net, opt, (x, y), checkpoint=tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists()


def test_loss_above_its_start_for_a_whole_epoch_is_divergence(tmp_path, digits):
    """lr 50 ends at chance level without a NaN: reported, and nothing is saved."""
    net, _, rng = make_run("sgd", False)
    opt = optim.SGD(net.parameters(), lr=50.0, momentum=0.9)
    with pytest.raises(train.TrainingDiverged, match="the loss stayed above its starting") as info:
        fit_quietly(net, opt, digits[0], checkpoint=tmp_path / "c.npz", rng=rng)
    assert info.value.epoch == 1 and not (tmp_path / "c.npz").exists()
    net, _, rng = make_run("sgd", False)
    opt = optim.SGD(net.parameters(), lr=50.0, momentum=0.9)
    history, _ = fit_quietly(net, opt, digits[0], rng=rng, stop_on_divergence=False)
    assert history[0]["train_loss"] > 2.4  # the same run, let through


@pytest.mark.parametrize("lr", [1e-4, 0.05])
def test_slow_or_normal_learning_is_not_divergence(digits, lr):
    """A tiny rate leaves the loss at its start, about half the batches above it."""
    net, _, rng = make_run("sgd", False)
    opt = optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    history, _ = fit_quietly(net, opt, digits[0], rng=rng, epochs=3)
    assert len(history) == 3


def test_resume_with_a_new_lr_is_allowed_and_logged(tmp_path, digits):
    ckpt = tmp_path / "c.npz"
    run_fit(digits, "sgd", False, epochs=1, checkpoint=ckpt, config={"kind": "sgd", "lr": 0.05})
    net, opt, rng = make_run("sgd", False)
    opt.lr = 0.01  # the optimiser a caller builds with the new rate
    _, lines = fit_quietly(
        net, opt, digits[0], epochs=2, checkpoint=ckpt, resume=True, rng=rng,
        config={"kind": "sgd", "lr": 0.01},
    )  # fmt: skip
    assert f"resumed from {ckpt} after epoch 1" in lines
    assert "learning rate changed on resume: 0.05 -> 0.01" in lines
    state = train.load_checkpoint(ckpt)
    assert opt.lr == 0.01 and state["history"][1]["lr"] == 0.01
    assert state["optimizer"]["hyper"]["lr"] == 0.01 and state["config"]["lr"] == 0.01


def test_checkpoint_records_the_data(tmp_path, digits):
    ckpt = tmp_path / "c.npz"
    run_fit(digits, "sgd", False, epochs=1, checkpoint=ckpt)
    record = train.load_checkpoint(ckpt)["data"]
    assert record == train.data_record(digits[0])
    assert record["train_size"] == 480 and record["image_shape"] == [1, 8, 8]
    assert len(record["labels_sha256"]) == 64


@pytest.mark.parametrize(
    ("change", "match"),
    [
        param(lambda x, y: (x[:-32], y[:-32]), r"train_size: 480 -> 448", id="fewer-images"),
        param(lambda x, y: (x, np.roll(y, 1)), r"labels_sha256: '[0-9a-f]{64}' -> ", id="labels"),
    ],
)
def test_resume_with_other_data_is_refused(tmp_path, digits, change, match):
    ckpt = tmp_path / "c.npz"
    run_fit(digits, "sgd", False, epochs=1, checkpoint=ckpt)
    before = ckpt.read_bytes()
    other = (change(*digits[0]), digits[1])
    with pytest.raises(ValueError, match="it was trained on other data") as info:
        run_fit(other, "sgd", False, epochs=2, checkpoint=ckpt, resume=True)
    assert re.search(match, str(info.value))
    assert ckpt.read_bytes() == before


def test_schedule_rate_overflowing_the_parameters_is_refused(tmp_path, digits):
    ckpt = tmp_path / "c.npz"
    with pytest.raises(ValueError, match=r"fit: lr_schedule\(1\)=1e\+39 overflows float32"):
        run_fit(digits, "sgd", False, epochs=1, checkpoint=ckpt, schedule=lambda epoch: 1e39)
    assert not ckpt.exists()


def test_non_finite_lists_key_paths():
    state = {"a": np.ones(3), "b": [np.array([1.0, np.inf]), 2.0], "c": {"d": float("nan")}}
    assert train.non_finite(state) == ["b/0", "c/d"]
    assert train.non_finite({"i": np.arange(3), "s": "nan"}) == []


# --- the command on the bundled digits ----------------------------------------------------


def test_fastcnn_train_digits_reaches_95_percent(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    weights, curves = tmp_path / "w.npz", tmp_path / "curves.png"
    argv = ["train", "--checkpoint-dir", str(tmp_path), "--save", str(weights)]
    assert main([*argv, "--plot", str(curves)]) == 0
    out = capsys.readouterr().out
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", out).group(1))
    assert accuracy > 95.0, out
    net = train.lenet((1, 8, 8), rng=0)
    net.load_state_dict(fastcnn.load(weights))
    x, y = fastcnn.data.load_digits(train=False)
    assert 100 * train.evaluate(net, x, y) == pytest.approx(accuracy, abs=0.01)
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # resuming a finished run trains nothing and reports the same accuracy
    assert main([*argv, "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy: {accuracy:.2f}%" in out and "after epoch 10" in out
    assert not re.search(r"^epoch \d+/", out, re.MULTILINE)


# --- real MNIST -------------------------------------------------------------------------------


def mnist_run(n_train, batch_size, lr):
    (x, y), test = load_mnist(MNIST_DIR, train=True), load_mnist(MNIST_DIR, train=False)
    init, order = np.random.SeedSequence(0).spawn(2)
    net = train.lenet((1, 28, 28), rng=np.random.default_rng(init))
    opt = optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    history = train.fit(
        net,
        opt,
        nn.CrossEntropyLoss(),
        (x[:n_train], y[:n_train]),
        test,
        epochs=1,
        batch_size=batch_size,
        rng=np.random.default_rng(order),
        progress=False,
        log=lambda line: None,
    )
    return history[-1]


@needs_mnist
def test_mnist_subset_one_epoch():
    """6000 real training images, one epoch: the full 10000-image test set above 90%.

    (Measured: 93.7% with seed 0.)
    """
    assert mnist_run(6000, batch_size=32, lr=0.02)["test_accuracy"] >= 0.90


@needs_mnist
@pytest.mark.slow
def test_mnist_full_epoch_reaches_98_percent():
    """The issue's bar: conv32-conv64-fc128, SGD momentum 0.9, batch 64, one epoch.

    (Measured with seed 0: 98.28% at lr 0.05, 98.22% at lr 0.03, 97.76% at lr 0.01.)
    """
    assert mnist_run(60000, batch_size=64, lr=0.05)["test_accuracy"] >= 0.98
