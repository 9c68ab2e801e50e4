"""Keras 3 numerics on torch tensors: input conversion, Keras' rank fix-ups, per-sample losses, reductions.

This is losskit's own implementation of the semantics of ``keras.losses`` (Keras 3, any backend); it never
imports keras. The public layer is :mod:`losskit.keras`. What Keras does, and so what this module does:

* inputs: a ``Loss`` object casts ``y_true`` and ``y_pred`` to its ``dtype`` (float32 by default); the plain
  functions keep a floating ``y_pred``'s dtype (array-likes of Python numbers become float32) and cast
  ``y_true`` to it. Class labels (sparse) become int64.
* :func:`squeeze_or_expand`: when two ranks differ by exactly one and the longer one ends in a size-1
  axis, that axis is squeezed (or, when the shorter one is rank 1, the shorter one is expanded).
* probabilities are renormalised over the class axis and clipped to ``[ε, 1 - ε]`` with ``ε = 1e-7``.
* :func:`reduce_weighted`: a mask (``ignore_class``, or ``y_pred._keras_mask``) and ``sample_weight``
  merge into one weight, then ``'sum'`` adds, ``'sum_over_batch_size'``/``'mean'`` divide the sum by the
  number of weighted values, ``'mean_with_sample_weight'`` by the sum of the weights, always with
  *divide-no-nan* (x / 0 gives 0); ``'none'``/``None`` keep the values.
"""

from __future__ import annotations

import re
import warnings

import torch

from . import _binary, _regression, functional
from ._checks import LossIndexError, LossTypeError, LossValueError

EPSILON = 1e-7  # keras.backend.epsilon()
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


# ------------------------------------------------------------------------------------------ options


def reduction(fn: str, value: object) -> str | None:
    if not (value is None or isinstance(value, str)) or value not in REDUCTIONS:
        allowed = ", ".join(repr(r) for r in REDUCTIONS)
        raise LossValueError(f"{fn}(): invalid value for argument 'reduction': {value!r} (expected one of {allowed})")
    return value


def dtype(fn: str, value: object) -> torch.dtype:
    """A floating torch dtype from None (float32), a torch dtype, a name ('float64'), a numpy dtype or a
    Keras ``DTypePolicy`` (anything with a ``compute_dtype``)."""
    if value is None:
        return torch.float32
    if isinstance(value, torch.dtype):
        if not value.is_floating_point:
            raise LossTypeError(f"{fn}(): 'dtype' must be a floating point dtype, got {value}")
        return value
    if hasattr(value, "compute_dtype"):
        return dtype(fn, value.compute_dtype)
    name = value if isinstance(value, str) else getattr(value, "name", getattr(value, "__name__", None))
    if isinstance(name, str):
        key = name.removeprefix("torch.")
        if key in _DTYPES:
            return _DTYPES[key]
    raise LossTypeError(
        f"{fn}(): 'dtype' must be None, a floating torch dtype or one of {sorted(_DTYPES)}, got {value!r}"
    )


