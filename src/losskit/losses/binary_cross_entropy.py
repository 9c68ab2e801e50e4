"""Binary cross entropy of probabilities, torch's clamped logs and gradient."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, randn
from .._tracing import tracing
from ..engine import native_pointwise, ops, pointwise
from ..engine.autocast import fp32_under_autocast
from ..engine.autograd import plain_apply
from ..engine.pointwise import Pointwise
from ._base import WeightedLoss

_LOG_FLOOR = -100.0  # torch clamps log(p) and log(1-p) at -100 so that p = 0 or 1 gives a finite loss

# ...and divides the gradient by max(p(1-p), 1e-12), its 1e-12 being a float32 constant in every dtype
_GRAD_EPS = float(torch.tensor(1e-12, dtype=torch.float32))
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class _BinaryCrossEntropy(torch.autograd.Function):
    """``-w·(t·max(log p, -100) + (1-t)·max(log(1-p), -100))`` element-wise, torch's gradients:
    ``∂/∂p = w·(p - t) / max(p·(1-p), 1e-12)``, ``∂/∂t = w·(log(1-p) - log p)``."""

    generate_vmap_rule = True  # torch.func.vmap: forward and backward are plain torch ops

    @staticmethod
    def forward(p, t, w):
        log_p = p.log().clamp_min(_LOG_FLOOR)
        log_q = torch.log1p(-p).clamp_min(_LOG_FLOOR)
        loss = -(t * log_p + (1 - t) * log_q)
        if w is not None:
            loss = loss * w
        return loss

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, g):  # out-of-place formulas: differentiable again under create_graph=True
        p, t, w = ctx.saved_tensors
        if w is not None:
            g = g * w
        grad_p = grad_t = None
        if ctx.needs_input_grad[0]:
            grad_p = g * (p - t) / (p * (1 - p)).clamp_min(_GRAD_EPS)
        if ctx.needs_input_grad[1]:
            grad_t = g * (torch.log1p(-p) - p.log())  # unclamped, as torch: ±inf at p = 0 or 1
        return grad_p, grad_t, None


class _BinaryCrossEntropyWithJvp(_BinaryCrossEntropy):
    """:class:`_BinaryCrossEntropy` with forward-mode AD; eager only (dynamo cannot trace a Function that defines
    ``jvp``)."""

    @staticmethod
    def jvp(ctx, p_t, t_t, _w_t):
        """Forward-mode AD, torch's: the backward's two formulas applied to the tangents (the weight is constant)."""
        p, t, w = ctx.saved_tensors
        out = None
        if p_t is not None:
            out = p_t * (p - t) / (p * (1 - p)).clamp_min(_GRAD_EPS)
        if t_t is not None:
            part = t_t * (torch.log1p(-p) - p.log())
            out = part if out is None else out + part
        if out is not None and w is not None:
            out = out * w
        return out


_binary_cross_entropy_apply = plain_apply(_BinaryCrossEntropyWithJvp)  # torch's C++ apply in plain eager calls


def bce_elementwise(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return _BinaryCrossEntropy.apply(p, t, w)
    return _binary_cross_entropy_apply(p, t, w)


def _bce_reference(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """The reduced loss that autograd differentiates. float16/bfloat16 compute the loss, its reduction and both
    gradients in float32 and round once (torch rounds each step, e.g. its target gradient ``-logit(p)·g·w / N``)."""
    if p.dtype not in _LOW_PRECISION:
        return _reduction.reduce_loss(bce_elementwise(p, t, w), reduction)
    loss = bce_elementwise(p.float(), t.float(), None if w is None else w.float())
    return _reduction.reduce_loss(loss, reduction).to(p.dtype)


def _bce_loss(p, t, _):
    if p.dtype in _LOW_PRECISION:  # a float32 chunk: the engine sums it in float32 (or rounds it once for 'none')
        p, t = p.float(), t.float()
    return -(t * p.log().clamp_min_(_LOG_FLOOR) + (1 - t) * torch.log1p(-p).clamp_min_(_LOG_FLOOR))


def _bce_grad(p, t, _, out):
    if p.dtype in _LOW_PRECISION:  # computed in float32, rounded once
        grad = _bce_grad(p.float(), t.float(), _, None)
        return grad.to(p.dtype) if out is None else out.copy_(grad)
    return torch.sub(p, t, out=out).div_((p * (1 - p)).clamp_min_(_GRAD_EPS))


# The same losses for the chunked engine: (loss, ∂loss/∂x) with torch's gradient formulas; a float16/bfloat16
# chunk is computed in float32.
BCE = Pointwise("binary_cross_entropy", _bce_loss, _bce_grad, native=lambda _: (native_pointwise.BCE, 0.0))


def _fast(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """The common eager call on losskit's element-wise kernel, or None (see native_pointwise.plain); an input
    outside [0, 1] gives None, and the general path raises torch's error."""
    if weight is None and size_average is None and reduce is None:
        return native_pointwise.plain(BCE, input, target, reduction)
    return None


