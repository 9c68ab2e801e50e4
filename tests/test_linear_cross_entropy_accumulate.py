"""``linear_cross_entropy(..., accumulate_grad=True)`` (issue 17): the weight gradient added straight into an
existing ``.grad`` in backward, without a ``(V, H)`` temporary.

Oracle: torch's ``cross_entropy(h @ W.T, y)`` accumulated into the same starting ``.grad`` over two micro-steps,
float64. Also: the accumulation really happens in place (the engine's walk is handed ``.grad``), every case it
must not touch ``.grad`` computes ``∂W`` as usual (``W.grad`` None, ``autograd.grad``, ``backward(inputs=...)``,
tensor hooks, bf16, ``create_graph``), hooks on the accumulator still fire, and the peak memory of a step drops
by the weight's size.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF
import losskit.nn as LNN
from helpers import peak_step_bytes, seeded
from losskit.engine import linear as engine

MiB = 1 << 20


@pytest.fixture
def walks(monkeypatch):
    """Each walk over the chunks: whether it was handed a ``.grad`` to add into."""
    seen = []
    real = engine._pass

    def spy(*args, **kwargs):
        seen.append(len(args) > 10 and args[10] is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_pass", spy)
    return seen


def _problem(dtype=torch.float64, n=300, h=16, v=50):
    g = seeded("accumulate", n, h, v)
    x = torch.randn(n, h, generator=g, dtype=dtype)
    w = torch.randn(v, h, generator=g, dtype=dtype)
    y = torch.randint(0, v, (n,), generator=g)
    y[::7] = -100
    return x, w, y


def _steps(loss_fn, x, w, y, reduction, scale, start=0.5):
    """Two micro-steps accumulated into a ``.grad`` that starts at ``start``; (W.grad, x.grad)."""
    wl, xl = w.clone().requires_grad_(), x.clone().requires_grad_()
    wl.grad = torch.full_like(wl, start)
    for _ in range(2):
        (loss_fn(xl, wl, y, reduction).sum() * scale).backward()
    return wl.grad, xl.grad


def _ours(x, w, y, reduction):
    return LF.linear_cross_entropy(x, w, y, reduction=reduction, chunk_size=64, accumulate_grad=True)


def _torch(x, w, y, reduction):
    return F.cross_entropy(x @ w.t(), y, reduction=reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_adds_into_grad_and_matches_torch(walks, reduction, scale):
    x, w, y = _problem()
    ours = _steps(_ours, x, w, y, reduction, scale)
    ref = _steps(_torch, x, w, y, reduction, scale)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-13)
    assert walks.count(True) == 2  # each backward added ∂W into .grad (forward: the loss only)


def test_the_module_through_its_view_of_the_weight(walks):
    x, w, y = _problem()
    module = LNN.LinearCrossEntropyLoss(16, 50, accumulate_grad=True).double()
    with torch.no_grad():
        module.linear.weight.copy_(w)
    module.linear.weight.grad = torch.ones_like(w)
    module(x, y).backward()
    wl = w.clone().requires_grad_()
    wl.grad = torch.ones_like(w)
    F.cross_entropy(x @ wl.t(), y).backward()
    torch.testing.assert_close(module.linear.weight.grad, wl.grad, rtol=1e-12, atol=1e-13)
    assert walks.count(True) == 1


def test_without_a_grad_it_computes_the_gradient_as_usual(walks):
    x, w, y = _problem()
    wl = w.clone().requires_grad_()
    _ours(x, wl, y, "mean").backward()
    ref = w.clone().requires_grad_()
    _torch(x, ref, y, "mean").backward()
    torch.testing.assert_close(wl.grad, ref.grad, rtol=1e-12, atol=1e-13)
    assert True not in walks


def test_leaves_grad_alone_when_the_engine_will_not_accumulate(walks):
    x, w, y = _problem()
    wl, xl = w.clone().requires_grad_(), x.clone().requires_grad_()
    wl.grad = torch.zeros_like(wl)
    (gw,) = torch.autograd.grad(_ours(xl, wl, y, "mean"), wl)  # autograd.grad: the gradient is returned
    _ours(xl, wl, y, "mean").backward(inputs=[xl])  # only x's gradient asked for
    assert torch.equal(wl.grad, torch.zeros_like(wl)) and xl.grad is not None
    ref = w.clone().requires_grad_()
    torch.testing.assert_close(gw, torch.autograd.grad(_torch(x, ref, y, "mean"), ref)[0], rtol=1e-12, atol=1e-13)
    assert True not in walks


def test_a_tensor_hook_sees_the_real_gradient(walks):
    x, w, y = _problem()
    wl = w.clone().requires_grad_()
    wl.grad = torch.zeros_like(wl)
    seen = []
    wl.register_hook(lambda g: seen.append(g.clone()))
    _ours(x, wl, y, "mean").backward()
    ref = w.clone().requires_grad_()
    _torch(x, ref, y, "mean").backward()
    torch.testing.assert_close(seen[0], ref.grad, rtol=1e-12, atol=1e-13)
    assert True not in walks


def test_accumulator_hooks_still_fire():
    """DDP hooks the weight's gradient accumulator; optimizer-in-backward uses post-accumulate hooks: both run
    once per backward, after ``.grad`` holds the sum."""
    x, w, y = _problem()
    wl = w.clone().requires_grad_()
    wl.grad = torch.zeros_like(wl)
    grads = []
    wl.register_post_accumulate_grad_hook(lambda p: grads.append(p.grad.clone()))
    node_runs = []
    accumulator = torch.autograd.graph.get_gradient_edge(wl).node  # held, as DDP holds it
    accumulator.register_hook(lambda *_: node_runs.append(1))
    _ours(x, wl, y, "mean").backward()
    ref = w.clone().requires_grad_()
    _torch(x, ref, y, "mean").backward()
    assert len(grads) == 1 and node_runs == [1]
    torch.testing.assert_close(grads[0], ref.grad, rtol=1e-12, atol=1e-13)


def test_bf16_and_create_graph_take_the_usual_path(walks):
    x, w, y = _problem(torch.bfloat16)
    wl = w.clone().requires_grad_()
    wl.grad = torch.zeros_like(wl)
    _ours(x, wl, y, "mean").backward()  # bf16: ∂W summed in fp32 and rounded once, as without the option
    ref = w.clone().requires_grad_()
    ref.grad = torch.zeros_like(ref)
    LF.linear_cross_entropy(x, ref, y, chunk_size=64).backward()
    assert torch.equal(wl.grad, ref.grad)
    x, w, y = _problem()
    wl = w.clone().requires_grad_()
    wl.grad = torch.zeros_like(wl)
    (gw,) = torch.autograd.grad(_ours(x, wl, y, "mean"), wl, create_graph=True)
    assert torch.equal(wl.grad, torch.zeros_like(wl))
    with pytest.raises(RuntimeError, match="higher-order"):
        gw.sum().backward()
    assert True not in walks


def test_bad_flag_raises():
    x, w, y = _problem()
    with pytest.raises(TypeError, match="accumulate_grad"):
        LF.linear_cross_entropy(x, w, y, accumulate_grad="yes")


def _peak(n, h, v, accumulate):
    """One step's peak with W.grad already there (the micro-step of gradient accumulation)."""
    code = textwrap.dedent(
        f"""
        gen = torch.Generator().manual_seed(0)
        x = (torch.randn({n}, {h}, generator=gen) / {h}**0.5).requires_grad_()
        w = torch.randn({v}, {h}, generator=gen).requires_grad_()
        y = torch.randint(0, {v}, ({n},), generator=gen)
        def step():
            LF.linear_cross_entropy(x, w, y, accumulate_grad={accumulate}).backward()
        def reset():
            x.grad = None  # w.grad stays: the measured step adds into it
        """
    )
    return peak_step_bytes(code)


