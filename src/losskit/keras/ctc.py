"""Keras' CTC loss (connectionist temporal classification): the negative log-likelihood of a label sequence summed
over its alignments to the time steps, class 0 being the blank."""

from __future__ import annotations

import torch

from .._checks import keras as checks
from .base import LabelLoss, labels_and_pred

_BLANK = 0


class _CTC(torch.autograd.Function):
    """Forward (alpha) recursion in log space over the extended labels ``l'`` (blank, l1, blank, ..., lL, blank),
    the backward (beta) recursion in ``backward``; the gradient with respect to the logits is
    ``softmax_tk - Σ_{s: l'_s = k} α_t(s)·β_t(s) / (P·y_tk)`` (Graves et al., 2006; α, β include the emission at t)."""

    @staticmethod
    def forward(ctx, logits, ext, skip, lengths):
        log_probs = torch.log_softmax(logits, dim=-1)
        batch, steps, _ = log_probs.shape
        states = ext.shape[1]
        emissions = log_probs.gather(2, ext.unsqueeze(1).expand(batch, steps, states))  # (B, T, S)
        no_skip = torch.where(skip, 0.0, float("-inf")).to(log_probs.dtype)  # additive mask on the 2-state jump
        alphas = torch.full((steps, batch, states + 2), float("-inf"), dtype=log_probs.dtype, device=logits.device)
        alphas[0, :, 2:4] = emissions[:, 0, :2]
        for t in range(1, steps):
            prev = alphas[t - 1]
            step = torch.logaddexp(prev[:, 2:], prev[:, 1:-1])
            alphas[t, :, 2:] = torch.logaddexp(step, prev[:, :-2] + no_skip) + emissions[:, t]
        last = alphas[steps - 1, :, 2:]
        end = (2 * lengths).unsqueeze(1)
        end_label = torch.where(lengths > 0, last.gather(1, (end - 1).clamp_min(0)).squeeze(1), float("-inf"))
        log_likelihood = torch.logaddexp(last.gather(1, end).squeeze(1), end_label)
        ctx.save_for_backward(log_probs, emissions, alphas, ext, no_skip, lengths, log_likelihood)
        return -log_likelihood

    @staticmethod
    def backward(ctx, grad_output):
        log_probs, emissions, alphas, ext, no_skip, lengths, log_likelihood = ctx.saved_tensors
        batch, steps, _ = log_probs.shape
        states = ext.shape[1]
        grad = log_probs.exp()
        # the jump s -> s + 2 is allowed where the jump into s + 2 is: shift the mask left by two
        no_skip_next = torch.full_like(no_skip, float("-inf"))
        no_skip_next[:, :-2] = no_skip[:, 2:]
        beta = torch.full((batch, states + 2), float("-inf"), dtype=log_probs.dtype, device=log_probs.device)
        end = (2 * lengths).unsqueeze(1)
        beta[:, :states].scatter_(1, end, emissions[:, steps - 1].gather(1, end))
        label_end = (end - 1).clamp_min(0)
        with_label = (lengths > 0).unsqueeze(1)
        beta[:, :states].scatter_(
            1,
            label_end,
            torch.where(with_label, emissions[:, steps - 1].gather(1, label_end), beta.gather(1, label_end)),
        )
        finite = torch.isfinite(log_likelihood).unsqueeze(1)
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                nxt = beta.clone()
                step = torch.logaddexp(nxt[:, :states], nxt[:, 1 : states + 1])
                beta[:, :states] = torch.logaddexp(step, nxt[:, 2:] + no_skip_next) + emissions[:, t]
            occupancy = alphas[t, :, 2:] + beta[:, :states] - log_likelihood.unsqueeze(1) - emissions[:, t]
            occupancy = torch.where(finite, occupancy.exp(), 0.0)
            grad[:, t].scatter_add_(1, ext, -occupancy)
        grad = torch.where(finite.unsqueeze(2), grad, 0.0)  # an impossible sequence (loss inf) gives no gradient
        return grad * grad_output.view(-1, 1, 1), None, None, None


