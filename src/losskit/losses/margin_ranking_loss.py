"""Margin ranking loss."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, randn
from ..engine import native_pairs
from ..engine.autocast import fp32_under_autocast
from ._base import Loss


def margin_ranking(x1: torch.Tensor, x2: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """``max(0, -y·(x1 - x2) + margin)`` element-wise (broadcast)."""
    return (-y * (x1 - x2) + margin).clamp_min(0)


def _fast(input1, input2, target, margin=0, size_average=None, reduce=None, reduction="mean"):
    """The common eager call on losskit's kernel, or None (see native_pairs.margin_ranking_plain)."""
    if size_average is None and reduce is None:
        return native_pairs.margin_ranking_plain(input1, input2, target, margin, reduction)
    return None


@fp32_under_autocast(fast=_fast)
def margin_ranking_loss(
    input1: torch.Tensor,
    input2: torch.Tensor,
    target: torch.Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Margin ranking: ``l = max(0, -y·(x1 - x2) + margin)``, ``y = 1`` when ``x1`` should rank higher.

    The three tensors must have the same number of dimensions and broadcast.

    Shapes: input1 ``(N)`` or ``()``, input2 and target the same; ``'none'`` returns that shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.margin_ranking_loss(torch.tensor([0.8, 0.2]), torch.tensor([0.5, 0.5]), torch.tensor([1.0, 1.0]),
        ...                       margin=0.1, reduction="none")
        tensor([0.0000, 0.4000])
    """
    fn = "margin_ranking_loss"
    for name, t in (("input1", input1), ("input2", input2), ("target", target)):
        _checks.tensor(fn, name, t)
    margin = _checks.number(fn, "margin", margin)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.same_ndim(fn, ("input1", "input2", "target"), input1, input2, target)
    _checks.broadcast_shape(fn, ("input1", "input2", "target"), input1, input2, target)
    if not (input1.is_floating_point() or input2.is_floating_point() or target.is_floating_point()):
        dtype = torch.get_default_dtype()  # torch's result for integer inputs is floating too
        input1, input2, target = input1.to(dtype), input2.to(dtype), target.to(dtype)
    return _reduction.reduce_loss(margin_ranking(input1, input2, target, margin), reduction)


class MarginRankingLoss(Loss):
    r"""Margin ranking ``max(0, -y·(x1 - x2) + margin)``; see :func:`losskit.functional.margin_ranking_loss`.

    Shapes: input1 ``(N)`` or ``()``, input2 and target alike; output ``()`` or, for ``'none'``, ``(N)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.MarginRankingLoss(margin=0.5)(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]),
        ...                                  torch.tensor([1.0, 1.0]))
        tensor(0.7500)
    """

    __constants__ = ["margin", "reduction"]
    margin: float

    def __init__(self, margin: float = 0.0, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return margin_ranking_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


def _sample(shape, dtype, gen):
    n = shape[0]
    return Problem((randn((n,), dtype, gen), randn((n,), dtype, gen), randn((n,), dtype, gen).sign()), 2)


CATALOG = (
    Entry(
        "margin_ranking_loss",
        margin_ranking_loss,
        MarginRankingLoss,
        "ranking",
        _sample,
        aliases=("margin_ranking",),
        options=({}, {"margin": 0.5}),
        plot=Curve(
            "score",
            "margin_ranking_loss (y = +1, margin = 1)",
            lambda z, _: margin_ranking_loss(z, torch.zeros_like(z), torch.ones_like(z), margin=1.0, reduction="none"),
        ),
    ),
)
