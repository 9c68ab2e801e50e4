"""Losses with two differentiated inputs on losskit's element-wise kernel library (``kernels/pointwise.cpp``):
margin ranking (``input1``, ``input2``) and Gaussian NLL (``input``, ``var``), each in one native call for its
common eager case, both gradients written in the forward pass.

As in :mod:`.native_targets`: each ``*_plain`` returns the loss of an eager call it covers or None (the loss's
general path then validates and raises); backward hands the gradients to autograd, computes them again scaled
by ``grad_output`` in torch's order when that is not 1, and takes torch's formula in differentiable ops under
``create_graph=True``.
"""

from __future__ import annotations

import ctypes

import torch

from . import native_calls, native_pointwise
from .autograd import eager_apply
from .native_targets import _DTYPES, _available, readable

# ================================================================================ margin ranking


class _MrCall(ctypes.Structure):
    """The kernel's ``MrCall``, field for field."""

    _fields_ = [
        ("dtype", ctypes.c_int64),
        ("x1", ctypes.c_void_p),
        ("x2", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("g1", ctypes.c_void_p),
        ("g2", ctypes.c_void_p),
        ("loss", ctypes.c_void_p),
        ("n", ctypes.c_int64),
        ("margin", ctypes.c_double),
        ("mean", ctypes.c_int64),
        ("gscale", ctypes.c_double),
    ]


_MR_FILL = native_calls.packer(_MrCall)


def mr_run(x1, x2, y, margin: float, mean: bool, grads: tuple[bool, bool], gscale: float | None = None):
    """(loss, ∂/∂x1 or None, ∂/∂x2 or None) of margin_ranking_loss on same-shape contiguous tensors."""
    n = x1.numel()
    g1 = torch.empty_like(x1) if grads[0] else None
    g2 = torch.empty_like(x2) if grads[1] else None
    out = native_calls.scalar(x1.dtype)
    _, address = _MR_FILL(
        _DTYPES[x1.dtype],
        x1.data_ptr(),
        x2.data_ptr(),
        y.data_ptr(),
        0 if g1 is None else g1.data_ptr(),
        0 if g2 is None else g2.data_ptr(),
        out.data_ptr(),
        n,
        margin,
        1 if mean else 0,
        (1.0 / n if mean else 1.0) if gscale is None else gscale,
    )
    native_pointwise.library().losskit_margin_ranking(address)  # type: ignore[union-attr]
    return out, g1, g2


class NativeMarginRanking(torch.autograd.Function):
    """``state``: (margin, mean)."""

    @staticmethod
    def forward(ctx, x1, x2, y, state):
        margin, mean = state
        ctx.wants = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        loss, g1, g2 = mr_run(x1, x2, y, margin, mean, ctx.wants)
        ctx.grads, ctx.state = (g1, g2), state
        ctx.save_for_backward(x1, x2, y)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grads, ctx.grads = ctx.grads, None
        x1, x2, y = ctx.saved_tensors
        margin, mean = ctx.state
        if torch.is_grad_enabled():  # create_graph=True: piecewise linear, the gradients are constant in x
            _, g1, g2 = mr_run(x1, x2, y, margin, mean, ctx.wants)
            return (None if g1 is None else g1 * grad_output), (None if g2 is None else g2 * grad_output), None, None
        if grads is None or float(grad_output) != 1.0:  # again (retain_graph), or scaled as torch's mean scales
            go = float(grad_output)
            _, g1, g2 = mr_run(x1, x2, y, margin, mean, ctx.wants, float(grad_output / x1.numel()) if mean else go)
            grads = (g1, g2)
        return grads[0], grads[1], None, None


_mr_apply = eager_apply(NativeMarginRanking)


def margin_ranking_plain(input1, input2, target, margin, reduction):
    """The eager margin_ranking_loss of the common case, or None: three same-shape contiguous fp32/fp64 CPU
    tensors of one dtype (the target needing no grad), a finite float margin, 'mean' or 'sum'."""
    if not (
        readable(input1, input2, target)
        and (input1.dtype is torch.float32 or input1.dtype is torch.float64)
        and input2.dtype is input1.dtype
        and target.dtype is input1.dtype
        and input1.shape == input2.shape
        and input1.shape == target.shape
        and not target.requires_grad
        and input1.numel() > 0
        and (reduction == "mean" or reduction == "sum")
        and type(margin) in (float, int)
        and abs(margin) < float("inf")
        and _available()
    ):
        return None
    mean = reduction == "mean"
    if (input1.requires_grad or input2.requires_grad) and torch.is_grad_enabled():
        return _mr_apply(input1, input2, target, (float(margin), mean))
    return mr_run(input1, input2, target, float(margin), mean, (False, False))[0]


# ================================================================================ Gaussian NLL

SMALL_ELEMENTS = 1 << 16  # above this the loss's chunked path (vectorised, memory-lean) takes it


class _GnCall(ctypes.Structure):
    """The kernel's ``GnCall``, field for field."""

    _fields_ = [
        ("dtype", ctypes.c_int64),
        ("x", ctypes.c_void_p),
        ("t", ctypes.c_void_p),
        ("v", ctypes.c_void_p),
        ("gx", ctypes.c_void_p),
        ("gv", ctypes.c_void_p),
        ("loss", ctypes.c_void_p),
        ("n", ctypes.c_int64),
        ("eps", ctypes.c_double),
        ("full", ctypes.c_int64),
        ("mean", ctypes.c_int64),
        ("gscale", ctypes.c_double),
    ]


class _BadVar(ValueError):
    """A negative (or NaN) variance: the loss's checks raise the clear error."""


_GN_FILL = native_calls.packer(_GnCall)


def gn_run(x, t, v, eps: float, full: bool, mean: bool, grads: tuple[bool, bool], gscale: float | None = None):
    """(loss, ∂/∂input or None, ∂/∂var or None) of gaussian_nll_loss on same-shape contiguous tensors."""
    n = x.numel()
    gx = torch.empty_like(x) if grads[0] else None
    gv = torch.empty_like(v) if grads[1] else None
    out = native_calls.scalar(x.dtype)
    _, address = _GN_FILL(
        _DTYPES[x.dtype],
        x.data_ptr(),
        t.data_ptr(),
        v.data_ptr(),
        0 if gx is None else gx.data_ptr(),
        0 if gv is None else gv.data_ptr(),
        out.data_ptr(),
        n,
        eps,
        1 if full else 0,
        1 if mean else 0,
        (1.0 / n if mean else 1.0) if gscale is None else gscale,
    )
    if native_pointwise.library().losskit_gaussian_nll(address):  # type: ignore[union-attr]
        raise _BadVar
    return out, gx, gv


class NativeGaussianNLL(torch.autograd.Function):
    """``state``: (eps, full, mean)."""

    @staticmethod
    def forward(ctx, x, t, v, state):
        eps, full, mean = state
        ctx.wants = (ctx.needs_input_grad[0], ctx.needs_input_grad[2])
        loss, gx, gv = gn_run(x, t, v, eps, full, mean, ctx.wants)
        ctx.grads, ctx.state = (gx, gv), state
        ctx.save_for_backward(x, t, v)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grads, ctx.grads = ctx.grads, None
        x, t, v = ctx.saved_tensors
        eps, full, mean = ctx.state
        if torch.is_grad_enabled():  # create_graph=True: the gradients' formulas in differentiable ops
            # max(v, eps) with the identity as gradient: below eps the value is eps + (v - v), exactly eps
            vc = torch.where(v.detach() < eps, (v - v.detach()) + eps, v)
            d = x - t
            go = grad_output / x.numel() if mean else grad_output
            gx = d / vc * go if ctx.wants[0] else None
            gv = 0.5 * (1 / vc - d * d / (vc * vc)) * go if ctx.wants[1] else None
            return gx, None, gv, None
        if grads is None or float(grad_output) != 1.0:  # again (retain_graph), or scaled as torch's mean scales
            go = float(grad_output)
            scale = float(grad_output / x.numel()) if mean else go
            _, gx, gv = gn_run(x, t, v, eps, full, mean, ctx.wants, scale)
            grads = (gx, gv)
        return grads[0], None, grads[1], None


_gn_apply = eager_apply(NativeGaussianNLL)


def gaussian_nll_plain(input, target, var, full, eps, reduction):
    """The eager gaussian_nll_loss of the common case, or None: input, target and a var tensor of one shape,
    contiguous fp32/fp64 CPU tensors of one dtype (up to SMALL_ELEMENTS), the target needing no grad, a
    finite float eps, a bool full, 'mean' or 'sum'."""
    if not (
        readable(input, target, var)
        and (input.dtype is torch.float32 or input.dtype is torch.float64)
        and target.dtype is input.dtype
        and var.dtype is input.dtype
        and input.shape == target.shape
        and input.shape == var.shape
        and not target.requires_grad
        and 0 < input.numel() <= SMALL_ELEMENTS
        and (reduction == "mean" or reduction == "sum")
        and type(full) is bool
        and type(eps) in (float, int)
        and abs(eps) < float("inf")
        and _available()
    ):
        return None
    state = (float(eps), full, reduction == "mean")
    try:
        if (input.requires_grad or var.requires_grad) and torch.is_grad_enabled():
            return _gn_apply(input, target, var, state)
        return gn_run(input, target, var, *state, (False, False))[0]
    except _BadVar:
        return None
