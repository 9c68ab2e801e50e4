"""The step-by-step computations behind ``losskit explain``, in plain float64 torch ops.

Each explainer prints its steps into a :class:`Steps` and returns ``(value, gradient)``: the loss as
the reduction gives it, and the gradient of ``value.sum()`` with respect to the input, both from the
closed-form formulas printed. The command then checks both against ``losskit`` itself (autograd).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._util import num

_MAX_ROWS = 8


@dataclass
class Problem:
    """One ``losskit explain`` invocation: tensors in float64 (class-index targets in int64) and options."""

    name: str
    input: Tensor
    target: Tensor
    weight: Tensor | None = None
    pos_weight: Tensor | None = None
    reduction: str = "mean"
    label_smoothing: float = 0.0
    ignore_index: int = -100
    beta: float = 1.0
    delta: float = 1.0
    from_logits: bool = False
    log_target: bool = False


class Steps:
    """Numbered steps, each a title and indented lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._count = 0

    def step(self, title: str) -> None:
        self._count += 1
        self.lines += ["", f"{self._count}. {title}"]

    def line(self, text: str) -> None:
        self.lines.append(f"     {text}")

    def rows(self, labels: list[str], *tensors: Tensor | Sequence[object]) -> Iterator[tuple]:
        """Yield ``(label, row_0, row_1, ...)`` for the first rows; say how many were left out."""
        width = max(map(len, labels), default=0)
        for i, label in enumerate(labels[:_MAX_ROWS]):
            yield (label.ljust(width), *(t[i] for t in tensors))
        if len(labels) > _MAX_ROWS:
            self.line(f"... and {len(labels) - _MAX_ROWS} more rows")


def vec(t: Tensor) -> str:
    return "[" + ", ".join(num(v) for v in t.reshape(-1).tolist()) + "]"


def _index_labels(shape: tuple[int, ...], prefix: str) -> list[str]:
    if len(shape) == 0:
        return [prefix]
    if len(shape) == 1:
        return [f"{prefix}={i}" for i in range(shape[0])]
    return [f"{prefix}=({', '.join(map(str, i))})" for i in itertools.product(*map(range, shape))]


# ----------------------------------------------------------------------------------- shared pieces


def _class_rows(x: Tensor) -> tuple[Tensor, list[str], tuple[int, ...]]:
    """View ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)`` as rows of C classes, with row labels."""
    if x.dim() == 1:
        return x[None], ["x"], ()
    moved = x.movedim(1, -1)
    lead = tuple(moved.shape[:-1])
    labels = [f"n={i}" for i in range(x.shape[0])] if x.dim() == 2 else _index_labels(lead, "n,d")
    return moved.reshape(-1, x.shape[1]), labels, lead


