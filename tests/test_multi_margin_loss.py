"""multi_margin_loss / MultiMarginLoss against torch 2.13 (p, margin, class weights, unbatched, errors)."""

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
from loss_checks import REDUCTIONS, bad, compare, legacy, transforms

DTYPES = [torch.float64, torch.float32]  # torch's CPU kernel has no bf16 / fp16
SHAPES = [(5,), (1, 4), (6, 4), (9, 1), (3, 7)]
OPTIONS = [{}, {"p": 2}, {"margin": 0.5}, {"p": 2, "margin": 2.0}, {"margin": 0.0}, {"margin": -0.5}]


def problem(shape, seed: int, weighted: bool = False, ties: bool = True):
    """Scores on a 1/8 grid (so hinges hit their kink exactly), targets in range, optional class weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.round(torch.randn(shape, generator=g, dtype=torch.float64) * 8) / 8
    c = shape[-1]
    y = torch.randint(0, c, shape[:-1], generator=g)
    if not ties:
        x = torch.randn(shape, generator=g, dtype=torch.float64)
    w = torch.rand(c, generator=g, dtype=torch.float64) + 0.2 if weighted else None
    return x, y, w


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_grid(shape, options, weighted, reduction, dtype):
    x, y, w = problem(shape, len(shape) * 13 + shape[-1] + len(options), weighted)
    kw = dict(options, reduction=reduction, weight=None if w is None else w.to(dtype))
    compare(LF.multi_margin_loss, TF.multi_margin_loss, (x, y), kw, dtype)


def test_target_shapes():
    """Unbatched input with a 0-d or a (1,) target; a (1, C) input with a 0-d target; a 0-d input."""
    x, _, _ = problem((4,), 1)
    for y in (torch.tensor(2), torch.tensor([2])):
        for reduction in REDUCTIONS:
            compare(LF.multi_margin_loss, TF.multi_margin_loss, (x, y), {"reduction": reduction})
            compare(LF.multi_margin_loss, TF.multi_margin_loss, (x.unsqueeze(0), y), {"reduction": reduction})
    for reduction in REDUCTIONS:
        x0 = torch.tensor(0.5, dtype=torch.float64)
        compare(LF.multi_margin_loss, TF.multi_margin_loss, (x0, torch.tensor(0)), {"reduction": reduction})


def test_empty_batch():
    """torch leaves the reduced result of an empty batch uninitialized: losskit gives NaN ('mean') and 0."""
    x, y = torch.empty(0, 3, dtype=torch.float64), torch.empty(0, dtype=torch.long)
    compare(LF.multi_margin_loss, TF.multi_margin_loss, (x, y), {"reduction": "none"})
    assert LF.multi_margin_loss(x, y, reduction="sum").item() == 0
    assert LF.multi_margin_loss(x, y).isnan()


def test_nonfinite_positions():
    x, y, _ = problem((4, 3), 2)
    x[0, 1], x[1, y[1]], x[2, 0] = float("nan"), float("inf"), -float("inf")
    for reduction in REDUCTIONS:
        for p in (1, 2):
            compare(LF.multi_margin_loss, TF.multi_margin_loss, (x, y), {"reduction": reduction, "p": p})


def test_legacy():
    x, y, w = problem((4, 3), 3, weighted=True)
    legacy(LF.multi_margin_loss, TF.multi_margin_loss, (x, y), {"weight": w, "p": 2})


def test_gradcheck():
    x, y, w = problem((4, 5), 4, weighted=True, ties=False)
    for p in (1, 2):
        for reduction in REDUCTIONS:
            f = lambda a, r=reduction, p=p: LF.multi_margin_loss(a, y, p=p, weight=w, reduction=r)  # noqa: E731
            assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(),))
            assert torch.autograd.gradgradcheck(f, (x.clone().requires_grad_(),))


def test_module():
    x, y, w = problem((6, 4), 5, weighted=True)
    for kw in ({}, {"p": 2, "margin": 0.5, "weight": w, "reduction": "none"}):
        ours, ref = LNN.MultiMarginLoss(**kw), TNN.MultiMarginLoss(**kw)
        assert isinstance(ours, TNN.modules.loss._WeightedLoss) and ours.__constants__ == ref.__constants__
        assert ours.state_dict().keys() == ref.state_dict().keys()
        compare(ours, ref, (x, y), {})
    m = LNN.MultiMarginLoss(weight=w).to(torch.float32)
    assert m.weight.dtype == torch.float32


def test_transforms():
    x, y, w = problem((4, 5), 6, weighted=True, ties=False)
    transforms(LF.multi_margin_loss, (x.float(), y), {"p": 2, "weight": w.float()})
    transforms(LF.multi_margin_loss, (x.float(), y), {"margin": 0.5})


def test_fused_path_matches_plain_formula():
    """The eager fused Function and the plain formula (compile / torch.func) agree, gradients included."""
    from losskit.losses import multi_margin_loss as mm

    x, y, w = problem((64, 33), 7, weighted=True)
    for p in (1, 2):
        a = x.clone().requires_grad_()
        fused = mm._MultiMargin.apply(a, y, w, p, 1.0, "none")
        b = x.clone().requires_grad_()
        plain = mm.multi_margin(b, y, p, 1.0, w)
        g = torch.randn(64, dtype=torch.float64)
        torch.testing.assert_close(fused, plain)
        torch.testing.assert_close(torch.autograd.grad(fused, a, g)[0], torch.autograd.grad(plain, b, g)[0])


@settings(max_examples=40, deadline=None)
@given(
    n=st.one_of(st.none(), st.integers(1, 6)),
    c=st.integers(1, 6),
    p=st.sampled_from([1, 2]),
    margin=st.sampled_from([1.0, 0.0, 0.5, 2.0]),
    weighted=st.booleans(),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_fuzz(n, c, p, margin, weighted, reduction, seed):
    x, y, w = problem((c,) if n is None else (n, c), seed, weighted)
    if n is None:
        y = y.reshape(())
    kw = {"p": p, "margin": margin, "weight": w, "reduction": reduction}
    compare(LF.multi_margin_loss, TF.multi_margin_loss, (x, y), kw)
    kw["weight"] = None if w is None else w.float()
    compare(LF.multi_margin_loss, TF.multi_margin_loss, (x, y), kw, torch.float32)


def _x(*shape):
    return torch.ones(shape) if shape else torch.ones(5, 4)


def _y():
    return torch.tensor([0, 1, 2, 3, 0])


BAD = [
    ("reduction", lambda F: F.multi_margin_loss(_x(), _y(), reduction="abc"), ("abc", "reduction")),
    ("p-3", lambda F: F.multi_margin_loss(_x(), _y(), p=3), ("p == 1 and p == 2", "3")),
    ("weight-0d", lambda F: F.multi_margin_loss(_x(), _y(), weight=_x(1).squeeze()), ("'weight'", "one-dimensional")),
    ("weight-2d", lambda F: F.multi_margin_loss(_x(), _y(), weight=_x(5, 4)), ("'weight'", "[5, 4]")),
    ("weight-size", lambda F: F.multi_margin_loss(_x(), _y(), weight=_x(5)), ("'weight'", "expected 4", "[5]")),
    ("empty-classes", lambda F: F.multi_margin_loss(_x(5, 0), _y()), ("'input'", "[5, 0]")),
    ("empty-vector", lambda F: F.multi_margin_loss(_x(0), _y()), ("'input'", "[0]")),
    ("3d-input", lambda F: F.multi_margin_loss(_x(2, 3, 4), _y()), ("'input'", "[2, 3, 4]")),
    ("target-2d", lambda F: F.multi_margin_loss(_x(), _x(5, 4).long()), ("'target'", "[5, 4]")),
    ("target-size", lambda F: F.multi_margin_loss(_x(), _y()[:3]), ("'target'", "[5]", "[3]")),
    ("target-float", lambda F: F.multi_margin_loss(_x(), _y().float()), ("'target'", "torch.float32")),
    ("target-range", lambda F: F.multi_margin_loss(_x(), torch.tensor([0, 1, 4, 3, 0])), ("'target'", "4")),
    ("target-negative", lambda F: F.multi_margin_loss(_x(), torch.tensor([0, 1, -1, 3, 0])), ("'target'", "-1")),
    ("weight-dtype", lambda F: F.multi_margin_loss(_x(), _y(), weight=_x(4).double()), ("'weight'", "float64")),
]


@pytest.mark.parametrize(("case", "call", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(case, call, fragments):
    bad(lambda: call(LF), lambda: call(TF), fragments)


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [({"p": 3}, ("p == 1 and p == 2",)), ({"weight": torch.ones(2, 2)}, ("'weight'", "[2, 2]"))],
    ids=["p", "weight"],
)
def test_bad_constructor(kwargs, fragments):
    """Errors at construction, as torch's module (its module_error_inputs say so)."""
    bad(lambda: LNN.MultiMarginLoss(**kwargs), lambda: TNN.MultiMarginLoss(**kwargs), fragments)


def test_bad_margin_type():
    with pytest.raises(losskit.LossError, match="margin"):
        LF.multi_margin_loss(_x(), _y(), margin="1")
