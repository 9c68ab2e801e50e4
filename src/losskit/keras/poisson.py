"""Keras' Poisson loss: the negative log-likelihood of ``y_true`` under a Poisson of rate ``y_pred``, up to terms in
``y_true`` alone."""

from __future__ import annotations

import torch

from .base import EPSILON, FunctionLoss, pair, rowwise


def _poisson_rows(x, t):
    return (x - t * torch.log(x + EPSILON)).mean(dim=-1)


def _poisson(fn, y_true, y_pred):
    return rowwise(_poisson_rows, y_true, y_pred)


def poisson(y_true, y_pred) -> torch.Tensor:
    r"""Poisson loss: ``l = mean_{-1}(y_pred - y_true·log(y_pred + 1e-7))``.

    Args:
        y_true: counts, ``(..., D)``. y_pred: rates (> 0), broadcastable to it.

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.poisson([[0.0, 1.0], [2.0, 0.0]], [[1.0, 1.0], [0.5, 2.0]])
        tensor([1.0000, 1.9431])
    """
    y_true, y_pred = pair("poisson", y_true, y_pred)
    return _poisson("poisson", y_true, y_pred)


class Poisson(FunctionLoss):
    r"""Poisson loss, ``mean_{-1}(y_pred - y_true·log(y_pred + 1e-7))`` per sample, reduced (see :class:`Loss`).

    Args:
        reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true``, ``y_pred`` ``(N, D)``; per-sample loss ``(N,)``.

    Example::

        >>> import losskit.keras as K
        >>> K.Poisson()([[0.0, 1.0], [2.0, 0.0]], [[1.0, 1.0], [0.5, 2.0]])
        tensor(1.4716)
    """

    def __init__(self, reduction="sum_over_batch_size", name="poisson", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return _poisson(fn, y_true, y_pred)