def _ctc(fn, labels, y_pred):
    checks.rank(fn, "y_true", labels, 2, "(batch_size, max_length)")
    checks.rank(fn, "y_pred", y_pred, 3, "(batch_size, max_length, num_classes)")
    checks.same_batch(fn, ("y_true", "y_pred"), labels, y_pred)
    batch, steps, classes = y_pred.shape
    checks.label_range(fn, labels, classes)
    # Keras: the label length is the number of non-blank labels, and the first that many labels are the sequence
    lengths = (labels != _BLANK).sum(dim=1)
    if labels.numel():
        checks.ctc_lengths(fn, int(lengths.max()), steps)
    states = 2 * labels.shape[1] + 1
    ext = torch.full((batch, states), _BLANK, dtype=torch.long, device=labels.device)
    ext[:, 1::2] = labels
    # a path may jump over the blank between two labels that differ
    skip = torch.zeros((batch, states), dtype=torch.bool, device=labels.device)
    skip[:, 2:] = ext[:, 2:] != ext[:, :-2]
    # Keras 3.15 computes CTC in float32, for float16, bfloat16 and float64 logits alike
    return _CTC.apply(y_pred.to(torch.float32), ext, skip, lengths)


def ctc_reference(labels: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """The same loss by the forward recursion alone, through autograd: the plain-PyTorch reference of the tests."""
    lengths = (labels != _BLANK).sum(dim=1)
    batch, steps, _ = y_pred.shape
    states = 2 * labels.shape[1] + 1
    ext = torch.zeros((batch, states), dtype=torch.long)
    ext[:, 1::2] = labels
    skip = torch.zeros((batch, states), dtype=torch.bool)
    skip[:, 2:] = ext[:, 2:] != ext[:, :-2]
    emissions = torch.log_softmax(y_pred.float(), -1).gather(2, ext.unsqueeze(1).expand(batch, steps, states))
    neg = torch.full((batch, 2), float("-inf"))
    alpha = torch.cat([emissions[:, 0, :2], torch.full((batch, states - 2), float("-inf"))], dim=1)
    for t in range(1, steps):
        one = torch.cat([neg[:, :1], alpha[:, :-1]], dim=1)
        two = torch.where(skip, torch.cat([neg, alpha[:, :-2]], dim=1), float("-inf"))
        alpha = torch.logsumexp(torch.stack([alpha, one, two]), dim=0) + emissions[:, t]
    end = (2 * lengths).unsqueeze(1)
    label = torch.where(lengths > 0, alpha.gather(1, (end - 1).clamp_min(0)).squeeze(1), float("-inf"))
    return -torch.logaddexp(alpha.gather(1, end).squeeze(1), label)


def ctc(y_true, y_pred) -> torch.Tensor:
    r"""CTC loss per sequence: ``l = -log Σ_{π ∈ B⁻¹(y)} Π_t softmax(y_pred_t)[π_t]``.

    ``B`` removes repeats, then blanks (class 0), from a path ``π`` of length ``T``. As in Keras, the label length
    is the number of non-zero entries of ``y_true``'s row and the sequence is its first that many entries (so pad
    the labels with zeros at the end). Computed by the forward (alpha) recursion in log space; impossible
    sequences give ``inf`` (and no gradient). A fused autograd Function: the alpha recursion in forward, the beta
    recursion and the gradient in backward, no autograd graph over the time steps.

    Args:
        y_true: integer labels ``(batch_size, max_length)``, 0 the blank/padding.
        y_pred: logits ``(batch_size, T, num_classes)``, not softmax-normalised.

    Returns:
        ``(batch_size,)``, float32 (as Keras, whatever the logits' dtype).

    Example::

        >>> import losskit.keras as K
        >>> import torch
        >>> logits = (torch.arange(24.0).reshape(2, 4, 3) - 12) / 100
        >>> K.ctc([[1, 2, 1, 0], [1, 2, 0, 2]], logits)
        tensor([2.4429, 2.4544])
    """
    labels, y_pred = labels_and_pred("ctc", y_true, y_pred)
    return _ctc("ctc", labels, y_pred)


class CTC(LabelLoss):
    r"""CTC loss per sequence (see :func:`ctc`), reduced (see :class:`Loss`).

    Args:
        reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true`` ``(batch_size, max_length)`` integer labels (0 = blank), ``y_pred`` ``(batch_size, T,
    num_classes)`` logits; per-sample loss ``(batch_size,)``.

    Example::

        >>> import losskit.keras as K
        >>> import torch
        >>> K.CTC()([[1, 2, 1, 0], [1, 2, 0, 2]], (torch.arange(24.0).reshape(2, 4, 3) - 12) / 100)
        tensor(2.4486)
    """

    def __init__(self, reduction="sum_over_batch_size", name="ctc", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return _ctc(fn, y_true, y_pred)
