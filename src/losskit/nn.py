"""Loss modules with ``torch.nn``'s names, constructor signatures and buffers.

Switch by import: ``import losskit.nn as nn``. Each module holds its options (and ``weight`` /
``pos_weight`` as buffers, so ``state_dict`` keys and ``.to()`` behave as in torch) and calls the
function of the same name in :mod:`losskit.functional`, whose docstring carries the formula.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from . import _reduction, functional

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "LinearCrossEntropyLoss",
    "MSELoss",
    "MarginRankingLoss",
    "MultiLabelMarginLoss",
    "NLLLoss",
    "NLLLoss2d",
    "SmoothL1Loss",
    "SoftMarginLoss",
]


class _Loss(torch.nn.Module):
    reduction: str

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            self.reduction = _reduction.legacy_get_string(size_average, reduce)
        else:
            self.reduction = reduction


class _WeightedLoss(_Loss):
    weight: Tensor | None

    def __init__(self, weight: Tensor | None = None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class CrossEntropyLoss(_WeightedLoss):
    r"""Cross entropy between logits and class indices or probabilities; see :func:`losskit.functional.cross_entropy`.

    ``l_n = (1-ε)·w_{y_n}·(-log softmax(x_n)_{y_n}) + ε/C·Σ_c w_c·(-log softmax(x_n)_c)``; ``'mean'`` divides
    by the weights of the non-ignored targets.

    Shapes: input ``(C)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``; target ``()``, ``(N)`` or ``(N, d1, ..., dK)``
    class indices, or probabilities of the input's shape; output ``()`` or, for ``'none'``, the target's shape
    (without the class dim).

    Example (a per-pixel map: one image, 2 classes, 2×2 pixels)::

        >>> import torch, losskit.nn as nn
        >>> x = torch.tensor([[[[0.8859, -2.0889], [-1.6448, 0.7807]], [[0.7075, -0.7013], [-0.6913, 2.1507]]]])
        >>> y = torch.tensor([[[0, 0], [1, 0]]])
        >>> nn.CrossEntropyLoss(reduction="none")(x, y)
        tensor([[[0.6079, 1.6105],
                 [0.3260, 1.5964]]])
        >>> nn.CrossEntropyLoss(weight=torch.tensor([0.5, 1.5]))(x, y)  # Σ w_y·l / Σ w_y
        tensor(0.7988)
    """

    __constants__ = ["ignore_index", "reduction", "label_smoothing"]
    ignore_index: int
    label_smoothing: float

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


class NLLLoss(_WeightedLoss):
    r"""Negative log-likelihood of log-probabilities; see :func:`losskit.functional.nll_loss`.

    ``l_n = -w_{y_n}·x_{n, y_n}``; ignored rows give 0; ``'mean'`` divides by ``Σ w_{y_n}`` of the kept rows.

    Shapes: input ``(C)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``; target ``()``, ``(N)`` or ``(N, d1, ..., dK)``;
    output ``()`` or, for ``'none'``, the target's shape.

    Example (seed 004's ``ignore_index=0``)::

        >>> import torch, losskit.nn as nn
        >>> logp = torch.tensor([[-0.8671, -0.5453], [-1.4101, -0.2799]])
        >>> nn.NLLLoss(ignore_index=0, reduction="none")(logp, torch.tensor([0, 1]))
        tensor([0.0000, 0.2799])
    """

    __constants__ = ["ignore_index", "reduction"]
    ignore_index: int

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.nll_loss(
            input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction
        )


class NLLLoss2d(NLLLoss):
    r"""Deprecated alias of :class:`NLLLoss` for ``(N, C, H, W)`` maps; warns like torch.

    Example::

        >>> import warnings, torch, losskit.nn as nn
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     loss = nn.NLLLoss2d()
        >>> caught[0].category.__name__
        'FutureWarning'
        >>> loss(torch.zeros(1, 2, 1, 1).log_softmax(1), torch.tensor([[[1]]]))
        tensor(0.6931)
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        warnings.warn(
            "`NLLLoss2d` has been deprecated. Please use `NLLLoss` instead as a drop-in replacement and see "
            "https://pytorch.org/docs/main/nn.html#torch.nn.NLLLoss for more details.",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(weight, size_average, ignore_index, reduce, reduction)


class MSELoss(_Loss):
    r"""Mean squared error ``(x - y)²``; see :func:`losskit.functional.mse_loss`.

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.MSELoss()(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 1.0]))
        tensor(3.3333)
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    r"""Mean absolute error ``|x - y|``; see :func:`losskit.functional.l1_loss`.

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.L1Loss(reduction="sum")(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 1.0]))
        tensor(4.)
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    r"""Smooth L1 ``0.5·d²/β`` if ``|d| < β`` else ``|d| - 0.5·β``; see :func:`losskit.functional.smooth_l1_loss`.

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.SmoothL1Loss(beta=0.5)(torch.tensor([0.1, 2.0]), torch.tensor([0.0, 0.0]))
        tensor(0.8800)
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    r"""Huber ``0.5·d²`` if ``|d| < δ`` else ``δ·(|d| - 0.5·δ)``; see :func:`losskit.functional.huber_loss`.

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.HuberLoss(delta=2.0)(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]))
        tensor(2.0625)
    """

    __constants__ = ["reduction", "delta"]

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class BCELoss(_WeightedLoss):
    r"""Binary cross entropy of probabilities ``-w·(y·log p + (1-y)·log(1-p))``, logs clamped at -100;
    see :func:`losskit.functional.binary_cross_entropy`.

    Shapes: input ``(*)`` in ``[0, 1]``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.BCELoss()(torch.tensor([0.8, 0.4]), torch.tensor([1.0, 0.0]))
        tensor(0.3670)
    """

    __constants__ = ["reduction"]

    def __init__(self, weight: Tensor | None = None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(weight, size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    r"""Binary cross entropy of logits ``-w·(pw·y·log σ(x) + (1-y)·log(1-σ(x)))``, stable;
    see :func:`losskit.functional.binary_cross_entropy_with_logits`.

    ``weight`` and ``pos_weight`` are buffers (``pos_weight`` broadcasts along the class dim).

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))(torch.tensor([[0.0]]), torch.tensor([[1.0]]))
        tensor(1.3863)
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.weight: Tensor | None
        self.pos_weight: Tensor | None

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction
        )


