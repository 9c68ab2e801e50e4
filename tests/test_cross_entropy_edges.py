"""Oracle tests of losskit's cross entropy against torch 2.13: edge semantics (every target ignored,
non-finite values in ignored rows, negative smoothing, huge or -inf logits, zero total weight), float16 /
bfloat16 accuracy, gradcheck and higher-order gradients. A test parametrized over ``fn`` runs
``cross_entropy`` and ``nll_loss`` on one grid. The option grids are in ``test_cross_entropy.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF
from ce_helpers import (
    DTYPES,
    LOW_DTYPES,
    REDUCTIONS,
)
from ce_helpers import indices_target as _class_target
from ce_helpers import logits as _logits
from ce_helpers import param_ids as _ids
from ce_helpers import probability_target as _probability_target
from helpers import assert_close_to, assert_matches_torch
from helpers import class_weights as _weight
from helpers import num_classes as _num_classes
from helpers import seeded as _gen
from helpers import target_shape as _target_shape

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


# ---------------------------------------------------------------------------------------- gradcheck


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
