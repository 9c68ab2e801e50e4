"""The step-by-step computations of ``losskit explain`` for the Keras losses (``losskit.keras``).

Keras' conventions: ``y_true, y_pred`` order, the loss is taken over the last axis (one value per
sample), probabilities are clipped to ``[1e-7, 1 - 1e-7]`` (Keras' epsilon), and the default
reduction ``'sum_over_batch_size'`` is the mean over samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._steps import (
    Problem,
    Steps,
    _divisor,
    _formula,
    _gradient,
    _index_labels,
    _reduce,
    _scale,
    _softmax_steps,
    _table,
    vec,
)
from ._util import num

_KERAS_EPSILON = 1e-7  # keras.config.epsilon()


def _keras_rows(x: Tensor) -> tuple[Tensor, list[str], tuple[int, ...]]:
    """Keras reduces over the last axis: view the input as rows of its last dimension."""
    if x.dim() == 0:
        return x.reshape(1, 1), ["x"], ()
    lead = tuple(x.shape[:-1])
    labels = ["x"] if not lead else _index_labels(lead, "n")
    return x.reshape(-1, x.shape[-1]), labels, lead


def _keras_reduce(s: Steps, per_sample: Tensor, reduction: str, lead: tuple[int, ...]):
    count = torch.tensor(float(per_sample.numel()), dtype=torch.float64)
    what = f"the number of samples D = {per_sample.numel()} (Keras: 'sum_over_batch_size')"
    return _reduce(s, per_sample.reshape(lead), reduction, count, what)


def categorical_crossentropy(p: Problem, s: Steps):
    x = p.input.detach()
    rows, labels, lead = _keras_rows(x)
    t = p.target.to(torch.float64).reshape(rows.shape)
    c = rows.shape[1]
    s.step("y_true (one-hot or probabilities), one row per sample")
    for label, r in s.rows(labels, t):
        s.line(f"{label}  y_true = {vec(r)}")
    if p.label_smoothing:
        eps = p.label_smoothing
        t = t * (1 - eps) + eps / c
        s.step(f"label smoothing ε = {eps:g}: y_true = y_true · (1 - ε) + ε/C")
        for label, r in s.rows(labels, t):
            s.line(f"{label}  y_true = {vec(r)}")
    if p.from_logits:
        prob, logp = _softmax_steps(s, rows, labels)
        grad = prob * t.sum(1, keepdim=True) - t
        formula, note = "softmax(x) · Σ y_true - y_true", ""
    else:
        total = rows.sum(1, keepdim=True)
        q = rows / total
        clipped = q.clamp(_KERAS_EPSILON, 1 - _KERAS_EPSILON)
        logp = clipped.log()
        s.step("y_pred are probabilities: rescale each row to sum 1, q = y_pred / Σ y_pred")
        for label, r, tt in s.rows(labels, q, total):
            s.line(f"{label}  Σ = {num(tt)}  q = {vec(r)}")
        s.step("clip to [ε, 1 - ε] with Keras' epsilon ε = 1e-7, then take the log")
        for label, r in s.rows(labels, logp):
            s.line(f"{label}  log q = {vec(r)}")
        inside = (q >= _KERAS_EPSILON) & (q <= 1 - _KERAS_EPSILON)
        g = torch.where(inside, -t / clipped, torch.zeros((), dtype=torch.float64))
        grad = (g - (g * q).sum(1, keepdim=True)) / total
        formula = "(g - Σ g · q) / Σ y_pred"
        note = "g = -y_true / q, 0 where q was clipped"
    per_sample = -(t * logp).sum(1)
    s.step("cross entropy of each sample: l = -Σ y_true · log q")
    for label, r in s.rows(labels, per_sample):
        s.line(f"{label}  l = {num(r)}")
    value, d = _keras_reduce(s, per_sample, p.reduction, lead)
    grad = _scale(grad, d).reshape(x.shape)
    formula = _formula(formula, divided=_divisor(p.reduction), note=note)
    _gradient(s, formula, grad, labels if x.dim() == 2 else None)
    return value, grad


def binary_crossentropy(p: Problem, s: Steps):
    x = p.input.detach()
    t = p.target.to(torch.float64).expand(x.shape)
    if p.label_smoothing:
        eps = p.label_smoothing
        s.step(f"label smoothing ε = {eps:g}: y_true = y_true · (1 - ε) + 0.5 · ε")
        t = t * (1 - eps) + 0.5 * eps
    if p.from_logits:
        sig = torch.sigmoid(x)
        s.step("y_pred are logits: l = -(y · log σ(x) + (1 - y) · log(1 - σ(x))), computed stably")
        loss = -(t * -torch.nn.functional.softplus(-x) + (1 - t) * -torch.nn.functional.softplus(x))
        columns = [("x", x), ("y_true", t), ("σ(x)", sig), ("l", loss)]
        grad, formula, note = sig - t, "σ(x) - y_true", ""
    else:
        clipped = x.clamp(_KERAS_EPSILON, 1 - _KERAS_EPSILON)
        s.step("clip y_pred to p in [ε, 1 - ε] (Keras' epsilon ε = 1e-7), then l = -(y · log p + (1 - y) · log(1 - p))")
        loss = -(t * clipped.log() + (1 - t) * (1 - clipped).log())
        columns = [("y_pred", x), ("y_true", t), ("clipped p", clipped), ("l", loss)]
        inside = (x >= _KERAS_EPSILON) & (x <= 1 - _KERAS_EPSILON)
        grad = torch.where(inside, (clipped - t) / (clipped * (1 - clipped)), torch.zeros((), dtype=torch.float64))
        formula, note = "(p - y_true) / (p · (1 - p))", "0 where y_pred was clipped"
    _table(s, tuple(x.shape), columns)
    rows, labels, lead = _keras_rows(loss)
    per_sample = rows.mean(1)
    k = rows.shape[1]
    s.step(f"mean over the last axis ({k} value{'s' if k != 1 else ''}): one loss per sample")
    for label, r in s.rows(labels, per_sample):
        s.line(f"{label}  l = {num(r)}")
    value, d = _keras_reduce(s, per_sample, p.reduction, lead)
    grad = _scale(grad / k, d)
    formula = _formula(formula, divided=f"{k}" + (" / D" if p.reduction == "mean" else ""), note=note)
    _gradient(s, formula, grad)
    return value, grad
