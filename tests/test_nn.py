"""fastcnn.nn layers: gradients (finite differences and torch autograd), unbatched input
and the single-sample paths, modes, initialisation, state dicts, repr.

Tolerances: finite differences in float64 with step 1e-6 agree to ``atol=1e-7``
(relative to the largest gradient, at least 1) and ``rtol=1e-6``; torch parity in
float64 to ``rtol=1e-10, atol=1e-12`` (times the largest magnitude); whole nets in
float32 on the fast path to ``rtol=1e-4, atol=1e-5``.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import assert_close, distinct

import fastcnn.nn as nn

F64 = np.dtype(np.float64)
F32 = np.dtype(np.float32)
FD_TOL = {"rtol": 1e-6, "atol": 1e-7}


def _x(kind, shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "distinct":  # no ties, no values near the kinks of max and relu
        return distinct(rng, shape, dtype, gap=0.1) + dtype.type(0.05)
    return rng.standard_normal(shape).astype(dtype)


def _bn_with_stats(dtype):
    """A BatchNorm2d in eval mode whose running stats moved away from (0, 1)."""
    bn = nn.BatchNorm2d(3, momentum=0.5, dtype=dtype)
    bn.weight.data[:] = [0.5, 1.5, -1.0]
    bn.bias.data[:] = [0.1, -0.2, 0.3]
    bn(_x("randn", (4, 3, 3, 3), dtype, seed=7) * dtype.type(2) + dtype.type(1))
    return bn.eval()


# id -> (fastcnn factory(dtype), torch factory or None, input shape, input kind)
LAYERS = {
    "conv-3x3": (
        lambda dt: nn.Conv2d(2, 3, 3, rng=1, dtype=dt),
        lambda t: t.nn.Conv2d(2, 3, 3),
        (2, 2, 5, 5),
        "randn",
    ),
    "conv-stride2-pad1": (
        lambda dt: nn.Conv2d(2, 3, 3, stride=2, padding=1, rng=2, dtype=dt),
        lambda t: t.nn.Conv2d(2, 3, 3, stride=2, padding=1),
        (2, 2, 6, 5),
        "randn",
    ),
    "conv-dilation2-nobias": (
        lambda dt: nn.Conv2d(1, 2, (2, 3), dilation=2, bias=False, rng=3, dtype=dt),
        lambda t: t.nn.Conv2d(1, 2, (2, 3), dilation=2, bias=False),
        (1, 1, 6, 7),
        "randn",
    ),
    "conv-1x1-pairs": (
        lambda dt: nn.Conv2d(3, 2, 1, stride=(1, 2), padding=(0, 1), rng=4, dtype=dt),
        lambda t: t.nn.Conv2d(3, 2, 1, stride=(1, 2), padding=(0, 1)),
        (2, 3, 3, 4),
        "randn",
    ),
    "pool-2x2": (
        lambda dt: nn.MaxPool2d(2),
        lambda t: t.nn.MaxPool2d(2),
        (2, 2, 4, 5),
        "distinct",
    ),
    "pool-3x3-stride2-pad1": (
        lambda dt: nn.MaxPool2d(3, stride=2, padding=1),
        lambda t: t.nn.MaxPool2d(3, stride=2, padding=1),
        (1, 2, 5, 6),
        "distinct",
    ),
    "bn-train": (
        lambda dt: nn.BatchNorm2d(3, dtype=dt),
        lambda t: t.nn.BatchNorm2d(3),
        (4, 3, 2, 3),
        "randn",
    ),
    "bn-eval": (
        _bn_with_stats,
        lambda t: t.nn.BatchNorm2d(3, momentum=0.5),
        (2, 3, 2, 3),
        "randn",
    ),
    "relu": (lambda dt: nn.ReLU(), lambda t: t.nn.ReLU(), (2, 3, 4), "distinct"),
    "sigmoid": (lambda dt: nn.Sigmoid(), lambda t: t.nn.Sigmoid(), (2, 3, 4), "randn"),
    "linear": (
        lambda dt: nn.Linear(5, 4, rng=5, dtype=dt),
        lambda t: t.nn.Linear(5, 4),
        (3, 5),
        "randn",
    ),
    "linear-3d-nobias": (
        lambda dt: nn.Linear(4, 3, bias=False, rng=6, dtype=dt),
        lambda t: t.nn.Linear(4, 3, bias=False),
        (2, 3, 4),
        "randn",
    ),
    "flatten": (lambda dt: nn.Flatten(), lambda t: t.nn.Flatten(), (2, 3, 2, 2), "randn"),
    "dropout-eval": (
        lambda dt: nn.Dropout(0.5, rng=0).eval(),
        lambda t: t.nn.Dropout(0.5),
        (3, 4),
        "randn",
    ),
    "sequential": (
        lambda dt: nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1, rng=7, dtype=dt),
            nn.Sigmoid(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8, 3, rng=8, dtype=dt),
        ),
        None,
        (2, 1, 4, 4),
        "randn",
    ),
}
LAYER_IDS = list(LAYERS)


def _numeric_grad(f, array, h=1e-6):
    """Central differences of the scalar ``f()`` with respect to each entry of ``array``."""
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


@pytest.mark.parametrize("case", LAYER_IDS)
def test_backward_matches_finite_differences(case):
    """d sum(R * layer(x)) / d(x, params) from backward equals central differences."""
    make, _, shape, kind = LAYERS[case]
    layer = make(F64)
    x = _x(kind, shape, F64)
    y = layer(x)
    r = np.random.default_rng(1).standard_normal(y.shape)

    def loss():
        return float(np.sum(r * layer(x)))

    layer.zero_grad()
    layer(x)
    grad_x = layer.backward(r)
    assert_close(grad_x, _numeric_grad(loss, x), F64, **FD_TOL)
    for name, p in layer.named_parameters():
        analytic = p.grad.copy()
        assert_close(analytic, _numeric_grad(loss, p.data), F64, **FD_TOL), name


def _torch_layer(torch, case, layer):
    tlayer = LAYERS[case][1](torch).double()
    tlayer.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return tlayer.train(layer.training)


@pytest.mark.parametrize("case", [c for c in LAYER_IDS if LAYERS[c][1] is not None])
def test_layer_matches_torch_autograd(case):
    """Output, input gradient, parameter gradients and buffers equal torch's (float64)."""
    torch = pytest.importorskip("torch")
    make, _, shape, kind = LAYERS[case]
    layer = make(F64)
    tlayer = _torch_layer(torch, case, layer)
    x = _x(kind, shape, F64)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    y, ty = layer(x), tlayer(tx)
    r = np.random.default_rng(1).standard_normal(y.shape)
    ty.backward(torch.from_numpy(r))
    assert_close(y, ty.detach().numpy(), F64)
    assert_close(layer.backward(r), tx.grad.numpy(), F64)
    tparams = dict(tlayer.named_parameters())
    assert [name for name, _ in layer.named_parameters()] == list(tparams)
    for name, p in layer.named_parameters():
        assert_close(p.grad, tparams[name].grad.numpy(), F64)
    for name, value in layer.state_dict().items():
        expected = tlayer.state_dict()[name].numpy()
        if value.dtype.kind == "f":
            assert_close(value, expected, F64)
        else:
            assert value == expected, name


