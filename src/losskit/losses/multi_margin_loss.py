"""Multi-class margin (hinge) loss."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, class_indices, randn
from .._tracing import _is_compiling, tracing
from ..engine import entry, native_targets
from ..engine.autocast import fp32_under_autocast
from ..engine.autograd import plain_apply
from ._base import WeightedLoss

CHUNK_ELEMENTS = 1 << 17  # 512 KiB of fp32 per chunk: in cache, few Python steps


def multi_margin(x2: torch.Tensor, y: torch.Tensor, p: int, margin: float, weight) -> torch.Tensor:
    """Per row of ``(N, C)`` scores: ``Σ_{i ≠ y} w_y·max(0, margin - x_y + x_i)^p / C`` (plain ops).

    The hinge has no gradient where ``margin - x_y + x_i = 0`` (torch's kernel tests ``> 0``).
    """
    n, c = x2.shape
    z = (margin - x2.gather(1, y.unsqueeze(1))) + x2
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    others = torch.arange(c, device=x2.device) != y.unsqueeze(1)
    h = torch.where((z > 0) & others, z, zero)
    if p == 2:
        h = h * h
    row = h.sum(1)
    if weight is not None:
        row = row * weight[y]
    return row / c


def _hinges_into(out, x, y, margin: float) -> torch.Tensor:
    """``z = margin - x_y + x_i`` where ``z > 0`` and ``i ≠ y``, else 0, written into ``out`` (``x``'s shape)."""
    torch.add(x, margin - x.gather(1, y), out=out)  # (margin - x_y) + x_i, torch's order of operations
    # torch's kernel keeps a hinge only where z > 0: a NaN hinge counts 0, as a negative one does
    return out.scatter_(1, y, 0).clamp_min_(0).nan_to_num_(nan=0.0, posinf=float("inf"))


class _MultiMargin(torch.autograd.Function):
    """Eager fused path: the forward walks rows in chunks (no ``(N, C)`` temporary, like torch's kernel);
    the backward builds the gradient in place in the one ``(N, C)`` buffer autograd needs."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x2, y, weight, p: int, margin: float, reduction: str):
        rows, c = x2.shape
        step = max(1, CHUNK_ELEMENTS // c)
        per_row = torch.empty(rows, dtype=x2.dtype, device=x2.device)
        buf = torch.empty(min(step, rows), c, dtype=x2.dtype, device=x2.device)
        y2 = y.unsqueeze(1)
        for s in range(0, rows, step):
            e = min(rows, s + step)
            h = _hinges_into(buf[: e - s], x2[s:e], y2[s:e], margin)
            torch.sum(h if p == 1 else h.square_(), 1, out=per_row[s:e])
        if weight is not None:
            per_row.mul_(weight[y])
        per_row.div_(c)
        if reduction == "none":
            return per_row
        total = per_row.sum(dtype=torch.float64)
        return (total / rows if reduction == "mean" else total).to(x2.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x2, y, weight, p, margin, reduction = inputs
        ctx.save_for_backward(x2, y, weight)
        ctx.p, ctx.margin, ctx.reduction = p, margin, reduction

    @staticmethod
    def backward(ctx, grad_output):
        x2, y, weight = ctx.saved_tensors
        rows, c = x2.shape
        # per-row factor w_y / C · grad_output (/ N for the mean)
        scale = (
            grad_output / c if ctx.reduction == "none" else (grad_output / (c * rows if ctx.reduction == "mean" else c))
        )
        scale = scale.expand(rows) if scale.dim() == 0 else scale
        if weight is not None:
            scale = scale * weight[y]
        y2 = y.unsqueeze(1)
        if torch.is_grad_enabled():  # create_graph: the same gradient out of place, differentiable again
            z = x2 + (ctx.margin - x2.gather(1, y2))
            live = (z > 0) & (torch.arange(c, device=x2.device) != y2)
            g = torch.where(live, 2 * z if ctx.p == 2 else torch.ones_like(z), torch.zeros_like(z)) * scale.unsqueeze(1)
            return g.scatter(1, y2, -g.sum(1, keepdim=True)), None, None, None, None, None
        grad = torch.empty_like(x2, memory_format=torch.contiguous_format)
        scale2 = 2 * scale if ctx.p == 2 else None
        step = max(1, CHUNK_ELEMENTS // c)
        for s in range(0, rows, step):
            e = min(rows, s + step)
            g = _hinges_into(grad[s:e], x2[s:e], y2[s:e], ctx.margin)
            # ∂/∂x_i of z (p = 1) or z² (p = 2), 0 where z <= 0, times the row's factor
            g = g.gt_(0).mul_(scale[s:e].unsqueeze(1)) if scale2 is None else g.mul_(scale2[s:e].unsqueeze(1))
            g.scatter_(1, y2[s:e], g.sum(1, keepdim=True).neg_())  # ∂/∂x_y = -Σ_i ∂/∂x_i
        return grad, None, None, None, None, None


_multi_margin_apply = plain_apply(_MultiMargin)  # torch's C++ apply in plain eager calls


def _fast(input, target, p=1, margin=1.0, weight=None, size_average=None, reduce=None, reduction="mean"):
    """The common eager call on losskit's kernel through Python, or None (see native_targets.multi_margin_plain)."""
    if size_average is None and reduce is None:
        return native_targets.multi_margin_plain(input, target, p, margin, weight, reduction)
    return None


def multi_margin_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    p: int = 1,
    margin: float = 1.0,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Multi-class hinge loss: ``l_n = Σ_{i ≠ y_n} w_{y_n}·max(0, margin - x_{n,y_n} + x_{n,i})^p / C``.

    ``p`` is 1 or 2; ``weight`` (optional, ``(C)``) rescales each sample by its true class's weight.

    Shapes: input ``(N, C)`` or ``(C)``, target int64 ``(N)`` or ``()``; ``'none'`` returns ``(N)`` (``()``
    for a 0-d target), else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> x = torch.tensor([[0.1, 0.2, 0.4, 0.8]])
        >>> F.multi_margin_loss(x, torch.tensor([3]))  # ((1 - 0.7) + (1 - 0.6) + (1 - 0.4)) / 4
        tensor(0.3250)
        >>> F.multi_margin_loss(x, torch.tensor([3]), p=2)
        tensor(0.1525)
    """
    if not _is_compiling() and size_average is None and reduce is None and (fast := entry.module or entry.get()):
        out = fast.multi_margin(input, target, p, margin, weight, reduction)  # the whole call in C++ (engine/entry)
        if out is not None:
            return out
    return _multi_margin_loss(input, target, p, margin, weight, size_average, reduce, reduction)


@fp32_under_autocast(fast=_fast)  # on torch's fp32 autocast list
def _multi_margin_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    p: int = 1,
    margin: float = 1.0,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """multi_margin_loss past the C++ entry point: checks, the Python kernel path, the reference."""
    fn = "multi_margin_loss"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    weight = _checks.optional_tensor(fn, "weight", weight)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    p = _checks.embedding.multi_margin_p(fn, p)
    margin = _checks.number(fn, "margin", margin)
    _checks.embedding.one_dim_weight(fn, weight)
    n, c = _checks.embedding.multi_margin_problem(fn, input, target, weight)
    _checks.embedding.target_in_range(fn, target, c)
    x2, y = input.reshape(n, c), target.reshape(n)
    if n == 0:
        loss = x2.sum(1)
    elif not tracing() and not (weight is not None and weight.requires_grad):
        loss = _multi_margin_apply(x2, y, weight, p, margin, reduction if target.dim() else "none")
    else:
        loss = multi_margin(x2, y, p, margin, weight)
    if target.dim() == 0:
        loss = loss.reshape(())
    if loss.dim() == 0 or reduction == "none":
        return loss
    return _reduction.reduce_loss(loss, reduction)


class MultiMarginLoss(WeightedLoss):
    r"""Multi-class hinge ``Σ_{i ≠ y} w_y·max(0, margin - x_y + x_i)^p / C``; see
    :func:`losskit.functional.multi_margin_loss`.

    Shapes: input ``(N, C)`` or ``(C)``, target ``(N)`` or ``()``; output ``()`` or, for ``'none'``, ``(N)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.MultiMarginLoss()(torch.tensor([[0.1, 0.2, 0.4, 0.8]]), torch.tensor([3]))
        tensor(0.3250)
    """

    __constants__ = ["p", "margin", "reduction"]
    margin: float
    p: int

    def __init__(
        self,
        p: int = 1,
        margin: float = 1.0,
        weight: Tensor | None = None,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        fn = "MultiMarginLoss"
        _checks.embedding.multi_margin_p(fn, p)
        _checks.embedding.one_dim_weight(fn, weight)
        self.p = p
        self.margin = margin

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return multi_margin_loss(
            input, target, p=self.p, margin=self.margin, weight=self.weight, reduction=self.reduction
        )


def _sample(shape, dtype, gen):
    return Problem((randn(shape, dtype, gen), class_indices(shape, gen)))


def _plot(z, params):
    x = torch.stack([z, torch.zeros_like(z)], 1)
    return multi_margin_loss(x, torch.zeros(len(z), dtype=torch.long), reduction="none")


CATALOG = (
    Entry(
        "multi_margin_loss",
        multi_margin_loss,
        MultiMarginLoss,
        "classification",
        _sample,
        aliases=("multi_margin",),
        options=({}, {"p": 2}, {"margin": 0.5}, {"p": 2, "margin": 2.0}),
        plot=Curve("score", "multi_margin_loss (C = 2, true class 0)", _plot),
    ),
)
