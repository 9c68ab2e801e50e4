"""Shared grids, input makers and test bodies of the pointwise losses' test files.

The regression losses (``test_mse_loss``, ``test_l1_loss``, ``test_huber_loss``) and the binary losses
(``test_binary_cross_entropy``, ``test_binary_cross_entropy_with_logits``, ``test_soft_margin_loss``) run the
same checks (broadcasting, mixed dtypes, the legacy ``size_average``/``reduce`` pair, ...) loss by loss: each
``check_*`` below is the body of such a test, and each test file parametrizes it over its own loss(es).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
from helpers import DTYPES, LEGACY, SHAPE_IDS, SHAPES, assert_close_to, assert_matches_torch, call_recording, case_seed

REDUCTIONS = ["none", "mean", "sum"]


def over_shapes_dtypes_reductions(test):
    """The common grid: ``@parametrize(shape)``, ``@parametrize(dtype)``, ``@parametrize(reduction)`` in that order."""
    test = pytest.mark.parametrize("reduction", REDUCTIONS)(test)
    test = pytest.mark.parametrize("dtype", DTYPES, ids=str)(test)
    return pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)(test)


# mixed float64/float32 (input, target) pairs
over_mixed_dtypes = pytest.mark.parametrize(
    "dtypes", [(torch.float64, torch.float32), (torch.float32, torch.float64)], ids=["f64_f32", "f32_f64"]
)
# random shapes of up to 4 dims of up to 4 elements (hypothesis)
any_shape = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)


# ------------------------------------------------------------------------- regression (mse, l1, smooth l1, huber)

REGRESSION_FUNCS = {
    "mse_loss": (LF.mse_loss, TF.mse_loss),
    "l1_loss": (LF.l1_loss, TF.l1_loss),
    "smooth_l1_loss": (LF.smooth_l1_loss, TF.smooth_l1_loss),
    "huber_loss": (LF.huber_loss, TF.huber_loss),
}


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


BROADCAST_PAIRS = [
    ((3, 1), (3, 4)),
    ((4,), (3, 4)),
    ((3, 4), ()),
    ((3, 4), (4,)),
    ((2, 1, 5), (3, 1)),
    ((), (5,)),
]


# (name, kwargs) of the regression gradchecks; each test file takes the cases of its losses
REGRESSION_GRADCHECKS = [
    ("mse_loss", {}),
    ("mse_loss", {"reduction": "none"}),
    ("l1_loss", {"reduction": "sum"}),
    ("smooth_l1_loss", {"beta": 0.7}),
    ("smooth_l1_loss", {"beta": 0.0, "reduction": "sum"}),
    ("huber_loss", {"delta": 0.6}),
    ("huber_loss", {"delta": 2.0, "reduction": "none"}),
]


def check_mse_l1_grid(name, weighted, reduction, dtype, shape):
    ours, ref = REGRESSION_FUNCS[name]
    seed = case_seed(name, weighted, reduction, shape)
    x, y = make_pair(shape, 0.0, seed)
    inputs = {"input": x, "target": y}
    grad_wrt = ["input", "target"]
    if weighted:
        inputs["weight"] = make_weight(shape, seed)
        grad_wrt.append("weight")
    assert_matches_torch(ours, ref, inputs, {"reduction": reduction}, dtype=dtype, grad_wrt=grad_wrt, seed=seed)


def check_broadcast_warns_like_torch(name, shapes):
    ours_fn, ref_fn = REGRESSION_FUNCS[name]
    g = torch.Generator().manual_seed(11)
    x = torch.randn(shapes[0], generator=g, dtype=torch.float64)
    y = torch.randn(shapes[1], generator=g, dtype=torch.float64)
    for reduction in REDUCTIONS:
        ours, ours_w = call_recording(ours_fn, x, y, reduction=reduction)
        ref, ref_w = call_recording(ref_fn, x, y, reduction=reduction)
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


def check_same_size_does_not_warn(name):
    ours_fn, _ = REGRESSION_FUNCS[name]
    x, y = make_pair((3, 4), None, 2)
    _, caught = call_recording(ours_fn, x, y)
    assert caught == []


def check_mixed_dtypes_give_torch_result_dtype(name, dtypes, reduction):
    """Mixed float64/float32 input and target: torch's result dtype, values and gradient dtypes."""
    ours_fn, ref_fn = REGRESSION_FUNCS[name]
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


def check_weight_with_target_broadcast_larger_than_input(name):
    """torch checks ``weight`` against the *original* input size and lets the product broadcast."""
    ours_fn, ref_fn = REGRESSION_FUNCS[name]
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


def check_regression_legacy_size_average_reduce(name, legacy):
    ours_fn, ref_fn = REGRESSION_FUNCS[name]
    size_average, reduce = legacy
    x, y = make_pair((3, 5), 1.0, 8)
    for reduction in ("mean", "none", "sum"):  # the legacy pair overrides any reduction
        kw = {"size_average": size_average, "reduce": reduce, "reduction": reduction}
        ours, ours_w = call_recording(ours_fn, x, y, **kw)
        ref, ref_w = call_recording(ref_fn, x, y, **kw)
        assert ref_w and ours_w == ref_w
        assert_close_to(ours, ref, torch.float64)


