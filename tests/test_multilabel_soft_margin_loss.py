"""multilabel_soft_margin_loss / MultiLabelSoftMarginLoss against torch 2.13 (class weights, any leading dims)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as TNN
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
import losskit.nn as LNN
from loss_checks import DTYPES, REDUCTIONS, bad, compare, legacy, transforms

SHAPES = [(5,), (1, 4), (6, 4), (0, 3), (2, 3, 4), (4, 1)]


def problem(shape, seed: int, weight: str = "none", soft: bool = False, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    t = t if soft else (t < 0.4).to(torch.float64)
    c = shape[-1]
    w = {
        "none": None,
        "class": torch.rand(c, generator=g, dtype=torch.float64) + 0.1,
        "row": torch.rand((1, c), generator=g, dtype=torch.float64) + 0.1,
        "full": torch.rand(shape, generator=g, dtype=torch.float64) + 0.1,
    }[weight]
    return x, t, w


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", ["none", "class", "row", "full"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_grid(shape, weight, reduction, dtype):
    if weight == "row" and len(shape) == 1:
        pytest.skip("a (1, C) weight makes a (1,)-shaped loss of a (C,) input: covered by 'full'")
    x, t, w = problem(shape, len(shape) * 17 + shape[-1], weight)
    kw = {"reduction": reduction, "weight": None if w is None else w.to(dtype)}
    compare(LF.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, (x, t), kw, dtype, grad=(0,))
    compare(LF.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, (x, t), kw, dtype, grad=(0, 1))


def test_soft_targets_and_weight_grad():
    x, t, w = problem((5, 4), 1, "class", soft=True)
    for reduction in REDUCTIONS:
        compare(
            LF.multilabel_soft_margin_loss,
            TF.multilabel_soft_margin_loss,
            (x, t, w),
            {"reduction": reduction},
            grad=(0, 1, 2),
        )


def test_large_scores_stay_accurate():
    """Confident scores (|x| up to 60): the fused formula has no cancellation; float32 matches torch."""
    x, t, _ = problem((8, 16), 2, scale=20.0)
    for dtype in (torch.float64, torch.float32):
        compare(LF.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, (x, t), {"reduction": "none"}, dtype)


def test_broadcast_target():
    x, _, w = problem((4, 3), 3, "class")
    t = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    compare(LF.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, (x, t), {"weight": w}, grad=(0, 1))
    compare(LF.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, (x, t.long()), {"reduction": "none"})


def test_nonfinite_positions():
    x, t, w = problem((4, 3), 4, "class")
    x[0, 0], x[1, 1], x[2, 2] = float("nan"), float("inf"), -float("inf")
    for reduction in REDUCTIONS:
        compare(LF.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, (x, t), {"reduction": reduction})
        compare(
            LF.multilabel_soft_margin_loss,
            TF.multilabel_soft_margin_loss,
            (x, t),
            {"reduction": reduction, "weight": w},
        )


def test_legacy():
    x, t, w = problem((4, 3), 5, "class")
    legacy(LF.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, (x, t), {"weight": w})


def test_gradcheck():
    x, t, w = problem((3, 4), 6, "class", soft=True)
    for reduction in REDUCTIONS:
        args = (x.clone().requires_grad_(), t.clone().requires_grad_())
        f = lambda a, b, r=reduction: LF.multilabel_soft_margin_loss(a, b, weight=w, reduction=r)  # noqa: E731
        assert torch.autograd.gradcheck(f, args)
        assert torch.autograd.gradgradcheck(f, args)
        xs = x.clone().requires_grad_()
        g = lambda a, r=reduction: LF.multilabel_soft_margin_loss(a, t, weight=w, reduction=r)  # noqa: E731 (fused)
        assert torch.autograd.gradcheck(g, (xs,))
        assert torch.autograd.gradgradcheck(g, (xs,))


def test_module():
    x, t, w = problem((4, 3), 7, "class")
    for kw in ({}, {"weight": w, "reduction": "none"}):
        ours, ref = LNN.MultiLabelSoftMarginLoss(**kw), TNN.MultiLabelSoftMarginLoss(**kw)
        assert isinstance(ours, TNN.modules.loss._WeightedLoss) and ours.__constants__ == ref.__constants__
        assert ours.state_dict().keys() == ref.state_dict().keys()
        compare(ours, ref, (x, t), {})


def test_transforms():
    x, t, w = problem((4, 5), 8, "class")
    transforms(LF.multilabel_soft_margin_loss, (x.float(), t.float()), {"weight": w.float()})


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=2).map(lambda s: (*s, 3)),
    weight=st.sampled_from(["none", "class", "full"]),
    soft=st.booleans(),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_fuzz(shape, weight, soft, reduction, seed):
    x, t, w = problem(shape, seed, weight, soft)
    kw = {"weight": w, "reduction": reduction}
    compare(LF.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, (x, t), kw, grad=(0, 1))
    kw["weight"] = None if w is None else w.float()
    compare(LF.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss, (x, t), kw, torch.float32)


def _x(*shape):
    return torch.ones(shape) if shape else torch.ones(5, 4)


BAD = [
    ("reduction", lambda F: F.multilabel_soft_margin_loss(_x(), _x(), reduction="abc"), ("abc", "reduction")),
    ("0d-input", lambda F: F.multilabel_soft_margin_loss(torch.tensor(1.0), torch.tensor(1.0)), ("'input'", "0-d")),
    ("target-shape", lambda F: F.multilabel_soft_margin_loss(_x(), _x(5, 3)), ("'target'", "[5, 3]")),
    ("weight-shape", lambda F: F.multilabel_soft_margin_loss(_x(), _x(), weight=_x(3)), ("'weight'", "[3]")),
]


@pytest.mark.parametrize(("case", "call", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(case, call, fragments):
    bad(lambda: call(LF), lambda: call(TF), fragments)


def test_bad_weight_type():
    bad(lambda: LF.multilabel_soft_margin_loss(_x(), _x(), weight=[1.0] * 4), None, ("'weight'", "list"))
