"""The element-wise engine: one chunked autograd Function for every loss that is a function of (x, t).

A :class:`Pointwise` names a loss by two formulas on chunks: ``loss(x, t, p)`` and ``grad(x, t, p, out)``
(``∂l/∂x``, written into ``out``). The forward of ``'mean'``/``'sum'`` walks rows of the inputs in
cache-sized chunks and keeps only partial sums, so it holds no input-sized temporary; ``'none'``
writes the loss straight into its output. Backward writes ``∂l/∂x · weight · grad_output`` chunk by
chunk into the one gradient buffer autograd needs. Cases the fast path does not cover (a target that
requires grad, broadcasting other than along the last dim, mixed dtypes) use the family's plain
PyTorch reference, which autograd differentiates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import _reduction
from .._tracing import tracing
from . import native_pointwise

CHUNK_ELEMENTS = 1 << 17
# Below this many elements the plain reference (a few torch ops that autograd differentiates in C++) costs less
# than the chunked Function's fixed cost, and its temporaries are a few hundred KiB at most
SMALL_ELEMENTS = 1 << 16
_SUMMED_DTYPES = (torch.float32, torch.float64)  # low precision keeps the element-wise sum (torch's accuracy)


@dataclass(frozen=True)
class Pointwise:
    name: str
    loss: Callable  # (x, t, params) -> element-wise loss of a chunk (a fresh tensor)
    grad: Callable  # (x, t, params, out) -> ∂loss/∂x of a chunk, written into out
    # a constant factor of both (params -> float), applied to the reduced sums and to grad_output instead of
    # element by element: e.g. smooth L1 is Huber(δ=β) / β
    scale: Callable | None = None
    # (x, t, params) -> the chunk's summed loss as a 0-dim tensor, without writing the element-wise loss (e.g.
    # dot products); used for unweighted 'mean'/'sum' in fp32/fp64
    reduced: Callable | None = None
    # params -> (kind, parameter) of losskit's element-wise CPU kernel (kernels/pointwise.cpp), or None where
    # the kernel does not compute this case (see :mod:`.native_pointwise`)
    native: Callable | None = None


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(1, 1) if t.dim() == 0 else t.reshape(-1, t.shape[-1])


def _row_operand(w: torch.Tensor | None, x: torch.Tensor):
    """``w`` as something a (rows, last) chunk can use: full rows, or a vector broadcast along the last dim."""
    if w is None:
        return None, True
    if w.shape == x.shape and w.is_contiguous():
        return ("rows", _rows(w)), True
    last = x.shape[-1] if x.dim() else 1
    if w.dim() <= x.dim() and all(d == 1 for d in w.shape[:-1]) and (w.dim() == 0 or w.shape[-1] in (1, last)):
        return ("vector", w.reshape(-1)), True
    return None, False


def _slice(op, s: int, e: int):
    if op is None:
        return None
    kind, value = op
    return value[s:e] if kind == "rows" else value


class _PointwiseFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, t, w, spec: Pointwise, params, reduction: str, mean_over_weights: bool):
        w_op, _ = _row_operand(w, x)
        p_op = params
        x2, t2 = _rows(x), _rows(t)
        rows, last = x2.shape
        step = max(1, CHUNK_ELEMENTS // max(last, 1))
        out = torch.empty_like(x, memory_format=torch.contiguous_format) if reduction == "none" else None
        out2 = _rows(out) if out is not None else None
        acc = torch.float64
        total = torch.zeros((), dtype=acc, device=x.device)
        summed = spec.reduced if (out2 is None and w_op is None and x.dtype in _SUMMED_DTYPES) else None
        for s in range(0, rows, step):
            e = min(rows, s + step)
            if summed is not None:
                total += summed(x2[s:e], t2[s:e], p_op)
                continue
            loss = spec.loss(x2[s:e], t2[s:e], p_op)
            wc = _slice(w_op, s, e)
            if wc is not None:
                loss = loss.mul_(wc)
            if out2 is not None:
                out2[s:e] = loss
            else:
                total += loss.sum()  # each chunk sums in its own dtype; the partial sums add up in fp64
        factor = 1.0 if spec.scale is None else spec.scale(params)
        if out is not None:  # reduction 'none'
            result = out if factor == 1.0 else out.mul_(factor)
        elif reduction == "sum":
            result = (total * factor).to(x.dtype)
        else:
            denom = w.sum() if (mean_over_weights and w is not None) else x.numel()
            result = (total * factor / denom).to(x.dtype) if x.numel() else torch.full((), float("nan"), dtype=x.dtype)
        ctx.spec, ctx.params, ctx.reduction, ctx.mean_over_weights = spec, params, reduction, mean_over_weights
        ctx.save_for_backward(x, t, w)
        return result

    @staticmethod
    def backward(ctx, grad_output):
        x, t, w = ctx.saved_tensors
        spec, params = ctx.spec, ctx.params
        if torch.is_grad_enabled():
            grad = differentiable_grad(spec, params, x, t, w, ctx.reduction, ctx.mean_over_weights, grad_output)
            return grad, None, None, None, None, None, None
        if spec.scale is not None:
            grad_output = grad_output * spec.scale(params)
        w_op, _ = _row_operand(w, x)
        grad = torch.empty_like(x, memory_format=torch.contiguous_format)
        x2, t2, g2 = _rows(x), _rows(t), _rows(grad)
        rows, last = x2.shape
        step = max(1, CHUNK_ELEMENTS // max(last, 1))
        if ctx.reduction == "none":
            go2 = _rows(grad_output.expand(x.shape))
            scalar = None
        else:
            scalar = grad_output
            if ctx.reduction == "mean":
                denom = w.sum() if (ctx.mean_over_weights and w is not None) else max(x.numel(), 1)
                scalar = grad_output / denom
        for s in range(0, rows, step):
            e = min(rows, s + step)
            gc = spec.grad(x2[s:e], t2[s:e], params, g2[s:e])
            wc = _slice(w_op, s, e)
            if wc is not None:
                gc.mul_(wc)
            gc.mul_(go2[s:e] if scalar is None else scalar)
        return grad, None, None, None, None, None, None


def differentiable_grad(spec: Pointwise, params, x, t, w, reduction: str, mean_over_weights: bool, grad_output):
    """∂loss/∂x · grad_output for backward under create_graph=True: the spec's formula, unchunked and out of
    place, so that autograd can differentiate it again."""
    if spec.scale is not None:
        grad_output = grad_output * spec.scale(params)
    grad = spec.grad(x, t, params, None)
    if w is not None:
        grad = grad * w
    if reduction == "mean":
        denom = w.sum() if (mean_over_weights and w is not None) else max(x.numel(), 1)
        grad_output = grad_output / denom
    return grad * grad_output


def is_row_vector(t: torch.Tensor | None, x: torch.Tensor) -> bool:
    """None, or a tensor that broadcasts against ``x`` along its last dim only (e.g. ``(C,)`` for ``(N, C)``)."""
    op, ok = _row_operand(t, x)
    return ok and (op is None or op[0] == "vector")


def fast_path_ok(x: torch.Tensor, t: torch.Tensor, *extras: torch.Tensor | None) -> bool:
    """True when the chunked Function computes this call exactly and pays: not a small problem
    (:data:`SMALL_ELEMENTS`), same shape, dtype, contiguity, and a target that needs no gradient; weights
    equal-shaped or broadcast along the last dim only; not traced."""
    if x.numel() < SMALL_ELEMENTS or t.requires_grad or t.shape != x.shape or t.dtype != x.dtype or tracing(x, t):
        return False
    if not (x.is_contiguous() and t.is_contiguous()):
        return False
    for extra in extras:
        if extra is not None and (extra.requires_grad or extra.dtype != x.dtype or not _row_operand(extra, x)[1]):
            return False
    return True


def pointwise(spec: Pointwise, x, t, w, params, reduction: str, mean_over_weights: bool = False) -> torch.Tensor:
    """The reduced element-wise loss of ``x`` against ``t`` (weighted by ``w``) through the chunked engine."""
    return _PointwiseFn.apply(x, t, w, spec, params, reduction, mean_over_weights)


def reduce_weighted(loss, weight, reduction: str, mean_over_weights: bool):
    """Reduce an element-wise loss, optionally multiplied by ``weight``: with ``mean_over_weights`` the mean
    divides by ``Σ weight`` (torch's mse/l1), otherwise by the element count (torch's huber)."""
    if weight is None:
        return _reduction.reduce_loss(loss, reduction)
    loss = loss * weight
    if reduction == "mean" and mean_over_weights:
        return loss.sum() / weight.sum()
    return _reduction.reduce_loss(loss, reduction)


def route(spec, reference, input, target, weight, reduction, params=None, *, mean_over_weights=False, extras=()):
    """Route an element-wise loss: the chunked engine when it covers the call exactly, else the plain
    PyTorch ``reference()`` (element-wise loss) differentiated by autograd and reduced here."""
    # a constant factor that overflows the dtype (smooth L1's 1/β for a subnormal β) cannot be folded in
    code = spec.native(params) if (spec.native is not None and weight is None and not extras) else None
    if code is not None and reduction in ("none", "mean", "sum") and native_pointwise.eligible(input, target):
        try:
            return native_pointwise.loss(spec, params, input, target, reduction, code)
        except native_pointwise._BadProbability:
            pass  # binary cross entropy validates its input before it routes; let its reference raise
    foldable = spec.scale is None or spec.scale(params) <= torch.finfo(input.dtype).max
    if foldable and fast_path_ok(input, target, weight, *extras):
        return pointwise(spec, input, target, weight, params, reduction, mean_over_weights)
    return reduce_weighted(reference(), weight, reduction, mean_over_weights)
