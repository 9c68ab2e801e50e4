"""Keras' circle loss (Sun et al., 2020) for metric learning on L2-normalised embeddings."""

from __future__ import annotations

import torch

from .._checks import keras as checks
from .base import LabelLoss, as_float, as_labels, labels_and_pred, set_mask


def _logsumexp_rows(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``log Σ_j exp(x_ij)`` over the kept ``j`` of each row; ``-inf`` for a row with none kept, with a zero
    (not NaN) gradient there."""
    some = keep.any(dim=1)
    # rows with nothing kept take zeros (a finite logsumexp, whose gradient the final where then drops)
    x = torch.where(keep | ~some.unsqueeze(1), torch.where(keep, x, 0.0), float("-inf"))
    return torch.where(some, torch.logsumexp(x, dim=1), float("-inf"))


def _circle(fn, labels, y_pred, ref_labels, ref_embeddings, remove_diagonal, gamma, margin):
    checks.rank(fn, "y_true", labels, 1, "(N,)")
    ref_embeddings = y_pred if ref_embeddings is None else ref_embeddings
    ref_labels = labels if ref_labels is None else ref_labels
    checks.embedding_dims(fn, y_pred, ref_embeddings)
    checks.same_batch(fn, ("y_true", "y_pred"), labels, y_pred)
    checks.rank(fn, "ref_labels", ref_labels, 1, "(M,)")
    checks.same_batch(fn, ("ref_labels", "ref_embeddings"), ref_labels, ref_embeddings)
    distances = (1.0 - y_pred @ ref_embeddings.T).clamp_min(0.0)
    positive = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
    negative = ~positive
    if remove_diagonal:
        positive = positive & ~torch.eye(*positive.shape, dtype=torch.bool, device=positive.device)
    pos_weights = ((margin + distances) * positive).clamp_min(0.0)
    neg_weights = ((1.0 + margin - distances) * negative).clamp_min(0.0)
    pos = -gamma * pos_weights * (margin - distances)
    neg = gamma * neg_weights * ((1.0 - margin) - distances)
    loss = torch.nn.functional.softplus(_logsumexp_rows(pos, positive) + _logsumexp_rows(neg, negative))
    return set_mask(loss, loss > 0)


def circle(
    y_true, y_pred, ref_labels=None, ref_embeddings=None, remove_diagonal=True, gamma=80, margin=0.4
) -> torch.Tensor:
    r"""Circle loss per query: ``l_i = softplus(LSE_{j∈P_i}(-γ·a⁺_ij·(m - d_ij)) + LSE_{j∈N_i}(γ·a⁻_ij·(1-m - d_ij)))``.

    ``d_ij = max(1 - y_pred_i · ref_j, 0)`` (cosine distance of L2-normalised embeddings), ``a⁺ = max(m + d, 0)``,
    ``a⁻ = max(1 + m - d, 0)``; ``P_i`` are the references with the query's label (without itself when
    ``remove_diagonal``), ``N_i`` the others; a query with no positive or no negative gives 0. The result carries
    the mask ``l > 0`` as ``_keras_mask``, so the mean reductions average over the queries with a loss.

    Args:
        y_true: integer labels ``(N,)``. y_pred: L2-normalised embeddings ``(N, D)``.
        ref_labels, ref_embeddings: the references ``(M,)``, ``(M, D)`` (default: the queries themselves).
        remove_diagonal: drop ``j = i`` from the positives (default True). gamma: the scale (default 80).
        margin: the relaxation ``m`` (default 0.4).

    Returns:
        ``(N,)`` (float32 for float64 embeddings, as in Keras).

    Example::

        >>> import losskit.keras as K
        >>> K.circle([0, 0, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], gamma=10.0)
        tensor([0.0590, 1.1711, 0.0000])
    """
    fn = "circle"
    gamma = checks.number(fn, "gamma", gamma)
    margin = checks.number(fn, "margin", margin)
    labels, y_pred = labels_and_pred(fn, y_true, y_pred)
    if y_pred.dtype == torch.float64:
        y_pred = y_pred.float()  # as Keras 3.15 (its matmul and maximum return float32 for float64 here)
    if ref_embeddings is not None:
        ref_embeddings = as_float(fn, "ref_embeddings", ref_embeddings, y_pred.dtype, y_pred.device)
    if ref_labels is not None:
        ref_labels = as_labels(fn, ref_labels, y_pred.device, "ref_labels")
    return _circle(fn, labels, y_pred, ref_labels, ref_embeddings, bool(remove_diagonal), gamma, margin)


class Circle(LabelLoss):
    r"""Circle loss per query (see :func:`circle`), reduced over the queries with a loss (see :class:`Loss`).

    Args:
        gamma: the scale (default 80). margin: the relaxation (default 0.4). remove_diagonal: drop each
            query from its own positives (default True). reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true`` ``(N,)`` integer labels, ``y_pred`` ``(N, D)`` L2-normalised embeddings; per-sample loss
    ``(N,)``.

    Example::

        >>> import losskit.keras as K
        >>> K.Circle(gamma=10.0)([0, 0, 1], [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
        tensor(0.6151)
    """

    _config = ("gamma", "margin", "remove_diagonal")

    def __init__(
        self, gamma=80.0, margin=0.4, remove_diagonal=True, reduction="sum_over_batch_size", name="circle", dtype=None
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        fn = type(self).__name__
        self.gamma = checks.number(fn, "gamma", gamma)
        self.margin = checks.number(fn, "margin", margin)
        self.remove_diagonal = checks.flag(fn, "remove_diagonal", remove_diagonal)

    def _losses(self, fn, y_true, y_pred):
        return _circle(fn, y_true, y_pred, None, None, self.remove_diagonal, self.gamma, self.margin)
