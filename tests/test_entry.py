"""losskit's C++ eager entry points (kernels/entry.cpp, engine/entry.py): the whole common eager call of the
small-call losses from C++, with a C++ autograd node.

The kernels' own arithmetic is tested on both eager paths by tests/test_native_targets.py,
tests/test_native_pointwise.py and tests/test_native.py (fixtures parametrised over the Python path and the
entry). Here: the entry is built, loaded and used; it gives the Python path's bits and torch's values; it hands
back every call it does not take (subclasses, layouts, dtypes, odd arguments, bad targets, torch.func and
jit.trace) so that the Python path serves it or raises the clear error; its backward under create_graph calls
back into Python; threads and forked children; ``LOSSKIT_ENTRY=0``; and the background build of a fresh cache.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF
from helpers import entry_off, in_forked_child, run_in_threads, seeded
from losskit import LossIndexError
from losskit.engine import entry, native_pointwise

DISABLED = os.environ.get("LOSSKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")
pytestmark = pytest.mark.skipif(DISABLED, reason="LOSSKIT_NATIVE=0 in the environment")


@pytest.fixture(scope="module")
def fast():
    module = entry.wait()
    if module is None:
        pytest.skip(f"the entry points are unavailable: {entry.status()}")
    return module


def _problems(g: torch.Generator):
    """(name, losskit function, torch function, input, target, kwargs) for each loss the entry serves."""
    x = torch.randn(32, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (32,), generator=g)
    t = torch.randn(32, 10, generator=g, dtype=torch.float64)
    labels = torch.full((32, 10), -1)
    labels[:, 0], labels[:, 1] = y, (y + 3) % 10
    w = torch.rand(10, generator=g, dtype=torch.float64) + 0.5
    return [
        ("nll", LF.nll_loss, F.nll_loss, x.log_softmax(1), y, {"ignore_index": 3}),
        ("multi_margin", LF.multi_margin_loss, F.multi_margin_loss, x, y, {"p": 2, "margin": 0.5, "weight": w}),
        ("multilabel_margin", LF.multilabel_margin_loss, F.multilabel_margin_loss, x, labels, {}),
        ("mse", LF.mse_loss, F.mse_loss, x, t, {}),
        ("huber", LF.huber_loss, F.huber_loss, x, t, {"delta": 0.7}),
        ("kl_div", LF.kl_div, F.kl_div, x.log_softmax(1), t.softmax(1), {"reduction": "batchmean"}),
        (
            "bce_with_logits",
            LF.binary_cross_entropy_with_logits,
            F.binary_cross_entropy_with_logits,
            x,
            t.sigmoid(),
            {},
        ),
        ("cross_entropy", LF.cross_entropy, F.cross_entropy, x.float(), y, {"label_smoothing": 0.1}),
        ("ctc", _ctc(LF.ctc_loss), _ctc(F.ctc_loss), x.view(8, 4, 10).log_softmax(2), (y.view(4, 8) % 9) + 1, {}),
    ]


def _ctc(fn):
    """ctc_loss of (T=8, N=4, C=10) log-probs and (4, 8) padded targets with lengths 8 and 3, 5, 2, 4."""

    def loss(lp, targets, **kw):
        return fn(lp, targets, torch.full((4,), 8), torch.tensor([3, 5, 2, 4]), **kw)

    return loss


PROBLEMS = [p[0] for p in _problems(seeded("names"))]


def _problem(name: str, dtype=None):
    found = next(p for p in _problems(seeded("entry", name)) if p[0] == name)
    _, ours, ref, x, t, kw = found
    if dtype is not None and name != "cross_entropy":
        x = x.to(dtype)
        t = t.to(dtype) if t.is_floating_point() else t
        kw = {k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    return ours, ref, x, t, kw


def _run(fn, x, t, kw, scale=1.0):
    leaf = x.clone().requires_grad_()
    loss = fn(leaf, t, **kw)
    (loss * scale).backward()
    return loss, leaf.grad, loss.grad_fn


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_entry_gives_the_python_paths_bits_and_torchs_values(fast, monkeypatch, name, scale):
    ours, ref, x, t, kw = _problem(name)
    loss, grad, node = _run(ours, x, t, kw, scale)
    assert "losskit::" in node.name(), node.name()  # the C++ node: the entry took the call
    ref_loss, ref_grad, _ = _run(ref, x, t, kw, scale)
    tol = {"rtol": 1e-5, "atol": 1e-7} if x.dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-14}
    torch.testing.assert_close(loss, ref_loss, **tol)
    torch.testing.assert_close(grad, ref_grad, **tol)
    with monkeypatch.context() as m:
        entry_off(m)
        py_loss, py_grad, py_node = _run(ours, x, t, kw, scale)
    assert "losskit::" not in py_node.name()
    assert torch.equal(loss, py_loss) and torch.equal(grad, py_grad)


@pytest.mark.parametrize("name", PROBLEMS)
def test_no_grad_inference_and_a_second_backward(fast, name):
    ours, ref, x, t, kw = _problem(name)
    with torch.no_grad():
        plain = ours(x.clone().requires_grad_(), t, **kw)
    with torch.inference_mode():
        inferred = ours(x, t, **kw)
    assert plain.grad_fn is None and not plain.requires_grad and torch.equal(plain, inferred)
    leaf, ref_leaf = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss, ref_loss = ours(leaf, t, **kw), ref(ref_leaf, t, **kw)
    for _ in range(2):  # retain_graph: the second backward computes the gradient again
        loss.backward(retain_graph=True)
        ref_loss.backward(retain_graph=True)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", PROBLEMS)
def test_create_graph_goes_back_to_python(fast, name):
    """Under create_graph=True the C++ backward calls the Python side's formula: differentiable where torch's
    is (compared with torch's second derivative), a clear error for cross entropy (first order only)."""
    ours, ref, x, t, kw = _problem(name)
    leaf, ref_leaf = x.clone().requires_grad_(), x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(ours(leaf, t, **kw), leaf, create_graph=True)
    (ref_grad,) = torch.autograd.grad(ref(ref_leaf, t, **kw), ref_leaf, create_graph=True)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
    if name in ("cross_entropy", "ctc"):
        with pytest.raises(RuntimeError, match="does not support higher-order gradients|is not implemented"):
            grad.pow(2).sum().backward()
        return
    if not grad.requires_grad:  # linear in x (NLL): no second derivative, as torch's may have none
        return
    (second,) = torch.autograd.grad(grad.pow(2).sum(), leaf)
    if name == "multi_margin":  # torch has no second derivative for it: gradgradcheck, with the entry taking it
        assert torch.autograd.gradgradcheck(lambda a: ours(a, t[:4], **kw), (x[:4].clone().requires_grad_(),))
        return
    (ref_second,) = torch.autograd.grad(ref_grad.pow(2).sum(), ref_leaf)
    torch.testing.assert_close(second, ref_second, rtol=1e-5, atol=1e-7)


def _declined(fast, monkeypatch) -> list:
    """Records every entry call and whether it was handed back (None)."""
    seen: list = []
    for name in ("nll", "multi_margin", "multilabel_margin", "pointwise", "cross_entropy", "ctc"):
        real = getattr(fast, name)

        def spy(*args, real=real):
            out = real(*args)
            seen.append(out is None)
            return out

        monkeypatch.setattr(fast, name, spy)
    return seen


class _Sub(torch.Tensor):
    pass


CASES = {
    "subclass": lambda x, t, kw: (x.as_subclass(_Sub), t, kw),
    "strided": lambda x, t, kw: (x.t().contiguous().t(), t, kw),
    "float16": lambda x, t, kw: (x.half(), t.half() if t.is_floating_point() else t, {}),
    "negative view": lambda x, t, kw: (torch._neg_view(x), t, kw),
    "bool reduction": lambda x, t, kw: (x, t, {**kw, "reduction": True}),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ["nll", "mse", "cross_entropy"])
def test_calls_it_does_not_take_go_to_the_python_path(fast, monkeypatch, case, name):
    """Handed back (None) and then computed, or refused, by the Python path as torch computes or refuses it."""
    ours, ref, x, t, kw = _problem(name)
    x, t, kw = CASES[case](x, t, kw)
    seen = _declined(fast, monkeypatch)
    try:
        expected = ref(x.detach().clone(), t, **kw)
    except Exception:  # noqa: BLE001 - torch refuses it: so does losskit (the error itself: tests/test_checks*)
        with pytest.raises((TypeError, ValueError, RuntimeError)):
            ours(x.detach().clone().requires_grad_(), t, **kw)
        assert all(seen), seen
        return
    leaf = x.detach().clone().requires_grad_() if case != "negative view" else x.requires_grad_()
    loss = ours(leaf, t, **kw)
    assert all(seen), seen
    torch.testing.assert_close(loss.float(), expected.float(), rtol=2e-3, atol=1e-4)
    if case != "subclass":
        loss.backward()
        assert leaf.grad is not None and leaf.grad.shape == x.shape


@pytest.mark.parametrize("name", ["nll", "multi_margin", "multilabel_margin", "cross_entropy"])
def test_a_bad_target_raises_the_clear_error(fast, monkeypatch, name):
    ours, _, x, t, kw = _problem(name)
    t = t.clone()
    t.view(-1)[5] = 10  # class 10 of 10
    seen = _declined(fast, monkeypatch)
    with pytest.raises(LossIndexError):
        ours(x.clone().requires_grad_(), t, **kw)
    assert seen and all(seen)


def test_torch_func_and_jit_trace_take_the_traceable_path(fast, monkeypatch):
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (4, 3))
    seen = _declined(fast, monkeypatch)
    per_problem = torch.func.vmap(torch.func.grad(lambda a, b: LF.cross_entropy(a, b)))(x, y)
    ref = torch.func.vmap(torch.func.grad(lambda a, b: F.cross_entropy(a, b)))(x, y)
    torch.testing.assert_close(per_problem, ref)
    traced = torch.jit.trace(lambda a, b: LF.mse_loss(a, b), (x[0], x[1]), check_trace=False)
    torch.testing.assert_close(traced(x[2], x[3]), F.mse_loss(x[2], x[3]))
    assert all(seen)  # any call that reached the entry was handed back


