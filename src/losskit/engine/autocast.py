"""torch's autocast policy for losses: the losses on torch's fp32 list compute in float32 under autocast.

Under ``torch.autocast`` torch casts the floating inputs of its losses (cross entropy, NLL, MSE, BCE, ...) from
the lower precision (bf16/fp16) to float32 and returns a float32 loss; the gradients flow back through the
cast, so each input's gradient keeps that input's dtype. :func:`fp32_under_autocast` gives losskit's losses the
same behaviour, on CPU and CUDA, and costs one flag check when autocast is off.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeGuard, TypeVar, cast, overload

import torch

F = TypeVar("F", bound=Callable)
_LOWER = (torch.float16, torch.bfloat16)


def _up(value):
    if isinstance(value, torch.Tensor) and value.dtype in _LOWER:
        return value.float()
    return value


def _device(args, kwargs) -> str | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device.type
    return None


def autocast_on(device: str | None) -> TypeGuard[str]:
    return device is not None and torch.is_autocast_enabled(device)


@overload
def fp32_under_autocast(fn: F) -> F: ...


@overload
def fp32_under_autocast(fn: None = None, *, fast: Callable | None = None) -> Callable[[F], F]: ...


def fp32_under_autocast(fn=None, *, fast=None):
    """Decorate a loss on torch's fp32 autocast list (see the module docstring).

    ``fast``, a function of the loss's arguments, is tried first: it returns the loss of the common eager call
    (fp32/fp64 inputs, which autocast leaves alone) or None, and then the loss itself runs."""
    if fn is None:
        return lambda f: fp32_under_autocast(f, fast=fast)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if fast is not None:
            out = fast(*args, **kwargs)
            if out is not None:
                return out
        if not (torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")):
            return fn(*args, **kwargs)
        device = _device(args, kwargs)
        if not autocast_on(device):
            return fn(*args, **kwargs)
        with torch.autocast(device, enabled=False):
            return fn(*(_up(a) for a in args), **{k: _up(v) for k, v in kwargs.items()})

    return wrapper


def lower_precision_under_autocast(fn: F) -> F:
    """Decorate a loss whose first step is a matmul on torch's lower-precision autocast list (linear cross
    entropy): under autocast its floating inputs are cast to the autocast dtype, the loss (accumulated in
    fp32 inside) is returned in float32 and the gradients come back in the inputs' own dtypes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not (torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")):
            return fn(*args, **kwargs)
        device = _device(args, kwargs)
        if not autocast_on(device):
            return fn(*args, **kwargs)
        dtype = torch.get_autocast_dtype(device)

        def down(value, name=None):
            if name in ("target", "weight"):
                return value
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64:
                return value.to(dtype)
            return value

        names = list(_signature(fn))
        args = tuple(down(a, names[i] if i < len(names) else None) for i, a in enumerate(args))
        kwargs = {k: down(v, k) for k, v in kwargs.items()}
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs).float()

    return cast(F, wrapper)


@functools.cache
def _signature(fn) -> tuple[str, ...]:
    import inspect

    return tuple(inspect.signature(fn).parameters)
