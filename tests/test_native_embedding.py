"""The native cosine embedding and triplet margin paths (``kernels/embedding.h``) against torch: values and every
input's gradient over the option grid (fp64 tight, fp32 error vs float64 no worse than torch's), the edge points
(swap ties, zero distances, NaN), a scaled loss and a second backward, double backward, and the calls left to the
general path."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import losskit
import losskit.functional as LF
from helpers import seeded
from losskit.engine import native_embedding as NE
from losskit.engine import native_pointwise as NP

DISABLED = os.environ.get("LOSSKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")
pytestmark = pytest.mark.skipif(DISABLED, reason="LOSSKIT_NATIVE=0 in the environment")


@pytest.fixture
def calls(monkeypatch):
    """The kinds the kernel entry ran (0 cosine, 1 triplet)."""
    if NP.library() is None:
        pytest.skip(NP.status())
    seen = []
    real = NE.run
    monkeypatch.setattr(NE, "run", lambda kind, *a, **k: seen.append(kind) or real(kind, *a, **k))
    return seen


def _cosine_inputs(n, d, dtype, key):
    g = seeded("cosine", key)
    a, b = torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randint(-1, 2, (n,), generator=g).to(dtype)  # 1, -1 and 0 (no loss)
    return a, b, y


def _both(ours_fn, ref_fn, inputs, grads, kw, cot=1.0):
    """(loss, gradients) of ours and torch's on fresh leaves."""
    out = []
    for fn in (ours_fn, ref_fn):
        leaves = [t.clone().requires_grad_(i in grads) for i, t in enumerate(inputs)]
        loss = fn(*leaves, **kw)
        (loss * cot).backward()
        out.append((loss.detach(), [leaves[i].grad for i in grads]))
    return out


COSINE_KW = [{}, {"margin": 0.5}, {"margin": -0.25, "reduction": "sum"}]
TRIPLET_KW = [{}, {"p": 1}, {"swap": True}, {"p": 1, "swap": True, "eps": 0.0, "margin": 0.3}, {"reduction": "sum"}]


@pytest.mark.parametrize("kw", COSINE_KW, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 33)], ids=str)
def test_cosine_matches_torch(calls, kw, shape):
    inputs = _cosine_inputs(*shape, torch.float64, (kw, shape))
    (ours, og), (ref, rg) = _both(LF.cosine_embedding_loss, F.cosine_embedding_loss, inputs, (0, 1), kw)
    assert calls == [NE.COSINE]
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=1e-13)
    for o, r in zip(og, rg, strict=True):
        torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kw", TRIPLET_KW, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 33)], ids=str)
def test_triplet_matches_torch(calls, kw, shape):
    g = seeded("triplet", kw, shape)
    inputs = [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(3)]
    (ours, og), (ref, rg) = _both(LF.triplet_margin_loss, F.triplet_margin_loss, inputs, (0, 1, 2), kw)
    assert calls == [NE.TRIPLET]
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=1e-13)
    for o, r in zip(og, rg, strict=True):
        torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["cosine_embedding_loss", "triplet_margin_loss"])
def test_float32_error_no_worse_than_torchs(calls, name):
    """Sums in double: the fp32 loss and gradients within torch's own fp32 error of the float64 result."""
    g = seeded("fp32", name)
    if name == "cosine_embedding_loss":
        inputs = _cosine_inputs(256, 100, torch.float64, "fp32")
    else:
        inputs = tuple(torch.randn(256, 100, generator=g, dtype=torch.float64) for _ in range(3))
    k = len(inputs) if name == "triplet_margin_loss" else 2
    (exact, eg), _ = _both(getattr(F, name), getattr(F, name), inputs, tuple(range(k)), {})
    low = [t.float() for t in inputs]
    (ours, og), (ref, rg) = _both(getattr(LF, name), getattr(F, name), low, tuple(range(k)), {})
    assert abs(float(ours) - float(exact)) <= 2 * abs(float(ref) - float(exact)) + 1e-7 * abs(float(exact))
    for o, r, e in zip(og, rg, eg, strict=True):
        assert (o.double() - e).abs().max() <= 2 * (r.double() - e).abs().max() + 1e-7 * e.abs().max()