def test_batchnorm_momentum_none_is_cumulative_average():
    """momentum=None: running stats are the plain average over batches, as torch."""
    bn = nn.BatchNorm2d(2, momentum=None, dtype=F64)
    batches = [_x("randn", (3, 2, 2, 2), F64, seed=s) for s in range(3)]
    for b in batches:
        bn(b)
    means = [b.mean(axis=(0, 2, 3)) for b in batches]
    variances = [b.var(axis=(0, 2, 3), ddof=1) for b in batches]
    assert_close(bn.running_mean, np.mean(means, axis=0), F64)
    assert_close(bn.running_var, np.mean(variances, axis=0), F64)
    assert int(bn.num_batches_tracked) == 3


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_losses_match_torch(dtype):
    """CrossEntropyLoss and BCELoss: value and gradient equal torch's mean losses."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 6)).astype(dtype)
    targets = np.array([5, 0, 2, 2])
    probs = rng.uniform(0.05, 0.95, (3, 4)).astype(dtype)
    soft = rng.choice([0.0, 1.0, 0.25], (3, 4)).astype(dtype)
    for loss_fn, pred, target, tfn in (
        (nn.CrossEntropyLoss(), logits, targets, torch.nn.functional.cross_entropy),
        (nn.BCELoss(), probs, soft, torch.nn.functional.binary_cross_entropy),
    ):
        tpred = torch.from_numpy(pred.copy()).requires_grad_()
        tloss = tfn(tpred, torch.from_numpy(target))
        tloss.backward()
        assert_close(loss_fn(pred, target), tloss.item(), dtype)
        assert_close(loss_fn.backward(), tpred.grad.numpy(), dtype)


# --- whole network against torch, weights moved by state_dict -------------------------


def _net(rng, dtype=F32):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=rng, dtype=dtype),
        nn.BatchNorm2d(4, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5, rng=rng, dtype=dtype),
    )


def _torch_net(torch):
    t = torch.nn
    return t.Sequential(
        t.Conv2d(1, 4, 3), t.BatchNorm2d(4), t.ReLU(), t.MaxPool2d(2), t.Flatten(), t.Linear(36, 5)
    )


@pytest.mark.parametrize("direction", ["fastcnn-to-torch", "torch-to-fastcnn"])
def test_sequential_matches_torch(direction):
    """conv-bn-relu-pool-flatten-linear + cross-entropy: loss, all gradients and running
    stats equal torch's (float32, fast path), weights moved by state_dict either way."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net, tnet = _net(np.random.default_rng(0)), _torch_net(torch)
    if direction == "fastcnn-to-torch":
        tnet.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
    else:
        net.load_state_dict({k: v.numpy() for k, v in tnet.state_dict().items()})
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    targets = np.array([0, 4, 2])
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(net(x), targets)
    grad_x = net.backward(loss_fn.backward())
    tx = torch.from_numpy(x.copy()).requires_grad_()
    tloss = torch.nn.functional.cross_entropy(tnet(tx), torch.from_numpy(targets))
    tloss.backward()
    assert_close(loss, tloss.item(), F32)
    assert_close(grad_x, tx.grad.numpy(), F32)
    tgrads = {k: p.grad.numpy() for k, p in tnet.named_parameters()}
    for name, p in net.named_parameters():
        assert_close(p.grad, tgrads[name], F32)
    tstate = tnet.state_dict()
    for name, value in net.state_dict().items():
        if value.dtype.kind == "f":
            assert_close(value, tstate[name].numpy(), F32)
        else:
            assert value == tstate[name].numpy(), name
    net.eval(), tnet.eval()
    assert_close(net(x), tnet(torch.from_numpy(x)).detach().numpy(), F32)


