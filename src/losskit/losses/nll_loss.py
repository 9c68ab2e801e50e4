"""Negative log-likelihood of log-probabilities against class indices."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, class_indices, randn
from .._tracing import _is_compiling, tracing
from ..engine import entry, native_targets, ops
from ..engine.autocast import fp32_under_autocast
from ..engine.rows import as_rows
from ._base import WeightedLoss

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def nll_rows(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: str,
    ignore_index: int,
) -> torch.Tensor:
    """``-w_y · input[y]`` per row, 0 for ignored rows; ``'mean'`` divides by ``Σ w_y`` of the kept rows."""
    x = as_rows(input)
    y = target.reshape(-1).long()
    valid = y != ignore_index
    if tracing(input, target):  # the range check runs inside the operator that makes the safe indices
        y_safe = ops.class_targets(y, x.shape[1], ignore_index, "nll_loss")
    else:
        y_safe = torch.where(valid, y, torch.zeros_like(y))
    picked = x.gather(1, y_safe.unsqueeze(1)).squeeze(1)
    low = picked.dtype if picked.dtype in _LOW_PRECISION else None
    if low is not None:  # products and sums in fp32, rounded once (torch accumulates in fp32 too)
        picked = picked.float()
        weight = None if weight is None else weight.float()
    if weight is None:
        w_y = valid.to(picked.dtype)
        loss = torch.where(valid, -picked, torch.zeros_like(picked))
    else:
        w_y = torch.where(valid, weight[y_safe], torch.zeros((), dtype=weight.dtype, device=weight.device))
        loss = torch.where(valid, -picked * w_y, torch.zeros_like(picked))
    if reduction == "none":
        out = loss.reshape(target.shape)
    elif reduction == "sum":
        out = loss.sum()
    else:
        out = loss.sum() / w_y.sum()
    return out if low is None else out.to(low)


def _fast(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """The common eager call on losskit's NLL kernel, or None (see native_targets.nll_plain)."""
    if weight is None and size_average is None and reduce is None:
        if not _is_compiling() and (fast := entry.module or entry.get()) is not None:  # all in C++
            out = fast.nll(input, target, ignore_index, reduction)
            if out is not None:
                return out
        return native_targets.nll_plain(input, target, ignore_index, reduction)
    return None


@fp32_under_autocast(fast=_fast)
def nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Negative log-likelihood of log-probabilities: ``l_n = -w_{y_n} · x_{n, y_n}``.

    Rows whose target equals ``ignore_index`` give 0; ``'mean'`` divides ``Σ_n l_n`` by ``Σ_n w_{y_n}`` over
    the rows that are not ignored (NaN if every row is ignored). ``cross_entropy(x, y)`` equals
    ``nll_loss(log_softmax(x, 1), y)`` (seed 000's identity).

    Args:
        input: log-probabilities, ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``.
        target: class indices (int64 or uint8) of shape ``()``, ``(N,)`` or ``(N, d1, ..., dK)``.
        weight: ``(C,)`` class weights. ignore_index: any int. reduction: ``'none'`` | ``'mean'`` | ``'sum'``.

    Returns:
        ``'none'``: the target's shape; otherwise a scalar.

    Example (seed 004's weights ``[0.5, 1.5]``)::

        >>> import torch, losskit.functional as F
        >>> logp = torch.tensor([[-1.1011, 0.6231], [0.2384, -0.3223]]).log_softmax(1)
        >>> F.nll_loss(logp, torch.tensor([0, 1]), weight=torch.tensor([0.5, 1.5]), reduction="none")
        tensor([0.9441, 1.5184])
        >>> F.nll_loss(logp, torch.tensor([0, 1]), weight=torch.tensor([0.5, 1.5]))  # (0.9441 + 1.5184) / 2
        tensor(1.2313)
    """
    fn = "nll_loss"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    weight = _checks.optional_tensor(fn, "weight", weight)
    _checks.no_grad(fn, "weight", weight)  # as torch: class weights are not differentiated
    ignore_index = _checks.integer(fn, "ignore_index", ignore_index)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.floating(fn, "input", input)
    _checks.class_problem(fn, input, target, weight, ignore_index)
    return nll_rows(input, target, weight, reduction, ignore_index)


class NLLLoss(WeightedLoss):
    r"""Negative log-likelihood of log-probabilities; see :func:`losskit.functional.nll_loss`.

    ``l_n = -w_{y_n}·x_{n, y_n}``; ignored rows give 0; ``'mean'`` divides by ``Σ w_{y_n}`` of the kept rows.

    Shapes: input ``(C)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``; target ``()``, ``(N)`` or ``(N, d1, ..., dK)``;
    output ``()`` or, for ``'none'``, the target's shape.

    Example (seed 004's ``ignore_index=0``)::

        >>> import torch, losskit.nn as nn
        >>> logp = torch.tensor([[-0.8671, -0.5453], [-1.4101, -0.2799]])
        >>> nn.NLLLoss(ignore_index=0, reduction="none")(logp, torch.tensor([0, 1]))
        tensor([0.0000, 0.2799])
    """

    __constants__ = ["ignore_index", "reduction"]
    ignore_index: int

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class NLLLoss2d(NLLLoss):
    r"""Deprecated alias of :class:`NLLLoss` for ``(N, C, H, W)`` maps; warns like torch.

    Example::

        >>> import warnings, torch, losskit.nn as nn
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     loss = nn.NLLLoss2d()
        >>> caught[0].category.__name__
        'FutureWarning'
        >>> loss(torch.zeros(1, 2, 1, 1).log_softmax(1), torch.tensor([[[1]]]))
        tensor(0.6931)
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        warnings.warn(
            "`NLLLoss2d` has been deprecated. Please use `NLLLoss` instead as a drop-in replacement and see "
            "https://pytorch.org/docs/main/nn.html#torch.nn.NLLLoss for more details.",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(weight, size_average, ignore_index, reduce, reduction)


def _sample(shape, dtype, gen):
    return Problem((randn(shape, dtype, gen).log_softmax(1), class_indices(shape, gen)))


def _plot(p, params):
    log_probs = torch.stack([p.log(), (1 - p).log()], 1)
    return nll_loss(log_probs, torch.zeros(len(p), dtype=torch.int64), reduction="none")


CATALOG = (
    Entry(
        "nll_loss",
        nll_loss,
        NLLLoss,
        "classification",
        _sample,
        aliases=("nll",),
        options=({}, {"ignore_index": 1}),
        plot=Curve("probability", "nll_loss (input log p, C = 2)", _plot),
    ),
)
