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
import os
import threading
import warnings
from pathlib import Path

import torch

from .._tracing import _functorch_active, _is_compiling, _jit_tracing
from . import native_build
from .autograd import eager_apply

SOURCE = Path(__file__).parent.parent / "kernels" / "pointwise.cpp"
VERSION = 5  # what its losskit_kernel_version() returns

MSE, L1, HUBER, SMOOTH_L1, SOFT_MARGIN, BCE_LOGITS, BCE, KL, KL_LOG, POISSON_LOG, POISSON = range(11)

PARALLEL_ELEMENTS = 1 << 17  # from here the kernel splits the elements over torch's thread count
_DTYPES = {torch.float32: 0, torch.float64: 1}
_REDUCTIONS = ("none", "mean", "sum")

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_status = "not loaded yet"
_state = "new"  # "new" -> "building" -> "done"


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


_local = threading.local()  # one struct per thread: the kernel reads it while the GIL is released


def _struct() -> tuple[_Call, int]:
    try:
        return _local.call
    except AttributeError:
        call = _Call()
        _local.call = (call, ctypes.addressof(call))
        return _local.call


def _after_fork_in_child() -> None:
    global _lock, _state, _status
    _lock = threading.Lock()
    if _state == "building":
        _state, _status = "new", "not loaded yet"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _load() -> tuple[ctypes.CDLL | None, str]:
    if not native_build._truthy("LOSSKIT_NATIVE", "1"):
        return None, "disabled by LOSSKIT_NATIVE=0"
    if os.name != "posix" or native_build.fcntl is None:
        return None, "the kernel is built on POSIX systems only; using torch ops"
    cxx = native_build._compiler()
    if cxx is None:
        return None, "no C++ compiler found (set CXX); using torch ops"
    sanitize = native_build.sanitizers()
    if sanitize and "address" in sanitize and "asan" not in os.environ.get("LD_PRELOAD", ""):
        return None, "LOSSKIT_SANITIZE asks for AddressSanitizer, which needs LD_PRELOAD of libasan; using torch ops"
    try:
        lib, path = native_build.build_and_load(SOURCE, VERSION, cxx, sanitize)
        for entry in (lib.losskit_pointwise, lib.losskit_nll, lib.losskit_multilabel_margin, lib.losskit_multi_margin):
            entry.restype = ctypes.c_int64
            entry.argtypes = [ctypes.c_void_p]
    except Exception as exc:  # noqa: BLE001 - any failure means: use torch ops, and say why
        return None, f"build failed, using torch ops: {type(exc).__name__}: {exc}"
    return lib, f"loaded {path}" + (f" (sanitizers: {sanitize})" if sanitize else "")


def library() -> ctypes.CDLL | None:
    """The loaded library, built on first use; None when unavailable (:func:`status` says why). Only one thread
    builds; another thread's call meanwhile returns None (torch ops for that call)."""
    global _lib, _status, _state
    if _state == "done":
        return _lib
    lock = _lock
    if not lock.acquire(blocking=False):
        return None
    try:
        if _state != "done":
            _state, _status = "building", "being built"
            try:
                _lib, _status = _load()
                if _lib is None and "LOSSKIT_NATIVE=0" not in _status:
                    warnings.warn(
                        f"losskit: the element-wise CPU kernel is not available ({_status}). Results are the same, "
                        "computed with torch ops. Set LOSSKIT_NATIVE=0 to use torch ops without this warning.",
                        RuntimeWarning,
                        stacklevel=4,
                    )
            except BaseException as exc:  # KeyboardInterrupt, SystemExit: remembered, not retried
                _lib, _status = None, f"build interrupted ({type(exc).__name__}); using torch ops in this process"
                raise
            finally:
                _state = "done"
    finally:
        lock.release()
    return _lib


def status() -> str:
    library()
    return _status


class _BadProbability(ValueError):
    """An input of binary cross entropy outside [0, 1] (the caller raises torch's error)."""


