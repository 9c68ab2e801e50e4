"""Oracle tests for the regression losses (mse_loss, l1_loss, smooth_l1_loss, huber_loss) against torch 2.13.

Every case compares values, shapes, dtypes and gradients (w.r.t. input, target and, where given, the
element-wise ``weight``) with ``torch.nn.functional`` through :func:`helpers.assert_matches_torch`
(float64: 1e-9, float32: rtol 1e-5). Inputs are multiples of 1/64, so that the exact ties (a zero
error, an error exactly at the smooth-L1 / Huber knee) survive the cast to float32.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
from helpers import DTYPES, LEGACY, SHAPE_IDS, SHAPES, assert_close_to, assert_matches_torch

pytestmark = pytest.mark.filterwarnings("error")  # no case may warn unless the test expects it

REDUCTIONS = ["none", "mean", "sum"]

FUNCS = {
    "mse_loss": (LF.mse_loss, TF.mse_loss),
    "l1_loss": (LF.l1_loss, TF.l1_loss),
    "smooth_l1_loss": (LF.smooth_l1_loss, TF.smooth_l1_loss),
    "huber_loss": (LF.huber_loss, TF.huber_loss),
}
LEGACY_FUNCS = ["mse_loss", "l1_loss", "smooth_l1_loss"]  # huber_loss has no size_average/reduce


def _dyadic(shape, gen, scale=2.0):
    """Random values on a 1/64 grid (exact in float32 and float64)."""
    return torch.round(torch.randn(shape, generator=gen, dtype=torch.float64) * scale * 64) / 64


def make_pair(shape, knee: float | None, seed: int):
    """``(input, target)`` of ``shape``; when there is room, one zero error and errors of ``±knee``."""
    g = torch.Generator().manual_seed(seed)
    x = _dyadic(shape, g)
    y = _dyadic(shape, g)
    n = x.numel()
    if n >= 4:
        xf, yf = x.view(-1), y.view(-1)
        yf[0] = xf[0]  # zero error: L1's sub-gradient 0
        if knee is not None:
            yf[1] = xf[1] - knee  # exactly at the knee, both signs
            yf[2] = xf[2] + knee
    return x, y


def make_weight(shape, seed: int):
    g = torch.Generator().manual_seed(seed + 1000)
    w = torch.rand(shape, generator=g, dtype=torch.float64) * 2
    if w.numel() >= 5:
        w.view(-1)[4] = 0.0  # a zero weight
    return w


def _case_seed(*parts) -> int:
    return sum((i + 1) * 7919 * len(str(p)) + sum(map(ord, str(p))) for i, p in enumerate(parts)) % 100_000


# ------------------------------------------------------------------------------------------- grids


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
def test_mse_l1_grid(name, weighted, reduction, dtype, shape):
    ours, ref = FUNCS[name]
    seed = _case_seed(name, weighted, reduction, shape)
    x, y = make_pair(shape, 0.0, seed)
    inputs = {"input": x, "target": y}
    grad_wrt = ["input", "target"]
    if weighted:
        inputs["weight"] = make_weight(shape, seed)
        grad_wrt.append("weight")
    assert_matches_torch(ours, ref, inputs, {"reduction": reduction}, dtype=dtype, grad_wrt=grad_wrt, seed=seed)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0, 2.5])
def test_smooth_l1_grid(beta, reduction, dtype, shape):
    seed = _case_seed("smooth_l1", beta, reduction, shape)
    x, y = make_pair(shape, beta, seed)
    assert_matches_torch(
        LF.smooth_l1_loss,
        TF.smooth_l1_loss,
        {"input": x, "target": y},
        {"reduction": reduction, "beta": beta},
        dtype=dtype,
        grad_wrt=("input", "target"),
        seed=seed,
    )


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("delta", [1.0, 0.3, 3.0])
def test_huber_grid(delta, weighted, reduction, dtype, shape):
    seed = _case_seed("huber", delta, weighted, reduction, shape)
    x, y = make_pair(shape, delta if delta != 0.3 else 0.25, seed)  # 0.3 is not dyadic: tie at 0.25 instead
    inputs = {"input": x, "target": y}
    grad_wrt = ["input", "target"]
    if weighted:
        inputs["weight"] = make_weight(shape, seed)
        grad_wrt.append("weight")
    assert_matches_torch(
        LF.huber_loss,
        TF.huber_loss,
        inputs,
        {"reduction": reduction, "delta": delta},
        dtype=dtype,
        grad_wrt=grad_wrt,
        seed=seed,
    )


def test_grids_are_not_trivial():
    """The grids above hold non-empty tensors with ties at 0 and at the knee, and weighted means differ."""
    x, y = make_pair((3, 5), 2.5, 1)
    d = (x - y).view(-1)
    assert x.numel() == 15 and d[0] == 0 and d[1] == 2.5 and d[2] == -2.5
    w = make_weight((3, 5), 1)
    loss = (x - y) ** 2
    # mse's weighted mean is Σwl/Σw, huber's is mean(w·l): a case where the two rules disagree
    assert not torch.isclose((w * loss).sum() / w.sum(), (w * loss).mean())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4, 5)], ids=str)
def test_smooth_l1_beta0_equals_torch_l1_exactly(shape, reduction, dtype):
    """beta=0 is exactly L1: bit-for-bit torch's l1_loss, value and gradient (incl. the 0 at a zero error)."""
    x, y = make_pair(shape, 0.0, 5)
    x, y = x.to(dtype), y.to(dtype)
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = LF.smooth_l1_loss(xo, y, reduction=reduction, beta=0.0)
    ref = TF.l1_loss(xr, y, reduction=reduction)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    (go,) = torch.autograd.grad(ours, xo, g)
    (gr,) = torch.autograd.grad(ref, xr, g)
    torch.testing.assert_close(go, gr, rtol=0, atol=0)
    assert go.view(-1)[0] == 0  # zero error: zero sub-gradient


