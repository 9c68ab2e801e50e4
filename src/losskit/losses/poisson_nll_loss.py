"""Poisson negative log likelihood."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, randn
from .._tracing import tracing
from ..engine import native_pointwise, pointwise
from ..engine.autocast import fp32_under_autocast
from ..engine.pointwise import Pointwise
from ._base import Loss

_LOW = (torch.float16, torch.bfloat16)


def stirling(target: torch.Tensor) -> torch.Tensor:
    """The Stirling term of ``full``: ``t·log t - t + ½·log(2πt)`` where ``t > 1``, else 0 (as torch)."""
    term = target * torch.log(target) - target + 0.5 * torch.log(2 * math.pi * target)
    return term.masked_fill(target <= 1, 0)


def poisson_nll(input: torch.Tensor, target: torch.Tensor, log_input: bool, full: bool, eps: float) -> torch.Tensor:
    """Element-wise ``exp(x) - t·x`` (``log_input``) or ``x - t·log(x + eps)``, plus the Stirling term."""
    loss = torch.exp(input) - target * input if log_input else input - target * torch.log(input + eps)
    if full:
        loss += stirling(target)  # in place, as torch (the same order of gradient accumulation)
    return loss


def _grad(x, t, params, out):
    """``∂l/∂x``: ``exp(x) - t`` (``log_input``) or ``1 - t / (x + eps)``."""
    log_input, _, eps = params
    if out is None:
        return torch.exp(x) - t if log_input else 1 - t / (x + eps)
    if log_input:
        return torch.exp(x, out=out).sub_(t)
    return torch.add(x, eps, out=out).reciprocal_().mul_(t).neg_().add_(1)


def _native(params):
    """The kernel's Poisson NLL (not ``full``: the Stirling term stays with the torch-op path), or None."""
    log_input, full, eps = params
    if full is not False or type(log_input) is not bool or type(eps) not in (float, int):
        return None
    if not abs(eps) < float("inf"):
        return None
    return (native_pointwise.POISSON_LOG, 0.0) if log_input else (native_pointwise.POISSON, float(eps))


POISSON = Pointwise("poisson_nll_loss", lambda x, t, p: poisson_nll(x, t, *p), _grad, native=_native)


def _fast(input, target, log_input=True, full=False, size_average=None, eps=1e-8, reduce=None, reduction="mean"):
    """The common eager call on losskit's element-wise kernel, or None (see native_pointwise.plain)."""
    if size_average is None and reduce is None:
        return native_pointwise.plain(POISSON, input, target, reduction, (log_input, full, eps))
    return None


@fp32_under_autocast(fast=_fast)  # on torch's fp32 autocast list
def poisson_nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    log_input: bool = True,
    full: bool = False,
    size_average: bool | None = None,
    eps: float = 1e-8,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Poisson negative log likelihood of ``target ~ Poisson(λ)``.

    ``l = exp(x) - t·x`` when ``log_input`` (``x = log λ``), else ``l = x - t·log(x + eps)`` (``x = λ``). With
    ``full``, the Stirling approximation of ``log(t!)``, ``t·log t - t + ½·log(2πt)``, is added where ``t > 1``.

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.poisson_nll_loss(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 3.0]), reduction="none")
        tensor([ 1.0000, -0.2817])
        >>> F.poisson_nll_loss(torch.tensor([2.0]), torch.tensor([3.0]), log_input=False, full=True)
        tensor(1.6846)
    """
    fn = "poisson_nll_loss"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    log_input = _checks.flag(fn, "log_input", log_input)
    full = _checks.flag(fn, "full", full)
    eps = _checks.number(fn, "eps", eps)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.broadcast_shape(fn, ("input", "target"), input, target)
    params = (log_input, full, eps)
    if input.dtype in _LOW or target.dtype in _LOW:
        # fp16/bf16: computed in fp32 and rounded once (torch rounds every intermediate)
        dtype = torch.promote_types(input.dtype, target.dtype)
        loss = poisson_nll(input.float(), target.float(), *params)
        return _reduction.reduce_loss(loss, reduction).to(dtype)
    if not tracing() and input.is_floating_point() and pointwise.fast_path_ok(input, target):
        return pointwise.pointwise(POISSON, input, target, None, params, reduction)
    return _reduction.reduce_loss(poisson_nll(input, target, *params), reduction)


class PoissonNLLLoss(Loss):
    r"""Poisson negative log likelihood ``exp(x) - t·x`` (or ``x - t·log(x + eps)``); see
    :func:`losskit.functional.poisson_nll_loss`.

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.PoissonNLLLoss()(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 3.0]))
        tensor(0.3591)
    """

    __constants__ = ["log_input", "full", "eps", "reduction"]
    log_input: bool
    full: bool
    eps: float

    def __init__(
        self,
        log_input: bool = True,
        full: bool = False,
        size_average=None,
        eps: float = 1e-8,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.log_input = log_input
        self.full = full
        self.eps = eps

    def forward(self, log_input: Tensor, target: Tensor) -> Tensor:
        return poisson_nll_loss(
            log_input, target, log_input=self.log_input, full=self.full, eps=self.eps, reduction=self.reduction
        )


def _sample(shape, dtype, gen):
    x = randn(shape, dtype, gen)
    rate = torch.rand(shape, generator=gen, dtype=torch.float64) * 4
    return Problem((x, torch.poisson(rate, generator=gen).to(dtype)))


CATALOG = (
    Entry(
        "poisson_nll_loss",
        poisson_nll_loss,
        PoissonNLLLoss,
        "regression",
        _sample,
        aliases=("poisson_nll", "poisson"),
        options=({}, {"log_input": False}, {"full": True}, {"log_input": False, "full": True, "eps": 1e-4}),
        plot=Curve(
            "score",
            "poisson_nll_loss (log λ, t = 2)",
            lambda z, _: poisson_nll_loss(z, torch.full_like(z, 2.0), reduction="none"),
        ),
        bench="elementwise",
        typical={},
    ),
)
