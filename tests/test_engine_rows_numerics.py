"""Numerics of the fused cross-entropy row engine (``losskit.engine.rows``) on its torch-op path.

1. class-probability targets against a float64 oracle written with torch (weight, label smoothing, z-loss,
   every reduction, a target that requires grad), one chunk and many;
2. issue 15 item 12: bf16 on the torch-op path (the CPU kernel and the small path switched off) with z-loss at
   C=1 and with label smoothing 1.0 + weights + 'sum', against float64 truth: no worse than torch's own bf16.

Oracles are ``torch.nn.functional`` and float64 math, never losskit itself.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import losskit.engine.native
import losskit.engine.rows as engine
import losskit.engine.small
import losskit.functional as LF
from helpers import entry_off

REDUCTIONS = ("none", "mean", "sum")


def _oracle_probabilities(x, t, weight, reduction, eps, z):
    """torch's cross entropy for probability targets plus ``z·lse²`` per row, reduced like the loss (mean: / N)."""
    rows = F.cross_entropy(x, t, weight, reduction="none", label_smoothing=eps)
    if z > 0:
        rows = rows + z * torch.logsumexp(x, 1) ** 2
    if reduction == "none":
        return rows
    return rows.sum() if reduction == "sum" else rows.sum() / x.shape[0]


def _probability_problem(n, c, seed, weighted):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    t = torch.randn(n, c, generator=g, dtype=torch.float64).softmax(1)
    w = torch.rand(c, generator=g, dtype=torch.float64) + 0.5 if weighted else None
    grad_out = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    return x, t, w, grad_out


def _grads(fn, x, t, w, grad_out, reduction):
    x, t = x.clone().requires_grad_(), t.clone().requires_grad_()
    loss = fn(x, t, w)
    go = grad_out if reduction == "none" else torch.tensor(1.75, dtype=grad_out.dtype)
    gx, gt = torch.autograd.grad(loss, (x, t), go.to(loss.dtype))
    return loss.detach(), gx, gt


