"""The base classes of losskit's loss modules: torch's own ``_Loss`` / ``_WeightedLoss``.

Subclassing torch's classes keeps framework checks such as ``isinstance(m, torch.nn.modules.loss._Loss)``
true (Lightning, Hugging Face, user code). A module holds options and buffers only; its ``forward`` is one
call of the function of the same name, whose docstring carries the formula.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _reduction


class Loss(torch.nn.modules.loss._Loss):
    """``reduction`` from the legacy ``size_average``/``reduce`` pair when either is given (warning like torch)."""

    reduction: str

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        torch.nn.Module.__init__(self)
        if size_average is not None or reduce is not None:
            self.reduction = _reduction.legacy_get_string(size_average, reduce)
        else:
            self.reduction = reduction


class WeightedLoss(Loss, torch.nn.modules.loss._WeightedLoss):
    """A :class:`Loss` with a class ``weight`` buffer (``state_dict`` keys as torch's)."""

    weight: Tensor | None

    def __init__(self, weight: Tensor | None = None, size_average=None, reduce=None, reduction: str = "mean"):
        Loss.__init__(self, size_average, reduce, reduction)
        self.register_buffer("weight", weight)