def test_need_input_grad_false_skips_only_the_input_gradient():
    """need_input_grad=False returns None and leaves parameter gradients unchanged."""
    x = _x("randn", (2, 1, 8, 8), F32)
    grads = []
    for need in (True, False):
        net = _net(np.random.default_rng(3))
        net(x)
        out = net.backward(np.ones((2, 5), np.float32), need_input_grad=need)
        assert (out is None) == (not need)
        grads.append([p.grad.copy() for p in net.parameters()])
    for with_input, without in zip(*grads, strict=True):
        np.testing.assert_array_equal(with_input, without)


# --- gradient accumulation, buffers, errors --------------------------------------------


def test_backward_accumulates_and_zero_grad_clears_in_place():
    """Two backward calls double the gradient; grad arrays are never replaced."""
    layer = nn.Conv2d(2, 3, 3, rng=0)
    x, r = _x("randn", (2, 2, 5, 5), F32), _x("randn", (2, 3, 3, 3), F32, seed=1)
    buffers = [p.grad for p in layer.parameters()]
    layer(x)
    layer.backward(r)
    once = [p.grad.copy() for p in layer.parameters()]
    layer.backward(r)
    for p, g, buf in zip(layer.parameters(), once, buffers, strict=True):
        assert p.grad is buf
        assert_close(p.grad, 2 * g, F32)
    layer.zero_grad()
    assert all(
        p.grad is buf and not p.grad.any()
        for p, buf in zip(layer.parameters(), buffers, strict=True)
    )


