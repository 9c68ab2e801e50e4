"""Tests of the fused cross-entropy row engine (``losskit.engine.rows``), continued from
``tests/test_engine_rows.py``:

3. ``inplace=True``: same results, gradient written over the logits, autograd's errors on misuse;
4. memory (not timing): the allocations the profiler sees during forward / forward+backward.

Oracles are ``torch.nn.functional`` and float64 math, never losskit itself.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import losskit.engine.rows as engine
import losskit.functional as LF
from helpers import (
    assert_close_to,
    assert_error_no_worse,
    cotangent,
    oracle_cross_entropy,
    randn_logits,
)
from helpers import ce_problem as _problem
from helpers import class_target as _class_target
from helpers import leaf as _leaf
from helpers import seeded as _gen
from losskit.engine import overwritten

REDUCTIONS = ("none", "mean", "sum")


def _logits(shape, g: torch.Generator, scale: float = 3.0) -> torch.Tensor:
    return randn_logits(shape, g, scale)


# ===================================================================================== 3. inplace


def _h_w(n: int, c: int, d: int, g: torch.Generator, dtype=torch.float64):
    h = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    w = torch.randn(c, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    return h, w


def _grads_through_matmul(loss_fn, h, w, grad_out):
    """loss_fn(logits) with logits = h @ w.T: (loss, dh, dw, logits tensor, its data_ptr before the call)."""
    h, w = _leaf(h), _leaf(w)
    logits = h @ w.T
    ptr = logits.data_ptr()
    loss = loss_fn(logits)
    dh, dw = torch.autograd.grad(loss, (h, w), grad_outputs=grad_out)
    return loss.detach(), dh, dw, logits, ptr


INPLACE_CASES = {
    "index-plain": ("index", "plain", {}),
    "index-w+ii+ls": ("index", "w+ii+ls", {}),
    "prob-w+ls": ("prob", "w+ls", {}),
    "index-z+cap": ("index", "w+ii+ls", {"z_loss": 0.1, "softcap": 4.0}),
}


@pytest.mark.parametrize("chunk", [None, 7], ids=["default-chunks", "chunk7"])
@pytest.mark.parametrize("case", list(INPLACE_CASES.values()), ids=list(INPLACE_CASES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_inplace_through_matmul_matches(monkeypatch, reduction, case, chunk):
    if chunk is not None:
        monkeypatch.setattr(engine, "CHUNK_ELEMENTS", chunk)
    target_kind, options, extras = case
    n, c, d = 11, 6, 4
    g = _gen("inplace", reduction, case[1], target_kind)
    inputs, kwargs = _problem((n, c), target_kind, options, g)
    h, w = _h_w(n, c, d, g)
    kwargs.update(extras, reduction=reduction)
    del inputs["input"]
    grad_out = cotangent(torch.empty(n) if reduction == "none" else torch.empty(()), seed=3).double()

    ref_fn = oracle_cross_entropy if extras else F.cross_entropy
    ref = _grads_through_matmul(lambda x: ref_fn(x, **inputs, **kwargs), h, w, grad_out)
    plain = _grads_through_matmul(lambda x: LF.cross_entropy(x, **inputs, **kwargs), h, w, grad_out)
    inpl = _grads_through_matmul(lambda x: LF.cross_entropy(x, **inputs, **kwargs, inplace=True), h, w, grad_out)
    for i, what in enumerate(("loss", "grad wrt h", "grad wrt W")):
        assert_close_to(inpl[i], ref[i], torch.float64, what)
        assert torch.equal(inpl[i], plain[i]), f"{what}: inplace differs from inplace=False"

    logits_after, ptr_before = inpl[3], inpl[4]
    assert logits_after.data_ptr() == ptr_before
    # the logits' storage now holds d(loss)/d(logits) · grad_output: torch's gradient of the logits
    x_ref = _leaf(h.detach() @ w.detach().T)
    (gx,) = torch.autograd.grad(ref_fn(x_ref, **inputs, **kwargs), x_ref, grad_outputs=grad_out)
    assert_close_to(overwritten.storage(logits_after), gx, torch.float64, "logits storage after backward")


@pytest.mark.parametrize("layout", ["transposed", "column-slice", "K-dim", "unbatched"])
def test_inplace_layouts_match_torch(layout):
    """Non-contiguous logits, K-dim logits (viewed as rows), unbatched logits: same results as torch."""
    g = _gen("inplace-layout", layout)
    h, w = _h_w(6, 5, 3, g)
    if layout == "unbatched":
        y = torch.tensor(2)
    elif layout == "K-dim":
        y = torch.randint(0, 3, (2, 3), generator=g)
    else:
        y = torch.randint(0, 5, (6,), generator=g)

    def logits(h, w):
        if layout == "transposed":
            return (w @ h.T).T
        if layout == "column-slice":
            return (h @ torch.cat([w, w]).T)[:, 2:7]
        if layout == "K-dim":
            return (h @ w.T)[:, :3].reshape(2, 3, 3)  # (N=2, C=3, d=3)
        return w @ h[0]  # (C,): not a view itself

    results = []
    for fn, kw in ((F.cross_entropy, {}), (LF.cross_entropy, {"inplace": True})):
        hh, ww = _leaf(h), _leaf(w)
        loss = fn(logits(hh, ww), y, reduction="sum", **kw)
        results.append((loss.detach(), *torch.autograd.grad(loss, (hh, ww))))
    for ours, ref, what in zip(results[1], results[0], ("loss", "grad wrt h", "grad wrt W"), strict=True):
        assert_close_to(ours, ref, torch.float64, what)


# float64 takes the torch-op engine, float32/bfloat16 losskit's CPU kernel (which writes through a raw pointer)
MISUSE_DTYPES = [torch.float64, torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", MISUSE_DTYPES, ids=str)
@pytest.mark.parametrize("producer", ["exp", "tanh", "sigmoid"])
def test_inplace_over_logits_saved_by_their_producer_raises_at_backward(producer, dtype):
    """(a) The op that made the logits saved its output for backward: autograd's version-counter error."""
    h, w = _h_w(5, 4, 3, _gen("misuse-a", producer), dtype)
    y = torch.tensor([0, 1, 2, 3, 0])
    x = getattr(torch, producer)(h @ w.T)
    loss = LF.cross_entropy(x, y, inplace=True)  # the call itself is fine
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("dtype", MISUSE_DTYPES, ids=str)
def test_inplace_over_logits_saved_by_another_consumer_raises_at_backward(dtype):
    """(a') Another op saved the logits as its input before the in-place call: error at backward."""
    h, w = _h_w(5, 4, 3, _gen("misuse-a2"), dtype)
    x = h @ w.T
    aux = x.pow(2).sum()  # pow saves x
    loss = LF.cross_entropy(x, torch.tensor([0, 1, 2, 3, 0]), inplace=True) + aux
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_inplace_on_leaf_requiring_grad_raises_and_leaves_it_intact(dtype):
    """(b) A leaf that requires grad: RuntimeError at the call, and the leaf is not overwritten."""
    x = torch.randn(4, 5, generator=_gen("misuse-b"), dtype=torch.float64).to(dtype).requires_grad_()
    before = x.detach().clone()
    with pytest.raises(RuntimeError, match="leaf"):
        LF.cross_entropy(x, torch.tensor([0, 1, 2, 3]), inplace=True)
    unchanged = torch.equal(x.detach(), before)
    assert unchanged, "the leaf was overwritten although the call raised"