def test_peak_memory_drops_by_the_weight():
    n, h, v = 1024, 256, 32000
    weight = v * h * 4  # 31.25 MiB
    usual, accumulated = _peak(n, h, v, False), _peak(n, h, v, True)
    assert accumulated <= usual - weight + 2 * MiB, (usual / MiB, accumulated / MiB)
    # what is left: the input gradient and one chunk of logits (and a few MiB of row-sized temporaries)
    chunk = engine.rows_per_chunk(n, v, h, None, None, torch.float32) * v * 4
    assert accumulated <= n * h * 4 + chunk + 6 * MiB, accumulated / MiB


def test_a_view_of_part_of_the_weight_or_with_a_hook_takes_the_usual_path(walks):
    """A padded vocabulary's slice (a view of part of the weight) and a hook on the view: ∂W as usual."""
    x, w, y = _problem()
    padded = torch.cat([w, torch.zeros(14, 16, dtype=w.dtype)]).requires_grad_()
    padded.grad = torch.zeros_like(padded)
    _ours(x, padded[:50], y, "mean").backward()
    ref = w.clone().requires_grad_()
    _torch(x, ref, y, "mean").backward()
    torch.testing.assert_close(padded.grad[:50], ref.grad, rtol=1e-12, atol=1e-13)
    assert torch.equal(padded.grad[50:], torch.zeros(14, 16, dtype=w.dtype))
    whole = w.clone().requires_grad_()
    whole.grad = torch.zeros_like(whole)
    view = whole.view(50, 16)
    view.register_hook(lambda g: g * 0)  # the hook decides: nothing reaches .grad
    _ours(x, view, y, "mean").backward()
    assert torch.equal(whole.grad, torch.zeros_like(whole))
    assert True not in walks


def test_create_graph_makes_a_new_grad_as_torch_does(walks):
    """backward(create_graph=True) replaces .grad by old + ∂W (a new tensor); the old one is left as it was."""
    x, w, y = _problem()
    wl = w.clone().requires_grad_()
    old = torch.full_like(wl, 0.5)
    wl.grad = old
    _ours(x, wl, y, "mean").backward(create_graph=True)
    ref = w.clone().requires_grad_()
    _torch(x, ref, y, "mean").backward()
    assert torch.equal(old, torch.full_like(old, 0.5)) and wl.grad is not old
    torch.testing.assert_close(wl.grad.detach(), ref.grad + 0.5, rtol=1e-12, atol=1e-13)
    assert True not in walks