PARAMETRISED = [c for c in LAYER_IDS if LAYERS[c][0](F32).parameters()]


@pytest.mark.parametrize(
    ("case", "sample"),
    [(c, False) for c in PARAMETRISED]
    + [(c, True) for c in PARAMETRISED if c.startswith(("conv", "linear"))],
    ids=lambda v: {False: "batch", True: "one-sample"}.get(v, v),
)
def test_zero_grad_then_backward_writes_the_gradient(case, sample):
    """zero_grad marks the gradients zero and the next backward writes them, not adds to
    them: after a poisoned gradient (NaN, which adding would keep), the fresh layer's bits;
    read in between, a gradient is zeros. Batches and one sample (a Linear's row path)."""
    make, _, shape, kind = LAYERS[case]
    if sample:
        shape = shape[1:] if case.startswith("conv") else shape[-1:]
    x = _x(kind, shape, F32)
    fresh, used = make(F32), make(F32)
    r = _x("randn", fresh(x).shape, F32, seed=1)
    fresh.backward(r)
    used(x)
    used.backward(r)
    for p in used.parameters():
        p.grad[...] = np.nan
    used.zero_grad()
    assert not any(p.grad.any() for p in used.parameters())  # read: zeros
    for p in used.parameters():
        p.grad[...] = np.nan
    used.zero_grad()
    used(x)
    used.backward(r)
    for p, q in zip(used.parameters(), fresh.parameters(), strict=True):
        np.testing.assert_array_equal(p.grad, q.grad)


@pytest.mark.parametrize("case", [c for c in LAYER_IDS if c != "bn-eval"])
def test_backward_before_forward_is_an_error(case):
    """A layer that never ran forward refuses backward with a RuntimeError."""
    layer = LAYERS[case][0](F32)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.zeros((1, 1), np.float32))


@pytest.mark.parametrize("loss_fn", [nn.CrossEntropyLoss(), nn.BCELoss()], ids=["ce", "bce"])
def test_loss_backward_before_forward_is_an_error(loss_fn):
    """A loss that never ran forward refuses backward."""
    with pytest.raises(RuntimeError, match="backward called before forward"):
        loss_fn.backward()


# --- unbatched samples and single-sample paths ------------------------------------------

UNBATCHED = {
    "conv": (lambda: nn.Conv2d(2, 3, 3, padding=1, rng=0), (2, 4, 5)),
    "pool": (lambda: nn.MaxPool2d(2), (2, 4, 6)),
    "bn": (lambda: _bn_with_stats(F32), (3, 4, 4)),
    "relu": (nn.ReLU, (2, 3, 3)),
    "sigmoid": (nn.Sigmoid, (2, 3, 3)),
    "flatten": (nn.Flatten, (2, 3, 3)),
    "linear": (lambda: nn.Linear(6, 4, rng=0), (6,)),
    "net": (
        lambda: nn.Sequential(
            nn.Conv2d(1, 2, 3, rng=0),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8, 3, rng=1),
        ),
        (1, 6, 6),
    ),
}


@pytest.mark.parametrize("case", list(UNBATCHED))
def test_unbatched_sample_equals_batch_of_one(case):
    """layer(x) for one sample equals layer(x[None])[0], and so does its backward."""
    make, shape = UNBATCHED[case]
    x = _x("distinct", shape, F32)
    batched, single = make(), make()
    y1 = batched(x[np.newaxis])
    y0 = single(x)
    assert y0.shape == y1.shape[1:]
    assert_close(y0, y1[0], F32)
    r = _x("randn", y0.shape, F32, seed=2)
    assert_close(single.backward(r), batched.backward(r[np.newaxis])[0], F32)
    for p0, p1 in zip(single.parameters(), batched.parameters(), strict=True):
        assert_close(p0.grad, p1.grad, F32)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(7,), (1, 7), (1, 1, 7)], ids=["sample", "batch1", "rank3"])
