"""losskit's custom operators (``torch.library``): the data-dependent input checks of the traceable path.

A check such as "every class index is in [0, C)" needs the data; written in Python it is a host sync, which
``torch.compile`` and ``torch.export`` cannot trace and ``vmap`` cannot run. As an operator it is one opaque
node with a fake (shape-only) implementation, a vmap rule, and a real implementation that raises losskit's
clear error at run time, under compile and in an exported program alike. Each check returns a tensor the
loss goes on to use, so no compiler drops it as dead code:

* ``losskit::class_targets(target, C, ignore_index, fn)`` → the int64 class indices with ignored entries
  set to 0 (the index a gather can use), after checking the range;
* ``losskit::checked_zero(t, kind, fn, name, bound)`` → a 0-d zero in ``t``'s dtype that the caller adds to
  its loss, after checking every value of ``t`` (``kind``: ``"unit_interval"`` or ``"multilabel"``).
"""

from __future__ import annotations

import torch

from .. import _checks


@torch.library.custom_op("losskit::class_targets", mutates_args=())
def class_targets(target: torch.Tensor, num_classes: int, ignore_index: int, fn: str) -> torch.Tensor:
    _checks.class_range(fn, target, num_classes, ignore_index)
    y = target.long()
    return torch.where(y == ignore_index, torch.zeros_like(y), y)


@class_targets.register_fake
def _(target, num_classes, ignore_index, fn):
    return torch.empty_like(target, dtype=torch.int64)


@class_targets.register_vmap
def _(info, in_dims, target, num_classes, ignore_index, fn):
    return class_targets(target, num_classes, ignore_index, fn), in_dims[0]


@torch.library.custom_op("losskit::checked_zero", mutates_args=())
def checked_zero(t: torch.Tensor, kind: str, fn: str, name: str, bound: int) -> torch.Tensor:
    if kind == "unit_interval":
        _checks.in_unit_interval(fn, name, t)
    else:
        _checks.multilabel_range(fn, t, bound)
    return torch.zeros((), dtype=t.dtype, device=t.device)


@checked_zero.register_fake
def _(t, kind, fn, name, bound):
    return t.new_empty(())


@checked_zero.register_vmap
def _(info, in_dims, t, kind, fn, name, bound):
    return checked_zero(t, kind, fn, name, bound), None
