"""smooth_l1_loss and huber_loss (one source file, ``losses/huber_loss.py``) against torch 2.13.

Both run the regression contract of :mod:`pointwise_helpers`; below are their own grids (ties exactly at the
knee: inputs are multiples of 1/64, exact in float32), ``beta = 0`` as L1 and ``huber = δ·smooth_l1``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
from helpers import DTYPES, SHAPE_IDS, SHAPES, assert_matches_torch
from helpers import case_seed as _case_seed
from pointwise_helpers import (
    REDUCTIONS,
    ElementWeightTests,
    LegacyArgsTests,
    RegressionLossTests,
    any_shape,
    make_pair,
    make_weight,
)

pytestmark = pytest.mark.filterwarnings("error")  # no case may warn unless the test expects it


class TestSmoothL1Loss(RegressionLossTests, LegacyArgsTests):
    name = "smooth_l1_loss"


def test_smooth_l1_with_a_subnormal_beta_stays_finite_like_torch():
    """1/β overflows for a subnormal β: the engine's folded 1/β factor must not be used there."""
    x = torch.tensor([0.5, -2.0, 0.0], dtype=torch.float64, requires_grad=True)
    t = torch.zeros(3, dtype=torch.float64)
    for reduction in ("none", "sum", "mean"):
        ours = LF.smooth_l1_loss(x, t, reduction=reduction, beta=2.2e-313)
        ref = TF.smooth_l1_loss(x, t, reduction=reduction, beta=2.2e-313)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
        (g_ours,) = torch.autograd.grad(ours.sum(), x)
        (g_ref,) = torch.autograd.grad(ref.sum(), x)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=0)


class TestHuberLoss(RegressionLossTests, ElementWeightTests):
    name = "huber_loss"


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


@settings(max_examples=150)
@given(
    shape=any_shape,
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
