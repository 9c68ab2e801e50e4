"""Oracle tests of the fused linear + cross entropy (issue 4): ``losskit.functional.linear_cross_entropy``.

Oracles (never losskit itself):

* ``F.cross_entropy(F.linear(input, W, b), target, ...)`` (flattened for leading dimensions);
* torch 2.13's own ``F.linear_cross_entropy``: its reference path (``options=None``) and, where it
  applies, its chunked path (``options=torch.nn.LinearCrossEntropyOptions()``);
* float64 math written here for the extras ``z_loss`` and ``softcap``.

Sections: 1. option grid (class indices, probabilities); 2. z_loss/softcap; 3. torch's
``F.linear_cross_entropy`` directly; 4. fp16/bf16 accuracy; 5. K-dimensional ``linear_weight``.
Sections 6 to 9 (memory, the module ``losskit.nn.LinearCrossEntropyLoss``, autograd, bad input) are in
``tests/test_linear_cross_entropy_module.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import losskit
import losskit.functional as LF
from helpers import assert_close_to, assert_error_no_worse, assert_matches_torch, cotangent
from helpers import class_weights as _class_weight
from helpers import lead_class_target as _class_target
from helpers import linear_problem as _linear_problem
from helpers import seeded as _gen

REDUCTIONS = ("none", "mean", "sum")


# name -> (input shape, number of classes V); the target has the input's leading shape
SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "7x5-V11": ((7, 5), 11),
    "1x3-V2": ((1, 3), 2),
    "empty-0x4-V6": ((0, 4), 6),
    "unbatched-H4-V7": ((4,), 7),
    "lead-2x3x4-V9": ((2, 3, 4), 9),
    "awkward-13x17-V29": ((13, 17), 29),
}


def _prob_target(lead, v: int, g: torch.Generator) -> torch.Tensor:
    return torch.softmax(torch.randn((*lead, v), generator=g, dtype=torch.float64) * 2, dim=-1)


def torch_linear_ce(
    input,
    linear_weight,
    target,
    linear_bias=None,
    weight=None,
    reduction="mean",
    ignore_index=None,
    label_smoothing=0.0,
):
    """The oracle: ``F.cross_entropy(F.linear(...))`` on the flattened rows, reshaped back for ``'none'``."""
    h_features, v = input.shape[-1], linear_weight.shape[0]
    lead = input.shape[:-1]
    probabilities = tuple(target.shape) == (*lead, v)
    x, t = input, target
    if input.dim() > 2:
        x = input.reshape(-1, h_features)
        t = target.reshape(-1, v) if probabilities else target.reshape(-1)
    out = F.cross_entropy(
        F.linear(x, linear_weight, linear_bias),
        t,
        weight=weight,
        reduction=reduction,
        ignore_index=-100 if ignore_index is None else ignore_index,
        label_smoothing=label_smoothing,
    )
    if reduction == "none" and input.dim() > 2:
        out = out.reshape(lead)
    return out


def _ours(chunk_size=None, **extra):
    def fn(**kw):
        return LF.linear_cross_entropy(**kw, chunk_size=chunk_size, **extra)

    return fn


def _run_cases(cases, check) -> int:
    """Run ``check(case)`` for every case; fail with the first few failing cases (and how many failed)."""
    failures = []
    n = 0
    for case in cases:
        n += 1
        try:
            check(case)
        except AssertionError as e:
            failures.append(f"{case}: {str(e)[:600]}")
    assert n > 0, "empty grid"
    assert not failures, f"{len(failures)}/{n} case(s) failed:\n" + "\n".join(failures[:4])
    return n


# ============================================================================== 1. the option grid

CHUNKS = (None, 1, 3, 1000)
IGNORES = (None, 0, 5)  # None: the default, which is -100 for class indices (some targets are -100)
SMOOTHINGS = (0.0, 0.1, 1.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_class_index_grid_matches_cross_entropy_of_linear(shape_name, reduction, dtype):
    """bias × class weight × ignore_index × label_smoothing × chunk_size, values and all three gradients."""
    shape, v = SHAPES[shape_name]
    lead = shape[:-1]

    def check(case):
        bias, weighted, ignore_index, smoothing, chunk = case
        g = _gen("grid", shape_name, reduction, case)
        x, w, b = _linear_problem(shape, v, g, bias)
        y = _class_target(lead, v, g, -100 if ignore_index is None else ignore_index)
        inputs = {"input": x, "linear_weight": w, "target": y, "linear_bias": b}
        if weighted:
            inputs["weight"] = _class_weight(v, g)
        kwargs = {"reduction": reduction, "label_smoothing": smoothing}
        if ignore_index is not None:
            kwargs["ignore_index"] = ignore_index
        ours, ref = assert_matches_torch(
            _ours(chunk),
            torch_linear_ce,
            inputs,
            kwargs,
            dtype=dtype,
            grad_wrt=("input", "linear_weight", "linear_bias"),
        )
        assert ours.shape == (tuple(lead) if reduction == "none" else ())

    cases = [
        (bias, weighted, ii, ls, chunk)
        for bias in (False, True)
        for weighted in (False, True)
        for ii in IGNORES
        for ls in SMOOTHINGS
        for chunk in CHUNKS
    ]
    assert _run_cases(cases, check) == 144


PROB_SHAPES = ("7x5-V11", "empty-0x4-V6", "unbatched-H4-V7", "lead-2x3x4-V9", "awkward-13x17-V29")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape_name", PROB_SHAPES)
def test_probability_target_grid(shape_name, dtype):
    """Float ``(*, V)`` targets × class weight × smoothing × reduction × bias × chunk_size."""
    shape, v = SHAPES[shape_name]
    lead = shape[:-1]

    def check(case):
        reduction, weighted, smoothing, bias, chunk = case
        g = _gen("prob", shape_name, case)
        x, w, b = _linear_problem(shape, v, g, bias)
        inputs = {"input": x, "linear_weight": w, "target": _prob_target(lead, v, g), "linear_bias": b}
        if weighted:
            inputs["weight"] = _class_weight(v, g)
        assert_matches_torch(
            _ours(chunk),
            torch_linear_ce,
            inputs,
            {"reduction": reduction, "label_smoothing": smoothing},
            dtype=dtype,
            grad_wrt=("input", "linear_weight", "linear_bias"),
        )

    cases = [
        (red, weighted, ls, bias, chunk)
        for red in REDUCTIONS
        for weighted in (False, True)
        for ls in SMOOTHINGS
        for bias in (False, True)
        for chunk in (None, 3)
    ]
    assert _run_cases(cases, check) == 72


@pytest.mark.parametrize("ignore_index", [-100, 0, 3])
@pytest.mark.parametrize("shape_name", ["7x5-V11", "unbatched-H4-V7", "lead-2x3x4-V9"])
def test_probability_target_with_ignore_index_raises_like_torch(shape_name, ignore_index):
    shape, v = SHAPES[shape_name]
    g = _gen("prob-ii", shape_name, ignore_index)
    x, w, _ = _linear_problem(shape, v, g, False)
    t = _prob_target(shape[:-1], v, g)
    if len(shape) <= 2:  # torch takes (H,) / (N, H) only
        with pytest.raises(RuntimeError, match="ignore_index") as torch_err:
            F.linear_cross_entropy(x, w, t, ignore_index=ignore_index)
        expected = type(torch_err.value)
    else:
        expected = RuntimeError
    with pytest.raises(losskit.LossError, match="ignore_index") as err:
        LF.linear_cross_entropy(x, w, t, ignore_index=ignore_index)
    assert isinstance(err.value, expected)


def test_probability_target_result_dtype_promotes_like_torch():
    """float32 input with float64 probabilities: torch's cross_entropy promotes the loss to float64."""
    g = _gen("prob-promote")
    x, w, b = _linear_problem((5, 3), 4, g, True)
    t = _prob_target((5,), 4, g)
    ref = F.linear_cross_entropy(x.float(), w.float(), t, linear_bias=b.float())
    ours = LF.linear_cross_entropy(x.float(), w.float(), t, linear_bias=b.float())
    assert ours.dtype == ref.dtype == torch.float64
    assert_close_to(ours, ref, torch.float32)


