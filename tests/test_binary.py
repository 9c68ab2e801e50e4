"""Oracle tests for the binary losses (binary_cross_entropy, binary_cross_entropy_with_logits,
soft_margin_loss) against torch 2.13's ``torch.nn.functional``: values, shapes, dtypes, gradients."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
from helpers import DTYPES, LEGACY, SHAPE_IDS, SHAPES, assert_close_to, assert_matches_torch

pytestmark = pytest.mark.filterwarnings("error")

REDUCTIONS = ["none", "mean", "sum"]

FUNCS = {
    "binary_cross_entropy": (LF.binary_cross_entropy, TF.binary_cross_entropy),
    "binary_cross_entropy_with_logits": (
        LF.binary_cross_entropy_with_logits,
        TF.binary_cross_entropy_with_logits,
    ),
    "soft_margin_loss": (LF.soft_margin_loss, TF.soft_margin_loss),
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _seed(*parts) -> int:
    return sum((i + 1) * 7919 * len(str(p)) + sum(map(ord, str(p))) for i, p in enumerate(parts)) % 100_000


def probs_and_targets(shape, seed: int, saturate: bool = True):
    """Probabilities in (0.02, 0.98) and soft targets in [0, 1]; with room, exact 0s and 1s in both,
    including the worst pairings (p=0, t=1) and (p=1, t=0) whose logs hit the -100 clamp."""
    g = _gen(seed)
    p = torch.rand(shape, generator=g, dtype=torch.float64) * 0.96 + 0.02
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    if p.numel() >= 6 and saturate:
        pf, tf = p.view(-1), t.view(-1)
        pf[:6] = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
        tf[:6] = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.3, 0.6], dtype=torch.float64)
        if t.numel() >= 8:
            tf[6:8] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    return p, t


def class_weight(shape, mode: str, seed: int, low: float = 0.1):
    """``None``, a weight of the full shape, or one that broadcasts along the last (class) dimension."""
    if mode == "none":
        return None
    wshape = shape if mode == "full" else shape[-1:]
    return torch.rand(wshape, generator=_gen(seed + 77), dtype=torch.float64) * 2 + low


# --------------------------------------------------------------------------------- binary_cross_entropy


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


@pytest.mark.parametrize("name", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
def test_weight_requiring_grad_raises_like_torch(name):
    """torch refuses a ``weight`` that requires grad (it does not differentiate w.r.t. it)."""
    ours_fn, ref_fn = FUNCS[name]
    p, t = probs_and_targets((2, 3), 3, saturate=False)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError):
        ref_fn(p, t, weight=w)
    with pytest.raises(RuntimeError):
        ours_fn(p, t, weight=w)


# ----------------------------------------------------------------------- binary_cross_entropy_with_logits


def logits_and_targets(shape, seed: int):
    """Logits of magnitude up to 500 (both signs) and soft targets in [0, 1] with exact 0s and 1s."""
    g = _gen(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 4
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    if x.numel() >= 7:
        xf, tf = x.view(-1), t.view(-1)
        xf[:7] = torch.tensor([500.0, -500.0, 500.0, -500.0, 100.0, -37.5, 0.0], dtype=torch.float64)
        tf[:7] = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    elif x.numel() >= 1:
        x.view(-1)[0] = -500.0
        t.view(-1)[0] = 0.75
    return x, t


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


# ----------------------------------------------------------------------------------------- soft_margin


def margins_and_signs(shape, seed: int):
    g = _gen(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    y = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    if x.numel() >= 4:
        # large margins, but below where torch's own exp(-y·x) overflows in float32 (see the overflow test)
        x.view(-1)[:4] = torch.tensor([80.0, -80.0, 0.0, 40.0], dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_margin_grid(reduction, dtype, shape):
    seed = _seed("sm", reduction, shape)
    x, y = margins_and_signs(shape, seed)
    assert_matches_torch(
        LF.soft_margin_loss,
        TF.soft_margin_loss,
        {"input": x, "target": y},
        {"reduction": reduction},
        dtype=dtype,
        grad_wrt=("input",),
        seed=seed,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_soft_margin_stays_finite_where_torch_overflows(dtype):
    """A deliberate difference: torch computes ``log1p(exp(-y·x))`` directly and gives +inf once
    ``exp`` overflows; losskit computes ``logaddexp(0, -y·x)``, which is the exact value ``-y·x`` there.
    The oracle is float64 math on the same numbers (and torch agrees wherever it does not overflow)."""
    big = 100.0 if dtype == torch.float32 else 800.0
    x = torch.tensor([big, -big, big, 2.0], dtype=dtype)
    y = torch.tensor([-1.0, 1.0, 1.0, -1.0], dtype=dtype)
    ours = LF.soft_margin_loss(x, y, reduction="none")
    ref = TF.soft_margin_loss(x, y, reduction="none")
    assert bool(torch.isinf(ref[:2]).all())  # torch overflows
    z = (-y * x).double()
    exact = torch.where(z > 30, z + torch.exp(-z), torch.log1p(torch.exp(z)))
    torch.testing.assert_close(ours.double(), exact, rtol=1e-6, atol=1e-30)
    torch.testing.assert_close(ours[2:], ref[2:])


# ------------------------------------------------------------------------------------- mixed dtypes


def _both(fn_pair, *args, **kwargs):
    outs = []
    for fn in fn_pair:
        try:
            outs.append(fn(*args, **kwargs))
        except RuntimeError as e:
            outs.append(e)
    return outs


@pytest.mark.parametrize(
    "dtypes", [(torch.float64, torch.float32), (torch.float32, torch.float64)], ids=["f64_f32", "f32_f64"]
)
@pytest.mark.parametrize("name", list(FUNCS))
def test_mixed_dtypes_like_torch(name, dtypes):
    """float64/float32 input and target: torch's result dtype and values, or torch's error."""
    if name == "binary_cross_entropy":
        x, t = probs_and_targets((3, 4), 1, saturate=False)
    elif name == "binary_cross_entropy_with_logits":
        x, t = logits_and_targets((3, 4), 1)
    else:
        x, t = margins_and_signs((3, 4), 1)
    x, t = x.to(dtypes[0]), t.to(dtypes[1])
    for reduction in REDUCTIONS:
        ours, ref = _both(FUNCS[name], x, t, reduction=reduction)
        if isinstance(ref, Exception):
            assert isinstance(ours, RuntimeError), f"torch raises {ref!r}; ours returned {ours!r}"
            continue
        assert not isinstance(ours, Exception), f"ours raised {ours!r}"
        assert ours.dtype == ref.dtype, f"result dtype {ours.dtype} != torch's {ref.dtype}"
        assert_close_to(ours, ref, torch.float32)


# ------------------------------------------------------------------------------------------- legacy


def _call_recording(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [(w.category, str(w.message)) for w in caught]


@pytest.mark.parametrize("legacy", LEGACY, ids=str)
@pytest.mark.parametrize("name", list(FUNCS))
def test_legacy_size_average_reduce(name, legacy):
    ours_fn, ref_fn = FUNCS[name]
    size_average, reduce = legacy
    if name == "binary_cross_entropy":
        x, t = probs_and_targets((3, 5), 2)
    elif name == "binary_cross_entropy_with_logits":
        x, t = logits_and_targets((3, 5), 2)
    else:
        x, t = margins_and_signs((3, 5), 2)
    for reduction in REDUCTIONS:
        kw = {"size_average": size_average, "reduce": reduce, "reduction": reduction}
        ours, ours_w = _call_recording(ours_fn, x, t, **kw)
        ref, ref_w = _call_recording(ref_fn, x, t, **kw)
        assert ref_w and ours_w == ref_w
        assert_close_to(ours, ref, torch.float64)


# ---------------------------------------------------------------------------------------- gradcheck


def test_gradcheck_bce():
    p, t = probs_and_targets((3, 4), 5, saturate=False)
    p = (p * 0.8 + 0.1).requires_grad_()  # away from 0 and 1
    t.requires_grad_()
    w = torch.rand(4, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(lambda a, b: LF.binary_cross_entropy(a, b), (p, t))
    assert torch.autograd.gradcheck(lambda a, b: LF.binary_cross_entropy(a, b, w, reduction="none"), (p, t))


def test_gradcheck_bce_with_logits():
    x, t = logits_and_targets((3, 4), 6)
    x = (x.clamp(-6, 6)).requires_grad_()
    t.requires_grad_()
    w = torch.rand(4, dtype=torch.float64) + 0.5
    pw = torch.rand(3, 4, dtype=torch.float64) + 0.5
    fn = LF.binary_cross_entropy_with_logits
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b), (x, t))
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, w, pos_weight=pw, reduction="sum"), (x, t))


def test_gradcheck_soft_margin():
    x, y = margins_and_signs((3, 4), 7)
    x = (x.clamp(-6, 6)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: LF.soft_margin_loss(a, y), (x,))
    assert torch.autograd.gradcheck(lambda a: LF.soft_margin_loss(a, y, reduction="none"), (x,))


# --------------------------------------------------------------------------------------- properties

_shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)


@settings(max_examples=150)
@given(
    shape=_shapes,
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


@settings(max_examples=150)
@given(
    shape=_shapes,
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


@settings(max_examples=100)
@given(
    shape=_shapes,
    reduction=st.sampled_from(REDUCTIONS),
    scale=st.sampled_from([0.1, 3.0, 60.0]),  # float64: |y·x| stays below 709, where torch's exp overflows
    seed=st.integers(0, 2**31 - 1),
)
def test_property_soft_margin(shape, reduction, scale, seed):
    g = _gen(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    y = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    assert_matches_torch(
        LF.soft_margin_loss,
        TF.soft_margin_loss,
        {"input": x, "target": y},
        {"reduction": reduction},
        grad_wrt=("input",),
        seed=seed % 1000,
    )
