"""Multi-label soft margin (one-versus-all logistic) loss."""

from __future__ import annotations

import torch
import torch.nn.functional as _F
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, randn
from .._tracing import tracing
from ..engine import native_pointwise
from ..engine.autograd import plain_apply
from ._base import WeightedLoss
from .binary_cross_entropy_with_logits import BCE_WITH_LOGITS

CHUNK_ELEMENTS = 1 << 17  # 512 KiB of fp32 per chunk: in cache, few Python steps
_LOW = (torch.float16, torch.bfloat16)


def multilabel_soft_margin(input, target, weight) -> torch.Tensor:
    """Per sample ``-Σ_c w_c·(t_c·log σ(x_c) + (1 - t_c)·log σ(-x_c)) / C`` over the last dim (torch's ops)."""
    loss = -(target * _F.logsigmoid(input) + (1 - target) * _F.logsigmoid(-input))
    if weight is not None:
        loss = loss * weight
    return loss.sum(dim=-1) / input.shape[-1]


def _chunk_loss(x, t, w) -> torch.Tensor:
    """``log(1 + exp(-|x|)) + t·max(-x, 0) + (1 - t)·max(x, 0)``: torch's value without its cancellation
    (``t·softplus(-x) + (1 - t)·softplus(x)``, so ``0·∞`` gives NaN where torch's does), weighted."""
    loss = x.abs().neg_().exp_().log1p_()
    loss.addcmul_(t, x.neg().clamp_min_(0)).addcmul_(1 - t, x.clamp_min(0))
    return loss if w is None else loss.mul_(w)


class _MultilabelSoftMargin(torch.autograd.Function):
    """Eager fused path: rows in cache-sized chunks, low precision computed in fp32; the forward keeps no
    ``(N, C)`` temporary, the backward writes ``w·(σ(x) - t)/C · g`` into the one gradient buffer."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x2, t2, w, reduction: str):
        rows, c = x2.shape
        step = max(1, CHUNK_ELEMENTS // c)
        work = torch.float32 if x2.dtype in _LOW else x2.dtype
        wk = None if w is None else w.to(work)
        per_row = torch.empty(rows, dtype=work, device=x2.device)
        for s in range(0, rows, step):
            e = min(rows, s + step)
            torch.sum(_chunk_loss(x2[s:e].to(work), t2[s:e].to(work), wk), dim=1, out=per_row[s:e])
        per_row.div_(c)
        if reduction == "none":
            return per_row.to(x2.dtype)
        return (per_row.sum() if reduction == "sum" else per_row.mean()).to(x2.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x2, t2, w, reduction = inputs
        ctx.save_for_backward(x2, t2, w)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx, grad_output):
        x2, t2, w = ctx.saved_tensors
        rows, c = x2.shape
        work = torch.float32 if x2.dtype in _LOW else x2.dtype
        if ctx.reduction == "none":
            scale = grad_output.reshape(rows, 1).to(work) / c
        else:
            scale = grad_output.to(work) / (c * rows if ctx.reduction == "mean" else c)
        if torch.is_grad_enabled():  # create_graph: out of place, differentiable again
            g = torch.sigmoid(x2) - t2
            return ((g if w is None else g * w) * scale).to(x2.dtype), None, None, None
        grad = torch.empty_like(x2, memory_format=torch.contiguous_format)
        low = x2.dtype in _LOW
        wk, sk = (None if w is None else w.to(work)), scale.to(work)
        step = max(1, CHUNK_ELEMENTS // c)
        for s in range(0, rows, step):
            e = min(rows, s + step)
            gc = torch.sigmoid(x2[s:e].to(work)) if low else torch.sigmoid(x2[s:e], out=grad[s:e])
            gc.sub_(t2[s:e])
            if wk is not None:
                gc.mul_(wk)
            gc.mul_(sk[s:e] if sk.dim() else sk)
            if low:
                grad[s:e] = gc
        return grad, None, None, None


_multilabel_soft_margin_apply = plain_apply(_MultilabelSoftMargin)  # torch's C++ apply in plain eager calls


def _fused_ok(input, target, weight) -> bool:
    if tracing() or input.dim() == 0 or input.numel() == 0 or not input.is_floating_point():
        return False
    if target.shape != input.shape or target.dtype != input.dtype or target.requires_grad:
        return False
    if not (input.is_contiguous() and target.is_contiguous()):
        return False
    if weight is None:
        return True
    c = input.shape[-1]
    return (
        not weight.requires_grad
        and weight.dtype == input.dtype
        and weight.dim() <= input.dim()
        and weight.numel() == c
        and weight.shape[-1] == c
    )


def multilabel_soft_margin_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Multi-label one-versus-all logistic loss, per sample (row):
    ``l_n = -Σ_c w_c·(y_c·log σ(x_c) + (1 - y_c)·log σ(-x_c)) / C``.

    ``target`` holds 0/1 labels (or probabilities) per class; ``weight`` (optional, typically ``(C)``)
    rescales each class. The classes are the last dim.

    Shapes: input ``(N, C)`` or ``(C)`` (or ``(*, C)``), target alike; ``'none'`` returns ``(N)`` (the
    leading dims), else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> x = torch.tensor([[2.0, -1.0, 0.0]])
        >>> F.multilabel_soft_margin_loss(x, torch.tensor([[1.0, 0.0, 1.0]]))
        tensor(0.3778)
    """
    if (
        weight is None
        and size_average is None
        and reduce is None
        and (reduction == "mean" or reduction == "sum")
        and type(input) is Tensor
        and input.dim() == 2
        and input.shape[1] > 0
    ):  # the common eager call: BCE with logits on the element-wise kernel, its sum over N·C (or C) elements
        n, c = input.shape
        loss = native_pointwise.plain(
            BCE_WITH_LOGITS, input, target, "sum", divisor=n * c if reduction == "mean" else c
        )
        if loss is not None:
            return loss
    fn = "multilabel_soft_margin_loss"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    weight = _checks.optional_tensor(fn, "weight", weight)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    c = _checks.embedding.class_dim(fn, input)
    if weight is None:
        _checks.broadcast_shape(fn, ("input", "target"), input, target)
    else:
        _checks.broadcast_shape(fn, ("input", "target", "weight"), input, target, weight)
    if _fused_ok(input, target, weight):
        x2, t2 = input.reshape(-1, c), target.reshape(-1, c)
        w = None if weight is None else weight.reshape(c)
        loss = _multilabel_soft_margin_apply(x2, t2, w, reduction)
        return loss.reshape(input.shape[:-1]) if reduction == "none" else loss
    return _reduction.reduce_loss(multilabel_soft_margin(input, target, weight), reduction)


