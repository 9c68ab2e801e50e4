"""The binary family: BCE on probabilities, BCE on logits, and the soft margin (logistic) loss.

Element-wise losses; the public layer reduces them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

_LOG_FLOOR = -100.0  # torch clamps log(p) and log(1-p) at -100 so that p = 0 or 1 gives a finite loss
_GRAD_EPS = 1e-12  # ...and divides the gradient by max(p(1-p), 1e-12)


class _BinaryCrossEntropy(torch.autograd.Function):
    """``-w·(t·max(log p, -100) + (1-t)·max(log(1-p), -100))`` element-wise, torch's gradients:
    ``∂/∂p = w·(p - t) / max(p·(1-p), 1e-12)``, ``∂/∂t = w·(max(log(1-p), -100) - max(log p, -100))``."""

    @staticmethod
    def forward(ctx, p, t, w):  # type: ignore[override]
        log_p = p.log().clamp_min(_LOG_FLOOR)
        log_q = torch.log1p(-p).clamp_min(_LOG_FLOOR)
        loss = -(t * log_p + (1 - t) * log_q)
        if w is not None:
            loss = loss * w
        ctx.save_for_backward(p, t, w, log_p, log_q)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, g):  # type: ignore[override]
        p, t, w, log_p, log_q = ctx.saved_tensors
        if w is not None:
            g = g * w
        grad_p = grad_t = None
        if ctx.needs_input_grad[0]:
            grad_p = g * (p - t) / (p * (1 - p)).clamp_min(_GRAD_EPS)
        if ctx.needs_input_grad[1]:
            grad_t = g * (log_q - log_p)
        return grad_p, grad_t, None


def binary_cross_entropy(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return _BinaryCrossEntropy.apply(p, t, w)


def binary_cross_entropy_with_logits(
    x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, pos_weight: torch.Tensor | None
) -> torch.Tensor:
    """``-w·(pw·t·log σ(x) + (1-t)·log(1-σ(x)))`` = ``w·((1-t)·x - (1 + (pw-1)·t)·log σ(x))``, stable for any x."""
    log_sig = F.logsigmoid(x)
    log_weight = 1 if pos_weight is None else 1 + (pos_weight - 1) * t
    loss = (1 - t) * x - log_weight * log_sig
    return loss if w is None else loss * w


def soft_margin(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(-y·x))``, computed as ``logaddexp(0, -y·x)`` so that it never overflows."""
    z = -y * x
    return torch.logaddexp(z, torch.zeros((), dtype=z.dtype, device=z.device))