def check_regression_gradcheck(name, kwargs):
    ours_fn, _ = REGRESSION_FUNCS[name]
    g = torch.Generator().manual_seed(21)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    # errors kept away from 0 and from the knees, where finite differences straddle a kink
    y = x.detach() + torch.tensor([0.1, 0.4, 1.3, 2.9], dtype=torch.float64) * torch.tensor([1, -1, 1])[:, None]
    y.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ours_fn(a, b, **kwargs), (x, y))
    if name in ("mse_loss", "l1_loss", "huber_loss"):
        w = torch.rand(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b, c: ours_fn(a, b, weight=c, **kwargs), (x, y, w))


# the hypothesis strategies of check_regression_property (each test file adds ``name``)
REGRESSION_PROPERTY = {
    "shape": any_shape,
    "reduction": st.sampled_from(REDUCTIONS),
    "option": st.floats(0.0, 4.0),
    "weighted": st.booleans(),
    "seed": st.integers(0, 2**31 - 1),
    "scale": st.sampled_from([0.01, 1.0, 100.0]),
}


def check_regression_property(name, shape, reduction, option, weighted, seed, scale):
    ours_fn, ref_fn = REGRESSION_FUNCS[name]
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


# ----------------------------------------------------------------------- regression contract (kornia BaseTester style)


def _regression_property_test():
    @settings(max_examples=200)
    @given(**REGRESSION_PROPERTY)
    def test_property_matches_torch_float64(self, shape, reduction, option, weighted, seed, scale):
        check_regression_property(self.name, shape, reduction, option, weighted, seed, scale)

    return test_property_matches_torch_float64


class RegressionLossTests:
    """The tests every regression loss passes: a test file subclasses it once per loss and sets ``name``."""

    name: str
    # marks for this loss's property test: a strict xfail names a known library bug (the marker goes with the fix)
    property_marks: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # hypothesis runs a @given test from one class only: each loss gets its own copy of the property test
        test = _regression_property_test()
        for mark in cls.property_marks:
            test = mark(test)
        cls.test_property_matches_torch_float64 = test

    def pytest_generate_tests(self, metafunc):
        if "gradcheck_kwargs" in metafunc.fixturenames:
            cases = [kw for n, kw in REGRESSION_GRADCHECKS if n == self.name]
            metafunc.parametrize("gradcheck_kwargs", cases, ids=str)

    @pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
    def test_broadcast_warns_like_torch(self, shapes):
        check_broadcast_warns_like_torch(self.name, shapes)

    def test_same_size_does_not_warn(self):
        check_same_size_does_not_warn(self.name)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @over_mixed_dtypes
    def test_mixed_dtypes_give_torch_result_dtype(self, dtypes, reduction):
        check_mixed_dtypes_give_torch_result_dtype(self.name, dtypes, reduction)

    def test_gradcheck(self, gradcheck_kwargs):
        check_regression_gradcheck(self.name, gradcheck_kwargs)


class ElementWeightTests:
    """For a regression loss that takes an element-wise ``weight``."""

    name: str

    def test_weight_with_target_broadcast_larger_than_input(self):
        check_weight_with_target_broadcast_larger_than_input(self.name)


class MseL1GridTests:
    """The grid mse_loss and l1_loss share: optional weight × reduction × dtype × shape."""

    name: str

    @over_shapes_dtypes_reductions
    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    def test_mse_l1_grid(self, weighted, reduction, dtype, shape):
        check_mse_l1_grid(self.name, weighted, reduction, dtype, shape)


# ------------------------------------------------------------------- binary (bce, bce with logits, soft margin)

BINARY_FUNCS = {
    "binary_cross_entropy": (LF.binary_cross_entropy, TF.binary_cross_entropy),
    "binary_cross_entropy_with_logits": (
        LF.binary_cross_entropy_with_logits,
        TF.binary_cross_entropy_with_logits,
    ),
    "soft_margin_loss": (LF.soft_margin_loss, TF.soft_margin_loss),
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def probs_and_targets(shape, seed: int, saturate: bool = True):
    """Probabilities in (0.02, 0.98) and soft targets in [0, 1]; with room, exact 0s and 1s in both,
    including the worst pairings (p=0, t=1) and (p=1, t=0) whose logs hit the -100 clamp."""
    g = gen(seed)
    p = torch.rand(shape, generator=g, dtype=torch.float64) * 0.96 + 0.02
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    if p.numel() >= 6 and saturate:
        pf, tf = p.view(-1), t.view(-1)
        pf[:6] = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
        tf[:6] = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.3, 0.6], dtype=torch.float64)
        if t.numel() >= 8:
            tf[6:8] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    return p, t


