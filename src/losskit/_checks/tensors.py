"""Checks of tensor arguments: types, dtypes, shapes, broadcasting, value ranges."""

from __future__ import annotations

import torch

from .._tracing import warn
from .errors import LossTypeError, LossValueError


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


def pointwise_pair(fn: str, input, target, *, warn_broadcast: bool = True):
    """Check two float tensors and broadcast them, warning like torch when their sizes differ."""
    tensor(fn, "input", input)
    tensor(fn, "target", target)
    floating(fn, "input", input)
    floating(fn, "target", target)
    if warn_broadcast and target.shape != input.shape:
        warn(
            f"Using a target size ({target.size()}) that is different to the input size ({input.size()}). "
            "This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            UserWarning,
            stacklevel=3,
        )
    if input.shape == target.shape:
        return input, target
    shape = broadcast_shape(fn, ("input", "target"), input, target)
    return input.expand(shape), target.expand(shape)


def elementwise_weight(fn: str, weight, input):
    """torch 2.13's optional per-element ``weight`` of the regression losses: same size as ``input``."""
    weight = optional_tensor(fn, "weight", weight)
    if weight is not None and weight.shape != input.shape:
        raise LossValueError(f"{fn}(): 'weight' {shape(weight)} and 'input' {shape(input)} must have the same size")
    return weight


def floating_dtype(fn: str, name: str, value: object) -> None:
    """A floating point ``torch.dtype``."""
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise LossTypeError(f"{fn}(): '{name}' must be a floating point torch.dtype, got {value!r}")


def at_least_1d(fn: str, name: str, t: torch.Tensor, forms: str) -> None:
    """A tensor with 1 or more dimensions, ``forms`` naming the shapes it may have, e.g. ``(C,), (N, C), ...``."""
    if t.dim() == 0:
        raise LossValueError(f"{fn}(): '{name}' must have 1 or more dimensions {forms}, got shape []")


def broadcasts_to(fn: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """``t`` broadcasts to ``ref``'s shape without growing it (e.g. class weights to the target)."""
    if broadcast_shape(fn, (name, ref_name), t, ref) != ref.shape:
        raise LossValueError(f"{fn}(): '{name}' {shape(t)} must broadcast to the {ref_name}'s shape {shape(ref)}")


def same_ndim(fn: str, names: tuple[str, ...], *tensors: torch.Tensor) -> None:
    if len({t.dim() for t in tensors}) > 1:
        described = ", ".join(f"{n} {shape(t)}" for n, t in zip(names, tensors, strict=True))
        quoted = ", ".join(f"'{n}'" for n in names[:-1]) + f" and '{names[-1]}'"
        raise LossValueError(f"{fn}(): {quoted} must have the same number of dimensions, got {described}")


def same_device(fn: str, name: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise LossValueError(f"{fn}(): '{name}' is on {t.device} but '{ref_name}' on {ref.device}")