def test_threads_get_their_own_results(fast):
    problems = [(i, torch.randn(40, 10, generator=seeded("thr", i)), torch.arange(40) % 10) for i in range(4)]
    expected = {}
    for i, x, y in problems:
        leaf = x.clone().requires_grad_()
        LF.cross_entropy(leaf, y).backward()
        expected[i] = leaf.grad
    got = {}

    def work(i, x, y):
        for _ in range(200):
            leaf = x.clone().requires_grad_()
            LF.cross_entropy(leaf, y).backward()
            got[i] = leaf.grad

    run_in_threads(work, problems, intra_op_threads=1)
    assert all(torch.equal(got[i], expected[i]) for i in expected)


def _child(queue):
    x = torch.randn(32, 10, dtype=torch.float64, requires_grad=True)
    y = torch.arange(32) % 10
    loss = LF.nll_loss(x, y)
    loss.backward()
    queue.put((loss.grad_fn.name(), float(x.grad.sum()), float(x.grad.min())))


def test_a_forked_child_uses_the_entry(fast):
    name, total, low = in_forked_child(_child)
    assert "losskit::NllLoss" in name and abs(total + 1.0) < 1e-12 and abs(low + 1 / 32) < 1e-15


def _script(body: str, **env) -> str:
    done = subprocess.run(
        [sys.executable, "-c", body], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_losskit_entry_0_turns_it_off():
    out = _script(
        "import torch, losskit.functional as LF\nfrom losskit.engine import entry\n"
        "x = torch.randn(8, 4, requires_grad=True)\n"
        "for _ in range(3): LF.mse_loss(x, torch.zeros(8, 4)).backward()\n"
        "print(entry.wait(), entry.status(), LF.mse_loss(x, torch.zeros(8, 4)).grad_fn.name())",
        LOSSKIT_ENTRY="0",
    )
    assert out.startswith("None disabled (LOSSKIT_ENTRY=0)") and "losskit::" not in out


def test_a_fresh_cache_builds_in_the_background_and_changes_no_bits(tmp_path):
    """A user's first calls: the kernel library builds in the calling thread, the entry in the background; calls
    meanwhile take the Python path, later ones the entry, with the same bits."""
    if os.environ.get("LOSSKIT_SANITIZE"):
        pytest.skip("the entry points are off in sanitizer builds")
    out = _script(
        "import torch, losskit.functional as LF\nfrom losskit.engine import entry\n"
        "g = torch.Generator().manual_seed(3)\nx = torch.randn(64, 10, generator=g)\ny = torch.arange(64) % 10\n"
        "def step():\n    leaf = x.clone().requires_grad_()\n    loss = LF.cross_entropy(leaf, y)\n"
        "    loss.backward()\n    return loss, leaf.grad, loss.grad_fn.name()\n"
        "first = [step() for _ in range(3)]\n"
        "assert entry.wait(600) is not None, entry.status()\n"
        "later = step()\n"
        "same = all(torch.equal(a[0], later[0]) and torch.equal(a[1], later[1]) for a in first)\n"
        "print(first[0][2], later[2], same)",
        LOSSKIT_ENTRY="background",
        LOSSKIT_CACHE_DIR=str(tmp_path),
    )
    first, later, same = out.split()
    assert "losskit::" not in first and later.endswith("losskit::CrossEntropyLoss>") and same == "True", out


@pytest.mark.parametrize("path", ["entry", "python"])
def test_ctc_losses_changed_in_place_before_backward_raise(fast, monkeypatch, path):
    """'none' returns the per-sample losses the backward reads: changed in place, backward raises (as torch)."""
    if path == "python":
        entry_off(monkeypatch)
    _, ref, x, t, _ = _problem("ctc")
    leaf = x.clone().requires_grad_()
    loss = _ctc(LF.ctc_loss)(leaf, t, reduction="none")
    loss /= 2
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.sum().backward()
    ref_loss = ref(x.clone().requires_grad_(), t, reduction="none")
    ref_loss /= 2
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ref_loss.sum().backward()


def test_element_wise_states_only_for_plain_parameters():
    """The C++ node keeps an id of (loss, parameters) for create_graph: only plain values are remembered (a tensor
    or list parameter, and an ever-growing set of values past the cap, take the Python path)."""
    from losskit.losses.huber_loss import HUBER

    kind, delta, state = entry.pointwise_code(HUBER, 0.5, "mean", None)
    assert (kind, delta) == (native_pointwise.HUBER, 0.5)  # the kernel's Huber with delta 0.5
    assert entry._STATES[state] == (HUBER, 0.5, "mean", None)  # what create_graph recomputes from
    assert entry.pointwise_code(HUBER, torch.tensor(0.5), "mean", None) is None
    assert entry.pointwise_code(HUBER, [0.5], "mean", None) is None
