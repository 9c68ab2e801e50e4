"""Checks of autograd use that the fused losses cannot serve: in place over a leaf, a spent gradient."""

from __future__ import annotations

import torch

from .errors import LossError, LossValueError


def inplace_allowed(fn: str, logits: torch.Tensor) -> None:
    """``inplace=True`` would overwrite the logits: refused for a leaf that requires grad (or a view of one)."""
    root = logits
    while root._base is not None:
        root = root._base
    if root.is_leaf and root.requires_grad:
        raise LossValueError(
            f"{fn}(inplace=True) would overwrite the logits, a leaf tensor (or a view of one) that "
            "requires grad; use inplace=True on logits computed by the model, such as h @ W.T"
        )


def gradient_available(fn: str, available: bool, why: str) -> None:
    """A second backward through a graph whose precomputed gradient the first one consumed."""
    if not available:
        raise LossError(f"{fn}: {why}")


def overwritten_logits(operation: str) -> None:
    """A read of logits that ``cross_entropy(inplace=True)`` overwrote with their gradient."""
    raise LossValueError(
        f"these logits were overwritten by cross_entropy(inplace=True): their storage holds the loss's gradient, "
        f"so '{operation}' on them would compute on the gradient. Use inplace=True only when nothing reads the "
        "logits after the loss (compute accuracies, regularisers or other losses first, or use inplace=False)"
    )