def test_inplace_second_backward_raises_clearly():
    """(c) retain_graph=True then a second backward: a clear RuntimeError, not a gradient of garbage."""
    h, w = _h_w(5, 4, 3, _gen("misuse-c"))
    loss = LF.cross_entropy(h @ w.T, torch.tensor([0, 1, 2, 3, 0]), inplace=True)
    loss.backward(retain_graph=True)
    first = h.grad.clone()
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()
    assert torch.equal(h.grad, first)


def test_inplace_over_expanded_logits_falls_back_to_a_fresh_buffer():
    """Logits with overlapping memory cannot hold a gradient in place: losskit works in a fresh buffer
    instead, so the gradient is torch's, never a wrong one."""
    base = torch.randn(1, 5, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    LF.cross_entropy((base * 1.0).expand(4, 5), y, inplace=True).backward()
    ref = base.detach().clone().requires_grad_()
    F.cross_entropy((ref * 1.0).expand(4, 5), y).backward()
    torch.testing.assert_close(base.grad, ref.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("leaf", [True, False], ids=["leaf", "non-leaf"])
def test_inplace_without_grad_mode_leaves_logits_intact(mode, leaf):
    """With grad mode off no gradient is computed, so nothing is written over the logits (as for logits
    that do not require grad): in particular a leaf that requires grad is never silently overwritten."""
    g = _gen("inplace-nograd", mode, leaf)
    if leaf:
        x = torch.randn(4, 5, generator=g, requires_grad=True)
    else:
        h, w = _h_w(4, 5, 3, g, torch.float32)
        x = h @ w.T
    y = torch.tensor([0, 1, 2, 3])
    before = x.detach().clone()
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with ctx:
        loss = LF.cross_entropy(x, y, inplace=True)
    unchanged = torch.equal(x.detach(), before)
    assert unchanged, "inplace=True overwrote the logits with grad mode off"
    torch.testing.assert_close(loss, F.cross_entropy(before, y))


def test_inplace_on_logits_not_requiring_grad_is_a_plain_forward():
    x = torch.randn(6, 5, generator=_gen("inplace-nograd-tensor"))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    before = x.clone()
    loss = LF.cross_entropy(x, y, inplace=True)
    assert torch.equal(x, before)
    torch.testing.assert_close(loss, F.cross_entropy(x, y))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_inplace_bf16(reduction):
    """bf16 logits with inplace: gradient in bf16, close to inplace=False and no worse than torch."""
    n, c, d = 32, 40, 8
    g = _gen("inplace-bf16", reduction)
    h, w = _h_w(n, c, d, g, torch.bfloat16)
    y = _class_target((n, c), g, ignore_index=-100)
    kw = {"reduction": reduction, "label_smoothing": 0.1}
    grad_out = cotangent(torch.empty(n) if reduction == "none" else torch.empty(()), seed=5).bfloat16()
    inpl = _grads_through_matmul(lambda x: LF.cross_entropy(x, y, **kw, inplace=True), h, w, grad_out)
    plain = _grads_through_matmul(lambda x: LF.cross_entropy(x, y, **kw), h, w, grad_out)
    ref = _grads_through_matmul(lambda x: F.cross_entropy(x, y, **kw), h, w, grad_out)
    truth = _grads_through_matmul(
        lambda x: F.cross_entropy(x.double(), y, **kw), h, w, grad_out.double()
    )  # float64 math on the bf16 logits; grads come back in bf16 through the matmul
    # inplace=True takes the fp32 path, inplace=False (a scalar reduction) may take the native bf16 one. Both are
    # held to the float64 truth: the loss no worse than torch's own bf16 loss (the requirement); the
    # gradients, rounded to bf16 and pushed through a bf16 matmul, within a small factor of torch's own error
    for i, what in enumerate(("loss", "grad wrt h", "grad wrt W")):
        assert inpl[i].dtype == plain[i].dtype == torch.bfloat16, what
        for ours, label in ((inpl[i], "inplace"), (plain[i], "not inplace")):
            if i == 0:
                assert_error_no_worse(ours, ref[i], truth[i].double(), torch.bfloat16, f"{what} ({label})")
                continue
            err = (ours.double() - truth[i].double()).abs()
            err_torch = (ref[i].double() - truth[i].double()).abs()
            assert err.max() <= 2 * err_torch.max() + 1e-3, f"{what} ({label}): max error {err.max():.3g}"
            assert err.mean() <= 3 * err_torch.mean() + 1e-5, f"{what} ({label}): mean error {err.mean():.3g}"
    assert inpl[3].dtype == torch.bfloat16 and inpl[3].data_ptr() == inpl[4]


# ===================================================================================== 4. memory

MEM_N, MEM_C = 1024, 4096  # 16 MiB of fp32 logits; the tests below pin one engine chunk to 1 MiB


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 2**18 elements, a sixteenth of the memory problem, whatever the engine's default."""
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", 1 << 18)


def _memory_events(fn) -> list[int]:
    """Byte counts of every CPU allocation (> 0) and free (< 0) the profiler records while ``fn`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return [e.nbytes() for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]


def _mem_problem(dtype, target_kind: str, g: torch.Generator):
    x = torch.randn(MEM_N, MEM_C, generator=g).to(dtype)
    if target_kind == "prob":
        y = torch.softmax(torch.randn(MEM_N, MEM_C, generator=g), 1).to(dtype)
    else:
        y = torch.randint(0, MEM_C, (MEM_N,), generator=g)
        y[::5] = -100
    return x, y


MEM_OPTIONS = {
    "plain": {},
    "all": {"label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 30.0},
    "weighted": {"label_smoothing": 0.1},  # plus a weight, added below
}


def test_profiler_sees_torch_row_by_class_buffers():
    """The measurement is not vacuous: torch's own forward allocates (N, C) buffers the profiler records."""
    x, y = _mem_problem(torch.float32, "index", _gen("mem-sanity"))
    big = MEM_N * MEM_C * 4
    allocs = [b for b in _memory_events(lambda: F.cross_entropy(x, y)) if b > 0]
    assert max(allocs) >= big
    xr = x.clone().requires_grad_()
    allocs = [b for b in _memory_events(lambda: F.cross_entropy(xr, y).backward()) if b >= big]
    assert len(allocs) >= 2


# every option set for logits that do not require grad; grad mode off (logits that require grad) for two
NO_GRAD_CASES = [
    (dtype, target_kind, options, "no-requires-grad")
    for dtype in (torch.float32, torch.bfloat16)
    for target_kind in ("index", "prob")
    for options in MEM_OPTIONS
] + [
    (dtype, "index", options, state)
    for dtype in (torch.float32, torch.bfloat16)
    for options in ("plain", "all")
    for state in ("no_grad", "inference_mode")
]


@pytest.mark.parametrize(
    ("dtype", "target_kind", "options", "grad_state"),
    NO_GRAD_CASES,
    ids=[f"{str(d)[6:]}-{k}-{o}-{s}" for d, k, o, s in NO_GRAD_CASES],
)
def test_forward_without_grad_holds_no_row_by_class_buffer(dtype, target_kind, options, grad_state, small_chunks):
    g = _gen("mem-fwd", dtype, target_kind, options)
    x, y = _mem_problem(dtype, target_kind, g)
    kw = dict(MEM_OPTIONS[options])
    if options == "weighted":
        kw["weight"] = torch.rand(MEM_C, generator=g).to(dtype) + 0.5
    if grad_state != "no-requires-grad":
        x.requires_grad_()
    ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(grad_state)

    def forward():
        if ctx is None:
            return LF.cross_entropy(x, y, **kw)
        with ctx():
            return LF.cross_entropy(x, y, **kw)

    allocs = [b for b in _memory_events(forward) if b > 0]
    limit = MEM_N * MEM_C * x.element_size() // 4
    assert allocs, "the profiler recorded no allocation at all"
    assert max(allocs) < limit, f"largest allocation {max(allocs)} B >= {limit} B (N*C*itemsize/4)"


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("options", ["plain", "all"])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_forward_backward_allocates_one_buffer_which_becomes_grad(dtype, target_kind, options, reduction):
    """A leaf that requires grad: forward+backward allocate exactly one (N, C) buffer, none is freed, and
    ``x.grad`` is that buffer (no copy)."""
    x, y = _mem_problem(dtype, target_kind, _gen("mem-fb", dtype, target_kind, options))
    x.requires_grad_()
    kw = dict(MEM_OPTIONS[options], reduction=reduction)

    def step():
        loss = LF.cross_entropy(x, y, **kw)
        loss.backward(torch.ones_like(loss))

    big = MEM_N * MEM_C * x.element_size()
    events = _memory_events(step)
    allocs = [b for b in events if b >= big]
    frees = [b for b in events if b <= -big]
    assert len(allocs) == 1, f"(N, C)-sized allocations: {allocs}"
    assert allocs[0] == big and not frees
    assert x.grad is not None and x.grad.dtype == dtype and x.grad.shape == x.shape
    assert x.grad.untyped_storage().nbytes() == big


def test_inplace_allocates_no_row_by_class_buffer():
    g = _gen("mem-inplace")
    h = torch.randn(MEM_N, 16, generator=g, requires_grad=True)
    w = torch.randn(MEM_C, 16, generator=g, requires_grad=True)
    y = torch.randint(0, MEM_C, (MEM_N,), generator=g)
    x = h @ w.T

    def step():
        LF.cross_entropy(x, y, inplace=True, label_smoothing=0.1).backward()

    big = MEM_N * MEM_C * 4
    events = _memory_events(step)
    assert [b for b in events if b > 0], "the profiler recorded no allocation at all"
    assert not [b for b in events if b >= big]
    assert h.grad is not None and w.grad is not None
