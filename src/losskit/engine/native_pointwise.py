"""losskit's element-wise CPU kernel (``kernels/pointwise.cpp``): loss and gradient in one pass, one call.

For the element-wise losses (mse, l1, smooth L1, Huber, soft margin, BCE, BCE with logits, KL divergence) of
fp32/fp64 CPU tensors of one shape: one ctypes call reads ``x`` and ``t`` once, sums the loss in double and
writes the gradient of the reduced loss, which backward hands to autograd (scaled by ``grad_output`` when
that is not 1). torch computes the loss in forward and reads both inputs again in backward, each step behind
Python and an autograd node: at a classifier's batch (32×10) the fixed costs are the whole call, at 256×1000
the extra pass over memory is.

The library is built on first use like the cross-entropy kernel (same compiler, flags, private cache and
``$LOSSKIT_NATIVE``; see :mod:`.native_build`) and independently of it: either may be missing while the other
works. Without it :func:`library` returns None and the losses take their torch-op path.

:func:`plain` is the whole eager call for the common case; its checks are a few attribute reads, and every
case it does not take returns None for the loss's general path (which validates and raises the clear errors).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from .._tracing import _is_compiling, capturing
from . import entry, native_calls
from .autograd import eager_apply
from .native_loader import Loader

SOURCE = Path(__file__).parent.parent / "kernels" / "pointwise.cpp"
VERSION = 10  # what its losskit_kernel_version() returns

MSE, L1, HUBER, SMOOTH_L1, SOFT_MARGIN, BCE_LOGITS, BCE, KL, KL_LOG, POISSON_LOG, POISSON, HINGE_EMBEDDING = range(12)

# From here the kernel hands chunks of 2^14 elements to its parallel loop (kernels/pool.h), over torch's thread
# count; below, one chunk, the caller's thread alone.
PARALLEL_ELEMENTS = 1 << 15
_DTYPES = {torch.float32: 0, torch.float64: 1}
_REDUCTIONS = ("none", "mean", "sum")


class _Call(ctypes.Structure):
    """The kernel's ``PointCall``, field for field."""

    _fields_ = [
        ("kind", ctypes.c_int64),
        ("dtype", ctypes.c_int64),
        ("x", ctypes.c_void_p),
        ("t", ctypes.c_void_p),
        ("g", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("loss", ctypes.c_void_p),
        ("n", ctypes.c_int64),
        ("p", ctypes.c_double),
        ("gscale", ctypes.c_double),
        ("ldiv", ctypes.c_double),
        ("threads", ctypes.c_int64),
    ]


_FILL = native_calls.packer(_Call)


def _declare(lib: ctypes.CDLL) -> None:
    for fn in (
        lib.losskit_pointwise,
        lib.losskit_nll,
        lib.losskit_multilabel_margin,
        lib.losskit_multi_margin,
        lib.losskit_gaussian_nll,
    ):
        fn.restype = ctypes.c_int64
        fn.argtypes = [ctypes.c_void_p]
    for fn in (lib.losskit_margin_ranking, lib.losskit_embedding):
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p]


_loader = Loader("element-wise CPU kernel", SOURCE, VERSION, _declare)


def library() -> ctypes.CDLL | None:
    """The loaded library, built on first use; None when unavailable (:func:`status` says why). Only one thread
    builds; another thread's call meanwhile returns None (torch ops for that call)."""
    return _loader.lib if _loader.state == "done" else _loader.library()


def status() -> str:
    library()
    return _loader.status


class _BadProbability(ValueError):
    """An input of binary cross entropy outside [0, 1] (the caller raises torch's error)."""


def run(kind: int, p: float, x, t, reduction: str, want_grad: bool, divisor=None, gscale: float | None = None):
    """(loss, gradient of the reduced loss or None) of contiguous same-shape fp32/fp64 CPU ``x`` and ``t``;
    'mean' divides the sum by the element count, 'sum' by ``divisor`` when given (kl_div's 'batchmean'); the
    gradient is ∂l/∂x times ``gscale`` (default: 1 over that divisor)."""
    n = x.numel()
    grad = torch.empty_like(x) if want_grad else None
    reduced = reduction != "none"
    out = native_calls.scalar(x.dtype) if reduced else torch.empty_like(x)
    div = float(n) if reduction == "mean" else (1.0 if divisor is None else float(divisor))
    _, address = _FILL(
        kind,
        _DTYPES[x.dtype],
        x.data_ptr(),
        t.data_ptr(),
        0 if grad is None else grad.data_ptr(),
        0 if reduced else out.data_ptr(),
        out.data_ptr() if reduced else 0,
        n,
        p,
        1.0 / div if gscale is None else gscale,
        div,
        torch.get_num_threads() if n >= PARALLEL_ELEMENTS else 1,
    )
    bad = _loader.lib.losskit_pointwise(address)  # type: ignore[union-attr]  # loaded: every caller checked
    if bad:
        raise _BadProbability(bad - 1)
    return out, grad


