"""gaussian_nll_loss / GaussianNLLLoss against torch 2.13 (var shapes, eps clamp without gradient, errors)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as TNN
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit
import losskit.functional as LF
import losskit.nn as LNN
from loss_checks import DTYPES, REDUCTIONS, bad, compare, transforms

# (input shape, var shape): heteroscedastic, one dim short (homoscedastic), one dim of size 1, unbatched, scalar
VAR_SHAPES = [
    ((4, 3), (4, 3)),
    ((4, 3), (4,)),
    ((4, 3), (4, 1)),
    ((2, 3, 5), (2, 3)),
    ((2, 3, 5), (2, 1, 5)),
    ((5,), (5,)),
    ((5,), ()),
    ((5,), (1,)),
]


def problem(shape, var_shape, seed: int, small_var: bool = True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    var = torch.rand(var_shape, generator=g, dtype=torch.float64) + 0.05
    if small_var and var.numel() > 1:
        var.view(-1)[0] = 1e-9  # under eps: clamped, and the gradient flows as if it were not
    return x, t, var


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [{}, {"full": True}, {"eps": 0.3}], ids=str)
@pytest.mark.parametrize("shapes", VAR_SHAPES, ids=str)
def test_grid(shapes, options, reduction, dtype):
    x, t, var = problem(*shapes, seed=len(str(shapes)))
    kw = dict(options, reduction=reduction)
    compare(LF.gaussian_nll_loss, TF.gaussian_nll_loss, (x, t, var), kw, dtype, grad=(0, 2))
    compare(LF.gaussian_nll_loss, TF.gaussian_nll_loss, (x, t, var), kw, dtype, grad=(0, 1, 2))


@pytest.mark.parametrize("var", [0.5, 1e-9, 0.0])
def test_float_var(var):
    x, t, _ = problem((3, 4), (3, 4), 2)
    for reduction in REDUCTIONS:
        compare(LF.gaussian_nll_loss, TF.gaussian_nll_loss, (x, t, var), {"reduction": reduction}, grad=(0, 1))


def test_clamp_has_no_gradient():
    """A variance under eps is used as eps, but its gradient is the formula's at eps (torch's no_grad clamp)."""
    x, t = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)
    v = torch.tensor([1e-9], dtype=torch.float64, requires_grad=True)
    LF.gaussian_nll_loss(x, t, v, eps=0.5).backward()
    assert v.grad.item() == pytest.approx(0.5 * (1 / 0.5 - 1 / 0.25))


def test_target_broadcasts():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    t = torch.randn(3, generator=g, dtype=torch.float64)
    var = torch.rand(4, 1, generator=g, dtype=torch.float64) + 0.1
    for reduction in REDUCTIONS:
        compare(LF.gaussian_nll_loss, TF.gaussian_nll_loss, (x, t, var), {"reduction": reduction}, grad=(0, 1, 2))


def test_nonfinite_positions():
    x = torch.tensor([0.0, float("nan"), float("inf"), 1.0, 2.0], dtype=torch.float64)
    t = torch.tensor([1.0, 2.0, 3.0, float("inf"), 2.0], dtype=torch.float64)
    var = torch.tensor([1.0, 1.0, 1.0, 2.0, float("inf")], dtype=torch.float64)
    for reduction in REDUCTIONS:
        compare(LF.gaussian_nll_loss, TF.gaussian_nll_loss, (x, t, var), {"reduction": reduction}, grad=(0, 2))


def test_gradcheck():
    for shapes in VAR_SHAPES[:4]:
        x, t, var = problem(*shapes, seed=5, small_var=False)
        for reduction in REDUCTIONS:
            args = tuple(a.clone().requires_grad_() for a in (x, t, var))
            f = lambda a, b, c, r=reduction: LF.gaussian_nll_loss(a, b, c, full=True, reduction=r)  # noqa: E731
            assert torch.autograd.gradcheck(f, args)
            assert torch.autograd.gradgradcheck(f, args)


def test_module():
    x, t, var = problem((4, 3), (4, 1), 6)
    for kw in ({}, {"full": True, "eps": 0.2, "reduction": "none"}):
        ours, ref = LNN.GaussianNLLLoss(**kw), TNN.GaussianNLLLoss(**kw)
        assert isinstance(ours, TNN.modules.loss._Loss) and ours.__constants__ == ref.__constants__
        compare(ours, ref, (x, t, var), {}, grad=(0, 2))
    with pytest.raises(TypeError):
        LNN.GaussianNLLLoss(True)  # keyword-only, as torch


def test_transforms():
    x, t, var = problem((4, 5), (4, 5), 7, small_var=False)
    transforms(LF.gaussian_nll_loss, (x.float(), t.float(), var.float()))
    transforms(lambda v, a, b: LF.gaussian_nll_loss(a, b, v), (var.float(), x.float(), t.float()))


@settings(max_examples=40, deadline=None)
@given(
    case=st.sampled_from(VAR_SHAPES),
    full=st.booleans(),
    eps=st.sampled_from([1e-6, 1e-2, 0.5]),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_fuzz(case, full, eps, reduction, seed):
    x, t, var = problem(*case, seed=seed)
    kw = {"full": full, "eps": eps, "reduction": reduction}
    compare(LF.gaussian_nll_loss, TF.gaussian_nll_loss, (x, t, var), kw, grad=(0, 1, 2))
    compare(LF.gaussian_nll_loss, TF.gaussian_nll_loss, (x, t, var), kw, torch.float32, grad=(0, 2))


def _x(*shape):
    return torch.ones(*shape) if shape else torch.ones(10, 2, 3)


BAD = [
    ("reduction", lambda F: F.gaussian_nll_loss(_x(), _x(), _x(), reduction="avg"), ("avg", "reduction")),
    ("var-size", lambda F: F.gaussian_nll_loss(_x(), _x(), _x(10, 2, 2)), ("'var'", "incorrect size", "[10, 2, 2]")),
    ("var-two-dims", lambda F: F.gaussian_nll_loss(_x(), _x(), _x(10, 1, 1)), ("'var'", "[10, 1, 1]")),
    ("var-negative", lambda F: F.gaussian_nll_loss(_x(), _x(), -_x()), ("'var'", "negative")),
    ("var-negative-float", lambda F: F.gaussian_nll_loss(_x(), _x(), -1.0), ("'var'", "negative")),
    ("var-int", lambda F: F.gaussian_nll_loss(_x(), _x(), 1), ("'var'", "int")),
    ("target-size", lambda F: F.gaussian_nll_loss(_x(), _x(10, 2, 2), _x()), ("'target'", "[10, 2, 2]")),
]


@pytest.mark.parametrize(("case", "call", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(case, call, fragments):
    bad(lambda: call(LF), lambda: call(TF), fragments)


def test_bad_options_are_losskit_errors():
    for kw, name in (({"full": "no"}, "full"), ({"eps": None}, "eps")):
        with pytest.raises(losskit.LossError, match=name):
            LF.gaussian_nll_loss(_x(), _x(), _x(), **kw)
    with pytest.raises(losskit.LossError, match="'input'"):
        LF.gaussian_nll_loss([1.0], _x(), _x())
