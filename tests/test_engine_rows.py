"""Tests of the fused cross-entropy row engine (``losskit.engine.rows``, issue 3): behaviour beyond the
torch-compatible option grid.

``tests/test_cross_entropy.py`` holds the torch-oracle grid for torch's own options; this file and
``tests/test_engine_rows_inplace.py`` (``inplace=True`` and memory) cover what the engine adds or could get
wrong by being fused and chunked:

1. chunking (``CHUNK_ELEMENTS`` patched tiny: many chunks, a ragged last one) against torch in float64;
2. the extras ``z_loss`` and ``softcap`` against plain float64 math written here (values, gradients,
   gradcheck, argument checks);
5. backward scaling by ``grad_output``, repeated backward (the recompute path);
6. higher-order gradients: an error, never wrong numbers;
7. determinism; 8. fp16/bf16 accuracy against torch's own error; 9. int64 indexing (slow, opt-in).

Oracles are ``torch.nn.functional`` and float64 math, never losskit itself.
"""

from __future__ import annotations

import math
import os
import time

import pytest
import torch
import torch.nn.functional as F

import losskit
import losskit.engine.rows as engine
import losskit.functional as LF
from helpers import (
    assert_close_to,
    assert_matches_torch,
    cotangent,
    oracle_cross_entropy,
)
from helpers import ce_problem as _problem
from helpers import leaf as _leaf
from helpers import num_classes as _num_classes
from helpers import seeded as _gen
from helpers import target_shape as _target_shape

REDUCTIONS = ("none", "mean", "sum")


def _class_dim(shape: tuple[int, ...]) -> int:
    return 0 if len(shape) == 1 else 1


def _num_rows(shape: tuple[int, ...]) -> int:
    return math.prod(shape) // _num_classes(shape)


# ===================================================================================== 1. chunking

CHUNKS = (1, 7, 64)
# 51 rows: with 7 or 64 elements per chunk the last chunk is ragged (C=3: 2 / 21 rows a chunk; C=5: 1 / 12)
CHUNK_SHAPES = {"51x3": (51, 3), "51x5": (51, 5), "K_3x5x17": (3, 5, 17), "K2_3x3x4x4": (3, 3, 4, 4)}
CLASS_OPTIONS = ("plain", "w", "ii", "ls", "w+ii+ls")
PROB_OPTIONS = ("plain", "w", "ls", "w+ls")
CHUNK_CASES = [("index", o) for o in CLASS_OPTIONS] + [("prob", o) for o in PROB_OPTIONS]


@pytest.mark.parametrize("chunk", CHUNKS, ids=[f"chunk{c}" for c in CHUNKS])
@pytest.mark.parametrize("shape", list(CHUNK_SHAPES.values()), ids=list(CHUNK_SHAPES))
@pytest.mark.parametrize("case", CHUNK_CASES, ids=[f"{k}-{o}" for k, o in CHUNK_CASES])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_tiny_chunks_match_torch(monkeypatch, reduction, case, shape, chunk):
    target_kind, options = case
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", chunk)
    rows, c = _num_rows(shape), _num_classes(shape)
    per_chunk = engine.rows_per_chunk(c)
    assert per_chunk < rows, "the case must walk several chunks"
    if per_chunk > 1 and shape[0] == 51:
        assert rows % per_chunk != 0, "the case must have a ragged last chunk"
    inputs, kwargs = _problem(shape, target_kind, options, _gen("chunks", reduction, case, shape))
    kwargs["reduction"] = reduction
    ours, _ = assert_matches_torch(LF.cross_entropy, F.cross_entropy, inputs, kwargs, grad_wrt=("input",))
    assert ours.shape == (_target_shape(shape) if reduction == "none" else ())


@pytest.mark.parametrize("chunk", CHUNKS, ids=[f"chunk{c}" for c in CHUNKS])
def test_tiny_chunks_float32_and_bf16(monkeypatch, chunk):
    """The non-direct path (bf16: a chunk buffer copied into the gradient) and the direct one (fp32)."""
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", chunk)
    for dtype in (torch.float32, torch.bfloat16):
        inputs, kwargs = _problem((37, 6), "index", "w+ii+ls", _gen("chunks-low", chunk))
        for reduction in REDUCTIONS:
            assert_matches_torch(
                LF.cross_entropy, F.cross_entropy, inputs, {**kwargs, "reduction": reduction}, dtype=dtype
            )


