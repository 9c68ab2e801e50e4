"""The base of :mod:`losskit.keras`: inputs, Keras' rank fix-ups, masks, ``sample_weight``, reductions, dtypes
and the :class:`Loss` base class. Keras' semantics (``keras.losses.Loss``, Keras 3.15), losskit's code; this
module never imports keras.

* Inputs: a :class:`Loss` casts ``y_true`` and ``y_pred`` to its ``dtype`` (``keras.config.floatx()`` when Keras
  has been imported, else float32); the plain functions keep a floating ``y_pred``'s dtype (array-likes of Python
  floats, integers and booleans become floatx) and cast ``y_true`` to it. Class labels (sparse, CTC, circle,
  generalized cross entropy) stay integers.
* :func:`squeeze_or_expand`: when two ranks differ by exactly one and the longer one ends in a size-1 axis,
  that axis is squeezed (or, when the shorter one is rank 1, the shorter one is expanded).
* :func:`reduce_weighted`: a mask (``ignore_class``, or ``y_pred._keras_mask``) and ``sample_weight`` merge into
  one weight, then ``'sum'`` adds, ``'sum_over_batch_size'``/``'mean'`` divide the sum by the number of weighted
  values, ``'mean_with_sample_weight'`` by the sum of the weights, always with *divide-no-nan* (x / 0 gives 0);
  ``'none'``/``None`` keep the values. A per-sample loss that is a scalar or of shape ``(0,)`` is not reduced.
"""

from __future__ import annotations

import re
import sys

import torch

from .._checks import keras as checks

EPSILON = 1e-7  # keras.config.epsilon()
REDUCTIONS = checks.REDUCTIONS


# -------------------------------------------------------------------------------------------- Keras


def floatx() -> str:
    """``keras.config.floatx()`` when Keras has been imported (never imports it), else ``'float32'``."""
    keras = sys.modules.get("keras")
    config = getattr(keras, "config", None)
    try:
        return str(config.floatx()) if config is not None else "float32"
    except Exception:  # a Keras still being imported  # noqa: BLE001
        return "float32"


def default_float() -> torch.dtype:
    """The torch dtype of :func:`floatx`."""
    return checks.dtype("floatx", None, floatx())


def get_mask(x: object) -> torch.Tensor | None:
    """The ``_keras_mask`` Keras' masking layers (and ``ignore_class``) attach to a tensor, or None."""
    mask = getattr(x, "_keras_mask", None) if isinstance(x, torch.Tensor) else None
    return None if mask is None else torch.as_tensor(mask).bool()


def set_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    setattr(x, "_keras_mask", mask)  # noqa: B010 - what keras.backend.set_keras_mask does on the torch backend
    return x


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# --------------------------------------------------------------------------------------- conversion


def as_float(fn: str, name: str, value: object, dt: torch.dtype | None, device=None) -> torch.Tensor:
    """``value`` as a floating tensor: cast to ``dt`` when given, else kept if floating, else floatx."""
    floating = default_float()
    t = checks.as_tensor(fn, name, value, dt or floating, device)
    if dt is not None:
        return t.to(dt)
    return t if t.is_floating_point() else t.to(floating)


def as_labels(fn: str, value: object, device=None, name: str = "y_true") -> torch.Tensor:
    """Integer class labels (int64); floating labels must hold whole numbers."""
    t = checks.as_tensor(fn, name, value, torch.float32, device)
    checks.whole_labels(fn, t, name)
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


def broadcast_pair(fn: str, y_true: torch.Tensor, y_pred: torch.Tensor):
    """Keras' squeeze/expand, then both broadcast to one shape (the element-wise regression losses)."""
    y_true, y_pred = squeeze_or_expand(y_true, y_pred)
    shape = checks.broadcast(fn, ("y_true", "y_pred"), y_true, y_pred)
    return y_true.expand(shape), y_pred.expand(shape)


