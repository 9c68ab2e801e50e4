"""Small class-index cross entropy in one native call: the classifier batches (32×10 … 256×100).

At these sizes the cost of a loss is its fixed cost, not its arithmetic: every torch op, host sync and
Python step counts (torch's own cross entropy takes about 40 µs forward+backward at N=32, C=10, of which a
Python autograd Function with nothing in it costs 33). Here one call of the kernel's ``losskit_ce_small`` checks
the targets, finds the mean's denominator, writes the row losses and the gradient of the reduced loss, and the
reduced loss; its arguments go in one reused struct (one ctypes conversion instead of fifteen), the Python side
allocates the gradient and the loss and wraps them for autograd. Backward scales the finished gradient by
``grad_output`` (not at all when it is 1). :func:`plain` is the whole eager call for the common case, checked in
a few attribute reads before any of the general checks run. Bigger problems take the row engine
(:mod:`.rows`), which splits rows over threads.
"""

from __future__ import annotations

import ctypes

import torch

from .. import _checks
from .._tracing import _is_compiling, capturing
from . import entry, native, native_calls
from .autograd import eager_apply, first_order_only, not_differentiable_again
from .rows import CrossEntropyOptions


class _OutOfMemory(MemoryError):
    """The kernel could not allocate its scratch buffers."""


MAX_ELEMENTS = 1 << 16  # up to here one thread does the whole problem (a thread start costs ~20 µs)
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}
_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


class _Call(ctypes.Structure):
    """The kernel's ``SmallCall`` (kernels/cross_entropy.cpp), field for field."""

    _fields_ = [
        ("dtype", ctypes.c_int64),
        ("x", ctypes.c_void_p),
        ("ldx", ctypes.c_int64),
        ("g", ctypes.c_void_p),
        ("ldg", ctypes.c_int64),
        ("n", ctypes.c_int64),
        ("c", ctypes.c_int64),
        ("y", ctypes.c_void_p),
        ("ignore_index", ctypes.c_int64),
        ("w", ctypes.c_void_p),
        ("eps", ctypes.c_double),
        ("z", ctypes.c_double),
        ("reduction", ctypes.c_int64),
        ("rows", ctypes.c_void_p),
        ("loss", ctypes.c_void_p),
    ]


_FILL = native_calls.packer(_Call)
_LOADED: list = []  # the kernel's losskit_ce_small once the library is loaded


def _kernel():
    """The kernel's ``losskit_ce_small`` (declared by :mod:`.native` when it loads the library); None without it."""
    if _LOADED and native._loader.lib is not None:
        return _LOADED[0]
    lib = native.library()
    if lib is None:
        return None
    _LOADED[:] = [lib.losskit_ce_small]
    return _LOADED[0]


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
    """(loss, gradient of the reduced loss or None); the loss in fp32 or, for bf16 logits, rounded to bf16."""
    n, c = x.shape
    y = target if target.is_contiguous() else target.contiguous()
    w = None if weight is None else weight.float().contiguous()
    grad = None
    if want_grad:  # rows of c elements (empty_like keeps a dense layout's strides, so only for contiguous x)
        grad = torch.empty_like(x) if x.is_contiguous() else torch.empty((n, c), dtype=x.dtype)
    reduced = opts.reduction != "none"
    out = native_calls.scalar(torch.float32) if reduced else torch.empty(n, dtype=torch.float32)
    _, address = _FILL(
        _DTYPES[x.dtype],
        x.data_ptr(),
        x.stride(0),
        0 if grad is None else grad.data_ptr(),
        c,
        n,
        c,
        y.data_ptr(),
        opts.ignore_index,
        0 if w is None else w.data_ptr(),
        opts.label_smoothing,
        opts.z_loss,
        _REDUCTIONS[opts.reduction],
        0 if reduced else out.data_ptr(),
        out.data_ptr() if reduced else 0,
    )
    bad = _kernel()(address)
    if bad:
        _checks.class_range("cross_entropy", target, c, opts.ignore_index)  # raises the clear error
        raise _OutOfMemory(f"cross_entropy: no memory for {n} rows of {c} classes")
    return (out if x.dtype == torch.float32 else out.to(x.dtype)), grad


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


