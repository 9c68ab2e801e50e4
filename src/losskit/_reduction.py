"""The one place that knows ``'none' | 'mean' | 'sum'`` and torch's legacy ``size_average``/``reduce``."""

from __future__ import annotations

import torch

from . import _checks
from ._tracing import warn

REDUCTIONS = ("none", "mean", "sum")


def legacy_get_string(size_average: bool | None, reduce: bool | None, emit_warning: bool = True) -> str:
    """Map torch's deprecated ``size_average``/``reduce`` pair to a ``reduction`` string, warning like torch."""
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if size_average and reduce:
        reduction = "mean"
    elif reduce:
        reduction = "sum"
    else:
        reduction = "none"
    if emit_warning:
        warn(
            f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.",
            UserWarning,
            stacklevel=3,
        )
    return reduction


def resolve(
    reduction: str,
    size_average: bool | None = None,
    reduce: bool | None = None,
    allowed: tuple[str, ...] = REDUCTIONS,
) -> str:
    """The effective reduction: the legacy pair wins when either is given (as in torch); validated."""
    if size_average is not None or reduce is not None:
        return legacy_get_string(size_average, reduce)
    return _checks.reduction(reduction, allowed)


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce an element-wise loss: ``'none'`` keeps it, ``'sum'`` adds it up, ``'mean'`` averages it."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()