def pair(fn: str, y_true: object, y_pred: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain functions' conversion: ``y_pred`` keeps a floating dtype (else floatx), ``y_true`` follows it."""
    y_pred = as_float(fn, "y_pred", y_pred, None)
    return as_float(fn, "y_true", y_true, y_pred.dtype, y_pred.device), y_pred


def labels_and_pred(fn: str, y_true: object, y_pred: object) -> tuple[torch.Tensor, torch.Tensor]:
    y_pred = as_float(fn, "y_pred", y_pred, None)
    return as_labels(fn, y_true, y_pred.device), y_pred


# ---------------------------------------------------------------------------------------- fused rows

_CHUNK_ELEMENTS = 1 << 18  # rows per chunk: about 1 MiB of float32 logits, so each chunk stays in cache


class FusedRows(torch.autograd.Function):
    """``row_fn(x_chunk, t_chunk, out) -> loss per row`` over chunks of the rows of ``x`` ``(R, C)`` (computed in
    float32 for float16/bfloat16); ``row_fn`` writes ``∂loss/∂x_chunk`` into ``out`` unless ``out`` is None (no
    gradient wanted). The gradient is thus written during forward, and backward only scales it by
    ``grad_output``. No gradient reaches ``t``."""

    @staticmethod
    def forward(ctx, x, t, row_fn):
        acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        rows = x.shape[0]
        step = max(1, _CHUNK_ELEMENTS // max(1, x.shape[1]))
        loss = torch.empty(rows, dtype=acc, device=x.device)
        grad = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        for r0 in range(0, rows, step):
            out = None if grad is None else grad[r0 : r0 + step]
            if out is not None and out.dtype != acc:
                out = torch.empty(out.shape, dtype=acc, device=out.device)
            loss[r0 : r0 + step] = row_fn(x[r0 : r0 + step].to(acc), t[r0 : r0 + step].to(acc), out)
            if grad is not None and out is not None and out.dtype != grad.dtype:
                grad[r0 : r0 + step] = out
        ctx.save_for_backward(grad)
        return loss.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if grad is None:
            return None, None, None
        return grad * grad_output.unsqueeze(-1).to(grad.dtype), None, None


def fused_rows(row_fn, x: torch.Tensor, t: torch.Tensor, axis: int) -> torch.Tensor:
    """:class:`FusedRows` over the axis ``axis`` of ``x`` and ``t`` (same shape); the result has ``x``'s shape
    without it."""
    last = axis == x.dim() - 1
    x = x if last else x.movedim(axis, -1)
    t = t if last else t.movedim(axis, -1)
    shape, width = x.shape[:-1], x.shape[-1]
    return FusedRows.apply(x.reshape(-1, width), t.reshape(-1, width), row_fn).reshape(shape)


def autograd_rows(loss_fn):
    """A :class:`FusedRows` row function from a plain one, ``loss_fn(x, t) -> loss per row``: each chunk's
    gradient by autograd on that chunk alone, while it is in cache (the same operations as the plain loss, so
    the same numbers), and nothing of the chunk kept for backward but its gradient."""

    def rows(x, t, out):
        if out is None:
            return loss_fn(x, t)
        with torch.enable_grad():
            leaf = x.detach().requires_grad_()
            loss = loss_fn(leaf, t)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
        out.copy_(grad)
        return loss.detach()

    return rows


def rowwise(loss_fn, y_true: torch.Tensor, y_pred: torch.Tensor, axis: int = -1) -> torch.Tensor:
    """``loss_fn(y_pred, y_true)`` (a loss per row along ``axis``), fused by :func:`autograd_rows` where that is
    exact: same shapes and no gradient wanted for ``y_true``; else the plain computation."""
    if y_true.shape != y_pred.shape or y_true.requires_grad or y_pred.dim() == 0 or not y_pred.numel():
        return loss_fn(y_pred.movedim(axis, -1), y_true.movedim(axis, -1)) if y_pred.dim() else loss_fn(y_pred, y_true)
    return fused_rows(autograd_rows(loss_fn), y_pred, y_true, axis % y_pred.dim())


# ------------------------------------------------------------------------------------------- reduce


def divide_no_nan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a / b``, and 0 where ``b == 0``, in Keras' result dtype: Keras 3 promotes (float64, Python float)
    to float32, so a float64 division is done, and returned, in float32."""
    dt = torch.float32 if a.dtype == torch.float64 else a.dtype
    a, b = a.to(dt), b.to(dt)
    zero = b == 0
    return torch.where(zero, torch.zeros_like(a), a / torch.where(zero, torch.ones_like(b), b))


def reduce_values(values: torch.Tensor, sample_weight: torch.Tensor | None, reduction: str | None) -> torch.Tensor:
    if reduction is None or reduction == "none" or values.dim() == 0 or list(values.shape) == [0]:
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
            checks.broadcast(fn, ("sample_weight", "mask"), sample_weight, float_mask)
            sample_weight = sample_weight * float_mask
        else:
            sample_weight = float_mask
    if sample_weight is not None:
        values, sample_weight = squeeze_or_expand(values, sample_weight)
        checks.broadcast(fn, ("sample_weight", "per-sample loss"), sample_weight, values)
        values = values * sample_weight
    return reduce_values(values, sample_weight, reduction)


def combine_masks(fn, in_mask, out_mask):
    if in_mask is None:
        return out_mask
    if out_mask is None:
        return in_mask
    in_mask = in_mask.to(out_mask.device)
    checks.broadcast(fn, ("y_pred._keras_mask", "loss mask"), in_mask, out_mask)
    return in_mask & out_mask


# ---------------------------------------------------------------------------------------- the class


class _KerasBase:
    """Placeholder base of :class:`Loss`. When Keras is imported, :mod:`losskit.keras.saving` makes
    ``keras.losses.Loss`` the base instead, so that Keras treats losskit's losses as its own."""


class Loss(_KerasBase):
    r"""Base class of the Keras losses, to subclass as ``keras.losses.Loss`` is subclassed: override ``call``.

    ``loss(y_true, y_pred, sample_weight=None)`` casts ``y_true`` and ``y_pred`` to ``dtype``, computes
    ``call(y_true, y_pred)`` (the per-sample loss), merges ``y_pred._keras_mask`` and a ``_keras_mask`` set on
    the per-sample loss into ``sample_weight``, and reduces with ``reduction``:

    - ``'sum_over_batch_size'`` (default) and ``'mean'``: ``Σ w·l / n``, ``n`` the number of values
      (the number of kept values under a mask);
    - ``'sum'``: ``Σ w·l``;  ``'mean_with_sample_weight'``: ``Σ w·l / Σ w``;  ``'none'`` or ``None``: ``w·l``.

    Divisions give 0 where the divisor is 0; ``sample_weight`` broadcasts against the per-sample loss after
    Keras' squeeze/expand of ranks that differ by one, and is never modified in place.

    Args:
        name: the loss's name (default: the class name in snake case).
        reduction: one of the six above.
        dtype: compute dtype: None (``keras.config.floatx()`` if Keras is imported, else float32), a name, a
            torch dtype or a Keras ``DTypePolicy`` (its ``compute_dtype``).

    Once Keras is imported, ``isinstance(loss, keras.losses.Loss)`` holds, so ``model.compile(loss=...)`` calls
    the loss with ``sample_weight`` (and ``fit(class_weight=...)``) exactly as it calls Keras' own losses.

    Example::

        >>> import losskit.keras as K
        >>> class Squared(K.Loss):
        ...     def call(self, y_true, y_pred):
        ...         return (y_true - y_pred) ** 2
        >>> Squared()([1.0, 0.0, 1.0, 0.0], [0.1, 0.2, 0.3, 0.4], sample_weight=[0.4, 0.3, 0.2, 0.1])
        tensor(0.1125)
        >>> Squared(reduction=None)([1.0, 0.0], [0.5, 0.5])
        tensor([0.2500, 0.2500])
    """

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        fn = type(self).__name__
        self.name = name or snake_case(fn)
        self.reduction = checks.reduction(fn, reduction)
        self._torch_dtype = checks.dtype(fn, dtype, floatx())

    @property
    def dtype(self) -> str:
        """The compute dtype's name, as Keras reports it (``'float32'`` by default)."""
        return str(self._torch_dtype).removeprefix("torch.")

    def __call__(self, y_true, y_pred, sample_weight=None) -> torch.Tensor:
        fn = type(self).__name__
        in_mask = get_mask(y_pred)
        y_pred = as_float(fn, "y_pred", y_pred, self._torch_dtype)
        y_true = self._convert_true(fn, y_true, y_pred)
        losses = self.call(y_true, y_pred)
        out_mask = get_mask(losses)
        losses = as_float(fn, "loss", losses, self._torch_dtype)
        mask = combine_masks(fn, in_mask, out_mask)
        return reduce_weighted(fn, losses, sample_weight, mask, self.reduction)

    def _convert_true(self, fn: str, y_true, y_pred: torch.Tensor) -> torch.Tensor:
        return as_float(fn, "y_true", y_true, self._torch_dtype, y_pred.device)

    def call(self, y_true, y_pred) -> torch.Tensor:
        """The per-sample loss, unweighted and unreduced: what a subclass defines."""
        checks.not_implemented(type(self).__name__)

    def get_config(self) -> dict:
        """``{'name', 'reduction'}`` plus the subclass's arguments, the keys Keras 3.15's class has."""
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    # Keras' base class (once injected) pickles through a Keras model file; a loss pickles as a plain object
    __reduce__ = object.__reduce__

    def _obj_type(self) -> str:
        return "Loss"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"losskit.keras.{type(self).__name__}({args})"


class FunctionLoss(Loss):
    """A built-in loss: Keras' ``LossFunctionWrapper``. ``call`` squeezes/expands ranks that differ by one,
    then computes the per-sample loss with :meth:`_losses`; ``_config`` lists the attributes ``get_config``
    adds to ``name`` and ``reduction`` (Keras 3.15's keys, and the documented extras)."""

    _config: tuple[str, ...] = ()

    def call(self, y_true, y_pred) -> torch.Tensor:
        fn = type(self).__name__
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y_true, torch.Tensor):
            y_pred = as_float(fn, "y_pred", y_pred, self._torch_dtype)
            y_true = self._convert_true(fn, y_true, y_pred)
        y_true, y_pred = squeeze_or_expand(y_true, y_pred)
        return self._losses(fn, y_true, y_pred)

    def _losses(self, fn: str, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        checks.not_implemented(fn)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({key: getattr(self, key) for key in self._config})
        return config


class LabelLoss(FunctionLoss):
    """A built-in loss whose ``y_true`` holds integer class labels (kept as int64, not cast to ``dtype``)."""

    def _convert_true(self, fn: str, y_true, y_pred: torch.Tensor) -> torch.Tensor:
        return as_labels(fn, y_true, y_pred.device)