def run(kind: int, p: float, x, t, reduction: str, want_grad: bool, divisor=None, gscale: float | None = None):
    """(loss, gradient of the reduced loss or None) of contiguous same-shape fp32/fp64 CPU ``x`` and ``t``;
    'mean' divides the sum by the element count, 'sum' by ``divisor`` when given (kl_div's 'batchmean'); the
    gradient is ∂l/∂x times ``gscale`` (default: 1 over that divisor)."""
    n = x.numel()
    grad = torch.empty_like(x) if want_grad else None
    reduced = reduction != "none"
    out = torch.empty((), dtype=x.dtype) if reduced else torch.empty_like(x)
    call, address = _struct()
    call.kind = kind
    call.dtype = _DTYPES[x.dtype]
    call.x = x.data_ptr()
    call.t = t.data_ptr()
    call.g = None if grad is None else grad.data_ptr()
    call.out = None if reduced else out.data_ptr()
    call.loss = out.data_ptr() if reduced else None
    call.n = n
    call.p = p
    div = float(n) if reduction == "mean" else (1.0 if divisor is None else float(divisor))
    call.gscale = 1.0 / div if gscale is None else gscale
    call.ldiv = div
    call.threads = torch.get_num_threads() if n >= PARALLEL_ELEMENTS else 1
    bad = library().losskit_pointwise(address)  # type: ignore[union-attr]
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
        not (_is_compiling() or _functorch_active() or _jit_tracing() is not None)  # first: dynamo folds it
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
        and (_lib if _state == "done" else library()) is not None
    )


def loss(spec, params, x: torch.Tensor, t: torch.Tensor, reduction: str, code, divisor=None) -> torch.Tensor:
    """The loss through the kernel (see :func:`eligible`); ``code`` is ``spec.native(params)``."""
    if x.requires_grad and torch.is_grad_enabled():
        return _apply(x, t, (spec, params, code, reduction, divisor))
    return run(code[0], code[1], x, t, reduction, False, divisor)[0]


def plain(spec, x, t, reduction, params=None, divisor=None):
    """The whole eager call of the common case (see the module docstring), or None."""
    if reduction not in _REDUCTIONS or not eligible(x, t):
        return None
    code = spec.native(params)
    if code is None:
        return None
    try:
        return loss(spec, params, x, t, reduction, code, divisor)
    except _BadProbability:
        return None  # binary cross entropy's general path raises torch's error


# ================================================================================ NLL


