"""Keras' categorical cross entropy: one-hot or soft labels. From logits it is fused: one pass over each chunk of rows
computes the loss and its gradient together (the gradient saved for backward), with no ``(N, C)`` log-softmax kept
for autograd. (losskit's engine cross entropy is as lean, but its probability-target path is several times slower
than torch's today; the row pass here is the same design, written for the labels Keras passes.)"""

from __future__ import annotations

import warnings

import torch

from .._checks import keras as checks
from .base import EPSILON, FunctionLoss, fused_rows, pair


def _soft_cross_entropy_rows(x, t, out):
    """``-Σ_c t_c·log softmax(x)_c`` per row; gradient ``softmax(x)·Σ_c t_c - t``."""
    log_q = torch.log_softmax(x, dim=-1)
    loss = -torch.linalg.vecdot(t, log_q)
    if out is not None:
        torch.exp(log_q, out=out).mul_(t.sum(dim=-1, keepdim=True)).sub_(t)
    return loss


def normalised_log(y_pred: torch.Tensor, axis: int) -> torch.Tensor:
    """``log(clip(p / Σ_axis p, ε, 1 - ε))``: Keras' treatment of predicted probabilities."""
    p = y_pred / y_pred.sum(dim=axis, keepdim=True)
    return p.clamp(EPSILON, 1.0 - EPSILON).log()


def class_dim_first(t: torch.Tensor, axis: int) -> torch.Tensor:
    """Move the class axis to dim 1, where losskit's fused cross entropy expects it (rank 1 stays)."""
    return t if t.dim() < 2 or axis == 1 else t.movedim(axis, 1)


def warn_single_class(fn: str, y_pred: torch.Tensor) -> None:
    if y_pred.dim() and y_pred.shape[-1] == 1:
        warnings.warn(
            f"In loss {fn}, expected y_pred.shape to be (batch_size, num_classes) with num_classes > 1. "
            f"Received: y_pred.shape={tuple(y_pred.shape)}. "
            "Consider using 'binary_crossentropy' if you only have 2 classes.",
            SyntaxWarning,
            stacklevel=5,
        )


def smooth_labels(y_true: torch.Tensor, y_pred: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """``t·(1 - ε) + ε/C`` with ``C`` counted along the LAST axis, whatever ``axis`` is (as Keras does)."""
    if not label_smoothing:
        return y_true
    num_classes = torch.tensor(y_true.shape[-1], dtype=y_pred.dtype, device=y_pred.device)
    return y_true * (1.0 - label_smoothing) + label_smoothing / num_classes


def _categorical_crossentropy(fn, y_true, y_pred, from_logits, label_smoothing, axis):
    checks.same_shape(fn, y_true, y_pred)
    checks.min_rank(fn, "y_pred", y_pred, 1)
    ax = checks.canonical_axis(fn, axis, y_pred.dim())
    warn_single_class(fn, y_pred)
    y_true = smooth_labels(y_true, y_pred, label_smoothing)
    if from_logits:
        return fused_rows(_soft_cross_entropy_rows, y_pred, y_true, ax)
    return -(y_true * normalised_log(y_pred, ax)).sum(dim=ax)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1) -> torch.Tensor:
    r"""Categorical cross entropy per sample: ``l = -Σ_c t_c · log q_c`` over ``axis``.

    ``q = softmax(y_pred)`` when ``from_logits`` (computed stably, loss and gradient in one fused pass), else
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
    axis = checks.axis_arg(fn, axis)
    eps = checks.number_in(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
    y_true, y_pred = pair(fn, y_true, y_pred)
    return _categorical_crossentropy(fn, y_true, y_pred, bool(from_logits), eps, axis)


class CategoricalCrossentropy(FunctionLoss):
    r"""Categorical cross entropy, ``-Σ_c t_c·log q_c`` per sample, reduced (see :class:`Loss`).

    Per-sample loss as :func:`categorical_crossentropy`: ``q`` = softmax of logits (fused, stable) or the
    clipped renormalised probabilities; smoothing ``t = y_true·(1 - ε) + ε/C``.

    Args:
        from_logits: whether ``y_pred`` holds logits. label_smoothing: ``ε`` in [0, 1].
        axis: the class axis (default -1). reduction, name, dtype: as for :class:`Loss`.

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

    _config = ("from_logits", "label_smoothing", "axis")

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="categorical_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        fn = type(self).__name__
        self.from_logits = checks.flag(fn, "from_logits", from_logits)
        self.label_smoothing = checks.number_in(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
        self.axis = checks.axis_arg(fn, axis)

    def _losses(self, fn, y_true, y_pred):
        return _categorical_crossentropy(fn, y_true, y_pred, self.from_logits, self.label_smoothing, self.axis)
