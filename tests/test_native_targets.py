"""losskit's class-index and two-input kernels (NLL, multi-label margin, multi-class margin, margin ranking,
Gaussian NLL; kernels/pointwise.cpp): each against torch at fp64/fp32 with a scaled loss and a second backward,
double backward, and a bad value handed back to the general path's clear error. The element-wise kinds are in
tests/test_native_pointwise.py.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF
from helpers import KERNEL_PATHS, kernel_spy, seeded
from losskit.engine import native_pairs as NPR
from losskit.engine import native_pointwise as NP
from losskit.engine import native_targets as NT

DISABLED = os.environ.get("LOSSKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")
pytestmark = pytest.mark.skipif(DISABLED, reason="LOSSKIT_NATIVE=0 in the environment")


# ================================================================================ NLL


@pytest.fixture(params=KERNEL_PATHS)
def nll_calls(request, monkeypatch):
    yield from kernel_spy(request.param, monkeypatch, NT, "nll_run", "nll", "the NLL kernel was never called")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignored", ["none", "some", "all"])
@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_nll_matches_torch(nll_calls, dtype, reduction, ignored, scale):
    g = seeded("nll", dtype, reduction, ignored, scale)
    x = torch.randn(9, 7, generator=g, dtype=dtype).log_softmax(1)
    y = torch.randint(0, 7, (9,), generator=g)
    if ignored == "some":
        y[::3] = -100
    elif ignored == "all":
        y[:] = -100
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = LF.nll_loss(ours_x, y, reduction=reduction) * scale
    ref = F.nll_loss(ref_x, y, reduction=reduction) * scale
    ours.backward(retain_graph=True)
    ours.backward()  # a second backward through the same graph
    ref.backward(retain_graph=True)
    ref.backward()
    exact = dtype == torch.float64
    torch.testing.assert_close(ours, ref, equal_nan=True, rtol=1e-15 if exact else 1e-6, atol=0 if exact else 1e-7)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-15 if exact else 1e-6, atol=0)


def test_nll_double_backward_and_bad_target(nll_calls):
    x = torch.randn(4, 5, generator=seeded("nll-gg"), dtype=torch.float64).requires_grad_()
    y = torch.tensor([0, 4, -100, 2])
    assert torch.autograd.gradgradcheck(lambda a: LF.nll_loss(a, y), (x,))
    import losskit

    with pytest.raises(losskit.LossError, match="5"):
        LF.nll_loss(x, torch.tensor([0, 5, 1, 1]))


# ================================================================================ multi-label margin


@pytest.fixture(params=KERNEL_PATHS)
def mlm_calls(request, monkeypatch):
    yield from kernel_spy(
        request.param, monkeypatch, NT, "mlm_run", "multilabel_margin", "the multi-label margin kernel was never called"
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_multilabel_margin_matches_torch(mlm_calls, dtype, reduction, scale):
    """Rows with several classes, a duplicate, no class (padding only) and every class; a scaled loss and a
    second backward through the same graph."""
    g = seeded("mlm", dtype, reduction, scale)
    x = torch.randn(5, 6, generator=g, dtype=dtype)
    y = torch.tensor(
        [[3, 0, -1, 1, 1, 1], [2, 2, 5, -1, 0, 0], [-1, 3, 3, 3, 3, 3], [0, 1, 2, 3, 4, 5], [4, -1, -1, -1, -1, -1]]
    )
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = LF.multilabel_margin_loss(ours_x, y, reduction=reduction) * scale
    ref = F.multilabel_margin_loss(ref_x, y, reduction=reduction) * scale
    ours.backward(retain_graph=True)
    ours.backward()
    ref.backward(retain_graph=True)
    ref.backward()
    tol = 1e-14 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=tol, atol=tol)


def test_multilabel_margin_double_backward_and_bad_target(mlm_calls):
    x = torch.randn(3, 4, generator=seeded("mlm-gg"), dtype=torch.float64).requires_grad_()
    y = torch.tensor([[1, -1, 0, 0], [0, 2, -1, 3], [3, 2, 1, 0]])
    assert torch.autograd.gradgradcheck(lambda a: LF.multilabel_margin_loss(a, y), (x,))
    import losskit

    with pytest.raises(losskit.LossError):
        LF.multilabel_margin_loss(x, torch.tensor([[1, -1, 7, 0], [0, 2, -1, 3], [3, 2, 1, 0]]))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_nll_large_gradient_zeroed_over_the_pool(nll_calls, threads):
    """From PARALLEL_ELEMENTS the kernel zeroes and writes the gradient in row chunks over its worker pool: the
    same bits as torch for any thread count (chunks of rows that do not divide N, ignored rows, retain_graph)."""
    g = seeded("nll-large")
    x = torch.randn(301, 250, generator=g, dtype=torch.float64).log_softmax(1)
    assert x.numel() >= NP.PARALLEL_ELEMENTS
    y = torch.randint(0, 250, (301,), generator=g)
    y[::5] = -100
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours = LF.nll_loss(ours_x, y)
        ours.backward(retain_graph=True)
        first = ours_x.grad.clone()
        ours.backward()
    finally:
        torch.set_num_threads(before)
    ref = F.nll_loss(ref_x, y)
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-14, atol=0)  # sums in double, like torch's, in its order
    assert torch.equal(first, ref_x.grad)
    assert torch.equal(ours_x.grad, 2 * ref_x.grad)


# ================================================================================ multi-class margin


@pytest.fixture(params=KERNEL_PATHS)
def mm_calls(request, monkeypatch):
    yield from kernel_spy(
        request.param, monkeypatch, NT, "mm_run", "multi_margin", "the multi-margin kernel was never called"
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_multi_margin_matches_torch(mm_calls, dtype, reduction, p, weighted, scale):
    g = seeded("mm", dtype, reduction, p, weighted, scale)
    x = torch.randn(7, 5, generator=g, dtype=dtype)
    y = torch.randint(0, 5, (7,), generator=g)
    w = torch.rand(5, generator=g, dtype=dtype) + 0.5 if weighted else None
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    kw = {"p": p, "margin": 0.8, "weight": w, "reduction": reduction}
    ours = LF.multi_margin_loss(ours_x, y, **kw) * scale
    ref = F.multi_margin_loss(ref_x, y, **kw) * scale
    ours.backward(retain_graph=True)
    ours.backward()
    ref.backward(retain_graph=True)
    ref.backward()
    tol = 1e-14 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_double_backward_and_bad_target(mm_calls, p):
    x = torch.randn(4, 5, generator=seeded("mm-gg", p), dtype=torch.float64).requires_grad_()
    y = torch.tensor([0, 4, 1, 2])
    w = torch.rand(5, generator=seeded("mm-w", p), dtype=torch.float64) + 0.5
    assert torch.autograd.gradgradcheck(lambda a: LF.multi_margin_loss(a, y, p=p, weight=w), (x,))
    import losskit

    with pytest.raises(losskit.LossError):
        LF.multi_margin_loss(x, torch.tensor([0, 5, 1, 1]), p=p)


# ================================================================================ margin ranking


@pytest.fixture
def mr_calls(monkeypatch):
    yield from kernel_spy("python", monkeypatch, NPR, "mr_run", "", "the margin-ranking kernel was never called")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("which", ["both", "first", "second"])
@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_margin_ranking_matches_torch(mr_calls, dtype, reduction, which, scale):
    """Both inputs or one requiring grad, a scaled loss, a second backward; ties (z = 0) and a NaN included."""
    g = seeded("mr", dtype, reduction, which, scale)
    x1 = torch.randn(33, generator=g, dtype=dtype)
    x2 = torch.randn(33, generator=g, dtype=dtype)
    y = torch.randn(33, generator=g, dtype=dtype).sign()
    x2[0] = x1[0] - 0.25 * y[0]  # z = -y·(x1 - x2) + 0.25 = 0: torch's clamp passes the gradient there
    x1[1] = float("nan")
    ours1, ours2 = x1.clone().requires_grad_(which != "second"), x2.clone().requires_grad_(which != "first")
    ref1, ref2 = x1.clone().requires_grad_(which != "second"), x2.clone().requires_grad_(which != "first")
    ours = LF.margin_ranking_loss(ours1, ours2, y, margin=0.25, reduction=reduction) * scale
    ref = F.margin_ranking_loss(ref1, ref2, y, margin=0.25, reduction=reduction) * scale
    ours.backward(retain_graph=True)
    ours.backward()
    ref.backward(retain_graph=True)
    ref.backward()
    torch.testing.assert_close(ours, ref, equal_nan=True)
    for a, b in ((ours1, ref1), (ours2, ref2)):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


def test_margin_ranking_double_backward(mr_calls):
    g = seeded("mr-gg")
    x1 = torch.randn(6, generator=g, dtype=torch.float64).requires_grad_()
    x2 = torch.randn(6, generator=g, dtype=torch.float64).requires_grad_()
    y = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    assert torch.autograd.gradgradcheck(lambda a, b: LF.margin_ranking_loss(a, b, y, margin=0.1), (x1, x2))


# ================================================================================ Gaussian NLL


@pytest.fixture
def gn_calls(monkeypatch):
    yield from kernel_spy("python", monkeypatch, NPR, "gn_run", "", "the Gaussian NLL kernel was never called")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_gaussian_nll_matches_torch(gn_calls, dtype, reduction, full, scale):
    """Both gradients (input and var), variances below eps (clamped, gradient passed through), a scaled loss
    and a second backward through the same graph."""
    g = seeded("gn", dtype, reduction, full, scale)
    x = torch.randn(8, 5, generator=g, dtype=dtype)
    t = torch.randn(8, 5, generator=g, dtype=dtype)
    v = torch.rand(8, 5, generator=g, dtype=dtype) + 0.1
    v[0, :3] = torch.tensor([0.0, 1e-9, 1e-6], dtype=dtype)
    ox, ov, rx, rv = (a.clone().requires_grad_() for a in (x, v, x, v))
    ours = LF.gaussian_nll_loss(ox, t, ov, full=full, reduction=reduction) * scale
    ref = F.gaussian_nll_loss(rx, t, rv, full=full, reduction=reduction) * scale
    ours.backward(retain_graph=True)
    ours.backward()
    ref.backward(retain_graph=True)
    ref.backward()
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(ox.grad, rx.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(ov.grad, rv.grad, rtol=tol, atol=tol)


def test_gaussian_nll_double_backward_and_negative_var(gn_calls):
    g = seeded("gn-gg")
    x = torch.randn(3, 4, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.randn(3, 4, generator=g, dtype=torch.float64)
    v = (torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.2).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a, b: LF.gaussian_nll_loss(a, t, b), (x, v))
    import losskit

    with pytest.raises(losskit.LossError, match="var"):
        LF.gaussian_nll_loss(x, t, -v.detach())


# ================================================================================ linear CE, a classifier head's batch


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_small_linear_cross_entropy_matches_torch(monkeypatch, reduction, scale):
    """N·V up to 64k: one matmul, the small CE kernel, two matmuls; ignored rows, a scaled loss, retain_graph."""
    from losskit.engine import small

    calls = []
    real = small._run
    monkeypatch.setattr(small, "_run", lambda x, *a: calls.append(x.shape) or real(x, *a))
    g = seeded("small-lce", reduction, scale)
    h = torch.randn(32, 6, generator=g)
    w = torch.randn(10, 6, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    y[::5] = -100
    oh, ow, rh, rw = (a.clone().requires_grad_() for a in (h, w, h, w))
    ours = LF.linear_cross_entropy(oh, ow, y, reduction=reduction) * scale
    ref = F.linear_cross_entropy(rh, rw, y, reduction=reduction) * scale
    ours.backward(retain_graph=True)
    ours.backward()
    ref.backward(retain_graph=True)
    ref.backward()
    assert calls and calls[0] == (32, 10)
    torch.testing.assert_close(ours, ref, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(oh.grad, rh.grad, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(ow.grad, rw.grad, rtol=2e-5, atol=1e-6)
    import losskit

    with pytest.raises(losskit.LossError, match="linear_cross_entropy"):
        LF.linear_cross_entropy(h, w, torch.full((32,), 10))