# ------------------------------------------------------------------------------ broadcasting / dtypes

BROADCAST_PAIRS = [
    ((3, 1), (3, 4)),
    ((4,), (3, 4)),
    ((3, 4), ()),
    ((3, 4), (4,)),
    ((2, 1, 5), (3, 1)),
    ((), (5,)),
]


def _call_recording(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [(w.category, str(w.message)) for w in caught]


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("name", list(FUNCS))
def test_broadcast_warns_like_torch(name, shapes):
    ours_fn, ref_fn = FUNCS[name]
    g = torch.Generator().manual_seed(11)
    x = torch.randn(shapes[0], generator=g, dtype=torch.float64)
    y = torch.randn(shapes[1], generator=g, dtype=torch.float64)
    for reduction in REDUCTIONS:
        ours, ours_w = _call_recording(ours_fn, x, y, reduction=reduction)
        ref, ref_w = _call_recording(ref_fn, x, y, reduction=reduction)
        assert ref_w and ref_w[0][0] is UserWarning  # the oracle does warn
        assert ours_w == ref_w
        assert_close_to(ours, ref, torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_matches_torch(
            ours_fn, ref_fn, {"input": x, "target": y}, {"reduction": "mean"}, grad_wrt=("input", "target")
        )
        assert_matches_torch(
            ours_fn, ref_fn, {"input": x, "target": y}, {"reduction": "none"}, grad_wrt=("input", "target")
        )


@pytest.mark.parametrize("name", list(FUNCS))
def test_same_size_does_not_warn(name):
    ours_fn, _ = FUNCS[name]
    x, y = make_pair((3, 4), None, 2)
    _, caught = _call_recording(ours_fn, x, y)
    assert caught == []


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "dtypes", [(torch.float64, torch.float32), (torch.float32, torch.float64)], ids=["f64_f32", "f32_f64"]
)
@pytest.mark.parametrize("name", list(FUNCS))
def test_mixed_dtypes_give_torch_result_dtype(name, dtypes, reduction):
    """Mixed float64/float32 input and target: torch's result dtype, values and gradient dtypes."""
    ours_fn, ref_fn = FUNCS[name]
    x, y = make_pair((3, 5), 1.0, 4)
    x, y = x.to(dtypes[0]), y.to(dtypes[1])
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    xo, yo = x.clone().requires_grad_(), y.clone().requires_grad_()
    ref = ref_fn(xr, yr, reduction=reduction)
    ours = ours_fn(xo, yo, reduction=reduction)
    assert ours.dtype == ref.dtype, f"result dtype {ours.dtype} != torch's {ref.dtype}"
    assert_close_to(ours, ref, torch.float32)
    g = torch.full_like(ref, 1.5)
    try:
        ref_g = torch.autograd.grad(ref, [xr, yr], g)
    except RuntimeError:  # torch's own backward rejects some mixed-dtype graphs (huber, f64 input): values only
        return
    ours_g = torch.autograd.grad(ours, [xo, yo], g.to(ours.dtype))
    for what, o, r, t in zip(("grad input", "grad target"), ours_g, ref_g, (x, y), strict=True):
        assert o.dtype == r.dtype == t.dtype, what
        assert_close_to(o, r, torch.float32, what)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss"])
def test_weight_with_target_broadcast_larger_than_input(name):
    """torch checks ``weight`` against the *original* input size and lets the product broadcast."""
    ours_fn, ref_fn = FUNCS[name]
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 1, generator=g, dtype=torch.float64)
    y = torch.randn(3, 4, generator=g, dtype=torch.float64)
    w = torch.rand(3, 1, generator=g, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for reduction in REDUCTIONS:
            assert_matches_torch(
                ours_fn,
                ref_fn,
                {"input": x, "target": y, "weight": w},
                {"reduction": reduction},
                grad_wrt=("input", "target", "weight"),
            )


# ------------------------------------------------------------------------------------------ legacy


@pytest.mark.parametrize("legacy", LEGACY, ids=str)
@pytest.mark.parametrize("name", LEGACY_FUNCS)
def test_legacy_size_average_reduce(name, legacy):
    ours_fn, ref_fn = FUNCS[name]
    size_average, reduce = legacy
    x, y = make_pair((3, 5), 1.0, 8)
    for reduction in ("mean", "none", "sum"):  # the legacy pair overrides any reduction
        kw = {"size_average": size_average, "reduce": reduce, "reduction": reduction}
        ours, ours_w = _call_recording(ours_fn, x, y, **kw)
        ref, ref_w = _call_recording(ref_fn, x, y, **kw)
        assert ref_w and ours_w == ref_w
        assert_close_to(ours, ref, torch.float64)


# ---------------------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("mse_loss", {}),
        ("mse_loss", {"reduction": "none"}),
        ("l1_loss", {"reduction": "sum"}),
        ("smooth_l1_loss", {"beta": 0.7}),
        ("smooth_l1_loss", {"beta": 0.0, "reduction": "sum"}),
        ("huber_loss", {"delta": 0.6}),
        ("huber_loss", {"delta": 2.0, "reduction": "none"}),
    ],
    ids=str,
)
def test_gradcheck(name, kwargs):
    ours_fn, _ = FUNCS[name]
    g = torch.Generator().manual_seed(21)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    # errors kept away from 0 and from the knees, where finite differences straddle a kink
    y = x.detach() + torch.tensor([0.1, 0.4, 1.3, 2.9], dtype=torch.float64) * torch.tensor([1, -1, 1])[:, None]
    y.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ours_fn(a, b, **kwargs), (x, y))
    if name in ("mse_loss", "l1_loss", "huber_loss"):
        w = torch.rand(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b, c: ours_fn(a, b, weight=c, **kwargs), (x, y, w))


