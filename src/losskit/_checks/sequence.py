"""Checks of sequence losses: CTC's log-probabilities, targets and lengths; the adaptive softmax's cutoffs and targets.

The messages follow torch's (``Expected input_lengths to have value at most 6, ...``, ``blank must be in label
range``) and add the argument's name and the shapes or values involved. Checks that read tensor data (lengths,
label ranges) return at once under ``torch.compile`` (no host sync is traced; the CTC kernel checks memory
safety itself and reports through :func:`ctc_kernel_error`).
"""

from __future__ import annotations

import torch

from .errors import LossIndexError, LossTypeError, LossValueError
from .tensors import shape

CTC_DTYPES = (torch.float32, torch.float64)


def _compiling() -> bool:
    return torch.compiler.is_compiling()


# ------------------------------------------------------------------------------------------------ CTC


def ctc_log_probs(fn: str, log_probs: torch.Tensor) -> bool:
    """``(T, N, C)`` (batched, returns True) or ``(T, C)`` (unbatched), float32/float64, not empty."""
    if log_probs.dim() not in (2, 3):
        raise LossValueError(
            f"{fn}(): 'log_probs' must be (T, N, C) or unbatched (T, C): expected a 3-dimensional tensor, but got a "
            f"{log_probs.dim()}-dimensional tensor of shape {shape(log_probs)}"
        )
    if log_probs.dtype not in CTC_DTYPES:
        raise LossTypeError(
            f'{fn}(): "ctc_loss_cpu" not implemented for {str(log_probs.dtype).removeprefix("torch.")!r}: '
            f"'log_probs' must be float32 or float64, got {log_probs.dtype}"
        )
    if log_probs.numel() == 0:
        raise LossValueError(f"{fn}(): 'log_probs' tensor must not be empty, got shape {shape(log_probs)}")
    return log_probs.dim() == 3


def ctc_blank(fn: str, blank: int, num_classes: int) -> None:
    if not 0 <= blank < num_classes:
        raise LossValueError(f"{fn}(): blank must be in label range: 'blank' is {blank}, C is {num_classes}")


def _lengths_tensor(fn: str, name: str, value: object) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
            raise LossTypeError(f"{fn}(): {name} must be integral, got a tensor of dtype {value.dtype}")
        return value.reshape(-1).to("cpu", torch.int64)
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return torch.tensor(list(value), dtype=torch.int64).reshape(-1)
    raise LossTypeError(
        f"{fn}(): '{name}' must be a tensor of integers or a tuple of ints, got {type(value).__name__}"
        + (f" ({value!r})" if isinstance(value, (int, float, tuple, list)) else "")
    )


