"""Keras' Kullback-Leibler divergence between probability distributions along the last axis."""

from __future__ import annotations

import torch

from .base import EPSILON, FunctionLoss, pair, rowwise


def _kl_rows(x, t):
    t = t.clamp(EPSILON, 1.0)
    return (t * torch.log(t / x.clamp(EPSILON, 1.0))).sum(dim=-1)


def _kl_divergence(fn, y_true, y_pred):
    return rowwise(_kl_rows, y_true, y_pred)


def kl_divergence(y_true, y_pred) -> torch.Tensor:
    r"""Kullback-Leibler divergence: ``l = Σ_{-1} t·log(t / p)``, ``t``, ``p`` clipped to ``[1e-7, 1]``.

    Args:
        y_true: the target distribution, ``(..., C)``. y_pred: the predicted one, broadcastable to it.

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.kl_divergence([[0.0, 1.0], [0.5, 0.5]], [[0.4, 0.6], [0.9, 0.1]])
        tensor([0.5108, 0.5108])
    """
    y_true, y_pred = pair("kl_divergence", y_true, y_pred)
    return _kl_divergence("kl_divergence", y_true, y_pred)


class KLDivergence(FunctionLoss):
    r"""Kullback-Leibler divergence, ``Σ_{-1} t·log(t / p)`` per sample (clipped to ``[1e-7, 1]``), reduced.

    Args:
        reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true``, ``y_pred`` ``(N, C)``; per-sample loss ``(N,)``.

    Example::

        >>> import losskit.keras as K
        >>> K.KLDivergence()([[0.0, 1.0], [0.5, 0.5]], [[0.4, 0.6], [0.9, 0.1]])
        tensor(0.5108)
    """

    def __init__(self, reduction="sum_over_batch_size", name="kl_divergence", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return _kl_divergence(fn, y_true, y_pred)
