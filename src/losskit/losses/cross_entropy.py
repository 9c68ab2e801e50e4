"""Cross entropy of logits against class indices or probabilities, fused (see :mod:`losskit.engine.rows`)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, class_indices, randn
from .._tracing import tracing
from ..engine import compiled, ops, rows, small
from ..engine.autocast import fp32_under_autocast
from ..engine.autograd import acc_dtype
from ._base import WeightedLoss


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    inplace: bool = False,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> torch.Tensor:
    r"""Cross entropy between logits and class indices or class probabilities (fused, one pass).

    For class indices ``y`` with class weights ``w`` (ones if None) and smoothing ``ε``::

        l_n = (1 - ε) · w_{y_n} · (-log softmax(x_n)_{y_n}) + ε/C · Σ_c w_c · (-log softmax(x_n)_c)

    rows whose target equals ``ignore_index`` give 0; ``'mean'`` divides ``Σ_n l_n`` by ``Σ_n w_{y_n}``
    over the rows that are not ignored (NaN if every row is ignored). For class probabilities ``t``
    (a float target of the input's shape), with ``t' = (1 - ε)·t + ε/C``::

        l_n = -Σ_c w_c · t'_c · log softmax(x_n)_c

    and ``'mean'`` divides by ``N·d1·…·dK``. The gradient is computed during the forward pass and no
    ``(N, C)`` temporary is kept beyond the gradient itself. On the CPU, fp32/bf16 logits with class
    indices (no ``softcap``) run on losskit's C++ kernel, which reads each row once (see the README's
    "The CPU kernel"); otherwise the logits are walked in cache-sized chunks of torch ops.

    Args:
        input: logits, ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``; float16/bfloat16 accumulate in fp32.
        target: class indices (int64 or uint8) of shape ``()``, ``(N,)`` or ``(N, d1, ..., dK)``,
            or probabilities of the input's shape.
        weight: ``(C,)`` class weights, same dtype as ``input``.
        ignore_index: a target value that is skipped (any int; class-index targets only).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        label_smoothing: ``ε`` in ``[0, 1]`` (a negative value means none, as in torch).
        inplace: keyword-only, beyond torch: write the gradient over the logits' storage, saving the last
            ``(N, C)`` buffer. The logits are overwritten (autograd's version counter turns any later use
            of them by another op's backward into an error); they must not be a leaf that requires grad.
        z_loss: keyword-only, beyond torch: add ``z_loss · lse_n²`` per kept row (PaLM's auxiliary loss,
            ``lse_n = log Σ_c exp(x_{n,c})``), reduced like the loss itself.
        softcap: keyword-only, beyond torch: use ``softcap · tanh(x / softcap)`` as the logits (Gemma 2).

    Returns:
        ``'none'``: the target's shape without the class dim, i.e. ``()``, ``(N,)`` or ``(N, d1, ..., dK)``;
        otherwise a scalar. Same dtype as ``input``.

    Example (seed 003: logits whose softmax is about ``[0.18, 0.18, 0.64]``, true class 2)::

        >>> import torch, losskit.functional as F
        >>> x = torch.tensor([[0.0, 0.0, 1.2685]])
        >>> x.softmax(1)
        tensor([[0.1800, 0.1800, 0.6400]])
        >>> F.cross_entropy(x, torch.tensor([2]))  # -log(0.64)
        tensor(0.4463)
        >>> F.cross_entropy(x, torch.tensor([2]), weight=torch.tensor([1.0, 1.0, 3.0]), label_smoothing=0.1)
        tensor(0.4546)
    """
    if (
        weight is None
        and softcap is None
        and not inplace
        and size_average is None
        and reduce is None
        and type(input) is Tensor
        and type(target) is Tensor
    ):  # the common eager call in a few attribute reads (a classifier's batch costs ~40 µs in torch)
        loss = small.plain(input, target, ignore_index, reduction, label_smoothing, z_loss)
        if loss is not None:
            return loss
    return _cross_entropy(
        input,
        target,
        weight,
        size_average,
        ignore_index,
        reduce,
        reduction,
        label_smoothing,
        inplace=inplace,
        z_loss=z_loss,
        softcap=softcap,
    )


@fp32_under_autocast
def _cross_entropy(
    input,
    target,
    weight,
    size_average,
    ignore_index,
    reduce,
    reduction,
    label_smoothing,
    *,
    inplace,
    z_loss,
    softcap,
):
    fn = "cross_entropy"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    weight = _checks.optional_tensor(fn, "weight", weight)
    _checks.no_grad(fn, "weight", weight)  # as torch: class weights are not differentiated
    ignore_index = _checks.integer(fn, "ignore_index", ignore_index)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.floating(fn, "input", input)
    _checks.at_least_1d(fn, "input", input, "(C,), (N, C), ...")
    eps = _checks.label_smoothing(fn, label_smoothing)
    z_loss = _checks.non_negative(fn, "z_loss", z_loss)
    if softcap is not None:
        softcap = _checks.positive_finite(fn, "softcap", softcap)
    num_classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    if target.shape == input.shape:  # class probabilities, as torch decides: same shape as the input
        _checks.probability_target(fn, target)
        _checks.no_ignore_index(fn, ignore_index, given=ignore_index >= 0)
        _checks.class_weight(fn, weight, num_classes, input)
    else:
        _checks.class_problem(fn, input, target, weight, ignore_index, check_range=False)
    opts = rows.CrossEntropyOptions(reduction, ignore_index, eps, z_loss, softcap, bool(inplace))
    if tracing(input, target, weight):
        return traced_cross_entropy(input, target, weight, opts)
    if not target.is_floating_point():
        x = rows.as_rows(input)
        y = target.reshape(-1)
        if small.eligible(x, y, weight, opts):  # one native call; it checks the targets' range itself
            loss = small.cross_entropy(x, y, weight, opts)
            return loss.reshape(target.shape) if reduction == "none" else loss
        _checks.class_range(fn, target, num_classes, ignore_index)
    return rows.cross_entropy(input, target, weight, opts)


def traced_cross_entropy(input, target, weight, opts: rows.CrossEntropyOptions, fn: str = "cross_entropy"):
    """The traceable path (``torch.compile``, ``torch.export``, ``torch.func``, ``jit.trace``): the engine's
    formulas as plain differentiable ops, the target range checked inside ``losskit::class_targets``."""
    x = rows.as_rows(input)
    probabilities = target.is_floating_point()
    if probabilities:
        t = rows.as_rows(target)
        loss = reference_rows(x, t, None, None, weight, opts)
        if target.dtype != input.dtype:
            loss = loss.to(torch.promote_types(input.dtype, target.dtype))
        out_shape = target.shape[:1] + target.shape[2:] if input.dim() > 1 else torch.Size([])
    else:
        y = target.reshape(-1)
        if compiled.eligible(x, y, weight, opts):  # torch.compile at large sizes: the kernel as one operator
            loss = compiled.cross_entropy(x, y, weight, opts, fn)
            return loss.reshape(target.shape) if opts.reduction == "none" else loss
        y_safe = ops.class_targets(y, x.shape[1], opts.ignore_index, fn)
        loss = reference_rows(x, None, y_safe, y != opts.ignore_index, weight, opts)
        out_shape = target.shape
    return loss.reshape(out_shape) if opts.reduction == "none" else loss


def reference_rows(x, t, y_safe, valid, weight, opts: rows.CrossEntropyOptions):
    """Cross entropy of (rows, C) logits in plain differentiable torch ops, the engine's formulas exactly:
    class indices ``y_safe`` (0 where not ``valid``) or probabilities ``t``; reduced as ``opts`` says, in
    the logits' dtype (sums in at least fp32)."""
    acc = acc_dtype(x.dtype)
    c = x.shape[1]
    z = x.to(acc)
    if opts.softcap is not None:
        z = opts.softcap * torch.tanh(z / opts.softcap)
    w = None if weight is None else weight.to(acc)
    eps = opts.label_smoothing
    kept = None
    if t is not None:
        lp = torch.log_softmax(z, 1)
        lse = None
        tt = t.to(acc)
        if eps > 0:
            tt = tt * (1 - eps) + eps / c
        row = -((tt if w is None else tt * w) * lp).sum(1)
    else:
        # lse - x_y rather than log_softmax: no (rows, C) log-probabilities are made (a compiler fuses the rest)
        kept = valid.to(acc)
        w_y = kept if w is None else w[y_safe] * kept
        # the target's logit through a compare with the class index, not a gather: a compiler fuses it into
        # the row's reduction, and its gradient into the softmax's (no scatter over the gradient)
        hit = torch.arange(c, device=z.device) == y_safe.unsqueeze(1)
        zero = torch.zeros((), dtype=acc, device=z.device)
        # sums over x - max, as log_softmax takes them: no cancellation for large logits (the loss is shift-invariant)
        m = z.detach().amax(1, keepdim=True) if c else z.new_zeros(z.shape[0], 1)
        shifted = z - m
        lse_shifted = torch.logsumexp(shifted, 1)
        lse = lse_shifted + m.squeeze(1)
        row = (lse_shifted - torch.where(hit, shifted, zero).sum(1)) * w_y
        if eps > 0:
            w_sum = c if w is None else w.sum()
            smooth = (shifted.sum(1) if w is None else shifted @ w) - lse_shifted * w_sum
            row = (1 - eps) * row - (eps / c) * smooth * kept
    if opts.z_loss > 0:
        if lse is None:
            lse = torch.logsumexp(z, 1)
        row = row + opts.z_loss * lse * lse * (1 if kept is None else kept)
    if opts.reduction == "none":
        return row.to(x.dtype)
    total = row.sum()
    if opts.reduction == "sum":
        return total.to(x.dtype)
    denom = x.shape[0] if kept is None else w_y.sum()
    return (total / denom).to(x.dtype)


class CrossEntropyLoss(WeightedLoss):
    r"""Cross entropy between logits and class indices or probabilities; see :func:`losskit.functional.cross_entropy`.

    ``l_n = (1-ε)·w_{y_n}·(-log softmax(x_n)_{y_n}) + ε/C·Σ_c w_c·(-log softmax(x_n)_c)``; ``'mean'`` divides
    by the weights of the non-ignored targets.

    Shapes: input ``(C)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``; target ``()``, ``(N)`` or ``(N, d1, ..., dK)``
    class indices, or probabilities of the input's shape; output ``()`` or, for ``'none'``, the target's shape
    (without the class dim). The keyword-only extras ``inplace``, ``z_loss`` and ``softcap`` are those of
    :func:`losskit.functional.cross_entropy`.

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
        *,
        inplace: bool = False,
        z_loss: float = 0.0,
        softcap: float | None = None,
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.inplace = inplace
        self.z_loss = z_loss
        self.softcap = softcap

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            inplace=self.inplace,
            z_loss=self.z_loss,
            softcap=self.softcap,
        )

    def extra_repr(self) -> str:
        extras = {"inplace": self.inplace, "z_loss": self.z_loss, "softcap": self.softcap}
        defaults = {"inplace": False, "z_loss": 0.0, "softcap": None}
        return ", ".join(f"{k}={v}" for k, v in extras.items() if v != defaults[k])


def _sample(shape, dtype, gen):
    return Problem((randn(shape, dtype, gen), class_indices(shape, gen)))


def _plot(z, params):
    others = z.new_zeros(len(z), params["classes"] - 1)
    return cross_entropy(torch.cat([z[:, None], others], 1), z.new_zeros(len(z), dtype=torch.int64), reduction="none")


CATALOG = (
    Entry(
        "cross_entropy",
        cross_entropy,
        CrossEntropyLoss,
        "classification",
        _sample,
        aliases=("ce", "crossentropy"),
        options=({}, {"label_smoothing": 0.2}, {"ignore_index": 1}),
        plot=Curve("score", "cross_entropy (C = {classes}, other logits 0)", _plot),
        extras=("inplace", "z_loss", "softcap"),
    ),
)
