"""The fused linear + cross-entropy engine: ``cross_entropy(h @ W.T + b, target)`` without the (N, V) logits.

Where the time goes: three matmuls of ``2·N·V·H`` flops each (logits, ``∂h``, ``∂W``) dominate; the
softmax is a small fraction. So rows with an ignored target are dropped before any matmul, and the
chunk is sized for the weight-gradient matmul (its K is the rows per chunk).

The rows of ``input`` are walked in chunks. Per chunk: ``logits = h @ W.T (+ b)`` (one matmul), the
cross-entropy engine's :class:`~losskit.engine.rows.RowPlan` turns them in place into the row losses
and ``G = ∂loss/∂logits``, then ``∂h = G @ W`` (into its rows of one buffer) and ``∂W += Gᵀ @ h``
(``addmm_`` into one buffer; ``∂b += Σ_rows G``). Only one chunk of logits exists at a time. fp16/bf16
inputs are computed in fp32 throughout and every result is rounded once (issue 13). Backward only scales
the finished gradients by ``grad_output`` (still in the accumulation dtype, then rounded); for
``reduction='none'`` it recomputes the chunks with each row's ``grad_output`` folded in (a per-row factor
cannot be applied to ``∂W`` after the fact).

``accumulate_grad=True`` (gradient-accumulation micro-steps, ``zero_grad(set_to_none=False)``): when the
weight's ``.grad`` already exists, forward computes the loss only and backward walks the chunks again, adding
``∂W`` straight into ``.grad`` (``addmm_`` with ``grad_output`` as its factor) instead of making a ``(V, H)``
buffer: the peak extra memory drops by the weight's size, for one more matmul per chunk (the logits are
computed twice). Only when the engine will run the weight's gradient accumulator (``.backward()``, not
``autograd.grad``), the weight (or the leaf it is a same-layout view of) has no tensor hooks, its ``.grad`` is
a plain dense fp32/fp64 tensor of its dtype and shape, and no graph of the gradient is asked for; otherwise
backward computes ``∂W`` as usual. The weight's input to the graph then receives a broadcast zero, so its
accumulator still runs (DDP's and post-accumulate hooks fire) and adds nothing.
"""

from __future__ import annotations

import torch

from .autograd import acc_dtype, first_order_only
from .rows import CrossEntropyOptions, RowPlan