class KLDivLoss(_Loss):
    r"""Kullback-Leibler divergence ``t·(log t - x)`` of log-probabilities ``x``; see
    :func:`losskit.functional.kl_div` (``'batchmean'``, ``log_target``).

    Shapes: input ``(*)``, target ``(*)``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.KLDivLoss(reduction="batchmean", log_target=True)(torch.tensor([[-1.0, -0.5]]),
        ...                                                     torch.tensor([[-0.5, -1.0]]))
        tensor(0.1193)
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", log_target: bool = False) -> None:
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class MarginRankingLoss(_Loss):
    r"""Margin ranking ``max(0, -y·(x1 - x2) + margin)``; see :func:`losskit.functional.margin_ranking_loss`.

    Shapes: input1 ``(N)`` or ``()``, input2 and target alike; output ``()`` or, for ``'none'``, ``(N)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.MarginRankingLoss(margin=0.5)(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]),
        ...                                  torch.tensor([1.0, 1.0]))
        tensor(0.7500)
    """

    __constants__ = ["margin", "reduction"]
    margin: float

    def __init__(self, margin: float = 0.0, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return functional.margin_ranking_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


class MultiLabelMarginLoss(_Loss):
    r"""Multi-label hinge ``Σ_{j∈T} Σ_{i∉T} max(0, 1 - (x_j - x_i)) / C``, targets ending at the first -1;
    see :func:`losskit.functional.multilabel_margin_loss`.

    Shapes: input ``(C)`` or ``(N, C)``, target int64 alike; output ``()`` or, for ``'none'``, ``()``/``(N)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.MultiLabelMarginLoss()(torch.tensor([[0.1, 0.2, 0.4, 0.8]]), torch.tensor([[3, 0, -1, 1]]))
        tensor(0.8500)
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.multilabel_margin_loss(input, target, reduction=self.reduction)


class SoftMarginLoss(_Loss):
    r"""Two-class logistic loss ``log(1 + exp(-y·x))``; see :func:`losskit.functional.soft_margin_loss`.

    Shapes: input ``(*)``, target ``(*)`` in ``{1, -1}``; output ``()`` or, for ``'none'``, ``(*)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.SoftMarginLoss()(torch.tensor([2.0, -0.5]), torch.tensor([1.0, 1.0]))
        tensor(0.5505)
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return functional.soft_margin_loss(input, target, reduction=self.reduction)


class LinearCrossEntropyLoss(_WeightedLoss):
    r"""A linear layer and cross entropy in one, never materialising the logits; see
    :func:`losskit.functional.linear_cross_entropy`.

    Holds ``self.linear`` (a ``torch.nn.Linear(in_features, num_classes·Π out_features)``) and the class
    ``weight`` buffer, so ``state_dict`` keys equal torch 2.13's ``nn.LinearCrossEntropyLoss``.

    Shapes: input ``(H)``, ``(N, H)`` or ``(*, H)``; target ``()``, ``(N)`` or ``(*)`` class indices (or
    ``(*, C)`` probabilities); output ``()`` or, for ``'none'``, the target's shape.

    Example::

        >>> import torch, losskit.nn as nn
        >>> loss = nn.LinearCrossEntropyLoss(2, 3)
        >>> with torch.no_grad():
        ...     _ = loss.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]]))
        >>> loss(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), torch.tensor([0, 1, 2]))
        tensor(1.0094, grad_fn=<_LinearCrossEntropyBackward>)
    """

    __constants__ = ["num_classes", "out_features", "reduction", "ignore_index", "label_smoothing"]

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        out_features: tuple[int, ...] = (),
        bias: bool = False,
        device=None,
        dtype=None,
        reduction: str = "mean",
        weight: Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        options=None,
    ) -> None:
        super().__init__(weight, None, None, reduction)
        self.num_classes = num_classes
        self.out_features = tuple(out_features)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.options = options
        self.linear = torch.nn.Linear(
            in_features,
            math.prod(self.out_features, start=num_classes),
            bias=bias,
            device=device,
            dtype=dtype,
        )

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        shape = (self.num_classes, *self.out_features)
        bias = None if self.linear.bias is None else self.linear.bias.reshape(shape)
        return functional.linear_cross_entropy(
            input,
            self.linear.weight.reshape(*shape, self.linear.in_features),
            target,
            linear_bias=bias,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            options=self.options,
        )
