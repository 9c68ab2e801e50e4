"""Checks that torch's loss modules make in their constructors (so a bad option fails at construction, not later)."""

from __future__ import annotations

import torch

from .errors import LossTypeError, LossValueError
from .tensors import shape


def linear_cross_entropy_module(weight: torch.Tensor | None, num_classes: int, label_smoothing: object) -> None:
    """``LinearCrossEntropyLoss``: a ``(num_classes,)`` class weight and a smoothing in ``[0, 1]`` (torch's rules)."""
    name = "LinearCrossEntropyLoss"
    if weight is not None and tuple(weight.shape) != (num_classes,):
        raise LossValueError(
            f"{name}: expected 'weight' shape to be {(num_classes,)} (num_classes,), got {tuple(shape(weight))}"
        )
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
        raise LossTypeError(f"{name}: 'label_smoothing' must be a number, got {type(label_smoothing).__name__}")
    if not 0 <= label_smoothing <= 1.0:
        raise LossValueError(f"{name}: expected 'label_smoothing' to be in range [0, 1], got {label_smoothing}")


def huber_delta(delta: object) -> None:
    """``HuberLoss``: ``delta`` a float or int (torch's constructor check; the range is checked at forward)."""
    if not isinstance(delta, (float, int)):
        raise LossTypeError(f"HuberLoss: 'delta' must be a float or int, got: {type(delta)}")
