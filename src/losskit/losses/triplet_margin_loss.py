"""Triplet margin losses: with the p-norm distance, and with any distance function."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, randn
from ..engine import native_embedding
from ..engine.autocast import fp32_under_autocast
from ._base import Loss


def pairwise(x1: torch.Tensor, x2: torch.Tensor, p: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """``‖x1 - x2 + eps‖_p`` over the last dim (torch's ``pairwise_distance``), the eps added in place."""
    d = x1 - x2
    d = d.add_(eps) if d.is_floating_point() or d.is_complex() else d + eps
    return torch.linalg.vector_norm(d, ord=p, dim=-1)


def triplet(d_pos: torch.Tensor, d_neg: torch.Tensor, margin: float, d_swap: torch.Tensor | None = None):
    """``max(0, margin + d(a, p) - d(a, n))``, ``d(a, n)`` replaced by ``min(d(a, n), d(p, n))`` with swap."""
    if d_swap is not None:
        d_neg = torch.minimum(d_neg, d_swap)
    return torch.clamp_min(margin + d_pos - d_neg, 0)


def _general(anchor, positive, negative, margin: float, p: float, eps: float, swap: bool, reduction: str):
    """The loss in differentiable torch ops (double backward through the native path)."""
    d_swap = pairwise(positive, negative, p, eps) if swap else None
    loss = triplet(pairwise(anchor, positive, p, eps), pairwise(anchor, negative, p, eps), margin, d_swap)
    return _reduction.reduce_loss(loss, reduction)


def _fast(
    anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False, size_average=None, reduce=None, reduction="mean"
):
    if size_average is not None or reduce is not None:
        return None
    general = functools.partial(_general, margin=margin, p=p, eps=eps, swap=swap, reduction=reduction)
    return native_embedding.triplet_plain(anchor, positive, negative, margin, p, eps, swap, reduction, general)


def _default_distance(distance_function) -> bool:
    """None, or a ``PairwiseDistance`` with its defaults (the module's default): ``‖x - y + 1e-6‖₂``."""
    if distance_function is None:
        return True
    return (
        type(distance_function) is torch.nn.PairwiseDistance
        and distance_function.norm == 2
        and distance_function.eps == 1e-6
        and not distance_function.keepdim
    )


@fp32_under_autocast(fast=_fast)  # on torch's fp32 autocast list
def triplet_margin_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = 1.0,
    p: float = 2,
    eps: float = 1e-6,
    swap: bool = False,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Triplet margin loss: ``l = max(0, margin + d(a, p) - d(a, n))``, ``d(x, y) = ‖x - y + eps‖_p``
    over the last dim.

    With ``swap`` (Balntas et al., 2016), ``d(a, n)`` is replaced by ``min(d(a, n), d(p, n))``.

    Shapes: anchor ``(N, D)`` or ``(D)``, positive and negative alike (same number of dims, broadcast);
    ``'none'`` returns ``(N)`` or ``()``, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 1.0]])
        >>> F.triplet_margin_loss(a, p, n, eps=0.0)  # max(0, 1 + 5 - 1)
        tensor(5.)
        >>> F.triplet_margin_loss(a, p, n, p=1, eps=0.0, swap=True)  # d(p, n) = 6 > d(a, n) = 1
        tensor(7.)
    """
    fn = "triplet_margin_loss"
    for name, t in (("anchor", anchor), ("positive", positive), ("negative", negative)):
        _checks.tensor(fn, name, t)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    margin = _checks.embedding.margin_positive(fn, margin)
    p = _checks.embedding.norm_order(fn, p)
    eps = _checks.number(fn, "eps", eps)
    swap = _checks.flag(fn, "swap", swap)
    names = ("anchor", "positive", "negative")
    _checks.embedding.same_ndim3(fn, names, anchor, positive, negative)
    _checks.broadcast_shape(fn, names, anchor, positive, negative)
    return _general(anchor, positive, negative, margin, p, eps, swap, reduction)


def triplet_margin_with_distance_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    *,
    distance_function: Callable[[Tensor, Tensor], Tensor] | None = None,
    margin: float = 1.0,
    swap: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Triplet margin loss with any distance: ``l = max(0, margin + d(a, p) - d(a, n))``.

    ``distance_function(x, y)`` returns one non-negative distance per sample; the default is the
    Euclidean ``pairwise_distance`` (``‖x - y + 1e-6‖₂``). With ``swap``, ``d(a, n)`` becomes
    ``min(d(a, n), d(p, n))``.

    Shapes: anchor ``(N, *)`` or ``(*)``, positive and negative alike (same number of dims);
    ``'none'`` returns the distances' shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 1.0]])
        >>> l1 = lambda x, y: (x - y).abs().sum(-1)
        >>> F.triplet_margin_with_distance_loss(a, p, n, distance_function=l1, margin=0.5)  # 0.5 + 7 - 1
        tensor(6.5000)
    """
    fn = "triplet_margin_with_distance_loss"
    if _default_distance(distance_function):  # torch's default: the p = 2 pairwise distance, eps 1e-6
        out = _fast(anchor, positive, negative, margin, 2, 1e-6, swap, reduction=reduction)
        if out is not None:
            return out
    reduction = _checks.reduction(reduction, _reduction.REDUCTIONS)
    margin = _checks.embedding.margin_positive(fn, margin)
    for name, t in (("anchor", anchor), ("positive", positive), ("negative", negative)):
        _checks.tensor(fn, name, t)
    _checks.embedding.same_ndim3(fn, ("anchor", "positive", "negative"), anchor, positive, negative)
    _checks.embedding.distance_function(fn, distance_function)
    swap = _checks.flag(fn, "swap", swap)
    dist = pairwise if distance_function is None else distance_function
    d_pos = _checks.embedding.distance_result(fn, "(anchor, positive)", dist(anchor, positive))
    d_neg = _checks.embedding.distance_result(fn, "(anchor, negative)", dist(anchor, negative))
    d_swap = _checks.embedding.distance_result(fn, "(positive, negative)", dist(positive, negative)) if swap else None
    return _reduction.reduce_loss(triplet(d_pos, d_neg, margin, d_swap), reduction)


