"""Keras 3 losses on torch tensors, with Keras' numerics: ``import losskit.keras as losses``.

Classes :class:`CategoricalCrossentropy`, :class:`SparseCategoricalCrossentropy`,
:class:`BinaryCrossentropy`, :class:`MeanAbsoluteError`, :class:`MeanSquaredError`, :class:`Huber` and
the functions :func:`categorical_crossentropy`, :func:`sparse_categorical_crossentropy`,
:func:`binary_crossentropy`, :func:`mean_absolute_error`, :func:`mean_squared_error`, :func:`huber`
take Keras 3's parameters (names, order and defaults) and give Keras 3's values and gradients. This
module never imports keras.

* Inputs: torch tensors, numpy arrays, nested lists or numbers; outputs are torch tensors,
  differentiable with respect to ``y_pred`` (the from-logits categorical losses, which run on losskit's
  fused cross entropy, give no gradient to ``y_true``). A loss object casts ``y_true`` and ``y_pred`` to its
  ``dtype`` (float32 by default); the functions keep a floating ``y_pred``'s dtype (array-likes of Python
  numbers, integers and booleans become float32) and cast ``y_true`` to it. As in Keras 3, the dividing
  reductions of a float64 loss object return float32 (Keras' divide-no-nan computes in float32 there).
* Functions return the per-sample loss (the input's shape without the class axis, or without the last
  axis for the binary and regression losses). Calling an object, ``loss(y_true, y_pred,
  sample_weight=None)``, weights the per-sample loss and reduces it with ``reduction``:

  - ``'sum_over_batch_size'`` (default) and ``'mean'``: ``Σ w·l / n``, ``n`` the number of weighted values;
  - ``'sum'``: ``Σ w·l``;  ``'mean_with_sample_weight'``: ``Σ w·l / Σ w``;
  - ``'none'`` or ``None``: ``w·l``, unreduced.

  Divisions give 0 where the divisor is 0 (Keras' divide-no-nan). A per-sample loss that is a scalar or
  of shape ``(0,)`` is never reduced (as in Keras). ``sample_weight`` broadcasts against the per-sample
  loss after Keras' fix-up of ranks that differ by one (a trailing size-1 axis is squeezed, or a rank-1
  weight is expanded); a weight that does not broadcast raises. ``sample_weight`` is never modified
  (Keras' ``Loss`` multiplies a float32 weight tensor by the ``ignore_class`` mask in place, and raises
  when the weight is smaller than the mask, e.g. ``(N, 1)`` against ``(N, T)``; losskit gives the value
  Keras gives for the weight broadcast to the mask's shape).
* Masks: ``ignore_class`` (sparse) and a ``_keras_mask`` attribute on ``y_pred`` (set by Keras masking
  layers) drop entries; for ``'sum_over_batch_size'``/``'mean'`` the divisor becomes the number of entries
  kept (0 kept gives 0).
* Probabilities are renormalised over the class axis and clipped to ``[1e-7, 1 - 1e-7]``; logits take
  stable paths (the categorical ones ride losskit's fused :func:`losskit.functional.cross_entropy`).

Use in Keras (``KERAS_BACKEND=torch``): ``model.compile(loss=losskit.keras.CategoricalCrossentropy(
from_logits=True))``. Keras wraps any callable and calls it as ``loss(y_true, y_pred)``. With the default
reduction it returns the reduced loss, which Keras keeps as is; to have Keras apply ``fit(...,
sample_weight=...)`` or ``class_weight`` exactly as its own losses do, build the object with
``reduction=None`` (Keras then weights and reduces the per-sample loss, honouring ``ignore_class``).

Errors (:class:`losskit.LossValueError`, :class:`losskit.LossTypeError`, :class:`losskit.LossIndexError`)
name the argument. Where losskit is stricter than Keras: ``label_smoothing`` must lie in [0, 1],
``delta`` must be >= 0, sparse labels must be whole numbers in ``[0, C)`` (Keras' torch backend truncates
float labels and silently drops the label -100).
"""

from __future__ import annotations

import torch

from . import _keras_math as km

__all__ = [
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "Huber",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "SparseCategoricalCrossentropy",
    "binary_crossentropy",
    "categorical_crossentropy",
    "huber",
    "mean_absolute_error",
    "mean_squared_error",
    "sparse_categorical_crossentropy",
]


