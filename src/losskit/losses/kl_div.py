"""Kullback-Leibler divergence of log-probabilities."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, randn
from .._tracing import warn
from ..engine import native_pointwise, pointwise
from ..engine.autocast import fp32_under_autocast
from ..engine.pointwise import Pointwise
from ._base import Loss


def kl_elementwise(input: torch.Tensor, target: torch.Tensor, log_target: bool) -> torch.Tensor:
    """``t·(log t - x)`` (a target of 0 contributes 0), or ``exp(t)·(t - x)`` when ``log_target``."""
    if log_target:
        return torch.exp(target) * (target - input)
    return torch.xlogy(target, target) - target * input


def _kl_grad(x, t, log_target, out):
    """``∂/∂x = -t`` (or ``-exp(t)`` for a log target)."""
    return torch.exp(t, out=out).neg_() if log_target else torch.neg(t, out=out)


KL_DIV = Pointwise(
    "kl_div",
    kl_elementwise,
    _kl_grad,
    native=lambda log_target: (native_pointwise.KL_LOG if log_target else native_pointwise.KL, 0.0),
)


def _fast(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """The common eager call on losskit's element-wise kernel, or None (see native_pointwise.plain); 'mean'
    (which warns) and the legacy arguments take the general path."""
    if size_average is not None or reduce is not None or type(log_target) is not bool or reduction == "mean":
        return None
    if reduction == "batchmean":
        if type(input) is not torch.Tensor or input.dim() == 0:
            return None
        return native_pointwise.plain(KL_DIV, input, target, "sum", log_target, divisor=input.shape[0])
    return native_pointwise.plain(KL_DIV, input, target, reduction, log_target)


@fp32_under_autocast(fast=_fast)
def kl_div(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> torch.Tensor:
    r"""Kullback-Leibler divergence of log-probabilities ``x`` from ``t``: ``l = t·(log t - x)``.

    A target of 0 contributes 0. With ``log_target=True`` the target is given as ``log t`` and
    ``l = exp(t)·(t - x)``. ``'batchmean'`` divides the sum by the batch size (the KL of the math);
    ``'mean'`` divides by the element count and warns, as torch does.

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> logq = torch.tensor([[0.25, 0.75]]).log()
        >>> F.kl_div(logq, torch.tensor([[0.5, 0.5]]), reduction="batchmean")
        tensor(0.1438)
    """
    fn = "kl_div"
    legacy = size_average is not None or reduce is not None
    batchmean = reduction == "batchmean"  # torch divides by the batch size even when legacy args win
    reduction = _reduction.resolve(reduction, size_average, reduce, allowed=("none", "batchmean", "mean", "sum"))
    _checks.tensor(fn, "input", input)
    batch = input.shape[0] if input.dim() else None
    input, target = _checks.pointwise_pair(fn, input, target, warn_broadcast=False)
    if not legacy and reduction == "mean":
        warn(
            "reduction: 'mean' divides the total loss by both the batch size and the support size."
            "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
            "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
            UserWarning,
            stacklevel=2,
        )
    log_target = _checks.strict_flag(fn, "log_target", log_target)
    inner = "sum" if reduction == "batchmean" else reduction
    loss = pointwise.route(
        KL_DIV,
        lambda: kl_elementwise(input, target, log_target),
        input,
        target,
        None,
        inner,
        log_target,
    )
    if batchmean and batch is not None:
        return loss / batch
    return loss


class KLDivLoss(Loss):
    r"""Kullback-Leibler divergence ``t·(log t - x)`` of log-probabilities ``x``; see
    :func:`losskit.functional.kl_div` (``'batchmean'``, ``log_target``).

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.KLDivLoss(reduction="batchmean", log_target=True)(torch.tensor([[-1.0, -0.5]]),
        ...                                                     torch.tensor([[-0.5, -1.0]]))
        tensor(0.1193)
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", log_target: bool = False) -> None:
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


def _sample(shape, dtype, gen):
    return Problem((randn(shape, dtype, gen).log_softmax(-1), randn(shape, dtype, gen).softmax(-1)))


def _plot(p, params):
    log_q = torch.stack([p.log(), (1 - p).log()], 1)
    t = torch.tensor([0.7, 0.3], dtype=p.dtype).expand(len(p), 2)
    return kl_div(log_q, t, reduction="none").sum(1)


CATALOG = (
    Entry(
        "kl_div",
        kl_div,
        KLDivLoss,
        "divergence",
        _sample,
        aliases=("kl", "kl_div_loss"),
        options=({}, {"log_target": True}),
        reductions=("none", "batchmean", "mean", "sum"),
        plot=Curve("probability", "kl_div (q = [p, 1-p] from t = [0.7, 0.3])", _plot),
        bench="elementwise",
        typical={"reduction": "batchmean"},
    ),
)