# ===================================================================================== 2. z_loss / softcap


@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("options", ["plain", "w", "w+ls"])
@pytest.mark.parametrize("shape", [(9, 5), (5,), (2, 4, 3)], ids=["9x5", "C5", "K_2x4x3"])
def test_oracle_without_extras_is_torch(options, target_kind, shape):
    """The oracle itself: with z_loss=0 and no softcap it is torch's cross entropy (mean denominators)."""
    inputs, kwargs = _problem(shape, target_kind, options, _gen("oracle", options, target_kind, shape))
    if target_kind == "index" and len(shape) > 1:
        kwargs["ignore_index"] = 1
        inputs["target"].view(-1)[::4] = 1
    for reduction in REDUCTIONS:
        ref = F.cross_entropy(**inputs, **kwargs, reduction=reduction)
        got = oracle_cross_entropy(**inputs, **kwargs, reduction=reduction)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


EXTRAS = {
    "z": {"z_loss": 0.3},
    "z_small": {"z_loss": 1e-4},
    "cap": {"softcap": 2.0},
    "cap30": {"softcap": 30.0},
    "z+cap": {"z_loss": 0.3, "softcap": 2.0},
}
EXTRA_SHAPES = {"9x5": (9, 5), "C5": (5,), "K_2x4x3": (2, 4, 3), "1x1": (1, 1)}
EXTRA_CASES = [("index", o) for o in ("plain", "w", "ii", "ls", "w+ii+ls")] + [("prob", o) for o in ("plain", "w+ls")]


# an unbatched class target is one index: ignoring it is covered by the batched shapes
EXTRA_GRID = [
    (case, shape_id)
    for case in EXTRA_CASES
    for shape_id, shape in EXTRA_SHAPES.items()
    if not (len(shape) == 1 and "ii" in case[1])
]