# Default size of one chunk of logits: a quarter of the gradients it is made for (the weight gradient (V, H) and
# the input gradient (N, H), in the accumulation dtype), kept within [8, 64] MiB, its rows rounded down to a
# multiple of 64, and at least MIN_CHUNK_ROWS rows while those stay within a quarter of the gradients. The
# gradients must exist anyway, and at the peak only one chunk is alive besides them (the CPU kernel overwrites
# the chunk's logits with their gradient; the torch-op path, e.g. on CUDA, makes one log-softmax temporary of the
# same size). The chunk's rows are the K of the weight-gradient matmul and the M of the other two: too few, and
# ``W`` and ``∂W`` stream through memory once per chunk for little work.
# Measured (issue 17) with the kernel, fp32, 10% of targets ignored, min of 3 rounds interleaved in one process:
#   N=4096, H=1024, V=32000, rows 128 / 192 / 256 / 384 / 512: 5.34 / 5.01 / 4.81 / 4.67 / 4.65 s (load 0-5),
#     peak extra memory 158 / 166 / 174 / - / 209 MiB (the gradients alone: 141 MiB);
#   earlier, N=2048, H=512, V=256000: 32 / 128 / 256 rows 11.1 / 7.1 / 6.3 s (torch 11.3 s).
GRAD_FRACTION = 4

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
    grads = (v + n) * h * item
    budget = min(MAX_CHUNK_BYTES, max(MIN_CHUNK_BYTES, grads // GRAD_FRACTION))
    rows = budget // row_bytes
    rows = rows - rows % 64 if rows >= 64 else rows
    rows = max(rows, min(MIN_CHUNK_ROWS, grads // GRAD_FRACTION // row_bytes))
    return max(1, min(n, rows))


def _pass(h, w, b, target, weight, opts, needs, step, rows=None, row_scale=None, into=None, into_scale=1.0):
    """One walk over the row chunks: the reduced loss and the gradients named in ``needs`` (h, W, b, target).

    fp16/bf16 inputs are computed in fp32 from end to end: the logits (from one fp32 copy of ``W`` per pass, as
    torch's chunked path does on the CPU), their gradient and the products with it. So every result is rounded to
    the input's dtype once, at the end, by the caller, after ``grad_output`` is applied: the gradients come back
    in the accumulation dtype.

    With ``rows`` (indices into ``h``), only those rows are computed, ``target`` being theirs; the others get
    a zero gradient. Each chunk of rows is gathered on the way, so no compacted copy of ``h`` is made.

    With ``into`` (the weight's existing ``.grad``, of the accumulation dtype), ``∂W · into_scale`` is added
    into it chunk by chunk instead of being returned.
    """
    n, v = target.shape[0], w.shape[0]
    acc = acc_dtype(h.dtype)
    want_grad = any(needs[:3])
    plan = RowPlan(target, weight, opts, n, v, acc, h.device, want_grad)
    if needs[3]:  # a probability target that requires grad
        plan.target_grad = torch.empty(target.shape, dtype=acc, device=target.device)
    grad_h = None
    if needs[0]:
        grad_h = (torch.empty if rows is None else torch.zeros)(h.shape, dtype=acc, device=h.device)
    grad_w = torch.zeros(w.shape, dtype=acc, device=w.device) if needs[1] and into is None else None
    grad_b = torch.zeros(v, dtype=acc, device=w.device) if needs[2] else None
    wl = w.to(acc)  # the weight the logits and the input gradient are multiplied with (a copy for fp16/bf16)
    bl = None if b is None else b.to(acc)
    for s in range(0, n, step):
        e = min(n, s + step)
        hc = (h[s:e] if rows is None else h.index_select(0, rows[s:e])).to(acc)
        logits = torch.mm(hc, wl.t()) if bl is None else torch.addmm(bl, hc, wl.t())
        # the chunk's gradient overwrites its logits
        rs = None if row_scale is None else row_scale[s:e]
        g = plan.chunk(logits, s, e, want_grad, out=logits, row_scale=rs)
        if want_grad:
            if grad_h is not None:
                if rows is None:
                    torch.mm(g, wl, out=grad_h[s:e])
                else:
                    grad_h.index_copy_(0, rows[s:e], torch.mm(g, wl))
            if grad_w is not None:
                grad_w.addmm_(g.t(), hc)
            elif into is not None:
                into.addmm_(g.t(), hc, alpha=into_scale)
            if grad_b is not None:
                grad_b.add_(g.sum(0))
        # freed before the next chunk's matmul allocates its logits: one chunk at a time at the peak
        del logits, g, hc
    return plan.reduced(h.dtype), grad_h, grad_w, grad_b, plan.target_grad


def _grad_to_accumulate(w: torch.Tensor, create_graph: bool) -> torch.Tensor | None:
    """The ``.grad`` that backward may add ``∂W`` into, viewed as ``w`` (see the module docstring), or None. ``w``
    is the leaf itself or a view of all of it in the same layout (a module's reshape); neither has tensor hooks."""
    if create_graph:  # the new .grad would be a graph of its own, not an in-place sum
        return None
    leaf = w if w.is_leaf else w._base
    if (
        leaf is None
        or not leaf.is_leaf
        or not leaf.requires_grad
        or leaf._backward_hooks
        or w._backward_hooks
        or (
            leaf is not w
            and not (
                w.is_contiguous()
                and leaf.is_contiguous()
                and w.numel() == leaf.numel()
                and w.data_ptr() == leaf.data_ptr()
            )
        )
    ):
        return None
    grad = leaf.grad
    if (
        type(grad) is not torch.Tensor
        or grad.layout != torch.strided
        or grad.dtype != w.dtype
        or grad.dtype not in (torch.float32, torch.float64)
        or grad.shape != leaf.shape
        or grad.device != w.device
        or not grad.is_contiguous()
        or grad.requires_grad
    ):
        return None
    try:  # does this backward run the leaf's accumulator (.backward(), not autograd.grad or inputs=[others])?
        if not torch._C._will_engine_execute_node(torch.autograd.graph.get_gradient_edge(leaf).node):
            return None
    except RuntimeError:  # not inside an engine run that can say (autograd.grad): compute ∂W as usual
        return None
    return grad.view(w.shape)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, b, target, weight, opts: CrossEntropyOptions, step: int, rows=None, accumulate=False):
        needs = (
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            b is not None and ctx.needs_input_grad[2],
            ctx.needs_input_grad[3] and target.is_floating_point(),
        )
        ctx.opts, ctx.step, ctx.needs = opts, step, needs
        ctx.accumulate = accumulate and needs[1]
        ctx.save_for_backward(h, w, b, target, weight, rows)
        if opts.reduction == "none" or not any(needs) or ctx.accumulate:
            ctx.grads = None  # 'none': per-row grad_output is only known in backward; accumulate: see above
            loss, *_ = _pass(h, w, b, target, weight, opts, (False,) * 4, step, rows)
            return loss
        loss, *ctx.grads = _pass(h, w, b, target, weight, opts, needs, step, rows)
        return loss

    @staticmethod
    @first_order_only
    def backward(ctx, grad_output):
        h, w, b, target, weight, rows = ctx.saved_tensors
        grads, ctx.grads = ctx.grads, None
        into = _grad_to_accumulate(w, ctx.create_graph) if ctx.accumulate else None
        none = ctx.opts.reduction == "none"
        row_scale = grad_output.reshape(-1).to(acc_dtype(h.dtype)) if none else None
        if into is not None:
            scale = 1.0 if none else float(grad_output)
            _, *grads = _pass(h, w, b, target, weight, ctx.opts, ctx.needs, ctx.step, rows, row_scale, into, scale)
        elif none:
            _, *grads = _pass(h, w, b, target, weight, ctx.opts, ctx.needs, ctx.step, rows, row_scale)
        elif grads is None:  # accumulate_grad without a .grad to add into, or retain_graph=True: recompute
            _, *grads = _pass(h, w, b, target, weight, ctx.opts, ctx.needs, ctx.step, rows)
        if not none and (grad_output.device.type != "cpu" or float(grad_output) != 1.0):
            # the gradients are still in the accumulation dtype: scaled there, rounded once below
            for g in grads:
                if g is not None:
                    g.mul_(grad_output.to(g.dtype))
        # fp16/bf16: the one rounding of each gradient to its input's dtype
        out = [None if g is None else g.to(x.dtype) for g, x in zip(grads, (h, w, b, target), strict=True)]
        if into is not None:  # ∂W is in .grad already: the accumulator adds a broadcast zero (its hooks still run)
            out[1] = torch.zeros((), dtype=w.dtype, device=w.device).expand(w.shape)
        return (*out, None, None, None, None, None)


def fused_linear_cross_entropy(
    h, w, b, target, weight, opts: CrossEntropyOptions, step: int, accumulate: bool = False
) -> torch.Tensor:
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
            loss = _LinearCrossEntropy.apply(h, w, b, target[idx], weight, opts, step, idx, accumulate)
            if opts.reduction != "none":
                return loss
            return torch.zeros(target.shape[0], dtype=loss.dtype, device=loss.device).index_copy(0, idx, loss)
    return _LinearCrossEntropy.apply(h, w, b, target, weight, opts, step, None, accumulate)