class NativePointwise(torch.autograd.Function):
    """``state``: (spec, params, (kind, p), reduction, divisor)."""

    @staticmethod
    def forward(ctx, x, t, state):
        _, _, (kind, p), reduction, divisor = state
        loss, ctx.grad = run(kind, p, x, t, reduction, True, divisor)
        ctx.state = state
        ctx.save_for_backward(x, t)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad = ctx.grad
        # the common case first: a reduced loss, its first backward, grad_output 1 (loss.backward())
        if grad is not None and ctx.state[3] != "none" and not torch.is_grad_enabled() and float(grad_output) == 1:
            ctx.grad = None
            return grad, None, None
        spec, params, (kind, p), reduction, divisor = ctx.state
        if torch.is_grad_enabled():  # create_graph=True: the loss's differentiable formula
            from .pointwise import differentiable_grad

            x, t = ctx.saved_tensors
            if divisor is not None:
                grad_output = grad_output / divisor
            return differentiable_grad(spec, params, x, t, None, reduction, False, grad_output), None, None
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # a second backward through this graph (retain_graph=True): compute it again
            x, t = ctx.saved_tensors
            _, grad = run(kind, p, x, t, reduction, True, divisor)
        if reduction == "none":
            grad.mul_(grad_output)
        elif float(grad_output) != 1.0:
            x, t = ctx.saved_tensors
            div = x.numel() if reduction == "mean" else divisor
            if div is None:  # 'sum': ∂l/∂x · grad_output, as torch
                grad.mul_(grad_output)
            else:  # ∂l/∂x · (grad_output / divisor), the order torch's mean takes (a pass like mul_ would be)
                _, grad = run(kind, p, x, t, reduction, True, divisor, float(grad_output / div))
        return grad, None, None


_apply = eager_apply(NativePointwise)


def eligible(x: torch.Tensor, t: torch.Tensor) -> bool:
    """Same-shape, same-dtype (fp32/fp64), contiguous plain CPU tensors, the target needing no gradient, not
    traced, not empty, and the library available."""
    return (
        not (capturing())  # first: dynamo folds it
        and type(x) is torch.Tensor
        and type(t) is torch.Tensor
        and (x.dtype is torch.float32 or x.dtype is torch.float64)
        and t.dtype is x.dtype
        and x.is_cpu
        and t.is_cpu
        and x.is_contiguous()
        and t.is_contiguous()
        and not x.is_neg()
        and not t.is_neg()
        and not t.requires_grad
        and x.shape == t.shape
        and x.numel() > 0
        and (_loader.lib if _loader.state == "done" else _loader.library()) is not None
    )


def _by_entry(spec, params, x, t, reduction: str, divisor) -> torch.Tensor | None:
    """The whole call in C++ (:mod:`.entry`), or None when the entry points are not there or do not take it."""
    fast = entry.module or entry.get()
    if fast is None:
        return None
    code = entry.pointwise_code(spec, params, reduction, divisor)
    if code is None:
        return None
    return fast.pointwise(code[0], code[1], x, t, reduction, -1.0 if divisor is None else divisor, code[2])


def loss(spec, params, x: torch.Tensor, t: torch.Tensor, reduction: str, code, divisor=None) -> torch.Tensor:
    """The loss through the kernel (see :func:`eligible`); ``code`` is ``spec.native(params)``."""
    if (out := _by_entry(spec, params, x, t, reduction, divisor)) is not None:
        return out
    if x.requires_grad and torch.is_grad_enabled():
        return _apply(x, t, (spec, params, code, reduction, divisor))
    return run(code[0], code[1], x, t, reduction, False, divisor)[0]


def plain(spec, x, t, reduction, params=None, divisor=None):
    """The whole eager call of the common case (see the module docstring), or None."""
    if not _is_compiling() and (out := _by_entry(spec, params, x, t, reduction, divisor)) is not None:
        return out
    if reduction not in _REDUCTIONS or not eligible(x, t):
        return None
    code = spec.native(params)
    if code is None:
        return None
    try:
        if x.requires_grad and torch.is_grad_enabled():
            return _apply(x, t, (spec, params, code, reduction, divisor))
        return run(code[0], code[1], x, t, reduction, False, divisor)[0]
    except _BadProbability:
        return None  # binary cross entropy's general path raises torch's error
