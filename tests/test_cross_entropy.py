"""Oracle tests of losskit's cross entropy against torch 2.13.

``losskit.functional.cross_entropy`` and ``losskit.nn.CrossEntropyLoss`` are compared with
``torch.nn.functional`` / ``torch.nn`` (values, shapes, dtypes, gradients, warnings), with closed-form values
from the reference seeds, and with metamorphic properties. Edge semantics, low precision and autograd are in
``test_cross_entropy_edges.py``; ``nll_loss`` has ``test_nll_loss.py``; the grids shared by these files are in
``ce_helpers.py``. A test parametrized over ``fn`` (``cross_entropy``, ``nll_loss``) runs both on one grid.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
import losskit.nn as LN
from ce_helpers import (
    DTYPES,
    F64,
    IGNORE_INDICES,
    LOW_DTYPES,
    MODULE_KWARGS,
    REDUCTIONS,
    SHAPES,
    SMOOTHING_DTYPE,
    class_problems,
    probability_problems,
)
from ce_helpers import indices_target as _class_target
from ce_helpers import logits as _logits
from ce_helpers import long_target as _long_target
from ce_helpers import param_ids as _ids
from ce_helpers import probability_target as _probability_target
from ce_helpers import split_weight as _split
from helpers import TOLERANCES, assert_close_to, assert_matches_torch
from helpers import call_recording as _call_recording
from helpers import class_weights as _weight
from helpers import num_classes as _num_classes
from helpers import seeded as _gen
from helpers import target_shape as _target_shape

# --------------------------------------------------------------------------------- class-index grid


@pytest.mark.parametrize("shape", **_ids(SHAPES))
@pytest.mark.parametrize(("label_smoothing", "dtype"), **_ids(SMOOTHING_DTYPE))
@pytest.mark.parametrize("ignore_index", **_ids(IGNORE_INDICES))
@pytest.mark.parametrize("weighted", [False, True], ids=["now", "w"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_class_indices_grid(reduction, weighted, ignore_index, label_smoothing, shape, dtype):
    g = _gen("ce-class", shape, ignore_index, weighted)
    x = _logits(shape, g)
    y = _class_target(shape, ignore_index, g)
    inputs = {"input": x, "target": y}
    if weighted:
        inputs["weight"] = _weight(_num_classes(shape), g)
    kwargs = {"reduction": reduction, "ignore_index": ignore_index, "label_smoothing": label_smoothing}
    ours, ref = assert_matches_torch(LF.cross_entropy, F.cross_entropy, inputs, kwargs, dtype=dtype)
    expected_shape = _target_shape(shape) if reduction == "none" else ()
    assert ours.shape == expected_shape


@pytest.mark.parametrize("shape", **_ids(SHAPES))
@pytest.mark.parametrize("ignore_index", [-100, 0, 2, 255], ids=["ii-100", "ii0", "ii2", "ii255"])
@pytest.mark.parametrize("weighted", [False, True], ids=["now", "w"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_uint8_targets(fn, reduction, weighted, ignore_index, shape):
    g = _gen("uint8", fn, shape, ignore_index, weighted)
    c = _num_classes(shape)
    x = _logits(shape, g)
    if fn == "nll_loss":
        x = torch.log_softmax(x, dim=0 if len(shape) == 1 else 1)
    y = torch.randint(0, c, _target_shape(shape), generator=g)
    if ignore_index == 255:
        y.view(-1)[1::3] = 255
    y8 = y.to(torch.uint8)
    inputs = {"input": x, "target": y8}
    if weighted:
        inputs["weight"] = _weight(c, g)
    kwargs = {"reduction": reduction, "ignore_index": ignore_index}
    if len(shape) <= 2:  # torch takes uint8 class indices for (C,) and (N, C) input
        assert_matches_torch(getattr(LF, fn), getattr(F, fn), inputs, kwargs)
    # the oracle on the same indices as int64 (torch refuses uint8 for K-dim input; losskit takes it)
    assert_matches_torch(getattr(LF, fn), lambda target, **kw: getattr(F, fn)(target=target.long(), **kw), inputs,
                         kwargs)  # fmt: skip


# --------------------------------------------------------------------------------- probability grid


PROB_SHAPES = {k: v for k, v in SHAPES.items()}


@pytest.mark.parametrize("shape", **_ids(PROB_SHAPES))
@pytest.mark.parametrize("kind", ["softmax", "nonneg"])
@pytest.mark.parametrize(("label_smoothing", "dtype"), **_ids(SMOOTHING_DTYPE))
@pytest.mark.parametrize("weighted", [False, True], ids=["now", "w"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_probabilities_grid(reduction, weighted, label_smoothing, kind, shape, dtype):
    g = _gen("ce-prob", shape, kind, weighted)
    x = _logits(shape, g)
    t = _probability_target(shape, kind, g)
    inputs = {"input": x, "target": t}
    if weighted:
        inputs["weight"] = _weight(_num_classes(shape), g)
    kwargs = {"reduction": reduction, "label_smoothing": label_smoothing}
    ours, _ = assert_matches_torch(LF.cross_entropy, F.cross_entropy, inputs, kwargs, dtype=dtype)
    expected_shape = _target_shape(shape) if reduction == "none" else ()
    assert ours.shape == expected_shape


@pytest.mark.parametrize("ignore_index", [-100, -1, -7])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_probabilities_accept_negative_ignore_index(reduction, ignore_index):
    # torch only refuses ignore_index >= 0 for probability targets; a negative one is simply unused
    g = _gen("prob-neg-ii", reduction, ignore_index)
    x, t = _logits((4, 3, 2), g), _probability_target((4, 3, 2), "softmax", g)
    assert_matches_torch(
        LF.cross_entropy, F.cross_entropy, {"input": x, "target": t},
        {"reduction": reduction, "ignore_index": ignore_index},
    )  # fmt: skip


@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 3, 4), (2, 3, 2, 2)], ids=["C5", "4x3", "K1", "K2"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True], ids=["now", "w"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_probabilities_gradient_wrt_target(reduction, weighted, label_smoothing, shape):
    # torch's loss is differentiable in the soft target (distillation with a teacher that is trained too)
    g = _gen("prob-target-grad", shape, weighted)
    inputs = {"input": _logits(shape, g), "target": _probability_target(shape, "softmax", g)}
    if weighted:
        inputs["weight"] = _weight(_num_classes(shape), g)
    kwargs = {"reduction": reduction, "label_smoothing": label_smoothing}
    assert_matches_torch(LF.cross_entropy, F.cross_entropy, inputs, kwargs, grad_wrt=("input", "target"))


# --------------------------------------------------------------------------------- legacy arguments


LEGACY = [None, True, False]


@pytest.mark.parametrize("reduce", LEGACY, ids=lambda v: f"reduce={v}")
@pytest.mark.parametrize("size_average", LEGACY, ids=lambda v: f"size_average={v}")
@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_legacy_size_average_reduce_functional(fn, size_average, reduce):
    g = _gen("legacy", fn)
    x = _logits((5, 4), g)
    y = _class_target((5, 4), -100, g)
    w = _weight(4, g)
    legacy = {"size_average": size_average, "reduce": reduce}
    ours, ours_warn = _call_recording(lambda: getattr(LF, fn)(x, y, w, reduction="sum", **legacy))
    ref, ref_warn = _call_recording(lambda: getattr(F, fn)(x, y, w, reduction="sum", **legacy))
    assert ours_warn == ref_warn
    if size_average is None and reduce is None:
        assert ref_warn == []  # then the explicit reduction='sum' holds
    else:
        assert len(ref_warn) == 1  # the test is not vacuous: torch does warn here
    assert_close_to(ours, ref, torch.float64)


@pytest.mark.parametrize("reduce", LEGACY, ids=lambda v: f"reduce={v}")
@pytest.mark.parametrize("size_average", LEGACY, ids=lambda v: f"size_average={v}")
@pytest.mark.parametrize("module", ["CrossEntropyLoss", "NLLLoss"])
def test_legacy_size_average_reduce_modules(module, size_average, reduce):
    g = _gen("legacy-mod", module)
    x = _logits((5, 4, 2), g)
    y = _class_target((5, 4, 2), -100, g)
    legacy = {"size_average": size_average, "reduce": reduce}
    ours_mod, ours_warn = _call_recording(lambda: getattr(LN, module)(**legacy))
    ref_mod, ref_warn = _call_recording(lambda: getattr(torch.nn, module)(**legacy))
    assert ours_warn == ref_warn
    assert len(ref_warn) == (0 if size_average is None and reduce is None else 1)
    assert ours_mod.reduction == ref_mod.reduction
    assert_close_to(ours_mod(x, y), ref_mod(x, y), torch.float64)


# --------------------------------------------------------------------------------------- hypothesis


@settings(max_examples=700)
@given(class_problems())
def test_hypothesis_cross_entropy_class_indices(problem):
    x, y, kwargs = problem
    extra, kwargs = _split(kwargs)
    assert_matches_torch(LF.cross_entropy, _long_target(F.cross_entropy), {"input": x, "target": y, **extra}, kwargs)


@settings(max_examples=450)
@given(probability_problems())
def test_hypothesis_cross_entropy_probabilities(problem):
    x, t, kwargs = problem
    extra, kwargs = _split(kwargs)
    assert_matches_torch(LF.cross_entropy, F.cross_entropy, {"input": x, "target": t, **extra}, kwargs)


def _class_dim(x: torch.Tensor) -> int:
    return 0 if x.dim() == 1 else 1


@settings(max_examples=200)
@given(class_problems(allow_smoothing=False))
def test_property_cross_entropy_is_nll_of_log_softmax(problem):
    # seed 000's identity: CE(x, y) == nll_loss(log_softmax(x), y) == nll_loss(log(softmax(x)), y)
    x, y, kwargs = problem
    x = x.clamp(-30, 30)  # keep softmax away from underflow so log(softmax) is finite
    d = _class_dim(x)
    ce = LF.cross_entropy(x, y, **kwargs)
    y64 = y.long()  # torch's oracle side takes int64 (see _long_target)
    torch.testing.assert_close(ce, F.nll_loss(F.log_softmax(x, d), y64, **kwargs), rtol=1e-9, atol=1e-9, equal_nan=True)
    torch.testing.assert_close(LF.nll_loss(F.log_softmax(x, d), y, **kwargs), F.cross_entropy(x, y64, **kwargs),
                               rtol=1e-9, atol=1e-9, equal_nan=True)  # fmt: skip
    torch.testing.assert_close(ce, LF.nll_loss(torch.log(torch.softmax(x, d)), y, **kwargs), rtol=1e-7, atol=1e-9,
                               equal_nan=True)  # fmt: skip


@settings(max_examples=200)
@given(class_problems(allow_smoothing=False, allow_weight=False, allow_ignore=False))
def test_property_class_indices_equal_one_hot_probabilities(problem):
    x, y, kwargs = problem
    d = _class_dim(x)
    c = x.shape[d]
    onehot = F.one_hot(y.long(), c).to(F64).movedim(-1, d)
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    a = LF.cross_entropy(xa, y, **kwargs)
    b = LF.cross_entropy(xb, onehot, **kwargs)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, equal_nan=True)
    cot = torch.linspace(0.5, 1.5, a.numel(), dtype=F64).reshape(a.shape)
    ga, gb = torch.autograd.grad(a, xa, cot)[0], torch.autograd.grad(b, xb, cot)[0]
    torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-9, equal_nan=True)


@settings(max_examples=200)
@given(class_problems(), st.sampled_from([1e-3, 1.0, 50.0]))
def test_property_per_row_shift_invariance(problem, shift_scale):
    x, y, kwargs = problem
    d = _class_dim(x)
    shape = list(x.shape)
    shape[d] = 1
    shift = torch.randn(shape, generator=torch.Generator().manual_seed(x.numel()), dtype=F64) * shift_scale
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    a = LF.cross_entropy(xa, y, **kwargs)
    b = LF.cross_entropy(xb + shift, y, **kwargs)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, equal_nan=True)
    ga, gb = torch.autograd.grad(a.sum(), xa)[0], torch.autograd.grad(b.sum(), xb)[0]
    torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-9, equal_nan=True)


# ---------------------------------------------------------------------------------- reference seeds


def test_seed_003_softmax_018_018_064():
    x = torch.log(torch.tensor([[0.18, 0.18, 0.64]], dtype=F64))
    assert torch.allclose(torch.softmax(x, 1), torch.tensor([[0.18, 0.18, 0.64]], dtype=F64))
    ours = LF.cross_entropy(x, torch.tensor([2]))
    assert ours.item() == pytest.approx(-math.log(0.64), abs=1e-12)
    assert ours.item() == pytest.approx(0.4463, abs=5e-5)
    assert_close_to(ours, F.cross_entropy(x, torch.tensor([2])), F64)
    # float32, as in the docstring's example
    x32 = torch.tensor([[0.0, 0.0, 1.2685]])
    assert LF.cross_entropy(x32, torch.tensor([2])).item() == pytest.approx(0.4463, abs=1e-4)


SEED_004_MAP_X = [
    [
        [[0.8859, -2.0889, -0.6026], [-1.6448, 0.7807, 0.9609], [-0.0646, 0.2204, -0.7471]],
        [[0.7075, -0.7013, -0.9280], [-0.6913, 2.1507, -0.0758], [0.2139, 0.8387, 0.3743]],
    ]
]


SEED_004_MAP_Y = [[[0, 0, 1], [0, 0, 0], [1, 0, 1]]]


SEED_004_MAP_LOSS = [[[0.6079, 1.6105, 0.8690], [1.2794, 1.5964, 0.3035], [0.5635, 1.0493, 0.2820]]]


@pytest.mark.parametrize(
    "x, y, kwargs, expected",
    [
        ([[-1.1011, 0.6231], [0.2384, -0.3223]], [0, 1], {}, [1.8883, 1.0123]),
        ([[-1.1011, 0.6231], [0.2384, -0.3223]], [0, 1], {"weight": [0.5, 1.5]}, [0.9441, 1.5184]),
        ([[-0.9390, -0.6169], [-0.7700, 0.3602]], [0, 1], {}, [0.8671, 0.2799]),
        ([[-0.9390, -0.6169], [-0.7700, 0.3602]], [0, 1], {"ignore_index": 0}, [0.0, 0.2799]),
        (SEED_004_MAP_X, SEED_004_MAP_Y, {}, SEED_004_MAP_LOSS),
    ],
    ids=["plain", "weight", "plain2", "ignore0", "per_pixel_map"],
)
@pytest.mark.parametrize("dtype", **_ids(DTYPES))
def test_seed_004_values(x, y, kwargs, expected, dtype):
    x = torch.tensor(x, dtype=dtype)
    y = torch.tensor(y)
    kw = {k: torch.tensor(v, dtype=dtype) if k == "weight" else v for k, v in kwargs.items()}
    ours = LF.cross_entropy(x, y, reduction="none", **kw)
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=dtype), rtol=0, atol=2e-4)
    assert_close_to(ours, F.cross_entropy(x, y, reduction="none", **kw), dtype)
    # the same through the module and through nll_loss(log_softmax)
    assert_close_to(LN.CrossEntropyLoss(reduction="none", **kw)(x, y), ours, dtype)
    assert_close_to(LF.nll_loss(F.log_softmax(x, 1), y, reduction="none", **kw), ours, dtype)


def test_seed_000_weighted_size_average():
    g = _gen("seed000")
    x = torch.randn(8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    w = torch.tensor([0.03, 0.05, 0.19, 0.26, 0.47])
    ours_mod, ours_warn = _call_recording(lambda: LN.CrossEntropyLoss(weight=w, size_average=True))
    ref_mod, ref_warn = _call_recording(lambda: torch.nn.CrossEntropyLoss(weight=w, size_average=True))
    assert ref_warn and ours_warn == ref_warn
    assert ours_mod.reduction == ref_mod.reduction == "mean"
    ours, ref = ours_mod(x, y), ref_mod(x, y)
    assert_close_to(ours, ref, torch.float32)
    # and by hand: Σ w_y·(-log p_y) / Σ w_y
    lp = torch.log_softmax(x.double(), 1)[torch.arange(8), y]
    expected = -(w.double()[y] * lp).sum() / w.double()[y].sum()
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)


# ------------------------------------------------------------------------------------------ modules


# probabilities with ignore_index >= 0 are refused (by torch too): not a module case
MODULE_CASES = [
    pytest.param(kw, kind, id=f"{kw_id}-{kind}")
    for kw_id, kw in MODULE_KWARGS.items()
    for kind in ("class", "prob")
    if kind == "class" or kw.get("ignore_index", -100) < 0
]


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2, 2), (4,)], ids=["6x4", "K2", "C4"])
@pytest.mark.parametrize(("kw", "target_kind"), MODULE_CASES)
def test_cross_entropy_module_equals_functional_and_torch(kw, target_kind, shape):
    g = _gen("module-ce", shape, target_kind)
    x = _logits(shape, g)
    y = _class_target(shape, 1, g) if target_kind == "class" else _probability_target(shape, "softmax", g)
    kw = {k: (_weight(4, g) if v == "w" else v) for k, v in kw.items()}
    ours = LN.CrossEntropyLoss(**kw)
    assert isinstance(ours, torch.nn.Module)
    assert_close_to(ours(x, y), LF.cross_entropy(x, y, **kw), F64, "module vs functional")
    assert_matches_torch(ours, torch.nn.CrossEntropyLoss(**kw), {"input": x, "target": y})


@pytest.mark.parametrize("module", ["CrossEntropyLoss", "NLLLoss"])
@pytest.mark.parametrize("weighted", [False, True], ids=["now", "w"])
def test_module_state_dict_and_to(module, weighted):
    w = torch.tensor([0.2, 1.0, 3.0]) if weighted else None
    ours, ref = getattr(LN, module)(weight=w), getattr(torch.nn, module)(weight=w)
    assert list(ours.state_dict().keys()) == list(ref.state_dict().keys())
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert list(ours.parameters()) == []
    assert ours.ignore_index == ref.ignore_index == -100
    assert ours.reduction == ref.reduction == "mean"
    if module == "CrossEntropyLoss":
        assert ours.label_smoothing == ref.label_smoothing == 0.0
    ours64, ref64 = ours.to(torch.float64), ref.to(torch.float64)
    if weighted:
        assert ours64.weight.dtype == ref64.weight.dtype == torch.float64
        assert torch.equal(ours64.weight, ref64.weight)
        assert "weight" in ours64.state_dict()
        # the moved buffer is used: float64 input now works and matches torch
        x = torch.randn(4, 3, dtype=torch.float64)
        y = torch.tensor([0, 1, 2, 1])
        assert_close_to(ours64(x, y), ref64(x, y), torch.float64)
    else:
        assert ours64.weight is None and ref64.weight is None
    # a state_dict from torch's module loads into ours (and vice versa)
    ours.load_state_dict(ref.state_dict())
    ref.load_state_dict(ours.state_dict())


def test_tolerance_table_covers_tested_dtypes():
    # the helper's table must know every dtype this file compares in
    assert set(DTYPES.values()) | set(LOW_DTYPES.values()) <= set(TOLERANCES)
