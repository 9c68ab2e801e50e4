"""ctc_loss / CTCLoss against torch: values, gradients, target layouts, lengths, edge cases, errors, transforms.

Both implementations are exercised: the C++ kernel (the default on the CPU when it builds) and the torch-op path
(forced with ``torch_path``), so the fallback stays torch's too.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit
import losskit.functional as LF
import losskit.nn as LNN
from helpers import KERNEL_PATHS, assert_matches_torch, entry_off
from losskit.engine import entry, native_ctc
from losskit.losses import ctc_loss as ctc_module

TOL = {torch.float64: {"rtol": 1e-10, "atol": 1e-10}, torch.float32: {"rtol": 1e-4, "atol": 1e-4}}
PATHS = ["kernel", "torch"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    if request.param == "kernel":
        if native_ctc.library() is None:
            pytest.skip(f"CTC kernel unavailable: {native_ctc.status()}")
    else:  # neither the eager fast paths (the C++ entry, native_ctc.plain) nor the kernel inside the ops
        entry_off(monkeypatch)
        native_ctc.library()
        monkeypatch.setattr(native_ctc._loader, "lib", None)
        monkeypatch.setattr(ctc_module, "_use_kernel", lambda lp: False)
    return request.param


def problem(t=12, n=4, c=6, s=5, seed=0, dtype=torch.float64, blank=0, min_len=0, full=False):
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(t, n, c, generator=g, dtype=torch.float64).log_softmax(2).to(dtype)
    labels = [i for i in range(c) if i != blank]
    targets = torch.tensor(labels)[torch.randint(0, len(labels), (n, s), generator=g)]
    il = torch.full((n,), t) if full else torch.randint(max(1, t // 2), t + 1, (n,), generator=g)
    tl = torch.randint(min_len, s + 1, (n,), generator=g)
    return lp, targets, il, tl


def concatenated(targets, tl):
    return torch.cat([targets[i, : int(tl[i])] for i in range(len(tl))])


def compare(lp, targets, il, tl, **kw):
    """Value and gradient (random cotangent) of ours and torch's; equal non-finite positions, close elsewhere."""
    tol = TOL[lp.dtype]
    a = lp.detach().clone().requires_grad_()
    b = lp.detach().clone().requires_grad_()
    ours = LF.ctc_loss(a, targets, il, tl, **kw)
    ref = TF.ctc_loss(b, targets, il, tl, **kw)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, equal_nan=True, **tol)
    cot = torch.rand(ref.shape, generator=torch.Generator().manual_seed(1), dtype=ref.dtype) + 0.5
    (ga,) = torch.autograd.grad(ours, a, cot)
    (gb,) = torch.autograd.grad(ref, b, cot)
    torch.testing.assert_close(ga, gb, equal_nan=True, **tol)
    return ours, ga


# ------------------------------------------------------------------------------------------------ values


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_padded_targets_match_torch(path, reduction, dtype):
    lp, targets, il, tl = problem(dtype=dtype, seed=3)
    compare(lp, targets, il, tl, reduction=reduction)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_concatenated_targets_match_torch(path, reduction):
    lp, targets, il, tl = problem(seed=4)
    compare(lp, concatenated(targets, tl), il, tl, reduction=reduction)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_loss_and_gradient_are_torchs_bit_for_bit_on_the_kernel(dtype, zero_infinity):
    if native_ctc.library() is None:
        pytest.skip(native_ctc.status())
    for seed in range(4):
        lp, targets, il, tl = problem(t=40, n=6, c=9, s=12, seed=seed, dtype=dtype)
        il[0] = 3  # too short for its target: inf / NaN rows
        a, b = lp.clone().requires_grad_(), lp.clone().requires_grad_()
        ours = LF.ctc_loss(a, targets, il, tl, reduction="none", zero_infinity=zero_infinity)
        ref = TF.ctc_loss(b, targets, il, tl, reduction="none", zero_infinity=zero_infinity)
        assert torch.equal(ours, ref)
        cot = torch.linspace(0.5, 1.5, 6, dtype=dtype)
        (ours * cot).sum().backward()
        (ref * cot).sum().backward()
        assert torch.equal(a.grad.nan_to_num(7.0), b.grad.nan_to_num(7.0))


