"""binary_cross_entropy against torch 2.13: the grid (with the -100 log clamp at p = 0 or 1), gradients
w.r.t. the target, gradcheck and properties; the binary contract is in :mod:`pointwise_helpers`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
import torch_db
from helpers import DTYPES, SHAPE_IDS, SHAPES, assert_matches_torch
from helpers import case_seed as _seed
from pointwise_helpers import (
    REDUCTIONS,
    BinaryLossTests,
    LegacyArgsTests,
    WeightRequiringGradTests,
    any_shape,
    class_weight,
    probs_and_targets,
)
from pointwise_helpers import gen as _gen

pytestmark = pytest.mark.filterwarnings("error")


class TestBinaryCrossEntropy(BinaryLossTests, LegacyArgsTests, WeightRequiringGradTests):
    name = "binary_cross_entropy"


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", ["none", "full", "class"])
def test_bce_grid(weight, reduction, dtype, shape):
    seed = _seed("bce", weight, reduction, shape)
    p, t = probs_and_targets(shape, seed)
    inputs = {"input": p, "target": t}
    w = class_weight(shape, weight, seed)
    if w is not None:
        inputs["weight"] = w
    ours, ref = assert_matches_torch(
        LF.binary_cross_entropy,
        TF.binary_cross_entropy,
        inputs,
        {"reduction": reduction},
        dtype=dtype,
        grad_wrt=("input",),
        seed=seed,
    )
    if p.numel():  # the clamp keeps every loss finite (only the mean of nothing is NaN)
        assert bool(torch.isfinite(ref).all()) and bool(torch.isfinite(ours).all())


def test_bce_saturated_values_and_input_grads():
    """p = 0 or 1: the log is clamped at -100, the loss is finite, the gradient is torch's finite
    ``(p - t) / max(p·(1-p), eps)`` with eps the *float32* 1e-12 even for float64 inputs."""
    p = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.3, 0.6], dtype=torch.float64)
    ours, _ = assert_matches_torch(
        LF.binary_cross_entropy, TF.binary_cross_entropy, {"input": p, "target": t}, {"reduction": "none"}
    )
    torch.testing.assert_close(ours[:4], torch.tensor([0.0, 0.0, 100.0, 100.0], dtype=torch.float64))
    pg = p.clone().requires_grad_()
    (g,) = torch.autograd.grad(LF.binary_cross_entropy(pg, t, reduction="sum"), pg)
    assert bool(torch.isfinite(g).all())
    eps = float(torch.tensor(1e-12, dtype=torch.float32))  # torch's kernel clamps at the float 1e-12
    torch.testing.assert_close(g, (p - t) / eps, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", ["none", "full", "class"])
def test_bce_target_grads_interior(weight, reduction, dtype):
    """torch differentiates BCE w.r.t. the target too: ``w·(log(1-p) - log p)``."""
    shape = (4, 5)
    seed = _seed("bce_t", weight, reduction)
    p, t = probs_and_targets(shape, seed, saturate=False)
    inputs = {"input": p, "target": t}
    w = class_weight(shape, weight, seed)
    if w is not None:
        inputs["weight"] = w
    assert_matches_torch(
        LF.binary_cross_entropy,
        TF.binary_cross_entropy,
        inputs,
        {"reduction": reduction},
        dtype=dtype,
        grad_wrt=("input", "target"),
        seed=seed,
    )


def test_bce_target_grads_at_saturated_probabilities():
    """At p = 0 or 1 torch's target gradient is ``log(1-p) - log(p)`` unclamped, i.e. ±inf."""
    p = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.25], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.5], dtype=torch.float64)
    assert_matches_torch(
        LF.binary_cross_entropy,
        TF.binary_cross_entropy,
        {"input": p, "target": t},
        {"reduction": "sum"},
        grad_wrt=("input", "target"),
    )


def test_gradcheck_bce():
    p, t = probs_and_targets((3, 4), 5, saturate=False)
    p = (p * 0.8 + 0.1).requires_grad_()  # away from 0 and 1
    t.requires_grad_()
    w = torch.rand(4, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(lambda a, b: LF.binary_cross_entropy(a, b), (p, t))
    assert torch.autograd.gradcheck(lambda a, b: LF.binary_cross_entropy(a, b, w, reduction="none"), (p, t))


@settings(max_examples=150)
@given(
    shape=any_shape,
    reduction=st.sampled_from(REDUCTIONS),
    weight=st.sampled_from(["none", "full", "class"]),
    saturate=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_bce(shape, reduction, weight, saturate, seed):
    p, t = probs_and_targets(shape, seed, saturate=saturate)
    if saturate:  # round some probabilities and targets to exactly 0 or 1
        g = _gen(seed + 3)
        p = torch.where(torch.rand(shape, generator=g) < 0.3, p.round(), p)
        t = torch.where(torch.rand(shape, generator=g) < 0.3, t.round(), t)
    inputs = {"input": p, "target": t}
    w = class_weight(shape, weight, seed)
    if w is not None:
        inputs["weight"] = w
    assert_matches_torch(
        LF.binary_cross_entropy,
        TF.binary_cross_entropy,
        inputs,
        {"reduction": reduction},
        grad_wrt=("input",),
        seed=seed % 1000,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_bf16_no_further_from_float64_than_torch(reduction, weighted):
    """bf16 loss and both gradients computed in float32 and rounded once. The old reference rounded each
    intermediate in bf16: its target gradient ``log1p(-p) - log p`` was 2-2.6x torch's error on op_db's samples."""
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        shape = (5, 3 + seed)
        p = torch.rand(shape, generator=g).clamp(0.02, 0.98).bfloat16().requires_grad_()
        t = torch.rand(shape, generator=g).bfloat16().requires_grad_()
        kw = {"reduction": reduction}
        if weighted:
            kw["weight"] = (torch.rand(shape, generator=g) * 3).bfloat16()
        errors = torch_db.errors_vs_float64(LF.binary_cross_entropy, TF.binary_cross_entropy, (p, t), kw)
        for what, (ours, theirs) in errors.items():
            assert ours <= theirs + 1e-12, (seed, what, ours, theirs)


@pytest.mark.parametrize("seed", range(4))
def test_bf16_chunked_mean_in_float32(seed):
    """Above the engine's small size the bf16 chunks are computed and summed in float32: the old chunks summed
    in bf16 (a 90k-element chunk sum rounded to 2^8): 3.6x torch's error for the mean at seed 3."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(300, 300, generator=g).clamp(0.01, 0.99).bfloat16().requires_grad_()
    t = torch.rand(300, 300, generator=g).bfloat16()
    ours, theirs = torch_db.errors_vs_float64(LF.binary_cross_entropy, TF.binary_cross_entropy, (p, t))["value"]
    assert ours <= theirs + 1e-12
