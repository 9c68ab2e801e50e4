"""Oracle tests of losskit's nll_loss against torch 2.13.

``losskit.functional.nll_loss`` and ``losskit.nn.NLLLoss`` / ``NLLLoss2d`` are compared with
``torch.nn.functional`` / ``torch.nn`` (values, shapes, dtypes, gradients, warnings). The grids it shares
with cross entropy are in ``ce_helpers.py``; the tests that run both losses on one grid (parametrized over
``fn``) are in ``test_cross_entropy.py`` and ``test_cross_entropy_edges.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
import losskit.nn as LN
import torch_db
from ce_helpers import (
    DTYPES,
    F64,
    IGNORE_INDICES,
    LOW_DTYPES,
    MODULE_KWARGS,
    REDUCTIONS,
    SHAPES,
    class_problems,
)
from ce_helpers import indices_target as _class_target
from ce_helpers import logits as _logits
from ce_helpers import long_target as _long_target
from ce_helpers import param_ids as _ids
from ce_helpers import split_weight as _split
from helpers import assert_close_to, assert_matches_torch
from helpers import call_recording as _call_recording
from helpers import class_weights as _weight
from helpers import num_classes as _num_classes
from helpers import seeded as _gen
from helpers import target_shape as _target_shape

# ----------------------------------------------------------------------------------------- nll grid


@pytest.mark.parametrize("dtype", **_ids(DTYPES))
@pytest.mark.parametrize("shape", **_ids(SHAPES))
@pytest.mark.parametrize("ignore_index", **_ids(IGNORE_INDICES))
@pytest.mark.parametrize("kind", ["logsoftmax", "arbitrary"])
@pytest.mark.parametrize("weighted", [False, True], ids=["now", "w"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_grid(reduction, weighted, kind, ignore_index, shape, dtype):
    g = _gen("nll", shape, ignore_index, weighted, kind)
    x = _logits(shape, g)
    if kind == "logsoftmax":
        x = torch.log_softmax(x, dim=0 if len(shape) == 1 else 1)
    y = _class_target(shape, ignore_index, g)
    inputs = {"input": x, "target": y}
    if weighted:
        inputs["weight"] = _weight(_num_classes(shape), g)
    kwargs = {"reduction": reduction, "ignore_index": ignore_index}
    ours, _ = assert_matches_torch(LF.nll_loss, F.nll_loss, inputs, kwargs, dtype=dtype)
    assert ours.shape == (_target_shape(shape) if reduction == "none" else ())


@pytest.mark.parametrize("dtype", **_ids(LOW_DTYPES))
@pytest.mark.parametrize("weighted", [False, True], ids=["now", "w"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_low_precision_nll_loss(reduction, weighted, dtype):
    g = _gen("low-nll", weighted)
    x = torch.log_softmax(_logits((6, 5, 3), g), 1)
    inputs = {"input": x, "target": _class_target((6, 5, 3), -100, g)}
    if weighted:
        inputs["weight"] = _weight(5, g)
    assert_matches_torch(LF.nll_loss, F.nll_loss, inputs, {"reduction": reduction}, dtype=dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_double_backward_matches_torch(reduction):
    # nll_loss is linear in its input: its second derivative is 0 (torch gives zeros, or no grad_fn at all)
    g = _gen("double-nll")
    x = torch.log_softmax(_logits((4, 3), g), 1)
    y = torch.tensor([0, 2, 1, 1])
    w = _weight(3, g)

    def second(fn):
        leaf = x.clone().requires_grad_(True)
        (first,) = torch.autograd.grad(fn(leaf, y, w, reduction=reduction).sum(), leaf, create_graph=True)
        if not first.requires_grad:
            return first, torch.zeros_like(leaf)
        (sec,) = torch.autograd.grad((first * torch.arange(12.0).view(4, 3)).sum(), leaf, allow_unused=True)
        return first, torch.zeros_like(leaf) if sec is None else sec

    ours_first, ours_second = second(LF.nll_loss)
    ref_first, ref_second = second(F.nll_loss)
    assert_close_to(ours_first.detach(), ref_first.detach(), torch.float64)
    assert_close_to(ours_second, ref_second, torch.float64)


# --------------------------------------------------------------------------------------- hypothesis


@settings(max_examples=400)
@given(class_problems(allow_smoothing=False), st.booleans())
def test_hypothesis_nll_loss(problem, log_probs):
    x, y, kwargs = problem
    if log_probs:
        x = torch.log_softmax(x, dim=0 if x.dim() == 1 else 1)
    extra, kwargs = _split(kwargs)
    assert_matches_torch(LF.nll_loss, _long_target(F.nll_loss), {"input": x, "target": y, **extra}, kwargs)


# ------------------------------------------------------------------------------------------ modules


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2, 2), (4,)], ids=["6x4", "K2", "C4"])
@pytest.mark.parametrize("kw", **_ids({k: v for k, v in MODULE_KWARGS.items() if "label_smoothing" not in v}))
def test_nll_module_equals_functional_and_torch(kw, shape):
    g = _gen("module-nll", shape)
    x = torch.log_softmax(_logits(shape, g), 0 if len(shape) == 1 else 1)
    y = _class_target(shape, 1, g)
    kw = {k: (_weight(4, g) if v == "w" else v) for k, v in kw.items()}
    ours = LN.NLLLoss(**kw)
    assert_close_to(ours(x, y), LF.nll_loss(x, y, **kw), F64, "module vs functional")
    assert_matches_torch(ours, torch.nn.NLLLoss(**kw), {"input": x, "target": y})


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["now", "w"])
def test_nll_loss2d_warns_and_works(weighted, reduction):
    g = _gen("nll2d", weighted)
    w = _weight(3, g) if weighted else None
    ours, ours_warn = _call_recording(lambda: LN.NLLLoss2d(weight=w, reduction=reduction))
    ref, ref_warn = _call_recording(lambda: torch.nn.NLLLoss2d(weight=w, reduction=reduction))
    assert [c for c, _ in ref_warn] == [FutureWarning]
    assert ours_warn == ref_warn
    assert isinstance(ours, LN.NLLLoss)
    x = torch.log_softmax(_logits((2, 3, 4, 5), g), 1)
    y = _class_target((2, 3, 4, 5), -100, g)
    assert_matches_torch(ours, ref, {"input": x, "target": y})
    assert list(ours.state_dict().keys()) == list(ref.state_dict().keys())


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bf16_no_further_from_float64_than_torch(reduction, weighted):
    """bf16 products and sums in float32, rounded once. The old code summed -w_y·x_y in bf16: op_db's weighted
    K-dim (2, 3, 2, 2) 'mean' with ignore_index=1 was 8x torch's error."""
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        x = (torch.randn(2 + seed, 3, 2, 2, generator=g) * 3).bfloat16().requires_grad_()
        y = torch.randint(0, 3, (2 + seed, 2, 2), generator=g)
        kw = {"reduction": reduction, "ignore_index": 1}
        if weighted:
            kw["weight"] = (torch.rand(3, generator=g) * 10).bfloat16()
        for what, (ours, theirs) in torch_db.errors_vs_float64(LF.nll_loss, F.nll_loss, (x, y), kw).items():
            assert ours <= theirs + 1e-12, (seed, what, ours, theirs)
