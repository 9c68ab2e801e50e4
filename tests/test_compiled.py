"""The kernel as one operator under torch.compile (losskit.engine.compiled): exact against torch, used only
where it should be, errors still raised, and the operator itself checked by torch.library.opcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

import losskit.functional as LF
from losskit import LossIndexError
from losskit.engine import compiled, rows


@pytest.fixture
def spy(monkeypatch):
    """Counts the kernel operator's runs (its implementation calls rows.fused_pass), with a threshold small
    enough for test shapes."""
    monkeypatch.setattr(compiled, "MIN_ELEMENTS", 1 << 8)
    calls = []
    real = rows.fused_pass

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(rows, "fused_pass", counting)
    torch._dynamo.reset()
    yield calls
    torch._dynamo.reset()


OPTIONS = [
    ("mean", {}),
    ("mean", {"label_smoothing": 0.1, "weight": "w"}),
    ("sum", {"ignore_index": 3}),
    ("none", {"weight": "w", "ignore_index": 3, "label_smoothing": 0.2}),
]


@pytest.mark.parametrize(("reduction", "options"), OPTIONS, ids=[f"{r}-{'-'.join(o) or 'plain'}" for r, o in OPTIONS])
def test_compiled_fullgraph_matches_torch_and_runs_the_kernel(spy, reduction, options):
    torch.manual_seed(0)
    x = torch.randn(48, 37, dtype=torch.float32, requires_grad=True)
    y = torch.randint(0, 37, (48,))
    y[::7] = 3
    kw = {k: (torch.rand(37) + 0.5 if v == "w" else v) for k, v in options.items()}

    def loss(f, x):
        return f(x, y, reduction=reduction, **kw)

    compiled_loss = torch.compile(lambda x: loss(LF.cross_entropy, x), fullgraph=True)
    ours = compiled_loss(x)
    (g_ours,) = torch.autograd.grad(ours.sum() * 0.7, x)
    theirs = loss(TF.cross_entropy, x)
    (g_theirs,) = torch.autograd.grad(theirs.sum() * 0.7, x)
    assert spy, "the kernel operator did not run under torch.compile"
    torch.testing.assert_close(ours, theirs, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(g_ours, g_theirs, rtol=2e-6, atol=1e-7)


def test_compiled_z_loss_equals_eager(spy):
    torch.manual_seed(1)
    x = torch.randn(16, 40, requires_grad=True)
    y = torch.randint(0, 40, (16,))
    ours = torch.compile(lambda x: LF.cross_entropy(x, y, z_loss=1e-3), fullgraph=True)(x)
    (g_ours,) = torch.autograd.grad(ours, x)
    assert spy
    eager = LF.cross_entropy(x, y, z_loss=1e-3)
    (g_eager,) = torch.autograd.grad(eager, x)
    torch.testing.assert_close(ours, eager, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_ours, g_eager, rtol=1e-6, atol=1e-9)


def test_out_of_range_target_raises_losskits_error_from_compiled_code(spy):
    x = torch.randn(32, 20)
    y = torch.randint(0, 20, (32,))
    y[5] = 20
    with pytest.raises(LossIndexError, match="20"):
        torch.compile(lambda x, y: LF.cross_entropy(x, y), fullgraph=True)(x, y)


@pytest.mark.parametrize(
    ("case", "make"),
    [
        ("below the threshold", lambda: (torch.randn(4, 5), torch.randint(0, 5, (4,)))),
        ("bf16", lambda: (torch.randn(32, 20).bfloat16(), torch.randint(0, 20, (32,)))),
        ("probabilities", lambda: (torch.randn(32, 20), torch.rand(32, 20).softmax(1))),
    ],
)
def test_other_calls_keep_the_traced_ops(spy, case, make):
    x, y = make()
    ours = torch.compile(lambda x, y: LF.cross_entropy(x, y), fullgraph=True)(x, y)
    assert not spy, f"{case}: the kernel operator ran"
    torch.testing.assert_close(ours, TF.cross_entropy(x, y), rtol=1e-2 if x.dtype == torch.bfloat16 else 1e-6, atol=0)


def test_export_keeps_plain_torch_ops(spy):
    class M(torch.nn.Module):
        def forward(self, x, y):
            return LF.cross_entropy(x, y)

    x, y = torch.randn(32, 20), torch.randint(0, 20, (32,))
    program = torch.export.export(M(), (x, y))
    assert "cross_entropy_kernel" not in str(program.graph)
    torch.testing.assert_close(program.module()(x, y), TF.cross_entropy(x, y))


def test_eager_calls_do_not_use_the_operator(monkeypatch):
    def fail(*args):
        raise AssertionError("the kernel operator ran in eager")

    monkeypatch.setattr(compiled, "cross_entropy", fail)
    x = torch.randn(300, 20, requires_grad=True)
    LF.cross_entropy(x, torch.randint(0, 20, (300,))).backward()
    assert not compiled.eligible(x, torch.zeros(300, dtype=torch.long), None, rows.CrossEntropyOptions("mean"))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_opcheck(reduction):
    torch.manual_seed(2)
    x = torch.randn(6, 9)
    y = torch.tensor([0, 8, -100, 3, 3, 1])
    w = torch.rand(9) + 0.1
    for args in [
        (x, y, None, -100, 0.0, 0.0, reduction, True, "cross_entropy"),
        (x, y, w, -100, 0.1, 1e-4, reduction, False, "cross_entropy"),
    ]:
        torch.library.opcheck(compiled.cross_entropy_kernel, args)
