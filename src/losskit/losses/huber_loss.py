"""Huber and smooth L1, one pair sharing its math: smooth L1 is Huber with δ = β, divided by β."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, pair_problem
from ..engine import native_pointwise, pointwise
from ..engine.autocast import fp32_under_autocast
from ..engine.pointwise import Pointwise
from ._base import Loss


def huber(input: torch.Tensor, target: torch.Tensor, delta: float) -> torch.Tensor:
    """``0.5·d²`` where ``|d| < δ``, else ``δ·(|d| - 0.5·δ)``: computed as ``m·(|d| - 0.5·m)``, ``m = min(|d|, δ)``."""
    d = (input - target).abs()
    m = d.clamp_max(delta)
    return torch.add(d, m, alpha=-0.5).mul_(m)


def huber_sum(input: torch.Tensor, target: torch.Tensor, delta: float) -> torch.Tensor:
    """``Σ huber`` without the element-wise loss: with ``m = clamp(d, -δ, δ)`` (signed), each term is
    ``m·(d - m/2)``, so the sum is ``m·d - ½·m·m`` as two dot products. ``m·d ≥ m·m`` term by term, so the
    difference keeps at least half of the first: no cancellation."""
    d = torch.sub(input, target).reshape(-1)
    m = d.clamp(-delta, delta)
    return m.mul_(torch.sub(d, m, alpha=0.5)).sum()


def smooth_l1(input: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """``0.5·d²/β`` where ``|d| < β``, else ``|d| - 0.5·β``: Huber with ``δ = β``, divided by ``β``; ``β = 0`` is
    exactly L1."""
    if beta == 0.0:
        return (input - target).abs()
    d = (input - target).abs()
    m = d.clamp_max(beta)
    return (m / beta) * torch.add(d, m, alpha=-0.5)  # m/β ≤ 1: no overflow even for a subnormal β


def _smooth_l1_grad(x, t, beta, out):
    d = torch.sub(x, t, out=out)
    return d.sign_() if beta == 0.0 else d.div_(beta).clamp_(-1.0, 1.0)


HUBER = Pointwise(
    "huber_loss",
    huber,
    lambda x, t, delta, out: torch.sub(x, t, out=out).clamp_(-delta, delta),
    reduced=huber_sum,
    native=lambda delta: (native_pointwise.HUBER, float(delta)) if _valid(delta, False) else None,
)

# smooth L1 = Huber(δ=β) / β, the 1/β applied once to the reduced sum and to grad_output; β = 0 is L1
SMOOTH_L1 = Pointwise(
    "smooth_l1_loss",
    lambda x, t, beta: smooth_l1(x, t, beta) if beta == 0 else huber(x, t, beta),
    lambda x, t, beta, out: _smooth_l1_grad(x, t, beta, out) if beta == 0 else HUBER.grad(x, t, beta, out),
    lambda beta: 1.0 if beta == 0 else 1.0 / beta,
    reduced=lambda x, t, beta: torch.sub(x, t).abs_().sum() if beta == 0 else huber_sum(x, t, beta),
    native=lambda beta: _smooth_l1_code(beta),
)


def _smooth_l1_code(beta):
    """The kernel's smooth L1 (β = 0: its L1), or None for a β the checks must see."""
    if not _valid(beta, True):
        return None
    return (native_pointwise.L1, 0.0) if beta == 0 else (native_pointwise.SMOOTH_L1, float(beta))


def _valid(p, zero_allowed: bool) -> bool:
    """A finite float/int parameter > 0 (or ≥ 0); anything else goes to the checks that raise the clear error."""
    return type(p) in (float, int) and (p >= 0.0 if zero_allowed else p > 0.0) and p < float("inf")


