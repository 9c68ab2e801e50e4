"""The checks of :mod:`losskit.keras`: every user-facing exception of the Keras losses is raised here.

Each helper names the argument (and the shapes or values involved) and raises one of losskit's errors
(:class:`~losskit.LossValueError`, :class:`~losskit.LossTypeError`, :class:`~losskit.LossIndexError`, all
also ``ValueError``/``TypeError``/``IndexError`` and ``RuntimeError``). Where Keras' own tests match a
message with a regular expression, the message carries Keras' words: ``"Invalid value for argument"``
(reduction), ``"must have the same shape"`` (categorical and binary losses).
"""

from __future__ import annotations

import numbers
from typing import Any, NoReturn

import torch

from .errors import LossIndexError, LossTypeError, LossValueError

REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)

_DTYPES = {
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float": torch.float32,
    "float64": torch.float64,
    "double": torch.float64,
    # Keras' mixed-precision policies compute in the low-precision type
    "mixed_float16": torch.float16,
    "mixed_bfloat16": torch.bfloat16,
}


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


# ------------------------------------------------------------------------------------------ options


def reduction(fn: str, value: object) -> str | None:
    if not (value is None or isinstance(value, str)) or value not in REDUCTIONS:
        allowed = ", ".join(repr(r) for r in REDUCTIONS)
        raise LossValueError(
            f"{fn}(): Invalid value for argument `reduction` ('reduction'). Expected one of {allowed}. "
            f"Received: reduction={value!r}"
        )
    return value


def dtype(fn: str, value: object, default: str) -> torch.dtype:
    """A floating torch dtype from None (``default``, Keras' floatx), a torch dtype, a name ('float64'), a
    numpy dtype or a Keras ``DTypePolicy`` (anything with a ``compute_dtype``)."""
    if value is None:
        value = default
    if isinstance(value, torch.dtype):
        if not value.is_floating_point:
            raise LossTypeError(f"{fn}(): 'dtype' must be a floating point dtype, got {value}")
        return value
    if hasattr(value, "compute_dtype"):
        return dtype(fn, value.compute_dtype, default)
    name = value if isinstance(value, str) else getattr(value, "name", getattr(value, "__name__", None))
    if isinstance(name, str):
        key = name.removeprefix("torch.")
        if key in _DTYPES:
            return _DTYPES[key]
    raise LossTypeError(
        f"{fn}(): 'dtype' must be None, a floating torch dtype or one of {sorted(_DTYPES)}, got {value!r}"
    )


def number(fn: str, name: str, value: object) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LossTypeError(f"{fn}(): '{name}' must be a number, not {type(value).__name__}")
    return float(value)


def number_in(fn: str, name: str, value: object, low: float, high: float, *, open_low: bool = False) -> float:
    """A number in ``[low, high]`` (``(low, high]`` with ``open_low``); NaN fails."""
    value = number(fn, name, value)
    ok = (low < value if open_low else low <= value) and value <= high
    if not ok:
        left = "(" if open_low else "["
        raise LossValueError(f"{fn}(): '{name}' must be in {left}{low}, {high}], got {value}")
    return value


def generalized_q(fn: str, value: object) -> float:
    """Keras' CategoricalGeneralizedCrossEntropy ``q``: strictly between 0 and 1."""
    value = number(fn, "q", value)
    if not 0.0 < value < 1.0:
        raise LossValueError(f"{fn}(): q must be in the interval (0, 1) ('q'), got {value}")
    return value


def alpha_weights(fn: str, value: object) -> Any:
    """The focal ``alpha``: a number, or a list / array / tensor of per-class weights (kept as given)."""
    if isinstance(value, bool):
        raise LossTypeError(f"{fn}(): 'alpha' must be a number or a sequence of numbers, not bool")
    if isinstance(value, numbers.Real):
        return float(value)
    return value  # converted with the inputs' dtype, checked for broadcasting there


def flag(fn: str, name: str, value: object) -> bool:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, (bool, int)) and type(value).__name__ != "bool_":
        raise LossTypeError(f"{fn}(): '{name}' must be a bool, got {value!r}")
    return bool(value)