def test_probability_target_gradient_like_torch():
    """torch differentiates the reference path with respect to probability targets too."""
    g = _gen("prob-target-grad")
    x, w, b = _linear_problem((6, 4), 5, g, True)
    inputs = {"input": x, "linear_weight": w, "target": _prob_target((6,), 5, g), "linear_bias": b}
    for reduction in REDUCTIONS:
        assert_matches_torch(
            _ours(2),
            torch_linear_ce,
            inputs,
            {"reduction": reduction, "label_smoothing": 0.1},
            grad_wrt=("input", "linear_weight", "target"),
        )


# ============================================================================== 2. z_loss and softcap


def _extras_truth(x, w, b, target, weight, reduction, ignore_index, eps, z, cap):
    """float64 math: CE on ``cap·tanh(logits/cap)`` plus ``z·lse²`` per kept row; 'mean' divides by the
    CE's denominator (Σ w_y over kept rows, or the number of rows for probabilities)."""
    v, h_features = w.shape
    lead = x.shape[:-1]
    logits = x.reshape(-1, h_features) @ w.T
    if b is not None:
        logits = logits + b
    if cap is not None:
        logits = cap * torch.tanh(logits / cap)
    lp = torch.log_softmax(logits, 1)
    lse = torch.logsumexp(logits, 1)
    cw = torch.ones(v, dtype=x.dtype) if weight is None else weight
    if target.is_floating_point():
        t = target.reshape(-1, v) * (1 - eps) + eps / v
        rows = -(t * cw * lp).sum(1) + z * lse**2
        denom = rows.new_tensor(float(rows.shape[0]))
    else:
        y = target.reshape(-1)
        kept = y != ignore_index
        ys = torch.where(kept, y, torch.zeros_like(y))
        wy = torch.where(kept, cw[ys], torch.zeros((), dtype=x.dtype))
        nll = -lp.gather(1, ys.unsqueeze(1)).squeeze(1) * wy
        smooth = -(lp * cw).sum(1)
        rows = (1 - eps) * nll + eps / v * smooth + z * lse**2
        rows = torch.where(kept, rows, torch.zeros((), dtype=x.dtype))
        denom = wy.sum()
    if reduction == "none":
        return rows.reshape(lead)
    return rows.sum() if reduction == "sum" else rows.sum() / denom