# -------------------------------------------------------------------------------------- functions


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1) -> torch.Tensor:
    r"""Categorical cross entropy per sample: ``l = -Σ_c t_c · log q_c`` over ``axis``.

    ``q = softmax(y_pred)`` when ``from_logits`` (computed stably, by losskit's fused cross entropy), else
    ``q = clip(y_pred / Σ_c y_pred_c, 1e-7, 1 - 1e-7)``. With smoothing ``ε``, ``t = y_true·(1 - ε) + ε/C``
    where ``C = y_true.shape[-1]`` (Keras counts the classes along the last axis whatever ``axis`` is).

    Args:
        y_true: class probabilities (one-hot or soft), same shape as ``y_pred``.
        y_pred: probabilities or logits, ``(..., C, ...)`` with the classes along ``axis``.
        from_logits: whether ``y_pred`` holds logits. label_smoothing: ``ε`` in [0, 1].
        axis: the class axis (default -1).

    Returns:
        ``y_pred``'s shape without ``axis``.

    Example (seed 001)::

        >>> import losskit.keras as K
        >>> K.categorical_crossentropy([[0, 1, 0], [0, 0, 1]], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
        tensor([0.0513, 2.3026])
    """
    fn = "categorical_crossentropy"
    axis = km.axis_arg(fn, axis)
    eps = km.number_in(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
    y_pred = km.as_float(fn, "y_pred", y_pred, None)
    y_true = km.as_float(fn, "y_true", y_true, y_pred.dtype, y_pred.device)
    return km.categorical_crossentropy(fn, y_true, y_pred, bool(from_logits), eps, axis)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1) -> torch.Tensor:
    r"""Sparse categorical cross entropy per sample: ``l = -log q_{y}`` for the class label ``y``.

    ``q`` as in :func:`categorical_crossentropy` (softmax of logits, or clipped renormalised
    probabilities, over ``axis``). Entries whose label equals ``ignore_class`` give 0; the result then
    carries the mask of kept entries as ``_keras_mask`` (as in Keras), which the loss objects and Keras'
    ``compile`` use to average over the kept entries only.

    Args:
        y_true: integer labels in ``[0, C)``: ``y_pred``'s shape without ``axis``, or with a size-1 ``axis``.
        y_pred: probabilities or logits with the ``C`` classes along ``axis``.
        from_logits: whether ``y_pred`` holds logits. ignore_class: a label to skip, or None.
        axis: the class axis (default -1).

    Returns:
        ``y_pred``'s shape without ``axis``.

    Example::

        >>> import losskit.keras as K
        >>> K.sparse_categorical_crossentropy([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
        tensor([0.0513, 2.3026])
        >>> K.sparse_categorical_crossentropy([1, -1], [[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]],
        ...                                   from_logits=True, ignore_class=-1)
        tensor([0.4644, 0.0000])
    """
    fn = "sparse_categorical_crossentropy"
    axis = km.axis_arg(fn, axis)
    ignore_class = km.ignore_class_arg(fn, ignore_class)
    y_pred = km.as_float(fn, "y_pred", y_pred, None)
    labels = km.as_labels(fn, y_true, y_pred.device)
    loss, valid = km.sparse_categorical_crossentropy(fn, labels, y_pred, bool(from_logits), ignore_class, axis)
    if valid is not None:
        loss._keras_mask = valid
    return loss


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1) -> torch.Tensor:
    r"""Binary cross entropy averaged over ``axis``: ``l = mean_axis(-(t·log p + (1 - t)·log(1 - p)))``.

    ``p = clip(y_pred, 1e-7, 1 - 1e-7)``; with ``from_logits`` the stable form
    ``(1 - t)·x - log σ(x)`` is used. Smoothing ``ε`` pulls the labels towards 1/2:
    ``t = y_true·(1 - ε) + ε/2``.

    Args:
        y_true: labels in [0, 1], same shape as ``y_pred``. y_pred: probabilities or logits.
        from_logits: whether ``y_pred`` holds logits. label_smoothing: ``ε`` in [0, 1].
        axis: the axis averaged over (default -1).

    Returns:
        ``y_pred``'s shape without ``axis``.

    Example::

        >>> import losskit.keras as K
        >>> K.binary_crossentropy([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]])
        tensor([0.9163, 0.7136])
    """
    fn = "binary_crossentropy"
    axis = km.axis_arg(fn, axis)
    eps = km.number_in(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
    y_pred = km.as_float(fn, "y_pred", y_pred, None)
    y_true = km.as_float(fn, "y_true", y_true, y_pred.dtype, y_pred.device)
    return km.binary_crossentropy(fn, y_true, y_pred, bool(from_logits), eps, axis)


def _regression_fn(fn, kind, y_true, y_pred, delta=1.0):
    y_pred = km.as_float(fn, "y_pred", y_pred, None)
    y_true = km.as_float(fn, "y_true", y_true, y_pred.dtype, y_pred.device)
    return km.regression(fn, kind, y_true, y_pred, delta)


def mean_squared_error(y_true, y_pred) -> torch.Tensor:
    r"""Mean squared error over the last axis: ``l = mean_{-1}((y_true - y_pred)²)``.

    ``y_true`` and ``y_pred`` broadcast (after Keras' squeeze/expand of ranks that differ by one).

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.mean_squared_error([[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]])
        tensor([0.5000, 0.5000])
    """
    return _regression_fn("mean_squared_error", "squared", y_true, y_pred)


def mean_absolute_error(y_true, y_pred) -> torch.Tensor:
    r"""Mean absolute error over the last axis: ``l = mean_{-1}(|y_true - y_pred|)``.

    ``y_true`` and ``y_pred`` broadcast (after Keras' squeeze/expand of ranks that differ by one).

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.mean_absolute_error([[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.5]])
        tensor([0.5000, 0.7500])
    """
    return _regression_fn("mean_absolute_error", "absolute", y_true, y_pred)


def huber(y_true, y_pred, delta=1.0) -> torch.Tensor:
    r"""Huber loss over the last axis: ``l = mean_{-1}(h(y_pred - y_true))``.

    ``h(e) = e²/2`` where ``|e| <= δ``, else ``δ·|e| - δ²/2`` (``δ >= 0``). ``y_true`` and ``y_pred``
    broadcast (after Keras' squeeze/expand of ranks that differ by one).

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.huber([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]])
        tensor([0.1800, 0.1300])
    """
    delta = km.number_in("huber", "delta", delta, 0.0, float("inf"))
    return _regression_fn("huber", "huber", y_true, y_pred, delta)


# ---------------------------------------------------------------------------------------- classes


class _Loss:
    """Keras' ``Loss`` protocol: ``loss(y_true, y_pred, sample_weight=None)`` -> reduced torch tensor."""

    _default_name = "loss"

    def __init__(self, reduction="sum_over_batch_size", name=None, dtype=None):
        fn = type(self).__name__
        self.reduction = km.reduction(fn, reduction)
        self.name = name or self._default_name
        self._torch_dtype = km.dtype(fn, dtype)

    @property
    def dtype(self) -> str:
        """The compute dtype's name, as Keras reports it (``'float32'`` by default)."""
        return str(self._torch_dtype).removeprefix("torch.")

    def __call__(self, y_true, y_pred, sample_weight=None) -> torch.Tensor:
        fn = type(self).__name__
        in_mask = getattr(y_pred, "_keras_mask", None) if isinstance(y_pred, torch.Tensor) else None
        y_pred = km.as_float(fn, "y_pred", y_pred, self._torch_dtype)
        y_true = self._true(fn, y_true, y_pred)
        y_true, y_pred = km.squeeze_or_expand(y_true, y_pred)
        losses, out_mask = self._losses(fn, y_true, y_pred)
        mask = km.combine_masks(fn, in_mask, out_mask)
        out = km.reduce_weighted(fn, losses, sample_weight, mask, self.reduction)
        if mask is not None and self.reduction in (None, "none"):
            out._keras_mask = mask  # so that Keras' compile averages over the kept entries only
        return out

    def call(self, y_true, y_pred) -> torch.Tensor:
        """The per-sample loss, unweighted and unreduced (after the same conversions as ``__call__``)."""
        fn = type(self).__name__
        y_pred = km.as_float(fn, "y_pred", y_pred, self._torch_dtype)
        y_true, y_pred = km.squeeze_or_expand(self._true(fn, y_true, y_pred), y_pred)
        return self._losses(fn, y_true, y_pred)[0]

    def _true(self, fn, y_true, y_pred):
        return km.as_float(fn, "y_true", y_true, self._torch_dtype, y_pred.device)

    def _losses(self, fn, y_true, y_pred):  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def get_config(self) -> dict:
        """The constructor's arguments (``type(loss)(**loss.get_config())`` rebuilds it)."""
        return {"name": self.name, "reduction": self.reduction, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"losskit.keras.{type(self).__name__}({args})"


class CategoricalCrossentropy(_Loss):
    r"""Categorical cross entropy, ``-Σ_c t_c·log q_c`` per sample, reduced (see the module docs).

    Per-sample loss as :func:`categorical_crossentropy`: ``q`` = softmax of logits (fused, stable) or the
    clipped renormalised probabilities; smoothing ``t = y_true·(1 - ε) + ε/C``.

    Args:
        from_logits: whether ``y_pred`` holds logits. label_smoothing: ``ε`` in [0, 1].
        axis: the class axis (default -1). reduction: ``'sum_over_batch_size'`` (default), ``'sum'``,
            ``'mean'``, ``'mean_with_sample_weight'``, ``'none'`` or None. name: the loss's name.
        dtype: compute dtype for ``y_true``/``y_pred`` (None: float32).

    Shapes: ``y_true`` and ``y_pred`` the same, e.g. ``(N, C)``; ``sample_weight`` broadcastable to the
    per-sample loss ``(N,)``; the result is a scalar, or the per-sample loss for ``'none'``.

    Example (seed 001)::

        >>> import losskit.keras as K
        >>> cce = K.CategoricalCrossentropy()
        >>> loss = cce([[0, 1, 0], [0, 0, 1]], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
        >>> print(f"{loss.item():.6f}")
        1.176939
        >>> cce([[0, 1, 0], [0, 0, 1]], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]], sample_weight=[0.3, 0.7])
        tensor(0.8136)
        >>> K.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)([[0, 1]], [[0.5, 2.0]])
        tensor(0.2764)
    """

    _default_name = "categorical_crossentropy"

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="categorical_crossentropy",
        dtype=None,
    ):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        fn = type(self).__name__
        self.from_logits = bool(from_logits)
        self.label_smoothing = km.number_in(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
        self.axis = km.axis_arg(fn, axis)

    def _losses(self, fn, y_true, y_pred):
        return km.categorical_crossentropy(fn, y_true, y_pred, self.from_logits, self.label_smoothing, self.axis), None

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
            "axis": self.axis,
        }


class SparseCategoricalCrossentropy(_Loss):
    r"""Sparse categorical cross entropy, ``-log q_y`` per sample for integer labels ``y``, reduced.

    Per-sample loss as :func:`sparse_categorical_crossentropy`. Entries labelled ``ignore_class`` are
    dropped: they give 0, and ``'sum_over_batch_size'``/``'mean'`` divide by the number of kept entries
    (every entry ignored gives 0).

    Args:
        from_logits: whether ``y_pred`` holds logits. ignore_class: a label to skip, or None.
        reduction: as for :class:`CategoricalCrossentropy`. axis: the class axis (default -1).
        name: the loss's name. dtype: compute dtype of ``y_pred`` (None: float32).

    Shapes: ``y_pred`` ``(N, C)`` (or ``(N, d1, ..., C)``), ``y_true`` its shape without the class axis (or
    with a size-1 one); the result is a scalar, or the per-sample loss for ``'none'``.

    Example::

        >>> import losskit.keras as K
        >>> scce = K.SparseCategoricalCrossentropy()
        >>> scce([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
        tensor(1.1769)
        >>> K.SparseCategoricalCrossentropy(ignore_class=2)([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
        tensor(0.0513)
    """

    _default_name = "sparse_categorical_crossentropy"

    def __init__(
        self,
        from_logits=False,
        ignore_class=None,
        reduction="sum_over_batch_size",
        axis=-1,
        name="sparse_categorical_crossentropy",
        dtype=None,
    ):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        fn = type(self).__name__
        self.from_logits = bool(from_logits)
        self.ignore_class = km.ignore_class_arg(fn, ignore_class)
        self.axis = km.axis_arg(fn, axis)

    def _true(self, fn, y_true, y_pred):
        return km.as_labels(fn, y_true, y_pred.device)

    def _losses(self, fn, y_true, y_pred):
        return km.sparse_categorical_crossentropy(fn, y_true, y_pred, self.from_logits, self.ignore_class, self.axis)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "from_logits": self.from_logits,
            "ignore_class": self.ignore_class,
            "axis": self.axis,
        }


