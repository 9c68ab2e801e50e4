"""The regression family: squared, absolute, smooth-L1 and Huber errors, element-wise.

Each returns the element-wise loss of already-broadcast ``input`` and ``target``; the public layer
reduces it. Gradients come from autograd through ``abs``/``where``, which reproduces torch's
sub-gradients (0 at a zero error for L1, ``±1`` at the smooth-L1 knee).
"""

from __future__ import annotations

import torch

from .engine.pointwise import Pointwise


def squared_error(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(x - y)²``"""
    d = input - target
    return d * d


def absolute_error(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``|x - y|``"""
    return (input - target).abs()


def smooth_l1(input: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """``0.5·d²/β`` where ``|d| < β``, else ``|d| - 0.5·β``: Huber with ``δ = β``, divided by ``β``; ``β = 0`` is
    exactly L1."""
    if beta == 0.0:
        return (input - target).abs()
    return huber(input, target, beta) / beta


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
    return torch.dot(m, d) - 0.5 * torch.dot(m, m)


def squared_sum(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    d = torch.sub(input, target).reshape(-1)
    return torch.dot(d, d)


def _smooth_l1_grad(x, t, beta, out):
    d = torch.sub(x, t, out=out)
    return d.sign_() if beta == 0.0 else d.div_(beta).clamp_(-1.0, 1.0)


# The same losses for the chunked engine: (loss, ∂loss/∂x), torch's sub-gradients included.
SQUARED = Pointwise(
    "mse_loss",
    lambda x, t, _: squared_error(x, t),
    lambda x, t, _, out: torch.sub(x, t, out=out).mul_(2),
    reduced=lambda x, t, _: squared_sum(x, t),
)
ABSOLUTE = Pointwise(
    "l1_loss", lambda x, t, _: absolute_error(x, t), lambda x, t, _, out: torch.sub(x, t, out=out).sign_()
)
HUBER = Pointwise(
    "huber_loss",
    huber,
    lambda x, t, delta, out: torch.sub(x, t, out=out).clamp_(-delta, delta),
    reduced=huber_sum,
)
# smooth L1 = Huber(δ=β) / β, the 1/β applied once to the reduced sum and to grad_output; β = 0 is L1
SMOOTH_L1 = Pointwise(
    "smooth_l1_loss",
    lambda x, t, beta: smooth_l1(x, t, beta) if beta == 0 else huber(x, t, beta),
    lambda x, t, beta, out: _smooth_l1_grad(x, t, beta, out) if beta == 0 else HUBER.grad(x, t, beta, out),
    lambda beta: 1.0 if beta == 0 else 1.0 / beta,
    reduced=lambda x, t, beta: torch.sub(x, t).abs_().sum() if beta == 0 else huber_sum(x, t, beta),
)
