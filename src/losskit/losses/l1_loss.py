"""Mean absolute error."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, pair_problem
from ..engine import native_pointwise, pointwise
from ..engine.autocast import fp32_under_autocast
from ..engine.pointwise import Pointwise
from ._base import Loss


def absolute_error(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``|x - y|``"""
    return (input - target).abs()


ABSOLUTE = Pointwise(
    "l1_loss",
    lambda x, t, _: absolute_error(x, t),
    lambda x, t, _, out: torch.sub(x, t, out=out).sign_(),
    native=lambda _: (native_pointwise.L1, 0.0),
)


def _fast(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """The common eager call on losskit's element-wise kernel, or None (see native_pointwise.plain)."""
    if weight is None and size_average is None and reduce is None:
        return native_pointwise.plain(ABSOLUTE, input, target, reduction)
    return None


@fp32_under_autocast(fast=_fast)
def l1_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Mean absolute error: ``l = |x - y|`` element-wise (``w·|x - y|`` with ``weight``).

    Broadcasting and ``weight`` as in :func:`mse_loss` (weighted ``'mean'`` is ``Σ w·l / Σ w``).

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.l1_loss(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 1.0]))
        tensor(1.3333)
    """
    fn = "l1_loss"
    weight = _checks.elementwise_weight(fn, weight, _checks.tensor(fn, "input", input))
    input, target = _checks.pointwise_pair(fn, input, target)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    if input.is_complex() or target.is_complex():  # as torch: the real |x - y|, differentiated by autograd
        return pointwise.reduce_weighted(absolute_error(input, target), weight, reduction, mean_over_weights=True)
    return pointwise.route(
        ABSOLUTE,
        lambda: absolute_error(input, target),
        input,
        target,
        weight,
        reduction,
        mean_over_weights=True,
    )


class L1Loss(Loss):
    r"""Mean absolute error ``|x - y|``; see :func:`losskit.functional.l1_loss`.

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.L1Loss(reduction="sum")(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 1.0]))
        tensor(4.)
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return l1_loss(input, target, reduction=self.reduction)


CATALOG = (
    Entry(
        "l1_loss",
        l1_loss,
        L1Loss,
        "regression",
        pair_problem(),
        aliases=("l1", "mae"),
        plot=Curve("error", "l1_loss", lambda d, _: l1_loss(d, torch.zeros_like(d), reduction="none")),
        bench="elementwise",
    ),
)
