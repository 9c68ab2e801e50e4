"""Oracle tests for kl_div against torch 2.13's ``torch.nn.functional.kl_div``: values, shapes, dtypes,
gradients w.r.t. input and target, the 'mean' warning, 'batchmean', log_target and the legacy arguments."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
from helpers import DTYPES, LEGACY, SHAPE_IDS, SHAPES, assert_close_to, assert_matches_torch

pytestmark = pytest.mark.filterwarnings("error")

REDUCTIONS = ["none", "mean", "sum", "batchmean"]


def _seed(*parts) -> int:
    return sum((i + 1) * 7919 * len(str(p)) + sum(map(ord, str(p))) for i, p in enumerate(parts)) % 100_000


def kl_inputs(shape, log_target: bool, seed: int):
    """Log-probabilities ``x`` (log_softmax over the last dim) and a target: probabilities with exact zeros
    (``log_target=False``) or finite log-probabilities (``log_target=True``)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64)
    x = logits.log_softmax(-1) if logits.dim() else logits - 0.5
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    if t.numel() >= 3:
        t.view(-1)[:: max(t.numel() // 3, 2)] = 0.0  # exact zeros: they contribute 0
    elif t.numel() == 1 and seed % 2:
        t.view(-1)[0] = 0.0
    if log_target:
        t = torch.randn(shape, generator=g, dtype=torch.float64).clamp(-8, 2) - 1
    return x, t


def _call_recording(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [(w.category, str(w.message)) for w in caught]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("log_target", [False, True], ids=["prob", "logtarget"])
def test_kl_div_grid(log_target, reduction, dtype, shape):
    seed = _seed("kl", log_target, reduction, shape)
    x, t = kl_inputs(shape, log_target, seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="reduction: 'mean' divides", category=UserWarning)
        assert_matches_torch(
            LF.kl_div,
            TF.kl_div,
            {"input": x, "target": t},
            {"reduction": reduction, "log_target": log_target},
            dtype=dtype,
            grad_wrt=("input", "target"),
            seed=seed,
        )


def test_zero_targets_contribute_zero():
    """t = 0 gives 0 whatever the input (no 0·log 0 = NaN), as torch; its target gradient is torch's too."""
    x = torch.tensor([[-0.5, -1.5, -100.0, -2.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.5, 0.0, 0.5]], dtype=torch.float64)
    ours, ref = assert_matches_torch(
        LF.kl_div,
        TF.kl_div,
        {"input": x, "target": t},
        {"reduction": "none"},
        grad_wrt=("input", "target"),
    )
    assert ref[0, 0] == 0 and ref[0, 2] == 0 and ours[0, 0] == 0 and ours[0, 2] == 0
    for reduction in ("sum", "batchmean"):
        assert_matches_torch(
            LF.kl_div,
            TF.kl_div,
            {"input": x, "target": t},
            {"reduction": reduction},
            grad_wrt=("input", "target"),
        )


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mean_warns_like_torch_and_others_do_not(reduction, log_target):
    x, t = kl_inputs((3, 4), log_target, 1)
    ours, ours_w = _call_recording(LF.kl_div, x, t, reduction=reduction, log_target=log_target)
    ref, ref_w = _call_recording(TF.kl_div, x, t, reduction=reduction, log_target=log_target)
    assert ours_w == ref_w
    assert bool(ref_w) == (reduction == "mean")  # the oracle warns for 'mean' only
    assert_close_to(ours, ref, torch.float64)


def test_batchmean_divides_by_batch_size():
    """'batchmean' is the sum over the batch size (the KL of the math), 'mean' divides by every element."""
    x, t = kl_inputs((4, 6), False, 2)
    bm = LF.kl_div(x, t, reduction="batchmean")
    ref = TF.kl_div(x, t, reduction="sum") / 4
    torch.testing.assert_close(bm, ref, rtol=1e-12, atol=1e-12)
    closed = (torch.xlogy(t, t) - t * x).sum() / 4
    torch.testing.assert_close(bm, closed, rtol=1e-12, atol=1e-12)


BROADCAST = [((3, 4), (4,)), ((4,), (3, 4)), ((3, 1), (3, 4)), ((2, 3, 4), (3, 1)), ((), (5,)), ((5,), ())]


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("shapes", BROADCAST, ids=str)
def test_broadcasting_like_torch(shapes, log_target):
    """kl_div broadcasts without a warning; 'batchmean' divides by the size of the *input's* first dim."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(shapes[0], generator=g, dtype=torch.float64) - 1
    t = torch.rand(shapes[1], generator=g, dtype=torch.float64)
    if log_target:
        t = t.log()
    for reduction in ("none", "sum", "batchmean"):
        ours, ours_w = _call_recording(LF.kl_div, x, t, reduction=reduction, log_target=log_target)
        ref, ref_w = _call_recording(TF.kl_div, x, t, reduction=reduction, log_target=log_target)
        assert ours_w == ref_w == []
        assert_close_to(ours, ref, torch.float64, f"reduction={reduction}")
        assert_matches_torch(
            LF.kl_div,
            TF.kl_div,
            {"input": x, "target": t},
            {"reduction": reduction, "log_target": log_target},
            grad_wrt=("input", "target"),
        )


@pytest.mark.parametrize("dtypes", [(torch.float64, torch.float32), (torch.float32, torch.float64)], ids=str)
def test_mixed_dtypes_like_torch(dtypes):
    x, t = kl_inputs((3, 4), False, 3)
    x, t = x.to(dtypes[0]), t.to(dtypes[1])
    for reduction in ("none", "sum", "batchmean"):
        ours, ref = LF.kl_div(x, t, reduction=reduction), TF.kl_div(x, t, reduction=reduction)
        assert ours.dtype == ref.dtype
        assert_close_to(ours, ref, torch.float32)


@pytest.mark.parametrize("legacy", LEGACY, ids=str)
def test_legacy_size_average_reduce(legacy):
    """The legacy pair picks the reduction and warns torch's text (no 'mean' warning on top)."""
    size_average, reduce = legacy
    x, t = kl_inputs((3, 5), False, 5)
    for reduction in ("mean", "none", "sum"):
        kw = {"size_average": size_average, "reduce": reduce, "reduction": reduction}
        ours, ours_w = _call_recording(LF.kl_div, x, t, **kw)
        ref, ref_w = _call_recording(TF.kl_div, x, t, **kw)
        assert ref_w and ours_w == ref_w
        assert_close_to(ours, ref, torch.float64)


@pytest.mark.parametrize("legacy", LEGACY, ids=str)
def test_legacy_with_batchmean(legacy):
    """torch quirk: with the legacy pair *and* reduction='batchmean', the legacy reduction is applied and
    the result is then still divided by the batch size (``reduction == 'batchmean'`` is checked last)."""
    size_average, reduce = legacy
    x, t = kl_inputs((3, 5), False, 6)
    kw = {"size_average": size_average, "reduce": reduce, "reduction": "batchmean"}
    ours, ours_w = _call_recording(LF.kl_div, x, t, **kw)
    ref, ref_w = _call_recording(TF.kl_div, x, t, **kw)
    assert ours_w == ref_w
    assert_close_to(ours, ref, torch.float64)


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean"])
def test_gradcheck(reduction, log_target):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64).log_softmax(-1).requires_grad_()
    t = (torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.1).requires_grad_()  # away from 0
    if log_target:
        t = t.detach().log().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: LF.kl_div(a, b, reduction=reduction, log_target=log_target), (x, t))


_shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)


@settings(max_examples=200)
@given(
    shape=_shapes,
    reduction=st.sampled_from(["none", "sum", "batchmean", "mean"]),
    log_target=st.booleans(),
    zero_frac=st.sampled_from([0.0, 0.3, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_matches_torch_float64(shape, reduction, log_target, zero_frac, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    if log_target:
        t = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    else:
        t = torch.rand(shape, generator=g, dtype=torch.float64)
        t = torch.where(torch.rand(shape, generator=g) < zero_frac, 0.0, t).to(torch.float64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="reduction: 'mean' divides", category=UserWarning)
        assert_matches_torch(
            LF.kl_div,
            TF.kl_div,
            {"input": x, "target": t},
            {"reduction": reduction, "log_target": log_target},
            grad_wrt=("input", "target"),
            seed=seed % 1000,
        )
