"""binary_cross_entropy_with_logits against torch 2.13: weight × pos_weight grid with logits of ±500,
the saturated closed form, gradcheck and properties (the binary contract: :mod:`pointwise_helpers`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
from helpers import DTYPES, SHAPES, assert_matches_torch
from helpers import case_seed as _seed
from pointwise_helpers import (
    REDUCTIONS,
    BinaryLossTests,
    LegacyArgsTests,
    WeightRequiringGradTests,
    any_shape,
    class_weight,
    logits_and_targets,
)
from pointwise_helpers import gen as _gen

pytestmark = pytest.mark.filterwarnings("error")


class TestBinaryCrossEntropyWithLogits(BinaryLossTests, LegacyArgsTests, WeightRequiringGradTests):
    name = "binary_cross_entropy_with_logits"


BCEL_CASES = [
    (w, pw, shape)
    for shape in SHAPES
    for w in ("none", "class", "full")
    for pw in ("none", "class", "full")
    if not (shape == () and "class" in (w, pw))  # a 0-d input has no class dimension
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("weight", "pos_weight", "shape"), BCEL_CASES, ids=str)
def test_bce_with_logits_grid(weight, pos_weight, shape, reduction, dtype):
    seed = _seed("bcel", weight, pos_weight, reduction, shape)
    x, t = logits_and_targets(shape, seed)
    inputs = {"input": x, "target": t}
    w = class_weight(shape, weight, seed)
    pw = class_weight(shape, pos_weight, seed + 1, low=0.5)
    if w is not None:
        inputs["weight"] = w
    if pw is not None:
        inputs["pos_weight"] = pw
    ours, ref = assert_matches_torch(
        LF.binary_cross_entropy_with_logits,
        TF.binary_cross_entropy_with_logits,
        inputs,
        {"reduction": reduction},
        dtype=dtype,
        grad_wrt=("input", "target"),
        seed=seed,
    )
    if ref.numel() and not (reduction == "mean" and shape == (0, 3)):
        assert bool(torch.isfinite(ours).all()), "logits of ±500 must give finite losses"


def test_bce_with_logits_large_logits_closed_form():
    """Saturated logits: the loss is the linear tail, e.g. t=0, x=500 costs 500 (no overflow, no inf)."""
    x = torch.tensor([500.0, -500.0, 500.0, -500.0], dtype=torch.float32)
    t = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float32)
    ours, _ = assert_matches_torch(
        LF.binary_cross_entropy_with_logits,
        TF.binary_cross_entropy_with_logits,
        {"input": x, "target": t},
        {"reduction": "none"},
        grad_wrt=("input", "target"),
    )
    torch.testing.assert_close(ours, torch.tensor([500.0, 500.0, 0.0, 0.0]))


def test_gradcheck_bce_with_logits():
    x, t = logits_and_targets((3, 4), 6)
    x = (x.clamp(-6, 6)).requires_grad_()
    t.requires_grad_()
    w = torch.rand(4, dtype=torch.float64) + 0.5
    pw = torch.rand(3, 4, dtype=torch.float64) + 0.5
    fn = LF.binary_cross_entropy_with_logits
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b), (x, t))
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, w, pos_weight=pw, reduction="sum"), (x, t))


@settings(max_examples=150)
@given(
    shape=any_shape,
    reduction=st.sampled_from(REDUCTIONS),
    weight=st.sampled_from(["none", "full", "class"]),
    pos_weight=st.sampled_from(["none", "full", "class"]),
    scale=st.sampled_from([0.1, 3.0, 60.0, 500.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_bce_with_logits(shape, reduction, weight, pos_weight, scale, seed):
    g = _gen(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    inputs = {"input": x, "target": t}
    w = class_weight(shape, weight, seed)
    pw = class_weight(shape, pos_weight, seed + 1, low=0.0)
    if w is not None:
        inputs["weight"] = w
    if pw is not None:
        inputs["pos_weight"] = pw
    assert_matches_torch(
        LF.binary_cross_entropy_with_logits,
        TF.binary_cross_entropy_with_logits,
        inputs,
        {"reduction": reduction},
        grad_wrt=("input", "target"),
        seed=seed % 1000,
    )
