"""Keras' cosine similarity loss: minus the cosine of the angle between ``y_true`` and ``y_pred`` along an axis."""

from __future__ import annotations

import torch

from .._checks import keras as checks
from .base import EPSILON, FunctionLoss, broadcast_pair, pair, rowwise


def _normalize(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Keras' L2 normalisation: ``x · min(1 / sqrt(Σ x²), 1 / ε)``, so a zero vector stays zero; computed as
    ``x · rsqrt(max(Σ x², ε²))``, the same value with a finite gradient at zero (Keras' is NaN there)."""
    inv_norm = torch.rsqrt((x * x).sum(dim=axis, keepdim=True).clamp_min(EPSILON * EPSILON))
    return x * inv_norm


def _cosine_similarity(fn, y_true, y_pred, axis):
    y_true, y_pred = broadcast_pair(fn, y_true, y_pred)
    if y_pred.dim() == 0:
        y_true, y_pred = y_true.reshape(1), y_pred.reshape(1)
    ax = checks.canonical_axis(fn, axis, y_pred.dim())
    return rowwise(_cosine_rows, y_true, y_pred, ax)


def _cosine_rows(x, t):
    return -(_normalize(t, -1) * _normalize(x, -1)).sum(dim=-1)


def cosine_similarity(y_true, y_pred, axis=-1) -> torch.Tensor:
    r"""Cosine similarity loss: ``l = -Σ_axis (t / ‖t‖)·(p / ‖p‖)``, in ``[-1, 1]``; -1 when aligned.

    Norms below ``1e-7`` count as ``1e-7``, so a zero vector gives 0.

    Args:
        y_true, y_pred: broadcastable, e.g. ``(N, D)``. axis: the axis of the vectors (default -1).

    Returns:
        the broadcast shape without ``axis``.

    Example::

        >>> import losskit.keras as K
        >>> K.cosine_similarity([[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [1.0, 1.0], [-1.0, -1.0]])
        tensor([-0.0000, -1.0000,  1.0000])
    """
    axis = checks.axis_arg("cosine_similarity", axis)
    y_true, y_pred = pair("cosine_similarity", y_true, y_pred)
    return _cosine_similarity("cosine_similarity", y_true, y_pred, axis)


class CosineSimilarity(FunctionLoss):
    r"""Cosine similarity loss, ``-Σ_axis (t / ‖t‖)·(p / ‖p‖)`` per sample, reduced (see :class:`Loss`).

    Args:
        axis: the axis of the vectors (default -1). reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true``, ``y_pred`` ``(N, D)``; per-sample loss ``(N,)``.

    ``get_config()`` has ``axis`` besides Keras 3.15's keys (Keras' own config drops it).

    Example::

        >>> import losskit.keras as K
        >>> K.CosineSimilarity()([[0.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]])
        tensor(-0.5000)
    """

    _config = ("axis",)

    def __init__(self, axis=-1, reduction="sum_over_batch_size", name="cosine_similarity", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.axis = checks.axis_arg(type(self).__name__, axis)

    def _losses(self, fn, y_true, y_pred):
        return _cosine_similarity(fn, y_true, y_pred, self.axis)