def class_weight(shape, mode: str, seed: int, low: float = 0.1):
    """``None``, a weight of the full shape, or one that broadcasts along the last (class) dimension."""
    if mode == "none":
        return None
    wshape = shape if mode == "full" else shape[-1:]
    return torch.rand(wshape, generator=gen(seed + 77), dtype=torch.float64) * 2 + low


def logits_and_targets(shape, seed: int):
    """Logits of magnitude up to 500 (both signs) and soft targets in [0, 1] with exact 0s and 1s."""
    g = gen(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 4
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    if x.numel() >= 7:
        xf, tf = x.view(-1), t.view(-1)
        xf[:7] = torch.tensor([500.0, -500.0, 500.0, -500.0, 100.0, -37.5, 0.0], dtype=torch.float64)
        tf[:7] = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    elif x.numel() >= 1:
        x.view(-1)[0] = -500.0
        t.view(-1)[0] = 0.75
    return x, t


def margins_and_signs(shape, seed: int):
    g = gen(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    y = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    if x.numel() >= 4:
        # large margins, but below where torch's own exp(-y·x) overflows in float32 (see the overflow test)
        x.view(-1)[:4] = torch.tensor([80.0, -80.0, 0.0, 40.0], dtype=torch.float64)
    return x, y


def _both(fn_pair, *args, **kwargs):
    outs = []
    for fn in fn_pair:
        try:
            outs.append(fn(*args, **kwargs))
        except RuntimeError as e:
            outs.append(e)
    return outs


def check_weight_requiring_grad_raises_like_torch(name):
    """torch refuses a ``weight`` that requires grad (it does not differentiate w.r.t. it)."""
    ours_fn, ref_fn = BINARY_FUNCS[name]
    p, t = probs_and_targets((2, 3), 3, saturate=False)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError):
        ref_fn(p, t, weight=w)
    with pytest.raises(RuntimeError):
        ours_fn(p, t, weight=w)


def check_binary_mixed_dtypes_like_torch(name, dtypes):
    """float64/float32 input and target: torch's result dtype and values, or torch's error."""
    if name == "binary_cross_entropy":
        x, t = probs_and_targets((3, 4), 1, saturate=False)
    elif name == "binary_cross_entropy_with_logits":
        x, t = logits_and_targets((3, 4), 1)
    else:
        x, t = margins_and_signs((3, 4), 1)
    x, t = x.to(dtypes[0]), t.to(dtypes[1])
    for reduction in REDUCTIONS:
        ours, ref = _both(BINARY_FUNCS[name], x, t, reduction=reduction)
        if isinstance(ref, Exception):
            assert isinstance(ours, RuntimeError), f"torch raises {ref!r}; ours returned {ours!r}"
            continue
        assert not isinstance(ours, Exception), f"ours raised {ours!r}"
        assert ours.dtype == ref.dtype, f"result dtype {ours.dtype} != torch's {ref.dtype}"
        assert_close_to(ours, ref, torch.float32)


def check_binary_legacy_size_average_reduce(name, legacy):
    ours_fn, ref_fn = BINARY_FUNCS[name]
    size_average, reduce = legacy
    if name == "binary_cross_entropy":
        x, t = probs_and_targets((3, 5), 2)
    elif name == "binary_cross_entropy_with_logits":
        x, t = logits_and_targets((3, 5), 2)
    else:
        x, t = margins_and_signs((3, 5), 2)
    for reduction in REDUCTIONS:
        kw = {"size_average": size_average, "reduce": reduce, "reduction": reduction}
        ours, ours_w = call_recording(ours_fn, x, t, **kw)
        ref, ref_w = call_recording(ref_fn, x, t, **kw)
        assert ref_w and ours_w == ref_w
        assert_close_to(ours, ref, torch.float64)


# ------------------------------------------------------------------------------ binary contract


class BinaryLossTests:
    """The tests every binary loss passes: a test file subclasses it once per loss and sets ``name``."""

    name: str

    @over_mixed_dtypes
    def test_mixed_dtypes_like_torch(self, dtypes):
        check_binary_mixed_dtypes_like_torch(self.name, dtypes)


class WeightRequiringGradTests:
    """For a binary loss whose ``weight`` torch refuses to differentiate."""

    name: str

    def test_weight_requiring_grad_raises_like_torch(self):
        check_weight_requiring_grad_raises_like_torch(self.name)


# ------------------------------------------------------------------------------ shared by both families


class LegacyArgsTests:
    """For a loss that takes torch's deprecated ``size_average`` / ``reduce`` (all but huber_loss)."""

    name: str

    @pytest.mark.parametrize("legacy", LEGACY, ids=str)
    def test_legacy_size_average_reduce(self, legacy):
        if self.name in BINARY_FUNCS:
            check_binary_legacy_size_average_reduce(self.name, legacy)
        else:
            check_regression_legacy_size_average_reduce(self.name, legacy)
