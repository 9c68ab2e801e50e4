"""Multi-label margin (hinge) loss."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, randn
from .._tracing import _is_compiling, tracing
from ..engine import entry, native_targets, ops
from ..engine.autocast import fp32_under_autocast
from ._base import Loss


def target_mask(target: torch.Tensor) -> torch.Tensor:
    """True for the target entries before the first -1 of each row (the rest are padding)."""
    return torch.cumprod((target != -1).to(torch.int8), dim=-1).bool()


def multilabel_margin(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample ``Σ_{j ∈ targets} Σ_{i ∉ targets} max(0, 1 - (x[j] - x[i])) / C`` for (N, C) input.

    ``target`` rows list class indices and end at the first -1.
    """
    n, c = input.shape
    used = target_mask(target)
    idx = torch.where(used, target, torch.zeros_like(target))
    # count the listed classes per row (padding slots add 0 to class 0), so duplicates and padding are harmless
    hits = torch.zeros(n, c, dtype=torch.int32, device=input.device).scatter_add(1, idx, used.to(torch.int32))
    is_target = hits > 0
    x_t = input.gather(1, idx)  # (N, J): the scores of the listed targets
    margins = torch.relu(1 - x_t.unsqueeze(2) + input.unsqueeze(1))  # (N, J, C)
    keep = used.unsqueeze(2) & ~is_target.unsqueeze(1)
    margins = torch.where(keep, margins, torch.zeros((), dtype=input.dtype, device=input.device))
    return margins.sum(dim=(1, 2)) / c


def _fast(input, target, size_average=None, reduce=None, reduction="mean"):
    """The common eager call on losskit's kernel, or None (see native_targets.multilabel_margin_plain)."""
    if size_average is None and reduce is None:
        if not _is_compiling() and (fast := entry.module or entry.get()) is not None:  # all in C++
            out = fast.multilabel_margin(input, target, reduction)
            if out is not None:
                return out
        return native_targets.multilabel_margin_plain(input, target, reduction)
    return None


@fp32_under_autocast(fast=_fast)
def multilabel_margin_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Multi-label hinge loss: ``l_n = Σ_{j ∈ T_n} Σ_{i ∉ T_n} max(0, 1 - (x_{n,j} - x_{n,i})) / C``.

    Each row of ``target`` lists the true classes ``T_n`` and ends at its first -1 (the rest is padding).

    Shapes: input ``(C)`` or ``(N, C)``, target int64 of the same shape; ``'none'`` returns ``()`` or ``(N)``,
    else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> x = torch.tensor([[0.1, 0.2, 0.4, 0.8]])
        >>> F.multilabel_margin_loss(x, torch.tensor([[3, 0, -1, 1]]))  # classes 3 and 0; 1 is padding
        tensor(0.8500)
    """
    fn = "multilabel_margin_loss"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.floating(fn, "input", input)
    c = _checks.multilabel_target(fn, input, target)
    loss = multilabel_margin(input.reshape(-1, c), target.reshape(-1, c))
    if tracing(input, target):  # the range check runs inside an operator, whose zero joins the loss
        loss = loss + ops.checked_zero(target, "multilabel", fn, "target", c).to(loss.dtype)
    if input.dim() <= 1:
        loss = loss.reshape(())
    return _reduction.reduce_loss(loss, reduction)


class MultiLabelMarginLoss(Loss):
    r"""Multi-label hinge ``Σ_{j∈T} Σ_{i∉T} max(0, 1 - (x_j - x_i)) / C``, targets ending at the first -1;
    see :func:`losskit.functional.multilabel_margin_loss`.

    Shapes: input ``(C)`` or ``(N, C)``, target int64 alike; output ``()`` or, for ``'none'``, ``()``/``(N)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.MultiLabelMarginLoss()(torch.tensor([[0.1, 0.2, 0.4, 0.8]]), torch.tensor([[3, 0, -1, 1]]))
        tensor(0.8500)
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return multilabel_margin_loss(input, target, reduction=self.reduction)


def _sample(shape, dtype, gen):
    n, c = shape
    target = torch.stack([torch.randperm(c, generator=gen) for _ in range(n)])
    lengths = torch.randint(0, c + 1, (n, 1), generator=gen)
    target = torch.where(torch.arange(c) < lengths, target, torch.full_like(target, -1))
    return Problem((randn(shape, dtype, gen), target))


def _plot(z, params):
    x = torch.stack([z, torch.zeros_like(z)], 1)
    return multilabel_margin_loss(x, torch.tensor([[0, -1]]).expand(len(z), 2), reduction="none")


CATALOG = (
    Entry(
        "multilabel_margin_loss",
        multilabel_margin_loss,
        MultiLabelMarginLoss,
        "ranking",
        _sample,
        aliases=("multilabel_margin",),
        plot=Curve("score", "multilabel_margin_loss (C = 2, class 0 true)", _plot),
    ),
)