class _NllCall(ctypes.Structure):
    """The kernel's ``NllCall``, field for field."""

    _fields_ = [
        ("dtype", ctypes.c_int64),
        ("x", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("w", ctypes.c_void_p),
        ("g", ctypes.c_void_p),
        ("zeroed", ctypes.c_int64),
        ("loss", ctypes.c_void_p),
        ("n", ctypes.c_int64),
        ("c", ctypes.c_int64),
        ("ignore_index", ctypes.c_int64),
        ("mean", ctypes.c_int64),
        ("has_scale", ctypes.c_int64),
        ("gscale", ctypes.c_double),
        ("denom", ctypes.c_double),
    ]


class _BadTarget(IndexError):
    """A target outside [0, C) (the caller's general path raises the clear error)."""


def _nll_struct() -> _NllCall:
    try:
        return _local.nll
    except AttributeError:
        _local.nll = _NllCall()
        return _local.nll


def nll_run(x, y, ignore_index: int, mean: bool, want_grad: bool, gscale: float | None = None):
    """(loss, gradient or None, Σ w_y) of (N, C) contiguous fp32/fp64 log-probabilities and (N,) int64 targets."""
    n, c = x.shape
    # a large gradient is zeroed by torch (its threads share the page faults of a fresh buffer), a small one by
    # the kernel (one memset, no extra call)
    zeroed = want_grad and x.numel() >= PARALLEL_ELEMENTS // 2
    grad = (torch.zeros_like(x) if zeroed else torch.empty_like(x)) if want_grad else None
    out = torch.empty((), dtype=x.dtype)
    call = _nll_struct()
    call.dtype = _DTYPES[x.dtype]
    call.x = x.data_ptr()
    call.y = y.data_ptr()
    call.w = None
    call.g = None if grad is None else grad.data_ptr()
    call.zeroed = 1 if zeroed else 0
    call.loss = out.data_ptr()
    call.n = n
    call.c = c
    call.ignore_index = ignore_index
    call.mean = 1 if mean else 0
    call.has_scale = 0 if gscale is None else 1
    call.gscale = 0.0 if gscale is None else gscale
    bad = library().losskit_nll(ctypes.addressof(call))  # type: ignore[union-attr]
    if bad:
        raise _BadTarget(bad - 1)
    return out, grad, call.denom


class NativeNll(torch.autograd.Function):
    """``state``: (ignore_index, mean)."""

    @staticmethod
    def forward(ctx, x, y, state):
        loss, ctx.grad, ctx.denom = nll_run(x, y, state[0], state[1], True)
        ctx.state = state
        ctx.save_for_backward(x, y)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        ignore_index, mean = ctx.state
        grad, ctx.grad = ctx.grad, None
        x, y = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradient is linear in grad_output, constant in x
            _, unit, _ = nll_run(x, y, ignore_index, mean, True)
            return unit * grad_output, None, None
        if grad is None or float(grad_output) != 1.0:  # again (retain_graph), or scaled as torch scales it
            go = float(grad_output)
            scale = go if not mean else (go / ctx.denom if ctx.denom else 0.0)  # no kept row: nothing to scale
            _, grad, _ = nll_run(x, y, ignore_index, mean, True, scale)
        return grad, None, None


_nll_apply = eager_apply(NativeNll)


def nll_plain(input, target, ignore_index, reduction):
    """The eager NLL of the common case, or None: (N, C) contiguous fp32/fp64 CPU log-probabilities, (N,)
    int64 targets, no class weights, 'mean' or 'sum' (the caller checked the weight and legacy arguments)."""
    if not (
        not (_is_compiling() or _functorch_active() or _jit_tracing() is not None)
        and type(input) is torch.Tensor
        and type(target) is torch.Tensor
        and (input.dtype is torch.float32 or input.dtype is torch.float64)
        and target.dtype is torch.int64
        and input.is_cpu
        and target.is_cpu
        and input.dim() == 2
        and target.dim() == 1
        and input.is_contiguous()
        and target.is_contiguous()
        and not input.is_neg()
        and input.shape[0] == target.shape[0]
        and input.numel() > 0
        and (reduction == "mean" or reduction == "sum")
        and type(ignore_index) is int
        and (_lib if _state == "done" else library()) is not None
    ):
        return None
    mean = reduction == "mean"
    try:
        if input.requires_grad and torch.is_grad_enabled():
            return _nll_apply(input, target, (ignore_index, mean))
        return nll_run(input, target, ignore_index, mean, False)[0]
    except _BadTarget:
        return None


# ================================================================================ multi-label margin


class _MlmCall(ctypes.Structure):
    """The kernel's ``MlmCall``, field for field."""

    _fields_ = [
        ("dtype", ctypes.c_int64),
        ("x", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("g", ctypes.c_void_p),
        ("loss", ctypes.c_void_p),
        ("n", ctypes.c_int64),
        ("c", ctypes.c_int64),
        ("mean", ctypes.c_int64),
        ("has_scale", ctypes.c_int64),
        ("gscale", ctypes.c_double),
    ]


def mlm_run(x, y, mean: bool, want_grad: bool, gscale: float | None = None):
    """(loss, gradient or None) of multilabel_margin_loss on (N, C) contiguous fp32/fp64 ``x`` and int64 ``y``."""
    n, c = x.shape
    grad = torch.empty_like(x) if want_grad else None
    out = torch.empty((), dtype=x.dtype)
    try:
        call = _local.mlm
    except AttributeError:
        call = _local.mlm = _MlmCall()
    call.dtype = _DTYPES[x.dtype]
    call.x = x.data_ptr()
    call.y = y.data_ptr()
    call.g = None if grad is None else grad.data_ptr()
    call.loss = out.data_ptr()
    call.n = n
    call.c = c
    call.mean = 1 if mean else 0
    call.has_scale = 0 if gscale is None else 1
    call.gscale = 0.0 if gscale is None else gscale
    bad = library().losskit_multilabel_margin(ctypes.addressof(call))  # type: ignore[union-attr]
    if bad:
        raise _BadTarget(bad - 1)
    return out, grad


class NativeMultilabelMargin(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, mean):
        loss, ctx.grad = mlm_run(x, y, mean, True)
        ctx.mean = mean
        ctx.save_for_backward(x, y)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        x, y = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: piecewise linear, the gradient is constant in x
            _, unit = mlm_run(x, y, ctx.mean, True)
            return unit * grad_output, None, None
        if grad is None or float(grad_output) != 1.0:  # again (retain_graph), or scaled after summing, as torch
            _, grad = mlm_run(x, y, ctx.mean, True, float(grad_output))
        return grad, None, None


_mlm_apply = eager_apply(NativeMultilabelMargin)


def multilabel_margin_plain(input, target, reduction):
    """The eager multilabel_margin_loss of the common case, or None: (N, C) contiguous fp32/fp64 CPU scores,
    an int64 target of the same shape, 'mean' or 'sum'."""
    if not (
        not (_is_compiling() or _functorch_active() or _jit_tracing() is not None)
        and type(input) is torch.Tensor
        and type(target) is torch.Tensor
        and (input.dtype is torch.float32 or input.dtype is torch.float64)
        and target.dtype is torch.int64
        and input.is_cpu
        and target.is_cpu
        and input.dim() == 2
        and input.is_contiguous()
        and target.is_contiguous()
        and not input.is_neg()
        and input.shape == target.shape
        and input.numel() > 0
        and (reduction == "mean" or reduction == "sum")
        and (_lib if _state == "done" else library()) is not None
    ):
        return None
    mean = reduction == "mean"
    try:
        if input.requires_grad and torch.is_grad_enabled():
            return _mlm_apply(input, target, mean)
        return mlm_run(input, target, mean, False)[0]
    except _BadTarget:
        return None


# ================================================================================ multi-class margin


class _MmCall(ctypes.Structure):
    """The kernel's ``MmCall``, field for field."""

    _fields_ = [
        ("dtype", ctypes.c_int64),
        ("x", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("w", ctypes.c_void_p),
        ("g", ctypes.c_void_p),
        ("loss", ctypes.c_void_p),
        ("n", ctypes.c_int64),
        ("c", ctypes.c_int64),
        ("p", ctypes.c_int64),
        ("margin", ctypes.c_double),
        ("mean", ctypes.c_int64),
        ("has_scale", ctypes.c_int64),
        ("gscale", ctypes.c_double),
    ]


def mm_run(x, y, w, p: int, margin: float, mean: bool, want_grad: bool, gscale: float | None = None):
    """(loss, gradient or None) of multi_margin_loss on (N, C) contiguous fp32/fp64 ``x``, (N,) int64 ``y`` and
    optional contiguous (C,) class weights ``w`` of ``x``'s dtype."""
    n, c = x.shape
    grad = torch.empty_like(x) if want_grad else None
    out = torch.empty((), dtype=x.dtype)
    try:
        call = _local.mm
    except AttributeError:
        call = _local.mm = _MmCall()
    call.dtype = _DTYPES[x.dtype]
    call.x = x.data_ptr()
    call.y = y.data_ptr()
    call.w = None if w is None else w.data_ptr()
    call.g = None if grad is None else grad.data_ptr()
    call.loss = out.data_ptr()
    call.n = n
    call.c = c
    call.p = p
    call.margin = margin
    call.mean = 1 if mean else 0
    call.has_scale = 0 if gscale is None else 1
    call.gscale = 0.0 if gscale is None else gscale
    bad = library().losskit_multi_margin(ctypes.addressof(call))  # type: ignore[union-attr]
    if bad:
        raise _BadTarget(bad - 1)
    return out, grad


class NativeMultiMargin(torch.autograd.Function):
    """``state``: (p, margin, mean)."""

    @staticmethod
    def forward(ctx, x, y, w, state):
        p, margin, mean = state
        loss, ctx.grad = mm_run(x, y, w, p, margin, mean, True)
        ctx.state = state
        ctx.save_for_backward(x, y, w)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        x, y, w = ctx.saved_tensors
        p, margin, mean = ctx.state
        if torch.is_grad_enabled():  # create_graph=True: torch's gradient formula in differentiable ops
            return _mm_grad(x, y, w, p, margin, mean) * grad_output, None, None, None
        if grad is None or float(grad_output) != 1.0:  # again (retain_graph), or scaled after summing, as torch
            _, grad = mm_run(x, y, w, p, margin, mean, True, float(grad_output))
        return grad, None, None, None


def _mm_grad(x, y, w, p: int, margin: float, mean: bool) -> torch.Tensor:
    """∂loss/∂x of multi_margin_loss (grad_output 1) as differentiable torch ops, for create_graph=True."""
    n, c = x.shape
    unit = 1.0 / (n * c) if mean else 1.0 / c
    z = margin - x.gather(1, y.unsqueeze(1)) + x
    other = torch.arange(c, device=x.device) != y.unsqueeze(1)
    h = (z > 0).to(x.dtype) * unit if p == 1 else 2 * unit * z.clamp_min(0)
    h = torch.where(other, h, torch.zeros((), dtype=x.dtype))
    if w is not None:
        h = h * w[y].unsqueeze(1)
    return h - (~other).to(x.dtype) * h.sum(1, keepdim=True)


_mm_apply = eager_apply(NativeMultiMargin)


def multi_margin_plain(input, target, p, margin, weight, reduction):
    """The eager multi_margin_loss of the common case, or None: (N, C) contiguous fp32/fp64 CPU scores, (N,)
    int64 targets, p 1 or 2, a finite float margin, no weight or a contiguous (C,) one of the input's dtype
    that needs no grad, 'mean' or 'sum'."""
    if not (
        not (_is_compiling() or _functorch_active() or _jit_tracing() is not None)
        and type(input) is torch.Tensor
        and type(target) is torch.Tensor
        and (input.dtype is torch.float32 or input.dtype is torch.float64)
        and target.dtype is torch.int64
        and input.is_cpu
        and target.is_cpu
        and input.dim() == 2
        and target.dim() == 1
        and input.is_contiguous()
        and target.is_contiguous()
        and not input.is_neg()
        and input.shape[0] == target.shape[0]
        and input.numel() > 0
        and (reduction == "mean" or reduction == "sum")
        and (p == 1 or p == 2)
        and type(p) is int
        and type(margin) in (float, int)
        and abs(margin) < float("inf")
        and (_lib if _state == "done" else library()) is not None
    ):
        return None
    if weight is not None and not (
        type(weight) is torch.Tensor
        and weight.dtype is input.dtype
        and weight.is_cpu
        and weight.dim() == 1
        and weight.shape[0] == input.shape[1]
        and weight.is_contiguous()
        and not weight.requires_grad
        and not weight.is_neg()
    ):
        return None
    mean = reduction == "mean"
    try:
        if input.requires_grad and torch.is_grad_enabled():
            return _mm_apply(input, target, weight, (p, float(margin), mean))
        return mm_run(input, target, weight, p, float(margin), mean, False)[0]
    except _BadTarget:
        return None
