"""Keras' hinge losses: hinge, squared hinge (labels in {-1, 1}, or {0, 1} converted) and categorical hinge."""

from __future__ import annotations

import torch

from .base import FunctionLoss, pair, rowwise


def _signed_labels(y_true: torch.Tensor) -> torch.Tensor:
    """Keras' conversion: labels that are all 0 or 1 become -1 or 1; any other labels are kept as they are."""
    if y_true.numel() and bool(((y_true == 0) | (y_true == 1)).all()):
        return 2.0 * y_true - 1.0
    return y_true


def _hinge_rows(x, t):
    return (1.0 - t * x).clamp_min(0.0).mean(dim=-1)


def _squared_hinge_rows(x, t):
    m = (1.0 - t * x).clamp_min(0.0)
    return (m * m).mean(dim=-1)


def _categorical_hinge_rows(x, t):
    pos = (t * x).sum(dim=-1)
    neg = ((1.0 - t) * x).amax(dim=-1)
    return (neg - pos + 1.0).clamp_min(0.0)


def _hinge(fn, y_true, y_pred):
    return rowwise(_hinge_rows, _signed_labels(y_true), y_pred)


def _squared_hinge(fn, y_true, y_pred):
    return rowwise(_squared_hinge_rows, _signed_labels(y_true), y_pred)


def _categorical_hinge(fn, y_true, y_pred):
    return rowwise(_categorical_hinge_rows, y_true, y_pred)


def hinge(y_true, y_pred) -> torch.Tensor:
    r"""Hinge loss: ``l = mean_{-1}(max(1 - t·y_pred, 0))``.

    ``t = y_true`` in {-1, 1}; labels that are all 0 or 1 are converted to -1 or 1 first.

    Args:
        y_true, y_pred: ``(..., D)``, broadcastable.

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.hinge([[0, 1], [1, 1]], [[0.6, 0.4], [-0.5, 2.0]])
        tensor([1.1000, 0.7500])
    """
    y_true, y_pred = pair("hinge", y_true, y_pred)
    return _hinge("hinge", y_true, y_pred)


def squared_hinge(y_true, y_pred) -> torch.Tensor:
    r"""Squared hinge loss: ``l = mean_{-1}(max(1 - t·y_pred, 0)²)``, ``t`` as for :func:`hinge`.

    Args:
        y_true, y_pred: ``(..., D)``, broadcastable.

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.squared_hinge([[0, 1], [1, 1]], [[0.6, 0.4], [-0.5, 2.0]])
        tensor([1.4600, 1.1250])
    """
    y_true, y_pred = pair("squared_hinge", y_true, y_pred)
    return _squared_hinge("squared_hinge", y_true, y_pred)


def categorical_hinge(y_true, y_pred) -> torch.Tensor:
    r"""Categorical hinge loss: ``l = max(neg - pos + 1, 0)`` with ``pos = Σ_{-1} t·y_pred`` and
    ``neg = max_{-1}((1 - t)·y_pred)``.

    Args:
        y_true: one-hot labels (``{0, 1}`` or ``{-1, 1}``), ``(..., C)``. y_pred: scores, ``(..., C)``.

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.categorical_hinge([[0, 1, 0], [1, 0, 0]], [[0.1, 0.8, 0.3], [0.2, 0.5, 0.1]])
        tensor([0.5000, 1.3000])
    """
    y_true, y_pred = pair("categorical_hinge", y_true, y_pred)
    return _categorical_hinge("categorical_hinge", y_true, y_pred)


class Hinge(FunctionLoss):
    r"""Hinge loss, ``mean_{-1}(max(1 - t·y_pred, 0))`` per sample, reduced (see :class:`Loss`).

    Args:
        reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true`` (in {-1, 1} or {0, 1}) and ``y_pred`` ``(N, D)``; per-sample loss ``(N,)``.

    Example::

        >>> import losskit.keras as K
        >>> K.Hinge()([[0, 1], [1, 1]], [[0.6, 0.4], [-0.5, 2.0]])
        tensor(0.9250)
    """

    def __init__(self, reduction="sum_over_batch_size", name="hinge", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return _hinge(fn, y_true, y_pred)


class SquaredHinge(FunctionLoss):
    r"""Squared hinge loss, ``mean_{-1}(max(1 - t·y_pred, 0)²)`` per sample, reduced (see :class:`Loss`).

    Args:
        reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true`` (in {-1, 1} or {0, 1}) and ``y_pred`` ``(N, D)``; per-sample loss ``(N,)``.

    Example::

        >>> import losskit.keras as K
        >>> K.SquaredHinge()([[0, 1], [1, 1]], [[0.6, 0.4], [-0.5, 2.0]])
        tensor(1.2925)
    """

    def __init__(self, reduction="sum_over_batch_size", name="squared_hinge", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return _squared_hinge(fn, y_true, y_pred)


class CategoricalHinge(FunctionLoss):
    r"""Categorical hinge loss, ``max(max_{-1}((1 - t)·y_pred) - Σ_{-1} t·y_pred + 1, 0)`` per sample, reduced.

    Args:
        reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true`` one-hot and ``y_pred`` ``(N, C)``; per-sample loss ``(N,)``.

    Example::

        >>> import losskit.keras as K
        >>> K.CategoricalHinge()([[0, 1, 0], [1, 0, 0]], [[0.1, 0.8, 0.3], [0.2, 0.5, 0.1]])
        tensor(0.9000)
    """

    def __init__(self, reduction="sum_over_batch_size", name="categorical_hinge", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return _categorical_hinge(fn, y_true, y_pred)
