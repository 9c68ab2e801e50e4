"""Keras' categorical generalized cross entropy (Zhang & Sabuncu, 2018): noise-robust, between cross entropy
(``q → 0``) and mean absolute error (``q = 1``)."""

from __future__ import annotations

import torch

from .._checks import keras as checks
from .base import LabelLoss, labels_and_pred


def _categorical_generalized_cross_entropy(fn, labels, y_pred, q):
    checks.min_rank(fn, "y_pred", y_pred, 1)
    if labels.dim() == y_pred.dim() and labels.shape[-1] == 1:
        labels = labels.squeeze(-1)
    checks.sparse_labels_shape(fn, labels, y_pred, y_pred.dim() - 1)
    checks.label_range(fn, labels, y_pred.shape[-1])
    p = y_pred.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return (1.0 - torch.pow(p, q)) / q


def categorical_generalized_cross_entropy(y_true, y_pred, q) -> torch.Tensor:
    r"""Generalized cross entropy per sample: ``l = (1 - p_y^q) / q``, ``p_y`` the probability of the label ``y``.

    Args:
        y_true: integer labels in ``[0, C)``, ``y_pred``'s shape without its last axis (or with a size-1 one).
        y_pred: class probabilities, ``(..., C)``.
        q: in ``(0, 1)``.

    Returns:
        ``y_pred``'s shape without its last axis.

    Unlike Keras 3.15, whose ``(N, 1)`` labels broadcast against ``(N, C)`` into an ``(N, N)`` result, labels
    with a trailing size-1 axis are squeezed (Keras' documented shapes); labels outside ``[0, C)`` raise.

    Example::

        >>> import losskit.keras as K
        >>> K.categorical_generalized_cross_entropy([0, 1], [[0.7, 0.3], [0.2, 0.8]], q=0.5)
        tensor([0.3267, 0.2111])
    """
    fn = "categorical_generalized_cross_entropy"
    q = checks.generalized_q(fn, q)
    labels, y_pred = labels_and_pred(fn, y_true, y_pred)
    return _categorical_generalized_cross_entropy(fn, labels, y_pred, q)


class CategoricalGeneralizedCrossEntropy(LabelLoss):
    r"""Generalized cross entropy, ``(1 - p_y^q) / q`` per sample for integer labels ``y``, reduced.

    Args:
        q: in ``(0, 1)`` (default 0.5). reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_pred`` ``(N, C)`` probabilities, ``y_true`` ``(N,)`` labels; per-sample loss ``(N,)``.

    Example::

        >>> import losskit.keras as K
        >>> K.CategoricalGeneralizedCrossEntropy()([0, 1], [[0.7, 0.3], [0.2, 0.8]])
        tensor(0.2689)
    """

    _config = ("q",)

    def __init__(
        self, q=0.5, reduction="sum_over_batch_size", name="categorical_generalized_cross_entropy", dtype=None
    ):
        self.q = checks.generalized_q(type(self).__name__, q)
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return _categorical_generalized_cross_entropy(fn, y_true, y_pred, self.q)
