"""The compatibility grid: every loss of the catalog in every stack users train in, against torch's loss in
the same stack (values and gradients).

Stacks: ``torch._dynamo.explain`` (graph breaks: 0), ``torch.compile(fullgraph=True)`` with ``aot_eager``
(every loss) and ``inductor`` (the fused ones and a few element-wise), ``torch.export`` then running the
exported program, ``torch.func.grad``, ``vmap`` over a batch of problems, per-sample ``vmap(grad)``,
``jacrev``, forward-mode AD (dual tensors and ``func.jvp``), a backward under compiled autograd,
``torch.autocast`` bf16, ``torch.utils.checkpoint`` and ``torch.jit.trace``. Bad input still
raises losskit's clear error under compile and export. Shapes are small so the grid fits in CI's time.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
import torch.nn.functional as TF
from torch import func

import losskit
from losskit import _catalog

ENTRIES = _catalog.entries()
IDS = [e.name for e in ENTRIES]
INDUCTOR = ("cross_entropy", "nll_loss", "linear_cross_entropy", "mse_loss", "binary_cross_entropy_with_logits")
# losses whose arguments cannot all be stacked into a batch of problems (lengths given as Python sequences, ...)
NO_VMAP = {
    "ctc_loss": "its lengths are host values, which vmap cannot batch",
    # losskit's runs under vmap (tests/test_gaussian_nll_loss.py::test_transforms); torch's, the oracle, cannot
    "gaussian_nll_loss": "torch's own checks torch.any(var < 0) in Python, which vmap cannot batch",
}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _problem(entry, seed=0, dtype=torch.float32):
    return entry.sample((6, 5), dtype, torch.Generator().manual_seed(seed))


def _torch(entry):
    return getattr(TF, entry.name)


def _close(ours, ref, rtol=1e-5, atol=1e-6):
    if isinstance(ref, (tuple, list)):
        for o, r in zip(ours, ref, strict=True):
            _close(o, r, rtol, atol)
        return
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, (ours.shape, ref.shape, ours.dtype, ref.dtype)
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol, equal_nan=True)


def _diff_args(entry, problem):
    return tuple(range(problem.differentiable))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_no_graph_breaks(entry):
    problem = _problem(entry)
    explanation = torch._dynamo.explain(entry.function)(*problem.args)
    assert explanation.graph_break_count == 0, [str(b.reason)[:200] for b in explanation.break_reasons]
    assert explanation.graph_count == 1


def _fn(entry, impl, reduction):
    def f(*args):
        return impl(*args, reduction=reduction)

    return f


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_compile_fullgraph_aot_eager(entry):
    problem = _problem(entry)
    k = problem.differentiable
    for reduction in ("mean", "none"):
        torch._dynamo.reset()
        compiled = torch.compile(_fn(entry, entry.function, reduction), fullgraph=True, backend="aot_eager")
        ours_in = [a.clone().requires_grad_() if i < k else a for i, a in enumerate(problem.args)]
        ref_in = [a.clone().requires_grad_() if i < k else a for i, a in enumerate(problem.args)]
        ours = compiled(*ours_in)
        ref = _torch(entry)(*ref_in, reduction=reduction)
        _close(ours, ref)
        cot = torch.rand_like(ref)
        _close(torch.autograd.grad(ours, ours_in[:k], cot), torch.autograd.grad(ref, ref_in[:k], cot))


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.name in INDUCTOR], ids=INDUCTOR)
def test_compile_fullgraph_inductor(entry):
    problem = _problem(entry)
    k = problem.differentiable
    compiled = torch.compile(entry.function, fullgraph=True)
    ours_in = [a.clone().requires_grad_() if i < k else a for i, a in enumerate(problem.args)]
    ref_in = [a.clone().requires_grad_() if i < k else a for i, a in enumerate(problem.args)]
    ours, ref = compiled(*ours_in), _torch(entry)(*ref_in)
    _close(ours, ref)
    _close(torch.autograd.grad(ours, ours_in[:k]), torch.autograd.grad(ref, ref_in[:k]))


class _Module(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_export_then_run(entry):
    problem = _problem(entry)
    program = torch.export.export(_Module(entry.function), tuple(problem.args))
    other = _problem(entry, seed=1)
    _close(program.module()(*other.args), _torch(entry)(*other.args))


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_func_grad_and_jacrev(entry):
    problem = _problem(entry, dtype=torch.float64)
    argnums = _diff_args(entry, problem)
    ours = func.grad(entry.function, argnums=argnums)(*problem.args)
    ref = func.grad(_torch(entry), argnums=argnums)(*problem.args)
    _close(ours, ref, rtol=1e-9, atol=1e-9)
    ours = func.jacrev(_fn(entry, entry.function, "none"))(*problem.args)
    ref = func.jacrev(_fn(entry, _torch(entry), "none"))(*problem.args)
    _close(ours, ref, rtol=1e-9, atol=1e-9)


def _batch(entry, size=3):
    problems = [_problem(entry, seed=s, dtype=torch.float64) for s in range(size)]
    return tuple(torch.stack(parts) for parts in zip(*(p.args for p in problems), strict=True)), problems[0]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_vmap_and_per_sample_gradients(entry):
    if entry.name in NO_VMAP:
        pytest.skip(NO_VMAP[entry.name])
    stacked, problem = _batch(entry)
    _close(func.vmap(entry.function)(*stacked), func.vmap(_torch(entry))(*stacked), rtol=1e-9, atol=1e-9)
    argnums = _diff_args(entry, problem)
    ours = func.vmap(func.grad(entry.function, argnums=argnums))(*stacked)
    ref = func.vmap(func.grad(_torch(entry), argnums=argnums))(*stacked)
    _close(ours, ref, rtol=1e-9, atol=1e-9)


def _tangents(fn, args, k, jvp: bool):
    """The loss and its directional derivative along fixed tangents of the first ``k`` arguments: forward-mode AD
    with dual tensors (``jvp=False``) or ``torch.func.jvp``; None when ``fn`` has no forward-mode derivative."""
    g = torch.Generator().manual_seed(7)
    tangents = tuple(torch.randn(a.shape, generator=g, dtype=a.dtype) for a in args[:k])
    try:
        if jvp:
            return func.jvp(lambda *d: fn(*d, *args[k:]), tuple(args[:k]), tangents)
        import torch.autograd.forward_ad as fwad

        with fwad.dual_level():
            dual = [fwad.make_dual(a, t) for a, t in zip(args[:k], tangents, strict=True)]
            out = fwad.unpack_dual(fn(*dual, *args[k:]))
            return out.primal, out.tangent
    except (NotImplementedError, RuntimeError) as exc:
        if fn.__module__.startswith("losskit"):
            raise
        return str(exc)


@pytest.mark.parametrize("jvp", [False, True], ids=["dual tensors", "func.jvp"])
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_forward_mode_ad(entry, jvp):
    """The tangent of the loss, as torch's (the eager fused paths would drop it: dual tensors take the traceable
    path). Where torch's own loss has no forward-mode derivative, losskit's is checked against float64 finite
    differences."""
    problem = _problem(entry, dtype=torch.float64)
    k, args = problem.differentiable, problem.args
    ours = _tangents(entry.function, args, k, jvp)
    ref = _tangents(_torch(entry), args, k, jvp)
    if isinstance(ref, str):  # torch: "derivative for ... is not implemented" (e.g. multi_margin_loss)
        g = torch.Generator().manual_seed(7)
        tangents = [torch.randn(a.shape, generator=g, dtype=a.dtype) for a in args[:k]]
        h = 1e-6
        plus = entry.function(*[a + h * t for a, t in zip(args[:k], tangents, strict=True)], *args[k:])
        minus = entry.function(*[a - h * t for a, t in zip(args[:k], tangents, strict=True)], *args[k:])
        ref = (entry.function(*args), (plus - minus) / (2 * h))
        _close(ours, ref, rtol=1e-5, atol=1e-6)
        return
    _close(ours, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_compiled_autograd_backward(entry):
    """An eager forward (losskit's fused paths and C++ nodes) whose backward runs under compiled autograd."""
    from torch._dynamo import compiled_autograd

    problem = _problem(entry)
    k = problem.differentiable
    grads = []
    for fn in (entry.function, _torch(entry)):
        leaves = [a.clone().requires_grad_() if i < k else a for i, a in enumerate(problem.args)]
        with compiled_autograd._enable(torch.compile(backend="eager")):
            loss = fn(*leaves)
            loss.sum().backward()
        grads.append(tuple(x.grad for x in leaves[:k]))
    _close(grads[0], grads[1])


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_autocast_bf16_follows_torchs_policy(entry):
    problem = _problem(entry)
    k = problem.differentiable
    with torch.autocast("cpu", torch.bfloat16):
        ours_in = [a.bfloat16().requires_grad_() if i < k else a for i, a in enumerate(problem.args)]
        ref_in = [a.bfloat16().requires_grad_() if i < k else a for i, a in enumerate(problem.args)]
        ours, ref = entry.function(*ours_in), _torch(entry)(*ref_in)
    assert ours.dtype == ref.dtype
    torch.testing.assert_close(ours.float(), ref.float(), rtol=2e-2, atol=2e-2)
    for g_ours, g_ref, x in zip(
        torch.autograd.grad(ours, ours_in[:k]), torch.autograd.grad(ref, ref_in[:k]), ours_in, strict=False
    ):
        assert g_ours.dtype == g_ref.dtype == x.dtype
        torch.testing.assert_close(g_ours.float(), g_ref.float(), rtol=5e-2, atol=5e-2)


def test_autocast_takes_fp32_class_weights_with_bf16_logits():
    x = torch.randn(8, 5, dtype=torch.bfloat16, requires_grad=True)
    y, w = torch.randint(0, 5, (8,)), torch.rand(5) + 0.5
    with torch.autocast("cpu", torch.bfloat16):
        ours = losskit.nn.CrossEntropyLoss(weight=w)(x, y)
        ref = torch.nn.CrossEntropyLoss(weight=w)(x, y)
    assert ours.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_checkpoint(entry):
    from torch.utils.checkpoint import checkpoint

    problem = _problem(entry)
    k = problem.differentiable
    ours_in = [a.clone().requires_grad_() if i < k else a for i, a in enumerate(problem.args)]
    ref_in = [a.clone().requires_grad_() if i < k else a for i, a in enumerate(problem.args)]
    ours = checkpoint(entry.function, *ours_in, use_reentrant=False)
    ref = _torch(entry)(*ref_in)
    _close(ours, ref)
    _close(torch.autograd.grad(ours, ours_in[:k]), torch.autograd.grad(ref, ref_in[:k]))


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_jit_trace(entry):
    problem = _problem(entry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_Module(entry.function), tuple(problem.args), check_trace=False)
    _close(traced(*problem.args), _torch(entry)(*problem.args))


# --------------------------------------------------------------------------- errors while traced


def _bad_target_call():
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 7, 2])
    return x, y


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_out_of_range_target_raises_losskits_error_under_compile(backend):
    x, y = _bad_target_call()
    compiled = torch.compile(losskit.functional.cross_entropy, fullgraph=True, backend=backend)
    with pytest.raises(losskit.LossIndexError, match="'target' 7 is out of bounds for 3 classes"):
        compiled(x, y)