def test_triplet_edge_points(calls):
    """Swap ties (torch.minimum splits the gradient), zero distances (eps = 0: the norm's sub-gradient 0),
    a margin hit exactly (clamp passes the gradient at 0) and NaN rows."""
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [float("nan"), 0.0]], dtype=torch.float64)
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.5, 0.0], [0.0, 0.0]], dtype=torch.float64)
    n = torch.tensor([[0.0, 1.0], [2.0, 1.0], [1.5, 0.0], [1.0, 0.0]], dtype=torch.float64)
    # row 0: d(a,n) = d(p,n) = √2 (a tie); row 1: d(a,p) = 0; row 2: 1 + 0.5 - 1.5 = 0 exactly
    for p_ in (1, 2):
        for swap in (False, True):
            kw = {"eps": 0.0, "swap": swap, "p": p_, "reduction": "sum"}
            (ours, og), (ref, rg) = _both(LF.triplet_margin_loss, F.triplet_margin_loss, (a, p, n), (0, 1, 2), kw)
            assert torch.equal(ours.isnan(), ref.isnan())
            for o, r in zip(og, rg, strict=True):
                torch.testing.assert_close(o, r, rtol=1e-13, atol=1e-13, equal_nan=True)
    assert calls and set(calls) == {NE.TRIPLET}


@pytest.mark.parametrize("name", ["cosine_embedding_loss", "triplet_margin_loss"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_scaled_loss_second_backward_and_double_backward(calls, name, reduction):
    if name == "cosine_embedding_loss":
        inputs, k = _cosine_inputs(6, 4, torch.float64, "go"), 2
    else:
        g = seeded("go", name)
        inputs, k = tuple(torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(3)), 3
    ours = [t.clone().requires_grad_(i < k) for i, t in enumerate(inputs)]
    ref = [t.clone().requires_grad_(i < k) for i, t in enumerate(inputs)]
    lo, lr = getattr(LF, name)(*ours, reduction=reduction), getattr(F, name)(*ref, reduction=reduction)
    for _ in range(2):  # grad_output 0.37, then a second backward through the same graph
        go = torch.autograd.grad(lo * 0.37, ours[:k], retain_graph=True)
        gr = torch.autograd.grad(lr * 0.37, ref[:k], retain_graph=True)
        for o, r in zip(go, gr, strict=True):
            torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-14)
    f = lambda *t: getattr(LF, name)(*t, *inputs[k:], reduction=reduction)  # noqa: E731
    assert torch.autograd.gradgradcheck(f, tuple(t.clone().requires_grad_() for t in inputs[:k]))
    assert set(calls) == {NE.COSINE if k == 2 else NE.TRIPLET}


def test_calls_left_to_the_general_path(calls):
    """'none', p = 3, bf16, broadcasting, an int target and a target needing grad go the general way (and a
    margin <= 0 still raises the triplet loss's clear error)."""
    a, b, y = _cosine_inputs(4, 3, torch.float32, "left")
    LF.cosine_embedding_loss(a, b, y, reduction="none")
    LF.cosine_embedding_loss(a.bfloat16(), b.bfloat16(), y.bfloat16())
    LF.cosine_embedding_loss(a, b, y.long())
    LF.cosine_embedding_loss(a, b, y.clone().requires_grad_())
    LF.triplet_margin_loss(a, b, b, p=3)
    LF.triplet_margin_loss(a, b, b[:1])
    LF.triplet_margin_loss(a, b, b, reduction="none")
    assert calls == []
    with pytest.raises(losskit.LossValueError, match="margin"):
        LF.triplet_margin_loss(a, b, b, margin=0.0)
    LF.triplet_margin_loss(a.requires_grad_(), b, b)
    assert calls == [NE.TRIPLET]


@pytest.mark.parametrize("distance", [None, "module-default", "pairwise-p1", "custom"])
def test_triplet_with_distance_default_takes_the_kernel(calls, distance):
    """torch's default distance (None, or an nn.PairwiseDistance with its defaults) is the p = 2 triplet: same
    kernel, torch's numbers; any other distance function runs as given."""
    fn = {
        None: None,
        "module-default": torch.nn.PairwiseDistance(),
        "pairwise-p1": torch.nn.PairwiseDistance(p=1),
        "custom": lambda x, y: (x - y).abs().sum(-1),
    }[distance]
    g = seeded("with-distance", distance)
    inputs = [torch.randn(9, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    kw = {"distance_function": fn, "swap": True, "margin": 0.7}
    (ours, og), (ref, rg) = _both(
        LF.triplet_margin_with_distance_loss, F.triplet_margin_with_distance_loss, inputs, (0, 1, 2), kw
    )
    assert calls == ([NE.TRIPLET] if distance in (None, "module-default") else [])
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=1e-13)
    for o, r in zip(og, rg, strict=True):
        torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-13)
