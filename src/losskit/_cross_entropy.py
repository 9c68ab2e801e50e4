"""The cross-entropy family: the fused cross-entropy engine (class indices or probabilities) and NLL.

Cross entropy is one autograd Function that walks the rows of the logits in chunks sized to stay in
cache. Per chunk, in at least fp32, one fused kernel gives ``lp = log_softmax(x)``; the row losses come
from it and, when the logits require grad, the gradient of the reduced loss is written over the same
chunk of the gradient buffer: ``exp(lp)`` scaled, minus the target terms. Backward only scales that
buffer by ``grad_output``. For rows ``n``, target ``y``, class weights ``w`` (ones when absent),
smoothing ``ε`` over ``C`` classes, ``p = softmax(x)``:

    class index:  l_n = (1-ε)·w_y·(-lp_y) + ε/C·Σ_c w_c·(-lp_c)
                  ∂l_n/∂x = p·((1-ε)·w_y + ε/C·Σ_c w_c) - (1-ε)·w_y·onehot(y) - ε/C·w
    probability:  t' = (1-ε)·t + ε/C,   l_n = -Σ_c w_c·t'_c·lp_c
                  ∂l_n/∂x = p·Σ_c w_c·t'_c - w⊙t'

``'mean'`` divides by ``Σ_n w_{y_n}`` over non-ignored rows (class indices) or by the number of rows
(probabilities); rows whose target is ``ignore_index`` give 0 and a zero gradient. Extras beyond torch:
``z_loss`` adds ``z·lse_n²`` per kept row (gradient ``2·z·lse_n·p``), ``softcap`` replaces the logits by
``s·tanh(x/s)`` (gradient times ``1 - tanh²``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

# Rows per chunk are chosen so that one chunk of fp32 logits is about this many elements (1 MiB):
# half of it per core fits the L2 cache, and the per-chunk Python overhead stays small.
CHUNK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class CrossEntropyOptions:
    reduction: str  # 'none' | 'mean' | 'sum'
    ignore_index: int = -100
    label_smoothing: float = 0.0  # validated, >= 0
    z_loss: float = 0.0
    softcap: float | None = None
    inplace: bool = False


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


class _CrossEntropy(torch.autograd.Function):
    """Loss and gradient in one pass; backward hands the precomputed gradient over, scaled in place.

    The gradient buffer is kept on ``ctx`` (not saved for backward) so that the first backward can give
    it away: nothing else references it, so autograd stores it as ``.grad`` without a copy. A second
    backward through the same graph (``retain_graph=True``, gradcheck) recomputes it from the saved
    inputs. With ``inplace`` the buffer is the logits' own storage, marked dirty so that autograd's
    version counter turns any other use of the overwritten logits into an error.
    """

    @staticmethod
    def forward(ctx, x, target, weight, opts: CrossEntropyOptions):  # type: ignore[override]
        want_grad = ctx.needs_input_grad[0]
        inplace = opts.inplace and want_grad
        loss, grad = _fused_pass(x, target, weight, opts, want_grad, out=x if inplace else None)
        ctx.opts = opts
        ctx.grad = grad
        ctx.set_materialize_grads(False)
        if inplace:
            ctx.mark_dirty(x)
            return loss, x
        if want_grad:
            ctx.save_for_backward(x, target, weight)
        return loss, None

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, grad_logits=None):  # type: ignore[override]
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # a second backward through this graph: recompute
            if ctx.opts.inplace:
                raise RuntimeError(
                    "cross_entropy(inplace=True): the gradient was written over the logits and has been "
                    "consumed by the first backward; a second backward (retain_graph=True) needs inplace=False"
                )
            x, target, weight = ctx.saved_tensors
            _, grad = _fused_pass(x, target, weight, ctx.opts, True)
        if grad_output is None:
            grad.zero_()
        elif ctx.opts.reduction == "none":
            grad.mul_(grad_output.reshape(-1, 1).to(grad.dtype))
        elif grad_output.device.type != "cpu" or float(grad_output) != 1.0:
            grad.mul_(grad_output.to(grad.dtype))
        if grad_logits is not None:
            grad.add_(grad_logits)
        return grad, None, None, None


def _fused_pass(x, target, weight, opts: CrossEntropyOptions, want_grad: bool, out=None):
    """Reduced loss and, if ``want_grad``, the gradient of the reduced loss w.r.t. ``x`` (rows, C).

    The only (rows, C) buffer is the gradient (``out`` when given, e.g. the logits themselves);
    everything else is one chunk of rows at a time. Without grad, nothing of size (rows, C) is made.
    """
    n, c = x.shape
    acc = _acc_dtype(x.dtype)
    eps, z, cap = opts.label_smoothing, opts.z_loss, opts.softcap
    probabilities = target.is_floating_point()
    zero = torch.zeros((), dtype=acc, device=x.device)
    w = None if weight is None else weight.to(acc)
    smooth_vec = None
    if probabilities:
        denom = n
    else:
        y = target.long()
        valid = y != opts.ignore_index
        y_safe = torch.where(valid, y, torch.zeros_like(y))
        w_y = valid.to(acc) if w is None else torch.where(valid, w[y_safe], zero)
        w_sum = float(c) if w is None else w.sum()
        denom = w_y.sum()  # 0 when every target is ignored: the mean is then 0/0 = nan, as in torch
        if eps > 0 and want_grad:
            smooth_vec = torch.full((c,), eps / c, dtype=acc, device=x.device) if w is None else w * (eps / c)
    scale = 1.0 / denom if opts.reduction == "mean" and n else None
    if scale is not None and smooth_vec is not None:
        smooth_vec = smooth_vec * scale

    rows = torch.empty(n, dtype=acc, device=x.device)
    grad = None
    if want_grad:
        grad = out if out is not None else torch.empty(x.shape, dtype=x.dtype, device=x.device)
    direct = want_grad and x.dtype == acc  # work straight in the gradient buffer
    step = _rows_per_chunk(c)
    for s in range(0, n, step):
        e = min(n, s + step)
        xc = x[s:e]
        if cap is not None:
            th = torch.tanh(xc.to(acc) / cap)
            xc = th * cap
        lse = torch.logsumexp(xc.to(acc), 1) if z > 0 else None
        # one fused kernel: max, log-sum-exp and x - lse, in the accumulation dtype
        lp = torch.log_softmax(xc, 1, dtype=acc, out=grad[s:e]) if direct else torch.log_softmax(xc, 1, dtype=acc)
        if probabilities:
            t = target[s:e].to(acc)
            t = t * (1 - eps) + eps / c if eps > 0 else t
            wt = t if w is None else t * w
            row = -(wt * lp).sum(1)
            if z > 0:
                row = row + z * lse * lse
            rows[s:e] = row
        else:
            yc = y_safe[s:e].unsqueeze(1)
            wyc, vc = w_y[s:e], valid[s:e]
            row = lp.gather(1, yc).squeeze(1).neg_() * wyc
            if eps > 0:
                smooth = lp.sum(1) if w is None else lp @ w
                row = (1 - eps) * row - (eps / c) * smooth
            if z > 0:
                row = row + z * lse * lse
            rows[s:e] = torch.where(vc, row, zero)
        if not want_grad:
            continue
        p = lp.exp_()  # softmax; the gradient is softmax · coef - (target terms)
        if probabilities:
            coef = wt.sum(1)
            if z > 0:
                coef = coef + 2 * z * lse
            if scale is not None:
                coef = coef * scale
                wt = wt * scale
            p.mul_(coef.unsqueeze(1)).sub_(wt)
        else:
            coef = (1 - eps) * wyc + (eps / c) * w_sum
            if z > 0:
                coef = coef + 2 * z * lse
            hit = (-(1 - eps)) * wyc
            if scale is not None:
                coef = coef * scale
                hit = hit * scale
            p.mul_(coef.unsqueeze(1))
            p.scatter_add_(1, yc, hit.unsqueeze(1))
            if smooth_vec is not None:
                p.sub_(smooth_vec)
            ignored = (~vc).nonzero().squeeze(1)
            if ignored.numel():
                p.index_fill_(0, ignored, 0.0)
        if cap is not None:
            p.mul_(th.mul_(th).neg_().add_(1))  # d(s·tanh(x/s))/dx = 1 - tanh²
        if not direct:
            grad[s:e].copy_(p)

    if opts.reduction == "none":
        loss = rows
    elif opts.reduction == "sum":
        loss = rows.sum()
    else:
        loss = rows.sum() / denom
    return loss.to(x.dtype), grad


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
    loss, _ = _CrossEntropy.apply(rows_x, rows_t, weight, opts)
    if probabilities and target.dtype != input.dtype:  # torch promotes, e.g. float32 logits, float64 targets
        loss = loss.to(torch.promote_types(input.dtype, target.dtype))
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