class MultiLabelSoftMarginLoss(WeightedLoss):
    r"""Multi-label logistic loss ``-Σ_c w_c·(y_c·log σ(x_c) + (1 - y_c)·log σ(-x_c)) / C``; see
    :func:`losskit.functional.multilabel_soft_margin_loss`.

    Shapes: input ``(N, C)`` or ``(C)``, target alike; output ``()`` or, for ``'none'``, ``(N)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> loss = nn.MultiLabelSoftMarginLoss(weight=torch.tensor([1.0, 2.0, 0.5]))
        >>> loss(torch.tensor([[2.0, -1.0, 0.0]]), torch.tensor([[1.0, 0.0, 1.0]]))
        tensor(0.3667)
    """

    __constants__ = ["reduction"]

    def __init__(self, weight: Tensor | None = None, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(weight, size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return multilabel_soft_margin_loss(input, target, weight=self.weight, reduction=self.reduction)


def _sample(shape, dtype, gen):
    t = (torch.rand(shape, generator=gen) < 0.3).to(dtype)
    return Problem((randn(shape, dtype, gen), t))


def _plot(z, params):
    return multilabel_soft_margin_loss(z.unsqueeze(1), torch.ones(len(z), 1, dtype=z.dtype), reduction="none")


CATALOG = (
    Entry(
        "multilabel_soft_margin_loss",
        multilabel_soft_margin_loss,
        MultiLabelSoftMarginLoss,
        "classification",
        _sample,
        aliases=("multilabel_soft_margin",),
        plot=Curve("score", "multilabel_soft_margin_loss (C = 1, y = 1)", _plot),
    ),
)
