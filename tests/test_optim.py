"""fastcnn.optim: SGD and Adam against torch.optim, state_dict resume, no allocation in
``step``, argument checks.

Tolerances against torch: float64 ``rtol=1e-12, atol=1e-14`` (times the largest
magnitude); float32 ``rtol=1e-6, atol=1e-7``, since torch fuses ``a + alpha * b`` into
one FMA where NumPy rounds twice.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from cases import assert_close

import fastcnn
from fastcnn.nn import Parameter
from fastcnn.optim import SGD, Adam

TORCH_TOL = {
    np.dtype(np.float32): {"rtol": 1e-6, "atol": 1e-7},
    np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-14},
}
SHAPES = [(3, 4), (5,), (2, 1, 3, 3)]

CONFIGS = [
    pytest.param("SGD", {"lr": 0.1}, id="sgd"),
    pytest.param("SGD", {"lr": 0.1, "momentum": 0.9}, id="sgd-momentum"),
    pytest.param("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}, id="sgd-nesterov"),
    pytest.param("SGD", {"lr": 0.1, "weight_decay": 0.01}, id="sgd-weight-decay"),
    pytest.param(
        "SGD",
        {"lr": 0.1, "momentum": 0.8, "weight_decay": 1e-3, "nesterov": True},
        id="sgd-nesterov-weight-decay",
    ),
    pytest.param("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}, id="sgd-dampening"),
    pytest.param("Adam", {}, id="adam-defaults"),
    pytest.param("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6}, id="adam-betas"),
    pytest.param("Adam", {"lr": 0.01, "weight_decay": 0.1}, id="adam-weight-decay"),
]
DTYPES = [pytest.param(np.dtype(t), id=np.dtype(t).name) for t in (np.float32, np.float64)]


def _params(dtype, seed=0, strided=False):
    """Parameters of SHAPES; ``strided``: each ``data`` is every other element of a wider
    array (not contiguous: SGD's NumPy path rather than its one-pass kernel)."""
    rng = np.random.default_rng(seed)
    params = []
    for shape in SHAPES:
        values = rng.standard_normal(shape).astype(dtype)
        if strided:
            view = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2]
            view[...] = values
            values = view
        params.append(Parameter(values))
    return params


def _grads(dtype, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]


