"""The cross-entropy family: fused cross entropy (class indices or probabilities) and NLL.

Cross entropy is one autograd Function that walks the rows of the logits in chunks. Per chunk, in at
least fp32, it computes the max, the log-sum-exp and the row losses and, when the logits require
grad, writes the gradient of the reduced loss into a buffer in the same pass. Backward only scales
that buffer by ``grad_output``. For logits ``x`` (rows ``n``), target ``y``, class weights ``w``
(ones when absent), smoothing ``ε`` over ``C`` classes, ``p = softmax(x)``, ``lp = log_softmax(x)``:

    class index:  l_n = (1-ε)·w_y·(-lp_y) + ε/C·Σ_c w_c·(-lp_c)
                  ∂l_n/∂x = p·((1-ε)·w_y + ε/C·Σ_c w_c) - (1-ε)·w_y·onehot(y) - ε/C·w
    probability:  t' = (1-ε)·t + ε/C,   l_n = -Σ_c w_c·t'_c·lp_c
                  ∂l_n/∂x = p·Σ_c w_c·t'_c - w⊙t'

``'mean'`` divides by ``Σ_n w_{y_n}`` over non-ignored rows (class indices) or by the number of rows
(probabilities); rows whose target is ``ignore_index`` give 0 and a zero gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

# Rows per chunk are chosen so that one chunk of fp32 logits is about this many elements (4 MiB).
CHUNK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class CrossEntropyOptions:
    reduction: str  # 'none' | 'mean' | 'sum'
    ignore_index: int
    label_smoothing: float  # already validated, >= 0


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_rows(input: torch.Tensor) -> torch.Tensor:
    """View (C,), (N, C) or (N, C, d1, ..., dK) logits as (rows, C), the class dimension last."""
    if input.dim() == 1:
        return input.unsqueeze(0)
    if input.dim() == 2:
        return input
    return input.movedim(1, -1).reshape(-1, input.shape[1])


def _rows_per_chunk(num_classes: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(num_classes, 1))


def _row_stats(x: torch.Tensor, out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted logits ``x - max`` (written into ``out`` when given) and ``log Σ exp(x - max)`` per row."""
    m = x.amax(dim=1, keepdim=True)
    # a row that is all -inf would give nan from -inf - -inf; shift it by 0 instead (its loss is inf/nan anyway)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    shifted = torch.sub(x, m, out=out) if out is not None else x - m
    log_s = shifted.exp().sum(dim=1, keepdim=True).log_()
    return shifted, log_s


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, target, weight, opts: CrossEntropyOptions):  # type: ignore[override]
        want_grad = ctx.needs_input_grad[0]
        if target.is_floating_point():
            loss, grad = _probability_target_pass(x, target, weight, opts, want_grad)
        else:
            loss, grad = _class_target_pass(x, target, weight, opts, want_grad)
        ctx.reduction = opts.reduction
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        if ctx.reduction == "none":
            scale = grad_output.reshape(-1, 1)
        else:
            scale = grad_output
        return grad * scale.to(grad.dtype), None, None, None


def _class_target_pass(x, target, weight, opts, want_grad):
    n, c = x.shape
    acc = _acc_dtype(x.dtype)
    eps = opts.label_smoothing
    y = target.long()
    valid = y != opts.ignore_index
    y_safe = torch.where(valid, y, torch.zeros_like(y))
    w = None if weight is None else weight.to(acc)
    w_y = torch.ones(n, dtype=acc, device=x.device) if w is None else w[y_safe]
    w_y = torch.where(valid, w_y, torch.zeros_like(w_y))
    w_sum = float(c) if w is None else w.sum()
    if opts.reduction == "mean":
        denom = w_y.sum()  # 0 when every target is ignored: the loss is then 0/0 = nan, like torch
        scale = 1.0 / denom
    else:
        denom = scale = None

    rows = torch.empty(n, dtype=acc, device=x.device)
    grad = torch.empty_like(x, memory_format=torch.contiguous_format) if want_grad else None
    step = _rows_per_chunk(c)
    for s in range(0, n, step):
        e = min(n, s + step)
        xc = x[s:e]
        direct = want_grad and x.dtype == acc  # write the chunk straight into the gradient buffer
        if xc.dtype != acc:
            xc = xc.to(acc)
        shifted, log_s = _row_stats(xc, grad[s:e] if direct else None)
        yc = y_safe[s:e].unsqueeze(1)
        wyc = w_y[s:e]
        nll = log_s.squeeze(1) - shifted.gather(1, yc).squeeze(1)
        loss = nll if w is None else nll * wyc
        if eps > 0:
            wx = shifted.sum(1) if w is None else shifted @ w
            loss = (1 - eps) * loss + (eps / c) * (w_sum * log_s.squeeze(1) - wx)
        vc = valid[s:e]
        rows[s:e] = torch.where(vc, loss, torch.zeros_like(loss))
        if want_grad:
            p = shifted.sub_(log_s).exp_()  # softmax, in place
            coef = (1 - eps) * wyc + (eps / c) * w_sum
            if scale is not None:
                coef = coef * scale
            p.mul_(coef.unsqueeze(1))
            hit = -(1 - eps) * wyc
            if scale is not None:
                hit = hit * scale
            p.scatter_add_(1, yc, hit.unsqueeze(1).to(p.dtype))
            if eps > 0:
                smooth = torch.full((c,), eps / c, dtype=acc, device=x.device) if w is None else w * (eps / c)
                p.sub_(smooth if scale is None else smooth * scale)
            p.masked_fill_(~vc.unsqueeze(1), 0.0)
            if not direct:
                grad[s:e].copy_(p)

    if opts.reduction == "none":
        out = rows
    elif opts.reduction == "sum":
        out = rows.sum()
    else:
        out = rows.sum() / denom
    return out.to(x.dtype), grad


