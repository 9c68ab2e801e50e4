"""The one place that turns bad input into a clear exception.

Every error names the argument and the shapes, dtypes or values involved. Each exception class is
both the idiomatic Python type and :class:`RuntimeError` (what torch raises for most of these), so
code written against torch's ``except RuntimeError`` keeps working.
"""

from __future__ import annotations

import torch


class LossError(RuntimeError):
    """Base class of losskit's input errors (a :class:`RuntimeError`, like torch's)."""


class LossValueError(LossError, ValueError):
    """A shape, size or value that the loss cannot take."""


class LossTypeError(LossError, TypeError, NotImplementedError):
    """A wrong type or dtype (also a NotImplementedError, as torch's kernels raise for unsupported dtypes)."""


class LossIndexError(LossError, IndexError):
    """A class index outside ``[0, C)``."""


def shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def tensor(fn: str, name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise LossTypeError(f"{fn}(): argument '{name}' must be a Tensor, not {type(value).__name__}")
    return value


def optional_tensor(fn: str, name: str, value: object) -> torch.Tensor | None:
    return None if value is None else tensor(fn, name, value)


def floating(fn: str, name: str, t: torch.Tensor) -> None:
    if not (t.is_floating_point() or t.is_complex()):
        raise LossTypeError(f"{fn}(): '{name}' must be a floating point tensor, got dtype {t.dtype}")


def same_dtype(fn: str, name: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str = "input") -> None:
    if t.dtype != ref.dtype:
        raise LossTypeError(
            f"{fn}(): '{name}' has dtype {t.dtype} but '{ref_name}' has dtype {ref.dtype}; they must match"
        )


def no_grad(fn: str, name: str, t: torch.Tensor | None) -> None:
    if t is not None and t.requires_grad:
        raise LossValueError(f"{fn}(): the loss is not differentiable with respect to '{name}', which requires grad")


def number(fn: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LossTypeError(f"{fn}(): '{name}' must be a number, not {type(value).__name__}")
    return float(value)


def integer(fn: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LossTypeError(f"{fn}(): '{name}' must be an int, not {type(value).__name__}")
    return value


def broadcast_shape(fn: str, names: tuple[str, ...], *tensors: torch.Tensor) -> torch.Size:
    try:
        return torch.broadcast_shapes(*(t.shape for t in tensors))
    except RuntimeError:
        described = ", ".join(f"'{n}' {shape(t)}" for n, t in zip(names, tensors, strict=True))
        raise LossValueError(f"{fn}(): shapes do not broadcast: {described}") from None


def same_size(fn: str, input: torch.Tensor, target: torch.Tensor) -> None:
    if input.shape != target.shape:
        raise LossValueError(f"{fn}(): 'target' size {shape(target)} must be the same as 'input' size {shape(input)}")


def in_unit_interval(fn: str, name: str, t: torch.Tensor) -> None:
    """Every element in [0, 1] (NaN fails too), as torch's BCE requires of input and target."""
    if t.numel() and not bool(((t >= 0) & (t <= 1)).all()):
        bad = t[~((t >= 0) & (t <= 1))].flatten()[0].item()
        raise LossValueError(f"{fn}(): all elements of '{name}' should be between 0 and 1, found {bad}")


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


def label_smoothing(fn: str, value: float) -> float:
    value = number(fn, "label_smoothing", value)
    if value > 1.0:
        raise LossValueError(f"{fn}(): 'label_smoothing' must be between 0.0 and 1.0, got {value}")
    # torch treats a negative smoothing as none at all
    return max(value, 0.0)


def positive(fn: str, name: str, value: float) -> float:
    value = number(fn, name, value)
    if not value > 0:
        raise LossValueError(f"{fn}(): '{name}' must be positive, got {value}")
    return value


def positive_finite(fn: str, name: str, value: float) -> float:
    value = positive(fn, name, value)
    if value == float("inf"):
        raise LossValueError(f"{fn}(): '{name}' must be finite, got {value}")
    return value


def non_negative(fn: str, name: str, value: float) -> float:
    value = number(fn, name, value)
    if not value >= 0:  # nan fails too
        raise LossValueError(f"{fn}(): '{name}' must be non-negative, got {value}")
    return value
