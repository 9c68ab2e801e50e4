"""Fused linear + cross entropy: ``cross_entropy(input @ W.T + b, target)`` without the (N, V) logits.

Where the time goes: three matmuls of ``2·N·V·H`` flops each (logits, ``∂h``, ``∂W``) dominate; the
softmax is a small fraction. So rows with an ignored target are dropped before any matmul, and the
chunk is sized for the weight-gradient matmul (its K is the rows per chunk).

The rows of ``input`` are walked in chunks. Per chunk: ``logits = h @ W.T (+ b)`` (one matmul), the
cross-entropy engine's :class:`~losskit.engine.rows.RowPlan` turns them in place into the row losses
and ``G = ∂loss/∂logits``, then ``∂h = G @ W`` and ``∂W += Gᵀ @ h`` (``∂b += Σ_rows G``). Only one
chunk of logits exists at a time; for fp16/bf16 the weight gradient accumulates in fp32. Backward
only scales the finished gradients by ``grad_output``; for ``reduction='none'`` it recomputes the
chunks with each row's ``grad_output`` folded in (a per-row factor cannot be applied to ``∂W`` after
the fact).
"""

from __future__ import annotations

import torch

from .engine.autograd import acc_dtype, first_order_only
from .engine.rows import CrossEntropyOptions, RowPlan

# Default size of one chunk of logits: half of the weight gradient it accumulates into, kept within [8, 64] MiB,
# and at least MIN_CHUNK_ROWS rows while that stays within half the weight gradient. The weight gradient
# (V, H) must exist anyway; the weight-gradient matmul (K = rows per chunk) needs a K of a few hundred to run
# near peak. On the CPU kernel the gradient overwrites the chunk's logits, so a chunk costs its own size at
# the peak (the torch-op path, e.g. on CUDA, makes one log-softmax temporary of the same size).
# Measured with the kernel, fp32, 10% of targets ignored (torch unfused in the same run):
#   N=4096, H=1024, V=32000: 256 / 512 rows per chunk 3.41 / 2.89 s (torch 3.40 s);
#   N=2048, H=512, V=256000: 32 / 128 / 256 rows 11.1 / 7.1 / 6.3 s (torch 11.3 s).
MIN_CHUNK_BYTES = 8 << 20
MAX_CHUNK_BYTES = 64 << 20
MIN_CHUNK_ROWS = 128


