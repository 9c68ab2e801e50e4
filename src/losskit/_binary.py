"""The binary family: BCE on probabilities, BCE on logits, and the soft margin (logistic) loss.

Element-wise losses; the public layer reduces them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .engine.pointwise import Pointwise

_LOG_FLOOR = -100.0  # torch clamps log(p) and log(1-p) at -100 so that p = 0 or 1 gives a finite loss
# ...and divides the gradient by max(p(1-p), 1e-12), its 1e-12 being a float32 constant in every dtype
_GRAD_EPS = float(torch.tensor(1e-12, dtype=torch.float32))


class _BinaryCrossEntropy(torch.autograd.Function):
    """``-w·(t·max(log p, -100) + (1-t)·max(log(1-p), -100))`` element-wise, torch's gradients:
    ``∂/∂p = w·(p - t) / max(p·(1-p), 1e-12)``, ``∂/∂t = w·(log(1-p) - log p)``."""

    @staticmethod
    def forward(ctx, p, t, w):  # type: ignore[override]
        log_p = p.log().clamp_min(_LOG_FLOOR)
        log_q = torch.log1p(-p).clamp_min(_LOG_FLOOR)
        loss = -(t * log_p + (1 - t) * log_q)
        if w is not None:
            loss = loss * w
        ctx.save_for_backward(p, t, w)
        return loss

    @staticmethod
    def backward(ctx, g):  # out-of-place formulas: differentiable again under create_graph=True  # type: ignore[override]
        p, t, w = ctx.saved_tensors
        if w is not None:
            g = g * w
        grad_p = grad_t = None
        if ctx.needs_input_grad[0]:
            grad_p = g * (p - t) / (p * (1 - p)).clamp_min(_GRAD_EPS)
        if ctx.needs_input_grad[1]:
            grad_t = g * (torch.log1p(-p) - p.log())  # unclamped, as torch: ±inf at p = 0 or 1
        return grad_p, grad_t, None


def binary_cross_entropy(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return _BinaryCrossEntropy.apply(p, t, w)


def binary_cross_entropy_with_logits(
    x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, pos_weight: torch.Tensor | None
) -> torch.Tensor:
    """``-w·(pw·t·log σ(x) + (1-t)·log(1-σ(x)))`` = ``w·((1-t)·x - (1 + (pw-1)·t)·log σ(x))``, stable for any x."""
    log_sig = F.logsigmoid(x)
    if pos_weight is not None:
        log_sig = log_sig * (1 + (pos_weight - 1) * t)
    loss = (1 - t) * x - log_sig
    return loss if w is None else loss * w


def soft_margin(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(-y·x))``, computed as ``logaddexp(0, -y·x)`` so that it never overflows."""
    z = -y * x
    return torch.logaddexp(z, torch.zeros((), dtype=z.dtype, device=z.device))


def _bce_loss(p, t, _):
    return -(t * p.log().clamp_min_(_LOG_FLOOR) + (1 - t) * torch.log1p(-p).clamp_min_(_LOG_FLOOR))


def _bce_grad(p, t, _, out):
    return torch.sub(p, t, out=out).div_((p * (1 - p)).clamp_min_(_GRAD_EPS))


def _bce_logits_grad(x, t, pos_weight, out):
    """``∂/∂x = (1-t) - (1 + (pw-1)·t)·(1 - σ(x))``, i.e. ``σ(x) - t`` without ``pos_weight``."""
    if out is None:  # out of place, differentiable again (create_graph=True)
        sig = torch.sigmoid(x)
        return sig - t if pos_weight is None else (sig - 1) * (1 + (pos_weight - 1) * t) + (1 - t)
    sig = torch.sigmoid(x, out=out)
    if pos_weight is None:
        return sig.sub_(t)
    return sig.sub_(1).mul_(1 + (pos_weight - 1) * t).add_(1 - t)


def _soft_margin_grad(x, y, _, out):
    """``∂/∂x log(1 + exp(-y·x)) = -y·σ(-y·x)``"""
    if out is None:  # out of place, differentiable again (create_graph=True)
        return -y * torch.sigmoid(-y * x)
    return torch.mul(y, x, out=out).neg_().sigmoid_().mul_(y).neg_()


# The same losses for the chunked engine: (loss, ∂loss/∂x) with torch's gradient formulas.
BCE = Pointwise("binary_cross_entropy", _bce_loss, _bce_grad)
BCE_WITH_LOGITS = Pointwise(
    "binary_cross_entropy_with_logits",
    lambda x, t, pos_weight: binary_cross_entropy_with_logits(x, t, None, pos_weight),
    _bce_logits_grad,
)
SOFT_MARGIN = Pointwise("soft_margin_loss", lambda x, y, _: soft_margin(x, y), _soft_margin_grad)