class BinaryCrossentropy(_Loss):
    r"""Binary cross entropy averaged over ``axis``, ``mean(-(t·log p + (1 - t)·log(1 - p)))``, reduced.

    Per-sample loss as :func:`binary_crossentropy`: ``p = clip(y_pred, 1e-7, 1 - 1e-7)``, or the stable
    logits form; smoothing ``t = y_true·(1 - ε) + ε/2``.

    Args:
        from_logits: whether ``y_pred`` holds logits. label_smoothing: ``ε`` in [0, 1].
        axis: the axis averaged over (default -1). reduction, name, dtype: as for
            :class:`CategoricalCrossentropy`.

    Shapes: ``y_true`` and ``y_pred`` the same, e.g. ``(N, D)`` (or ranks differing by a trailing size-1
    axis); the result is a scalar, or the per-sample loss ``(N,)`` for ``'none'``.

    Example (seed 001, which prints tf.keras' 0.5108254: tf.keras took ``log(p + 1e-7)``, Keras 3 clips ``p``
    and gives ``-log 0.6`` = 0.5108256 in float32)::

        >>> import losskit.keras as K
        >>> bce = K.BinaryCrossentropy()
        >>> print(f"{bce([[0], [1]], [[0.4], [0.6]]).item():.6f}")
        0.510826
        >>> K.BinaryCrossentropy(from_logits=True)([[0, 1], [0, 0]], [[-18.6, 0.51], [2.94, -12.8]])
        tensor(0.8655)
    """

    _default_name = "binary_crossentropy"

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="binary_crossentropy",
        dtype=None,
    ):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        fn = type(self).__name__
        self.from_logits = bool(from_logits)
        self.label_smoothing = km.number_in(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
        self.axis = km.axis_arg(fn, axis)

    def _losses(self, fn, y_true, y_pred):
        return km.binary_crossentropy(fn, y_true, y_pred, self.from_logits, self.label_smoothing, self.axis), None

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
            "axis": self.axis,
        }


