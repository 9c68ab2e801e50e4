"""Oracle tests of losskit's cross entropy family against torch 2.13.

``losskit.functional.cross_entropy`` / ``nll_loss`` and ``losskit.nn.CrossEntropyLoss`` / ``NLLLoss`` /
``NLLLoss2d`` are compared with ``torch.nn.functional`` / ``torch.nn`` (values, shapes, dtypes,
gradients, warnings), with closed-form values from the reference seeds, and with metamorphic properties.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
import losskit.nn as LN
from helpers import TOLERANCES, assert_close_to, assert_matches_torch, class_target, randn_logits
from helpers import class_weights as _weight
from helpers import num_classes as _num_classes
from helpers import seeded as _gen
from helpers import target_shape as _target_shape

REDUCTIONS = ("none", "mean", "sum")
DTYPES = {"f64": torch.float64, "f32": torch.float32}
LOW_DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16}

# input shapes: (C,) unbatched, (N, C), (N, C, d1, ..., dK)
SHAPES = {
    "C5": (5,),
    "1x1": (1, 1),
    "5x3": (5, 3),
    "7x13": (7, 13),
    "0x4": (0, 4),
    "K1_2x3x4": (2, 3, 4),
    "K2_2x3x4x5": (2, 3, 4, 5),
    "K3_2x3x2x2x3": (2, 3, 2, 2, 3),
    "3x1000": (3, 1000),
}
IGNORE_INDICES = {"ii-100": -100, "ii0": 0, "ii3": 3, "ii-1": -1, "ii1000": 1000}
SMOOTHINGS = {"ls0": 0.0, "ls0.1": 0.1, "ls0.7": 0.7, "ls1": 1.0, "ls-0.3": -0.3}


def _logits(shape, g: torch.Generator, scale: float = 2.0) -> torch.Tensor:
    return randn_logits(shape, g, scale)


def _class_target(shape, ignore_index: int, g: torch.Generator) -> torch.Tensor:
    """Class indices in [0, C); every third one (from the second) is set to ``ignore_index``."""
    return class_target(shape, g, ignore_index)


def _probability_target(shape, kind: str, g: torch.Generator) -> torch.Tensor:
    """Rows (along the class dim) of softmax(randn), or non-negative rows that do not sum to 1."""
    raw = torch.randn(shape, generator=g, dtype=torch.float64)
    dim = 0 if len(shape) == 1 else 1
    if kind == "softmax":
        return torch.softmax(raw * 2, dim=dim)
    # non-negative rows that do not sum to 1 (about 3.2 on average, any C); bigger sums only grow the fp32
    # cancellation in the gradient p·Σt - t, which both torch and losskit then get wrong by some ulps
    return raw.abs() * (4.0 / shape[dim])


def _ids(d: dict) -> dict:
    return {"argvalues": list(d.values()), "ids": list(d.keys())}


# (label_smoothing, dtype) pairs of the big grids: every smoothing in float64; float32 (which only adds
# rounding) at the values that take different code paths (none, some, all), to keep the file fast
SMOOTHING_DTYPE = {
    f"{ls_id}-{dt_id}": (ls, dt)
    for dt_id, dt in DTYPES.items()
    for ls_id, ls in SMOOTHINGS.items()
    if dt == torch.float64 or ls in (0.0, 0.1, 1.0)
}


# ------------------------------------------------------------------------------- class-index grid


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


# ------------------------------------------------------------------------------- probability grid

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


# --------------------------------------------------------------------------------------- nll grid


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


# ----------------------------------------------------------------------------------- edge semantics


def _fn_smoothing(eps: float) -> list:
    """(fn, label_smoothing) cases: cross entropy without and with smoothing, nll_loss (no smoothing)."""
    return [
        pytest.param("cross_entropy", 0.0, id="ce"),
        pytest.param("cross_entropy", eps, id=f"ce-ls{eps}"),
        pytest.param("nll_loss", 0.0, id="nll"),
    ]


EDGE_SHAPES = {"C4": (4,), "5x3": (5, 3), "K2_2x3x2x2": (2, 3, 2, 2)}


@pytest.mark.parametrize("shape", **_ids(EDGE_SHAPES))
@pytest.mark.parametrize("weighted", [False, True], ids=["now", "w"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("fn", "label_smoothing"), _fn_smoothing(0.25))
def test_every_target_ignored(fn, label_smoothing, reduction, weighted, shape):
    g = _gen("all-ignored", fn, shape, weighted)
    x = _logits(shape, g)
    y = torch.full(_target_shape(shape), 7, dtype=torch.long)
    inputs = {"input": x, "target": y}
    if weighted:
        inputs["weight"] = _weight(_num_classes(shape), g)
    kwargs = {"reduction": reduction, "ignore_index": 7}
    if fn == "cross_entropy":
        kwargs["label_smoothing"] = label_smoothing
    ours, _ = assert_matches_torch(getattr(LF, fn), getattr(F, fn), inputs, kwargs)
    if reduction == "mean":
        assert torch.isnan(ours)
    elif reduction == "sum":
        assert ours.item() == 0.0
    else:
        assert ours.shape == y.shape and not bool(ours.any())
    # the gradient is finite: exactly zero
    x_leaf = x.clone().requires_grad_(True)
    out = getattr(LF, fn)(**{**inputs, "input": x_leaf}, **kwargs)
    (grad,) = torch.autograd.grad(out.sum(), x_leaf)
    assert torch.equal(grad, torch.zeros_like(x))


@pytest.mark.parametrize("poison", ["nan", "inf", "-inf", "mixed"])
@pytest.mark.parametrize("weighted", [False, True], ids=["now", "w"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", **_ids(DTYPES))
@pytest.mark.parametrize(("fn", "label_smoothing"), _fn_smoothing(0.3))
def test_nonfinite_values_in_ignored_rows_do_not_leak(fn, label_smoothing, dtype, reduction, weighted, poison):
    shape = (2, 4, 3)  # K=1: 6 rows of 4 classes
    g = _gen("poison", fn, weighted)
    clean = _logits(shape, g).to(dtype)
    y = torch.randint(0, 4, (2, 3), generator=g)
    ignored = torch.zeros(2, 3, dtype=torch.bool)
    ignored[0, 1] = ignored[1, 0] = ignored[1, 2] = True
    y[ignored] = -100
    rows = clean.movedim(1, -1).clone()  # (2, 3, 4): class dim last
    value = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
    if poison == "mixed":
        rows[0, 1] = torch.tensor([math.nan, math.inf, -math.inf, 1.0])
        rows[1, 0, 2] = math.inf
        rows[1, 2, 0] = math.nan
    else:
        rows[ignored] = value[poison]
    poisoned = rows.movedim(-1, 1).contiguous()
    weight = _weight(4, g).to(dtype) if weighted else None
    kwargs = {"weight": weight, "reduction": reduction}
    if fn == "cross_entropy":
        kwargs["label_smoothing"] = label_smoothing
    ours_fn, torch_fn = getattr(LF, fn), getattr(F, fn)

    x = poisoned.clone().requires_grad_(True)
    ours = ours_fn(x, y, **kwargs)
    ref = torch_fn(poisoned, y, **kwargs)  # torch's loss ignores those rows too
    assert_close_to(ours.detach(), ref, dtype, "loss with poisoned ignored rows")
    assert bool(torch.isfinite(ours).all())

    cot = torch.randn(ours.shape, generator=g, dtype=torch.float64).to(dtype) if reduction == "none" else None
    (grad,) = torch.autograd.grad(ours, x, cot if cot is not None else torch.tensor(1.5, dtype=dtype))
    grad_rows = grad.movedim(1, -1)
    assert torch.equal(grad_rows[ignored], torch.zeros_like(grad_rows[ignored])), "ignored rows must get 0"
    # the other rows: torch's gradient on a copy whose ignored rows are finite (torch's own is NaN there)
    x_clean = clean.clone().requires_grad_(True)
    ref_clean = torch_fn(x_clean, y, **kwargs)
    (ref_grad,) = torch.autograd.grad(ref_clean, x_clean, cot if cot is not None else torch.tensor(1.5, dtype=dtype))
    assert_close_to(grad, ref_grad, dtype, "gradient with poisoned ignored rows")


@pytest.mark.parametrize("negative", [-0.3, -1.0, -1e-9])
@pytest.mark.parametrize("target_kind", ["class", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_negative_label_smoothing_is_no_smoothing(reduction, target_kind, negative):
    g = _gen("neg-ls", target_kind)
    x = _logits((6, 5), g)
    y = _class_target((6, 5), -100, g) if target_kind == "class" else _probability_target((6, 5), "nonneg", g)
    w = _weight(5, g)
    # the oracle is torch with label_smoothing=0.0 (no smoothing at all)
    assert_matches_torch(
        lambda **kw: LF.cross_entropy(**kw, label_smoothing=negative),
        lambda **kw: F.cross_entropy(**kw, label_smoothing=0.0),
        {"input": x, "target": y, "weight": w},
        {"reduction": reduction},
    )


@pytest.mark.parametrize("dtype", **_ids(DTYPES))
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("target_kind", ["class", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_huge_logits_stay_finite(reduction, target_kind, label_smoothing, dtype):
    g = _gen("huge", target_kind)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64).sign() * 1e4
    x[0] = torch.tensor([1e4, -1e4, 1e4, -1e4, 0.0])
    x[1] = torch.tensor([-1e4, -1e4, -1e4, -1e4, -1e4])
    x[2] = torch.tensor([1e4, 1e4 - 1, 1e4 - 30, -1e4, 9999.5])
    y = torch.tensor([1, 3, 4, 0, 2, 1]) if target_kind == "class" else _probability_target((6, 5), "softmax", g)
    kwargs = {"reduction": reduction, "label_smoothing": label_smoothing}
    ours, ref = assert_matches_torch(LF.cross_entropy, F.cross_entropy, {"input": x, "target": y}, kwargs, dtype)
    assert bool(torch.isfinite(ref).all()) and bool(torch.isfinite(ours).all())


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_minus_inf_masked_logits_match_torch(reduction, label_smoothing):
    # masking a class out with -inf (attention style): torch's loss is finite without smoothing, inf with it
    x = _logits((4, 5), _gen("masked"))
    x[:, 3] = -math.inf
    x[2, 0] = -math.inf
    y = torch.tensor([0, 1, 2, 4])
    kwargs = {"reduction": reduction, "label_smoothing": label_smoothing}
    assert_matches_torch(LF.cross_entropy, F.cross_entropy, {"input": x, "target": y}, kwargs)


@pytest.mark.parametrize(("fn", "label_smoothing"), _fn_smoothing(0.2))
def test_zero_total_weight_with_kept_rows(fn, label_smoothing):
    # every kept row has a class of weight 0: 'mean' is 0/0 in torch (NaN, and a NaN gradient)
    x = _logits((4, 3), _gen("zero-weight"))
    inputs = {"input": x, "target": torch.tensor([0, 0, -100, 0]), "weight": torch.tensor([0.0, 1.0, 2.0]).double()}
    kwargs = {"label_smoothing": label_smoothing} if label_smoothing else {}
    for reduction in REDUCTIONS:
        assert_matches_torch(getattr(LF, fn), getattr(F, fn), inputs, {**kwargs, "reduction": reduction})


LOW_SHAPES = {"C7": (7,), "6x5": (6, 5), "K2_2x4x3x3": (2, 4, 3, 3), "3x1000": (3, 1000)}


@pytest.mark.parametrize("dtype", **_ids(LOW_DTYPES))
@pytest.mark.parametrize("shape", **_ids(LOW_SHAPES))
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["now", "w"])
@pytest.mark.parametrize("target_kind", ["class", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_low_precision_cross_entropy(reduction, target_kind, weighted, label_smoothing, shape, dtype):
    g = _gen("low", shape, target_kind, weighted)
    x = _logits(shape, g, scale=3.0)
    y = _class_target(shape, -100, g) if target_kind == "class" else _probability_target(shape, "softmax", g)
    inputs = {"input": x, "target": y}
    if weighted:
        inputs["weight"] = _weight(_num_classes(shape), g)
    kwargs = {"reduction": reduction, "label_smoothing": label_smoothing}
    # error vs float64 no larger than torch's own + tol; the helper also checks grad dtype == input dtype
    ours, _ = assert_matches_torch(LF.cross_entropy, F.cross_entropy, inputs, kwargs, dtype=dtype)
    assert ours.dtype == dtype
    low = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    leaf = low["input"].requires_grad_(True)
    (grad,) = torch.autograd.grad(LF.cross_entropy(**{**low, "input": leaf}, **kwargs).sum(), leaf)
    assert grad.dtype == dtype


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


# ------------------------------------------------------------------------------- legacy arguments

LEGACY = [None, True, False]


def _call_recording(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [(w.category, str(w.message)) for w in caught]


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


# ------------------------------------------------------------------------------------- gradcheck


def _gradcheck(f, x):
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "case",
    ["class_w_ignore_smooth", "class_unbatched", "class_K2", "prob", "prob_w_smooth_K1", "nll", "nll_K2"],
)
def test_gradcheck(case, reduction):
    g = _gen("gradcheck", case)
    if case == "class_w_ignore_smooth":
        x, y = _logits((5, 4), g), _class_target((5, 4), 2, g)
        w = _weight(4, g)
        kw = {"weight": w, "ignore_index": 2, "label_smoothing": 0.15}
    elif case == "class_unbatched":
        x, y, kw = _logits((4,), g), torch.tensor(3), {"label_smoothing": 0.1}
    elif case == "class_K2":
        x, y = _logits((2, 3, 2, 3), g), _class_target((2, 3, 2, 3), -100, g)
        kw = {"weight": _weight(3, g), "label_smoothing": 0.05}
    elif case == "prob":
        x, y, kw = _logits((4, 3), g), _probability_target((4, 3), "softmax", g), {}
    elif case == "prob_w_smooth_K1":
        x, y = _logits((3, 4, 2), g), _probability_target((3, 4, 2), "nonneg", g)
        kw = {"weight": _weight(4, g), "label_smoothing": 0.3}
    elif case == "nll":
        x, y = torch.log_softmax(_logits((5, 4), g), 1), _class_target((5, 4), 1, g)
        kw = {"weight": _weight(4, g), "ignore_index": 1}
    else:
        x, y, kw = _logits((2, 3, 2, 2), g), _class_target((2, 3, 2, 2), -100, g), {"weight": _weight(3, g)}
    fn = LF.nll_loss if case.startswith("nll") else LF.cross_entropy
    _gradcheck(lambda inp: fn(inp, y, reduction=reduction, **kw), x.requires_grad_(True))


# what a clear double-backward error says (torch's own once_differentiable message qualifies)
DOUBLE_BACKWARD_MESSAGE = r"(?i)twice|double backward|second[- ]order|create_graph|once_differentiable"


@pytest.mark.parametrize("target_kind", ["class", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_double_backward_raises(reduction, target_kind):
    g = _gen("double", target_kind)
    x = _logits((4, 3), g).requires_grad_(True)
    y = torch.tensor([0, 2, 1, 1]) if target_kind == "class" else _probability_target((4, 3), "softmax", g)
    loss = LF.cross_entropy(x, y, reduction=reduction, label_smoothing=0.1)
    (first,) = torch.autograd.grad(loss.sum(), x, create_graph=True)
    # the first-order gradient itself is right
    ref = F.cross_entropy(x, y, reduction=reduction, label_smoothing=0.1)
    assert_close_to(first.detach(), torch.autograd.grad(ref.sum(), x)[0], torch.float64)
    # second order is not supported: asking for it must fail loudly, naming the cause
    with pytest.raises(RuntimeError, match=DOUBLE_BACKWARD_MESSAGE):
        torch.autograd.grad(first.sum(), x)


@pytest.mark.parametrize("target_kind", ["class", "prob"])
def test_cross_entropy_gradient_penalty_is_not_silently_dropped(target_kind):
    # a gradient penalty (WGAN-GP / input-gradient regularisation style): the penalty term depends on x through
    # the first gradient. If the first gradient comes back detached, backward of (loss + penalty) silently
    # returns the gradient of the loss alone. It must raise instead (or, in torch, be right).
    g = _gen("penalty", target_kind)
    x = _logits((4, 3), g).requires_grad_(True)
    y = torch.tensor([0, 2, 1, 1]) if target_kind == "class" else _probability_target((4, 3), "softmax", g)
    loss = LF.cross_entropy(x, y)
    (first,) = torch.autograd.grad(loss, x, create_graph=True)
    assert first.requires_grad, "create_graph=True gave a gradient detached from x: second order would be lost"
    with pytest.raises(RuntimeError, match=DOUBLE_BACKWARD_MESSAGE):
        torch.autograd.grad(loss + first.pow(2).sum(), x)


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


# ------------------------------------------------------------------------------------- hypothesis

F64 = torch.float64


@st.composite
def class_problems(draw, *, allow_smoothing=True, allow_weight=True, allow_ignore=True):
    """(x, y, kwargs) with random N, C, K dims, scale, weights, ignore_index, smoothing and reduction."""
    kdims = draw(st.lists(st.integers(1, 3), max_size=3))
    unbatched = not kdims and draw(st.booleans())
    n = draw(st.integers(0, 6))
    c = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.01, 1.0, 3.0, 30.0, 300.0]))
    g = torch.Generator().manual_seed(seed)
    shape = (c,) if unbatched else (n, c, *kdims)
    x = torch.randn(shape, generator=g, dtype=F64) * scale
    y = torch.randint(0, c, _target_shape(shape), generator=g)
    kwargs = {"reduction": draw(st.sampled_from(REDUCTIONS))}
    if allow_ignore and draw(st.booleans()):
        ignore_index = draw(st.one_of(st.just(-100), st.integers(-3, c + 2)))
        frac = draw(st.sampled_from([0.0, 0.3, 1.0]))
        mask = torch.rand(y.shape, generator=g) < frac
        y = torch.where(mask, torch.full_like(y, ignore_index), y)
        kwargs["ignore_index"] = ignore_index
    if allow_weight and draw(st.booleans()):
        w = torch.rand(c, generator=g, dtype=F64) * 2 + 0.05
        kwargs["weight"] = w
    if allow_smoothing and draw(st.booleans()):
        kwargs["label_smoothing"] = draw(st.sampled_from([-0.5, 0.0, 0.05, 0.5, 0.99, 1.0]))
    if draw(st.booleans()):
        y = y.clamp(0, 255).to(torch.uint8) if y.numel() == 0 or (y.min() >= 0 and y.max() <= 255) else y
    return x, y, kwargs


@st.composite
def probability_problems(draw):
    kdims = draw(st.lists(st.integers(1, 3), max_size=3))
    unbatched = not kdims and draw(st.booleans())
    n = draw(st.integers(0, 6))
    c = draw(st.integers(1, 9))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shape = (c,) if unbatched else (n, c, *kdims)
    x = torch.randn(shape, generator=g, dtype=F64) * draw(st.sampled_from([0.01, 1.0, 10.0, 300.0]))
    t = _probability_target(shape, draw(st.sampled_from(["softmax", "nonneg"])), g)
    if draw(st.booleans()):  # some exact zeros (hard labels mixed in)
        t = t * (torch.rand(shape, generator=g) < 0.5)
    kwargs = {"reduction": draw(st.sampled_from(REDUCTIONS))}
    if draw(st.booleans()):
        kwargs["weight"] = torch.rand(c, generator=g, dtype=F64) * 2 + 0.05
    if draw(st.booleans()):
        kwargs["label_smoothing"] = draw(st.sampled_from([-0.5, 0.0, 0.05, 0.5, 1.0]))
    return x, t, kwargs


def _long_target(torch_fn):
    """torch's function on the class indices as int64: torch takes uint8 indices only for (C,)/(N, C) input
    (and not with weight + smoothing); its results on uint8 equal those on int64 where it takes them."""

    def call(input, target, **kw):
        return torch_fn(input, target if target.is_floating_point() else target.long(), **kw)

    return call


def _split(kwargs):
    """Move the weight tensor into the helper's inputs (so it is cast and cloned with the rest)."""
    kwargs = dict(kwargs)
    w = kwargs.pop("weight", None)
    return ({} if w is None else {"weight": w}), kwargs


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


