"""Gaussian negative log likelihood."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, randn
from .._tracing import tracing
from ..engine import native_pairs
from ..engine.autograd import plain_apply
from ._base import Loss

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
CHUNK_ELEMENTS = 1 << 16
_LOW = (torch.float16, torch.bfloat16)  # computed chunk by chunk in float32, rounded once


class _ClampMin(torch.autograd.Function):
    """``max(var, eps)`` whose gradient is the identity: torch clamps a clone of ``var`` without autograd."""

    generate_vmap_rule = True

    @staticmethod
    def forward(var, eps: float):
        return var.clamp(min=eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad, None


_clamp_min_apply = plain_apply(_ClampMin)  # torch's C++ apply in plain eager calls


def clamped_var(var: torch.Tensor, eps: float) -> torch.Tensor:
    """``max(var, eps)`` with the identity as gradient (as torch's clamp under ``no_grad``)."""
    return _clamp_min_apply(var, eps)


def gaussian_nll(input, target, var, full: bool) -> torch.Tensor:
    """Element-wise ``½·(log v + (x - t)² / v)`` (``+ ½·log 2π`` when ``full``), ``v`` already clamped."""
    loss = 0.5 * (torch.log(var) + (input - target) ** 2 / var)
    if full:
        loss = loss + HALF_LOG_2PI
    return loss


def _chunk_loss(x, t, v, eps: float, full: bool) -> torch.Tensor:
    if x.dtype in _LOW:
        x, t, v = x.float(), t.float(), v.float()
    v = v.clamp(min=eps)
    d = torch.sub(x, t)
    loss = d.mul_(d).div_(v).add_(torch.log(v)).mul_(0.5)
    return loss.add_(HALF_LOG_2PI) if full else loss


class _GaussianNLL(torch.autograd.Function):
    """Eager fused path: the forward of ``'mean'``/``'sum'`` holds no input-sized temporary; backward
    writes each gradient chunk by chunk into the one buffer autograd needs."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, target, var, eps: float, full: bool, reduction: str):
        x2, t2 = input.reshape(-1, input.shape[-1]), target.reshape(-1, input.shape[-1])
        v2 = var.reshape(x2.shape[0], -1)
        rows, last = x2.shape
        step = max(1, CHUNK_ELEMENTS // max(last, 1))
        out = torch.empty_like(x2) if reduction == "none" else None
        total = torch.zeros((), dtype=torch.float64)
        for s in range(0, rows, step):
            e = min(rows, s + step)
            loss = _chunk_loss(x2[s:e], t2[s:e], v2[s:e], eps, full)
            if out is None:
                total += loss.sum()
            else:
                out[s:e] = loss
        if out is not None:
            return out.reshape(input.shape)
        if reduction == "mean":
            total = total / input.numel()
        return total.to(input.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, var, eps, full, reduction = inputs
        ctx.save_for_backward(input, target, var)
        ctx.eps, ctx.reduction = eps, reduction

    @staticmethod
    def backward(ctx, grad_output):
        input, target, var = ctx.saved_tensors
        eps, reduction = ctx.eps, ctx.reduction
        need_x, need_t, need_v = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph: the same formulas out of place, so autograd sees them
            v = clamped_var(var, eps)
            d = (input - target) / v
            g = grad_output / input.numel() if reduction == "mean" else grad_output
            gx = d * g
            gv = (0.5 * (1 - d * (input - target)) / v * g).sum_to_size(var.shape)
            return gx if need_x else None, -gx if need_t else None, gv if need_v else None, None, None, None
        last = input.shape[-1]
        x2, t2 = input.reshape(-1, last), target.reshape(-1, last)
        v2 = var.reshape(x2.shape[0], -1)
        rows = x2.shape[0]
        step = max(1, CHUNK_ELEMENTS // max(last, 1))
        gx = torch.empty_like(x2) if (need_x or need_t) else None
        gv = torch.empty_like(v2) if need_v else None
        work = torch.float32 if input.dtype in _LOW else input.dtype
        go2 = grad_output.reshape(-1, last) if reduction == "none" else None
        scale = grad_output.to(work) / input.numel() if reduction == "mean" else grad_output.to(work)
        for s in range(0, rows, step):
            e = min(rows, s + step)
            xc, tc, vc = x2[s:e].to(work), t2[s:e].to(work), v2[s:e].to(work)
            v = vc.clamp(min=eps)
            g = go2[s:e].to(work) if go2 is not None else scale
            d = torch.sub(xc, tc).div_(v)  # (x - t) / v
            if gv is not None:
                # ∂/∂v ½(log v + (x - t)²/v) = ½·(1 - (x - t)²/v) / v
                gvc = torch.sub(xc, tc).mul_(d).neg_().add_(1).div_(v).mul_(0.5).mul_(g)
                gv[s:e] = gvc if gv.shape[1] == last else gvc.sum(1, keepdim=True)
            if gx is not None:
                gx[s:e] = d.mul_(g)
        gx = gx.reshape(input.shape) if gx is not None else None
        return (
            gx if need_x else None,
            (-gx if need_t else None) if gx is not None else None,
            gv.reshape(var.shape) if gv is not None else None,
            None,
            None,
            None,
        )


_gaussian_nll_apply = plain_apply(_GaussianNLL)  # torch's C++ apply in plain eager calls


def _fused_ok(input, target, var) -> bool:
    if tracing() or input.dim() == 0 or input.numel() == 0:
        return False
    if not (input.is_floating_point() and input.dtype == target.dtype == var.dtype):
        return False
    if target.shape != input.shape or not (input.is_contiguous() and target.is_contiguous() and var.is_contiguous()):
        return False
    return var.shape == input.shape or var.shape == (*input.shape[:-1], 1)


def gaussian_nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    var: torch.Tensor | float,
    full: bool = False,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Gaussian negative log likelihood: ``l = ½·(log max(v, eps) + (x - t)² / max(v, eps))``, plus
    ``½·log 2π`` when ``full``.

    ``var`` holds one variance per element (heteroscedastic: ``input``'s shape), or one per row shared
    by the last dim (homoscedastic: ``input``'s shape without its last dim, or with one dim of size 1),
    or is a float. It must not be negative. The clamp at ``eps`` has no gradient (as in torch): the
    gradient with respect to ``var`` is that of the formula at the clamped value.

    Shapes: input ``(N, *)`` or ``(*)``, target like input (or broadcastable), var as above; ``'none'``
    returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> x, t = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[1.5, 2.0], [0.0, 3.0]])
        >>> F.gaussian_nll_loss(x, t, torch.tensor([[0.5, 0.5], [2.0, 2.0]]), reduction="none")
        tensor([[-0.0966, -0.3466],
                [ 0.3466,  1.3466]])
        >>> F.gaussian_nll_loss(x, t, torch.tensor([0.5, 2.0]))  # one variance per row
        tensor(0.3125)
    """
    fast = native_pairs.gaussian_nll_plain(input, target, var, full, eps, reduction)  # the common eager call
    if fast is not None:
        return fast
    fn = "gaussian_nll_loss"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    _checks.embedding.var_argument(fn, var)
    full = _checks.flag(fn, "full", full)
    eps = _checks.number(fn, "eps", eps)
    _checks.embedding.non_negative_var(fn, var)
    if not isinstance(var, torch.Tensor):
        var = var * torch.ones_like(input)
    var = _checks.embedding.gaussian_var(fn, var, input)
    reduction = _checks.reduction(reduction, _reduction.REDUCTIONS)
    _checks.broadcast_shape(fn, ("input", "target", "var"), input, target, var)
    if _fused_ok(input, target, var):
        return _gaussian_nll_apply(input, target, var, eps, full, reduction)
    return _reduction.reduce_loss(gaussian_nll(input, target, clamped_var(var, eps), full), reduction)


class GaussianNLLLoss(Loss):
    r"""Gaussian negative log likelihood ``½·(log v + (x - t)² / v)``; see
    :func:`losskit.functional.gaussian_nll_loss`.

    Shapes: input ``(N, *)`` or ``(*)``, target alike, var alike or with one dim of size 1 (or without the
    last dim); output ``()`` or, for ``'none'``, input's shape.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.GaussianNLLLoss()(torch.tensor([1.0, 2.0]), torch.tensor([1.5, 2.0]), torch.tensor([0.5, 0.5]))
        tensor(-0.2216)
    """

    __constants__ = ["full", "eps", "reduction"]
    full: bool
    eps: float

    def __init__(self, *, full: bool = False, eps: float = 1e-6, reduction: str = "mean") -> None:
        super().__init__(None, None, reduction)
        self.full = full
        self.eps = eps

    def forward(self, input: Tensor, target: Tensor, var: Tensor | float) -> Tensor:
        return gaussian_nll_loss(input, target, var, full=self.full, eps=self.eps, reduction=self.reduction)


def _sample(shape, dtype, gen):
    x, t = randn(shape, dtype, gen), randn(shape, dtype, gen)
    var = (torch.rand(shape, generator=gen, dtype=torch.float64) + 0.1).to(dtype)
    return Problem((x, t, var), 1)


CATALOG = (
    Entry(
        "gaussian_nll_loss",
        gaussian_nll_loss,
        GaussianNLLLoss,
        "regression",
        _sample,
        aliases=("gaussian_nll", "gaussian"),
        options=({}, {"full": True}, {"eps": 0.5}),
        legacy=False,
        plot=Curve(
            "error",
            "gaussian_nll_loss (var = 1)",
            lambda d, _: gaussian_nll_loss(d, torch.zeros_like(d), torch.ones_like(d), reduction="none"),
        ),
    ),
)
