"""Cosine embedding and triplet margin losses on the element-wise kernel library (``kernels/embedding.h``): the
loss and every input's gradient of an eager ``(N, D)`` call in one native call (torch runs about ten ops forward
and as many autograd nodes back for each).

As in :mod:`.native_targets`: each ``*_plain`` returns the loss of an eager call it covers or None (the loss's
general path then validates and raises); backward hands the gradients to autograd, computes them again scaled
by ``grad_output`` when that is not 1 (or on a second backward), and under ``create_graph=True`` differentiates
the loss's own differentiable formula (``general``) at the saved inputs.
"""

from __future__ import annotations

import ctypes

import torch

from . import native_calls, native_pointwise
from .autograd import eager_apply
from .native_targets import _DTYPES, _available, readable

COSINE, TRIPLET = 0, 1


class _EmbCall(ctypes.Structure):
    """The kernel's ``EmbCall``, field for field."""

    _fields_ = [
        ("kind", ctypes.c_int64),
        ("dtype", ctypes.c_int64),
        ("a", ctypes.c_void_p),
        ("b", ctypes.c_void_p),
        ("c", ctypes.c_void_p),
        ("ga", ctypes.c_void_p),
        ("gb", ctypes.c_void_p),
        ("gc", ctypes.c_void_p),
        ("loss", ctypes.c_void_p),
        ("n", ctypes.c_int64),
        ("d", ctypes.c_int64),
        ("margin", ctypes.c_double),
        ("eps", ctypes.c_double),
        ("p1", ctypes.c_int64),
        ("swap", ctypes.c_int64),
        ("gscale", ctypes.c_double),
        ("ldiv", ctypes.c_double),
    ]


_FILL = native_calls.packer(_EmbCall)


def run(kind: int, a, b, c, options: tuple, wants: tuple[bool, bool, bool], gscale: float | None = None):
    """(loss, ∂/∂a, ∂/∂b, ∂/∂c) (None where not wanted) of ``kind`` on contiguous ``(N, D)`` rows;
    ``options`` = (margin, eps, p == 1, swap, mean)."""
    margin, eps, p1, swap, mean = options
    n, d = a.shape
    grads = [torch.empty_like(t) if want else None for t, want in zip((a, b, c), wants, strict=True)]
    out = native_calls.scalar(a.dtype)
    _, address = _FILL(
        kind,
        _DTYPES[a.dtype],
        a.data_ptr(),
        b.data_ptr(),
        c.data_ptr(),
        *(0 if g is None else g.data_ptr() for g in grads),
        out.data_ptr(),
        n,
        d,
        margin,
        eps,
        int(p1),
        int(swap),
        (1.0 / n if mean else 1.0) if gscale is None else gscale,
        float(n) if mean else 1.0,
    )
    native_pointwise.library().losskit_embedding(address)  # type: ignore[union-attr]
    return out, *grads


class NativeEmbedding(torch.autograd.Function):
    """``state``: (kind, options, general) — ``general(a, b, c)`` is the loss's differentiable formula."""

    @staticmethod
    def forward(ctx, a, b, c, state):
        kind, options, _ = state
        ctx.wants = tuple(ctx.needs_input_grad[:3])
        loss, *grads = run(kind, a, b, c, options, ctx.wants)
        ctx.grads, ctx.state = grads, state
        ctx.save_for_backward(a, b, c)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grads, ctx.grads = ctx.grads, None
        a, b, c = ctx.saved_tensors
        kind, options, general = ctx.state
        if torch.is_grad_enabled():  # create_graph=True: the formula's own gradient, differentiable
            inputs = [t for t, want in zip((a, b, c), ctx.wants, strict=True) if want]
            found = iter(torch.autograd.grad(general(a, b, c), inputs, grad_output, create_graph=True))
            return (*(next(found) if want else None for want in ctx.wants), None)
        if grads is None or float(grad_output) != 1.0:  # again (retain_graph), or scaled as torch's mean scales
            go = float(grad_output)
            _, *grads = run(kind, a, b, c, options, ctx.wants, float(grad_output / a.shape[0]) if options[4] else go)
        return (*grads, None)


_apply = eager_apply(NativeEmbedding)


def _rows_ok(*tensors) -> bool:
    """Readable (see :func:`.native_targets.readable`) tensors of one fp32/fp64 dtype and one (N, D) shape,
    N and D > 0."""
    first = tensors[0]
    return (
        readable(*tensors)
        and (first.dtype is torch.float32 or first.dtype is torch.float64)
        and first.dim() == 2
        and first.shape[0] > 0
        and first.shape[1] > 0
        and all(t.dtype is first.dtype and t.shape == first.shape for t in tensors)
    )


def _call(kind, a, b, c, options, general):
    wants = (a.requires_grad, b.requires_grad, c.requires_grad) if torch.is_grad_enabled() else (False,) * 3
    if any(wants):
        return _apply(a, b, c, (kind, options, general))
    return run(kind, a, b, c, options, wants)[0]


def cosine_plain(input1, input2, target, margin, reduction, general):
    """The eager cosine_embedding_loss of ``(N, D)`` inputs with an ``(N,)`` target of their dtype (needing no
    grad), a finite float margin, 'mean' or 'sum'; or None."""
    if not (
        _rows_ok(input1, input2)
        and readable(target)
        and target.dtype is input1.dtype
        and target.shape == (input1.shape[0],)
        and not target.requires_grad
        and (reduction == "mean" or reduction == "sum")
        and type(margin) in (float, int)
        and abs(margin) < float("inf")
        and _available()
    ):
        return None
    return _call(COSINE, input1, input2, target, (float(margin), 0.0, False, False, reduction == "mean"), general)


def triplet_plain(anchor, positive, negative, margin, p, eps, swap, reduction, general):
    """The eager triplet_margin_loss of three ``(N, D)`` inputs, p 1 or 2, a finite margin > 0, a finite eps, a
    bool swap, 'mean' or 'sum'; or None."""
    if not (
        type(p) in (float, int)
        and _rows_ok(anchor, positive, negative)
        and (p == 1.0 or p == 2.0)
        and type(swap) is bool
        and (reduction == "mean" or reduction == "sum")
        and type(margin) in (float, int)
        and 0 < margin < float("inf")
        and type(eps) in (float, int)
        and abs(eps) < float("inf")
        and _available()
    ):
        return None
    options = (float(margin), float(eps), p == 1.0, swap, reduction == "mean")
    return _call(TRIPLET, anchor, positive, negative, options, general)
