"""Logits overwritten by ``cross_entropy(inplace=True)`` become loud: any later read raises.

After an in-place call the logits' storage holds the gradient, not the logits. Autograd's version counter
catches an op that saved the logits *before* the overwrite; nothing in torch catches a read *after* it
(a second loss on the same logits, a regulariser ``z.pow(2).mean()``, an accuracy ``z.argmax(1)``), which would
silently compute on the gradient. So the overwritten tensor and the tensors it is a view of are turned into
:class:`OverwrittenLogits`, whose every torch operation raises a clear error; reading metadata (shape, dtype,
device, ``requires_grad``, ``grad_fn``) still works. The gradient handed to autograd is a separate plain tensor
on the same storage, so nothing downstream sees the subclass. (A view taken *before* the call is a sibling the
loss cannot reach: don't read it after the call.)
"""

from __future__ import annotations

import torch

from .. import _checks

_METADATA = {
    "shape",
    "dtype",
    "device",
    "requires_grad",
    "grad_fn",
    "is_leaf",
    "grad",
    "_base",
    "_version",
    "layout",
    "ndim",
    "names",
    "is_sparse",
    "is_quantized",
    "is_meta",
    "is_cuda",
    "is_cpu",
    "size",
    "dim",
    "numel",
    "stride",
    "data_ptr",
    "element_size",
    "is_contiguous",
    "storage_offset",
    "__hash__",
    "__eq__",  # identity comparisons in containers
}


def _name(func) -> str:
    owner = getattr(func, "__self__", None)  # a property getter: <slot wrapper '__get__' of 'shape'>
    if getattr(func, "__name__", "") == "__get__" and owner is not None:
        return getattr(owner, "__name__", "")
    return getattr(func, "__name__", "")


class OverwrittenLogits(torch.Tensor):
    """Logits whose storage now holds their cross-entropy gradient (see the module docstring)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if _name(func) in _METADATA:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))
        _checks.overwritten_logits(_name(func) or str(func))


def poison(t: torch.Tensor) -> None:
    """Mark ``t`` and the tensors it is a view of as overwritten."""
    view: torch.Tensor | None = t
    while view is not None:
        if type(view) is torch.Tensor:
            view.__class__ = OverwrittenLogits
        view = view._base


def storage(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor on the storage of overwritten logits ``t``: the gradient, for code that wants it."""
    with torch._C.DisableTorchFunctionSubclass():
        plain = t.detach()
    plain.__class__ = torch.Tensor
    return plain