EXTRAS = [(0.05, None), (0.0, 1.5), (0.02, 2.0), (1e-4, 30.0)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("shape_name", ["7x5-V11", "lead-2x3x4-V9", "unbatched-H4-V7"])
def test_z_loss_and_softcap_match_float64_math(shape_name, target_kind, reduction):
    shape, v = SHAPES[shape_name]
    lead = shape[:-1]

    def check(case):
        (z, cap), weighted, smoothing, bias, chunk = case
        g = _gen("extras", shape_name, target_kind, reduction, case)
        x, w, b = _linear_problem(shape, v, g, bias)
        x = x * 2  # logits large enough for the softcap to bite
        cw = _class_weight(v, g) if weighted else None
        if target_kind == "prob":
            target, ii = _prob_target(lead, v, g), -100
        else:
            ii = 2
            target = _class_target(lead, v, g, ii)
        leaves = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
        xo, wo, bo = leaves[0], leaves[1], leaves[2] if bias else None
        kw = {"weight": cw, "reduction": reduction, "label_smoothing": smoothing}
        if target_kind == "index":
            kw["ignore_index"] = ii
        ours = LF.linear_cross_entropy(xo, wo, target, linear_bias=bo, z_loss=z, softcap=cap, chunk_size=chunk, **kw)
        tl = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
        truth = _extras_truth(tl[0], tl[1], tl[2] if bias else None, target, cw, reduction, ii, smoothing, z, cap)
        assert_close_to(ours, truth, torch.float64, "value")
        gout = cotangent(truth, seed=3)
        for name, a, t in zip(("input", "linear_weight", "linear_bias"), leaves, tl, strict=False):
            (ga,) = torch.autograd.grad(ours, a, gout, retain_graph=True)
            (gt,) = torch.autograd.grad(truth, t, gout, retain_graph=True)
            assert_close_to(ga, gt, torch.float64, f"grad wrt '{name}'")

    cases = [
        (extra, weighted, ls, bias, chunk)
        for extra in EXTRAS
        for weighted in (False, True)
        for ls in (0.0, 0.1)
        for bias in (False, True)
        for chunk in (None, 2)
    ]
    assert _run_cases(cases, check) == 64


def test_extras_off_are_torch_and_on_change_the_value():
    """z_loss=0/softcap=None is torch's value; each extra alone moves it (the tests above are not vacuous)."""
    g = _gen("extras-nonvacuous")
    x, w, b = _linear_problem((9, 6), 8, g, True)
    y = _class_target((9,), 8, g, None)
    base = F.linear_cross_entropy(x * 2, w, y, linear_bias=b)
    assert_close_to(LF.linear_cross_entropy(x * 2, w, y, linear_bias=b, z_loss=0.0, softcap=None), base, torch.float64)
    for extra in ({"z_loss": 0.05}, {"softcap": 1.5}):
        assert abs(float(LF.linear_cross_entropy(x * 2, w, y, linear_bias=b, **extra)) - float(base)) > 1e-3


# ============================================================= 3. torch's own F.linear_cross_entropy


TORCH_DIRECT = [
    {},  # every default, including ignore_index=None (-> -100 for class indices)
    {"reduction": "none"},
    {"reduction": "sum", "weight": True},
    {"reduction": "mean", "weight": True, "bias": True},
    {"ignore_index": 4, "label_smoothing": 0.2, "weight": True},
    {"ignore_index": None, "label_smoothing": 0.3, "reduction": "sum", "bias": True},
    {"label_smoothing": 1.0, "reduction": "none", "bias": True, "weight": True},
]


# ignore_index given with probabilities is an error (tested above), so those pairs are left out
DIRECT_CASES = [
    (kind, i)
    for kind in ("index", "prob")
    for i, spec in enumerate(TORCH_DIRECT)
    if kind == "index" or spec.get("ignore_index") is None
]


@pytest.mark.parametrize("shape", [(9, 6), (6,), (0, 6)], ids=["9x6", "unbatched", "empty"])
@pytest.mark.parametrize(("target_kind", "case"), DIRECT_CASES, ids=[f"{k}-{i}" for k, i in DIRECT_CASES])
def test_equals_torch_linear_cross_entropy_reference(target_kind, case, shape):
    spec = dict(TORCH_DIRECT[case])
    v = 10
    g = _gen("direct", target_kind, shape, case)
    x, w, b = _linear_problem(shape, v, g, spec.pop("bias", False))
    lead = shape[:-1]
    if target_kind == "prob":
        target = _prob_target(lead, v, g)
    else:
        # -100 targets: ignored by default (ignore_index=None), out of range if ignore_index=4 is given
        target = _class_target(lead, v, g, 4 if spec.get("ignore_index") == 4 else -100)
    inputs = {"input": x, "linear_weight": w, "target": target, "linear_bias": b}
    if spec.pop("weight", False):
        inputs["weight"] = _class_weight(v, g)
    assert_matches_torch(
        LF.linear_cross_entropy,
        F.linear_cross_entropy,
        inputs,
        spec,
        grad_wrt=("input", "linear_weight", "linear_bias"),
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(9, 6), (6,)], ids=["9x6", "unbatched"])
def test_equals_torch_chunked_path(shape, reduction):
    """Where torch's chunked path applies (int64 classes, no smoothing): same values and gradients, with
    torch's options object passed to both (losskit takes its batch_chunk_size)."""
    v = 10
    for chunk in (None, 2):
        g = _gen("chunked", shape, reduction, chunk)
        x, w, b = _linear_problem(shape, v, g, True)
        inputs = {
            "input": x,
            "linear_weight": w,
            "target": _class_target(shape[:-1], v, g, -100),
            "linear_bias": b,
            "weight": _class_weight(v, g),
        }
        for dtype in (torch.float64, torch.float32):
            assert_matches_torch(
                LF.linear_cross_entropy,
                F.linear_cross_entropy,
                inputs,
                {"reduction": reduction, "options": torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk)},
                dtype=dtype,
                grad_wrt=("input", "linear_weight", "linear_bias"),
            )


