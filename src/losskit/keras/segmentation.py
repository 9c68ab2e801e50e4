"""Keras' segmentation losses: Dice and Tversky (the Dice loss with separate weights for the two kinds of error)."""

from __future__ import annotations

import torch

from .._checks import keras as checks
from .base import EPSILON, FunctionLoss, fused_rows, pair


def _sum(x: torch.Tensor, dims: list[int] | None) -> torch.Tensor:
    return x.sum() if dims is None else x.sum(dim=dims)


def _dice_rows(x, t, out):
    """``1 - 2I/D`` per row, ``I = Σ t·x``, ``D = Σ t + Σ x + ε``; gradient ``(2I - 2t·D) / D²``."""
    intersection = (t * x).sum(dim=-1, keepdim=True)
    denominator = t.sum(dim=-1, keepdim=True) + x.sum(dim=-1, keepdim=True) + EPSILON
    loss = (1.0 - 2.0 * intersection / denominator).squeeze(-1)
    if out is not None:
        torch.mul(t, -2.0 * denominator, out=out).add_(2.0 * intersection).div_(denominator * denominator)
    return loss


def _tversky_rows(alpha: float, beta: float):
    """``1 - I / D`` per row with ``D = I + α·(Σ t - I) + β·(Σ x - I) + ε``; gradient
    ``(I·((1 - α - β)·t + β) - t·D) / D²``."""

    def rows(x, t, out):
        intersection = (t * x).sum(dim=-1, keepdim=True)
        denominator = (
            (1.0 - alpha - beta) * intersection
            + alpha * t.sum(dim=-1, keepdim=True)
            + beta * x.sum(dim=-1, keepdim=True)
            + EPSILON
        )
        if out is not None:
            torch.mul(t, intersection * (1.0 - alpha - beta) - denominator, out=out)
            out.add_(intersection * beta).div_(denominator * denominator)
        return (1.0 - intersection / denominator).squeeze(-1)

    return rows


def _single_axis(dims, y_true, y_pred) -> bool:
    """Whether the sum is over one axis and the inputs suit the fused rows (same shapes, no y_true gradient)."""
    return dims is not None and len(dims) == 1 and y_true.shape == y_pred.shape and not y_true.requires_grad


def _dice(fn, y_true, y_pred, axis):
    dims = checks.canonical_axes(fn, axis, y_pred.dim())
    if dims is not None and _single_axis(dims, y_true, y_pred):
        return fused_rows(_dice_rows, y_pred, y_true, dims[0])
    intersection = _sum(y_true * y_pred, dims)
    return 1.0 - 2.0 * intersection / (_sum(y_true, dims) + _sum(y_pred, dims) + EPSILON)


def _tversky(fn, y_true, y_pred, alpha, beta, axis):
    dims = checks.canonical_axes(fn, axis, y_pred.dim())
    if dims is not None and _single_axis(dims, y_true, y_pred):
        return fused_rows(_tversky_rows(alpha, beta), y_pred, y_true, dims[0])
    intersection = _sum(y_true * y_pred, dims)
    fp = _sum((1.0 - y_pred) * y_true, dims)
    fn_ = _sum(y_pred * (1.0 - y_true), dims)
    return 1.0 - intersection / (intersection + fp * alpha + fn_ * beta + EPSILON)


def dice(y_true, y_pred, axis=None) -> torch.Tensor:
    r"""Dice loss: ``l = 1 - 2·Σ t·p / (Σ t + Σ p + 1e-7)``, the sums over ``axis``.

    Args:
        y_true: masks (or soft masks), broadcastable with ``y_pred``. y_pred: predicted masks.
        axis: None (every axis: one number), an int or a tuple of ints (e.g. ``(1, 2, 3)`` for one loss per
            image of an ``(N, H, W, C)`` batch).

    Returns:
        the broadcast shape without the axes summed over (a scalar for ``axis=None``).

    Example::

        >>> import losskit.keras as K
        >>> y_true = [[[[1.0], [1.0]], [[0.0], [0.0]]], [[[1.0], [1.0]], [[0.0], [0.0]]]]
        >>> y_pred = [[[[0.0], [1.0]], [[0.0], [1.0]]], [[[0.4], [0.0]], [[0.0], [0.9]]]]
        >>> K.dice(y_true, y_pred, axis=(1, 2, 3))
        tensor([0.5000, 0.7576])
        >>> K.dice(y_true, y_pred)
        tensor(0.6164)
    """
    axis = checks.axes_arg("dice", axis)
    y_true, y_pred = pair("dice", y_true, y_pred)
    return _dice("dice", y_true, y_pred, axis)


def tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None) -> torch.Tensor:
    r"""Tversky loss: ``l = 1 - I / (I + α·Σ (1 - p)·t + β·Σ p·(1 - t) + 1e-7)``, ``I = Σ t·p``, sums over ``axis``.

    ``α = β = 0.5`` is the Dice loss (up to the ``1e-7``). As in Keras, ``α`` weighs ``Σ (1 - p)·t`` and ``β``
    weighs ``Σ p·(1 - t)``.

    Args:
        y_true, y_pred: as for :func:`dice`. alpha, beta: the two weights (default 0.5). axis: as for :func:`dice`.

    Returns:
        the broadcast shape without the axes summed over (a scalar for ``axis=None``).

    Example::

        >>> import losskit.keras as K
        >>> K.tversky([[1.0, 1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0, 1.0]], alpha=0.2, beta=0.8)
        tensor(0.5000)
    """
    axis = checks.axes_arg("tversky", axis)
    alpha = checks.number("tversky", "alpha", alpha)
    beta = checks.number("tversky", "beta", beta)
    y_true, y_pred = pair("tversky", y_true, y_pred)
    return _tversky("tversky", y_true, y_pred, alpha, beta, axis)


class Dice(FunctionLoss):
    r"""Dice loss, ``1 - 2·Σ t·p / (Σ t + Σ p + 1e-7)`` over ``axis``, reduced (see :class:`Loss`).

    Args:
        reduction, name: as for :class:`Loss`. axis: as for :func:`dice` (default None). dtype: as for
            :class:`Loss`.

    Shapes: ``y_true``, ``y_pred`` e.g. ``(N, H, W, C)``; per-sample loss ``(N,)`` for ``axis=(1, 2, 3)``, a
    scalar for ``axis=None``.

    Example::

        >>> import losskit.keras as K
        >>> K.Dice()([[1.0, 1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0, 1.0]])
        tensor(0.5000)
    """

    _config = ("axis",)

    def __init__(self, reduction="sum_over_batch_size", name="dice", axis=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.axis = checks.axes_arg(type(self).__name__, axis)

    def _losses(self, fn, y_true, y_pred):
        return _dice(fn, y_true, y_pred, self.axis)


class Tversky(FunctionLoss):
    r"""Tversky loss, ``1 - I / (I + α·Σ (1 - p)·t + β·Σ p·(1 - t) + 1e-7)`` over ``axis``, reduced.

    Args:
        alpha, beta: the two weights (default 0.5). reduction, name: as for :class:`Loss`. axis: as for
            :func:`dice` (default None). dtype: as for :class:`Loss`.

    Shapes: as for :class:`Dice`.

    Example::

        >>> import losskit.keras as K
        >>> K.Tversky(alpha=0.2, beta=0.8)([[1.0, 1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0, 1.0]])
        tensor(0.5000)
    """

    _config = ("alpha", "beta", "axis")

    def __init__(self, alpha=0.5, beta=0.5, reduction="sum_over_batch_size", name="tversky", axis=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        fn = type(self).__name__
        self.alpha = checks.number(fn, "alpha", alpha)
        self.beta = checks.number(fn, "beta", beta)
        self.axis = checks.axes_arg(fn, axis)

    def _losses(self, fn, y_true, y_pred):
        return _tversky(fn, y_true, y_pred, self.alpha, self.beta, self.axis)
