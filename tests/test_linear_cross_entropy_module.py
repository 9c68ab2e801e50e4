"""Tests of the fused linear + cross entropy (issue 4), continued from ``tests/test_linear_cross_entropy.py``:
6. memory (profiler); 7. the module ``losskit.nn.LinearCrossEntropyLoss``; 8. autograd (retain_graph, higher
order, no_grad); 9. bad input. Oracles are torch's, never losskit itself.
"""

from __future__ import annotations

import inspect
import warnings
import zlib

import pytest
import torch
import torch.nn.functional as F

import losskit
import losskit.functional as LF
import losskit.nn as LN
from helpers import assert_close_to, cotangent
from helpers import class_weights as _class_weight
from helpers import lead_class_target as _class_target
from helpers import linear_problem as _linear_problem
from helpers import seeded as _gen

REDUCTIONS = ("none", "mean", "sum")


# ============================================================================== 6. memory

MEM_N, MEM_H, MEM_V = 512, 64, 8192


def _allocations(fn) -> list[int]:
    """Byte counts of every CPU allocation the profiler records while ``fn`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return [e.nbytes() for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.nbytes() > 0]


def _mem_problem():
    g = _gen("mem")
    x = torch.randn(MEM_N, MEM_H, generator=g).requires_grad_()
    w = (torch.randn(MEM_V, MEM_H, generator=g) * 0.1).requires_grad_()
    b = torch.randn(MEM_V, generator=g).requires_grad_()
    y = torch.randint(0, MEM_V, (MEM_N,), generator=g)
    y[::7] = -100
    return x, w, b, y


LIMIT = MEM_N * MEM_V * 4 // 2  # half the float32 logits


def test_profiler_sees_torch_unfused_logits():
    x, w, b, y = _mem_problem()
    allocs = _allocations(lambda: F.cross_entropy(F.linear(x, w, b), y, label_smoothing=0.1).backward())
    assert len([a for a in allocs if a >= LIMIT]) >= 2, sorted(allocs)[-5:]


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("extras", ["plain", "all"])
def test_forward_backward_never_holds_the_logits(reduction, extras):
    x, w, b, y = _mem_problem()
    kw = {"reduction": reduction, "chunk_size": 64}
    if extras == "all":
        kw.update(label_smoothing=0.1, z_loss=1e-4, softcap=30.0, weight=torch.rand(MEM_V) + 0.5)

    def step():
        loss = LF.linear_cross_entropy(x, w, y, linear_bias=b, **kw)
        loss.backward(torch.ones_like(loss))

    allocs = _allocations(step)
    assert allocs, "the profiler recorded no allocation at all"
    assert max(allocs) < LIMIT, f"largest allocation {max(allocs)} B >= {LIMIT} B (N*V*4/2)"
    assert max(allocs) >= 64 * MEM_V * 4, "the profiler did not see even one chunk of logits"
    assert x.grad is not None and w.grad is not None and b.grad is not None
    assert bool(torch.isfinite(w.grad).all())


# ============================================================================== 7. the module


def test_module_signature_equals_torch():
    ours = inspect.signature(LN.LinearCrossEntropyLoss)
    ref = inspect.signature(torch.nn.LinearCrossEntropyLoss)
    extra = ours.parameters["accumulate_grad"]  # beyond torch: keyword-only, off by default
    assert extra.kind is inspect.Parameter.KEYWORD_ONLY and extra.default is False
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values() if p.name != "accumulate_grad"] == [
        (p.name, p.kind, p.default) for p in ref.parameters.values()
    ]


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"bias": True},
        {"bias": True, "weight": True, "reduction": "sum", "ignore_index": 2},
        {"weight": True, "reduction": "none", "label_smoothing": 0.2},
        {"out_features": (3,), "bias": True},
        {"bias": True, "options": True, "reduction": "none"},
    ],
    ids=["default", "bias", "weighted-sum-ii", "none-ls", "kdim", "options"],
)
def test_module_loads_torch_state_dict_and_matches(config):
    config = dict(config)
    h_features, v, n = 5, 7, 6
    g = _gen("module", sorted(config))
    if config.pop("weight", False):
        config["weight"] = _class_weight(v, g)
    if config.pop("options", False):
        config["options"] = torch.nn.LinearCrossEntropyOptions()
    out_features = config.get("out_features", ())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(zlib.crc32(repr(sorted(config)).encode()))
        ref = torch.nn.LinearCrossEntropyLoss(h_features, v, dtype=torch.float64, **config)
        ours = LN.LinearCrossEntropyLoss(h_features, v, dtype=torch.float64, **config)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(n, h_features, generator=g, dtype=torch.float64)
    y = torch.randint(0, v, (n, *out_features), generator=g)
    y.view(-1)[::3] = config.get("ignore_index", -100)
    xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lo, lr = ours(xo, y), ref(xr, y)
    assert_close_to(lo, lr, torch.float64)
    gout = cotangent(lr, seed=1)
    lo.backward(gout)
    lr.backward(gout)
    assert_close_to(xo.grad, xr.grad, torch.float64, "grad wrt input")
    assert_close_to(ours.linear.weight.grad, ref.linear.weight.grad, torch.float64, "grad wrt linear.weight")
    if config.get("bias"):
        assert_close_to(ours.linear.bias.grad, ref.linear.bias.grad, torch.float64, "grad wrt linear.bias")


def test_module_to_float64_moves_buffers_and_parameters():
    ours = LN.LinearCrossEntropyLoss(4, 6, bias=True, weight=torch.rand(6))
    ref = torch.nn.LinearCrossEntropyLoss(4, 6, bias=True, weight=torch.rand(6))
    ours.to(torch.float64)
    ref.to(torch.float64)
    assert ours.weight.dtype == ref.weight.dtype == torch.float64
    assert ours.linear.weight.dtype == torch.float64 and ours.linear.bias.dtype == torch.float64
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, dtype=torch.float64)
    y = torch.tensor([0, 5, 2])
    assert_close_to(ours(x, y), ref(x, y), torch.float64)


# ============================================================================== 8. autograd


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_retain_graph_second_backward_gives_same_gradients(reduction):
    g = _gen("retain", reduction)
    x, w, b = _linear_problem((9, 5), 8, g, True)
    y = _class_target((9,), 8, g, -100)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    loss = LF.linear_cross_entropy(
        leaves[0], leaves[1], y, linear_bias=leaves[2], reduction=reduction, label_smoothing=0.1, chunk_size=2
    )
    gout = cotangent(loss, seed=2)
    first = torch.autograd.grad(loss, leaves, gout, retain_graph=True)
    second = torch.autograd.grad(loss, leaves, gout)
    ref_leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    ref = F.linear_cross_entropy(
        ref_leaves[0], ref_leaves[1], y, linear_bias=ref_leaves[2], reduction=reduction, label_smoothing=0.1
    )
    truth = torch.autograd.grad(ref, ref_leaves, gout)
    for name, a, c, t in zip(("input", "linear_weight", "linear_bias"), first, second, truth, strict=True):
        assert_close_to(a, t, torch.float64, f"first grad wrt {name}")
        assert_close_to(c, t, torch.float64, f"second grad wrt {name}")


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_higher_order_gradient_raises(reduction):
    g = _gen("higher", reduction)
    x, w, _ = _linear_problem((6, 4), 5, g, False)
    x.requires_grad_()
    loss = LF.linear_cross_entropy(x, w, _class_target((6,), 5, g, None), reduction=reduction)
    (gx,) = torch.autograd.grad(loss, x, torch.ones_like(loss), create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(gx.sum(), x)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_forward_without_grad_returns_torch_value(mode):
    g = _gen("nograd", mode)
    x, w, b = _linear_problem((7, 5), 9, g, True)
    y = _class_target((7,), 9, g, -100)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    ctx = torch.no_grad if mode == "no_grad" else torch.inference_mode
    for reduction in REDUCTIONS:
        with ctx():
            ours = LF.linear_cross_entropy(leaves[0], leaves[1], y, linear_bias=leaves[2], reduction=reduction)
        assert not ours.requires_grad
        ref = F.linear_cross_entropy(x, w, y, linear_bias=b, reduction=reduction)
        assert_close_to(ours, ref, torch.float64)


# ============================================================================== 9. bad input


def _bad(name):
    """``(torch call, losskit call, word the message must name)`` for bad input case ``name``."""
    g = _gen("bad", name)
    x, w, b = _linear_problem((7, 5), 11, g, True)
    y = _class_target((7,), 11, g, None)
    if name == "in_features":
        w2 = torch.randn(11, 4, dtype=torch.float64)
        return (lambda m: m.linear_cross_entropy(x, w2, y)), "linear_weight"
    if name == "bias_shape":
        return (lambda m: m.linear_cross_entropy(x, w, y, linear_bias=b[:10])), "linear_bias"
    if name == "target_shape":
        return (lambda m: m.linear_cross_entropy(x, w, y[:6])), "target"
    if name == "target_range":
        y2 = y.clone()
        y2[3] = 11
        return (lambda m: m.linear_cross_entropy(x, w, y2)), "target"
    if name == "target_negative":
        y2 = y.clone()
        y2[3] = -3
        return (lambda m: m.linear_cross_entropy(x, w, y2)), "target"
    if name == "float_target_shape":
        t = torch.rand(7, 10, dtype=torch.float64)
        return (lambda m: m.linear_cross_entropy(x, w, t)), "target"
    if name == "label_smoothing":
        return (lambda m: m.linear_cross_entropy(x, w, y, label_smoothing=1.5)), "label_smoothing"
    if name == "reduction":
        return (lambda m: m.linear_cross_entropy(x, w, y, reduction="avg")), "reduction"
    if name == "dtype":
        return (lambda m: m.linear_cross_entropy(x, w.float(), y)), "linear_weight"
    if name == "bias_dtype":
        return (lambda m: m.linear_cross_entropy(x, w, y, linear_bias=b.float())), "linear_bias"
    if name == "class_weight_shape":
        cw = torch.rand(10, dtype=torch.float64)
        return (lambda m: m.linear_cross_entropy(x, w, y, weight=cw)), "weight"
    raise AssertionError(name)


BAD = [
    "in_features",
    "bias_shape",
    "target_shape",
    "target_range",
    "target_negative",
    "float_target_shape",
    "label_smoothing",
    "reduction",
    "dtype",
    "bias_dtype",
    "class_weight_shape",
]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_raises_losskit_error_of_torch_type(name):
    call, word = _bad(name)
    with pytest.raises(Exception) as torch_err:
        call(F)
    with pytest.raises(losskit.LossError) as err:
        call(LF)
    assert isinstance(err.value, type(torch_err.value)), (type(err.value).__mro__, type(torch_err.value))
    assert word in str(err.value), str(err.value)


@pytest.mark.parametrize("chunk_size", [0, -2])
def test_bad_chunk_size(chunk_size):
    """torch's counterpart, ``LinearCrossEntropyOptions(batch_chunk_size=0)``, raises ValueError."""
    with pytest.raises(ValueError):
        torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk_size)
    x = torch.randn(3, 4, dtype=torch.float64)
    w = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(losskit.LossError, match="chunk_size") as err:
        LF.linear_cross_entropy(x, w, torch.tensor([0, 1, 2]), chunk_size=chunk_size)
    assert isinstance(err.value, ValueError)