def test_linear_one_row_path_matches_the_batched_path(shape, dtype):
    """One row (matrix-vector products, an outer product for the weight gradient) gives
    what the general GEMM path gives for that row inside a batch of three whose other
    rows get a zero gradient; gradients accumulate over calls."""
    x = _x("randn", shape, dtype)
    g = _x("randn", shape[:-1] + (5,), dtype, seed=1)
    one, many = nn.Linear(7, 5, rng=0, dtype=dtype), nn.Linear(7, 5, rng=0, dtype=dtype)
    xs = np.concatenate([x.reshape(1, 7), _x("randn", (2, 7), dtype, seed=2)])
    gs = np.concatenate([g.reshape(1, 5), np.zeros((2, 5), dtype)])
    for _ in range(2):  # the second call adds into the gradients of the first
        y = one(x)
        assert_close(y, many(xs)[:1].reshape(y.shape), dtype)
        assert_close(one.backward(g), many.backward(gs)[:1].reshape(shape), dtype)
    assert_close(one.weight.grad, many.weight.grad, dtype)
    assert_close(one.bias.grad, many.bias.grad, dtype)
    scratch = one._scratch_w
    one(x)
    assert one.backward(g, need_input_grad=False) is None
    assert one._scratch_w is scratch  # reused, not reallocated


def test_cross_entropy_unbatched():
    """Logits (C,) with an int target give the batch-of-one loss and an unbatched grad."""
    logits = _x("randn", (5,), F32)
    single, batched = nn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    assert_close(single(logits, 3), batched(logits[None], np.array([3])), F32)
    assert_close(single.backward(), batched.backward()[0], F32)


@pytest.mark.parametrize("call", ["positional", "keyword"])
def test_backward_refuses_a_learning_rate_and_points_to_compat(call):
    """nn layers never step their own parameters: the tutorials' backward(grad, lr) is a
    TypeError naming fastcnn.compat, raised before anything is computed or changed."""
    layer = nn.Linear(3, 2, rng=0)
    layer(np.ones((1, 3), np.float32))
    before = layer.weight.data.copy()
    args, kwargs = ((0.1,), {}) if call == "positional" else ((), {"learning_rate": 0.1})
    with pytest.raises(TypeError, match=r"Linear\.backward: learning_rate .*fastcnn\.compat"):
        layer.backward(np.ones((1, 2), np.float32), *args, **kwargs)
    np.testing.assert_array_equal(layer.weight.data, before)
    np.testing.assert_array_equal(layer.weight.grad, 0)


def test_layers_do_not_import_the_optimisers():
    """Importing fastcnn.nn leaves fastcnn.optim unimported (the house's floors)."""
    import subprocess
    import sys

    code = "import sys, fastcnn.nn; print('fastcnn.optim' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- modes: dropout and batch norm -------------------------------------------------------


def test_dropout_train_masks_and_scales():
    """In training about p of the elements are zero, the rest scaled by 1/(1-p); backward
    uses the same mask; the same seed gives the same mask."""
    x = np.ones((200, 50), np.float32)
    layer = nn.Dropout(0.3, rng=42)
    y = layer(x)
    kept = y != 0
    assert abs(1 - kept.mean() - 0.3) < 0.02  # 10,000 draws: 5 standard deviations
    np.testing.assert_allclose(y[kept], np.float32(1 / 0.7), rtol=1e-6)
    np.testing.assert_array_equal(layer.backward(x) != 0, kept)
    np.testing.assert_array_equal(nn.Dropout(0.3, rng=42)(x), y)


@pytest.mark.parametrize(
    ("p", "training", "expect"),
    [
        pytest.param(0.5, False, "identity", id="eval"),
        pytest.param(0.0, True, "identity", id="p0-train"),
        pytest.param(1.0, True, "zeros", id="p1-train"),
    ],
)
def test_dropout_edge_cases(p, training, expect):
    """Evaluation and p=0 are the identity; p=1 zeroes everything (and its gradient)."""
    x = _x("randn", (4, 5), F32)
    layer = nn.Dropout(p, rng=0).train(training)
    y = layer(x)
    expected = x if expect == "identity" else np.zeros_like(x)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(layer.backward(x), expected)