class TripletMarginLoss(Loss):
    r"""Triplet margin ``max(0, margin + ‖a - p + eps‖_p - ‖a - n + eps‖_p)``; see
    :func:`losskit.functional.triplet_margin_loss`.

    Shapes: anchor, positive, negative ``(N, D)`` or ``(D)``; output ``()`` or, for ``'none'``, ``(N)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, 4.0]])
        >>> nn.TripletMarginLoss(margin=5.0, eps=0.0)(a, p, n)  # max(0, 5 + 1 - 5)
        tensor(1.)
    """

    __constants__ = ["margin", "p", "eps", "swap", "reduction"]
    margin: float
    p: float
    eps: float
    swap: bool

    def __init__(
        self,
        margin: float = 1.0,
        p: float = 2.0,
        eps: float = 1e-6,
        swap: bool = False,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        _checks.embedding.margin_positive("TripletMarginLoss", margin)
        self.margin = margin
        self.p = p
        self.eps = eps
        self.swap = swap

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return triplet_margin_loss(
            anchor,
            positive,
            negative,
            margin=self.margin,
            p=self.p,
            eps=self.eps,
            swap=self.swap,
            reduction=self.reduction,
        )


class TripletMarginWithDistanceLoss(Loss):
    r"""Triplet margin ``max(0, margin + d(a, p) - d(a, n))`` with any distance ``d``; see
    :func:`losskit.functional.triplet_margin_with_distance_loss`. The default distance is
    :class:`torch.nn.PairwiseDistance` (as torch).

    Shapes: anchor, positive, negative ``(N, *)`` or ``(*)``; output ``()`` or, for ``'none'``, ``(N)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, 4.0]])
        >>> nn.TripletMarginWithDistanceLoss(distance_function=lambda x, y: (x - y).abs().sum(-1))(a, p, n)
        tensor(0.)
    """

    __constants__ = ["margin", "swap", "reduction"]
    margin: float
    swap: bool

    def __init__(
        self,
        *,
        distance_function: Callable[[Tensor, Tensor], Tensor] | None = None,
        margin: float = 1.0,
        swap: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average=None, reduce=None, reduction=reduction)
        _checks.embedding.margin_positive("TripletMarginWithDistanceLoss", margin)
        self.distance_function: Callable[[Tensor, Tensor], Tensor] | None = (
            distance_function if distance_function is not None else torch.nn.PairwiseDistance()
        )
        self.margin = margin
        self.swap = swap

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return triplet_margin_with_distance_loss(
            anchor,
            positive,
            negative,
            distance_function=self.distance_function,
            margin=self.margin,
            swap=self.swap,
            reduction=self.reduction,
        )


def _sample(shape, dtype, gen):
    return Problem(tuple(randn(shape, dtype, gen) for _ in range(3)), 3)


def _plot(z, params):
    """Against ``d(a, n)`` with ``d(a, p) = 1`` (1-D points, margin 1)."""
    zero = torch.zeros_like(z).unsqueeze(1)
    return triplet_margin_loss(zero, zero + 1, z.unsqueeze(1), eps=0.0, reduction="none")


CATALOG = (
    Entry(
        "triplet_margin_loss",
        triplet_margin_loss,
        TripletMarginLoss,
        "embedding",
        _sample,
        aliases=("triplet_margin", "triplet"),
        options=({}, {"p": 1}, {"swap": True}, {"margin": 0.5, "p": 3, "eps": 0.0}),
        plot=Curve("error", "triplet_margin_loss (d(a, p) = 1, margin = 1)", _plot),
    ),
    Entry(
        "triplet_margin_with_distance_loss",
        triplet_margin_with_distance_loss,
        TripletMarginWithDistanceLoss,
        "embedding",
        _sample,
        aliases=("triplet_margin_with_distance",),
        options=(
            {},
            {"swap": True},
            {"margin": 0.5},
            {"distance_function": torch.nn.CosineSimilarity(dim=-1)},
        ),
        legacy=False,
    ),
)