def axis_arg(fn: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise LossTypeError(
            f"{fn}(): `axis` ('axis') must be of type `int`. Received: axis={value!r} of type {type(value).__name__}"
        )
    return int(value)


def axes_arg(fn: str, value: object) -> int | tuple[int, ...] | None:
    """None (every axis), an int, or a tuple/list of distinct ints (Dice, Tversky)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return tuple(axis_arg(fn, v) for v in value)
    return axis_arg(fn, value)


def canonical_axis(fn: str, axis: int, ndim: int, name: str = "y_pred") -> int:
    n = max(ndim, 1)  # like torch, a 0-d tensor takes dim 0 or -1
    if not -n <= axis < n:
        raise LossIndexError(f"{fn}(): 'axis' {axis} is out of range for '{name}' of rank {ndim}")
    return axis % n


def canonical_axes(fn: str, axes: int | tuple[int, ...] | None, ndim: int) -> list[int] | None:
    if axes is None:
        return None
    dims = [canonical_axis(fn, a, ndim) for a in (axes if isinstance(axes, tuple) else (axes,))]
    if len(set(dims)) != len(dims):
        raise LossValueError(f"{fn}(): 'axis' {axes} repeats an axis of 'y_pred' of rank {ndim}")
    return dims


def ignore_class_arg(fn: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise LossTypeError(f"{fn}(): 'ignore_class' must be None or an int, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------- conversion


def as_tensor(fn: str, name: str, value: object, float_default: torch.dtype, device=None) -> torch.Tensor:
    """A tensor from a tensor, numpy array, nested list/tuple or number (Python floats become
    ``float_default``, Keras' floatx)."""
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(value)
        except (TypeError, RuntimeError) as e:
            raise LossTypeError(
                f"{fn}(): '{name}' must be a tensor, an array or a (nested) list of numbers, "
                f"not {type(value).__name__} ({e})"
            ) from None
        except ValueError as e:
            raise LossValueError(f"{fn}(): '{name}' could not be made into a tensor (ragged?): {e}") from None
        if not hasattr(value, "dtype") and t.is_floating_point():
            t = t.to(float_default)
    if t.is_complex():
        raise LossTypeError(f"{fn}(): '{name}' must be real, got dtype {t.dtype}")
    if device is not None and t.device != device:
        t = t.to(device)
    return t


def whole_labels(fn: str, t: torch.Tensor, name: str = "y_true") -> None:
    """Floating class labels must hold whole numbers."""
    if t.is_floating_point() and t.numel():
        whole = torch.isfinite(t) & (t == t.trunc())
        if not bool(whole.all()):
            bad = t[~whole].flatten()[0].item()
            raise LossValueError(f"{fn}(): '{name}' holds class labels, which must be whole numbers; found {bad}")


# ------------------------------------------------------------------------------------------- shapes


def same_shape(fn: str, y_true: torch.Tensor, y_pred: torch.Tensor) -> None:
    if y_true.shape != y_pred.shape:
        raise LossValueError(
            f"{fn}(): 'y_true' and 'y_pred' must have the same shape, got y_true {_shape(y_true)} "
            f"and y_pred {_shape(y_pred)}"
        )


def min_rank(fn: str, name: str, t: torch.Tensor, rank: int) -> None:
    if t.dim() < rank:
        raise LossValueError(f"{fn}(): '{name}' must have rank >= {rank}, got shape {_shape(t)}")


def rank(fn: str, name: str, t: torch.Tensor, rank: int, layout: str) -> None:
    if t.dim() != rank:
        raise LossValueError(f"{fn}(): '{name}' must have shape {layout} (rank {rank}), got shape {_shape(t)}")


def broadcast(fn: str, names: tuple[str, str], a: torch.Tensor, b: torch.Tensor) -> torch.Size:
    try:
        return torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise LossValueError(
            f"{fn}(): '{names[0]}' {_shape(a)} and '{names[1]}' {_shape(b)} do not broadcast "
            "(after Keras' squeeze/expand of a trailing size-1 axis)"
        ) from None


def sparse_labels_shape(fn: str, labels: torch.Tensor, y_pred: torch.Tensor, axis: int) -> None:
    expected = [d for i, d in enumerate(y_pred.shape) if i != axis]
    if _shape(labels) != expected:
        raise LossValueError(
            f"{fn}(): 'y_true' must have the shape of 'y_pred' {_shape(y_pred)} without its class axis "
            f"({axis}), i.e. {expected} (or with a size-1 class axis); got {_shape(labels)}"
        )


def label_range(fn: str, labels: torch.Tensor, num_classes: int, ignore_class: int | None = None) -> None:
    bad = (labels < 0) | (labels >= num_classes)
    if labels.numel() and bool(bad.any()):
        value = int(labels[bad].flatten()[0])
        also = "" if ignore_class is None else f", or ignore_class={ignore_class}"
        raise LossIndexError(
            f"{fn}(): 'y_true' label {value} is out of range for {num_classes} classes "
            f"(valid: 0..{num_classes - 1}{also})"
        )


def same_batch(fn: str, names: tuple[str, str], a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        raise LossValueError(
            f"{fn}(): '{names[0]}' {_shape(a)} and '{names[1]}' {_shape(b)} must have the same batch size"
        )


def embedding_dims(fn: str, y_pred: torch.Tensor, ref: torch.Tensor) -> None:
    if y_pred.dim() != 2 or ref.dim() != 2 or y_pred.shape[1] != ref.shape[1]:
        raise LossValueError(
            f"{fn}(): 'y_pred' {_shape(y_pred)} and 'ref_embeddings' {_shape(ref)} must be (N, D) and (M, D)"
        )


def ctc_lengths(fn: str, max_label: int, input_length: int) -> None:
    if max_label > input_length:
        raise LossValueError(
            f"{fn}(): 'y_true' has a label sequence of length {max_label}, longer than the {input_length} "
            "time steps of 'y_pred'"
        )


# ------------------------------------------------------------------------------------ serialization


def not_implemented(cls: str) -> NoReturn:
    raise LossTypeError(f"{cls}.call(y_true, y_pred) is not implemented: subclasses of losskit.keras.Loss define it")


def identifier(value: object) -> None:
    raise LossValueError(f"Could not interpret loss identifier: {value!r} ('identifier')")


def unknown_name(name: object) -> None:
    raise LossValueError(f"losskit.keras.deserialize(): unknown loss {name!r} ('config')")


def config_dict(value: object) -> None:
    raise LossTypeError(
        f"losskit.keras.deserialize(): 'config' must be a name or a dict with 'class_name' and 'config', got {value!r}"
    )
