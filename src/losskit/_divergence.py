"""The divergence family: Kullback-Leibler divergence on log-probabilities, element-wise."""

from __future__ import annotations

import torch


def kl_div(input: torch.Tensor, target: torch.Tensor, log_target: bool) -> torch.Tensor:
    """``t·(log t - x)`` (a target of 0 contributes 0), or ``exp(t)·(t - x)`` when ``log_target``."""
    if log_target:
        return torch.exp(target) * (target - input)
    return torch.xlogy(target, target) - target * input