def number_in(fn: str, name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LossTypeError(f"{fn}(): '{name}' must be a number, not {type(value).__name__}")
    value = float(value)
    if not low <= value <= high:
        raise LossValueError(f"{fn}(): '{name}' must be in [{low}, {high}], got {value}")
    return value


def axis_arg(fn: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LossTypeError(f"{fn}(): 'axis' must be an int, got {value!r} of type {type(value).__name__}")
    return value


def canonical_axis(fn: str, axis: int, ndim: int) -> int:
    n = max(ndim, 1)  # like torch, a 0-d tensor takes dim 0 or -1
    if not -n <= axis < n:
        raise LossIndexError(f"{fn}(): 'axis' {axis} is out of range for 'y_pred' of rank {ndim}")
    return axis % n


def ignore_class_arg(fn: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise LossTypeError(f"{fn}(): 'ignore_class' must be None or an int, got {value!r}")
    return value


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# --------------------------------------------------------------------------------------- conversion


def as_tensor(fn: str, name: str, value: object, device: torch.device | None = None) -> torch.Tensor:
    """A tensor from a tensor, numpy array, nested list/tuple or number (Python floats become float32)."""
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
            t = t.to(torch.float32)  # Keras' floatx for Python numbers, whatever torch's default dtype
    if t.is_complex():
        raise LossTypeError(f"{fn}(): '{name}' must be real, got dtype {t.dtype}")
    if device is not None and t.device != device:
        t = t.to(device)
    return t


def as_float(fn: str, name: str, value: object, dt: torch.dtype | None, device=None) -> torch.Tensor:
    """``value`` as a floating tensor: cast to ``dt`` when given, else kept if floating, else float32."""
    t = as_tensor(fn, name, value, device)
    if dt is not None:
        return t.to(dt)
    return t if t.is_floating_point() else t.to(torch.float32)


def as_labels(fn: str, value: object, device=None) -> torch.Tensor:
    """Integer class labels (int64); floating labels must hold whole numbers."""
    t = as_tensor(fn, "y_true", value, device)
    if t.is_floating_point() and t.numel():
        whole = torch.isfinite(t) & (t == t.trunc())
        if not bool(whole.all()):
            bad = t[~whole].flatten()[0].item()
            raise LossValueError(f"{fn}(): 'y_true' holds class labels, which must be whole numbers; found {bad}")
    return t.long()


def squeeze_or_expand(x1: torch.Tensor, x2: torch.Tensor, expand_rank_1: bool = True):
    """Keras' fix-up of ranks that differ by one: squeeze a trailing size-1 axis of the longer one or,
    when the shorter one has rank 1, give it a trailing axis instead."""
    r1, r2 = x1.dim(), x2.dim()
    if r1 == r2 + 1 and x1.shape[-1] == 1:
        if r2 == 1 and expand_rank_1:
            x2 = x2.unsqueeze(-1)
        else:
            x1 = x1.squeeze(-1)
    if r2 == r1 + 1 and x2.shape[-1] == 1:
        if r1 == 1 and expand_rank_1:
            x1 = x1.unsqueeze(-1)
        else:
            x2 = x2.squeeze(-1)
    return x1, x2


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def _same_shape(fn: str, y_true: torch.Tensor, y_pred: torch.Tensor) -> None:
    if y_true.shape != y_pred.shape:
        raise LossValueError(
            f"{fn}(): 'y_true' and 'y_pred' must have the same shape, got y_true {_shape(y_true)} "
            f"and y_pred {_shape(y_pred)}"
        )


def _broadcast(fn: str, names: tuple[str, str], a: torch.Tensor, b: torch.Tensor) -> torch.Size:
    try:
        return torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise LossValueError(
            f"{fn}(): '{names[0]}' {_shape(a)} and '{names[1]}' {_shape(b)} do not broadcast "
            "(after Keras' squeeze/expand of a trailing size-1 axis)"
        ) from None


# ------------------------------------------------------------------------------- per-sample losses


def _normalised_log(y_pred: torch.Tensor, axis: int) -> torch.Tensor:
    """``log(clip(p / Σ_axis p, ε, 1 - ε))``: Keras' treatment of predicted probabilities."""
    p = y_pred / y_pred.sum(dim=axis, keepdim=True)
    return p.clamp(EPSILON, 1.0 - EPSILON).log()


def _class_dim_first(t: torch.Tensor, axis: int) -> torch.Tensor:
    """Move the class axis to dim 1, where losskit's fused cross entropy expects it (rank 1 stays)."""
    return t if t.dim() < 2 or axis == 1 else t.movedim(axis, 1)


def categorical_crossentropy(fn, y_true, y_pred, from_logits, label_smoothing, axis):
    """``-Σ_axis t·log q`` per sample, ``q`` = softmax (logits) or the clipped, renormalised probabilities."""
    _same_shape(fn, y_true, y_pred)
    if y_pred.dim() < 1:
        raise LossValueError(f"{fn}(): 'y_true' and 'y_pred' must have rank >= 1, got shape {_shape(y_pred)}")
    ax = canonical_axis(fn, axis, y_pred.dim())
    if y_pred.shape[-1] == 1:
        warnings.warn(
            f"In loss {fn}, expected y_pred.shape to be (batch_size, num_classes) with num_classes > 1. "
            f"Received: y_pred.shape={tuple(y_pred.shape)}. "
            "Consider using 'binary_crossentropy' if you only have 2 classes.",
            SyntaxWarning,
            stacklevel=4,
        )
    if label_smoothing:
        # Keras counts the classes along the LAST axis, whatever `axis` is
        num_classes = torch.tensor(y_true.shape[-1], dtype=y_pred.dtype, device=y_pred.device)
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / num_classes
    if from_logits:
        x = _class_dim_first(y_pred, ax)
        t = _class_dim_first(y_true, ax)
        return functional.cross_entropy(x, t, reduction="none")
    return -(y_true * _normalised_log(y_pred, ax)).sum(dim=ax)


def sparse_categorical_crossentropy(fn, labels, y_pred, from_logits, ignore_class, axis):
    """``-log q[label]`` per sample; returns ``(loss, valid)``, ``valid`` the ignore_class mask (or None)."""
    if y_pred.dim() < 1:
        raise LossValueError(f"{fn}(): 'y_pred' must have rank >= 1, got shape {_shape(y_pred)}")
    ax = canonical_axis(fn, axis, y_pred.dim())
    if labels.dim() == y_pred.dim() and labels.shape[ax] == 1:
        labels = labels.squeeze(ax)
    expected = [d for i, d in enumerate(y_pred.shape) if i != ax]
    if _shape(labels) != expected:
        raise LossValueError(
            f"{fn}(): 'y_true' must have the shape of 'y_pred' {_shape(y_pred)} without its class axis "
            f"({ax}), i.e. {expected} (or with a size-1 class axis); got {_shape(labels)}"
        )
    num_classes = y_pred.shape[ax]
    valid = None
    if ignore_class is not None:
        valid = labels != ignore_class
        labels = torch.where(valid, labels, torch.zeros_like(labels))
    bad = (labels < 0) | (labels >= num_classes)
    if labels.numel() and bool(bad.any()):
        value = int(labels[bad].flatten()[0])
        also = "" if ignore_class is None else f", or ignore_class={ignore_class}"
        raise LossIndexError(
            f"{fn}(): 'y_true' label {value} is out of range for {num_classes} classes "
            f"(valid: 0..{num_classes - 1}{also})"
        )
    if from_logits:
        loss = functional.cross_entropy(_class_dim_first(y_pred, ax), labels, reduction="none")
    else:
        logq = _normalised_log(y_pred, ax)
        loss = -logq.gather(ax, labels.unsqueeze(ax)).squeeze(ax)
    if valid is not None:
        loss = torch.where(valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    return loss, valid


def binary_crossentropy(fn, y_true, y_pred, from_logits, label_smoothing, axis):
    """Element-wise binary cross entropy, averaged over ``axis``."""
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    _same_shape(fn, y_true, y_pred)
    ax = canonical_axis(fn, axis, y_pred.dim())
    if from_logits:
        elementwise = _binary.binary_cross_entropy_with_logits(y_pred, y_true, None, None)
    else:
        elementwise = _binary.binary_cross_entropy(y_pred.clamp(EPSILON, 1.0 - EPSILON), y_true, None)
    return elementwise.mean(dim=ax)


def regression(fn, kind: str, y_true, y_pred, delta: float = 1.0):
    """``mean(err, axis=-1)`` with ``err`` squared, absolute or Huber; y_true and y_pred broadcast."""
    y_true, y_pred = squeeze_or_expand(y_true, y_pred)
    shape = _broadcast(fn, ("y_true", "y_pred"), y_true, y_pred)
    y_true, y_pred = y_true.expand(shape), y_pred.expand(shape)
    if kind == "squared":
        err = _regression.squared_error(y_pred, y_true)
    elif kind == "absolute":
        err = _regression.absolute_error(y_pred, y_true)
    else:
        err = _regression.huber(y_pred, y_true, delta)
    return err.mean(dim=-1)


# ------------------------------------------------------------------------------------------ reduce


def divide_no_nan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a / b``, and 0 where ``b == 0``, in Keras' result dtype: Keras 3 promotes (float64, Python float)
    to float32, so a float64 division is done, and returned, in float32."""
    dt = torch.float32 if a.dtype == torch.float64 else a.dtype
    a, b = a.to(dt), b.to(dt)
    zero = b == 0
    return torch.where(zero, torch.zeros_like(a), a / torch.where(zero, torch.ones_like(b), b))


def _reduce(values: torch.Tensor, sample_weight: torch.Tensor | None, reduction: str | None) -> torch.Tensor:
    if reduction is None or reduction == "none" or values.dim() == 0 or _shape(values) == [0]:
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        divisor = sample_weight.sum().to(total.dtype)
    else:
        divisor = torch.tensor(values.numel(), dtype=total.dtype, device=total.device)
    return divide_no_nan(total, divisor)  # float32 for float64 values, as in Keras


def reduce_weighted(fn, values, sample_weight, mask, reduction):
    """Merge ``mask`` into ``sample_weight``, weight ``values`` and reduce them, as Keras' ``Loss`` does."""
    dt = values.dtype
    if sample_weight is not None:
        sample_weight = as_float(fn, "sample_weight", sample_weight, dt, values.device)
    if mask is not None:
        mask = mask.to(device=values.device, dtype=torch.bool)
        if reduction in ("mean", "sum_over_batch_size"):
            # kept entries weigh total/kept, so the mean over all entries is the mean over the kept ones
            kept = mask.sum().to(dt)
            weight = divide_no_nan(torch.tensor(mask.numel(), dtype=dt, device=mask.device), kept).to(dt)
            float_mask = torch.where(mask, weight, torch.zeros((), dtype=dt, device=mask.device))
        else:
            float_mask = mask.to(dt)
        if sample_weight is not None:
            float_mask, sample_weight = squeeze_or_expand(float_mask, sample_weight)
            _broadcast(fn, ("sample_weight", "mask"), sample_weight, float_mask)
            sample_weight = sample_weight * float_mask
        else:
            sample_weight = float_mask
    if sample_weight is not None:
        values, sample_weight = squeeze_or_expand(values, sample_weight)
        _broadcast(fn, ("sample_weight", "per-sample loss"), sample_weight, values)
        values = values * sample_weight
    return _reduce(values, sample_weight, reduction)


def combine_masks(fn, in_mask, out_mask):
    if in_mask is None:
        return out_mask
    in_mask = torch.as_tensor(in_mask).bool()
    if out_mask is None:
        return in_mask
    in_mask = in_mask.to(out_mask.device)
    _broadcast(fn, ("y_pred._keras_mask", "ignore_class mask"), in_mask, out_mask)
    return in_mask & out_mask
