"""Autograd helpers shared by the engines: the accumulation dtype and the first-order-only backward."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch._C import _functions as _autograd_functions

from .._tracing import capturing


def first_order_only(backward):
    """Decorate an autograd ``backward`` whose gradient is precomputed: it runs without building a graph, and
    under ``create_graph=True`` its outputs carry a node that raises a clear error if differentiated again
    (torch's ``once_differentiable`` stays silent when ``grad_output`` does not require grad). ``ctx.create_graph``
    tells the backward which it is (inside, grad mode is off either way)."""

    @functools.wraps(backward)
    def wrapper(ctx, *grad_outputs):
        ctx.create_graph = torch.is_grad_enabled()  # the engine enables grad only for create_graph=True
        if not ctx.create_graph:  # a plain backward
            return backward(ctx, *grad_outputs)
        with torch.no_grad():
            grads = backward(ctx, *grad_outputs)
        return not_differentiable_again(
            type(ctx).__name__.removesuffix("Backward").lstrip("_"), grads, ctx.saved_tensors
        )

    return wrapper


def not_differentiable_again(name: str, grads: tuple, saved: tuple) -> tuple:
    """``grads`` (a backward's results under create_graph=True) behind a node that raises a clear error naming the
    Function ``name`` if they are differentiated again; the ``saved`` inputs that require grad join the node, so
    that the engine meets it on the way back to them."""
    message = (
        f"losskit: {name} computes its gradient in the forward pass and does not support higher-order gradients "
        "(create_graph=True); use the torch reference for double backward"
    ).encode()
    live = [g.detach().requires_grad_() for g in grads if g is not None]
    anchors = [t for t in saved if t is not None and t.requires_grad]
    wrapped = _autograd_functions.DelayedError(message, len(live) + len(anchors))(*live, *anchors)
    outputs = iter(wrapped if isinstance(wrapped, tuple) else (wrapped,))
    return tuple(next(outputs) if g is not None else None for g in grads)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are kept in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def eager_apply(function: type[torch.autograd.Function]) -> Callable:
    """``function.apply`` without ``autograd.Function.apply``'s Python preamble (its setup_context check and the
    unwrapping of torch.func's dead wrappers, ~2 µs a call): torch's own C++ entry, bound to ``function``. Only
    for eager calls made outside every torch.func transform (the callers check); falls back to ``apply``."""
    base = getattr(torch._C, "_FunctionBase", None)
    entry = None if base is None else base.__dict__.get("apply")
    return function.apply if entry is None else entry.__get__(None, function)


def plain_apply(function: type[torch.autograd.Function]) -> Callable:
    """``function.apply`` that enters torch's C++ apply directly (see :func:`eager_apply`) in plain eager calls,
    and takes ``function.apply`` itself while dynamo, ``jit.trace`` or a torch.func transform is active. For a
    Function with a separate ``setup_context`` this skips ``apply``'s binding of default arguments through
    ``inspect.signature`` on every call (tens of µs); callers pass every argument."""
    entry, slow = eager_apply(function), function.apply
    if entry is slow:
        return slow

    def apply(*args):
        if capturing():
            return slow(*args)
        return entry(*args)

    return apply
