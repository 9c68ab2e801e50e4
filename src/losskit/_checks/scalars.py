"""Checks of scalar arguments: numbers, ints, ranges, reductions."""

from __future__ import annotations

from .errors import LossTypeError, LossValueError


def number(fn: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LossTypeError(f"{fn}(): '{name}' must be a number, not {type(value).__name__}")
    return float(value)


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def fits_int64(value: int) -> bool:
    """Whether an int fits torch's index type (and a kernel's int64 argument); the fast paths decline others."""
    return INT64_MIN <= value <= INT64_MAX


def integer(fn: str, name: str, value: object) -> int:
    """An int that fits torch's index type, int64 (torch raises "Overflow when unpacking long long" beyond)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LossTypeError(f"{fn}(): '{name}' must be an int, not {type(value).__name__}")
    if not fits_int64(value):
        raise LossValueError(f"{fn}(): '{name}' must fit in int64 ([-2**63, 2**63 - 1]), got {value}")
    return value


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


def reduction(value: object, allowed: tuple[str, ...]) -> str:
    """One of ``allowed`` (torch's message when it is not)."""
    if not isinstance(value, str) or value not in allowed:
        raise LossValueError(f"{value} is not a valid value for reduction (expected one of {', '.join(allowed)})")
    return value


def strict_flag(fn: str, name: str, value: object) -> bool:
    """A bool and nothing else, as torch's kernels take (``kl_div(log_target=...)``)."""
    if not isinstance(value, bool):
        raise LossTypeError(f"{fn}(): '{name}' must be bool, not {type(value).__name__} ({value!r})")
    return value


def flag(fn: str, name: str, value: object) -> bool:
    """A bool (or 0/1), as torch's boolean options take."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise LossTypeError(f"{fn}(): '{name}' must be a bool, not {type(value).__name__} ({value!r})")