def _fast_smooth_l1(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """The common eager call on losskit's element-wise kernel, or None (see native_pointwise.plain)."""
    if size_average is None and reduce is None:
        return native_pointwise.plain(SMOOTH_L1, input, target, reduction, beta)
    return None


def _fast_huber(input, target, reduction="mean", delta=1.0, weight=None):
    """The common eager call on losskit's element-wise kernel, or None (see native_pointwise.plain)."""
    if weight is None:
        return native_pointwise.plain(HUBER, input, target, reduction, delta)
    return None


@fp32_under_autocast(fast=_fast_smooth_l1)
def smooth_l1_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> torch.Tensor:
    r"""Smooth L1: ``l = 0.5·d²/β`` if ``|d| < β`` else ``|d| - 0.5·β``, with ``d = x - y``.

    ``beta = 0`` is exactly :func:`l1_loss` (value and gradient); a negative ``beta`` raises.

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.smooth_l1_loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]), reduction="none")
        tensor([0.1250, 2.5000])
    """
    fn = "smooth_l1_loss"
    input, target = _checks.pointwise_pair(fn, input, target)
    beta = _checks.non_negative(fn, "beta", beta)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    return pointwise.route(SMOOTH_L1, lambda: smooth_l1(input, target, beta), input, target, None, reduction, beta)


@fp32_under_autocast(fast=_fast_huber)
def huber_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Huber: ``l = 0.5·d²`` if ``|d| < δ`` else ``δ·(|d| - 0.5·δ)``, with ``d = x - y``; ``δ > 0``.

    With ``weight`` (same size as ``input``), ``'mean'`` is the plain mean of ``w·l`` (torch 2.13's rule).
    Equals ``δ · smooth_l1_loss(..., beta=δ)``.

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.huber_loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]), delta=2.0, reduction="none")
        tensor([0.1250, 4.0000])
    """
    fn = "huber_loss"
    weight = _checks.elementwise_weight(fn, weight, _checks.tensor(fn, "input", input))
    input, target = _checks.pointwise_pair(fn, input, target)
    delta = _checks.positive(fn, "delta", delta)
    reduction = _reduction.resolve(reduction)
    target = target.to(input.dtype)  # torch's huber_loss returns the input's dtype
    return pointwise.route(HUBER, lambda: huber(input, target, delta), input, target, weight, reduction, delta)


class SmoothL1Loss(Loss):
    r"""Smooth L1 ``0.5·d²/β`` if ``|d| < β`` else ``|d| - 0.5·β``; see :func:`losskit.functional.smooth_l1_loss`.

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.SmoothL1Loss(beta=0.5)(torch.tensor([0.1, 2.0]), torch.tensor([0.0, 0.0]))
        tensor(0.8800)
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(Loss):
    r"""Huber ``0.5·d²`` if ``|d| < δ`` else ``δ·(|d| - 0.5·δ)``; see :func:`losskit.functional.huber_loss`.

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.HuberLoss(delta=2.0)(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]))
        tensor(2.0625)
    """

    __constants__ = ["reduction", "delta"]

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        _checks.constructors.huber_delta(delta)
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)


CATALOG = (
    Entry(
        "smooth_l1_loss",
        smooth_l1_loss,
        SmoothL1Loss,
        "regression",
        pair_problem(),
        aliases=("smooth_l1",),
        options=({}, {"beta": 0.5}, {"beta": 0.0}),
        plot=Curve(
            "error",
            "smooth_l1_loss (β = {beta:g})",
            lambda d, p: smooth_l1_loss(d, torch.zeros_like(d), reduction="none", beta=p["beta"]),
        ),
        bench="elementwise",
    ),
    Entry(
        "huber_loss",
        huber_loss,
        HuberLoss,
        "regression",
        pair_problem(),
        aliases=("huber",),
        options=({}, {"delta": 0.5}, {"delta": 2.0}),
        legacy=False,
        plot=Curve(
            "error",
            "huber_loss (δ = {delta:g})",
            lambda d, p: huber_loss(d, torch.zeros_like(d), reduction="none", delta=p["delta"]),
        ),
        bench="elementwise",
    ),
)
