"""Checks of class problems: class-index targets, class weights, class probabilities."""

from __future__ import annotations

import torch

from .._tracing import tracing
from .errors import LossIndexError, LossTypeError, LossValueError
from .tensors import same_dtype, shape


def class_weight(fn: str, weight: torch.Tensor | None, num_classes: int, input: torch.Tensor) -> None:
    if weight is None:
        return
    if weight.dim() != 1 or weight.numel() != num_classes:
        raise LossValueError(
            f"{fn}(): 'weight' should be defined either for all {num_classes} classes or no classes "
            f"but got weight tensor of shape {shape(weight)}"
        )
    same_dtype(fn, "weight", weight, input)


def class_index_dtype(fn: str, target: torch.Tensor) -> None:
    if target.dtype not in (torch.int64, torch.uint8):
        raise LossTypeError(
            f"{fn}(): class-index 'target' must have dtype torch.int64 (or torch.uint8), got {target.dtype}"
        )


def class_target(fn: str, input: torch.Tensor, target: torch.Tensor) -> None:
    """Shapes and dtype of an integer class target for ``input`` of shape (C,), (N, C) or (N, C, d1, ..., dK)."""
    if input.dim() < 1:
        raise LossValueError(f"{fn}(): 'input' must have 1 or more dimensions (C,), (N, C), ..., got shape []")
    class_index_dtype(fn, target)
    if input.dim() == 1:
        if target.dim() > 1 or (target.dim() == 1 and target.shape[0] != 1):
            raise LossValueError(
                f"{fn}(): unbatched 'input' of shape {shape(input)} takes a 0-d 'target', got shape {shape(target)}"
            )
        return
    if target.dim() == 0 or input.shape[0] != target.shape[0]:
        raise LossValueError(
            f"{fn}(): expected 'input' batch_size ({input.shape[0]}) to match 'target' batch_size "
            f"({target.shape[0] if target.dim() else 'a 0-d target'}); input {shape(input)}, target {shape(target)}"
        )
    if input.dim() == 2 and target.dim() != 1:
        raise LossValueError(
            f"{fn}(): 'input' of shape {shape(input)} takes a 1-D class-index 'target' of shape "
            f"[{input.shape[0]}]; got {shape(target)} (multi-target is not supported)"
        )
    expected = [input.shape[0], *input.shape[2:]]
    if shape(target) != expected:
        raise LossValueError(
            f"{fn}(): expected 'target' of shape {expected} for 'input' {shape(input)}, got {shape(target)}"
        )


def class_range(fn: str, target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Every target other than ``ignore_index`` is a class in [0, C)."""
    if target.numel() == 0:
        return
    t = target.long()
    bad = (t != ignore_index) & ((t < 0) | (t >= num_classes))
    if bool(bad.any()):
        value = int(t[bad].flatten()[0])
        raise LossIndexError(
            f"{fn}(): 'target' {value} is out of bounds for {num_classes} classes "
            f"(valid: 0..{num_classes - 1}, or ignore_index={ignore_index})"
        )


def class_problem(
    fn: str, input: torch.Tensor, target: torch.Tensor, weight, ignore_index: int, check_range: bool = True
) -> None:
    """Checks shared by cross_entropy and nll_loss for class-index targets (the range check is left to the
    caller when ``check_range`` is False, e.g. for a kernel that checks the targets as it reads them)."""
    class_target(fn, input, target)
    num_classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    class_weight(fn, weight, num_classes, input)
    if check_range and not tracing(input, target):  # traced calls check inside an operator (losskit.engine.ops)
        class_range(fn, target, num_classes, ignore_index)


def probability_target(fn: str, target: torch.Tensor) -> None:
    """A target shaped like the logits holds class probabilities: it must be floating point."""
    if not target.is_floating_point():
        raise LossTypeError(
            f"{fn}(): a 'target' of shape {shape(target)}, the logits' shape, holds class probabilities and "
            f"must be floating point, got {target.dtype}"
        )


def no_ignore_index(fn: str, ignore_index: int | None, given: bool) -> None:
    """``ignore_index`` has no meaning for class probabilities: refused when ``given``."""
    if given:
        raise LossValueError(f"{fn}(): ignore_index={ignore_index} is not supported for class-probability targets")


def multilabel_target(fn: str, input: torch.Tensor, target: torch.Tensor) -> int:
    """``(C)`` or ``(N, C)`` input with an int64 target of the same shape, entries in [-1, C); returns C."""
    if input.dim() > 2 or (input.dim() and input.shape[-1] == 0):
        raise LossValueError(f"{fn}(): 'input' must be (C) or (N, C) with C > 0, got {shape(input)}")
    if target.dtype != torch.int64:
        raise LossTypeError(f"{fn}(): 'target' must have dtype torch.int64, got {target.dtype}")
    if target.shape != input.shape:
        raise LossValueError(f"{fn}(): 'target' size {shape(target)} must equal the 'input' size {shape(input)}")
    c = input.shape[-1] if input.dim() else 1
    if not tracing(target):  # traced calls check inside an operator (losskit.engine.ops)
        multilabel_range(fn, target, c)
    return c


def multilabel_range(fn: str, target: torch.Tensor, c: int) -> None:
    """Every entry of a multi-label target in [-1, C), padding included (as torch checks)."""
    out_of_range = (target < -1) | (target >= c)
    if bool(out_of_range.any()):
        bad = int(target[out_of_range].flatten()[0])
        raise LossIndexError(
            f"{fn}(): 'target' {bad} is out of range for {c} classes (valid: 0..{c - 1}, or -1 to end the list)"
        )