def _rows_back(rows: Tensor, x: Tensor, lead: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`_class_rows` for a tensor of the rows' shape."""
    if x.dim() == 1:
        return rows[0]
    return rows.reshape(*lead, x.shape[1]).movedim(-1, 1)


def _softmax_steps(s: Steps, rows: Tensor, labels: list[str]) -> tuple[Tensor, Tensor]:
    """Print max-shift, exp, softmax; return (softmax, log-softmax) of each row."""
    c = rows.shape[1]
    s.step(f"logits x ({len(labels)} row{'s' if len(labels) != 1 else ''} of C = {c} class scores)")
    for label, r in s.rows(labels, rows):
        s.line(f"{label}  x = {vec(r)}")
    top = rows.max(1).values
    z = rows - top[:, None]
    s.step("shift each row by its max so exp cannot overflow (softmax is unchanged): z = x - max(x)")
    for label, m, r in s.rows(labels, top, z):
        s.line(f"{label}  max = {num(m)}  z = {vec(r)}")
    e = z.exp()
    total = e.sum(1)
    s.step("exponentiate and add up: e = exp(z), S = Σ e")
    for label, r, t in s.rows(labels, e, total):
        s.line(f"{label}  e = {vec(r)}  S = {num(t)}")
    prob = e / total[:, None]
    logp = z - total.log()[:, None]
    s.step("softmax p = e / S, and its log: log p = z - log S  (log-sum-exp = max + log S)")
    for label, r, lr, m, t in s.rows(labels, prob, logp, top, total):
        s.line(f"{label}  p = {vec(r)}  log p = {vec(lr)}  logsumexp = {num(m + t.log())}")
    return prob, logp


def _reduce(s: Steps, loss: Tensor, reduction: str, denominator: Tensor | None, what: str):
    """Print the reduction; return ``(value, D)`` where the gradient of the value is the per-element one / D."""
    if reduction == "none":
        s.step("reduction 'none': keep every loss")
        s.line(f"value = {vec(loss)}")
        return loss, torch.ones((), dtype=loss.dtype)
    total = loss.sum()
    if reduction == "sum":
        s.step("reduction 'sum': add the losses up")
        s.line(f"Σ l = {num(total)}")
        return total, torch.ones((), dtype=loss.dtype)
    assert denominator is not None
    s.step(f"reduction '{reduction}': divide the sum by {what}")
    s.line(f"Σ l / D = {num(total)} / {num(denominator)} = {num(total / denominator)}")
    return total / denominator, denominator


def _scale(grad: Tensor, denominator: Tensor) -> Tensor:
    """``grad / D``; torch's gradient is 0 (not NaN) when D is 0, e.g. every target ignored."""
    if float(denominator) == 0:
        return torch.zeros_like(grad)
    return grad / denominator


def _formula(formula: str, *, weighted: bool = False, divided: str | None = None, note: str = "") -> str:
    """``w · (formula) / D; note``, with parentheses only where they are needed."""
    compound = _compound(formula)
    if weighted:
        formula = f"w · ({formula})" if compound else f"w · {formula}"
        compound = False
    if divided:
        formula = f"({formula}) / {divided}" if compound else f"{formula} / {divided}"
    return f"{formula}; {note}" if note else formula


def _compound(formula: str) -> bool:
    """Whether ``formula`` has a ``+``, ``-`` or ``,`` outside parentheses (so it needs them to be scaled)."""
    depth = 0
    for i, ch in enumerate(formula):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and formula[i : i + 3] in (" + ", " - ") or (depth == 0 and formula[i : i + 2] == ", "):
            return True
    return False


def _divisor(reduction: str) -> str | None:
    return "D" if reduction in ("mean", "batchmean") else None


def _gradient(s: Steps, formula: str, grad: Tensor, labels: list[str] | None = None) -> None:
    """Print the gradient in the input's layout: one bracketed row per line."""
    s.step(f"gradient of the value w.r.t. the input: ∂value/∂x = {formula}")
    if grad.dim() <= 1:
        s.line(vec(grad))
        return
    rows = grad.reshape(-1, grad.shape[-1])
    if labels is None or len(labels) != rows.shape[0]:
        labels = [f"({', '.join(map(str, i))}, :)" for i in itertools.product(*map(range, grad.shape[:-1]))]
    for label, r in s.rows(labels, rows):
        s.line(f"{label}  {vec(r)}")


def _table(s: Steps, shape: tuple[int, ...], columns: list[tuple[str, Tensor]]) -> None:
    """One line per element (the first few), one column per named tensor."""
    labels = _index_labels(shape, "i")
    flat = [(name, t.expand(shape).reshape(-1)) for name, t in columns]
    widths = [max(len(name), 11) for name, _ in flat]
    pad = max(map(len, labels))
    s.line(" " * pad + "  " + "  ".join(name.rjust(w) for (name, _), w in zip(flat, widths, strict=True)))
    cells = [[("yes" if v else "no") if t.dtype == torch.bool else num(v) for v in t.tolist()] for _, t in flat]
    for label, *row in s.rows(labels, *cells):
        s.line(label + "  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


def _pointwise_pair(p: Problem) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    x, t = p.input.detach(), p.target.to(torch.float64)
    shape = tuple(torch.broadcast_shapes(x.shape, t.shape))
    return x.expand(shape), t.expand(shape), shape


def _finish_pointwise(
    p: Problem,
    s: Steps,
    shape: tuple[int, ...],
    columns: list[tuple[str, Tensor]],
    loss: Tensor,
    grad: Tensor,
    grad_formula: str,
    weight_mean: str = "count",
    denominator: Tensor | None = None,
    what: str | None = None,
):
    """Weighting, the per-element table, the reduction and the gradient of an element-wise loss."""
    weight = p.weight.expand(shape) if p.weight is not None else None
    if weight is not None:
        loss = weight * loss
        grad = weight * grad
        columns = [*columns, ("w", weight), ("w·l", loss)]
    _table(s, shape, columns)
    if weight is not None:
        s.line("weighted: each loss is multiplied by its weight w")
    count = torch.tensor(float(loss.numel()), dtype=torch.float64)
    if denominator is None:
        if weight is not None and weight_mean == "weights":
            denominator, what = weight.sum(), "the sum of the weights D = Σ w"
        else:
            denominator, what = count, f"the number of elements D = {loss.numel()}"
    value, d = _reduce(s, loss, p.reduction, denominator, what or "")
    grad = _scale(grad, d)
    grad = grad.sum_to_size(p.input.shape) if grad.shape != p.input.shape else grad
    note = "summed over the broadcast dimensions" if tuple(p.input.shape) != shape else ""
    formula = _formula(grad_formula, weighted=weight is not None, divided=_divisor(p.reduction), note=note)
    _gradient(s, formula, grad)
    return value, grad


# ----------------------------------------------------------------------------------- cross entropy


def cross_entropy(p: Problem, s: Steps):
    x = p.input.detach()
    rows, labels, lead = _class_rows(x)
    c = rows.shape[1]
    prob, logp = _softmax_steps(s, rows, labels)
    w = p.weight if p.weight is not None else torch.ones(c, dtype=torch.float64)
    eps = max(p.label_smoothing, 0.0)
    if p.target.shape == x.shape:
        return _cross_entropy_probabilities(p, s, x, rows, labels, lead, prob, logp, w, eps)
    y = p.target.reshape(-1).long()
    valid = y != p.ignore_index
    safe = torch.where(valid, y, torch.zeros_like(y))
    picked = -logp.gather(1, safe[:, None])[:, 0]
    s.step("the log-probability of each row's target class y: -log p[y]")
    for label, yy, ok, nl in s.rows(labels, y, valid, picked):
        if ok:
            s.line(f"{label}  y = {int(yy)}  -log p[y] = {num(nl)}")
        else:
            s.line(f"{label}  y = {int(yy)} = ignore_index: ignored (loss 0, weight 0)")
    wy = torch.where(valid, w[safe], torch.zeros((), dtype=torch.float64))
    nll = torch.where(valid, picked, torch.zeros((), dtype=torch.float64))
    if p.weight is None:
        s.step("class weights: none (every w[c] = 1)")
    else:
        s.step(f"class weights w = {vec(w)}: l = w[y] · (-log p[y])")
        for label, ok, a, b in s.rows(labels, valid, wy, wy * nll):
            s.line(f"{label}  w[y] = {num(a)}  l = {num(b)}" if ok else f"{label}  ignored: w = 0, l = 0")
    loss = wy * nll
    if eps > 0:
        smooth = torch.where(valid, -(logp * w).sum(1), torch.zeros((), dtype=torch.float64))
        s.step(f"label smoothing ε = {eps:g}: l = (1 - ε) · w[y] · (-log p[y]) + ε/C · Σ_c w[c] · (-log p[c])")
        loss = (1 - eps) * loss + eps / c * smooth
        for label, a, b, total in s.rows(labels, wy * nll, smooth, loss):
            s.line(f"{label}  (1 - ε)·{num(a)} + ε/C·{num(b)} = {num(total)}")
    else:
        s.step("label smoothing: none (ε = 0)")
    shaped = loss.reshape(p.target.shape)
    what = "the sum of the target weights D = Σ w[y]" if p.weight is not None else "the number of targets"
    if p.weight is None:
        what += " D" if bool(valid.all()) else " that are not ignored D"
    value, d = _reduce(s, shaped, p.reduction, wy.sum(), what)
    onehot = torch.zeros_like(prob).scatter_(1, safe[:, None], 1.0)
    grad = (1 - eps) * wy[:, None] * (prob - onehot)
    if eps > 0:
        grad = grad + valid[:, None].to(torch.float64) * (eps / c) * (w.sum() * prob - w)
    grad = _scale(grad, d)
    formula = "p - onehot(y)"
    if p.weight is not None:
        formula = "w[y] · (p - onehot(y))"
    if eps > 0:
        formula = f"(1 - ε) · {'w[y] · ' if p.weight is not None else ''}(p - onehot(y)) + ε/C · (Σw · p - w)"
    note = "0 for ignored rows" if bool((~valid).any()) else ""
    formula = _formula(formula, divided=_divisor(p.reduction), note=note)
    _gradient(s, formula, _rows_back(grad, x, lead), labels if x.dim() == 2 else None)
    return value, _rows_back(grad, x, lead)


def _cross_entropy_probabilities(p, s, x, rows, labels, lead, prob, logp, w, eps):
    c = rows.shape[1]
    t = _class_rows(p.target.to(torch.float64))[0]
    s.step("the target is a probability per class (same shape as the input)")
    for label, r in s.rows(labels, t):
        s.line(f"{label}  t = {vec(r)}")
    if eps > 0:
        t = (1 - eps) * t + eps / c
        s.step(f"label smoothing ε = {eps:g}: t = (1 - ε) · t + ε/C")
        for label, r in s.rows(labels, t):
            s.line(f"{label}  t = {vec(r)}")
    wt = w * t
    loss = -(wt * logp).sum(1)
    weighted = "w[c] · " if p.weight is not None else ""
    s.step(f"cross entropy of each row: l = -Σ_c {weighted}t[c] · log p[c]")
    for label, r in s.rows(labels, loss):
        s.line(f"{label}  l = {num(r)}")
    out_shape = lead if x.dim() > 1 else ()
    count = torch.tensor(float(rows.shape[0]), dtype=torch.float64)
    value, d = _reduce(s, loss.reshape(out_shape), p.reduction, count, f"the number of rows D = {rows.shape[0]}")
    grad = _scale(prob * wt.sum(1, keepdim=True) - wt, d)
    formula = _formula(f"p · Σ_c {weighted}t[c] - {weighted}t", divided=_divisor(p.reduction))
    _gradient(s, formula, _rows_back(grad, x, lead), labels if x.dim() == 2 else None)
    return value, _rows_back(grad, x, lead)


def nll_loss(p: Problem, s: Steps):
    x = p.input.detach()
    rows, labels, lead = _class_rows(x)
    c = rows.shape[1]
    s.step(f"input: log-probabilities ({len(labels)} row(s) of C = {c}); nll_loss applies no softmax")
    for label, r in s.rows(labels, rows):
        s.line(f"{label}  log p = {vec(r)}  (Σ exp = {num(r.exp().sum())})")
    w = p.weight if p.weight is not None else torch.ones(c, dtype=torch.float64)
    y = p.target.reshape(-1).long()
    valid = y != p.ignore_index
    safe = torch.where(valid, y, torch.zeros_like(y))
    zero = torch.zeros((), dtype=torch.float64)
    wy = torch.where(valid, w[safe], zero)
    picked = -rows.gather(1, safe[:, None])[:, 0]
    loss = torch.where(valid, wy * picked, zero)
    weighted = "w[y] · " if p.weight is not None else ""
    s.step(f"pick the target's entry and negate it: l = -{weighted}log p[y]")
    for label, yy, ok, ww, ll in s.rows(labels, y, valid, wy, loss):
        if not ok:
            s.line(f"{label}  y = {int(yy)} = ignore_index: ignored (loss 0, weight 0)")
        elif p.weight is not None:
            s.line(f"{label}  y = {int(yy)}  w[y] = {num(ww)}  l = {num(ll)}")
        else:
            s.line(f"{label}  y = {int(yy)}  l = {num(ll)}")
    what = "the sum of the target weights D = Σ w[y]" if p.weight is not None else "the number of targets D"
    value, d = _reduce(s, loss.reshape(p.target.shape), p.reduction, wy.sum(), what)
    onehot = torch.zeros_like(rows).scatter_(1, safe[:, None], 1.0)
    grad = _scale(-wy[:, None] * onehot, d)
    formula = _formula(f"-{weighted}onehot(y)", divided=_divisor(p.reduction))
    _gradient(s, formula, _rows_back(grad, x, lead), labels if x.dim() == 2 else None)
    return value, _rows_back(grad, x, lead)


# ------------------------------------------------------------------------------------------ binary


def binary_cross_entropy(p: Problem, s: Steps):
    x, t, shape = _pointwise_pair(p)
    logp = x.log().clamp(min=-100)
    log1mp = (1 - x).log().clamp(min=-100)
    loss = -(t * logp + (1 - t) * log1mp)
    s.step("l = -(y · log p + (1 - y) · log(1 - p)), each log clamped at -100 (so p = 0 or 1 stays finite)")
    grad = (x - t) / (x * (1 - x)).clamp(min=1e-12)
    columns = [("p", x), ("y", t), ("log p", logp), ("log(1-p)", log1mp), ("l", loss)]
    formula = "(p - y) / max(p · (1 - p), 1e-12)"
    return _finish_pointwise(p, s, shape, columns, loss, grad, formula)


def binary_cross_entropy_with_logits(p: Problem, s: Steps):
    x, t, shape = _pointwise_pair(p)
    pw = p.pos_weight.expand(shape) if p.pos_weight is not None else torch.ones(shape, dtype=torch.float64)
    sig = torch.sigmoid(x)
    log_sig = -torch.nn.functional.softplus(-x)
    log_1m_sig = -torch.nn.functional.softplus(x)
    s.step("sigmoid σ(x), and its logs computed stably: log σ(x) = -softplus(-x), log(1 - σ(x)) = -softplus(x)")
    if p.pos_weight is not None:
        s.step("l = -(pos_weight · y · log σ(x) + (1 - y) · log(1 - σ(x)))")
    else:
        s.step("l = -(y · log σ(x) + (1 - y) · log(1 - σ(x)))")
    loss = -(pw * t * log_sig + (1 - t) * log_1m_sig)
    columns = [("x", x), ("y", t), ("σ(x)", sig), ("log σ(x)", log_sig), ("log(1-σ(x))", log_1m_sig)]
    if p.pos_weight is not None:
        columns.append(("pos_weight", pw))
    columns.append(("l", loss))
    grad = sig * (pw * t + 1 - t) - pw * t
    formula = "σ(x) · (pos_weight · y + 1 - y) - pos_weight · y" if p.pos_weight is not None else "σ(x) - y"
    return _finish_pointwise(p, s, shape, columns, loss, grad, formula)


def soft_margin_loss(p: Problem, s: Steps):
    x, t, shape = _pointwise_pair(p)
    margin = t * x
    loss = torch.log1p(torch.exp(-margin))
    s.step("margin y · x, then the logistic loss l = log(1 + exp(-y · x))")
    columns = [("x", x), ("y", t), ("y·x", margin), ("l", loss)]
    grad = -t * torch.sigmoid(-margin)
    return _finish_pointwise(p, s, shape, columns, loss, grad, "-y · σ(-y · x)")


# -------------------------------------------------------------------------------------- regression


def mse_loss(p: Problem, s: Steps):
    x, t, shape = _pointwise_pair(p)
    d = x - t
    s.step("difference d = x - y, squared: l = d²")
    loss = d * d
    columns = [("x", x), ("y", t), ("d", d), ("l = d²", loss)]
    return _finish_pointwise(p, s, shape, columns, loss, 2 * d, "2 · (x - y)", weight_mean="weights")


def l1_loss(p: Problem, s: Steps):
    x, t, shape = _pointwise_pair(p)
    d = x - t
    s.step("difference d = x - y, absolute value: l = |d|")
    loss = d.abs()
    columns = [("x", x), ("y", t), ("d", d), ("l = |d|", loss)]
    return _finish_pointwise(p, s, shape, columns, loss, d.sign(), "sign(x - y)", weight_mean="weights")


def smooth_l1_loss(p: Problem, s: Steps):
    x, t, shape = _pointwise_pair(p)
    d = x - t
    beta = p.beta
    if beta == 0:
        s.step("difference d = x - y; β = 0 makes smooth L1 exactly L1: l = |d|")
        columns = [("x", x), ("y", t), ("d", d), ("l = |d|", d.abs())]
        return _finish_pointwise(p, s, shape, columns, d.abs(), d.sign(), "sign(x - y)")
    small = d.abs() < beta
    loss = torch.where(small, 0.5 * d * d / beta, d.abs() - 0.5 * beta)
    s.step(f"difference d = x - y; β = {beta:g}: l = 0.5 · d² / β if |d| < β, else |d| - 0.5 · β")
    columns = [("x", x), ("y", t), ("d", d), ("|d| < β", small), ("l", loss)]
    grad = torch.where(small, d / beta, d.sign())
    return _finish_pointwise(p, s, shape, columns, loss, grad, "(d / β if |d| < β, else sign(d))")


def huber_loss(p: Problem, s: Steps):
    x, t, shape = _pointwise_pair(p)
    d = x - t
    delta = p.delta
    small = d.abs() < delta
    loss = torch.where(small, 0.5 * d * d, delta * (d.abs() - 0.5 * delta))
    s.step(f"difference d = x - y; δ = {delta:g}: l = 0.5 · d² if |d| < δ, else δ · (|d| - 0.5 · δ)")
    columns = [("x", x), ("y", t), ("d", d), ("|d| < δ", small), ("l", loss)]
    grad = torch.where(small, d, delta * d.sign())
    return _finish_pointwise(p, s, shape, columns, loss, grad, "(d if |d| < δ, else δ · sign(d))")


# -------------------------------------------------------------------------------------- divergence


def kl_div(p: Problem, s: Steps):
    x, t, shape = _pointwise_pair(p)
    if p.log_target:
        s.step("input x = log q and target log t (log_target=True): l = exp(log t) · (log t - x)")
        prob_t = t.exp()
        loss = prob_t * (t - x)
        columns = [("x = log q", x), ("log t", t), ("t", prob_t), ("l", loss)]
        grad, formula = -prob_t, "-t"
    else:
        s.step("input x = log q, target t: l = t · (log t - x), with 0 · log 0 = 0 (a target 0 adds nothing)")
        tlogt = torch.xlogy(t, t)
        loss = tlogt - t * x
        columns = [("x = log q", x), ("t", t), ("t·log t", tlogt), ("l", loss)]
        grad, formula = -t, "-t"
    denominator, what = None, None
    if p.reduction == "batchmean":
        batch = x.shape[0] if x.dim() else 1
        denominator = torch.tensor(float(batch), dtype=torch.float64)
        what = f"the batch size D = {batch} (the KL divergence of the math)"
    return _finish_pointwise(p, s, shape, columns, loss, grad, formula, denominator=denominator, what=what)
