"""The CPU kernel as one operator under ``torch.compile``: large class-index cross entropy, compiled.

Eager calls reach the kernel through :mod:`.rows` (a Python autograd Function holding a raw pointer), which
dynamo cannot trace; the traceable path (plain torch ops) lets inductor fuse the softmax, and at large class
counts that is torch's speed, not the kernel's. Here the kernel is a custom operator instead:

* ``losskit::cross_entropy_kernel(x, y, weight, ignore_index, label_smoothing, z_loss, reduction, want_grad,
  fn)``
  → ``(loss, grad)``: the loss and the gradient of the reduced loss w.r.t. the (rows, C) logits, in one pass
  (the eager engine's :func:`.rows.fused_pass`), after checking the targets' range (losskit's clear error, at
  run time, in compiled code too). A fake implementation gives dynamo and inductor the shapes.
* :class:`KernelCrossEntropy`, a ``torch.autograd.Function`` with a separate ``setup_context`` (what dynamo
  traces), whose backward scales the saved gradient by ``grad_output``: one multiply that inductor fuses.

Only fp32 logits on the CPU, large enough to pay the operator's dispatch (:data:`MIN_ELEMENTS`), and only
under ``torch.compile``: ``torch.export`` keeps plain torch ops (an exported program should not need losskit's
compiler-built library), and so do the ``torch.func`` transforms and ``jit.trace``. bf16 keeps the traced path
as well: a saved bf16 gradient scaled by ``grad_output`` would be rounded twice.
"""

from __future__ import annotations

import torch

from .. import _checks
from . import rows

MIN_ELEMENTS = 1 << 20  # below this, inductor's fused softmax costs less than a call into the kernel
_REDUCTIONS = ("none", "mean", "sum")


@torch.library.custom_op("losskit::cross_entropy_kernel", mutates_args=())
def cross_entropy_kernel(
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    reduction: str,
    want_grad: bool,
    fn: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    _checks.class_range(fn, y, x.shape[1], ignore_index)
    opts = rows.CrossEntropyOptions(reduction, ignore_index, label_smoothing, z_loss)
    with torch.no_grad():
        loss, grad, _ = rows.fused_pass(x, y, weight, opts, want_grad)
    return loss, (grad if grad is not None else x.new_empty(0))


@cross_entropy_kernel.register_fake
def _(x, y, weight, ignore_index, label_smoothing, z_loss, reduction, want_grad, fn):
    loss = x.new_empty(x.shape[0]) if reduction == "none" else x.new_empty(())
    return loss, (torch.empty_like(x, memory_format=torch.contiguous_format) if want_grad else x.new_empty(0))


class KernelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(x, y, weight, ignore_index, label_smoothing, z_loss, reduction, want_grad, fn):
        return cross_entropy_kernel(x, y, weight, ignore_index, label_smoothing, z_loss, reduction, want_grad, fn)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.reduction = inputs[6]
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad_loss, _grad_of_grad):
        (grad,) = ctx.saved_tensors
        scale = grad_loss.unsqueeze(1) if ctx.reduction == "none" else grad_loss
        return grad * scale, None, None, None, None, None, None, None, None


def eligible(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, opts) -> bool:
    """Whether a traced call takes the kernel operator: ``torch.compile`` (not export, not a torch.func
    transform), (rows, C) fp32 CPU logits of at least :data:`MIN_ELEMENTS`, class indices, no softcap or
    in-place write. (Without the library, the operator runs the engine's torch ops: same formulas.)"""
    return (
        torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and not torch._C._are_functorch_transforms_active()
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not target.is_floating_point()
        and (weight is None or weight.dtype == torch.float32)
        and opts.softcap is None
        and not opts.inplace
        and opts.reduction in _REDUCTIONS
        and x.numel() >= MIN_ELEMENTS
    )


def cross_entropy(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, opts, fn: str) -> torch.Tensor:
    """The loss of (rows, C) logits ``x`` and int class indices ``y`` (rows,) through the kernel operator."""
    want_grad = torch.is_grad_enabled() and x.requires_grad
    loss, _ = KernelCrossEntropy.apply(
        x, y, weight, opts.ignore_index, opts.label_smoothing, opts.z_loss, opts.reduction, want_grad, fn
    )
    return loss
