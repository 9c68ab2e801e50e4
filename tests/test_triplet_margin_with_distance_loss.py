"""triplet_margin_with_distance_loss / TripletMarginWithDistanceLoss against torch 2.13 (any distance, swap)."""

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


def l1(x, y):
    return (x - y).abs().sum(-1)


def cosine_distance(x, y):
    return 1.0 - TF.cosine_similarity(x, y, dim=-1)


DISTANCES = {"default": None, "l1": l1, "cosine": cosine_distance, "pairwise-module": TNN.PairwiseDistance(p=3)}


def problem(shape, seed: int):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("margin", [1.0, 0.3])
@pytest.mark.parametrize("distance", list(DISTANCES))
@pytest.mark.parametrize("shape", [(5,), (6, 4), (0, 3), (2, 3, 4)], ids=str)
def test_grid(shape, distance, margin, swap, reduction, dtype):
    args = problem(shape, len(shape) * 23 + shape[-1])
    kw = {"distance_function": DISTANCES[distance], "margin": margin, "swap": swap, "reduction": reduction}
    compare(LF.triplet_margin_with_distance_loss, TF.triplet_margin_with_distance_loss, args, kw, dtype, (0, 1, 2))


def test_nonfinite_positions():
    a, p, n = problem((4, 3), 3)
    a[0, 0], p[1, 1], n[2, 2] = float("nan"), float("inf"), -float("inf")
    for swap in (False, True):
        kw = {"swap": swap, "reduction": "none", "distance_function": l1}
        compare(
            LF.triplet_margin_with_distance_loss, TF.triplet_margin_with_distance_loss, (a, p, n), kw, grad=(0, 1, 2)
        )


def test_gradcheck():
    for distance in (None, l1):
        for reduction in REDUCTIONS:
            args = tuple(t.requires_grad_() for t in problem((4, 3), 5))
            f = lambda *t, r=reduction, d=distance: LF.triplet_margin_with_distance_loss(  # noqa: E731
                *t, distance_function=d, margin=5.0, swap=True, reduction=r
            )
            assert torch.autograd.gradcheck(f, args)


def test_module():
    args = problem((4, 3), 6)
    for kw in ({}, {"distance_function": l1, "margin": 0.5, "swap": True, "reduction": "none"}):
        ours, ref = LNN.TripletMarginWithDistanceLoss(**kw), TNN.TripletMarginWithDistanceLoss(**kw)
        assert isinstance(ours, TNN.modules.loss._Loss) and ours.__constants__ == ref.__constants__
        assert type(ours.distance_function) is type(ref.distance_function)
        compare(ours, ref, args, {}, grad=(0, 1, 2))
    with pytest.raises(TypeError):
        LNN.TripletMarginWithDistanceLoss(l1)  # keyword-only, as torch


def test_transforms():
    a, p, n = (t.float() for t in problem((4, 5), 7))
    transforms(LF.triplet_margin_with_distance_loss, (a, p, n), {"margin": 3.0, "swap": True})


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3).map(tuple),
    distance=st.sampled_from(list(DISTANCES)),
    margin=st.sampled_from([1.0, 0.25, 3]),
    swap=st.booleans(),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_fuzz(shape, distance, margin, swap, reduction, seed):
    args = problem(shape, seed)
    kw = {"distance_function": DISTANCES[distance], "margin": margin, "swap": swap, "reduction": reduction}
    compare(LF.triplet_margin_with_distance_loss, TF.triplet_margin_with_distance_loss, args, kw, grad=(0, 1, 2))


def _x(*shape):
    return torch.ones(shape) if shape else torch.ones(3, 4)


F_NAME = "triplet_margin_with_distance_loss"
BAD = [
    ("reduction", lambda F: getattr(F, F_NAME)(_x(), _x(), _x(), reduction="abc"), ("abc", "reduction")),
    ("margin", lambda F: getattr(F, F_NAME)(_x(), _x(), _x(), margin=-1.0), ("'margin'", "-1.0")),
    ("size", lambda F: getattr(F, F_NAME)(_x(3, 5), _x(), _x()), ()),
    ("anchor-ndim", lambda F: getattr(F, F_NAME)(_x(3), _x(), _x()), ("'anchor'", "1D")),
    ("positive-ndim", lambda F: getattr(F, F_NAME)(_x(), _x(3), _x()), ("'positive'", "1D")),
]


@pytest.mark.parametrize(("case", "call", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(case, call, fragments):
    bad(lambda: call(LF), lambda: call(TF), fragments)


def test_bad_constructor_and_options():
    bad(
        lambda: LNN.TripletMarginWithDistanceLoss(margin=0.0),
        lambda: TNN.TripletMarginWithDistanceLoss(margin=0.0),
        ("'margin'",),
    )
    with pytest.raises(losskit.LossError, match="distance_function"):
        LF.triplet_margin_with_distance_loss(_x(), _x(), _x(), distance_function=3)
    with pytest.raises(losskit.LossError, match="distance_function"):
        LF.triplet_margin_with_distance_loss(_x(), _x(), _x(), distance_function=lambda a, b: 1.0)
    with pytest.raises(losskit.LossError, match="swap"):
        LF.triplet_margin_with_distance_loss(_x(), _x(), _x(), swap=None)
