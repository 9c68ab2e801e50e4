"""triplet_margin_loss / TripletMarginLoss against torch 2.13 (p, eps, swap, margin, unbatched, errors)."""

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
from loss_checks import DTYPES, REDUCTIONS, bad, compare, legacy, transforms

SHAPES = [(5,), (1, 4), (6, 4), (0, 3), (2, 3, 4), (4, 1)]
OPTIONS = [{}, {"p": 1}, {"swap": True}, {"p": 3, "eps": 0.0, "margin": 0.5}, {"p": 1, "swap": True, "margin": 2}]


def problem(shape, seed: int):
    g = torch.Generator().manual_seed(seed)
    a, p, n = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    return a, p, n


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_grid(shape, options, reduction, dtype):
    args = problem(shape, len(shape) * 19 + shape[-1] + len(options))
    kw = dict(options, reduction=reduction)
    compare(LF.triplet_margin_loss, TF.triplet_margin_loss, args, kw, dtype, grad=(0, 1, 2))


@pytest.mark.parametrize("p", [0, 0.5, 2.5, float("inf")])
def test_other_norms(p):
    args = problem((4, 3), 1)
    for swap in (False, True):
        compare(LF.triplet_margin_loss, TF.triplet_margin_loss, args, {"p": p, "swap": swap}, grad=(0, 1, 2))


def test_ties():
    """Hinge exactly at 0 and swap distances exactly equal (minimum splits the gradient, as torch)."""
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    p = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    n = torch.tensor([[0.0, 6.0], [0.0, -1.0]], dtype=torch.float64)
    for margin in (1.0, 2.0):
        for swap in (False, True):
            kw = {"margin": margin, "eps": 0.0, "swap": swap, "reduction": "none"}
            compare(LF.triplet_margin_loss, TF.triplet_margin_loss, (a, p, n), kw, grad=(0, 1, 2))


def test_broadcasting_and_integers():
    a, p, n = problem((4, 3), 2)
    compare(LF.triplet_margin_loss, TF.triplet_margin_loss, (a, p[:1], n), {"reduction": "none"}, grad=(0, 1, 2))
    ai, pi, ni = (t.mul(4).round().long() for t in (a, p, n))
    ours, ref = LF.triplet_margin_loss(ai, pi, ni), TF.triplet_margin_loss(ai, pi, ni)
    assert ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref)


def test_nonfinite_positions():
    a, p, n = problem((4, 3), 3)
    a[0, 0], p[1, 1], n[2, 2] = float("nan"), float("inf"), -float("inf")
    for swap in (False, True):
        for reduction in REDUCTIONS:
            kw = {"swap": swap, "reduction": reduction}
            compare(LF.triplet_margin_loss, TF.triplet_margin_loss, (a, p, n), kw, grad=(0, 1, 2))


def test_legacy():
    legacy(LF.triplet_margin_loss, TF.triplet_margin_loss, problem((4, 3), 4), {"swap": True})


def test_gradcheck():
    for options in ({}, {"p": 1, "swap": True}, {"p": 3}):
        for reduction in REDUCTIONS:
            args = tuple(t.requires_grad_() for t in problem((4, 3), 5))
            f = lambda *t, r=reduction, o=options: LF.triplet_margin_loss(*t, margin=5.0, reduction=r, **o)  # noqa: E731
            assert torch.autograd.gradcheck(f, args)
            if options.get("p") != 1:
                assert torch.autograd.gradgradcheck(f, args)


def test_module():
    args = problem((4, 3), 6)
    for kw in ({}, {"margin": 0.5, "p": 1, "eps": 0.0, "swap": True, "reduction": "none"}):
        ours, ref = LNN.TripletMarginLoss(**kw), TNN.TripletMarginLoss(**kw)
        assert isinstance(ours, TNN.modules.loss._Loss) and ours.__constants__ == ref.__constants__
        compare(ours, ref, args, {}, grad=(0, 1, 2))


def test_transforms():
    a, p, n = (t.float() for t in problem((4, 5), 7))
    transforms(LF.triplet_margin_loss, (a, p, n), {"margin": 3.0})
    transforms(LF.triplet_margin_loss, (a, p, n), {"margin": 3.0, "p": 1, "swap": True}, grad_arg=2)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3).map(tuple),
    p=st.sampled_from([1, 2, 3, 1.5]),
    eps=st.sampled_from([1e-6, 0.0, 0.1]),
    margin=st.sampled_from([1.0, 0.25, 3]),
    swap=st.booleans(),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_fuzz(shape, p, eps, margin, swap, reduction, seed):
    args = problem(shape, seed)
    kw = {"p": p, "eps": eps, "margin": margin, "swap": swap, "reduction": reduction}
    compare(LF.triplet_margin_loss, TF.triplet_margin_loss, args, kw, grad=(0, 1, 2))
    compare(LF.triplet_margin_loss, TF.triplet_margin_loss, args, kw, torch.float32, grad=(0, 1, 2))


def _x(*shape):
    return torch.ones(shape) if shape else torch.ones(3, 4)


BAD = [
    ("reduction", lambda F: F.triplet_margin_loss(_x(), _x(), _x(), reduction="abc"), ("abc", "reduction")),
    ("margin-negative", lambda F: F.triplet_margin_loss(_x(), _x(), _x(), margin=-1.0), ("'margin'", "-1.0")),
    ("margin-zero", lambda F: F.triplet_margin_loss(_x(), _x(), _x(), margin=0), ("'margin'", "0")),
    ("anchor-size", lambda F: F.triplet_margin_loss(_x(3, 5), _x(), _x()), ("'anchor'", "[3, 5]")),
    ("positive-size", lambda F: F.triplet_margin_loss(_x(), _x(3, 5), _x()), ("'positive'", "[3, 5]")),
    ("negative-size", lambda F: F.triplet_margin_loss(_x(), _x(), _x(3, 5)), ("'negative'", "[3, 5]")),
    ("anchor-ndim", lambda F: F.triplet_margin_loss(_x(3), _x(), _x()), ("'anchor'", "1D", "2D")),
    ("negative-ndim", lambda F: F.triplet_margin_loss(_x(), _x(), _x(3)), ("'negative'", "1D")),
]


@pytest.mark.parametrize(("case", "call", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(case, call, fragments):
    bad(lambda: call(LF), lambda: call(TF), fragments)


def test_bad_constructor():
    bad(lambda: LNN.TripletMarginLoss(margin=0.0), lambda: TNN.TripletMarginLoss(margin=0.0), ("'margin'",))


def test_bad_options_are_losskit_errors():
    for kw, name in (
        ({"p": "2"}, "'p'"),
        ({"eps": None}, "eps"),
        ({"swap": "yes"}, "swap"),
        ({"margin": "1"}, "margin"),
    ):
        with pytest.raises(losskit.LossError, match=name):
            LF.triplet_margin_loss(_x(), _x(), _x(), **kw)