@pytest.mark.parametrize(
    "lengths",
    [
        {"il": (12, 12, 12, 12), "tl": (0, 0, 0, 0)},  # empty targets: only blanks
        {"il": (0, 0, 5, 12), "tl": (0, 3, 2, 5)},  # zero input length: loss 0 or inf
        {"il": (2, 3, 12, 1), "tl": (5, 2, 5, 1)},  # too short for the target: inf
    ],
    ids=["empty-targets", "zero-input", "too-short"],
)
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_edge_lengths_match_torch_including_inf_and_nan(path, lengths, zero_infinity):
    lp, targets, _, _ = problem(seed=6)
    il, tl = torch.tensor(lengths["il"]), torch.tensor(lengths["tl"])
    for reduction in ("none", "sum", "mean"):
        compare(lp, targets, il, tl, reduction=reduction, zero_infinity=zero_infinity)


def test_repeated_labels_and_labels_equal_to_blank_match_torch(path):
    lp, _, il, _ = problem(t=10, n=4, c=4, seed=7, full=True)
    targets = torch.tensor([[1, 1, 1], [2, 0, 2], [3, 1, 0], [0, 0, 0]])  # repeats, blank inside and at the end
    compare(lp, targets, il, torch.tensor([3, 3, 3, 2]), reduction="none")


def test_minus_inf_log_probs_match_torch(path):
    lp, targets, il, tl = problem(seed=8)
    lp = lp.clone()
    lp[3, :, 2] = float("-inf")
    compare(lp, targets, il, tl, reduction="none")


@pytest.mark.parametrize("blank", [0, 3, 5])
def test_any_blank_index(path, blank):
    lp, targets, il, tl = problem(seed=9, blank=blank)
    compare(lp, targets, il, tl, blank=blank, reduction="mean")


def test_unbatched_input(path):
    lp, targets, il, tl = problem(n=1, seed=10)
    for reduction in ("none", "mean", "sum"):
        ours = LF.ctc_loss(lp[:, 0], targets, il, tl, reduction=reduction)  # (1, S) padded
        ref = TF.ctc_loss(lp[:, 0], targets, il, tl, reduction=reduction)
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, **TOL[torch.float64])
        ours = LF.ctc_loss(lp[:, 0], targets[0, : int(tl)], il[0], tl[0], reduction=reduction)  # 0-d lengths
        ref = TF.ctc_loss(lp[:, 0], targets[0, : int(tl)], il[0], tl[0], reduction=reduction)
        torch.testing.assert_close(ours, ref, **TOL[torch.float64])


@pytest.mark.parametrize(
    "kind", ["int64", "int32", "tuple", "list", "int32-targets", "float-targets", "2d-lengths", "noncontiguous"]
)
def test_length_and_target_types(kind):
    lp, targets, il, tl = problem(seed=11)
    if kind == "int32":
        il, tl = il.int(), tl.int()
    elif kind in ("tuple", "list"):
        cast = tuple if kind == "tuple" else list
        il, tl = cast(il.tolist()), cast(tl.tolist())
    elif kind == "int32-targets":
        targets = targets.int()
    elif kind == "float-targets":
        targets = targets.double()
    elif kind == "2d-lengths":
        il, tl = il[None], tl[None]
    elif kind == "noncontiguous":
        lp = lp.transpose(0, 1).contiguous().transpose(0, 1)
        targets = targets.t().contiguous().t()
    compare(lp, targets, il, tl, reduction="mean")


