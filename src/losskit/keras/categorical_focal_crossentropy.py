"""Keras' categorical focal cross entropy. From logits it is one fused pass per chunk of rows: the loss and its
gradient are computed together (as losskit's cross entropy does), so backward only scales the saved gradient and no
softmax, clip, log or power of the whole ``(N, C)`` input is kept for autograd."""

from __future__ import annotations

import torch

from .._checks import keras as checks
from .base import EPSILON, FunctionLoss, as_float, fused_rows, pair
from .categorical_crossentropy import smooth_labels, warn_single_class


def _focal_terms(s: torch.Tensor, t: torch.Tensor, alpha, gamma: float, grad: bool):
    """Per-row loss ``Σ_c α·t_c·(1 - q_c)^γ·(-log q_c)`` with ``q = clip(s, ε, 1 - ε)``, and (when ``grad``)
    ``∂loss/∂s`` (zero where the clip is active, as autograd through ``clip`` gives)."""
    q = s.clamp(EPSILON, 1.0 - EPSILON)
    log_q = q.log()
    one_minus = 1.0 - q
    modulating = one_minus.pow(gamma)
    weight = t * alpha
    loss = -(weight * modulating * log_q).sum(dim=-1)
    if not grad:
        return loss, None
    d_q = weight * (gamma * one_minus.pow(gamma - 1.0) * log_q - modulating / q)
    d_q = torch.where((s >= EPSILON) & (s <= 1.0 - EPSILON), d_q, torch.zeros((), dtype=d_q.dtype, device=d_q.device))
    return loss, d_q


def _focal_rows(alpha, gamma: float):
    """The fused rows of :class:`~losskit.keras.base.FusedRows` for logits: the focal loss of
    ``s = softmax(x)`` and its gradient ``s ⊙ (d - Σ_c d_c s_c)`` (softmax's Jacobian applied to ``d = ∂loss/∂s``)."""

    def rows(x, t, out):
        s = torch.softmax(x, dim=-1)
        a = alpha.to(x.dtype) if isinstance(alpha, torch.Tensor) else alpha
        loss, d_s = _focal_terms(s, t, a, gamma, out is not None)
        if out is not None:
            torch.mul(s, d_s - (d_s * s).sum(dim=-1, keepdim=True), out=out)
        return loss

    return rows


def _alpha(fn, alpha, y_pred):
    if isinstance(alpha, float):
        return alpha
    return as_float(fn, "alpha", alpha, y_pred.dtype, y_pred.device)


def _categorical_focal_crossentropy(fn, y_true, y_pred, alpha, gamma, from_logits, label_smoothing, axis):
    checks.same_shape(fn, y_true, y_pred)
    checks.min_rank(fn, "y_pred", y_pred, 1)
    ax = checks.canonical_axis(fn, axis, y_pred.dim())
    warn_single_class(fn, y_pred)
    y_true = smooth_labels(y_true, y_pred, label_smoothing)
    alpha = _alpha(fn, alpha, y_pred)
    if isinstance(alpha, torch.Tensor):
        checks.broadcast(fn, ("alpha", "y_pred"), alpha, y_pred)
    if from_logits and (ax == y_pred.dim() - 1 or not isinstance(alpha, torch.Tensor)):
        # per-class alpha broadcasts against the LAST axis in Keras: fused only where that is the class axis
        return fused_rows(_focal_rows(alpha, gamma), y_pred, y_true, ax)
    p = torch.softmax(y_pred, dim=ax) if from_logits else y_pred
    q = (p / p.sum(dim=ax, keepdim=True)).clamp(EPSILON, 1.0 - EPSILON)
    focal = torch.pow(1.0 - q, gamma) * alpha * (-y_true * q.log())
    return focal.sum(dim=ax)


def categorical_focal_crossentropy(
    y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1
) -> torch.Tensor:
    r"""Categorical focal cross entropy per sample: ``l = -Σ_c α·(1 - q_c)^γ·t_c·log q_c`` over ``axis``.

    ``q = clip(p / Σ_c p_c, 1e-7, 1 - 1e-7)`` with ``p = softmax(y_pred)`` when ``from_logits`` (fused: loss and
    gradient in one pass), else ``p = y_pred``. Smoothing as in :func:`categorical_crossentropy`. ``γ = 0`` and
    ``α = 1`` give the categorical cross entropy of probabilities.

    Args:
        y_true: class probabilities (one-hot or soft), same shape as ``y_pred``.
        y_pred: probabilities or logits with the classes along ``axis``.
        alpha: ``α``, a number or per-class weights broadcasting against the last axis (default 0.25).
        gamma: the focusing exponent ``γ >= 0`` (default 2). from_logits, label_smoothing, axis: as for
            :func:`categorical_crossentropy`.

    Returns:
        ``y_pred``'s shape without ``axis``.

    Example::

        >>> import losskit.keras as K
        >>> K.categorical_focal_crossentropy([[0, 1, 0], [0, 0, 1]], [[0.05, 0.9, 0.05], [0.1, 0.85, 0.05]])
        tensor([2.6340e-04, 6.7591e-01])
    """
    fn = "categorical_focal_crossentropy"
    axis = checks.axis_arg(fn, axis)
    eps = checks.number_in(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
    gamma = checks.number_in(fn, "gamma", gamma, 0.0, float("inf"))
    alpha = checks.alpha_weights(fn, alpha)
    y_true, y_pred = pair(fn, y_true, y_pred)
    return _categorical_focal_crossentropy(fn, y_true, y_pred, alpha, gamma, bool(from_logits), eps, axis)


class CategoricalFocalCrossentropy(FunctionLoss):
    r"""Categorical focal cross entropy, ``-Σ_c α·(1 - q_c)^γ·t_c·log q_c`` per sample, reduced.

    Per-sample loss as :func:`categorical_focal_crossentropy` (fused from logits).

    Args:
        alpha, gamma, from_logits, label_smoothing, axis: as for :func:`categorical_focal_crossentropy`.
        reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true`` and ``y_pred`` the same, e.g. ``(N, C)``; per-sample loss ``(N,)``.

    Example::

        >>> import losskit.keras as K
        >>> K.CategoricalFocalCrossentropy()([[0, 1, 0], [0, 0, 1]], [[0.05, 0.9, 0.05], [0.1, 0.85, 0.05]])
        tensor(0.3381)
        >>> K.CategoricalFocalCrossentropy(from_logits=True, gamma=1.0)([[0, 1, 0]], [[0.5, 2.0, -1.0]])
        tensor(0.0129)
    """

    _config = ("from_logits", "label_smoothing", "axis", "alpha", "gamma")

    def __init__(
        self,
        alpha=0.25,
        gamma=2.0,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="categorical_focal_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        fn = type(self).__name__
        self.alpha = checks.alpha_weights(fn, alpha)
        self.gamma = checks.number_in(fn, "gamma", gamma, 0.0, float("inf"))
        self.from_logits = checks.flag(fn, "from_logits", from_logits)
        self.label_smoothing = checks.number_in(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
        self.axis = checks.axis_arg(fn, axis)

    def _losses(self, fn, y_true, y_pred):
        return _categorical_focal_crossentropy(
            fn, y_true, y_pred, self.alpha, self.gamma, self.from_logits, self.label_smoothing, self.axis
        )