def test_ignore_index_none_default_is_minus_100_for_class_indices():
    g = _gen("ii-default")
    x, w, _ = _linear_problem((8, 5), 7, g, False)
    y = _class_target((8,), 7, g, -100)
    ours = LF.linear_cross_entropy(x, w, y, reduction="none")
    ref = F.linear_cross_entropy(x, w, y, reduction="none")
    assert_close_to(ours, ref, torch.float64)
    assert bool((ours[1::3] == 0).all()) and bool((ours[0::3] > 0).all())
    assert_close_to(LF.linear_cross_entropy(x, w, y, ignore_index=None), F.linear_cross_entropy(x, w, y), torch.float64)


# ============================================================================== 4. fp16 / bf16


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_error_no_worse_than_torch(dtype, reduction):
    """N=64, H=32, V=3000: the loss and every gradient are no further from the float64 truth than torch's
    reference path run in the low dtype (plus one-ulp slack); gradients keep the input dtypes."""
    n, h_features, v = 64, 32, 3000
    # torch's fp16 reference overflows to inf when it sums the smoothing term over 3000 classes and 64
    # rows ('mean'/'sum'); that case has its own test below
    smooth = 0.0 if dtype == torch.float16 and reduction != "none" else 0.1
    for chunk, smoothing, weighted in ((None, 0.0, False), (5, smooth, True)):
        g = _gen("low", dtype, reduction, chunk)
        x, w, b = _linear_problem((n, h_features), v, g, True)
        inputs = {
            "input": x,
            "linear_weight": w,
            "target": _class_target((n,), v, g, -100),
            "linear_bias": b,
        }
        if weighted:
            inputs["weight"] = _class_weight(v, g)
        assert_matches_torch(
            _ours(chunk),
            F.linear_cross_entropy,
            inputs,
            {"reduction": reduction, "label_smoothing": smoothing},
            dtype=dtype,
            grad_wrt=("input", "linear_weight", "linear_bias"),
        )


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fp16_label_smoothing_over_large_vocabulary_stays_finite(reduction):
    """Where torch's fp16 reference overflows (the smoothing sum of 64 rows x 3000 classes is inf), ours
    is finite and within fp16 rounding of the float64 truth; its gradients are no worse than torch's."""
    n, h_features, v = 64, 32, 3000
    g = _gen("fp16-overflow", reduction)
    x, w, b = _linear_problem((n, h_features), v, g, True)
    x, w, b = x.half(), w.half(), b.half()
    y = _class_target((n,), v, g, -100)
    kw = {"reduction": reduction, "label_smoothing": 0.1}
    runs = {}
    for name, fn, dtype in (
        ("ours", LF.linear_cross_entropy, torch.float16),
        ("torch", F.linear_cross_entropy, torch.float16),
        ("truth", F.linear_cross_entropy, torch.float64),
    ):
        leaves = [t.to(dtype).requires_grad_() for t in (x, w, b)]
        loss = fn(leaves[0], leaves[1], y, linear_bias=leaves[2], **kw)
        runs[name] = (loss.detach(), torch.autograd.grad(loss, leaves, torch.tensor(1.75, dtype=dtype)))
    assert torch.isinf(runs["torch"][0]), "torch's fp16 reference no longer overflows here: revisit this test"
    ours, truth = runs["ours"][0], runs["truth"][0]
    assert ours.dtype == torch.float16 and bool(torch.isfinite(ours))
    assert abs(float(ours) - float(truth)) <= 1e-3 + 1e-3 * abs(float(truth)), (float(ours), float(truth))
    for name, og, rg, tg in zip(("input", "linear_weight", "linear_bias"), *(runs[k][1] for k in runs), strict=True):
        assert og.dtype == torch.float16
        assert_error_no_worse(og, rg, tg, torch.float16, f"grad wrt '{name}'")