@fp32_under_autocast(fast=_fast)
def binary_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Binary cross entropy of probabilities: ``l = -w·(y·log p + (1-y)·log(1-p))``.

    Each log is clamped at -100, so ``p`` = 0 or 1 gives a finite loss; the gradient is torch's,
    ``w·(p - y) / max(p·(1-p), 1e-12)``. ``input`` and ``target`` must have the same size and lie in
    ``[0, 1]``; ``weight`` broadcasts to the target's shape.

    Shapes: input ``(*)``, target ``(*)``; ``'none'`` returns ``(*)``, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.binary_cross_entropy(torch.tensor([0.8, 0.4, 0.0]), torch.tensor([1.0, 0.0, 1.0]), reduction="none")
        tensor([  0.2231,   0.5108, 100.0000])
    """
    fn = "binary_cross_entropy"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    weight = _checks.optional_tensor(fn, "weight", weight)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.floating(fn, "input", input)
    _checks.floating(fn, "target", target)
    _checks.same_size(fn, input, target)
    _checks.same_dtype(fn, "target", target, input)
    _checks.no_grad(fn, "weight", weight)
    if weight is not None:
        weight = weight.to(input.dtype)
        _checks.broadcasts_to(fn, "weight", weight, "target", target)
    checked = None
    if tracing(input, target):  # the range checks run inside an operator, whose zero joins the loss
        checked = ops.checked_zero(input.detach(), "unit_interval", fn, "input", 0)
        checked = checked + ops.checked_zero(target.detach(), "unit_interval", fn, "target", 0)
    else:
        _checks.in_unit_interval(fn, "input", input.detach())
        _checks.in_unit_interval(fn, "target", target.detach())
    if checked is None and pointwise.fast_path_ok(input, target, weight):
        return pointwise.pointwise(BCE, input, target, weight, None, reduction)
    full_weight = None if weight is None else weight.expand(target.shape)
    loss = _bce_reference(input, target, full_weight, reduction)
    return loss if checked is None else loss + checked


class BCELoss(WeightedLoss):
    r"""Binary cross entropy of probabilities ``-w·(y·log p + (1-y)·log(1-p))``, logs clamped at -100;
    see :func:`losskit.functional.binary_cross_entropy`.

    Shapes: input ``(*)`` in ``[0, 1]``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.BCELoss()(torch.tensor([0.8, 0.4]), torch.tensor([1.0, 0.0]))
        tensor(0.3670)
    """

    __constants__ = ["reduction"]

    def __init__(self, weight: Tensor | None = None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(weight, size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


def _sample(shape, dtype, gen):
    return Problem(
        (randn(shape, dtype, gen).sigmoid(), torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype))
    )


CATALOG = (
    Entry(
        "binary_cross_entropy",
        binary_cross_entropy,
        BCELoss,
        "binary",
        _sample,
        aliases=("bce",),
        plot=Curve(
            "probability",
            "binary_cross_entropy (target 1)",
            lambda p, _: binary_cross_entropy(p, torch.ones_like(p), reduction="none"),
        ),
        bench="elementwise",
    ),
)
