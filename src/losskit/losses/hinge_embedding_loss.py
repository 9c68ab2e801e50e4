"""Hinge embedding loss."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, randn
from .._tracing import tracing
from ..engine import native_pointwise, pointwise
from ..engine.autocast import fp32_under_autocast
from ..engine.pointwise import Pointwise
from ._base import Loss


def hinge_embedding(x: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """``x`` where ``y = 1``, ``max(0, margin - x)`` where ``y = -1`` (both terms for any other ``y``, as torch)."""
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    hinge = (margin - x).clamp_min(0)
    return torch.where(y != 1, hinge, zero) + torch.where(y != -1, x, zero)


def _grad(x, y, margin, out):
    """``∂l/∂x = [y ≠ -1] - [y ≠ 1]·[margin - x ≥ 0]`` (clamp's sub-gradient at the kink, as torch)."""
    if out is None:
        return (y != -1).to(x.dtype) - ((y != 1) & ((margin - x) >= 0)).to(x.dtype)
    hinge = torch.neg(x, out=out).add_(margin).ge_(0)  # 1 where margin - x >= 0
    return hinge.mul_(y != 1).neg_().add_(y != -1)


HINGE = Pointwise(
    "hinge_embedding_loss",
    lambda x, y, m: hinge_embedding(x, y, m),
    _grad,
    native=lambda m: (
        (native_pointwise.HINGE_EMBEDDING, float(m)) if type(m) in (float, int) and abs(m) < float("inf") else None
    ),
)


def _fast(input, target, margin=1.0, size_average=None, reduce=None, reduction="mean"):
    """The common eager call on losskit's element-wise kernel, or None (see native_pointwise.plain)."""
    if size_average is None and reduce is None:
        return native_pointwise.plain(HINGE, input, target, reduction, margin)
    return None


@fp32_under_autocast(fast=_fast)  # on torch's fp32 autocast list
def hinge_embedding_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    margin: float = 1.0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Hinge embedding loss: ``l = x`` where ``y = 1`` and ``l = max(0, margin - x)`` where ``y = -1``.

    ``x`` is typically a distance (e.g. L1) between two embeddings and ``y ∈ {1, -1}`` says whether they
    should be similar. A target that is neither 1 nor -1 gets both terms, as in torch.

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> x, y = torch.tensor([0.3, 0.3, 1.5]), torch.tensor([1.0, -1.0, -1.0])
        >>> F.hinge_embedding_loss(x, y, reduction="none")
        tensor([0.3000, 0.7000, 0.0000])
    """
    fn = "hinge_embedding_loss"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    margin = _checks.number(fn, "margin", margin)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.broadcast_shape(fn, ("input", "target"), input, target)
    if not tracing() and input.is_floating_point() and pointwise.fast_path_ok(input, target):
        return pointwise.pointwise(HINGE, input, target, None, margin, reduction)
    return _reduction.reduce_loss(hinge_embedding(input, target, margin), reduction)


class HingeEmbeddingLoss(Loss):
    r"""Hinge embedding ``x`` (``y = 1``) or ``max(0, margin - x)`` (``y = -1``); see
    :func:`losskit.functional.hinge_embedding_loss`.

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.HingeEmbeddingLoss(margin=2.0)(torch.tensor([0.5, 0.5]), torch.tensor([1.0, -1.0]))
        tensor(1.)
    """

    __constants__ = ["margin", "reduction"]
    margin: float

    def __init__(self, margin: float = 1.0, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return hinge_embedding_loss(input, target, margin=self.margin, reduction=self.reduction)


def _sample(shape, dtype, gen):
    x = randn(shape, dtype, gen).abs()
    return Problem((x, randn(shape, dtype, gen).sign()))


CATALOG = (
    Entry(
        "hinge_embedding_loss",
        hinge_embedding_loss,
        HingeEmbeddingLoss,
        "embedding",
        _sample,
        aliases=("hinge_embedding",),
        options=({}, {"margin": 0.5}, {"margin": 2}),
        plot=Curve(
            "score",
            "hinge_embedding_loss (y = -1, margin = 1)",
            lambda z, _: hinge_embedding_loss(z, -torch.ones_like(z), reduction="none"),
        ),
        bench="elementwise",
    ),
)
