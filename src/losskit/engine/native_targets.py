"""Class-index losses on losskit's element-wise kernel library (``kernels/pointwise.cpp``): NLL, multi-label
margin and multi-class margin, each in one native call for its common eager case.

Each ``*_plain`` function returns the loss of an eager call it covers (plain contiguous fp32/fp64 CPU tensors,
'mean' or 'sum', not traced) or None, and the loss's general path then validates and raises the clear errors.
The forward writes the gradient of the reduced loss; backward hands it to autograd, or computes it again
scaled by ``grad_output`` in torch's order when that is not 1, and uses torch's formula in differentiable ops
under ``create_graph=True``. The library is loaded by :mod:`.native_pointwise`.
"""

from __future__ import annotations

import ctypes

import torch

from .. import _checks
from .._tracing import capturing
from . import native_calls, native_pointwise
from .autograd import eager_apply
from .native_pointwise import PARALLEL_ELEMENTS

_DTYPES = {torch.float32: 0, torch.float64: 1}
_TENSOR = torch.Tensor
_INF = float("inf")


def _available() -> bool:
    loader = native_pointwise._loader
    return (loader.lib if loader.state == "done" else loader.library()) is not None


def readable(*tensors) -> bool:
    """An eager call (no dynamo, ``jit.trace`` or torch.func transform; checked first, dynamo folds it) whose
    tensors a kernel may read through their data pointers: plain contiguous CPU tensors, no lazy negation."""
    if capturing():
        return False
    for t in tensors:  # noqa: SIM110 - a loop, not all(<generator>): a third of this check's cost
        if not (type(t) is _TENSOR and t.is_cpu and t.is_contiguous() and not t.is_neg()):
            return False
    return True


def _class_indices(input, target) -> bool:
    """(N, C) fp32/fp64 scores and (N,) int64 class indices, readable, N·C > 0, the library loaded."""
    return (
        readable(input, target)
        and (input.dtype is torch.float32 or input.dtype is torch.float64)
        and target.dtype is torch.int64
        and input.dim() == 2
        and target.dim() == 1
        and input.shape[0] == target.shape[0]
        and input.numel() > 0
        and _available()
    )


# ================================================================================ NLL


class _NllCall(ctypes.Structure):
    """The kernel's ``NllCall``, field for field."""

    _fields_ = [
        ("dtype", ctypes.c_int64),
        ("x", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("w", ctypes.c_void_p),
        ("g", ctypes.c_void_p),
        ("threads", ctypes.c_int64),
        ("loss", ctypes.c_void_p),
        ("n", ctypes.c_int64),
        ("c", ctypes.c_int64),
        ("ignore_index", ctypes.c_int64),
        ("mean", ctypes.c_int64),
        ("has_scale", ctypes.c_int64),
        ("gscale", ctypes.c_double),
        ("denom", ctypes.c_double),
    ]


_NLL_FILL = native_calls.packer(_NllCall)


class _BadTarget(IndexError):
    """A target outside [0, C) (the caller's general path raises the clear error)."""


def nll_run(x, y, ignore_index: int, mean: bool, want_grad: bool, gscale: float | None = None):
    """(loss, gradient or None, Σ w_y) of (N, C) contiguous fp32/fp64 log-probabilities and (N,) int64 targets."""
    n, c = x.shape
    grad = torch.empty_like(x) if want_grad else None  # the kernel zeroes it, row chunks over its pool
    out = native_calls.scalar(x.dtype)
    call, address = _NLL_FILL(
        _DTYPES[x.dtype],
        x.data_ptr(),
        y.data_ptr(),
        0,
        0 if grad is None else grad.data_ptr(),
        torch.get_num_threads() if want_grad and x.numel() >= PARALLEL_ELEMENTS else 1,
        out.data_ptr(),
        n,
        c,
        ignore_index,
        1 if mean else 0,
        0 if gscale is None else 1,
        0.0 if gscale is None else gscale,
        0.0,
    )
    bad = native_pointwise._loader.lib.losskit_nll(address)  # type: ignore[union-attr]  # callers checked
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
        grad, ctx.grad = ctx.grad, None
        if grad is not None and not torch.is_grad_enabled() and float(grad_output) == 1:  # loss.backward()
            return grad, None, None
        ignore_index, mean = ctx.state
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
        _class_indices(input, target)
        and (reduction == "mean" or reduction == "sum")
        and type(ignore_index) is int
        and _checks.fits_int64(ignore_index)
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


_MLM_FILL = native_calls.packer(_MlmCall)


def mlm_run(x, y, mean: bool, want_grad: bool, gscale: float | None = None):
    """(loss, gradient or None) of multilabel_margin_loss on (N, C) contiguous fp32/fp64 ``x`` and int64 ``y``."""
    n, c = x.shape
    grad = torch.empty_like(x) if want_grad else None
    out = native_calls.scalar(x.dtype)
    _, address = _MLM_FILL(
        _DTYPES[x.dtype],
        x.data_ptr(),
        y.data_ptr(),
        0 if grad is None else grad.data_ptr(),
        out.data_ptr(),
        n,
        c,
        1 if mean else 0,
        0 if gscale is None else 1,
        0.0 if gscale is None else gscale,
    )
    bad = native_pointwise.library().losskit_multilabel_margin(address)  # type: ignore[union-attr]
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
        if grad is not None and not torch.is_grad_enabled() and float(grad_output) == 1:  # loss.backward()
            return grad, None, None
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
        readable(input, target)
        and (input.dtype is torch.float32 or input.dtype is torch.float64)
        and target.dtype is torch.int64
        and input.dim() == 2
        and input.shape == target.shape
        and input.numel() > 0
        and (reduction == "mean" or reduction == "sum")
        and _available()
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


_MM_FILL = native_calls.packer(_MmCall)


def mm_run(x, y, w, p: int, margin: float, mean: bool, want_grad: bool, gscale: float | None = None):
    """(loss, gradient or None) of multi_margin_loss on (N, C) contiguous fp32/fp64 ``x``, (N,) int64 ``y`` and
    optional contiguous (C,) class weights ``w`` of ``x``'s dtype."""
    n, c = x.shape
    grad = torch.empty_like(x) if want_grad else None
    out = native_calls.scalar(x.dtype)
    _, address = _MM_FILL(
        _DTYPES[x.dtype],
        x.data_ptr(),
        y.data_ptr(),
        0 if w is None else w.data_ptr(),
        0 if grad is None else grad.data_ptr(),
        out.data_ptr(),
        n,
        c,
        p,
        margin,
        1 if mean else 0,
        0 if gscale is None else 1,
        0.0 if gscale is None else gscale,
    )
    bad = native_pointwise._loader.lib.losskit_multi_margin(address)  # type: ignore[union-attr]  # checked
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
        if grad is not None and not torch.is_grad_enabled() and float(grad_output) == 1:  # loss.backward()
            return grad, None, None, None
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
        _class_indices(input, target)
        and (reduction == "mean" or reduction == "sum")
        and (p == 1 or p == 2)
        and type(p) is int
        and type(margin) in (float, int)
        and abs(margin) < _INF
    ):
        return None
    if weight is not None and not (
        readable(weight)
        and weight.dtype is input.dtype
        and weight.dim() == 1
        and weight.shape[0] == input.shape[1]
        and not weight.requires_grad
    ):
        return None
    mean = reduction == "mean"
    try:
        if input.requires_grad and torch.is_grad_enabled():
            return _mm_apply(input, target, weight, (p, float(margin), mean))
        return mm_run(input, target, weight, p, float(margin), mean, False)[0]
    except _BadTarget:
        return None