def test_module_equals_function_and_has_torchs_attributes():
    lp, targets, il, tl = problem(seed=12)
    for kw in ({}, {"blank": 2, "reduction": "sum", "zero_infinity": True}):
        ours, ref = LNN.CTCLoss(**kw), torch.nn.CTCLoss(**kw)
        torch.testing.assert_close(ours(lp, targets, il, tl), ref(lp, targets, il, tl), **TOL[torch.float64])
        assert (ours.blank, ours.reduction, ours.zero_infinity) == (ref.blank, ref.reduction, ref.zero_infinity)
        assert isinstance(ours, torch.nn.modules.loss._Loss) and ours.state_dict().keys() == ref.state_dict().keys()


def test_assert_matches_torch_helper_on_module():
    lp, targets, il, tl = problem(seed=13)
    assert_matches_torch(
        LNN.CTCLoss(reduction="sum"),
        torch.nn.CTCLoss(reduction="sum"),
        {"log_probs": lp, "targets": targets, "input_lengths": il, "target_lengths": tl},
        grad_wrt=("log_probs",),
    )


def test_realistic_size_float32(path):
    lp, targets, il, tl = problem(t=200, n=8, c=40, s=50, seed=14, dtype=torch.float32, min_len=20)
    compare(lp, targets, il, tl, reduction="mean")
    # no further from float64 than torch's float32
    a = lp.detach().clone().requires_grad_()
    (ga,) = torch.autograd.grad(LF.ctc_loss(a, targets, il, tl), a)
    lp64 = lp.double().requires_grad_()
    truth = TF.ctc_loss(lp64, targets, il, tl)
    (gt,) = torch.autograd.grad(truth, lp64)
    b = lp.detach().clone().requires_grad_()
    (gb,) = torch.autograd.grad(TF.ctc_loss(b, targets, il, tl), b)
    assert (ga.double() - gt).abs().max() <= 2 * (gb.double() - gt).abs().max() + 1e-6


# ------------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradcheck_through_log_softmax(path, reduction):
    """torch's CTC gradient assumes log_softmax input; through one it is the true derivative."""
    g = torch.Generator().manual_seed(15)
    x = torch.randn(6, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    targets, il, tl = torch.tensor([[1, 2], [3, 3]]), torch.tensor([6, 5]), torch.tensor([2, 2])
    assert torch.autograd.gradcheck(lambda x: LF.ctc_loss(x.log_softmax(2), targets, il, tl, reduction=reduction), x)


def test_double_backward_raises_like_torch():
    lp, targets, il, tl = problem(seed=16)
    x = lp.clone().requires_grad_()
    (g,) = torch.autograd.grad(LF.ctc_loss(x, targets, il, tl), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        g.sum().backward()


def test_torch_func_grad_and_vmap():
    lp, targets, il, tl = problem(seed=17)
    x = lp.clone()

    def f(fn):
        return lambda x: fn(x.log_softmax(2), targets, il, tl)

    expected = torch.func.grad(f(TF.ctc_loss))(x)
    torch.testing.assert_close(torch.func.grad(f(LF.ctc_loss))(x), expected, **TOL[torch.float64])
    batched = torch.func.vmap(torch.func.grad(f(LF.ctc_loss)))(torch.stack([x, x]))
    torch.testing.assert_close(batched[1], expected, **TOL[torch.float64])


def test_compile_fullgraph_and_export():
    import torch._dynamo.testing

    lp, targets, il, tl = problem(t=6, n=2, c=4, s=2, seed=18)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: LF.ctc_loss(x, targets, il, tl), backend=counter, fullgraph=True)
    x = lp.clone().requires_grad_()
    out = compiled(x)
    out.backward()
    y = lp.clone().requires_grad_()
    ref = TF.ctc_loss(y, targets, il, tl)
    ref.backward()
    torch.testing.assert_close(out, ref, **TOL[torch.float64])
    torch.testing.assert_close(x.grad, y.grad, **TOL[torch.float64])
    assert counter.frame_count == 1

    class M(torch.nn.Module):
        def forward(self, lp):
            return LF.ctc_loss(lp, targets, il, tl)

    # concatenated targets and tuple lengths: K is the static bound numel() when compiling, still no break
    concat, ilt, tlt = concatenated(targets, tl), tuple(il.tolist()), tuple(tl.tolist())
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x: LF.ctc_loss(x, concat, ilt, tlt, reduction="sum"), backend="aot_eager", fullgraph=True
    )
    torch.testing.assert_close(compiled(lp), TF.ctc_loss(lp, concat, ilt, tlt, reduction="sum"), **TOL[torch.float64])

    exported = torch.export.export(M(), (lp,))
    torch.testing.assert_close(exported.module()(lp), ref.detach(), **TOL[torch.float64])
    torch.library.opcheck(torch.ops.losskit.ctc_forward.default, (lp, targets, il, tl, 0))