@pytest.mark.parametrize("extras", list(EXTRAS.values()), ids=list(EXTRAS))
@pytest.mark.parametrize(("case", "shape_id"), EXTRA_GRID, ids=[f"{k}-{o}-{sid}" for (k, o), sid in EXTRA_GRID])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_z_loss_and_softcap_match_float64_math(reduction, case, shape_id, extras):
    target_kind, options = case
    shape = EXTRA_SHAPES[shape_id]
    inputs, kwargs = _problem(shape, target_kind, options, _gen("extras", reduction, case, shape, extras))
    kwargs.update(extras, reduction=reduction)
    ours, ref = assert_matches_torch(LF.cross_entropy, oracle_cross_entropy, inputs, kwargs)
    if "z_loss" in extras and extras["z_loss"] >= 0.1 and reduction != "none" and _num_classes(shape) > 1:
        # not vacuous: the extra term changes the loss
        plain = F.cross_entropy(**inputs, **{k: v for k, v in kwargs.items() if k not in EXTRAS["z+cap"]})
        assert not torch.allclose(ours, plain, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("chunk", [1, 7])
@pytest.mark.parametrize("case", ["index-w+ii+ls", "prob-w+ls"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_z_loss_and_softcap_in_tiny_chunks(monkeypatch, reduction, case, chunk):
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", chunk)
    target_kind, options = case.split("-")
    inputs, kwargs = _problem((23, 4), target_kind, options, _gen("extras-chunks", reduction, case))
    kwargs.update(z_loss=0.05, softcap=1.5, reduction=reduction)
    assert_matches_torch(LF.cross_entropy, oracle_cross_entropy, inputs, kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_z_loss_and_softcap_low_precision(reduction, dtype):
    """Against the oracle run in the same dtype (error no worse than it) / in float64 (fp32)."""
    inputs, kwargs = _problem((16, 50), "index", "w+ii+ls", _gen("extras-low", reduction))
    kwargs.update(z_loss=0.01, softcap=5.0, reduction=reduction)
    assert_matches_torch(LF.cross_entropy, oracle_cross_entropy, inputs, kwargs, dtype=dtype)


def test_z_loss_closed_form():
    """x = [0, ln 3]: lse = ln 4; target 1: CE = ln 4 - ln 3; z_loss adds z·(ln 4)²; gradient by hand."""
    x = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1])
    loss = LF.cross_entropy(x, y, z_loss=0.5)
    assert loss.item() == pytest.approx(math.log(4 / 3) + 0.5 * math.log(4) ** 2, rel=1e-14)
    loss.backward()
    p = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    # d/dx [lse - x_y + z·lse²] = p - onehot + 2·z·lse·p
    expected = p - torch.tensor([[0.0, 1.0]], dtype=torch.float64) + 2 * 0.5 * math.log(4) * p
    torch.testing.assert_close(x.grad, expected, rtol=1e-14, atol=1e-14)


def test_softcap_closed_form():
    """softcap s: logits s·tanh(x/s); the gradient gets the factor 1 - tanh²(x/s)."""
    s = 2.0
    xv = [0.5, -1.0, 3.0]
    x = torch.tensor([xv], dtype=torch.float64, requires_grad=True)
    loss = LF.cross_entropy(x, torch.tensor([2]), softcap=s)
    capped = [s * math.tanh(v / s) for v in xv]
    lse = math.log(sum(math.exp(v) for v in capped))
    assert loss.item() == pytest.approx(lse - capped[2], rel=1e-14)
    loss.backward()
    p = [math.exp(v - lse) for v in capped]
    expected = [(p[i] - (i == 2)) * (1 - math.tanh(xv[i] / s) ** 2) for i in range(3)]
    torch.testing.assert_close(x.grad, torch.tensor([expected], dtype=torch.float64), rtol=1e-13, atol=1e-14)


def test_z_loss_excludes_ignored_rows():
    """An ignored row contributes neither CE nor z-loss, and gets a zero gradient."""
    x = torch.randn(4, 6, generator=_gen("z-ignored"), dtype=torch.float64).mul_(4).requires_grad_()
    y = torch.tensor([1, -100, 3, -100])
    loss = LF.cross_entropy(x, y, z_loss=0.7, reduction="none")
    assert loss[1].item() == 0.0 and loss[3].item() == 0.0
    kept = F.cross_entropy(x[[0, 2]], y[[0, 2]], reduction="none") + 0.7 * torch.logsumexp(x[[0, 2]], 1) ** 2
    torch.testing.assert_close(loss[[0, 2]], kept, rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(LF.cross_entropy(x, y, z_loss=0.7), x)
    assert torch.equal(g[[1, 3]], torch.zeros(2, 6, dtype=torch.float64))
    assert bool(g[[0, 2]].abs().sum() > 0)


GRADCHECK_CASES = {
    "z": ("index", "plain", {"z_loss": 0.3}),
    "cap": ("index", "plain", {"softcap": 1.5}),
    "z+cap-w+ii+ls": ("index", "w+ii+ls", {"z_loss": 0.2, "softcap": 2.5}),
    "prob-z+cap-w+ls": ("prob", "w+ls", {"z_loss": 0.2, "softcap": 2.5}),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES.values()), ids=list(GRADCHECK_CASES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_z_loss_and_softcap(reduction, case):
    target_kind, options, extras = case
    inputs, kwargs = _problem((5, 4), target_kind, options, _gen("gradcheck-extras", reduction, case[1]))
    x = _leaf(inputs.pop("input"))

    def fn(x):
        return LF.cross_entropy(x, **inputs, **kwargs, **extras, reduction=reduction)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("bad", [-1e-3, -1.0, float("nan"), -float("inf")], ids=str)
def test_bad_z_loss_raises(bad):
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(losskit.LossValueError, match="z_loss"):
        LF.cross_entropy(x, y, z_loss=bad)
    with pytest.raises(ValueError):
        LF.cross_entropy(x, y, z_loss=bad)


@pytest.mark.parametrize("bad", [0.0, -0.0, -1.0, float("nan"), -float("inf")], ids=str)
def test_bad_softcap_raises(bad):
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(losskit.LossValueError, match="softcap"):
        LF.cross_entropy(x, y, softcap=bad)
    with pytest.raises(ValueError):
        LF.cross_entropy(x, y, softcap=bad)


def test_infinite_softcap_is_rejected_or_no_cap():
    """softcap=inf is accepted as 'positive'; it must then mean no capping (the limit), not NaN."""
    x = torch.randn(3, 4, generator=_gen("inf-cap"), dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    try:
        got = LF.cross_entropy(x, y, softcap=float("inf"))
    except losskit.LossValueError:
        return
    torch.testing.assert_close(got, F.cross_entropy(x, y), rtol=1e-12, atol=1e-12)


# ===================================================================================== 5. backward scaling

SCALING_CASES = {
    "index-w+ii+ls": ("index", "w+ii+ls"),
    "prob-w+ls": ("prob", "w+ls"),
    "index-plain": ("index", "plain"),
}


@pytest.mark.parametrize("case", list(SCALING_CASES.values()), ids=list(SCALING_CASES))
@pytest.mark.parametrize("shape", [(13, 6), (2, 6, 3)], ids=["13x6", "K_2x6x3"])
def test_reduction_none_scales_each_row_exactly(case, shape):
    inputs, kwargs = _problem(shape, *case, _gen("scale-none", case, shape))
    x = inputs.pop("input")
    grad_out = torch.randn(_target_shape(shape), generator=_gen("go", shape), dtype=torch.float64)
    grad_out.view(-1)[0] = 0.0
    grad_out.view(-1)[1] = -3.0
    ours, ref = (
        torch.autograd.grad(fn(xl, **inputs, **kwargs, reduction="none"), xl, grad_outputs=grad_out)[0]
        for fn, xl in ((LF.cross_entropy, _leaf(x)), (F.cross_entropy, _leaf(x)))
    )
    assert_close_to(ours, ref, torch.float64, "grad")
    assert torch.equal(ours.movedim(1, -1).reshape(-1, shape[1])[0], torch.zeros(shape[1], dtype=torch.float64))


@pytest.mark.parametrize("grad_output", [1.0, 0.5, 0.0, -3.0], ids=str)
@pytest.mark.parametrize("case", list(SCALING_CASES.values()), ids=list(SCALING_CASES))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_scalar_reductions_scale_by_grad_output(reduction, case, grad_output):
    inputs, kwargs = _problem((9, 5), *case, _gen("scale-scalar", case, reduction))
    x = inputs.pop("input")
    go = torch.tensor(grad_output, dtype=torch.float64)
    grads = []
    for fn in (LF.cross_entropy, F.cross_entropy):
        xl = _leaf(x)
        grads.append(torch.autograd.grad(fn(xl, **inputs, **kwargs, reduction=reduction), xl, grad_outputs=go)[0])
    assert_close_to(grads[0], grads[1], torch.float64, "grad")
    if grad_output == 0.0:
        assert not bool(grads[0].any())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_repeated_backward_recomputes_the_same_gradient(reduction, dtype):
    """retain_graph=True: the first backward hands the forward's buffer over, later ones recompute it."""
    inputs, kwargs = _problem((12, 7), "index", "w+ii+ls", _gen("repeat", reduction))
    inputs = {k: (v.to(dtype) if v is not None and v.is_floating_point() else v) for k, v in inputs.items()}
    x = _leaf(inputs.pop("input"))
    loss = LF.cross_entropy(x, **inputs, **kwargs, reduction=reduction, z_loss=0.01)
    go = cotangent(loss, seed=7)
    grads = [torch.autograd.grad(loss, x, grad_outputs=go, retain_graph=True)[0] for _ in range(3)]
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[1], grads[2])
    # and the accumulated .grad after two backward calls is twice the gradient
    loss.backward(go, retain_graph=True)
    loss.backward(go)
    assert_close_to(x.grad, 2 * grads[0], dtype, "accumulated grad")
    if dtype == torch.float64:
        xr = _leaf(x)
        ref = oracle_cross_entropy(xr, **inputs, **kwargs, reduction=reduction, z_loss=0.01)
        assert_close_to(grads[0], torch.autograd.grad(ref, xr, grad_outputs=go)[0], dtype, "grad")


@pytest.mark.parametrize("case", ["index-w+ii+ls", "prob-w+ls"])
def test_gradcheck_reduction_none(case):
    """gradcheck backprops through one graph many times: the recompute path with per-row scaling."""
    inputs, kwargs = _problem((4, 5), *case.split("-"), _gen("gradcheck-none", case))
    x = _leaf(inputs.pop("input"))
    assert torch.autograd.gradcheck(lambda x: LF.cross_entropy(x, **inputs, **kwargs, reduction="none"), (x,))


# ===================================================================================== 6. higher order


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_second_order_gradient_raises(target_kind, reduction):
    inputs, kwargs = _problem((4, 5), target_kind, "plain", _gen("second-order", target_kind))
    x = _leaf(inputs.pop("input"))
    loss = LF.cross_entropy(x, **inputs, **kwargs, reduction=reduction)
    with pytest.raises(RuntimeError):
        (g,) = torch.autograd.grad(loss.sum(), x, create_graph=True)
        torch.autograd.grad(g.sum(), x)


@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_gradient_penalty_raises_or_matches_torch(target_kind):
    """A gradient penalty ``loss + ||∂loss/∂x||²`` differentiated again: an error, or torch's numbers.

    Treating the create_graph gradient as a constant would silently drop the penalty's gradient.
    """
    inputs, kwargs = _problem((4, 5), target_kind, "plain", _gen("penalty", target_kind))
    results = []
    for fn in (F.cross_entropy, LF.cross_entropy):
        x = _leaf(inputs["input"])
        try:
            loss = fn(x, inputs["target"])
            (g,) = torch.autograd.grad(loss, x, create_graph=True)
            total = loss + (g * g).sum()
            results.append(torch.autograd.grad(total, x)[0])
        except RuntimeError:
            assert fn is LF.cross_entropy, "torch itself must support double backward"
            return
    assert_close_to(results[1], results[0], torch.float64, "gradient of loss + gradient penalty")


# ===================================================================================== 7. determinism

DET_CASES = {
    "index-plain": ("index", "plain", {}),
    "index-w+ii+ls": ("index", "w+ii+ls", {}),
    "prob-w+ls": ("prob", "w+ls", {}),
    "index-z+cap": ("index", "w+ii+ls", {"z_loss": 1e-3, "softcap": 10.0}),
}


@pytest.mark.parametrize("case", list(DET_CASES.values()), ids=list(DET_CASES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_bitwise_deterministic(dtype, reduction, case):
    target_kind, options, extras = case
    # 300 rows of 1000 classes: two chunks of the default size
    inputs, kwargs = _problem((300, 1000), target_kind, options, _gen("det", reduction, case[1]))
    inputs = {k: (v.to(dtype) if v is not None and v.is_floating_point() else v) for k, v in inputs.items()}
    x = inputs.pop("input")
    runs = []
    for _ in range(2):
        xl = _leaf(x)
        loss = LF.cross_entropy(xl, **inputs, **kwargs, **extras, reduction=reduction)
        loss.backward(cotangent(loss, seed=1))
        runs.append((loss.detach(), xl.grad))
    assert torch.equal(runs[0][0], runs[1][0]), "loss differs between two identical calls"
    assert torch.equal(runs[0][1], runs[1][1]), "gradient differs between two identical calls"
    assert bool(runs[0][1].abs().sum() > 0)


# ===================================================================================== 8. fp16 / bf16 accuracy


@pytest.mark.parametrize("options", ["plain", "w+ii+ls"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_low_precision_error_no_worse_than_torch(dtype, reduction, options):
    """N=64, C=5000, logits randn·3: loss error vs float64 truth <= torch's own + 1e-6 relative; gradient
    in the input's dtype, max error <= torch's + one unit of the dtype's epsilon times max |gradient|."""
    n, c = 64, 5000
    g = _gen("low", dtype, reduction, options)
    inputs, kwargs = _problem((n, c), "index", options, g)
    low = {k: (v.to(dtype) if v is not None and v.is_floating_point() else v) for k, v in inputs.items()}
    truth_in = {k: (v.double() if v is not None and v.is_floating_point() else v) for k, v in low.items()}
    go64 = torch.randn(n, generator=g, dtype=torch.float64) if reduction == "none" else torch.tensor(1.0)
    go64 = go64.to(dtype).double()  # the same cotangent, representable in the low dtype

    def run(fn, inp, go):
        x = _leaf(inp["input"])
        loss = fn(x, **{k: v for k, v in inp.items() if k != "input"}, **kwargs, reduction=reduction)
        (gx,) = torch.autograd.grad(loss, x, grad_outputs=go.to(loss.dtype))
        return loss.detach(), gx

    ours, ours_g = run(LF.cross_entropy, low, go64)
    ref, ref_g = run(F.cross_entropy, low, go64)
    truth, truth_g = run(F.cross_entropy, truth_in, go64)
    assert ours.dtype == dtype and ours_g.dtype == dtype
    err_ours = (ours.double() - truth).abs()
    err_ref = (ref.double() - truth).abs()
    bad = err_ours > err_ref + 1e-6 * truth.abs()
    assert not bool(bad.any()), f"loss error {err_ours[bad]} > torch's {err_ref[bad]}"
    eps = torch.finfo(dtype).eps
    gerr_ours = float((ours_g.double() - truth_g).abs().max())
    gerr_ref = float((ref_g.double() - truth_g).abs().max())
    assert gerr_ours <= gerr_ref + eps * float(truth_g.abs().max()), (gerr_ours, gerr_ref)


# ===================================================================================== 9. int64 indexing


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("LOSSKIT_SLOW") != "1",
    reason="builds a 4.3 GB bf16 tensor of > 2**31 elements and takes minutes: set LOSSKIT_SLOW=1 to run",
)
def test_int64_indexing_bf16_more_than_2_31_elements():
    """(2**16 + 3) x 32768 bf16 logits: every row loss (rows past flat offset 2**31 included) equals float64
    math on that row, without grad; then, with grad and inplace=True, gradient rows past 2**31 are right."""
    n, c = 2**16 + 3, 32768
    assert n * c > 2**31 and (n - 1) * c > 2**31
    g = torch.Generator().manual_seed(2**31)
    start = time.perf_counter()
    x = torch.empty(n, c, dtype=torch.bfloat16)
    step = 2048
    for s in range(0, n, step):
        x[s : s + step] = torch.randn(min(step, n - s), c, generator=g).mul_(3)
    y = torch.randint(0, c, (n,), generator=g)
    x[-1, y[-1]] = 30.0  # the last row is distinctive: a small loss only if its own target is read
    check_rows = [0, 1, 2**15, 2**16 - 1, 2**16, 2**16 + 1, n - 1]

    def truth_rows(rows):
        return F.cross_entropy(x[rows].double(), y[rows], reduction="none")

    expected = truth_rows(check_rows)
    with torch.no_grad():
        loss = LF.cross_entropy(x, y, reduction="none")
    assert loss.shape == (n,) and loss.dtype == torch.bfloat16
    # the engine's fp32 result is rounded once to bf16 (half a unit: |t|·2**-8); fp32 itself loses about
    # 1e-5 in x_y - lse for logits near 30 (the last row), as torch's fp32 math would
    half_ulp, fp32_slack = 2.0**-8, 1e-5
    worst = 0.0  # every row against float64 math on that row: the largest |error| / allowed error
    for s in range(0, n, step):
        t = F.cross_entropy(x[s : s + step].double(), y[s : s + step], reduction="none")
        err = (loss[s : s + step].double() - t).abs()
        worst = max(worst, float((err / (t.abs() * half_ulp + fp32_slack)).max()))
    assert worst <= 1.0, f"a row loss is {worst:.3f} times the allowed error from float64 math"
    torch.testing.assert_close(loss[check_rows].double(), expected, rtol=half_ulp, atol=fp32_slack)
    assert float(loss[-1]) < 1e-3 < float(loss[-2])
    forward_s = time.perf_counter() - start

    # gradient rows past offset 2**31, written over the logits (inplace) to keep memory at one copy
    saved = x[check_rows].clone()
    shift = torch.zeros((), dtype=torch.bfloat16, requires_grad=True)
    x.add_(shift)  # x becomes a non-leaf that requires grad, values unchanged, nothing saved
    loss = LF.cross_entropy(x, y, reduction="none", inplace=True)
    loss.backward(torch.ones_like(loss))
    p = torch.softmax(saved.double(), 1)
    p[torch.arange(len(check_rows)), y[check_rows]] -= 1
    got = x.detach()[check_rows].double()
    torch.testing.assert_close(got, p, rtol=2.0**-8, atol=1e-6)
    print(f"int64 test: forward+check {forward_s:.1f} s, total {time.perf_counter() - start:.1f} s")
