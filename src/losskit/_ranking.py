"""The ranking family: margin ranking and multi-label margin losses, per element / per sample."""

from __future__ import annotations

import torch


def margin_ranking(x1: torch.Tensor, x2: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """``max(0, -y·(x1 - x2) + margin)`` element-wise (broadcast)."""
    return (-y * (x1 - x2) + margin).clamp_min(0)


def target_mask(target: torch.Tensor) -> torch.Tensor:
    """True for the target entries before the first -1 of each row (the rest are padding)."""
    return torch.cumprod((target != -1).to(torch.int8), dim=-1).bool()


def multilabel_margin(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample ``Σ_{j ∈ targets} Σ_{i ∉ targets} max(0, 1 - (x[j] - x[i])) / C`` for (N, C) input.

    ``target`` rows list class indices and end at the first -1.
    """
    n, c = input.shape
    used = target_mask(target)
    idx = torch.where(used, target, torch.zeros_like(target))
    # count the listed classes per row (padding slots add 0 to class 0), so duplicates and padding are harmless
    hits = torch.zeros(n, c, dtype=torch.int32, device=input.device).scatter_add_(1, idx, used.to(torch.int32))
    is_target = hits > 0
    x_t = input.gather(1, idx)  # (N, J): the scores of the listed targets
    margins = torch.relu(1 - x_t.unsqueeze(2) + input.unsqueeze(1))  # (N, J, C)
    keep = used.unsqueeze(2) & ~is_target.unsqueeze(1)
    margins = torch.where(keep, margins, torch.zeros((), dtype=input.dtype, device=input.device))
    return margins.sum(dim=(1, 2)) / c
