"""Keras' binary cross entropy and binary focal cross entropy: element-wise, averaged over ``axis``."""

from __future__ import annotations

import torch

from .._checks import keras as checks
from ..losses.binary_cross_entropy import bce_elementwise
from ..losses.binary_cross_entropy_with_logits import bce_with_logits_elementwise
from .base import EPSILON, FunctionLoss, fused_rows, pair, rowwise


def _smooth(y_true: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else y_true


def _logits_rows(x, t, out):
    """``mean((1 - t)·x + softplus(-x))`` per row (``= -t·log σ(x) - (1 - t)·log(1 - σ(x))``, stable); gradient
    ``(σ(x) - t) / D``."""
    loss = torch.nn.functional.softplus(-x).add_(x * (1.0 - t)).mean(dim=-1)
    if out is not None:
        torch.sigmoid(x, out=out).sub_(t).div_(x.shape[-1])
    return loss


def _binary_crossentropy(fn, y_true, y_pred, from_logits, label_smoothing, axis):
    y_true = _smooth(y_true, label_smoothing)
    checks.same_shape(fn, y_true, y_pred)
    ax = checks.canonical_axis(fn, axis, y_pred.dim())
    if from_logits:
        if y_pred.dim() and not y_true.requires_grad:
            return fused_rows(_logits_rows, y_pred, y_true, ax)
        elementwise = bce_with_logits_elementwise(y_pred, y_true, None, None)
    else:
        elementwise = bce_elementwise(y_pred.clamp(EPSILON, 1.0 - EPSILON), y_true, None)
    return elementwise.mean(dim=ax)


def _binary_focal_crossentropy(fn, y_true, y_pred, balance, alpha, gamma, from_logits, label_smoothing, axis):
    y_true = _smooth(y_true, label_smoothing)
    checks.same_shape(fn, y_true, y_pred)
    ax = checks.canonical_axis(fn, axis, y_pred.dim())

    def rows(x, t):
        p = torch.sigmoid(x) if from_logits else x
        bce = bce_elementwise(p.clamp(EPSILON, 1.0 - EPSILON), t, None)
        p_t = t * p + (1.0 - t) * (1.0 - p)
        focal = torch.pow(1.0 - p_t, gamma) * bce
        if balance:
            focal = (t * alpha + (1.0 - t) * (1.0 - alpha)) * focal
        return focal.mean(dim=-1)

    return rowwise(rows, y_true, y_pred, ax)


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
    axis = checks.axis_arg(fn, axis)
    eps = checks.number_in(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
    y_true, y_pred = pair(fn, y_true, y_pred)
    return _binary_crossentropy(fn, y_true, y_pred, bool(from_logits), eps, axis)


def binary_focal_crossentropy(
    y_true,
    y_pred,
    apply_class_balancing=False,
    alpha=0.25,
    gamma=2.0,
    from_logits=False,
    label_smoothing=0.0,
    axis=-1,
) -> torch.Tensor:
    r"""Binary focal cross entropy averaged over ``axis``: ``l = mean_axis(w·(1 - p_t)^γ·bce)``.

    ``p = σ(y_pred)`` with ``from_logits``, else ``y_pred``; ``bce`` is the binary cross entropy of
    ``clip(p, 1e-7, 1 - 1e-7)``; ``p_t = t·p + (1 - t)·(1 - p)``; ``w = t·α + (1 - t)·(1 - α)`` when
    ``apply_class_balancing``, else 1. Smoothing as in :func:`binary_crossentropy`; ``γ = 0`` without balancing
    is the binary cross entropy.

    Args:
        y_true: labels in [0, 1], same shape as ``y_pred``. y_pred: probabilities or logits.
        apply_class_balancing: weigh class 1 by ``α`` and class 0 by ``1 - α``. alpha: ``α`` (default 0.25).
        gamma: the focusing exponent ``γ >= 0`` (default 2). from_logits, label_smoothing, axis: as for
            :func:`binary_crossentropy`.

    Returns:
        ``y_pred``'s shape without ``axis``.

    Example::

        >>> import losskit.keras as K
        >>> K.binary_focal_crossentropy([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]], gamma=2.0)
        tensor([0.3299, 0.2058])
    """
    fn = "binary_focal_crossentropy"
    axis = checks.axis_arg(fn, axis)
    eps = checks.number_in(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
    gamma = checks.number_in(fn, "gamma", gamma, 0.0, float("inf"))
    alpha = checks.number(fn, "alpha", alpha)
    y_true, y_pred = pair(fn, y_true, y_pred)
    balance = bool(apply_class_balancing)
    return _binary_focal_crossentropy(fn, y_true, y_pred, balance, alpha, gamma, bool(from_logits), eps, axis)


class BinaryCrossentropy(FunctionLoss):
    r"""Binary cross entropy averaged over ``axis``, ``mean(-(t·log p + (1 - t)·log(1 - p)))``, reduced.

    Per-sample loss as :func:`binary_crossentropy`: ``p = clip(y_pred, 1e-7, 1 - 1e-7)``, or the stable
    logits form; smoothing ``t = y_true·(1 - ε) + ε/2``.

    Args:
        from_logits: whether ``y_pred`` holds logits. label_smoothing: ``ε`` in [0, 1].
        axis: the axis averaged over (default -1). reduction, name, dtype: as for :class:`Loss`.

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

    _config = ("from_logits", "label_smoothing", "axis")

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="binary_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        fn = type(self).__name__
        self.from_logits = checks.flag(fn, "from_logits", from_logits)
        self.label_smoothing = checks.number_in(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
        self.axis = checks.axis_arg(fn, axis)

    def _losses(self, fn, y_true, y_pred):
        return _binary_crossentropy(fn, y_true, y_pred, self.from_logits, self.label_smoothing, self.axis)


class BinaryFocalCrossentropy(FunctionLoss):
    r"""Binary focal cross entropy, ``mean_axis(w·(1 - p_t)^γ·bce)`` per sample, reduced (see :class:`Loss`).

    Per-sample loss as :func:`binary_focal_crossentropy`.

    Args:
        apply_class_balancing, alpha, gamma, from_logits, label_smoothing, axis: as for
            :func:`binary_focal_crossentropy`. reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true`` and ``y_pred`` the same, e.g. ``(N, D)``; per-sample loss ``(N,)``.

    Example::

        >>> import losskit.keras as K
        >>> K.BinaryFocalCrossentropy(gamma=2.0)([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]])
        tensor(0.2678)
        >>> K.BinaryFocalCrossentropy(apply_class_balancing=True, from_logits=True)([[0, 1]], [[-1.0, 2.0]])
        tensor(0.0087)
    """

    _config = ("from_logits", "label_smoothing", "axis", "apply_class_balancing", "alpha", "gamma")

    def __init__(
        self,
        apply_class_balancing=False,
        alpha=0.25,
        gamma=2.0,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="binary_focal_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        fn = type(self).__name__
        self.apply_class_balancing = checks.flag(fn, "apply_class_balancing", apply_class_balancing)
        self.alpha = checks.number(fn, "alpha", alpha)
        self.gamma = checks.number_in(fn, "gamma", gamma, 0.0, float("inf"))
        self.from_logits = checks.flag(fn, "from_logits", from_logits)
        self.label_smoothing = checks.number_in(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
        self.axis = checks.axis_arg(fn, axis)

    def _losses(self, fn, y_true, y_pred):
        return _binary_focal_crossentropy(
            fn,
            y_true,
            y_pred,
            self.apply_class_balancing,
            self.alpha,
            self.gamma,
            self.from_logits,
            self.label_smoothing,
            self.axis,
        )