# ------------------------------------------------------------------------------------------------ fuzzing


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(1, 14),
    n=st.integers(1, 4),
    c=st.integers(2, 6),
    s=st.integers(0, 5),
    seed=st.integers(0, 10_000),
    reduction=st.sampled_from(["none", "mean", "sum"]),
    zero_infinity=st.booleans(),
    concat=st.booleans(),
    blank_last=st.booleans(),
    torch_path=st.booleans(),
)
def test_fuzz_against_torch(t, n, c, s, seed, reduction, zero_infinity, concat, blank_last, torch_path):
    g = torch.Generator().manual_seed(seed)
    blank = c - 1 if blank_last else 0
    lp = torch.randn(t, n, c, generator=g, dtype=torch.float64).log_softmax(2)
    targets = torch.randint(0, c, (n, s), generator=g)
    il = torch.randint(0, t + 1, (n,), generator=g)
    tl = torch.randint(0, s + 1, (n,), generator=g)
    if concat:
        targets = concatenated(targets, tl)
    original = ctc_module._use_kernel
    if torch_path:
        ctc_module._use_kernel = lambda lp: False
    try:
        compare(lp, targets, il, tl, blank=blank, reduction=reduction, zero_infinity=zero_infinity)
    finally:
        ctc_module._use_kernel = original


# ------------------------------------------------------------------------------------------------ errors


def _bad_cases():
    lp, targets, il, tl = problem(t=6, n=2, c=5, s=3, seed=19, full=True)
    tl = torch.tensor([3, 2])
    return [
        ("log_probs-1d", (lp[:, 0, 0], targets, il, tl), {}, "log_probs", RuntimeError),
        ("log_probs-4d", (lp[None], targets, il, tl), {}, "log_probs", RuntimeError),
        ("log_probs-bf16", (lp.bfloat16(), targets, il, tl), {}, "log_probs", NotImplementedError),
        ("log_probs-int", (lp.long(), targets, il, tl), {}, "log_probs", NotImplementedError),
        ("log_probs-empty", (lp[:, :0], targets[:0], il[:0], tl[:0]), {}, "log_probs", RuntimeError),
        ("blank-C", (lp, targets, il, tl), {"blank": 5}, "blank", RuntimeError),
        ("blank-negative", (lp, targets, il, tl), {"blank": -1}, "blank", RuntimeError),
        ("float-lengths", (lp, targets, il.double(), tl), {}, "input_lengths", RuntimeError),
        ("tuple-and-tensor", (lp, targets, (6, 6), tl), {}, "input_lengths", TypeError),
        ("int-lengths", (lp[:, 0], targets[0], 6, 3), {}, "input_lengths", TypeError),
        ("float-tuple", (lp, targets, (6.0, 6.0), (3, 2)), {}, "input_lengths", TypeError),
        ("input_lengths-size", (lp, targets, il[:1], tl), {}, "input_lengths", RuntimeError),
        ("target_lengths-size", (lp, targets, il, tl[:1]), {}, "target_lengths", RuntimeError),
        ("input_lengths>T", (lp, targets, il + 1, tl), {}, "input_lengths", RuntimeError),
        ("input_lengths<0", (lp, targets, il - 7, tl), {}, "input_lengths", RuntimeError),
        ("target_lengths<0", (lp, targets, il, tl - 3), {}, "target_lengths", RuntimeError),
        ("target_lengths>S", (lp, targets, il, tl + 1), {}, "targets", RuntimeError),
        ("targets-batch", (lp, targets[:1], il, tl), {}, "targets", RuntimeError),
        ("targets-3d", (lp, targets[None], il, tl), {}, "targets", RuntimeError),
        ("concat-short", (lp, targets.flatten()[:4], il, tl), {}, "targets", RuntimeError),
        ("concat-long", (lp, targets.flatten(), il, tl), {}, "targets", RuntimeError),
        ("reduction", (lp, targets, il, tl), {"reduction": "avg"}, "reduction", ValueError),
        ("list-log_probs", (lp.tolist(), targets, il, tl), {}, "log_probs", TypeError),
    ]