# --------------------------------------------------------------------------------------- properties

_shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)


@settings(max_examples=200)
@given(
    name=st.sampled_from(list(FUNCS)),
    shape=_shapes,
    reduction=st.sampled_from(REDUCTIONS),
    option=st.floats(0.0, 4.0),
    weighted=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.01, 1.0, 100.0]),
)
def test_property_matches_torch_float64(name, shape, reduction, option, weighted, seed, scale):
    ours_fn, ref_fn = FUNCS[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    y = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    inputs = {"input": x, "target": y}
    kwargs = {"reduction": reduction}
    if name == "smooth_l1_loss":
        kwargs["beta"] = option
    if name == "huber_loss":
        kwargs["delta"] = max(option, 1e-3)
    if weighted and name != "smooth_l1_loss":
        inputs["weight"] = torch.rand(shape, generator=g, dtype=torch.float64)
    assert_matches_torch(ours_fn, ref_fn, inputs, kwargs, grad_wrt=list(inputs), seed=seed % 1000)


@settings(max_examples=150)
@given(
    shape=_shapes,
    reduction=st.sampled_from(REDUCTIONS),
    delta=st.floats(1e-3, 5.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_huber_is_delta_times_smooth_l1(shape, reduction, delta, seed):
    """huber(δ) == δ · smooth_l1(β=δ), each side of ours checked against the other side computed by torch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    y = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    ours_huber = LF.huber_loss(x, y, reduction=reduction, delta=delta)
    ours_sl1 = LF.smooth_l1_loss(x, y, reduction=reduction, beta=delta)
    torch_huber = TF.huber_loss(x, y, reduction=reduction, delta=delta)
    torch_sl1 = TF.smooth_l1_loss(x, y, reduction=reduction, beta=delta)
    torch.testing.assert_close(ours_huber, delta * torch_sl1, rtol=1e-9, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(delta * ours_sl1, torch_huber, rtol=1e-9, atol=1e-12, equal_nan=True)