def test_bf16_weight_gradient_accumulates_in_fp32():
    """One row per chunk, 256 rows: a bf16 running sum of the weight gradient would lose many ulps; ours
    stays as close to the float64 truth as torch's reference (whose single matmul accumulates in fp32)."""
    n, h_features, v = 256, 16, 64
    g = _gen("bf16-acc")
    x, w, _ = _linear_problem((n, h_features), v, g, False)
    y = torch.randint(0, v, (n,), generator=g)
    xb, wb = x.bfloat16(), w.bfloat16().requires_grad_()
    LF.linear_cross_entropy(xb, wb, y, reduction="sum", chunk_size=1).backward()
    wr = w.bfloat16().requires_grad_()
    F.linear_cross_entropy(xb, wr, y, reduction="sum").backward()
    wt = wb.detach().double().requires_grad_()
    F.linear_cross_entropy(xb.double(), wt, y, reduction="sum").backward()
    assert wb.grad.dtype == torch.bfloat16
    err_ours = (wb.grad.double() - wt.grad).abs().max()
    err_torch = (wr.grad.double() - wt.grad).abs().max()
    assert err_ours <= err_torch + 8e-3 * wt.grad.abs().max(), (float(err_ours), float(err_torch))


# ============================================================================== 5. K-dimensional weight


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("out_features", [(3,), (2, 3)], ids=["d3", "d2x3"])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_k_dimensional_linear_weight_equals_torch(target_kind, out_features, reduction):
    n, h_features, v = 5, 4, 6
    for bias in (False, True):
        g = _gen("kdim", target_kind, out_features, reduction, bias)
        x = torch.randn(n, h_features, generator=g, dtype=torch.float64)
        w = torch.randn(v, *out_features, h_features, generator=g, dtype=torch.float64)
        b = torch.randn(v, *out_features, generator=g, dtype=torch.float64) if bias else None
        if target_kind == "prob":
            target = torch.softmax(torch.randn(n, v, *out_features, generator=g, dtype=torch.float64), 1)
            kwargs = {"reduction": reduction, "label_smoothing": 0.1}
        else:
            target = torch.randint(0, v, (n, *out_features), generator=g)
            target.view(-1)[::4] = 1
            kwargs = {"reduction": reduction, "ignore_index": 1, "label_smoothing": 0.1}
        inputs = {"input": x, "linear_weight": w, "target": target, "linear_bias": b, "weight": _class_weight(v, g)}
        assert_matches_torch(
            LF.linear_cross_entropy,
            F.linear_cross_entropy,
            inputs,
            kwargs,
            grad_wrt=("input", "linear_weight", "linear_bias"),
        )


def test_k_dimensional_probabilities_with_ignore_index_raise_like_torch():
    g = _gen("kdim-prob-ii")
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    w = torch.randn(6, 3, 4, generator=g, dtype=torch.float64)
    t = torch.softmax(torch.randn(5, 6, 3, generator=g, dtype=torch.float64), 1)
    for ignore_index in (0, -100):
        with pytest.raises(RuntimeError, match="ignore_index"):
            F.linear_cross_entropy(x, w, t, ignore_index=ignore_index)
        with pytest.raises(losskit.LossError, match="ignore_index"):
            LF.linear_cross_entropy(x, w, t, ignore_index=ignore_index)


def test_k_dimensional_unbatched_input_raises_like_torch():
    x = torch.randn(4, dtype=torch.float64)
    w = torch.randn(6, 3, 4, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    with pytest.raises(RuntimeError) as torch_err:
        F.linear_cross_entropy(x, w, y)
    with pytest.raises(losskit.LossError, match="linear_weight") as err:
        LF.linear_cross_entropy(x, w, y)
    assert isinstance(err.value, type(torch_err.value))