def test_out_of_range_target_raises_losskits_error_in_an_exported_program():
    x, y = _bad_target_call()
    program = torch.export.export(_Module(losskit.functional.cross_entropy), (x, torch.tensor([0, 1, 2, 2])))
    with pytest.raises(losskit.LossIndexError, match="'target' 7"):
        program.module()(x, y)


def test_probabilities_out_of_range_raise_under_compile():
    compiled = torch.compile(losskit.functional.binary_cross_entropy, fullgraph=True, backend="aot_eager")
    with pytest.raises(losskit.LossValueError, match="'input' should be between 0 and 1"):
        compiled(torch.tensor([0.5, 1.5]), torch.tensor([0.0, 1.0]))


def test_every_catalog_loss_is_in_the_grid():
    """The grid is derived from the catalog: a loss without a torch counterpart would need its own oracle."""
    for entry in ENTRIES:
        assert callable(getattr(TF, entry.name, None)), entry.name
        assert inspect.signature(entry.function)


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("class_targets", (torch.tensor([0, 2, -100, 1]), 3, -100, "cross_entropy")),
        ("class_targets", (torch.tensor([[0, 1], [2, 5]]), 6, 5, "nll_loss")),
        ("checked_zero", (torch.rand(4, 3), "unit_interval", "binary_cross_entropy", "input", 0)),
        ("checked_zero", (torch.tensor([[0, -1, 2]]), "multilabel", "multilabel_margin_loss", "target", 3)),
    ],
    ids=["class_targets", "class_targets-2d", "unit_interval", "multilabel"],
)
def test_opcheck_the_check_operators(op, args):
    """torch.library.opcheck: schema, fake (meta) implementation, dispatch and vmap registrations agree."""
    import losskit.engine.ops  # noqa: F401 - registers the operators

    torch.library.opcheck(getattr(torch.ops.losskit, op).default, args)
