"""Binary cross entropy of logits, numerically stable, with ``pos_weight``."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, randn
from ..engine import native_pointwise, pointwise
from ..engine.autocast import fp32_under_autocast
from ..engine.pointwise import Pointwise
from ._base import Loss


def bce_with_logits_elementwise(
    x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, pos_weight: torch.Tensor | None
) -> torch.Tensor:
    """``-w·(pw·t·log σ(x) + (1-t)·log(1-σ(x)))`` = ``w·((1-t)·x - (1 + (pw-1)·t)·log σ(x))``, stable for any x."""
    log_sig = torch.nn.functional.logsigmoid(x)
    if pos_weight is not None:
        log_sig = log_sig * (1 + (pos_weight - 1) * t)
    loss = (1 - t) * x - log_sig
    return loss if w is None else loss * w


def _bce_logits_grad(x, t, pos_weight, out):
    """``∂/∂x = (1-t) - (1 + (pw-1)·t)·(1 - σ(x))``, i.e. ``σ(x) - t`` without ``pos_weight``."""
    if out is None:  # out of place, differentiable again (create_graph=True)
        sig = torch.sigmoid(x)
        return sig - t if pos_weight is None else (sig - 1) * (1 + (pos_weight - 1) * t) + (1 - t)
    sig = torch.sigmoid(x, out=out)
    if pos_weight is None:
        return sig.sub_(t)
    return sig.sub_(1).mul_(1 + (pos_weight - 1) * t).add_(1 - t)


BCE_WITH_LOGITS = Pointwise(
    "binary_cross_entropy_with_logits",
    lambda x, t, pos_weight: bce_with_logits_elementwise(x, t, None, pos_weight),
    _bce_logits_grad,
    native=lambda pos_weight: (native_pointwise.BCE_LOGITS, 0.0) if pos_weight is None else None,
)


def _fast(input, target, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
    """The common eager call on losskit's element-wise kernel, or None (see native_pointwise.plain)."""
    if weight is None and pos_weight is None and size_average is None and reduce is None:
        return native_pointwise.plain(BCE_WITH_LOGITS, input, target, reduction)
    return None


@fp32_under_autocast(fast=_fast)
def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Binary cross entropy of logits: ``l = -w·(pw·y·log σ(x) + (1-y)·log(1-σ(x)))``, numerically stable.

    ``pos_weight`` (``pw``) weighs the positive term and broadcasts along the last (class) dimension,
    e.g. ``(C,)`` for input ``(N, C)``; ``weight`` broadcasts to the input's shape.

    Shapes: input ``(*)``, target ``(*)``; ``'none'`` returns ``(*)``, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> x, y = torch.tensor([[2.0, -1.0], [300.0, -300.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> F.binary_cross_entropy_with_logits(x, y, reduction="none")
        tensor([[1.2693e-01, 3.1326e-01],
                [3.0000e+02, 3.0000e+02]])
        >>> F.binary_cross_entropy_with_logits(x, y, pos_weight=torch.tensor([3.0, 1.0]))
        tensor(150.1735)
    """
    fn = "binary_cross_entropy_with_logits"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    weight = _checks.optional_tensor(fn, "weight", weight)
    pos_weight = _checks.optional_tensor(fn, "pos_weight", pos_weight)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.floating(fn, "input", input)
    _checks.floating(fn, "target", target)
    _checks.same_size(fn, input, target)
    _checks.no_grad(fn, "weight", weight)
    input = input.to(target.dtype)  # torch's result follows the target's dtype
    for name, extra in (("weight", weight), ("pos_weight", pos_weight)):
        if extra is not None:
            _checks.broadcasts_to(fn, name, extra, "input", input)
    if pointwise.fast_path_ok(input, target, weight, pos_weight) and pointwise.is_row_vector(pos_weight, input):
        row_pos_weight = None if pos_weight is None else pos_weight.reshape(-1)
        return pointwise.pointwise(BCE_WITH_LOGITS, input, target, weight, row_pos_weight, reduction)
    dtype = input.dtype
    if dtype in (torch.float16, torch.bfloat16):  # fp32 intermediates, one rounding at the end (as torch's kernel)
        weight, pos_weight = (None if t is None else t.float() for t in (weight, pos_weight))
        loss = bce_with_logits_elementwise(input.float(), target.float(), weight, pos_weight)
        return _reduction.reduce_loss(loss, reduction).to(dtype)
    loss = bce_with_logits_elementwise(input, target, weight, pos_weight)
    return _reduction.reduce_loss(loss, reduction)


class BCEWithLogitsLoss(Loss):
    r"""Binary cross entropy of logits ``-w·(pw·y·log σ(x) + (1-y)·log(1-σ(x)))``, stable;
    see :func:`losskit.functional.binary_cross_entropy_with_logits`.

    ``weight`` and ``pos_weight`` are buffers (``pos_weight`` broadcasts along the class dim).

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))(torch.tensor([[0.0]]), torch.tensor([[1.0]]))
        tensor(1.3863)
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.weight: Tensor | None
        self.pos_weight: Tensor | None

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction
        )


def _sample(shape, dtype, gen):
    target = torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype)
    return Problem((randn(shape, dtype, gen), target))


CATALOG = (
    Entry(
        "binary_cross_entropy_with_logits",
        binary_cross_entropy_with_logits,
        BCEWithLogitsLoss,
        "binary",
        _sample,
        aliases=("bce_with_logits", "bcewithlogits"),
        plot=Curve(
            "score",
            "binary_cross_entropy_with_logits (target 1)",
            lambda z, _: binary_cross_entropy_with_logits(z, torch.ones_like(z), reduction="none"),
        ),
        bench="elementwise",
    ),
)
