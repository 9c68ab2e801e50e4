"""Keras' sparse categorical cross entropy: integer labels, ``ignore_class``; from logits it runs on losskit's fused
cross entropy."""

from __future__ import annotations

import torch

from .._checks import keras as checks
from ..losses import cross_entropy as _ce
from .base import LabelLoss, labels_and_pred, set_mask
from .categorical_crossentropy import class_dim_first, normalised_log


def _sparse_categorical_crossentropy(fn, labels, y_pred, from_logits, ignore_class, axis):
    """``-log q[label]`` per sample; entries labelled ``ignore_class`` give 0 and carry a ``_keras_mask``."""
    checks.min_rank(fn, "y_pred", y_pred, 1)
    ax = checks.canonical_axis(fn, axis, y_pred.dim())
    if labels.dim() == y_pred.dim() and labels.shape[ax] == 1:
        labels = labels.squeeze(ax)
    checks.sparse_labels_shape(fn, labels, y_pred, ax)
    valid = None
    if ignore_class is not None:
        valid = labels != ignore_class
        labels = torch.where(valid, labels, torch.zeros_like(labels))
    checks.label_range(fn, labels, y_pred.shape[ax], ignore_class)
    if from_logits:
        loss = _ce.cross_entropy(class_dim_first(y_pred, ax), labels, reduction="none")
    else:
        loss = -normalised_log(y_pred, ax).gather(ax, labels.unsqueeze(ax)).squeeze(ax)
    if valid is not None:
        loss = set_mask(torch.where(valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device)), valid)
    return loss


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1) -> torch.Tensor:
    r"""Sparse categorical cross entropy per sample: ``l = -log q_{y}`` for the class label ``y``.

    ``q`` as in :func:`categorical_crossentropy` (softmax of logits, or clipped renormalised
    probabilities, over ``axis``). Entries whose label equals ``ignore_class`` give 0; the result then
    carries the mask of kept entries as ``_keras_mask`` (as in Keras), which the loss objects and Keras'
    ``compile`` use to average over the kept entries only.

    Args:
        y_true: integer labels in ``[0, C)``: ``y_pred``'s shape without ``axis``, or with a size-1 ``axis``.
        y_pred: probabilities or logits with the ``C`` classes along ``axis``.
        from_logits: whether ``y_pred`` holds logits. ignore_class: a label to skip, or None.
        axis: the class axis (default -1).

    Returns:
        ``y_pred``'s shape without ``axis``.

    Example::

        >>> import losskit.keras as K
        >>> K.sparse_categorical_crossentropy([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
        tensor([0.0513, 2.3026])
        >>> K.sparse_categorical_crossentropy([1, -1], [[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]],
        ...                                   from_logits=True, ignore_class=-1)
        tensor([0.4644, 0.0000])
    """
    fn = "sparse_categorical_crossentropy"
    axis = checks.axis_arg(fn, axis)
    ignore_class = checks.ignore_class_arg(fn, ignore_class)
    labels, y_pred = labels_and_pred(fn, y_true, y_pred)
    return _sparse_categorical_crossentropy(fn, labels, y_pred, bool(from_logits), ignore_class, axis)


class SparseCategoricalCrossentropy(LabelLoss):
    r"""Sparse categorical cross entropy, ``-log q_y`` per sample for integer labels ``y``, reduced.

    Per-sample loss as :func:`sparse_categorical_crossentropy`. Entries labelled ``ignore_class`` are
    dropped: they give 0, and ``'sum_over_batch_size'``/``'mean'`` divide by the number of kept entries
    (every entry ignored gives 0).

    Args:
        from_logits: whether ``y_pred`` holds logits. ignore_class: a label to skip, or None.
        reduction: as for :class:`Loss`. axis: the class axis (default -1).
        name: the loss's name. dtype: compute dtype of ``y_pred`` (labels stay integers).

    Shapes: ``y_pred`` ``(N, C)`` (or ``(N, d1, ..., C)``), ``y_true`` its shape without the class axis (or
    with a size-1 one); the result is a scalar, or the per-sample loss for ``'none'``.

    ``get_config()`` has ``axis`` besides Keras 3.15's keys (Keras' own config drops it).

    Example::

        >>> import losskit.keras as K
        >>> scce = K.SparseCategoricalCrossentropy()
        >>> scce([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
        tensor(1.1769)
        >>> K.SparseCategoricalCrossentropy(ignore_class=2)([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
        tensor(0.0513)
    """

    _config = ("from_logits", "ignore_class", "axis")

    def __init__(
        self,
        from_logits=False,
        ignore_class=None,
        reduction="sum_over_batch_size",
        axis=-1,
        name="sparse_categorical_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        fn = type(self).__name__
        self.from_logits = checks.flag(fn, "from_logits", from_logits)
        self.ignore_class = checks.ignore_class_arg(fn, ignore_class)
        self.axis = checks.axis_arg(fn, axis)

    def _losses(self, fn, y_true, y_pred):
        return _sparse_categorical_crossentropy(fn, y_true, y_pred, self.from_logits, self.ignore_class, self.axis)
