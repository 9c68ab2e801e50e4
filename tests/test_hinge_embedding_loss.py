"""hinge_embedding_loss / HingeEmbeddingLoss against torch 2.13."""

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

SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4), (0, 3)]


def problem(shape, margin: float, seed: int):
    """Distances on a 1/8 grid, targets ±1, some exactly at the margin (the hinge's kink)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.round(torch.rand(shape, generator=g, dtype=torch.float64) * 24) / 8
    y = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    if x.numel() >= 3:
        x.view(-1)[:2] = margin
        y.view(-1)[:2] = -1.0
    return x, y


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [1.0, 0.5, 2, -0.5])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_grid(shape, margin, reduction, dtype):
    x, y = problem(shape, margin, len(shape) + int(margin * 4))
    compare(LF.hinge_embedding_loss, TF.hinge_embedding_loss, (x, y), {"margin": margin, "reduction": reduction}, dtype)


def test_other_targets_get_both_terms():
    """A target other than ±1 (0, 2) gets ``x + max(0, margin - x)``, as torch; the target may require grad."""
    x = torch.tensor([0.2, 0.5, 3.0, -1.0], dtype=torch.float64)
    y = torch.tensor([0.0, 2.0, 1.0, -1.0], dtype=torch.float64)
    for reduction in REDUCTIONS:
        compare(LF.hinge_embedding_loss, TF.hinge_embedding_loss, (x, y), {"reduction": reduction}, grad=(0, 1))
    compare(LF.hinge_embedding_loss, TF.hinge_embedding_loss, (x, y.long()), {"reduction": "none"})


@pytest.mark.parametrize("shapes", [((3, 5), (5,)), ((3, 1), (1, 4)), ((4,), (3, 4))], ids=str)
def test_broadcasting(shapes):
    x, _ = problem(shapes[0], 1.0, 2)
    _, y = problem(shapes[1], 1.0, 3)
    for reduction in REDUCTIONS:
        compare(LF.hinge_embedding_loss, TF.hinge_embedding_loss, (x, y), {"reduction": reduction})


def test_nonfinite_positions():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.5, float("nan")], dtype=torch.float64)
    y = torch.tensor([1.0, -1.0, -1.0, float("nan"), -1.0], dtype=torch.float64)
    for reduction in REDUCTIONS:
        compare(LF.hinge_embedding_loss, TF.hinge_embedding_loss, (x, y), {"reduction": reduction})


def test_legacy():
    x, y = problem((4, 3), 1.0, 4)
    legacy(LF.hinge_embedding_loss, TF.hinge_embedding_loss, (x, y), {"margin": 0.5})


def test_gradcheck():
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(3, 4, generator=g, dtype=torch.float64) * 3 + 0.01).requires_grad_()  # off the kink
    x = x.detach().masked_fill((x - 1).abs() < 0.05, 0.5).requires_grad_()
    y = torch.where(torch.rand(3, 4, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(lambda a, r=reduction: LF.hinge_embedding_loss(a, y, reduction=r), (x,))
        assert torch.autograd.gradgradcheck(lambda a, r=reduction: LF.hinge_embedding_loss(a, y, reduction=r), (x,))


def test_module():
    x, y = problem((4, 3), 2.0, 6)
    for kw in ({}, {"margin": 2.0, "reduction": "sum"}):
        ours, ref = LNN.HingeEmbeddingLoss(**kw), TNN.HingeEmbeddingLoss(**kw)
        assert isinstance(ours, TNN.modules.loss._Loss) and ours.__constants__ == ref.__constants__
        compare(ours, ref, (x, y), {})


def test_transforms():
    x, y = problem((4, 5), 1.0, 7)
    transforms(LF.hinge_embedding_loss, (x.float() + 0.01, y.float()), {"margin": 1.5})


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple),
    margin=st.sampled_from([1.0, 0.0, 0.375, 2.5, -1.0]),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_fuzz(shape, margin, reduction, seed):
    x, y = problem(shape, margin, seed)
    kw = {"margin": margin, "reduction": reduction}
    compare(LF.hinge_embedding_loss, TF.hinge_embedding_loss, (x, y), kw)
    compare(LF.hinge_embedding_loss, TF.hinge_embedding_loss, (x, y), kw, torch.float32)


def _x():
    return torch.ones(5, 4)


BAD = [
    ("reduction", lambda F: F.hinge_embedding_loss(_x(), _x(), reduction="abc"), ("abc", "reduction")),
    ("broadcast", lambda F: F.hinge_embedding_loss(_x(), torch.ones(5, 3)), ("'input'", "'target'", "[5, 3]")),
    ("input-type", lambda F: F.hinge_embedding_loss(None, _x()), ("'input'", "NoneType")),
]


@pytest.mark.parametrize(("case", "call", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(case, call, fragments):
    bad(lambda: call(LF), lambda: call(TF), fragments)


def test_bad_margin():
    with pytest.raises(losskit.LossError, match="margin"):
        LF.hinge_embedding_loss(_x(), _x(), margin="1")
