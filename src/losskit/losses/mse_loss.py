"""Mean squared error."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, pair_problem
from ..engine import native_pointwise, pointwise
from ..engine.autocast import fp32_under_autocast
from ..engine.pointwise import Pointwise
from ._base import Loss


def squared_error(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(x - y)²``"""
    d = input - target
    return d * d


def squared_sum(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    d = torch.sub(input, target).reshape(-1)
    return d.mul_(d).sum()  # not torch.dot: BLAS threads cost milliseconds on a busy machine


# The same losses for the chunked engine: (loss, ∂loss/∂x), torch's sub-gradients included.
SQUARED = Pointwise(
    "mse_loss",
    lambda x, t, _: squared_error(x, t),
    lambda x, t, _, out: torch.sub(x, t, out=out).mul_(2),
    reduced=lambda x, t, _: squared_sum(x, t),
    native=lambda _: (native_pointwise.MSE, 0.0),
)


def _fast(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """The common eager call on losskit's element-wise kernel, or None (see native_pointwise.plain)."""
    if weight is None and size_average is None and reduce is None:
        return native_pointwise.plain(SQUARED, input, target, reduction)
    return None


@fp32_under_autocast(fast=_fast)
def mse_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Mean squared error: ``l = (x - y)²`` element-wise (``w·(x - y)²`` with ``weight``).

    ``input`` and ``target`` broadcast (with torch's warning when their sizes differ). With ``weight``
    (same size as ``input``), ``'mean'`` is ``Σ w·l / Σ w``, as in torch 2.13.

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.mse_loss(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 1.0]))
        tensor(3.3333)
    """
    fn = "mse_loss"
    weight = _checks.elementwise_weight(fn, weight, _checks.tensor(fn, "input", input))
    input, target = _checks.pointwise_pair(fn, input, target)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    return pointwise.route(
        SQUARED,
        lambda: squared_error(input, target),
        input,
        target,
        weight,
        reduction,
        mean_over_weights=True,
    )


class MSELoss(Loss):
    r"""Mean squared error ``(x - y)²``; see :func:`losskit.functional.mse_loss`.

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.MSELoss()(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 1.0]))
        tensor(3.3333)
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mse_loss(input, target, reduction=self.reduction)


CATALOG = (
    Entry(
        "mse_loss",
        mse_loss,
        MSELoss,
        "regression",
        pair_problem(),
        aliases=("mse", "l2"),
        plot=Curve("error", "mse_loss", lambda d, _: mse_loss(d, torch.zeros_like(d), reduction="none")),
        bench="elementwise",
    ),
)