@pytest.mark.parametrize("chunk", [None, 37], ids=["one-chunk", "many-chunks"])
@pytest.mark.parametrize("weighted", [False, True], ids=["no-w", "w"])
@pytest.mark.parametrize("eps", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("z", [0.0, 1e-2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_probabilities_match_float64_oracle(monkeypatch, dtype, reduction, z, eps, weighted, chunk):
    if chunk is not None:
        monkeypatch.setattr(engine, "CHUNK_ELEMENTS", chunk)
    n, c = 23, 7
    x, t, w, grad_out = _probability_problem(n, c, seed=11, weighted=weighted)
    want = _grads(lambda a, b, ww: _oracle_probabilities(a, b, ww, reduction, eps, z), x, t, w, grad_out, reduction)
    xs, ts, ws = x.to(dtype), t.to(dtype), None if w is None else w.to(dtype)
    got = _grads(
        lambda a, b, ww: LF.cross_entropy(a, b, ww, reduction=reduction, label_smoothing=eps, z_loss=z),
        xs,
        ts,
        ws,
        grad_out,
        reduction,
    )
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-6}
    for what, a, b in zip(("loss", "grad wrt logits", "grad wrt target"), got, want, strict=True):
        assert a.dtype == dtype, what
        torch.testing.assert_close(a.double(), b, msg=lambda m, what=what: f"{what}: {m}", **tol)


def test_probabilities_fp32_matches_torch_fp32():
    """At the benchmarked shape class (wide rows), fp32 loss and gradients equal torch's to fp32 rounding."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 1000, generator=g) * 4
    t = torch.randn(300, 1000, generator=g).softmax(1)
    for reduction in REDUCTIONS:
        xt, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
        lt = F.cross_entropy(xt, t, reduction=reduction)
        ll = LF.cross_entropy(xl, t, reduction=reduction)
        go = torch.ones_like(lt)
        lt.backward(go)
        ll.backward(go)
        torch.testing.assert_close(ll, lt, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(xl.grad, xt.grad, rtol=1e-4, atol=1e-8)


# ============================================================= issue 15 item 12: bf16 on the torch-op path


@pytest.fixture
def torch_op_path(monkeypatch):
    """Neither the CPU kernel nor the small path: the chunks of torch ops serve every dtype (as on CUDA)."""
    entry_off(monkeypatch)
    monkeypatch.setattr(losskit.engine.native, "supports", lambda x: False)
    monkeypatch.setattr(losskit.engine.small, "eligible", lambda *a, **k: False)


def _bf16_ulp(magnitude: float) -> float:
    """One bf16 ulp (8 significant bits) at ``magnitude``."""
    return 2.0 ** (torch.tensor(magnitude, dtype=torch.float64).log2().floor().item() - 7)


@pytest.mark.parametrize("weighted", [False, True], ids=["no-w", "w"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("z", [1e-4, 1e-2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bf16_z_loss_gradient_at_one_class(torch_op_path, reduction, z, eps, weighted):
    """C=1: the NLL and smoothing terms of the gradient cancel exactly, leaving ``2·z·lse`` (times the
    reduction's scale). The bf16 gradient must be within one bf16 ulp of the float64 truth."""
    n = 256
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, generator=g).bfloat16()
    y = torch.zeros(n, dtype=torch.long)
    w = torch.tensor([1.75], dtype=torch.bfloat16) if weighted else None
    grad_out = (torch.rand(n, generator=g) + 0.5).bfloat16().double()

    xd = x.double().requires_grad_()
    wd = None if w is None else w.double()
    rows = F.cross_entropy(xd, y, wd, reduction="none", label_smoothing=eps) + z * torch.logsumexp(xd, 1) ** 2
    if reduction == "none":
        truth = torch.autograd.grad(rows, xd, grad_out)[0]
    else:
        denom = n if wd is None else float(wd.sum()) * n  # torch's mean: Σ w_y over the rows
        loss = rows.sum() if reduction == "sum" else rows.sum() / denom
        truth = torch.autograd.grad(loss, xd)[0]

    xb = x.clone().requires_grad_()
    loss_b = LF.cross_entropy(xb, y, w, reduction=reduction, label_smoothing=eps, z_loss=z)
    loss_b.backward(grad_out.bfloat16() if reduction == "none" else None)
    assert xb.grad is not None and xb.grad.dtype == torch.bfloat16
    err = (xb.grad.double() - truth).abs().max().item()
    bound = _bf16_ulp(truth.abs().max().item())
    assert err <= bound, f"bf16 z-loss gradient error {err:.3g} > one bf16 ulp {bound:.3g}"


@pytest.mark.parametrize("c", [2, 3, 10, 100])
@pytest.mark.parametrize("seed", [2, 3])
def test_bf16_full_smoothing_weighted_sum_no_worse_than_torch(torch_op_path, c, seed):
    """label_smoothing=1.0 with class weights and 'sum': the bf16 gradient's error vs float64 is at most torch's."""
    n = 64
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g).bfloat16()
    y = torch.randint(0, c, (n,), generator=g)
    w = (torch.rand(c, generator=g) + 0.5).bfloat16()
    kw = {"reduction": "sum", "label_smoothing": 1.0}

    xd = x.double().requires_grad_()
    truth = torch.autograd.grad(F.cross_entropy(xd, y, w.double(), **kw), xd)[0]
    xt, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
    F.cross_entropy(xt, y, w, **kw).backward()
    LF.cross_entropy(xl, y, w, **kw).backward()
    assert xt.grad is not None and xl.grad is not None
    torch_err = (xt.grad.double() - truth).abs().max().item()
    ours = (xl.grad.double() - truth).abs().max().item()
    assert ours <= torch_err, f"bf16 gradient error {ours:.3g} > torch's {torch_err:.3g}"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bf16_plain_still_takes_native_softmax_path(reduction):
    """Without smoothing and z-loss the bf16 softmax path is kept (speed); with either, the exact fp32 path."""
    opts = engine.CrossEntropyOptions(reduction)
    y = torch.zeros(4, dtype=torch.long)
    plan = engine.RowPlan(y, None, opts, 4, 3, torch.float32, torch.device("cpu"), True)
    assert plan.native(torch.bfloat16)
    for extra in ({"label_smoothing": 0.1}, {"z_loss": 1e-3}):
        opts = engine.CrossEntropyOptions(reduction, **extra)
        plan = engine.RowPlan(y, None, opts, 4, 3, torch.float32, torch.device("cpu"), True)
        assert not plan.native(torch.bfloat16), extra