def test_train_eval_propagate_through_sequential():
    """eval() and train() reach every layer and return the module."""
    net = nn.Sequential(nn.Dropout(0.5), nn.Sequential(nn.BatchNorm2d(2)))
    assert net.eval() is net
    assert not any(m.training for m in (net, net[0], net[1], net[1][0]))
    net.train()
    assert all(m.training for m in (net, net[0], net[1], net[1][0]))


# --- initialisation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "fan_in"),
    [
        pytest.param(lambda rng: nn.Conv2d(4, 64, (3, 5), rng=rng), 60, id="conv"),
        pytest.param(lambda rng: nn.Linear(50, 200, rng=rng), 50, id="linear"),
    ],
)
def test_init_is_torch_default_uniform(make, fan_in):
    """Weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), float32, seeded, no globals."""
    bound = 1 / np.sqrt(fan_in)
    layer = make(0)
    for p in layer.parameters():
        assert p.dtype == np.float32
        assert np.abs(p.data).max() <= bound
    w = layer.weight.data
    assert np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound  # >= 3,000 draws
    np.testing.assert_array_equal(make(0).weight.data, w)
    np.testing.assert_array_equal(make(np.random.default_rng(0)).weight.data, w)
    assert not np.array_equal(make(1).weight.data, w)
    assert not np.array_equal(make(None).weight.data, make(None).weight.data)  # fresh entropy
    before = np.random.get_state()  # noqa: NPY002 (checks the legacy global state is untouched)
    make(None), make(3)
    after = np.random.get_state()  # noqa: NPY002
    assert before[2] == after[2] and np.array_equal(before[1], after[1])


def test_float64_layers():
    """dtype=float64 gives float64 parameters, buffers and outputs."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0, dtype="float64"), nn.BatchNorm2d(2, dtype=F64))
    assert {v.dtype for k, v in net.state_dict().items() if "num_batches" not in k} == {F64}
    assert net(_x("randn", (2, 1, 4, 4), F64)).dtype == F64


# --- state dicts ------------------------------------------------------------------------------


def test_state_dict_keys_and_copies():
    """torch's key names and order; the arrays are copies of the live ones."""
    net = _net(np.random.default_rng(0))
    state = net.state_dict()
    assert list(state) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "5.weight",
        "5.bias",
    ]
    assert state["1.num_batches_tracked"].dtype == np.int64
    assert state["1.num_batches_tracked"].shape == ()
    state["0.weight"][:] = 0
    assert net[0].weight.data.any()


def test_load_state_dict_copies_in_place():
    """Loading copies values into the existing arrays (optimisers keep working)."""
    src, dst = _net(np.random.default_rng(0)), _net(np.random.default_rng(1))
    src(_x("randn", (2, 1, 8, 8), F32))  # move the running stats
    arrays = [p.data for p in dst.parameters()]
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert all(p.data is a for p, a in zip(dst.parameters(), arrays, strict=True))
    for (k, a), b in zip(dst.state_dict().items(), src.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_load_state_dict_non_strict_reports_keys():
    """strict=False loads what matches and reports the rest."""
    net = _net(np.random.default_rng(0))
    state = _net(np.random.default_rng(1)).state_dict()
    state.pop("5.bias")
    state["extra"] = np.zeros(1)
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == ["5.bias"] and result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(net[0].weight.data, state["0.weight"])


def test_num_batches_tracked_accepts_any_integer_dtype():
    """torch exports int64; an int32 counter is accepted and stored as int64."""
    bn = nn.BatchNorm2d(2)
    state = bn.state_dict()
    state["num_batches_tracked"] = np.array(7, np.int32)
    bn.load_state_dict(state)
    assert bn.num_batches_tracked.dtype == np.int64 and int(bn.num_batches_tracked) == 7


# --- construction and repr --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "text"),
    [
        pytest.param(
            nn.Conv2d(1, 32, 3, rng=0),
            "Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1))",
            id="conv",
        ),
        pytest.param(
            nn.Conv2d(2, 4, (3, 5), stride=2, padding=1, dilation=2, bias=False, rng=0, dtype=F64),
            "Conv2d(2, 4, kernel_size=(3, 5), stride=(2, 2), padding=(1, 1), dilation=(2, 2), "
            "bias=False, dtype=float64)",
            id="conv-all",
        ),
        pytest.param(nn.MaxPool2d(2), "MaxPool2d(kernel_size=2)", id="pool"),
        pytest.param(
            nn.MaxPool2d((3, 2), stride=1, padding=1),
            "MaxPool2d(kernel_size=(3, 2), stride=1, padding=1)",
            id="pool-all",
        ),
        pytest.param(nn.BatchNorm2d(8), "BatchNorm2d(8)", id="bn"),
        pytest.param(
            nn.BatchNorm2d(8, eps=1e-3, momentum=None),
            "BatchNorm2d(8, eps=0.001, momentum=None)",
            id="bn-all",
        ),
        pytest.param(nn.Linear(3, 4, rng=0), "Linear(in_features=3, out_features=4)", id="linear"),
        pytest.param(
            nn.Linear(3, 4, bias=False, rng=0),
            "Linear(in_features=3, out_features=4, bias=False)",
            id="linear-nobias",
        ),
        pytest.param(nn.Dropout(0.25), "Dropout(p=0.25)", id="dropout"),
        pytest.param(nn.ReLU(), "ReLU()", id="relu"),
        pytest.param(nn.CrossEntropyLoss(), "CrossEntropyLoss()", id="ce"),
        pytest.param(
            nn.Sequential(nn.Flatten(), nn.Sigmoid()),
            "Sequential(\n  (0): Flatten()\n  (1): Sigmoid()\n)",
            id="sequential",
        ),
    ],
)
def test_repr_shows_non_default_settings(layer, text):
    """repr is torch-like and shows only what differs from the defaults."""
    assert repr(layer) == text