def rows_per_chunk(n: int, v: int, h: int, chunk_size: int | None, memory_budget: int | None, acc) -> int:
    if chunk_size is not None:
        return max(1, min(n, chunk_size))
    item = torch.finfo(acc).bits // 8
    row_bytes = item * max(v, 1)
    if memory_budget is not None:
        return max(1, min(n, memory_budget // row_bytes))
    half_weight_grad = v * h * item // 2
    budget = min(MAX_CHUNK_BYTES, max(MIN_CHUNK_BYTES, half_weight_grad))
    rows = max(budget // row_bytes, min(MIN_CHUNK_ROWS, half_weight_grad // row_bytes))
    return max(1, min(n, rows))


def _pass(h, w, b, target, weight, opts, needs, step, rows=None, row_scale=None):
    """One walk over the row chunks: the reduced loss and the gradients named in ``needs`` (h, W, b, target).

    With ``rows`` (indices into ``h``), only those rows are computed, ``target`` being theirs; the others get
    a zero gradient. Each chunk of rows is gathered on the way, so no compacted copy of ``h`` is made.
    """
    n, v = target.shape[0], w.shape[0]
    acc = acc_dtype(h.dtype)
    want_grad = any(needs[:3])
    plan = RowPlan(target, weight, opts, n, v, acc, h.device, want_grad)
    if needs[3]:  # a probability target that requires grad
        plan.target_grad = torch.empty(target.shape, dtype=target.dtype, device=target.device)
    grad_h = None
    if needs[0]:
        grad_h = torch.empty_like(h) if rows is None else torch.zeros_like(h)
    grad_w = torch.zeros(w.shape, dtype=acc, device=w.device) if needs[1] else None
    grad_b = torch.zeros(v, dtype=acc, device=w.device) if needs[2] else None
    low = h.dtype != acc
    for s in range(0, n, step):
        e = min(n, s + step)
        hc = h[s:e] if rows is None else h.index_select(0, rows[s:e])
        logits = torch.mm(hc, w.t()) if b is None else torch.addmm(b, hc, w.t())
        # the chunk's gradient overwrites its logits
        in_place = not low or plan.native(logits.dtype) or plan.kernel_ok(logits, logits)
        g = plan.chunk(
            logits,
            s,
            e,
            want_grad,
            out=logits if in_place else None,
            row_scale=None if row_scale is None else row_scale[s:e],
        )
        if want_grad:
            if grad_h is not None:
                if rows is None:
                    torch.mm(g.to(w.dtype), w, out=grad_h[s:e])
                else:
                    grad_h.index_copy_(0, rows[s:e], torch.mm(g.to(w.dtype), w))
            if grad_w is not None:
                grad_w.addmm_(g.t().to(acc), hc.to(acc))
            if grad_b is not None:
                grad_b.add_(g.sum(0, dtype=acc))
        # freed before the next chunk's matmul allocates its logits: one chunk at a time at the peak
        del logits, g, hc
    return plan.reduced(h.dtype), grad_h, grad_w, grad_b, plan.target_grad


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, b, target, weight, opts: CrossEntropyOptions, step: int, rows=None):  # type: ignore[override]
        needs = (
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            b is not None and ctx.needs_input_grad[2],
            ctx.needs_input_grad[3] and target.is_floating_point(),
        )
        ctx.opts, ctx.step, ctx.needs = opts, step, needs
        ctx.save_for_backward(h, w, b, target, weight, rows)
        if opts.reduction == "none" or not any(needs):
            ctx.grads = None  # 'none': per-row grad_output is only known in backward
            loss, *_ = _pass(h, w, b, target, weight, opts, (False, False, False, False), step, rows)
            return loss
        loss, *ctx.grads = _pass(h, w, b, target, weight, opts, needs, step, rows)
        return loss

    @staticmethod
    @first_order_only
    def backward(ctx, grad_output):  # type: ignore[override]
        h, w, b, target, weight, rows = ctx.saved_tensors
        grads, ctx.grads = ctx.grads, None
        if ctx.opts.reduction == "none":
            row_scale = grad_output.reshape(-1).to(acc_dtype(h.dtype))
            _, *grads = _pass(h, w, b, target, weight, ctx.opts, ctx.needs, ctx.step, rows, row_scale=row_scale)
        else:
            if grads is None:  # a second backward through this graph (retain_graph=True): recompute
                _, *grads = _pass(h, w, b, target, weight, ctx.opts, ctx.needs, ctx.step, rows)
            if grad_output.device.type != "cpu" or float(grad_output) != 1.0:
                for g in grads:
                    if g is not None:
                        g.mul_(grad_output.to(g.dtype))
        grad_h, grad_w, grad_b, grad_t = grads
        if grad_w is not None:
            grad_w = grad_w.to(w.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(b.dtype)
        return grad_h, grad_w, grad_b, grad_t, None, None, None, None


def linear_cross_entropy(h, w, b, target, weight, opts: CrossEntropyOptions, step: int) -> torch.Tensor:
    """``h`` (rows, H), ``w`` (V, H), ``b`` (V,) or None, ``target`` (rows,) or (rows, V) probabilities.

    Rows whose target is ``ignore_index`` contribute nothing, so they are dropped before the matmuls
    (whose cost is proportional to the rows kept); ``'none'`` puts zeros back in their place.
    """
    if not torch.is_grad_enabled():  # no_grad / inference_mode: the forward makes no gradients
        h, w = h.detach(), w.detach()
        b = None if b is None else b.detach()
    if not target.is_floating_point():
        kept = target != opts.ignore_index
        if not bool(kept.all()):
            idx = kept.nonzero().squeeze(1)
            loss = _LinearCrossEntropy.apply(h, w, b, target[idx], weight, opts, step, idx)
            if opts.reduction != "none":
                return loss
            return torch.zeros(target.shape[0], dtype=loss.dtype, device=loss.device).index_copy(0, idx, loss)
    return _LinearCrossEntropy.apply(h, w, b, target, weight, opts, step)
