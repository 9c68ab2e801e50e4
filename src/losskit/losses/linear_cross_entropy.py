"""Fused linear + cross entropy: ``cross_entropy(input @ W.T + b, target)`` without the (N, V) logits.

Where the time goes: three matmuls of ``2·N·V·H`` flops each (logits, ``∂h``, ``∂W``) dominate; the
softmax is a small fraction. So rows with an ignored target are dropped before any matmul, and the
chunk is sized for the weight-gradient matmul (its K is the rows per chunk).

The rows of ``input`` are walked in chunks. Per chunk: ``logits = h @ W.T (+ b)`` (one matmul), the
cross-entropy engine's :class:`~losskit.engine.rows.RowPlan` turns them in place into the row losses
and ``G = ∂loss/∂logits``, then ``∂h = G @ W`` and ``∂W += Gᵀ @ h`` (``∂b += Σ_rows G``). Only one
chunk of logits exists at a time; for fp16/bf16 the weight gradient accumulates in fp32. Backward
only scales the finished gradients by ``grad_output``; for ``reduction='none'`` it recomputes the
chunks with each row's ``grad_output`` folded in (a per-row factor cannot be applied to ``∂W`` after
the fact).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Entry, Problem, class_indices, randn
from .._tracing import tracing
from ..engine.autocast import lower_precision_under_autocast
from ..engine.autograd import acc_dtype, first_order_only
from ..engine.rows import CrossEntropyOptions, RowPlan
from ._base import WeightedLoss
from .cross_entropy import cross_entropy, traced_cross_entropy

# Default size of one chunk of logits: half of the weight gradient it accumulates into, kept within [8, 64] MiB,
# and at least MIN_CHUNK_ROWS rows while that stays within half the weight gradient. The weight gradient
# (V, H) must exist anyway; the weight-gradient matmul (K = rows per chunk) needs a K of a few hundred to run
# near peak. On the CPU kernel the gradient overwrites the chunk's logits, so a chunk costs its own size at
# the peak (the torch-op path, e.g. on CUDA, makes one log-softmax temporary of the same size).
# Measured with the kernel, fp32, 10% of targets ignored (torch unfused in the same run):
#   N=4096, H=1024, V=32000: 256 / 512 rows per chunk 3.41 / 2.89 s (torch 3.40 s);
#   N=2048, H=512, V=256000: 32 / 128 / 256 rows 11.1 / 7.1 / 6.3 s (torch 11.3 s).
MIN_CHUNK_BYTES = 8 << 20

MAX_CHUNK_BYTES = 64 << 20

MIN_CHUNK_ROWS = 128


def rows_per_chunk(n: int, v: int, h: int, chunk_size: int | None, memory_budget: int | None, acc) -> int:
    if chunk_size is not None:
        return max(1, min(n, chunk_size))
    item = torch.finfo(acc).bits // 8
    row_bytes = item * max(v, 1)
    if memory_budget is not None:
        return max(1, min(n, memory_budget // row_bytes))
    half_weight_grad = v * h * item // 2
    budget = min(MAX_CHUNK_BYTES, max(MIN_CHUNK_BYTES, half_weight_grad))
    rows = max(budget // row_bytes, min(MIN_CHUNK_ROWS, half_weight_grad // row_bytes))
    return max(1, min(n, rows))


def _pass(h, w, b, target, weight, opts, needs, step, rows=None, row_scale=None, acc_logits=False):
    """One walk over the row chunks: the reduced loss and the gradients named in ``needs`` (h, W, b, target).

    ``acc_logits`` (fp16/bf16 with torch's ``options``): the logits, the bias added to them and the gradient
    products are fp32, as torch's chunked path keeps them (one fp32 copy of ``W`` per pass).

    With ``rows`` (indices into ``h``), only those rows are computed, ``target`` being theirs; the others get
    a zero gradient. Each chunk of rows is gathered on the way, so no compacted copy of ``h`` is made.
    """
    n, v = target.shape[0], w.shape[0]
    acc = acc_dtype(h.dtype)
    want_grad = any(needs[:3])
    plan = RowPlan(target, weight, opts, n, v, acc, h.device, want_grad)
    plan.exact = row_scale is not None and h.dtype != acc  # low precision: the fp32 path, one rounding
    if needs[3]:  # a probability target that requires grad
        plan.target_grad = torch.empty(target.shape, dtype=target.dtype, device=target.device)
    grad_h = None
    if needs[0]:
        grad_h = torch.empty_like(h) if rows is None else torch.zeros_like(h)
    grad_w = torch.zeros(w.shape, dtype=acc, device=w.device) if needs[1] else None
    grad_b = torch.zeros(v, dtype=acc, device=w.device) if needs[2] else None
    acc_logits = acc_logits and h.dtype != acc
    wl = w.to(acc) if acc_logits else w  # the weight the logits and the input gradient are multiplied with
    bl = None if b is None else b.to(wl.dtype)
    for s in range(0, n, step):
        e = min(n, s + step)
        hc = h[s:e] if rows is None else h.index_select(0, rows[s:e])
        hl = hc.to(wl.dtype)
        logits = torch.mm(hl, wl.t()) if bl is None else torch.addmm(bl, hl, wl.t())
        # the chunk's gradient overwrites its logits
        low = logits.dtype != acc
        in_place = not low or plan.native(logits.dtype) or plan.kernel_ok(logits, logits)
        g = plan.chunk(
            logits,
            s,
            e,
            want_grad,
            out=logits if in_place else None,
            row_scale=None if row_scale is None else row_scale[s:e],
        )
        if want_grad:
            if grad_h is not None:
                if acc_logits:
                    gh = torch.mm(g, wl).to(h.dtype)
                    grad_h[s:e].copy_(gh) if rows is None else grad_h.index_copy_(0, rows[s:e], gh)
                elif rows is None:
                    torch.mm(g.to(w.dtype), w, out=grad_h[s:e])
                else:
                    grad_h.index_copy_(0, rows[s:e], torch.mm(g.to(w.dtype), w))
            if grad_w is not None:
                grad_w.addmm_(g.t().to(acc), hl if acc_logits else hc.to(acc))
            if grad_b is not None:
                grad_b.add_(g.sum(0, dtype=acc))
        # freed before the next chunk's matmul allocates its logits: one chunk at a time at the peak
        del logits, g, hc, hl
    return plan.reduced(h.dtype), grad_h, grad_w, grad_b, plan.target_grad


def _fold(h: torch.Tensor, grad_output: torch.Tensor) -> bool:
    """Whether backward recomputes with ``grad_output`` as each row's scale: fp16/bf16 input (whose gradient
    would otherwise be rounded, then scaled and rounded again) and a CPU ``grad_output`` that is not a power of
    two (1, or a loss scaler's 2^k, scale exactly). The recompute costs the three matmuls again."""
    if h.dtype not in (torch.float16, torch.bfloat16) or grad_output.device.type != "cpu":
        return False
    value = float(grad_output)
    return value != 0.0 and math.isfinite(value) and math.frexp(value)[0] not in (0.5, -0.5)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, b, target, weight, opts: CrossEntropyOptions, step: int, rows=None, acc_logits=False):
        needs = (
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            b is not None and ctx.needs_input_grad[2],
            ctx.needs_input_grad[3] and target.is_floating_point(),
        )
        ctx.opts, ctx.step, ctx.needs, ctx.acc_logits = opts, step, needs, acc_logits
        ctx.save_for_backward(h, w, b, target, weight, rows)
        if opts.reduction == "none" or not any(needs):
            ctx.grads = None  # 'none': per-row grad_output is only known in backward
            loss, *_ = _pass(h, w, b, target, weight, opts, (False,) * 4, step, rows, acc_logits=acc_logits)
            return loss
        loss, *ctx.grads = _pass(h, w, b, target, weight, opts, needs, step, rows, acc_logits=acc_logits)
        return loss

    @staticmethod
    @first_order_only
    def backward(ctx, grad_output):
        h, w, b, target, weight, rows = ctx.saved_tensors
        grads, ctx.grads = ctx.grads, None
        if ctx.opts.reduction == "none":
            row_scale = grad_output.reshape(-1).to(acc_dtype(h.dtype))
            _, *grads = _pass(h, w, b, target, weight, ctx.opts, ctx.needs, ctx.step, rows, row_scale, ctx.acc_logits)
        else:
            if grads is None:  # a second backward through this graph (retain_graph=True): recompute
                _, *grads = _pass(h, w, b, target, weight, ctx.opts, ctx.needs, ctx.step, rows, None, ctx.acc_logits)
            if _fold(h, grad_output):  # fp16/bf16: grad_output folded in before the one rounding, not after
                n = target.shape[0]
                row_scale = grad_output.reshape(1).to(torch.float32).expand(n)
                _, *grads = _pass(
                    h, w, b, target, weight, ctx.opts, ctx.needs, ctx.step, rows, row_scale, ctx.acc_logits
                )
            elif grad_output.device.type != "cpu" or float(grad_output) != 1.0:
                for g in grads:
                    if g is not None:
                        g.mul_(grad_output.to(g.dtype))
        grad_h, grad_w, grad_b, grad_t = grads
        if grad_w is not None:
            grad_w = grad_w.to(w.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(b.dtype)
        return grad_h, grad_w, grad_b, grad_t, None, None, None, None, None


def fused_linear_cross_entropy(
    h, w, b, target, weight, opts: CrossEntropyOptions, step: int, acc_logits: bool = False
) -> torch.Tensor:
    """``h`` (rows, H), ``w`` (V, H), ``b`` (V,) or None, ``target`` (rows,) or (rows, V) probabilities.

    Rows whose target is ``ignore_index`` contribute nothing, so they are dropped before the matmuls
    (whose cost is proportional to the rows kept); ``'none'`` puts zeros back in their place.
    """
    if not torch.is_grad_enabled():  # no_grad / inference_mode: the forward makes no gradients
        h, w = h.detach(), w.detach()
        b = None if b is None else b.detach()
    if not target.is_floating_point():
        kept = target != opts.ignore_index
        if not bool(kept.all()):
            idx = kept.nonzero().squeeze(1)
            loss = _LinearCrossEntropy.apply(h, w, b, target[idx], weight, opts, step, idx, acc_logits)
            if opts.reduction != "none":
                return loss
            return torch.zeros(target.shape[0], dtype=loss.dtype, device=loss.device).index_copy(0, idx, loss)
    return _LinearCrossEntropy.apply(h, w, b, target, weight, opts, step, None, acc_logits)


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
) -> torch.Tensor:
    r"""Computes ``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)`` without materialising
    the logits: rows are processed in chunks, the gradients are finished in the forward pass.

    Same signature, defaults and results as torch 2.13's ``F.linear_cross_entropy`` (its reference path),
    fused by default. ``ignore_index=None`` means -100 for class indices; it may not be given with class
    probabilities. The loss is :func:`cross_entropy`'s, with ``x = input @ Wᵀ + b``::

        l_n = (1 - ε)·w_{y_n}·(-log softmax(x_n)_{y_n}) + ε/V·Σ_c w_c·(-log softmax(x_n)_c)

    Peak extra memory is one chunk of logits plus the gradients themselves (the weight gradient in
    fp32 for fp16/bf16 inputs), instead of the ``(N, V)`` logits and their gradient.

    Args:
        input: ``(H,)``, ``(N, H)`` or, beyond torch, any ``(*, H)`` such as ``(B, T, H)``.
        linear_weight: ``(V, H)`` (or torch's K-dimensional ``(V, d1, ..., dK, H)``, computed unfused).
        target: class indices of shape ``()``/``(N,)``/``(*)``, or probabilities ``(*, V)``.
        linear_bias: ``(V,)``. weight: ``(V,)`` class weights. reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        options: torch's ``LinearCrossEntropyOptions``; only its ``batch_chunk_size`` is used (as ``chunk_size``).
        z_loss, softcap: keyword-only extras, as in :func:`cross_entropy`.
        chunk_size: rows per chunk; memory_budget: bytes for one chunk of logits (default: half of
            the weight gradient, within 8–64 MiB, and at least 128 rows when that fits in it).

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
        logits = torch.matmul(input, linear_weight.reshape(-1, h_features).t()).reshape(-1, v, *out_features)
        if linear_bias is not None:
            logits = logits + linear_bias
        return cross_entropy(
            logits,
            target,
            weight,
            ignore_index=-100 if ignore_index is None else ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            softcap=softcap,
        )
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
    opts = CrossEntropyOptions(reduction, ignore_index, eps, z_loss, softcap)
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    if tracing(input, linear_weight, target):
        # the traceable path: the logits as one matmul (the compiler may fuse it), then traced cross entropy
        logits = torch.nn.functional.linear(h, linear_weight, linear_bias)
        loss = traced_cross_entropy(logits, rows_t, weight, opts, fn)
        return loss.reshape(lead) if reduction == "none" else loss
    step = rows_per_chunk(h.shape[0], v, h_features, chunk_size, memory_budget, acc)
    # torch's chunked path (taken when ``options`` is given and applies) keeps fp16/bf16 logits in fp32
    acc_logits = options is not None and eps == 0.0 and target.dtype == torch.int64
    loss = fused_linear_cross_entropy(h, linear_weight, linear_bias, rows_t, weight, opts, step, acc_logits)
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
        _checks.constructors.linear_cross_entropy_module(weight, num_classes, label_smoothing)
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
        extras=("z_loss", "softcap", "chunk_size", "memory_budget"),
    ),
)