def test_sequential_indexing():
    """len, iteration, integer and slice indexing share the same layer objects."""
    layers = [nn.ReLU(), nn.Sigmoid(), nn.Flatten()]
    net = nn.Sequential(*layers)
    assert len(net) == 3 and list(net) == layers and net[-1] is layers[2]
    assert list(net[1:]) == layers[1:]


def test_attribute_assignment_registers_and_unregisters():
    """Assigning a Parameter or Module registers it in order; replacing it by None forgets it."""
    conv = nn.Conv2d(1, 2, 3, rng=0)
    assert [n for n, _ in conv.named_parameters()] == ["weight", "bias"]
    conv.bias = None
    assert list(conv.state_dict()) == ["weight"]
    net = nn.Sequential(nn.ReLU())
    net.head = nn.Linear(2, 1, rng=0)
    assert list(net.state_dict()) == ["head.weight", "head.bias"]


@pytest.mark.parametrize(
    "pool",
    [
        pytest.param({"kernel_size": 2}, id="2x2"),
        pytest.param({"kernel_size": 3, "stride": 1, "padding": 1}, id="overlapping-padded"),
    ],
)
def test_sequential_runs_relu_pool_as_pool_relu(pool):
    """A ReLU directly followed by a MaxPool2d runs after it, with the same output and
    gradients as the layers run one by one in the order given (NaN and ties included)."""
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, rng=0), nn.ReLU(), nn.MaxPool2d(**pool),
        nn.Flatten(), nn.Linear(4 * 16 if pool["kernel_size"] == 2 else 4 * 64, 3, rng=1),
    )  # fmt: skip
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 10, 10)).astype(np.float32)
    x[0, 0, :5, :5] = 0  # ties at zero
    x[1, 1, 4, 4] = np.nan
    grad = rng.standard_normal((3, 3)).astype(np.float32)
    assert [type(layer) for layer in net._schedule()][1:3] == [nn.MaxPool2d, nn.ReLU]
    results = []
    for run_as_given in (False, True):
        net.zero_grad()
        if run_as_given:
            h = x
            for layer in net:
                h = layer(h)
            y, g = h, grad
            for layer in reversed(list(net)):
                g = layer.backward(g)
        else:
            y = net(x)
            g = net.backward(grad)
        results.append([y, g] + [p.grad.copy() for p in net.parameters()])
    for got, want in zip(*results, strict=True):
        np.testing.assert_array_equal(got, want)