_apply = eager_apply(SmallCrossEntropy)


def cross_entropy(x, target, weight, opts) -> torch.Tensor:
    """The loss of (rows, C) logits ``x`` (see :func:`eligible`); the target's range is checked by the kernel."""
    if not torch.is_grad_enabled():
        return _run(x.detach(), target, weight, opts, False)[0]
    return SmallCrossEntropy.apply(x, target, weight, opts)


def create_graph_grad(x, target, state, grad_output) -> torch.Tensor:
    """The entry's backward under create_graph=True (see engine/entry.py): the gradient, as
    :class:`SmallCrossEntropy` gives it, behind a node that raises if it is differentiated again."""
    ignore_index, reduction, eps, z = state
    opts = CrossEntropyOptions(("none", "mean", "sum")[reduction], ignore_index, eps, z)
    with torch.no_grad():
        _, grad = _run(x.detach(), target, None, opts, True)
        if reduction == 0:
            grad.mul_(grad_output.reshape(-1, 1).to(grad.dtype))
        elif float(grad_output) != 1.0:
            grad.mul_(grad_output.to(grad.dtype))
    return not_differentiable_again("SmallCrossEntropy", (grad,), (x,))[0]


_F32, _I64 = torch.float32, torch.int64
_OPTIONS: dict[tuple, CrossEntropyOptions] = {}  # the options of plain() calls seen so far, by their arguments


def _plain_options(reduction, ignore_index, label_smoothing, z_loss) -> CrossEntropyOptions | None:
    key = (reduction, ignore_index, label_smoothing, z_loss)
    opts = _OPTIONS.get(key)
    if opts is None:
        if not (
            reduction in _REDUCTIONS
            and type(ignore_index) is int
            and _checks.fits_int64(ignore_index)
            and type(label_smoothing) in (float, int)
            and 0.0 <= label_smoothing <= 1.0
            and type(z_loss) in (float, int)
            and 0.0 <= z_loss < float("inf")
        ):
            return None  # the general checks take it (and raise the clear error where there is one)
        opts = CrossEntropyOptions(reduction, ignore_index, float(label_smoothing), float(z_loss))
        if len(_OPTIONS) < 256:
            _OPTIONS[key] = opts
    return opts


def plain(input: torch.Tensor, target: torch.Tensor, ignore_index, reduction, label_smoothing, z_loss):
    """The whole eager call of the common case, or None for anything else: (N, C) fp32 CPU logits (not more
    than MAX_ELEMENTS, rows contiguous) with (N,) int64 class indices, no class weights, no tracing. The
    caller has checked that both are plain tensors and that weight, softcap, inplace and the legacy
    size_average/reduce are unset. Everything the general path validates either holds by these tests or is
    checked by the kernel (the targets' range: a bad target raises the same LossIndexError)."""
    if not _is_compiling() and (fast := entry.module or entry.get()) is not None:
        out = fast.cross_entropy(input, target, ignore_index, reduction, label_smoothing, z_loss)  # all in C++
        if out is not None:
            return out
    if not (
        not (capturing())  # first: dynamo folds it
        and input.dtype is _F32
        and target.dtype is _I64
        and input.is_cpu
        and input.dim() == 2
        and target.dim() == 1
        and 0 < input.numel() <= MAX_ELEMENTS
        and input.shape[0] == target.shape[0]
        and input.is_contiguous()
        and not input.is_neg()
    ):
        return None
    opts = _plain_options(reduction, ignore_index, label_smoothing, z_loss)
    if opts is None or _kernel() is None:
        return None
    if input.requires_grad and torch.is_grad_enabled():
        return _apply(input, target, None, opts)
    return _run(input, target, None, opts, False)[0]
