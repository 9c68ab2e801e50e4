"""Two-class logistic (soft margin) loss."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, pair_problem, randn
from ..engine import native_pointwise, pointwise
from ..engine.autocast import fp32_under_autocast
from ..engine.pointwise import Pointwise
from ._base import Loss


def soft_margin(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(-y·x))``, computed as ``logaddexp(0, -y·x)`` so that it never overflows."""
    z = -y * x
    return torch.logaddexp(z, torch.zeros((), dtype=z.dtype, device=z.device))


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _soft_margin_loss(x, y, _):
    if x.dtype in _LOW_PRECISION:  # a float32 chunk: the engine sums it in float32 (or rounds it once for 'none')
        x, y = x.float(), y.float()
    return soft_margin(x, y)


def _soft_margin_grad(x, y, _, out):
    """``∂/∂x log(1 + exp(-y·x)) = -y·σ(-y·x)``; float16/bfloat16 computed in float32 and rounded once."""
    if x.dtype in _LOW_PRECISION:
        grad = _soft_margin_grad(x.float(), y.float(), _, None)
        return grad.to(x.dtype) if out is None else out.copy_(grad)
    if out is None:  # out of place, differentiable again (create_graph=True)
        return -y * torch.sigmoid(-y * x)
    return torch.mul(y, x, out=out).neg_().sigmoid_().mul_(y).neg_()


SOFT_MARGIN = Pointwise(
    "soft_margin_loss", _soft_margin_loss, _soft_margin_grad, native=lambda _: (native_pointwise.SOFT_MARGIN, 0.0)
)


def _fast(input, target, size_average=None, reduce=None, reduction="mean"):
    """The common eager call on losskit's element-wise kernel, or None (see native_pointwise.plain)."""
    if size_average is None and reduce is None:
        return native_pointwise.plain(SOFT_MARGIN, input, target, reduction)
    return None


@fp32_under_autocast(fast=_fast)
def soft_margin_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Two-class logistic loss: ``l = log(1 + exp(-y·x))`` element-wise, ``y`` in ``{1, -1}``.

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.soft_margin_loss(torch.tensor([2.0, -0.5]), torch.tensor([1.0, 1.0]), reduction="none")
        tensor([0.1269, 0.9741])
    """
    fn = "soft_margin_loss"
    _checks.floating(fn, "input", _checks.tensor(fn, "input", input))
    if isinstance(target, torch.Tensor) and not (target.is_floating_point() or target.is_complex()):
        target = target.to(input.dtype)  # as torch: an integer (or bool) target is promoted to the input's dtype
    _checks.broadcasts_to(fn, "target", _checks.tensor(fn, "target", target), "input", input)  # as torch
    input, target = _checks.pointwise_pair(fn, input, target, warn_broadcast=False)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    target = target.to(input.dtype)
    if input.dtype in _LOW_PRECISION and not pointwise.fast_path_ok(input, target):
        # the loss, its reduction and its gradient in float32, rounded once (torch rounds each step of
        # -y·exp(-y·x) / (1 + exp(-y·x)) · g / N); the chunked engine keeps its own low-precision handling
        return _reduction.reduce_loss(soft_margin(input.float(), target.float()), reduction).to(input.dtype)
    return pointwise.route(SOFT_MARGIN, lambda: soft_margin(input, target), input, target, None, reduction)


class SoftMarginLoss(Loss):
    r"""Two-class logistic loss ``log(1 + exp(-y·x))``; see :func:`losskit.functional.soft_margin_loss`.

    Shapes: input ``(*)``, target ``(*)`` in ``{1, -1}``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.SoftMarginLoss()(torch.tensor([2.0, -0.5]), torch.tensor([1.0, 1.0]))
        tensor(0.5505)
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return soft_margin_loss(input, target, reduction=self.reduction)


CATALOG = (
    Entry(
        "soft_margin_loss",
        soft_margin_loss,
        SoftMarginLoss,
        "binary",
        pair_problem(lambda shape, dtype, gen: randn(shape, dtype, gen).sign()),
        aliases=("soft_margin",),
        plot=Curve(
            "score", "soft_margin_loss (y = +1)", lambda z, _: soft_margin_loss(z, torch.ones_like(z), reduction="none")
        ),
        bench="elementwise",
    ),
)
