"""Oracle tests for margin_ranking_loss against torch 2.13."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
from helpers import DTYPES, LEGACY, SHAPE_IDS, SHAPES, assert_close_to, assert_matches_torch
from helpers import call_recording as _call_recording
from helpers import case_seed as _seed

pytestmark = pytest.mark.filterwarnings("error")

REDUCTIONS = ["none", "mean", "sum"]


# ------------------------------------------------------------------------------------ margin ranking


def ranking_inputs(shapes, margin: float, seed: int):
    """Scores on a 1/32 grid and targets ±1; with room, exact hinge ties ``-y·(x1 - x2) + margin == 0``."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.round(torch.randn(shapes[0], generator=g, dtype=torch.float64) * 32) / 32
    x2 = torch.round(torch.randn(shapes[1], generator=g, dtype=torch.float64) * 32) / 32
    y = torch.where(torch.rand(shapes[2], generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    if x1.shape == x2.shape == y.shape and x1.numel() >= 4 and margin in (0.0, 0.5):
        a, b, yf = x1.view(-1), x2.view(-1), y.view(-1)
        yf[:2] = torch.tensor([1.0, -1.0], dtype=torch.float64)
        b[0] = a[0] - margin  # y=+1: -(x1 - x2) + m = 0
        b[1] = a[1] + margin  # y=-1: (x1 - x2) + m = 0
    return x1, x2, y


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [0.0, 0.5, -0.2])
def test_margin_ranking_grid(margin, reduction, dtype, shape):
    seed = _seed("mr", margin, reduction, shape)
    x1, x2, y = ranking_inputs((shape, shape, shape), margin, seed)
    assert_matches_torch(
        LF.margin_ranking_loss,
        TF.margin_ranking_loss,
        {"input1": x1, "input2": x2, "target": y},
        {"margin": margin, "reduction": reduction},
        dtype=dtype,
        grad_wrt=("input1", "input2", "target"),
        seed=seed,
    )


def test_margin_ranking_ties_are_present():
    x1, x2, y = ranking_inputs(((3, 5),) * 3, 0.5, 1)
    hinge = -y * (x1 - x2) + 0.5
    assert hinge.view(-1)[0] == 0 and hinge.view(-1)[1] == 0 and bool((hinge > 0).any()) and bool((hinge < 0).any())


BROADCAST = [
    ((3, 1), (1, 5), (3, 5)),
    ((3, 5), (3, 5), (1, 1)),
    ((1,), (7,), (7,)),
    ((7,), (1,), (1,)),
    ((2, 1, 4), (1, 3, 1), (2, 3, 4)),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", BROADCAST, ids=str)
def test_margin_ranking_broadcasting(shapes, reduction):
    """Same-dim tensors broadcast (no warning); values and gradients as torch (summed over the broadcast)."""
    x1, x2, y = ranking_inputs(shapes, 0.3, 2)
    for margin in (0.0, 0.3):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert_matches_torch(
                LF.margin_ranking_loss,
                TF.margin_ranking_loss,
                {"input1": x1, "input2": x2, "target": y},
                {"margin": margin, "reduction": reduction},
                grad_wrt=("input1", "input2", "target"),
            )


def test_margin_ranking_int_margin_default():
    """The default margin is the int 0, as in torch; an int margin gives the same float result."""
    x1, x2, y = ranking_inputs(((5,),) * 3, 0.0, 3)
    assert_matches_torch(
        LF.margin_ranking_loss,
        TF.margin_ranking_loss,
        {"input1": x1, "input2": x2, "target": y},
        {"margin": 1},
    )


@pytest.mark.parametrize(
    "dtypes",
    [
        (torch.float32, torch.float64, torch.float32),
        (torch.float64, torch.float32, torch.float32),
        (torch.int64, torch.float32, torch.int64),
        (torch.float64, torch.float32, torch.int64),
        (torch.int64, torch.int64, torch.int64),
    ],
    ids=str,
)
def test_margin_ranking_mixed_dtypes(dtypes):
    """Type promotion as torch: the result dtype and values (integers become floating)."""
    x1, x2, y = ranking_inputs(((6,),) * 3, 0.5, 7)
    x1, x2, y = (x1 * 4).round().to(dtypes[0]), (x2 * 4).round().to(dtypes[1]), y.to(dtypes[2])
    for reduction in REDUCTIONS:
        ours = LF.margin_ranking_loss(x1, x2, y, margin=0.5, reduction=reduction)
        ref = TF.margin_ranking_loss(x1, x2, y, margin=0.5, reduction=reduction)
        assert ours.dtype == ref.dtype
        assert_close_to(ours, ref, torch.float32)


@pytest.mark.parametrize("legacy", LEGACY, ids=str)
def test_margin_ranking_legacy(legacy):
    size_average, reduce = legacy
    x1, x2, y = ranking_inputs(((4, 3),) * 3, 0.5, 4)
    for reduction in REDUCTIONS:
        kw = {"size_average": size_average, "reduce": reduce, "reduction": reduction, "margin": 0.5}
        ours, ours_w = _call_recording(LF.margin_ranking_loss, x1, x2, y, **kw)
        ref, ref_w = _call_recording(TF.margin_ranking_loss, x1, x2, y, **kw)
        assert ref_w and ours_w == ref_w
        assert_close_to(ours, ref, torch.float64)


def test_margin_ranking_gradcheck():
    g = torch.Generator().manual_seed(5)
    x1 = torch.randn(6, generator=g, dtype=torch.float64)
    x2 = x1 + torch.tensor([0.7, -0.9, 1.4, -0.3, 0.45, -2.0], dtype=torch.float64)  # hinges away from 0
    y = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    for reduction in REDUCTIONS:
        args = (x1.clone().requires_grad_(), x2.clone().requires_grad_(), y.clone().requires_grad_())
        assert torch.autograd.gradcheck(
            lambda a, b, c, r=reduction: LF.margin_ranking_loss(a, b, c, margin=0.2, reduction=r), args
        )


# --------------------------------------------------------------------------------------- properties

_dims = st.lists(st.integers(0, 4), min_size=0, max_size=3)


@settings(max_examples=150)
@given(
    dims=_dims,
    broadcast=st.lists(st.integers(0, 7), min_size=3, max_size=3),
    margin=st.floats(-2, 2),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_margin_ranking(dims, broadcast, margin, reduction, seed):
    """Random same-dim shapes, some dims of size 1 in one of the three tensors (broadcasting)."""
    shapes = []
    for k in range(3):
        shapes.append(tuple(1 if (broadcast[k] >> (i % 3)) & 1 and i % 2 == k % 2 else d for i, d in enumerate(dims)))
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(shapes[0], generator=g, dtype=torch.float64)
    x2 = torch.randn(shapes[1], generator=g, dtype=torch.float64)
    y = torch.where(torch.rand(shapes[2], generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    assert_matches_torch(
        LF.margin_ranking_loss,
        TF.margin_ranking_loss,
        {"input1": x1, "input2": x2, "target": y},
        {"margin": margin, "reduction": reduction},
        grad_wrt=("input1", "input2", "target"),
        seed=seed % 1000,
    )