@pytest.mark.parametrize(("name", "args", "kwargs", "argument", "torch_type"), _bad_cases(), ids=lambda v: str(v)[:20])
def test_bad_input_raises_torchs_type_naming_the_argument(name, args, kwargs, argument, torch_type):
    with pytest.raises(torch_type), warnings.catch_warnings():  # torch raises this type for the same call
        warnings.simplefilter("ignore")
        TF.ctc_loss(*args, **kwargs)
    with pytest.raises(losskit.LossError, match=argument) as ours:
        LF.ctc_loss(*args, **kwargs)
    assert isinstance(ours.value, torch_type)


def test_autocast_computes_in_float32_like_torch():
    lp, targets, il, tl = problem(seed=21)
    x = lp.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = LF.ctc_loss(x, targets, il, tl)
        ref = TF.ctc_loss(x, targets, il, tl)
    assert ours.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(ours, ref, **TOL[torch.float32])
    ours.backward()
    assert x.grad.dtype == torch.bfloat16


def test_label_out_of_range_is_an_index_error():
    """torch reads out of bounds here (no check); losskit raises."""
    lp, targets, il, tl = problem(t=6, n=2, c=5, s=3, seed=20, full=True)
    with pytest.raises(losskit.LossIndexError, match="targets"):
        LF.ctc_loss(lp, targets + 5, il, torch.tensor([3, 3]))
    with pytest.raises(losskit.LossIndexError, match="targets"):
        LF.ctc_loss(lp, targets - 5, il, torch.tensor([3, 3]))


@pytest.mark.parametrize(
    ("il", "tl", "labels", "error"),
    [
        ((6, 5), (1, 1), [[1], [2]], losskit.LossValueError),
        ((5, 5), (2, 1), [[1], [2]], losskit.LossValueError),
        ((5, 5), (1, 1), [[9], [2]], losskit.LossIndexError),
    ],
)
def test_kernel_reports_invalid_data_that_skipped_the_checks(il, tl, labels, error):
    """Under torch.compile the data checks are skipped: the kernel itself refuses, never reading out of bounds."""
    if native_ctc.library() is None:
        pytest.skip(native_ctc.status())
    lp = torch.randn(5, 2, 4).log_softmax(2)
    with pytest.raises(error, match="invalid"):
        ctc_module._forward_impl(lp, torch.tensor(labels), torch.tensor(il), torch.tensor(tl), 0)


# ------------------------------------------------------------------------------------------------ eager fast path


