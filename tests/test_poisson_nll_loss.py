"""poisson_nll_loss / PoissonNLLLoss against torch 2.13."""

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

SHAPES = [(), (7,), (3, 5), (2, 3, 4)]
OPTIONS = [
    {},
    {"log_input": False},
    {"full": True},
    {"log_input": False, "full": True},
    {"log_input": False, "eps": 0.5},
]


def problem(shape, seed: int, log_input: bool = True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if not log_input:
        x = x.abs() + 0.05  # a rate
    t = torch.poisson(torch.rand(shape, generator=g, dtype=torch.float64) * 5, generator=g)
    if t.numel() > 2:
        t.view(-1)[:2] = torch.tensor([0.0, 1.0], dtype=torch.float64)  # the Stirling term's edge
    return x, t


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_grid(shape, options, reduction, dtype):
    x, t = problem(shape, len(shape) * 7 + len(options), options.get("log_input", True))
    kw = dict(options, reduction=reduction)
    compare(LF.poisson_nll_loss, TF.poisson_nll_loss, (x, t), kw, dtype, grad=(0,))
    compare(LF.poisson_nll_loss, TF.poisson_nll_loss, (x, t), kw, dtype, grad=(0, 1))  # target grad too


@pytest.mark.parametrize("shapes", [((3, 5), (5,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1))], ids=str)
def test_broadcasting_and_dtypes(shapes):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shapes[0], generator=g, dtype=torch.float64)
    t = torch.poisson(torch.rand(shapes[1], generator=g, dtype=torch.float64) * 3)
    for reduction in REDUCTIONS:
        compare(LF.poisson_nll_loss, TF.poisson_nll_loss, (x, t), {"reduction": reduction}, grad=(0, 1))
    compare(LF.poisson_nll_loss, TF.poisson_nll_loss, (x, t.long()), {"full": True})  # integer counts
    compare(LF.poisson_nll_loss, TF.poisson_nll_loss, (x.float(), t), {}, torch.float32)  # mixed float dtypes


def test_integer_inputs():
    x, t = torch.tensor([0, 1, 2]), torch.tensor([1, 3, 0])
    for kw in ({}, {"log_input": False}, {"full": True, "reduction": "none"}):
        ours, ref = LF.poisson_nll_loss(x, t, **kw), TF.poisson_nll_loss(x, t, **kw)
        assert ours.dtype == ref.dtype
        torch.testing.assert_close(ours, ref)


def test_nonfinite_positions():
    x = torch.tensor([0.0, float("nan"), float("inf"), -float("inf"), 800.0, 1.0], dtype=torch.float64)
    t = torch.tensor([1.0, 2.0, 3.0, 4.0, 2.0, float("inf")], dtype=torch.float64)
    for kw in ({}, {"log_input": False}, {"full": True}):
        for reduction in REDUCTIONS:
            compare(LF.poisson_nll_loss, TF.poisson_nll_loss, (x, t), dict(kw, reduction=reduction))


def test_legacy():
    x, t = problem((4, 3), 3)
    legacy(LF.poisson_nll_loss, TF.poisson_nll_loss, (x, t), {"full": True})


def test_gradcheck():
    x, t = problem((3, 4), 4)
    for kw in ({}, {"log_input": False, "full": True}):
        for reduction in REDUCTIONS:
            xs = (x.abs() + 0.2 if kw else x).clone().requires_grad_()
            ts = t.clone().add_(0.5).requires_grad_()  # off the masked Stirling edge
            f = lambda a, b, r=reduction, kw=kw: LF.poisson_nll_loss(a, b, reduction=r, **kw)  # noqa: E731
            assert torch.autograd.gradcheck(f, (xs, ts))
            assert torch.autograd.gradgradcheck(f, (xs, ts))


def test_module():
    x, t = problem((4, 3), 5)
    for kw in ({}, {"log_input": False, "full": True, "eps": 1e-3, "reduction": "sum"}):
        ours, ref = LNN.PoissonNLLLoss(**kw), TNN.PoissonNLLLoss(**kw)
        assert isinstance(ours, TNN.modules.loss._Loss)
        assert ours.__constants__ == ref.__constants__
        compare(ours, ref, (x.abs() + 0.1, t), {}, grad=(0,))
    with pytest.warns(UserWarning, match="size_average and reduce"):
        assert LNN.PoissonNLLLoss(size_average=False).reduction == "sum"


def test_transforms():
    x, t = problem((4, 5), 6)
    transforms(LF.poisson_nll_loss, (x.float(), t.float()))
    transforms(LF.poisson_nll_loss, (x.float().abs() + 0.1, t.float()), {"log_input": False, "full": True})


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple),
    log_input=st.booleans(),
    full=st.booleans(),
    eps=st.sampled_from([1e-8, 1e-3, 0.5]),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_fuzz(shape, log_input, full, eps, reduction, seed):
    x, t = problem(shape, seed, log_input)
    kw = {"log_input": log_input, "full": full, "eps": eps, "reduction": reduction}
    compare(LF.poisson_nll_loss, TF.poisson_nll_loss, (x, t), kw, grad=(0, 1))
    compare(LF.poisson_nll_loss, TF.poisson_nll_loss, (x, t), kw, torch.float32, grad=(0,))


def _x():
    return torch.ones(2, 3)


BAD = [
    ("reduction", lambda F: F.poisson_nll_loss(_x(), _x(), reduction="avg"), ("avg", "reduction")),
    ("broadcast", lambda F: F.poisson_nll_loss(_x(), torch.ones(2, 4)), ("'input'", "'target'", "[2, 4]")),
    ("input-type", lambda F: F.poisson_nll_loss([1.0], _x()), ("'input'", "list")),
    ("target-type", lambda F: F.poisson_nll_loss(_x(), 1.0), ("'target'", "float")),
]


@pytest.mark.parametrize(("case", "call", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(case, call, fragments):
    bad(lambda: call(LF), lambda: call(TF), fragments)


def test_bad_options_are_losskit_errors():
    for kw, name in (({"log_input": "yes"}, "log_input"), ({"full": 2}, "full"), ({"eps": "0.1"}, "eps")):
        with pytest.raises(losskit.LossError, match=name):
            LF.poisson_nll_loss(_x(), _x(), **kw)
