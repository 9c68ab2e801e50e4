"""The vocab-parallel cross-entropy engine: loss and gradient of a class-sharded softmax in one call.

Rank ``r`` of a group of ``R`` ranks holds the logits of the classes ``[r·C_l, (r+1)·C_l)`` of
``C = R·C_l``. For rows ``n`` with global target ``y``, class weights ``w`` (ones when absent),
smoothing ``ε``, z-loss ``z``, the engine makes two collectives of ``O(rows)`` numbers:

1. ``all_reduce(MAX)`` of the local row maxima gives the global row max ``m``;
2. one ``all_reduce(SUM)`` of a stacked ``(k, rows)`` buffer (plus one scalar) gives, per row,

   * ``S   = Σ_c exp(x_c - m)``                        (the softmax denominator, ``lse = m + log S``)
   * ``T   = x_y - m``                                  (only the rank owning ``y`` adds it)
   * ``w_y``                                            (only with ``weight``; the owner adds it)
   * ``A   = Σ_c w_c·(x_c - m)``                        (only with ``ε > 0``)

   and the scalar ``W = Σ_c w_c`` (only with ``weight`` and ``ε > 0``; else ``W = C``).

Then, exactly as the single-process engine (``losskit.engine.rows``), with ``L = log S``::

    l_n     = (1-ε)·w_y·(L - T) + ε/C·(W·L - A) + z·lse²          (0 for ignored rows)
    ∂l_n/∂x = p·((1-ε)·w_y + ε/C·W + 2·z·lse) - (1-ε)·w_y·onehot(y) - ε/C·w,   p = exp(x - lse)

restricted to this rank's columns; ``'mean'`` divides by ``Σ_n w_{y_n}`` over kept rows. Every rank
computes identical row losses from identical reduced statistics, so every rank returns the same value.
The gradient is written during the forward pass; backward only scales it by ``grad_output``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .. import _checks
from .autograd import acc_dtype, first_order_only
from .rows import rows_per_chunk


@dataclass(frozen=True)
class ShardOptions:
    reduction: str  # 'none' | 'mean' | 'sum'
    ignore_index: int
    label_smoothing: float
    z_loss: float
    rank: int
    world_size: int
    group: object = None


def num_stats(has_weight: bool, label_smoothing: float) -> tuple[int, int]:
    """``(k, extra)``: the SUM all-reduce carries ``k`` numbers per row and ``extra`` scalars."""
    smoothing = label_smoothing > 0
    return 2 + int(has_weight) + int(smoothing), int(has_weight and smoothing)


def shard_pass(x, y, weight, opts: ShardOptions, want_grad: bool):
    """Reduced loss (every rank the same) and, if ``want_grad``, this rank's slice of its gradient.

    ``x``: (rows, C_l) logits; ``y``: (rows,) int64 global targets; ``weight``: (C_l,) or None.
    """
    n, cl = x.shape
    acc = acc_dtype(x.dtype)
    device = x.device
    eps, z = opts.label_smoothing, opts.z_loss
    c_global = cl * opts.world_size
    offset = opts.rank * cl
    w = None if weight is None else weight.to(acc)

    valid = y != opts.ignore_index
    local_y = y - offset
    owned = valid & (local_y >= 0) & (local_y < cl)
    ly = torch.where(owned, local_y, torch.zeros_like(local_y)).unsqueeze(1)
    zero = torch.zeros((), dtype=acc, device=device)

    # 1. the global row max
    m = x.amax(1).to(acc) if n else torch.empty(0, dtype=acc, device=device)
    if n:
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=opts.group)

    # 2. per-row statistics of this rank's columns, in one (k·rows + extra) buffer
    k, extra = num_stats(w is not None, eps)
    buf = torch.zeros(k * n + extra, dtype=acc, device=device)
    s_row, t_row = buf[:n], buf[n : 2 * n]
    j = 2
    wy_row = a_row = None
    if w is not None:
        wy_row = buf[j * n : (j + 1) * n]
        wy_row.copy_(torch.where(owned, w[ly.squeeze(1)], zero))
        j += 1
    if eps > 0:
        a_row = buf[j * n : (j + 1) * n]
        if w is not None:
            buf[k * n] = w.sum()
    t_row.copy_(torch.where(owned, x.gather(1, ly).squeeze(1).to(acc) - m, zero))

    grad = None
    direct = want_grad and x.dtype == acc  # keep exp(x - m) in the gradient buffer between the passes
    if want_grad:
        grad = torch.empty(x.shape, dtype=x.dtype, device=device)
    step = rows_per_chunk(cl)
    for s in range(0, n, step):
        e = min(n, s + step)
        if direct and grad is not None:
            shifted = torch.sub(x[s:e], m[s:e].unsqueeze(1), out=grad[s:e])
        else:
            shifted = x[s:e].to(acc) - m[s:e].unsqueeze(1)
        if a_row is not None:
            a_row[s:e] = shifted.sum(1) if w is None else shifted @ w
        s_row[s:e] = shifted.exp_().sum(1)
    if n:  # every rank has the same number of rows (checked), so all skip together
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=opts.group)

    # 3. row losses from the reduced statistics (identical on every rank)
    log_s = torch.log(s_row)
    w_y = wy_row if wy_row is not None else valid.to(acc)
    w_y = torch.where(valid, w_y, zero)
    w_sum = buf[k * n] if (w is not None and eps > 0) else float(c_global)
    row = (1 - eps) * w_y * (log_s - t_row)
    if a_row is not None:  # eps > 0
        row = row + (eps / c_global) * (w_sum * log_s - a_row)
    lse = m + log_s
    if z > 0:
        row = row + z * lse * lse
    rows = torch.where(valid, row, zero)
    denom = w_y.sum()  # 0 when every target is ignored: 'mean' is then 0/0 = nan, as in torch
    if opts.reduction == "none":
        loss = rows
    elif opts.reduction == "sum":
        loss = rows.sum()
    else:
        loss = rows.sum() / denom
    if grad is None:  # not want_grad
        return loss.to(x.dtype), None

    # 4. this rank's slice of the gradient of the reduced loss
    scale = 1.0 / denom if opts.reduction == "mean" and n else None
    coef = (1 - eps) * w_y + (eps / c_global) * w_sum
    if z > 0:
        coef = coef + 2 * z * lse
    hit = (-(1 - eps)) * w_y
    smooth_vec = None
    if eps > 0:
        smooth_vec = torch.full((cl,), eps / c_global, dtype=acc, device=device) if w is None else w * (eps / c_global)
    if scale is not None:
        coef, hit = coef * scale, hit * scale
        if smooth_vec is not None:
            smooth_vec = smooth_vec * scale
    coef = coef / s_row  # p·coef = exp(x - m)·coef / S
    hit = torch.where(owned, hit, zero)
    any_ignored = not bool(valid.all())
    for s in range(0, n, step):
        e = min(n, s + step)
        p = grad[s:e] if direct else (x[s:e].to(acc) - m[s:e].unsqueeze(1)).exp_()
        p.mul_(coef[s:e].unsqueeze(1))
        p.scatter_add_(1, ly[s:e], hit[s:e].unsqueeze(1))
        if smooth_vec is not None:
            p.sub_(smooth_vec)
        if any_ignored:
            p.masked_fill_(~valid[s:e].unsqueeze(1), 0.0)
        if not direct:
            grad[s:e].copy_(p)
    return loss.to(x.dtype), grad


class VocabParallelCrossEntropy(torch.autograd.Function):
    """Forward runs the collectives and writes this rank's gradient; backward scales it, nothing more.

    Backward makes no collective, so ranks may run it (or not) independently. The gradient buffer is
    handed to autograd without a copy; a second backward through the same graph would need the
    collectives again and raises instead.
    """

    @staticmethod
    def forward(ctx, x, y, weight, opts: ShardOptions):
        want_grad = ctx.needs_input_grad[0]
        loss, grad = shard_pass(x, y, weight, opts, want_grad)
        ctx.reduction = opts.reduction
        ctx.grad = grad
        ctx.set_materialize_grads(False)
        return loss

    @staticmethod
    @first_order_only
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        _checks.gradient_available(
            "vocab_parallel_cross_entropy()",
            grad is not None,
            "the gradient (computed in the forward pass) has been consumed by the first backward; a second "
            "backward through the same graph is not supported: call the loss again",
        )
        if grad_output is None:
            grad.zero_()
        elif ctx.reduction == "none":
            grad.mul_(grad_output.reshape(-1, 1).to(grad.dtype))
        elif grad_output.device.type != "cpu" or float(grad_output) != 1.0:
            grad.mul_(grad_output.to(grad.dtype))
        return grad, None, None, None