@pytest.fixture(params=KERNEL_PATHS)
def fast_calls(request, monkeypatch):
    """Counts the calls that took a whole-call path: native_ctc.plain's (its reduction runs once per call), with
    the C++ entry points off, or the entry's (the calls it took)."""
    if native_ctc.library() is None:
        pytest.skip(native_ctc.status())
    calls: list = []
    if request.param == "python":
        entry_off(monkeypatch)
        reduce = native_ctc._reduce
        monkeypatch.setattr(native_ctc, "_reduce", lambda *a: calls.append(1) or reduce(*a))
        return calls
    fast = entry.wait()
    if fast is None:
        pytest.skip(f"the C++ entry points are unavailable: {entry.status()}")
    real = fast.ctc

    def took(*args):
        out = real(*args)
        if out is not None:
            calls.append(1)
        return out

    monkeypatch.setattr(fast, "ctc", took)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("index", [torch.int64, torch.int32])
def test_fast_path_is_torchs_bit_for_bit(fast_calls, dtype, reduction, zero_infinity, index):
    """The eager common case (padded targets, length tensors) in one kernel call each way, the reduction's
    backward in torch's order: loss and gradient bit for bit, under a scaled loss and a second backward too;
    labels past a sample's target length are never read (garbage there, as torch ignores it)."""
    lp, targets, il, tl = problem(t=30, n=40, c=7, s=8, seed=31, dtype=dtype)
    il[0], tl[1] = 3, 0  # an impossible sample (inf, zeroed or not) and an empty target
    used = torch.arange(targets.shape[1]) < tl[:, None]
    ours_targets = torch.where(used, targets, 99).to(index)  # out of range, but past the lengths
    a, b = lp.clone().requires_grad_(), lp.clone().requires_grad_()
    kw = {"reduction": reduction, "zero_infinity": zero_infinity}
    ours = LF.ctc_loss(a, ours_targets, il.to(index), tl.to(index), **kw)
    ref = TF.ctc_loss(b, targets, il, tl, **kw)
    assert len(fast_calls) == 1
    assert torch.equal(ours, ref)
    cot = torch.rand(ref.shape, generator=torch.Generator().manual_seed(2), dtype=dtype) + 0.5
    for _ in range(2):  # retain_graph: the second backward computes the gradient again
        ga, gb = (
            torch.autograd.grad(ours, a, cot, retain_graph=True),
            torch.autograd.grad(ref, b, cot, retain_graph=True),
        )
        assert torch.equal(ga[0].nan_to_num(7.0), gb[0].nan_to_num(7.0))
    with torch.no_grad():
        assert torch.equal(LF.ctc_loss(lp, ours_targets, il, tl, **kw), ref.detach())


def test_fast_path_leaves_other_calls_to_the_general_path(fast_calls):
    """Concatenated targets, tuple lengths and a bf16 input (an error, as torch's) are the general path's;
    invalid lengths or labels make the kernel decline and the general path raise its clear error."""
    lp, targets, il, tl = problem(t=10, n=3, c=5, s=4, seed=32, dtype=torch.float32, min_len=1, full=True)
    LF.ctc_loss(lp, concatenated(targets, tl), il, tl)
    LF.ctc_loss(lp, targets, tuple(il.tolist()), tuple(tl.tolist()))
    with pytest.raises(losskit.LossTypeError, match="bfloat16"):
        LF.ctc_loss(lp.to(torch.bfloat16), targets, il, tl)
    assert fast_calls == []
    with pytest.raises(losskit.LossValueError, match="input_lengths"):
        LF.ctc_loss(lp, targets, il + 1, tl)
    with pytest.raises(losskit.LossIndexError, match="label 9"):
        LF.ctc_loss(lp, torch.where(targets == targets[0, 0], 9, targets), il, tl)
    assert fast_calls == []


def test_fast_path_gradient_is_not_differentiable_again(fast_calls):
    lp, targets, il, tl = problem(t=8, n=2, c=4, s=2, seed=33, min_len=1, full=True)
    x = lp.clone().requires_grad_()
    (g,) = torch.autograd.grad(LF.ctc_loss(x, targets, il, tl), x, create_graph=True)
    assert len(fast_calls) == 1
    with pytest.raises(RuntimeError, match="not implemented"):
        g.sum().backward()