def _run(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            np.copyto(p.grad, g)
        opt.step()


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kind", "hyper"), CONFIGS)
def test_matches_torch_optim(kind, hyper, dtype, strided):
    """Five steps with the same gradients leave the same parameters as torch.optim."""
    torch = pytest.importorskip("torch")
    params = _params(dtype, strided=strided)
    assert all(p.data.flags.c_contiguous != strided for p in params)
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    opt = getattr(fastcnn.optim, kind)(params, **hyper)
    topt = getattr(torch.optim, kind)(tparams, **hyper)
    for step_grads in _grads(dtype, 5):
        for p, tp, g in zip(params, tparams, step_grads, strict=True):
            np.copyto(p.grad, g)
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, tp in zip(params, tparams, strict=True):
        assert_close(p.data, tp.detach().numpy(), dtype, **TORCH_TOL[dtype])


@pytest.mark.parametrize(("kind", "hyper"), CONFIGS)
def test_state_dict_resume_is_bitwise(kind, hyper, tmp_path):
    """3 steps, save (through fastcnn.save/load), restore into fresh objects, 3 more steps:
    bitwise equal to 6 uninterrupted steps."""
    dtype = np.dtype(np.float32)
    grads = _grads(dtype, 6)
    cls = getattr(fastcnn.optim, kind)
    straight = _params(dtype)
    _run(cls(straight, **hyper), straight, grads)

    first = _params(dtype)
    opt = cls(first, **hyper)
    _run(opt, first, grads[:3])
    path = tmp_path / "ckpt.npz"
    fastcnn.save({"params": [p.data for p in first], "optimizer": opt.state_dict()}, path)
    saved = fastcnn.load(path)
    resumed = [Parameter(np.zeros_like(p.data)) for p in first]
    for p, data in zip(resumed, saved["params"], strict=True):
        np.copyto(p.data, data)
    opt2 = cls(resumed, lr=0.5)  # hyper-parameters come from the state
    opt2.load_state_dict(saved["optimizer"])
    assert opt2.state_dict()["hyper"] == opt.state_dict()["hyper"]
    _run(opt2, resumed, grads[3:])
    for a, b in zip(resumed, straight, strict=True):
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize(("kind", "hyper"), CONFIGS)
def test_step_allocates_no_arrays(kind, hyper):
    """After construction, step() allocates less than one parameter's worth of memory."""
    params = [Parameter(np.ones(100_000, np.float32)), Parameter(np.ones((64, 64), np.float32))]
    for p in params:
        p.grad.fill(0.5)
    opt = getattr(fastcnn.optim, kind)(params, **hyper)
    opt.step()  # the first SGD momentum step copies into the preallocated buffer
    tracemalloc.start()
    try:
        for _ in range(3):
            opt.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 64 * 4  # one 16 KiB temporary would exceed this


def test_zero_grad_clears_in_place():
    """zero_grad fills every gradient with zeros without replacing the arrays."""
    params = _params(np.float32)
    grads = [p.grad for p in params]
    for p in params:
        p.grad += 1
    SGD(params, lr=0.1).zero_grad()
    assert all(p.grad is g and not g.any() for p, g in zip(params, grads, strict=True))


def test_sgd_first_momentum_step_is_plain_sgd():
    """torch's rule: the momentum buffer starts as the first gradient (no dampening)."""
    (p,) = params = [Parameter(np.array([1.0, 2.0]))]
    p.grad[:] = [0.5, -1.0]
    opt = SGD(params, lr=0.1, momentum=0.9, dampening=0.5)
    opt.step()
    np.testing.assert_allclose(p.data, [0.95, 2.1], rtol=1e-15)
    np.testing.assert_array_equal(opt.buffers["momentum_buffer"][0], [0.5, -1.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kind", "hyper"), CONFIGS)
def test_kernel_matches_numpy_path(kind, hyper, dtype):
    """The one-pass kernels (contiguous parameters) and the NumPy ufuncs (strided ones)
    agree over five steps, up to the rounding of the products the kernels fuse."""
    runs = []
    for strided in (False, True):
        params = _params(dtype, strided=strided)
        _run(getattr(fastcnn.optim, kind)(params, **hyper), params, _grads(dtype, 5))
        runs.append(params)
    for a, b in zip(*runs, strict=True):
        assert_close(a.data, b.data, dtype, **TORCH_TOL[dtype])


def test_sgd_momentum_by_hand():
    """Two momentum steps worked by hand: b1 = g1, b2 = 0.9 b1 + g2, p -= 0.1 b."""
    (p,) = params = [Parameter(np.array([1.0, -2.0]))]
    opt = SGD(params, lr=0.1, momentum=0.9)
    p.grad[:] = [1.0, 2.0]
    opt.step()  # b = [1, 2]; p = [0.9, -2.2]
    p.grad[:] = [-1.0, 0.5]
    opt.step()  # b = [0.9 - 1, 1.8 + 0.5] = [-0.1, 2.3]; p = [0.91, -2.43]
    np.testing.assert_allclose(opt.buffers["momentum_buffer"][0], [-0.1, 2.3], rtol=1e-14)
    np.testing.assert_allclose(p.data, [0.91, -2.43], rtol=1e-14)


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
def test_adam_first_step_moves_each_weight_by_lr(strided):
    """Step 1 by hand: m = (1 - b1) g and v = (1 - b2) g^2, so with eps = 0 the update
    lr / (1 - b1) * m / (sqrt(v) / sqrt(1 - b2)) is lr * sign(g), whatever g's size."""
    (p,) = params = _params(np.float64, strided=strided)[:1]
    start = p.data.copy()
    p.grad[...] = np.array([[3.0, -0.5, 1e-3, -70.0]] * 3)
    Adam(params, lr=0.01, betas=(0.8, 0.99), eps=0.0).step()
    np.testing.assert_allclose(p.data, start - 0.01 * np.sign(p.grad), rtol=1e-14)


def test_state_dict_format():
    """The documented layout: kind, hyper, steps, buffers as one array copy per param."""
    params = _params(np.float32)
    opt = Adam(params, lr=0.01)
    _run(opt, params, _grads(np.float32, 2))
    state = opt.state_dict()
    assert state["kind"] == "Adam" and state["steps"] == 2
    assert state["hyper"] == {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    assert set(state["buffers"]) == {"exp_avg", "exp_avg_sq"}
    for live, saved in zip(opt.buffers["exp_avg"], state["buffers"]["exp_avg"], strict=True):
        assert saved is not live and np.array_equal(saved, live)
    assert SGD(params, lr=0.1).state_dict()["buffers"] == {}


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        pytest.param(lambda p: SGD(p, lr=-0.1), ValueError, r"lr.*-0.1", id="sgd-lr-negative"),
        pytest.param(lambda p: SGD(p, lr=None), TypeError, r"lr.*None", id="sgd-lr-none"),
        pytest.param(lambda p: SGD(p, lr=np.inf), ValueError, r"lr.*inf", id="sgd-lr-inf"),
        pytest.param(lambda p: SGD(p, 0.1, momentum=-1), ValueError, r"momentum", id="sgd-mom"),
        pytest.param(
            lambda p: SGD(p, 0.1, weight_decay=-1), ValueError, r"weight_decay", id="sgd-wd"
        ),
        pytest.param(lambda p: SGD(p, 0.1, nesterov=1), TypeError, r"nesterov", id="sgd-nest-int"),
        pytest.param(
            lambda p: SGD(p, 0.1, momentum=0.9, nesterov=True, dampening=0.1),
            ValueError,
            r"nesterov.*dampening",
            id="sgd-nesterov-dampening",
        ),
        pytest.param(lambda p: Adam(p, betas=(0.9,)), TypeError, r"betas", id="adam-betas-len"),
        pytest.param(lambda p: Adam(p, betas=(0.9, 1.0)), ValueError, r"betas\[1\]", id="adam-b2"),
        pytest.param(lambda p: Adam(p, eps=-1e-8), ValueError, r"eps", id="adam-eps"),
        pytest.param(lambda p: SGD(p[0], lr=0.1), TypeError, r"params", id="single-param"),
        pytest.param(
            lambda p: SGD([p[0], p[0]], lr=0.1),
            ValueError,
            r"params\[1\].*more than once",
            id="duplicate",
        ),
        pytest.param(
            lambda p: Adam([np.zeros(3)]), TypeError, r"params\[0\].*ndarray", id="raw-array"
        ),
        pytest.param(lambda p: Adam(iter([])), ValueError, r"empty", id="empty"),
        pytest.param(
            lambda p: SGD(p, lr=1e39),
            ValueError,
            r"^SGD: lr=1e\+39 overflows float32, the parameters' dtype \(largest finite value "
            r"3.40282e\+38\)$",
            id="sgd-lr-overflows-float32",
        ),
        pytest.param(
            lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=4e38),
            ValueError,
            r"SGD: weight_decay=4e\+38 overflows float32",
            id="sgd-weight-decay-overflows",
        ),
        pytest.param(
            lambda p: Adam(p, lr=1e300), ValueError, r"Adam: lr=1e\+300 overflows", id="adam-lr"
        ),
        pytest.param(
            lambda p: Adam(p, eps=1e39), ValueError, r"Adam: eps=1e\+39 overflows", id="adam-eps"
        ),
        pytest.param(
            lambda p: SGD([*p, Parameter(np.zeros(2))], lr=1e39),
            ValueError,
            r"lr=1e\+39 overflows float32",
            id="mixed-dtypes-smallest-wins",
        ),
    ],
)
def test_rejects_bad_arguments(make, exc, match):
    """Bad hyper-parameters and parameter lists raise, naming the argument."""
    with pytest.raises(exc, match=match):
        make(_params(np.float32))


def test_float64_parameters_take_rates_beyond_float32():
    params = _params(np.float64)
    assert SGD(params, lr=1e39).lr == 1e39
    with pytest.raises(ValueError, match=r"lr=1e\+309|lr must be finite"):
        SGD(params, lr=1e309)


def test_overflowing_rate_is_refused_before_any_step():
    """The issue's case: lr=1e39 used to be accepted, and one step left inf/NaN weights."""
    params = _params(np.float32)
    before = [p.data.copy() for p in params]
    with pytest.raises(ValueError, match="lr=1e\\+39 overflows float32"):
        SGD(params, lr=1e39, momentum=0.9)
    for p, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(p.data, b)
    opt = SGD(params, lr=3e38)  # representable: accepted; the step's overflow is fit's to see
    assert opt.lr == 3e38


@pytest.mark.parametrize(
    ("edit", "exc", "match"),
    [
        pytest.param(lambda s: s.update(kind="Adam"), ValueError, r"'Adam'", id="kind"),
        pytest.param(
            lambda s: s["hyper"].update(lr=1e39), ValueError, r"lr=1e\+39 overflows", id="lr-1e39"
        ),
        pytest.param(
            lambda s: s["buffers"]["momentum_buffer"].pop(),
            ValueError,
            r"2 arrays for 3",
            id="count",
        ),
        pytest.param(
            lambda s: s["buffers"]["momentum_buffer"].__setitem__(1, np.zeros(4, np.float32)),
            ValueError,
            r"\[1\].*shape \(5,\)",
            id="shape",
        ),
        pytest.param(
            lambda s: s["buffers"]["momentum_buffer"].__setitem__(0, np.zeros((3, 4))),
            ValueError,
            r"\[0\].*float32.*float64",
            id="dtype",
        ),
        pytest.param(lambda s: s["hyper"].update(lr=-1.0), ValueError, r"lr", id="bad-lr"),
        pytest.param(lambda s: s.update(steps=-2), ValueError, r"steps", id="steps"),
        pytest.param(lambda s: s.pop("hyper"), ValueError, r"hyper", id="missing-entry"),
    ],
)
def test_load_state_dict_rejects_mismatches(edit, exc, match):
    """A state from another optimiser or other parameters is refused; nothing changes."""
    params = _params(np.float32)
    opt = SGD(params, lr=0.1, momentum=0.9)
    _run(opt, params, _grads(np.float32, 2))
    before = opt.state_dict()
    state = opt.state_dict()
    edit(state)
    with pytest.raises(exc, match=match):
        opt.load_state_dict(state)
    after = opt.state_dict()
    assert after["hyper"] == before["hyper"] and after["steps"] == before["steps"]
    for a, b in zip(
        after["buffers"]["momentum_buffer"], before["buffers"]["momentum_buffer"], strict=True
    ):
        np.testing.assert_array_equal(a, b)


# --- the learning-rate schedule ---------------------------------------------------------


def test_cosine_schedule_by_hand():
    schedule = fastcnn.optim.CosineSchedule(0.1, epochs=4, min_lr=0.02)
    # min_lr + (lr - min_lr) * (1 + cos(pi * (e - 1) / 4)) / 2, e = 1..4, then the floor
    halfway = 0.02 + 0.08 * 0.5
    shoulder = 0.08 * (1 + 2**-0.5) / 2
    expected = [0.1, 0.02 + shoulder, halfway, 0.1 - shoulder, 0.02, 0.02]
    assert [schedule(e) for e in range(1, 7)] == pytest.approx(expected, rel=1e-15)
    assert fastcnn.optim.CosineSchedule(0.05, epochs=1)(1) == 0.05


@pytest.mark.parametrize(("epochs", "min_lr"), [(10, 0.0), (3, 0.01), (1, 0.0)])
def test_cosine_schedule_matches_torch(epochs, min_lr):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=min_lr)
    theirs = []
    for _ in range(epochs):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = fastcnn.optim.CosineSchedule(0.05, epochs, min_lr)
    assert [ours(e) for e in range(1, epochs + 1)] == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        pytest.param({"lr": -1.0, "epochs": 3}, ValueError, r"lr must be >= 0", id="lr"),
        pytest.param({"lr": 0.1, "epochs": 0}, ValueError, r"epochs must be >= 1", id="epochs"),
        pytest.param({"lr": 0.1, "epochs": 2.0}, TypeError, r"epochs must be an int", id="float"),
        pytest.param({"lr": 0.1, "epochs": True}, TypeError, r"epochs must be an int", id="bool"),
        pytest.param(
            {"lr": 0.1, "epochs": 3, "min_lr": 0.2}, ValueError, r"min_lr must be <= 0.1", id="min"
        ),
    ],
)
def test_cosine_schedule_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=f"CosineSchedule: {match}"):
        fastcnn.optim.CosineSchedule(**kwargs)
