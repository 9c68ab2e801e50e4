"""The divergence family: Kullback-Leibler divergence on log-probabilities, element-wise."""

from __future__ import annotations

import torch

from .engine.pointwise import Pointwise


def kl_div(input: torch.Tensor, target: torch.Tensor, log_target: bool) -> torch.Tensor:
    """``t·(log t - x)`` (a target of 0 contributes 0), or ``exp(t)·(t - x)`` when ``log_target``."""
    if log_target:
        return torch.exp(target) * (target - input)
    return torch.xlogy(target, target) - target * input


def _kl_grad(x, t, log_target, out):
    """``∂/∂x = -t`` (or ``-exp(t)`` for a log target)."""
    return torch.exp(t, out=out).neg_() if log_target else torch.neg(t, out=out)


KL_DIV = Pointwise("kl_div", kl_div, _kl_grad)
