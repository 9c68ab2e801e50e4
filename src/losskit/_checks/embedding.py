"""Checks of the embedding, margin and likelihood losses (issue 13): triplets, cosine pairs, multi-margin
targets, Gaussian variances, distance functions.

Checks that read tensor data (negative variances, target ranges) sync with the host; they are skipped
while :func:`torch.compile` / :func:`torch.export` trace and under :mod:`torch.func` transforms (where
the data is not there to read), as :func:`reads_data` says.
"""

from __future__ import annotations

import torch

from .._tracing import tracing
from .errors import LossIndexError, LossTypeError, LossValueError
from .tensors import shape


def reads_data() -> bool:
    """True when a check may look at tensor values: the call is not being traced (see losskit._tracing)."""
    return not tracing()


def same_ndim3(fn: str, names: tuple[str, str, str], a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> None:
    """Three tensors of the same number of dimensions (torch's triplet losses raise RuntimeError)."""
    if not (a.dim() == b.dim() == c.dim()):
        raise LossValueError(
            f"{fn}(): the {names[0]}, {names[1]}, and {names[2]} tensors are expected to have the same number of "
            f"dimensions, but got: '{names[0]}' {shape(a)} ({a.dim()}D), '{names[1]}' {shape(b)} ({b.dim()}D) "
            f"and '{names[2]}' {shape(c)} ({c.dim()}D)"
        )


def margin_positive(fn: str, margin: object) -> float:
    """``margin > 0`` (a ValueError in torch, in the function and in the module's constructor)."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise LossTypeError(f"{fn}(): 'margin' must be a number, not {type(margin).__name__}")
    if not margin > 0:
        raise LossValueError(f"{fn}(): 'margin' must be greater than 0, got {margin}")
    return float(margin)


def distance_function(fn: str, value: object) -> None:
    if value is not None and not callable(value):
        raise LossTypeError(f"{fn}(): 'distance_function' must be callable or None, not {type(value).__name__}")


def distance_result(fn: str, name: str, d: object) -> torch.Tensor:
    if not isinstance(d, torch.Tensor):
        raise LossTypeError(f"{fn}(): 'distance_function' must return a Tensor for {name}, got {type(d).__name__}")
    return d


def norm_order(fn: str, p: object) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise LossTypeError(f"{fn}(): 'p' must be a number, not {type(p).__name__}")
    return float(p)


def cosine_shapes(fn: str, input1: torch.Tensor, input2: torch.Tensor, target: torch.Tensor) -> None:
    """``(N, D)`` inputs with an ``(N)`` target, or ``(D)`` inputs with a 0-d target (torch: RuntimeError)."""
    if target.dim() not in (0, 1):
        raise LossValueError(
            f"{fn}(): 'target' must be 0-D or 1-D (multi-target not supported), got shape {shape(target)}"
        )
    want = target.dim() + 1
    if input1.dim() != want or input2.dim() != want:
        raise LossValueError(
            f"{fn}(): a {target.dim()}-D 'target' {shape(target)} expects {want}-D 'input1' and 'input2', "
            f"got {shape(input1)} and {shape(input2)}"
        )


def multi_margin_p(fn: str, p: object) -> int:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or p not in (1, 2):
        raise LossValueError(f"{fn}(): only p == 1 and p == 2 supported, got p={p!r}")
    return int(p)


def one_dim_weight(fn: str, weight: torch.Tensor | None) -> None:
    if weight is not None and weight.dim() != 1:
        raise LossValueError(f"{fn}(): 'weight' must be one-dimensional (None or a 1D tensor), got {shape(weight)}")


def multi_margin_problem(fn: str, input: torch.Tensor, target: torch.Tensor, weight) -> tuple[int, int]:
    """Shapes and dtypes of ``multi_margin_loss``; returns ``(N, C)`` (``(1, C)`` unbatched)."""
    nd = input.dim()
    if nd > 2 or (nd >= 1 and input.shape[-1] == 0):
        raise LossValueError(
            f"{fn}(): expected a non-empty vector or matrix 'input' with optional 0-dim batch size, "
            f"but got: {shape(input)}"
        )
    n, c = (input.shape[0], input.shape[1]) if nd == 2 else (1, input.shape[0] if nd == 1 else 1)
    if not input.is_floating_point():
        raise LossTypeError(f"{fn}(): 'input' must be a floating point tensor, got {input.dtype}")
    if target.dim() > 1 or target.numel() != n:
        raise LossValueError(
            f"{fn}(): 'target' tensor should be 1-D with size equal to the batch size: expected target size "
            f"[{n}] for 'input' {shape(input)}, but got {shape(target)}"
        )
    if target.dtype != torch.int64:
        raise LossTypeError(
            f"{fn}(): 'target' must have dtype torch.int64 (expected scalar type Long), got {target.dtype}"
        )
    if weight is not None:
        if weight.numel() != c:
            raise LossValueError(f"{fn}(): inconsistent 'weight' size, expected {c} but got {shape(weight)}")
        if weight.dtype != input.dtype:
            raise LossTypeError(f"{fn}(): 'weight' has dtype {weight.dtype} but 'input' has {input.dtype}")
    return n, c


def target_in_range(fn: str, target: torch.Tensor, num_classes: int) -> None:
    """Every class index in ``[0, C)`` (data check: skipped while tracing)."""
    if not reads_data() or target.numel() == 0:
        return
    bad = (target < 0) | (target >= num_classes)
    if bool(bad.any()):
        value = int(target[bad].flatten()[0])
        raise LossIndexError(
            f"{fn}(): 'target' {value} is out of range for {num_classes} classes (valid 0..{num_classes - 1})"
        )


def gaussian_var(fn: str, var: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """torch's variance shapes: ``input``'s (heteroscedastic), ``input``'s without its last dim, or
    ``input``'s with exactly one other dim of size 1 (homoscedastic); returns var shaped to broadcast."""
    if var.shape == input.shape:
        return var
    if input.shape[:-1] == var.shape:
        return var.unsqueeze(-1)
    if input.dim() == var.dim() and sum(v for i, v in zip(input.shape, var.shape, strict=True) if i != v) == 1:
        return var
    raise LossValueError(
        f"{fn}(): 'var' is of incorrect size {shape(var)} for 'input' {shape(input)}: it must be the input's "
        "size, the input's size without its last dim, or the input's size with one dim of size 1"
    )


def non_negative_var(fn: str, var: torch.Tensor | float) -> None:
    """No negative variance (torch: ValueError); for a tensor a data check, skipped while tracing."""
    if isinstance(var, torch.Tensor):
        if not reads_data() or var.numel() == 0:
            return
        if bool((var < 0).any()):
            bad = float(var[var < 0].flatten()[0])
            raise LossValueError(f"{fn}(): 'var' has negative entry/entries, e.g. {bad}")
    elif var < 0:
        raise LossValueError(f"{fn}(): 'var' has negative entry/entries: {var}")


def var_argument(fn: str, var: object) -> None:
    if not isinstance(var, (torch.Tensor, float)):  # torch: an int var is a TypeError too
        raise LossTypeError(f"{fn}(): 'var' must be a Tensor or a float, not {type(var).__name__}")


def class_dim(fn: str, input: torch.Tensor) -> int:
    """The last dim holds the classes: ``input`` needs one (torch: IndexError); returns C."""
    if input.dim() == 0:
        raise LossIndexError(f"{fn}(): 'input' must have a class dimension (its last), got a 0-d tensor")
    return input.shape[-1]