class MeanSquaredError(_Loss):
    r"""Mean squared error, ``mean_{-1}((y_true - y_pred)²)`` per sample, reduced (see the module docs).

    Args:
        reduction, name, dtype: as for :class:`CategoricalCrossentropy`.

    Shapes: ``y_true``, ``y_pred`` broadcastable, e.g. ``(N, D)``; per-sample loss ``(N,)``.

    Example (seed 001)::

        >>> import losskit.keras as K
        >>> K.MeanSquaredError()([[0.0], [1.0]], [[1.0], [1.0]])
        tensor(0.5000)
    """

    _default_name = "mean_squared_error"

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return km.regression(fn, "squared", y_true, y_pred), None


class MeanAbsoluteError(_Loss):
    r"""Mean absolute error, ``mean_{-1}(|y_true - y_pred|)`` per sample, reduced (see the module docs).

    Args:
        reduction, name, dtype: as for :class:`CategoricalCrossentropy`.

    Shapes: ``y_true``, ``y_pred`` broadcastable, e.g. ``(N, D)``; per-sample loss ``(N,)``.

    Example (seed 001)::

        >>> import losskit.keras as K
        >>> K.MeanAbsoluteError()([[0.0], [0.0]], [[1.0], [1.0]])
        tensor(1.)
    """

    _default_name = "mean_absolute_error"

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return km.regression(fn, "absolute", y_true, y_pred), None


class Huber(_Loss):
    r"""Huber loss, ``mean_{-1}(h(y_pred - y_true))`` per sample, reduced (see the module docs).

    ``h(e) = e²/2`` where ``|e| <= δ``, else ``δ·|e| - δ²/2``.

    Args:
        delta: ``δ >= 0`` (default 1.0). reduction, name, dtype: as for :class:`CategoricalCrossentropy`.

    Shapes: ``y_true``, ``y_pred`` broadcastable, e.g. ``(N, D)``; per-sample loss ``(N,)``.

    Example (seed 001)::

        >>> import losskit.keras as K
        >>> K.Huber()([[0], [1]], [[0.6], [0.4]])
        tensor(0.1800)
    """

    _default_name = "huber_loss"

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="huber_loss", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.delta = km.number_in(type(self).__name__, "delta", delta, 0.0, float("inf"))

    def _losses(self, fn, y_true, y_pred):
        return km.regression(fn, "huber", y_true, y_pred, self.delta), None

    def get_config(self) -> dict:
        return {**super().get_config(), "delta": self.delta}