@settings(max_examples=400)
@given(class_problems(allow_smoothing=False), st.booleans())
def test_hypothesis_nll_loss(problem, log_probs):
    x, y, kwargs = problem
    if log_probs:
        x = torch.log_softmax(x, dim=0 if x.dim() == 1 else 1)
    extra, kwargs = _split(kwargs)
    assert_matches_torch(LF.nll_loss, _long_target(F.nll_loss), {"input": x, "target": y, **extra}, kwargs)


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


# --------------------------------------------------------------------------------- reference seeds


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


# ---------------------------------------------------------------------------------------- modules

MODULE_KWARGS = {
    "default": {},
    "sum": {"reduction": "sum"},
    "none_ignore1": {"reduction": "none", "ignore_index": 1},
    "weight": {"weight": "w"},
    "weight_smooth": {"weight": "w", "label_smoothing": 0.2},
    "weight_ignore_none_smooth": {"weight": "w", "ignore_index": 0, "reduction": "none", "label_smoothing": 0.4},
    "smooth_neg": {"label_smoothing": -0.1, "reduction": "sum"},
}


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


def test_tolerance_table_covers_tested_dtypes():
    # the helper's table must know every dtype this file compares in
    assert set(DTYPES.values()) | set(LOW_DTYPES.values()) <= set(TOLERANCES)