def _probability_target_pass(x, target, weight, opts, want_grad):
    n, c = x.shape
    acc = _acc_dtype(x.dtype)
    eps = opts.label_smoothing
    w = None if weight is None else weight.to(acc)
    scale = (1.0 / n if n else float("nan")) if opts.reduction == "mean" else None

    rows = torch.empty(n, dtype=acc, device=x.device)
    grad = torch.empty_like(x, memory_format=torch.contiguous_format) if want_grad else None
    step = _rows_per_chunk(c)
    for s in range(0, n, step):
        e = min(n, s + step)
        xc = x[s:e]
        direct = want_grad and x.dtype == acc
        if xc.dtype != acc:
            xc = xc.to(acc)
        shifted, log_s = _row_stats(xc, grad[s:e] if direct else None)
        t = target[s:e].to(acc)
        t = t * (1 - eps) + eps / c if eps > 0 else t
        wt = t if w is None else t * w
        wt_sum = wt.sum(1)
        # -Σ_c wt_c (shifted_c - log_s)
        rows[s:e] = wt_sum * log_s.squeeze(1) - (wt * shifted).sum(1)
        if want_grad:
            p = shifted.sub_(log_s).exp_()
            p.mul_(wt_sum.unsqueeze(1)).sub_(wt)
            if scale is not None:
                p.mul_(scale)
            if not direct:
                grad[s:e].copy_(p)

    if opts.reduction == "none":
        out = rows
    elif opts.reduction == "sum":
        out = rows.sum()
    else:
        out = rows.sum() / n if n else rows.sum() * float("nan")
    return out.to(x.dtype), grad


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    opts: CrossEntropyOptions,
) -> torch.Tensor:
    """Checked arguments in, loss out (shape: the target's for ``'none'``, else a scalar)."""
    probabilities = target.is_floating_point()
    rows_x = as_rows(input)
    if probabilities:
        rows_t = as_rows(target)
        out_shape = target.shape[:1] + target.shape[2:] if input.dim() > 1 else torch.Size([])
    else:
        rows_t = target.reshape(-1)
        out_shape = target.shape
    loss = _CrossEntropy.apply(rows_x, rows_t, weight, opts)
    if opts.reduction == "none":
        loss = loss.reshape(out_shape)
    return loss


def nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: str,
    ignore_index: int,
) -> torch.Tensor:
    """``-w_y · input[y]`` per row, 0 for ignored rows; ``'mean'`` divides by ``Σ w_y`` of the kept rows."""
    x = as_rows(input)
    y = target.reshape(-1).long()
    valid = y != ignore_index
    y_safe = torch.where(valid, y, torch.zeros_like(y))
    picked = x.gather(1, y_safe.unsqueeze(1)).squeeze(1)
    if weight is None:
        w_y = valid.to(x.dtype)
        loss = torch.where(valid, -picked, torch.zeros_like(picked))
    else:
        w_y = torch.where(valid, weight[y_safe], torch.zeros((), dtype=weight.dtype, device=weight.device))
        loss = torch.where(valid, -picked * w_y, torch.zeros_like(picked))
    if reduction == "none":
        return loss.reshape(target.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / w_y.sum()
