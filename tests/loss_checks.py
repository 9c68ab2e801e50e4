"""Checks shared by the test files of the issue-13 losses (poisson/gaussian NLL, cosine/hinge embedding,
multilabel soft margin, multi margin, triplet): each compares losskit with torch 2.13 on the same inputs.

* :func:`compare` — values, dtype, shape, NaN/inf positions and the gradient of every input that requires grad
  (random cotangent), float64/float32 within ``helpers.TOLERANCES``, bfloat16 no further from the float64
  truth than torch's own bf16 result (x1.5 + 1e-3), via ``torch_db.compare_call``;
* :func:`legacy` — ``size_average``/``reduce`` give torch's reduction and torch's warning;
* :func:`transforms` — ``torch.compile(fullgraph=True)``, ``torch.export``, ``torch.func.grad`` and per-sample
  ``vmap(grad)`` give the eager result;
* :func:`bad` — a bad call raises an instance of torch's exception type, naming the argument.
"""

from __future__ import annotations

import warnings

import torch

import torch_db
from helpers import LEGACY, TOLERANCES

DTYPES = [torch.float64, torch.float32, torch.bfloat16]
REDUCTIONS = ["none", "mean", "sum"]


def cast(args, dtype, grad: tuple[int, ...] = ()):
    """Floating tensors of ``args`` cast to ``dtype`` (others kept); those at ``grad`` require grad."""
    out = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            a = a.detach().to(dtype).requires_grad_(i in grad)
        out.append(a)
    return tuple(out)


def compare(ours, theirs, args, kwargs=None, dtype=torch.float64, grad: tuple[int, ...] = (0,)) -> None:
    args = cast(args, dtype, grad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        why = torch_db.compare_call(ours, theirs, args, dict(kwargs or {}), dtype)
    assert why is None, why


def legacy(ours, theirs, args, kwargs=None) -> None:
    for size_average, reduce in LEGACY:
        kw = dict(kwargs or {}, size_average=size_average, reduce=reduce)
        with warnings.catch_warnings(record=True) as mine:
            warnings.simplefilter("always")
            o = ours(*args, **kw)
        with warnings.catch_warnings(record=True) as ref:
            warnings.simplefilter("always")
            r = theirs(*args, **kw)
        assert [str(w.message) for w in mine] == [str(w.message) for w in ref]
        assert o.shape == r.shape
        torch.testing.assert_close(o, r, **TOLERANCES[torch.float64])


def transforms(fn, args, kwargs=None, grad_arg: int = 0) -> None:
    """compile (fullgraph), export, func.grad and per-sample vmap(grad) agree with eager ``fn``."""
    kwargs = dict(kwargs or {})
    eager = fn(*args, **kwargs)
    compiled = torch.compile(fn, fullgraph=True, dynamic=False)(*args, **kwargs)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)

    class Wrapped(torch.nn.Module):
        def forward(self, *a):
            return fn(*a, **kwargs)

    exported = torch.export.export(Wrapped(), tuple(args)).module()(*args)
    torch.testing.assert_close(exported, eager, rtol=1e-5, atol=1e-6)

    def scalar(x, *rest):
        a = list(args)
        a[grad_arg] = x
        for i, r in zip([i for i in range(len(args)) if i != grad_arg], rest, strict=True):
            a[i] = r
        out = fn(*a, **kwargs)
        return out.sum()

    others = [a for i, a in enumerate(args) if i != grad_arg]
    x = args[grad_arg].detach().requires_grad_()
    expected = torch.autograd.grad(scalar(x, *others), x)[0]
    torch.testing.assert_close(torch.func.grad(scalar)(args[grad_arg], *others), expected, rtol=1e-6, atol=1e-7)

    def one(x, *rest):  # one sample: batch of one
        return scalar(x.unsqueeze(0), *(r.unsqueeze(0) for r in rest))

    per_sample = torch.func.vmap(torch.func.grad(one))(args[grad_arg], *others)
    loop = torch.stack([torch.func.grad(one)(args[grad_arg][i], *(r[i] for r in others)) for i in range(len(x))])
    torch.testing.assert_close(per_sample, loop, rtol=1e-6, atol=1e-7)


def bad(ours_call, torch_call, fragments) -> None:
    """``ours_call()`` raises an instance of what ``torch_call()`` raises (when given), naming ``fragments``."""
    torch_exc = None
    if torch_call is not None:
        try:
            torch_call()
        except Exception as e:  # noqa: BLE001
            torch_exc = e
        assert torch_exc is not None, "torch accepts this call"
    try:
        ours_call()
    except Exception as e:  # noqa: BLE001
        if torch_exc is not None:
            assert isinstance(e, type(torch_exc)), f"{type(e).__name__} is not a {type(torch_exc).__name__}"
        for fragment in fragments:
            assert fragment in str(e), f"{fragment!r} not in {e}"
        return
    raise AssertionError("losskit accepted the call")
