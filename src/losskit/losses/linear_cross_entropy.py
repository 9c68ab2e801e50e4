"""Fused linear + cross entropy: ``cross_entropy(input @ W.T + b, target)`` without the (N, V) logits.

The public function and module; the chunked engine (the walk over row chunks, its autograd Function and the
chunk size) is :mod:`losskit.engine.linear`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Entry, Problem, class_indices, randn
from .._checks.errors import LossError
from .._tracing import capturing, tracing
from ..engine import small
from ..engine.autocast import lower_precision_under_autocast
from ..engine.autograd import eager_apply, first_order_only
from ..engine.linear import fused_linear_cross_entropy, rows_per_chunk
from ..engine.rows import CrossEntropyOptions
from ._base import WeightedLoss
from .cross_entropy import cross_entropy, traced_cross_entropy


class _SmallLinearCrossEntropy(torch.autograd.Function):
    """A classifier head's batch (N·V up to small.MAX_ELEMENTS): the logits in one matmul, the small CE kernel
    (loss and ∂loss/∂logits in one call), both gradients in two more, all in the forward pass."""

    @staticmethod
    def forward(ctx, h, w, target, opts: CrossEntropyOptions):
        loss, g = small._run(torch.mm(h, w.t()), target, None, opts, True)
        needs = ctx.needs_input_grad
        ctx.grads = (torch.mm(g, w) if needs[0] else None, torch.mm(g.t(), h) if needs[1] else None)
        ctx.opts = opts
        ctx.save_for_backward(h, w, target)
        return loss

    @staticmethod
    @first_order_only
    def backward(ctx, grad_output):
        grads, ctx.grads = ctx.grads, None
        if grads is None:  # a second backward through this graph (retain_graph=True): compute them again
            h, w, target = ctx.saved_tensors
            _, g = small._run(torch.mm(h, w.t()), target, None, ctx.opts, True)
            needs = ctx.needs_input_grad
            grads = (torch.mm(g, w) if needs[0] else None, torch.mm(g.t(), h) if needs[1] else None)
        if float(grad_output) != 1.0:
            grads = tuple(None if x is None else x.mul_(grad_output) for x in grads)
        return grads[0], grads[1], None, None


_small_apply = eager_apply(_SmallLinearCrossEntropy)


def _small(input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing, extras):
    """The loss of a small eager call ((N, H) and (V, H) fp32 contiguous, (N,) int64 targets, no bias, class
    weight or option beyond ignore_index, 'mean'/'sum'), or None for the general path."""
    if not (
        not (capturing())
        and linear_bias is None
        and weight is None
        and not any(extras)
        and (reduction == "mean" or reduction == "sum")
        and (ignore_index is None or type(ignore_index) is int)
        and type(label_smoothing) in (float, int)
        and label_smoothing == 0
        and type(input) is Tensor
        and type(linear_weight) is Tensor
        and type(target) is Tensor
        and input.dtype is torch.float32
        and linear_weight.dtype is torch.float32
        and target.dtype is torch.int64
        and input.dim() == 2
        and linear_weight.dim() == 2
        and target.dim() == 1
        and input.is_cpu
        and linear_weight.is_cpu
        and input.shape[1] == linear_weight.shape[1]
        and input.shape[0] == target.shape[0]
        and 0 < input.shape[0] * linear_weight.shape[0] <= small.MAX_ELEMENTS
        and target.is_contiguous()
        and small._kernel() is not None
    ):
        return None
    opts = CrossEntropyOptions(reduction, -100 if ignore_index is None else ignore_index)
    try:
        if (input.requires_grad or linear_weight.requires_grad) and torch.is_grad_enabled():
            return _small_apply(input, linear_weight, target, opts)
        return small._run(torch.mm(input, linear_weight.t()), target, None, opts, False)[0]
    except LossError:  # a target out of range: the general path raises it under this loss's name
        return None


def _upcast(dtype: torch.dtype):
    """``t -> t.float()`` for the floating tensors of a call in fp16/bf16 (the identity otherwise)."""
    if dtype not in (torch.float16, torch.bfloat16):
        return lambda t: t
    return lambda t: t.float() if t.is_floating_point() and t.dtype in (torch.float16, torch.bfloat16) else t


@lower_precision_under_autocast
def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: object | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    accumulate_grad: bool = False,
) -> torch.Tensor:
    r"""Computes ``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)`` without materialising
    the logits: rows are processed in chunks, the gradients are finished in the forward pass.

    Same signature, defaults and results as torch 2.13's ``F.linear_cross_entropy`` (its reference path),
    fused by default. ``ignore_index=None`` means -100 for class indices; it may not be given with class
    probabilities. The loss is :func:`cross_entropy`'s, with ``x = input @ Wᵀ + b``::

        l_n = (1 - ε)·w_{y_n}·(-log softmax(x_n)_{y_n}) + ε/V·Σ_c w_c·(-log softmax(x_n)_c)

    Peak extra memory is one chunk of logits plus the gradients themselves (in fp32 for fp16/bf16
    inputs, with an fp32 copy of the weight), instead of the ``(N, V)`` logits and their gradient.

    Args:
        input: ``(H,)``, ``(N, H)`` or, beyond torch, any ``(*, H)`` such as ``(B, T, H)``.
        linear_weight: ``(V, H)`` (or torch's K-dimensional ``(V, d1, ..., dK, H)``, computed unfused).
        target: class indices of shape ``()``/``(N,)``/``(*)``, or probabilities ``(*, V)``.
        linear_bias: ``(V,)``. weight: ``(V,)`` class weights. reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        options: torch's ``LinearCrossEntropyOptions``; only its ``batch_chunk_size`` is used (as ``chunk_size``).
        z_loss, softcap: keyword-only extras, as in :func:`cross_entropy`.
        chunk_size: rows per chunk; memory_budget: bytes for one chunk of logits (default: a quarter of
            the input and weight gradients, within 8–64 MiB, rows rounded down to a multiple of 64, and at
            least 128 rows while those are at most a quarter of the gradients). fp16/bf16 inputs are computed
            in fp32 (an fp32 copy of the weight per pass, as torch's chunked path on the CPU) and each result
            is rounded once.
        accumulate_grad: keyword-only, beyond torch: when ``linear_weight.grad`` already exists (gradient
            accumulation, ``zero_grad(set_to_none=False)``) and a fp32/fp64 ``.backward()`` will add to it,
            the weight gradient is added straight into it in backward instead of being made as a ``(V, H)``
            temporary: the weight's size less peak memory, for one more matmul per chunk (the logits are
            computed again in backward). Same results otherwise (see :mod:`losskit.engine.linear`).

    Returns:
        ``'none'``: the target's shape (``(*)``); otherwise a scalar. Same dtype as ``input``.

    Example::

        >>> import torch, losskit.functional as F
        >>> h = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
        >>> W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])
        >>> F.linear_cross_entropy(h, W, torch.tensor([0, 1, 2]), reduction="none")
        tensor([0.4076, 0.7586, 1.8620])
        >>> F.linear_cross_entropy(h, W, torch.tensor([0, 1, 2]), chunk_size=1)  # any chunking, same numbers
        tensor(1.0094)
    """
    loss = _small(
        input,
        linear_weight,
        target,
        linear_bias,
        weight,
        reduction,
        ignore_index,
        label_smoothing,
        (options, z_loss, softcap, chunk_size, memory_budget, accumulate_grad),
    )
    if loss is not None:
        return loss
    fn = "linear_cross_entropy"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "linear_weight", linear_weight)
    _checks.tensor(fn, "target", target)
    linear_bias = _checks.optional_tensor(fn, "linear_bias", linear_bias)
    weight = _checks.optional_tensor(fn, "weight", weight)
    _checks.no_grad(fn, "weight", weight)  # as torch: class weights are not differentiated
    reduction = _reduction.resolve(reduction)
    _checks.floating(fn, "input", input)
    h_features, v, out_features = _checks.linear_layer(fn, input, linear_weight, linear_bias)
    probabilities = _checks.linear_target(fn, input, target, v) if not out_features else False
    if out_features and tuple(target.shape) == (*input.shape[:-1], v, *out_features):
        probabilities = True
    _checks.no_ignore_index(fn, ignore_index, given=probabilities and ignore_index is not None)
    if out_features:  # torch's K-dimensional form: computed the plain way
        # fp16/bf16 in fp32 (the casts' backward rounds each gradient once), as the fused path does
        up = _upcast(input.dtype)
        logits = torch.matmul(up(input), up(linear_weight).reshape(-1, h_features).t()).reshape(-1, v, *out_features)
        if linear_bias is not None:
            logits = logits + up(linear_bias)
        dtype = torch.promote_types(input.dtype, target.dtype) if probabilities else input.dtype
        return cross_entropy(
            logits,
            up(target),
            None if weight is None else up(weight),
            ignore_index=-100 if ignore_index is None else ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            softcap=softcap,
        ).to(dtype)
    lead = input.shape[:-1]
    ignore_index = _checks.integer(fn, "ignore_index", -100 if ignore_index is None else ignore_index)
    eps = _checks.label_smoothing(fn, label_smoothing)
    z_loss = _checks.non_negative(fn, "z_loss", z_loss)
    if softcap is not None:
        softcap = _checks.positive_finite(fn, "softcap", softcap)
    h = input.reshape(-1, h_features)
    if probabilities:
        _checks.probability_target(fn, target)
        rows_t = target.reshape(-1, v)
        _checks.class_weight(fn, weight, v, input)
    else:
        rows_t = target.reshape(-1)
        _checks.class_index_dtype(fn, target)
        _checks.class_weight(fn, weight, v, input)
        if not tracing(input, target):  # traced calls check inside losskit::class_targets
            _checks.class_range(fn, rows_t, v, ignore_index)
    if chunk_size is None and options is not None:
        chunk_size = getattr(options, "batch_chunk_size", None)
    if chunk_size is not None:
        chunk_size = _checks.integer(fn, "chunk_size", chunk_size)
        _checks.positive(fn, "chunk_size", chunk_size)
    if memory_budget is not None:
        memory_budget = _checks.integer(fn, "memory_budget", memory_budget)
        _checks.positive(fn, "memory_budget", memory_budget)
    accumulate_grad = _checks.flag(fn, "accumulate_grad", accumulate_grad)
    opts = CrossEntropyOptions(reduction, ignore_index, eps, z_loss, softcap)
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    if tracing(input, linear_weight, target):
        # the traceable path: the logits as one matmul (the compiler may fuse it), then traced cross entropy
        logits = torch.nn.functional.linear(h, linear_weight, linear_bias)
        loss = traced_cross_entropy(logits, rows_t, weight, opts, fn)
        return loss.reshape(lead) if reduction == "none" else loss
    step = rows_per_chunk(h.shape[0], v, h_features, chunk_size, memory_budget, acc)
    loss = fused_linear_cross_entropy(h, linear_weight, linear_bias, rows_t, weight, opts, step, accumulate_grad)
    if probabilities and target.dtype != input.dtype:  # torch promotes, e.g. float32 input, float64 targets
        loss = loss.to(torch.promote_types(input.dtype, target.dtype))
    return loss.reshape(lead) if reduction == "none" else loss


class LinearCrossEntropyLoss(WeightedLoss):
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
        >>> loss(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), torch.tensor([0, 1, 2])).detach()
        tensor(1.0094)
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
        accumulate_grad: bool = False,
    ) -> None:
        _checks.constructors.linear_cross_entropy_module(weight, num_classes, label_smoothing)
        super().__init__(weight, None, None, reduction)
        self.num_classes = num_classes
        self.out_features = tuple(out_features)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.options = options
        self.accumulate_grad = accumulate_grad  # beyond torch: see linear_cross_entropy
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
        return linear_cross_entropy(
            input,
            self.linear.weight.reshape(*shape, self.linear.in_features),
            target,
            linear_bias=bias,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            options=self.options,
            accumulate_grad=self.accumulate_grad,
        )


def _sample(shape, dtype, gen):
    n, v = shape
    h = randn((n, 5), dtype, gen)
    return Problem((h, randn((v, 5), dtype, gen), class_indices(shape, gen)), 2)


CATALOG = (
    Entry(
        "linear_cross_entropy",
        linear_cross_entropy,
        LinearCrossEntropyLoss,
        "fused",
        _sample,
        aliases=("linear_ce",),
        options=({}, {"label_smoothing": 0.2}, {"ignore_index": 1}),
        legacy=False,
        module_mirrors_function=False,
        extras=("z_loss", "softcap", "chunk_size", "memory_budget", "accumulate_grad"),
    ),
)
