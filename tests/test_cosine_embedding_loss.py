"""cosine_embedding_loss / CosineEmbeddingLoss against torch 2.13 (batched and unbatched)."""

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

SHAPES = [(5,), (1, 3), (6, 4), (0, 3), (3, 1)]


def problem(shape, seed: int, targets=(1.0, -1.0), degenerate: bool = True):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(shape, generator=g, dtype=torch.float64)
    x2 = torch.randn(shape, generator=g, dtype=torch.float64)
    n = shape[0] if len(shape) == 2 else None
    idx = torch.randint(0, len(targets), (n,) if n is not None else (), generator=g)
    y = torch.tensor(targets, dtype=torch.float64)[idx]
    if degenerate and n and n >= 3:
        x2[0] = 0.0  # a zero vector: the 1e-12 in the norms keeps it finite
        x2[1] = x1[1]  # identical: cos = 1
    return x1, x2, y


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [0.0, 0.5, -0.25])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_grid(shape, margin, reduction, dtype):
    x1, x2, y = problem(shape, len(shape) * 11 + shape[0])
    kw = {"margin": margin, "reduction": reduction}
    compare(LF.cosine_embedding_loss, TF.cosine_embedding_loss, (x1, x2, y), kw, dtype, grad=(0, 1))


def test_margin_kink_and_other_targets():
    """cos exactly at the margin (clamp's sub-gradient passes, as torch) and targets other than ±1 (loss 0)."""
    x1 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    x2 = torch.tensor([[1.0, 1.0], [2.0, 1.0], [4.0, 3.0]], dtype=torch.float64)
    cos = TF.cosine_similarity(x1, x2, eps=0)
    for y in ([-1.0, -1.0, 0.0], [1.0, 2.0, -1.0]):
        for margin in (0.0, float(cos[0]), float(cos[1])):
            for reduction in REDUCTIONS:
                kw = {"margin": margin, "reduction": reduction}
                compare(LF.cosine_embedding_loss, TF.cosine_embedding_loss, (x1, x2, torch.tensor(y)), kw, grad=(0, 1))


def test_integer_and_int_target():
    x1, x2 = torch.tensor([[1, 2, 3], [0, 1, 0]]), torch.tensor([[2, 2, 1], [1, 1, 0]])
    for y in (torch.tensor([1, -1]), torch.tensor([1.0, -1.0])):
        ours, ref = LF.cosine_embedding_loss(x1, x2, y), TF.cosine_embedding_loss(x1, x2, y)
        assert ours.dtype == ref.dtype
        torch.testing.assert_close(ours, ref)
    x1f, x2f, _ = problem((4, 3), 1)
    compare(LF.cosine_embedding_loss, TF.cosine_embedding_loss, (x1f, x2f, torch.tensor([1, -1, 1, -1])), {})


def test_broadcast_inputs():
    x1, x2, y = problem((4, 3), 2)
    compare(LF.cosine_embedding_loss, TF.cosine_embedding_loss, (x1, x2[:1], y), {"reduction": "none"}, grad=(0, 1))


def test_nonfinite_positions():
    x1, x2, y = problem((4, 3), 3)
    x1[0, 0], x2[1, 1], x1[2, 2] = float("nan"), float("inf"), -float("inf")
    for reduction in REDUCTIONS:
        compare(LF.cosine_embedding_loss, TF.cosine_embedding_loss, (x1, x2, y), {"reduction": reduction}, grad=(0, 1))


def test_legacy():
    x1, x2, y = problem((4, 3), 4)
    legacy(LF.cosine_embedding_loss, TF.cosine_embedding_loss, (x1, x2, y), {"margin": 0.1})


def test_gradcheck():
    for shape in ((5,), (4, 3)):
        x1, x2, y = problem(shape, 5, degenerate=False)
        for reduction in REDUCTIONS:
            args = (x1.clone().requires_grad_(), x2.clone().requires_grad_())
            f = lambda a, b, r=reduction, y=y: LF.cosine_embedding_loss(a, b, y, margin=-2.0, reduction=r)  # noqa: E731
            assert torch.autograd.gradcheck(f, args)
            assert torch.autograd.gradgradcheck(f, args)


def test_module():
    x1, x2, y = problem((4, 3), 6)
    for kw in ({}, {"margin": 0.3, "reduction": "none"}):
        ours, ref = LNN.CosineEmbeddingLoss(**kw), TNN.CosineEmbeddingLoss(**kw)
        assert isinstance(ours, TNN.modules.loss._Loss) and ours.__constants__ == ref.__constants__
        compare(ours, ref, (x1, x2, y), {}, grad=(0, 1))


def test_transforms():
    x1, x2, y = problem((4, 5), 7)
    transforms(LF.cosine_embedding_loss, (x1.float(), x2.float(), y.float()), {"margin": -0.5})


@settings(max_examples=40, deadline=None)
@given(
    n=st.one_of(st.none(), st.integers(0, 6)),
    d=st.integers(1, 6),
    margin=st.sampled_from([0.0, 0.5, -0.5, 0.9]),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_fuzz(n, d, margin, reduction, seed):
    x1, x2, y = problem((d,) if n is None else (n, d), seed, targets=(1.0, -1.0, 0.0))
    kw = {"margin": margin, "reduction": reduction}
    compare(LF.cosine_embedding_loss, TF.cosine_embedding_loss, (x1, x2, y), kw, grad=(0, 1))
    compare(LF.cosine_embedding_loss, TF.cosine_embedding_loss, (x1, x2, y), kw, torch.float32, grad=(0, 1))


def _x(*shape):
    return torch.ones(shape)


BAD = [
    ("reduction", lambda F: F.cosine_embedding_loss(_x(2, 3), _x(2, 3), _x(2), reduction="x"), ("x", "reduction")),
    ("target-2d", lambda F: F.cosine_embedding_loss(_x(2, 3), _x(2, 3), _x(2, 1)), ("'target'", "[2, 1]")),
    ("1d-target-1d-input", lambda F: F.cosine_embedding_loss(_x(3), _x(3), _x(1)), ("'input1'", "[3]")),
    ("0d-target-2d-input", lambda F: F.cosine_embedding_loss(_x(2, 3), _x(2, 3), _x()), ("'input1'", "[2, 3]")),
    ("size-mismatch", lambda F: F.cosine_embedding_loss(_x(2, 3), _x(2, 4), _x(2)), ("'input2'", "[2, 4]")),
]


@pytest.mark.parametrize(("case", "call", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(case, call, fragments):
    bad(lambda: call(LF), lambda: call(TF), fragments)


def test_bad_margin():
    with pytest.raises(losskit.LossError, match="margin"):
        LF.cosine_embedding_loss(_x(2, 3), _x(2, 3), _x(2), margin=None)
