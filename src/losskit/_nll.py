"""NLL engine (temporary home)."""

from __future__ import annotations

import torch

from .engine.rows import as_rows


def nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: str,
    ignore_index: int,
) -> torch.Tensor:
    """``-w_y · input[y]`` per row, 0 for ignored rows; ``'mean'`` divides by ``Σ w_y`` of the kept rows."""
    x = as_rows(input)
    y = target.reshape(-1).long()
    valid = y != ignore_index
    y_safe = torch.where(valid, y, torch.zeros_like(y))
    picked = x.gather(1, y_safe.unsqueeze(1)).squeeze(1)
    if weight is None:
        w_y = valid.to(x.dtype)
        loss = torch.where(valid, -picked, torch.zeros_like(picked))
    else:
        w_y = torch.where(valid, weight[y_safe], torch.zeros((), dtype=weight.dtype, device=weight.device))
        loss = torch.where(valid, -picked * w_y, torch.zeros_like(picked))
    if reduction == "none":
        return loss.reshape(target.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / w_y.sum()