def ctc_lengths(
    fn: str, input_lengths: object, target_lengths: object, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both lengths as flat int64 CPU tensors of ``batch`` elements. As torch, both are tensors or both are
    tuples/lists of ints (a tensor and a tuple together is a TypeError, as are floats)."""
    if isinstance(input_lengths, torch.Tensor) != isinstance(target_lengths, torch.Tensor):
        raise LossTypeError(
            f"{fn}(): 'input_lengths' and 'target_lengths' must both be tensors or both be tuples of ints, got "
            f"{type(input_lengths).__name__} and {type(target_lengths).__name__}"
        )
    il = _lengths_tensor(fn, "input_lengths", input_lengths)
    tl = _lengths_tensor(fn, "target_lengths", target_lengths)
    for name, t in (("input_lengths", il), ("target_lengths", tl)):
        if t.numel() != batch:
            raise LossValueError(f"{fn}(): {name} must be of size batch_size ({batch}), got {t.numel()} elements")
    return il, tl


def ctc_targets(fn: str, targets: torch.Tensor, batch: int) -> bool:
    """Padded ``(N, S)`` targets (returns True) or concatenated 1-D ones; real-valued (converted to int64)."""
    if targets.is_complex():
        raise LossTypeError(f"{fn}(): 'targets' must hold class indices, got dtype {targets.dtype}")
    if targets.dim() not in (1, 2):
        raise LossValueError(
            f"{fn}(): 'targets' must be padded (N, S) or concatenated (sum(target_lengths),): expected 1 to 2 "
            f"dimensions, but got a {targets.dim()}-dimensional tensor of shape {shape(targets)}"
        )
    if targets.dim() == 2 and targets.shape[0] != batch:
        raise LossValueError(
            f"{fn}(): padded 'targets' of shape {shape(targets)} must have size {batch} (the batch size) at "
            f"dimension 0, but got size {targets.shape[0]}"
        )
    return targets.dim() == 2


def ctc_values(
    fn: str,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    max_input: int,
    num_classes: int,
) -> None:
    """Lengths in range, targets long enough, labels in ``[0, C)`` (skipped under torch.compile)."""
    if _compiling() or input_lengths.numel() == 0:
        return
    for name, t, high in (("input_lengths", input_lengths, max_input), ("target_lengths", target_lengths, None)):
        low_v = int(t.min())
        if low_v < 0:
            raise LossValueError(f"{fn}(): Expected {name} to have value at least 0, but got value {low_v}")
        if high is not None and int(t.max()) > high:
            raise LossValueError(
                f"{fn}(): Expected {name} to have value at most {high} (the length T of 'log_probs'), but got "
                f"value {int(t.max())}"
            )
    if targets.dim() == 2:
        longest = int(target_lengths.max())
        if longest > targets.shape[1]:
            raise LossValueError(
                f"{fn}(): Expected 'targets' to have size at least {longest} (the largest target length) at "
                f"dimension 1, but got size {targets.shape[1]} (targets {shape(targets)})"
            )
        used = torch.arange(targets.shape[1]) < target_lengths[:, None]
        labels = targets.to("cpu")[used]
    else:
        total = int(target_lengths.sum())
        if total != targets.numel():
            raise LossValueError(
                f"{fn}(): concatenated 'targets' must have sum(target_lengths) = {total} elements, but got size "
                f"{targets.numel()}"
            )
        labels = targets.to("cpu")
    if labels.numel() and (bool((labels < 0).any()) or bool((labels >= num_classes).any())):
        bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
        raise LossIndexError(f"{fn}(): 'targets' holds label {bad}, outside the class range [0, {num_classes})")


def ctc_kernel_error(fn: str, code: int) -> None:
    """Raise for a non-zero return code of the CTC kernel (invalid data found under torch.compile, or no memory)."""
    if code == 0:
        return
    if code == -1:
        raise MemoryError(f"{fn}(): the CTC kernel ran out of memory")
    sample, kind = code >> 2, code & 3
    what = {1: "its input length is outside [0, T]", 2: "its target length is outside [0, S]"}.get(
        kind, "a label (or 'blank') is outside [0, C)"
    )
    error = LossIndexError if kind == 3 else LossValueError
    raise error(f"{fn}(): sample {sample} is invalid: {what} ('input_lengths', 'target_lengths', 'targets')")


# ------------------------------------------------------------------------------------------------ adaptive softmax


def adaptive_cutoffs(fn: str, cutoffs: object, n_classes: int) -> list[int]:
    """torch's rule: a non-empty sequence of unique, increasing integers in ``[1, n_classes - 1]``."""
    try:
        values = list(cutoffs)  # type: ignore[call-overload]
    except TypeError:
        raise LossTypeError(f"{fn}: 'cutoffs' must be a sequence of ints, got {type(cutoffs).__name__}") from None
    if len(values) == 0:
        raise LossValueError(f"{fn}: cutoffs should be a sequence of length larger than 0, got {values}")
    if (
        values != sorted(values)
        or min(values) <= 0
        or max(values) > n_classes - 1
        or len(set(values)) != len(values)
        or any(int(c) != c for c in values)
    ):
        raise LossValueError(
            f"{fn}: cutoffs should be a sequence of unique, positive integers sorted in an increasing order, where "
            f"each value is between 1 and n_classes-1; got 'cutoffs' {values} with 'n_classes' {n_classes}"
        )
    return values


def adaptive_shapes(fn: str, input: torch.Tensor, target: torch.Tensor) -> bool:
    """torch's forward rules: a 1-D target with a 2-D input of the same batch, or a 0-D target with a 1-D input.
    Returns whether batched."""
    if target.dim() == 1:
        if input.dim() == 0 or input.size(0) != target.size(0):
            raise LossValueError(
                f"{fn}: Input and target should have the same size in the batch dimension: 'input' "
                f"{shape(input)}, 'target' {shape(target)}"
            )
        if input.dim() != 2:
            raise LossValueError(
                f"{fn}: 1D target tensor expects 2D input tensors, but found 'input' with size {shape(input)}"
            )
        return True
    if target.dim() == 0:
        if input.dim() != 1:
            raise LossValueError(
                f"{fn}: 0D target tensor expects 1D input tensors, but found 'input' with size {shape(input)}"
            )
        return False
    raise LossValueError(
        f"{fn}: 0D or 1D target tensor expected, multi-target not supported; got 'target' of shape {shape(target)}"
    )


def adaptive_target_range(fn: str, target: torch.Tensor, n_classes: int) -> None:
    """Every target in ``[0, n_classes - 1]`` (torch's message; skipped under torch.compile)."""
    if _compiling() or target.numel() == 0:
        return
    low, high = int(target.min()), int(target.max())
    if low < 0 or high > n_classes - 1:
        raise LossIndexError(
            f"{fn}: Target values should be in [0, {n_classes - 1}], but values in range [{low}, {high}] were found "
            "in 'target'"
        )


def adaptive_input(fn: str, name: str, input: torch.Tensor, in_features: int) -> None:
    """``(N, in_features)`` input for ``log_prob`` / ``predict``."""
    if input.dim() != 2 or input.shape[1] != in_features:
        raise LossValueError(f"{fn}: '{name}' must have shape (N, {in_features}), got {shape(input)}")
