"""Small class-index cross entropy in one native call: the classifier batches (32×10 … 256×100).

At these sizes the cost of a loss is its fixed cost, not its arithmetic: every torch op, host sync and
Python step counts. Here one call of the kernel's ``losskit_ce_small`` checks the targets, finds the mean's
denominator, writes the row losses and the gradient of the reduced loss, and returns the reduced loss; the
Python side allocates two buffers and wraps the result for autograd. Backward scales the finished gradient by
``grad_output`` (not at all when it is 1). Bigger problems take the row engine (:mod:`.rows`), which splits
rows over threads.
"""

from __future__ import annotations

import torch

from .. import _checks
from . import native
from .autograd import first_order_only


class _OutOfMemory(MemoryError):
    """The kernel could not allocate its scratch buffers."""


MAX_ELEMENTS = 1 << 16  # up to here one thread does the whole problem (a thread start costs ~20 µs)
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}
_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def _kernel():
    """The kernel's ``losskit_ce_small`` (declared by :mod:`.native` when it loads the library); None without it."""
    lib = native.library()
    return None if lib is None else lib.losskit_ce_small


def eligible(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, opts) -> bool:
    """(rows, C) CPU fp32/bf16 logits with int64 class indices, small enough for one thread, no softcap or
    in-place write; the weight, if any, fp32 or of the logits' dtype."""
    return (
        x.numel() <= MAX_ELEMENTS
        and x.dtype in _DTYPES
        and x.device.type == "cpu"
        and target.dtype == torch.int64
        and opts.softcap is None
        and not opts.inplace
        and x.dim() == 2
        and x.stride(1) == 1
        and type(x) is torch.Tensor
        and not x.is_neg()
        and (weight is None or weight.dtype in (torch.float32, x.dtype))
        and _kernel() is not None
    )


def _run(x, target, weight, opts, want_grad: bool):
    n, c = x.shape
    y = target if target.is_contiguous() else target.contiguous()
    w = None if weight is None else weight.float().contiguous()
    grad = torch.empty_like(x, memory_format=torch.contiguous_format) if want_grad else None
    rows = torch.empty(n + 1, dtype=torch.float32)  # the row losses, then the reduced loss
    if grad is not None:
        torch.autograd.graph.increment_version(grad)  # written through a raw pointer
    bad = _kernel()(
        _DTYPES[x.dtype],
        x.data_ptr(),
        x.stride(0),
        None if grad is None else grad.data_ptr(),
        0 if grad is None else grad.stride(0),
        n,
        c,
        y.data_ptr(),
        opts.ignore_index,
        None if w is None else w.data_ptr(),
        opts.label_smoothing,
        opts.z_loss,
        _REDUCTIONS[opts.reduction],
        rows.data_ptr(),
    )
    if bad:
        _checks.class_range("cross_entropy", target, c, opts.ignore_index)  # raises the clear error
        raise _OutOfMemory(f"cross_entropy: no memory for {n} rows of {c} classes")
    loss = rows[:n] if opts.reduction == "none" else rows[n]
    return (loss if x.dtype == torch.float32 else loss.to(x.dtype)), grad


class SmallCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, target, weight, opts):
        loss, ctx.grad = _run(x, target, weight, opts, ctx.needs_input_grad[0])
        ctx.opts = opts
        ctx.save_for_backward(x, target, weight)
        return loss

    @staticmethod
    @first_order_only
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # a second backward through this graph (retain_graph=True): recompute
            x, target, weight = ctx.saved_tensors
            _, grad = _run(x, target, weight, ctx.opts, True)
        if ctx.opts.reduction == "none":
            grad.mul_(grad_output.reshape(-1, 1).to(grad.dtype))
        elif float(grad_output) != 1.0:
            grad.mul_(grad_output.to(grad.dtype))
        return grad, None, None, None


def cross_entropy(x, target, weight, opts) -> torch.Tensor:
    """The loss of (rows, C) logits ``x`` (see :func:`eligible`); the target's range is checked by the kernel."""
    if not torch.is_grad_enabled():
        return _run(x.detach(), target, weight, opts, False)[0]
    return SmallCrossEntropy.apply(x, target, weight, opts)
