"""Loss functions with ``torch.nn.functional``'s names, signatures and results.

Switch by import: ``import losskit.functional as F``. Each function checks its input (bad input
raises a :class:`losskit.LossError` naming the argument), picks a path, and returns the loss;
the math lives in the family modules. Shapes: ``N`` batch, ``C`` classes, ``*`` any extra dims.
Reductions: ``'none'`` keeps the per-element (or per-sample) loss, ``'sum'`` adds it up, ``'mean'``
averages it (the weighted losses divide by the weights, as documented per function). The legacy
``size_average``/``reduce`` pair overrides ``reduction`` and warns, exactly as in torch.
"""

from __future__ import annotations

import warnings

import torch

from . import (
    _binary,
    _checks,
    _divergence,
    _linear_cross_entropy,
    _ranking,
    _reduction,
    _regression,
)
from . import _nll as _nll_engine
from .engine import pointwise as _elementwise
from .engine import rows as _cross_entropy

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "linear_cross_entropy",
    "margin_ranking_loss",
    "mse_loss",
    "multilabel_margin_loss",
    "nll_loss",
    "smooth_l1_loss",
    "soft_margin_loss",
]


# ----------------------------------------------------------------------------------------- helpers


def _class_problem(fn, input, target, weight, ignore_index):
    """Checks shared by cross_entropy and nll_loss for class-index targets."""
    _checks.class_target(fn, input, target)
    num_classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    _checks.class_weight(fn, weight, num_classes, input)
    _checks.class_range(fn, target, num_classes, ignore_index)


def _pointwise_pair(fn: str, input, target, *, warn_broadcast: bool = True):
    """Check two float tensors and broadcast them, warning like torch when their sizes differ."""
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    _checks.floating(fn, "input", input)
    _checks.floating(fn, "target", target)
    if warn_broadcast and target.shape != input.shape:
        warnings.warn(
            f"Using a target size ({target.size()}) that is different to the input size ({input.size()}). "
            "This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            UserWarning,
            stacklevel=3,
        )
    shape = _checks.broadcast_shape(fn, ("input", "target"), input, target)
    if input.shape == target.shape:
        return input, target
    return input.expand(shape), target.expand(shape)


def _elementwise_weight(fn: str, weight, input):
    """torch 2.13's optional per-element ``weight`` of the regression losses: same size as ``input``."""
    weight = _checks.optional_tensor(fn, "weight", weight)
    if weight is not None and weight.shape != input.shape:
        raise _checks.LossValueError(
            f"{fn}(): 'weight' {_checks.shape(weight)} and 'input' {_checks.shape(input)} must have the same size"
        )
    return weight


def _reduce_weighted(loss, weight, reduction: str, mean_over_weights: bool):
    """Reduce an element-wise loss, optionally multiplied by ``weight``: with ``mean_over_weights`` the mean
    divides by ``Σ weight`` (torch's mse/l1), otherwise by the element count (torch's huber)."""
    if weight is None:
        return _reduction.reduce_loss(loss, reduction)
    loss = loss * weight
    if reduction == "mean" and mean_over_weights:
        return loss.sum() / weight.sum()
    return _reduction.reduce_loss(loss, reduction)


def _elementwise_loss(
    spec, reference, input, target, weight, reduction, params=None, *, mean_over_weights=False, extras=()
):
    """Route an element-wise loss: the chunked engine when it covers the call exactly, else the plain
    PyTorch ``reference()`` (element-wise loss) differentiated by autograd and reduced here."""
    if _elementwise.fast_path_ok(input, target, weight, *extras):
        return _elementwise.pointwise(spec, input, target, weight, params, reduction, mean_over_weights)
    return _reduce_weighted(reference(), weight, reduction, mean_over_weights)


# ------------------------------------------------------------------------------------ cross entropy


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
    fn = "cross_entropy"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    weight = _checks.optional_tensor(fn, "weight", weight)
    ignore_index = _checks.integer(fn, "ignore_index", ignore_index)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.floating(fn, "input", input)
    if input.dim() == 0:
        raise _checks.LossValueError(f"{fn}(): 'input' must have 1 or more dimensions (C,), (N, C), ..., got shape []")
    eps = _checks.label_smoothing(fn, label_smoothing)
    z_loss = _checks.non_negative(fn, "z_loss", z_loss)
    if softcap is not None:
        softcap = _checks.positive_finite(fn, "softcap", softcap)
    num_classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    if target.shape == input.shape:  # class probabilities, as torch decides: same shape as the input
        if not target.is_floating_point():
            raise _checks.LossTypeError(
                f"{fn}(): a 'target' of the input's shape {_checks.shape(input)} holds class probabilities and "
                f"must be floating point, got {target.dtype}"
            )
        if ignore_index >= 0:
            raise _checks.LossValueError(
                f"{fn}(): ignore_index={ignore_index} is not supported for class-probability targets"
            )
        _checks.class_weight(fn, weight, num_classes, input)
    else:
        _class_problem(fn, input, target, weight, ignore_index)
    opts = _cross_entropy.CrossEntropyOptions(reduction, ignore_index, eps, z_loss, softcap, bool(inplace))
    return _cross_entropy.cross_entropy(input, target, weight, opts)


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
    reduction = _reduction.resolve(reduction)
    _checks.floating(fn, "input", input)
    if input.dim() < 1:
        raise _checks.LossValueError(f"{fn}(): 'input' must be (H,), (N, H) or (*, H), got shape []")
    if linear_weight.dim() < 2:
        raise _checks.LossValueError(
            f"{fn}(): 'linear_weight' must be (V, H), got shape {_checks.shape(linear_weight)}"
        )
    h_features, v = input.shape[-1], linear_weight.shape[0]
    out_features = tuple(linear_weight.shape[1:-1])
    if linear_weight.shape[-1] != h_features:
        raise _checks.LossValueError(
            f"{fn}(): 'input' {_checks.shape(input)} and 'linear_weight' {_checks.shape(linear_weight)} must "
            f"share the last dimension (in_features), got {h_features} and {linear_weight.shape[-1]}"
        )
    _checks.same_dtype(fn, "linear_weight", linear_weight, input)
    if linear_bias is not None:
        if tuple(linear_bias.shape) != (v, *out_features):
            raise _checks.LossValueError(
                f"{fn}(): 'linear_bias' must have shape {[v, *out_features]}, got {_checks.shape(linear_bias)}"
            )
        _checks.same_dtype(fn, "linear_bias", linear_bias, input)
    if tuple(target.shape) == (*input.shape[:-1], v, *out_features) and ignore_index is not None:
        raise _checks.LossValueError(f"{fn}(): ignore_index cannot be given when 'target' holds class probabilities")
    if out_features:  # torch's K-dimensional form: computed the plain way
        if input.dim() != 2:
            raise _checks.LossValueError(
                f"{fn}(): a K-dimensional 'linear_weight' {_checks.shape(linear_weight)} needs batched input "
                f"(N, {h_features}), got {_checks.shape(input)}"
            )
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
    probabilities = tuple(target.shape) == (*lead, v)
    if probabilities and ignore_index is not None:
        raise _checks.LossValueError(f"{fn}(): ignore_index cannot be given when 'target' holds class probabilities")
    ignore_index = _checks.integer(fn, "ignore_index", -100 if ignore_index is None else ignore_index)
    eps = _checks.label_smoothing(fn, label_smoothing)
    z_loss = _checks.non_negative(fn, "z_loss", z_loss)
    if softcap is not None:
        softcap = _checks.positive_finite(fn, "softcap", softcap)
    h = input.reshape(-1, h_features)
    if probabilities:
        if not target.is_floating_point():
            raise _checks.LossTypeError(
                f"{fn}(): class-probability 'target' must be floating point, got {target.dtype}"
            )
        rows_t = target.reshape(-1, v)
        _checks.class_weight(fn, weight, v, input)
    else:
        if tuple(target.shape) != tuple(lead):
            raise _checks.LossValueError(
                f"{fn}(): 'target' must have shape {list(lead)} (class indices) or {[*lead, v]} (probabilities) "
                f"for 'input' {_checks.shape(input)}, got {_checks.shape(target)}"
            )
        rows_t = target.reshape(-1)
        _checks.class_index_dtype(fn, target)
        _checks.class_weight(fn, weight, v, input)
        _checks.class_range(fn, rows_t, v, ignore_index)
    if chunk_size is None and options is not None:
        chunk_size = getattr(options, "batch_chunk_size", None)
    if chunk_size is not None:
        chunk_size = _checks.integer(fn, "chunk_size", chunk_size)
        _checks.positive(fn, "chunk_size", chunk_size)
    if memory_budget is not None:
        memory_budget = _checks.integer(fn, "memory_budget", memory_budget)
        _checks.positive(fn, "memory_budget", memory_budget)
    opts = _cross_entropy.CrossEntropyOptions(reduction, ignore_index, eps, z_loss, softcap)
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    step = _linear_cross_entropy.rows_per_chunk(h.shape[0], v, h_features, chunk_size, memory_budget, acc)
    loss = _linear_cross_entropy.linear_cross_entropy(h, linear_weight, linear_bias, rows_t, weight, opts, step)
    if probabilities and target.dtype != input.dtype:  # torch promotes, e.g. float32 input, float64 targets
        loss = loss.to(torch.promote_types(input.dtype, target.dtype))
    return loss.reshape(lead) if reduction == "none" else loss


def nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Negative log-likelihood of log-probabilities: ``l_n = -w_{y_n} · x_{n, y_n}``.

    Rows whose target equals ``ignore_index`` give 0; ``'mean'`` divides ``Σ_n l_n`` by ``Σ_n w_{y_n}`` over
    the rows that are not ignored (NaN if every row is ignored). ``cross_entropy(x, y)`` equals
    ``nll_loss(log_softmax(x, 1), y)`` (seed 000's identity).

    Args:
        input: log-probabilities, ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``.
        target: class indices (int64 or uint8) of shape ``()``, ``(N,)`` or ``(N, d1, ..., dK)``.
        weight: ``(C,)`` class weights. ignore_index: any int. reduction: ``'none'`` | ``'mean'`` | ``'sum'``.

    Returns:
        ``'none'``: the target's shape; otherwise a scalar.

    Example (seed 004's weights ``[0.5, 1.5]``)::

        >>> import torch, losskit.functional as F
        >>> logp = torch.tensor([[-1.1011, 0.6231], [0.2384, -0.3223]]).log_softmax(1)
        >>> F.nll_loss(logp, torch.tensor([0, 1]), weight=torch.tensor([0.5, 1.5]), reduction="none")
        tensor([0.9441, 1.5184])
        >>> F.nll_loss(logp, torch.tensor([0, 1]), weight=torch.tensor([0.5, 1.5]))  # (0.9441 + 1.5184) / 2
        tensor(1.2313)
    """
    fn = "nll_loss"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    weight = _checks.optional_tensor(fn, "weight", weight)
    ignore_index = _checks.integer(fn, "ignore_index", ignore_index)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.floating(fn, "input", input)
    _class_problem(fn, input, target, weight, ignore_index)
    return _nll_engine.nll_loss(input, target, weight, reduction, ignore_index)


# --------------------------------------------------------------------------------------- regression


def mse_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Mean squared error: ``l = (x - y)²`` element-wise (``w·(x - y)²`` with ``weight``).

    ``input`` and ``target`` broadcast (with torch's warning when their sizes differ). With ``weight``
    (same size as ``input``), ``'mean'`` is ``Σ w·l / Σ w``, as in torch 2.13.

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.mse_loss(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 1.0]))
        tensor(3.3333)
    """
    fn = "mse_loss"
    weight = _elementwise_weight(fn, weight, _checks.tensor(fn, "input", input))
    input, target = _pointwise_pair(fn, input, target)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    return _elementwise_loss(
        _regression.SQUARED,
        lambda: _regression.squared_error(input, target),
        input,
        target,
        weight,
        reduction,
        mean_over_weights=True,
    )


def l1_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Mean absolute error: ``l = |x - y|`` element-wise (``w·|x - y|`` with ``weight``).

    Broadcasting and ``weight`` as in :func:`mse_loss` (weighted ``'mean'`` is ``Σ w·l / Σ w``).

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.l1_loss(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 1.0]))
        tensor(1.3333)
    """
    fn = "l1_loss"
    weight = _elementwise_weight(fn, weight, _checks.tensor(fn, "input", input))
    input, target = _pointwise_pair(fn, input, target)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    return _elementwise_loss(
        _regression.ABSOLUTE,
        lambda: _regression.absolute_error(input, target),
        input,
        target,
        weight,
        reduction,
        mean_over_weights=True,
    )


def smooth_l1_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> torch.Tensor:
    r"""Smooth L1: ``l = 0.5·d²/β`` if ``|d| < β`` else ``|d| - 0.5·β``, with ``d = x - y``.

    ``beta = 0`` is exactly :func:`l1_loss` (value and gradient); a negative ``beta`` raises.

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.smooth_l1_loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]), reduction="none")
        tensor([0.1250, 2.5000])
    """
    fn = "smooth_l1_loss"
    input, target = _pointwise_pair(fn, input, target)
    beta = _checks.non_negative(fn, "beta", beta)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    return _elementwise_loss(
        _regression.SMOOTH_L1, lambda: _regression.smooth_l1(input, target, beta), input, target, None, reduction, beta
    )


def huber_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Huber: ``l = 0.5·d²`` if ``|d| < δ`` else ``δ·(|d| - 0.5·δ)``, with ``d = x - y``; ``δ > 0``.

    With ``weight`` (same size as ``input``), ``'mean'`` is the plain mean of ``w·l`` (torch 2.13's rule).
    Equals ``δ · smooth_l1_loss(..., beta=δ)``.

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.huber_loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]), delta=2.0, reduction="none")
        tensor([0.1250, 4.0000])
    """
    fn = "huber_loss"
    weight = _elementwise_weight(fn, weight, _checks.tensor(fn, "input", input))
    input, target = _pointwise_pair(fn, input, target)
    delta = _checks.positive(fn, "delta", delta)
    reduction = _reduction.resolve(reduction)
    target = target.to(input.dtype)  # torch's huber_loss returns the input's dtype
    return _elementwise_loss(
        _regression.HUBER, lambda: _regression.huber(input, target, delta), input, target, weight, reduction, delta
    )


# ------------------------------------------------------------------------------------------- binary


def binary_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Binary cross entropy of probabilities: ``l = -w·(y·log p + (1-y)·log(1-p))``.

    Each log is clamped at -100, so ``p`` = 0 or 1 gives a finite loss; the gradient is torch's,
    ``w·(p - y) / max(p·(1-p), 1e-12)``. ``input`` and ``target`` must have the same size and lie in
    ``[0, 1]``; ``weight`` broadcasts to the target's shape.

    Shapes: input ``(*)``, target ``(*)``; ``'none'`` returns ``(*)``, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.binary_cross_entropy(torch.tensor([0.8, 0.4, 0.0]), torch.tensor([1.0, 0.0, 1.0]), reduction="none")
        tensor([  0.2231,   0.5108, 100.0000])
    """
    fn = "binary_cross_entropy"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    weight = _checks.optional_tensor(fn, "weight", weight)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.floating(fn, "input", input)
    _checks.floating(fn, "target", target)
    _checks.same_size(fn, input, target)
    _checks.same_dtype(fn, "target", target, input)
    _checks.no_grad(fn, "weight", weight)
    if weight is not None:
        weight = weight.to(input.dtype)
        shape = _checks.broadcast_shape(fn, ("weight", "target"), weight, target)
        if shape != target.shape:
            raise _checks.LossValueError(
                f"{fn}(): 'weight' {_checks.shape(weight)} must broadcast to the target's shape {_checks.shape(target)}"
            )
    _checks.in_unit_interval(fn, "input", input.detach())
    _checks.in_unit_interval(fn, "target", target.detach())
    if _elementwise.fast_path_ok(input, target, weight):
        return _elementwise.pointwise(_binary.BCE, input, target, weight, None, reduction)
    full_weight = None if weight is None else weight.expand(target.shape)
    return _reduction.reduce_loss(_binary.binary_cross_entropy(input, target, full_weight), reduction)


def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Binary cross entropy of logits: ``l = -w·(pw·y·log σ(x) + (1-y)·log(1-σ(x)))``, numerically stable.

    ``pos_weight`` (``pw``) weighs the positive term and broadcasts along the last (class) dimension,
    e.g. ``(C,)`` for input ``(N, C)``; ``weight`` broadcasts to the input's shape.

    Shapes: input ``(*)``, target ``(*)``; ``'none'`` returns ``(*)``, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> x, y = torch.tensor([[2.0, -1.0], [300.0, -300.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> F.binary_cross_entropy_with_logits(x, y, reduction="none")
        tensor([[1.2693e-01, 3.1326e-01],
                [3.0000e+02, 3.0000e+02]])
        >>> F.binary_cross_entropy_with_logits(x, y, pos_weight=torch.tensor([3.0, 1.0]))
        tensor(150.1735)
    """
    fn = "binary_cross_entropy_with_logits"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    weight = _checks.optional_tensor(fn, "weight", weight)
    pos_weight = _checks.optional_tensor(fn, "pos_weight", pos_weight)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.floating(fn, "input", input)
    _checks.floating(fn, "target", target)
    _checks.same_size(fn, input, target)
    _checks.no_grad(fn, "weight", weight)
    input = input.to(target.dtype)  # torch's result follows the target's dtype
    for name, extra in (("weight", weight), ("pos_weight", pos_weight)):
        if extra is not None and _checks.broadcast_shape(fn, (name, "input"), extra, input) != input.shape:
            raise _checks.LossValueError(
                f"{fn}(): '{name}' {_checks.shape(extra)} must broadcast to the input's shape {_checks.shape(input)}"
            )
    if _elementwise.fast_path_ok(input, target, weight, pos_weight) and _elementwise.is_row_vector(pos_weight, input):
        row_pos_weight = None if pos_weight is None else pos_weight.reshape(-1)
        return _elementwise.pointwise(_binary.BCE_WITH_LOGITS, input, target, weight, row_pos_weight, reduction)
    loss = _binary.binary_cross_entropy_with_logits(input, target, weight, pos_weight)
    return _reduction.reduce_loss(loss, reduction)


def soft_margin_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Two-class logistic loss: ``l = log(1 + exp(-y·x))`` element-wise, ``y`` in ``{1, -1}``.

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.soft_margin_loss(torch.tensor([2.0, -0.5]), torch.tensor([1.0, 1.0]), reduction="none")
        tensor([0.1269, 0.9741])
    """
    fn = "soft_margin_loss"
    input, target = _pointwise_pair(fn, input, target, warn_broadcast=False)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    target = target.to(input.dtype)
    return _elementwise_loss(
        _binary.SOFT_MARGIN, lambda: _binary.soft_margin(input, target), input, target, None, reduction
    )


# --------------------------------------------------------------------------------------- divergence


def kl_div(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> torch.Tensor:
    r"""Kullback-Leibler divergence of log-probabilities ``x`` from ``t``: ``l = t·(log t - x)``.

    A target of 0 contributes 0. With ``log_target=True`` the target is given as ``log t`` and
    ``l = exp(t)·(t - x)``. ``'batchmean'`` divides the sum by the batch size (the KL of the math);
    ``'mean'`` divides by the element count and warns, as torch does.

    Shapes: input ``(*)``, target broadcastable to it; ``'none'`` returns the broadcast shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> logq = torch.tensor([[0.25, 0.75]]).log()
        >>> F.kl_div(logq, torch.tensor([[0.5, 0.5]]), reduction="batchmean")
        tensor(0.1438)
    """
    fn = "kl_div"
    legacy = size_average is not None or reduce is not None
    batchmean = reduction == "batchmean"  # torch divides by the batch size even when legacy args win
    reduction = _reduction.resolve(reduction, size_average, reduce, allowed=("none", "batchmean", "mean", "sum"))
    _checks.tensor(fn, "input", input)
    batch = input.shape[0] if input.dim() else None
    input, target = _pointwise_pair(fn, input, target, warn_broadcast=False)
    if not legacy and reduction == "mean":
        warnings.warn(
            "reduction: 'mean' divides the total loss by both the batch size and the support size."
            "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
            "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
            UserWarning,
            stacklevel=2,
        )
    log_target = bool(log_target)
    inner = "sum" if reduction == "batchmean" else reduction
    loss = _elementwise_loss(
        _divergence.KL_DIV,
        lambda: _divergence.kl_div(input, target, log_target),
        input,
        target,
        None,
        inner,
        log_target,
    )
    if batchmean and batch is not None:
        return loss / batch
    return loss


# ------------------------------------------------------------------------------------------ ranking


def margin_ranking_loss(
    input1: torch.Tensor,
    input2: torch.Tensor,
    target: torch.Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Margin ranking: ``l = max(0, -y·(x1 - x2) + margin)``, ``y = 1`` when ``x1`` should rank higher.

    The three tensors must have the same number of dimensions and broadcast.

    Shapes: input1 ``(N)`` or ``()``, input2 and target the same; ``'none'`` returns that shape, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> F.margin_ranking_loss(torch.tensor([0.8, 0.2]), torch.tensor([0.5, 0.5]), torch.tensor([1.0, 1.0]),
        ...                       margin=0.1, reduction="none")
        tensor([0.0000, 0.4000])
    """
    fn = "margin_ranking_loss"
    for name, t in (("input1", input1), ("input2", input2), ("target", target)):
        _checks.tensor(fn, name, t)
    margin = _checks.number(fn, "margin", margin)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    if not (input1.dim() == input2.dim() == target.dim()):
        raise _checks.LossValueError(
            f"{fn}(): 'input1', 'input2' and 'target' must have the same number of dimensions, got "
            f"input1 {_checks.shape(input1)}, input2 {_checks.shape(input2)}, target {_checks.shape(target)}"
        )
    _checks.broadcast_shape(fn, ("input1", "input2", "target"), input1, input2, target)
    if not (input1.is_floating_point() or input2.is_floating_point() or target.is_floating_point()):
        dtype = torch.get_default_dtype()  # torch's result for integer inputs is floating too
        input1, input2, target = input1.to(dtype), input2.to(dtype), target.to(dtype)
    return _reduction.reduce_loss(_ranking.margin_ranking(input1, input2, target, margin), reduction)


def multilabel_margin_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Multi-label hinge loss: ``l_n = Σ_{j ∈ T_n} Σ_{i ∉ T_n} max(0, 1 - (x_{n,j} - x_{n,i})) / C``.

    Each row of ``target`` lists the true classes ``T_n`` and ends at its first -1 (the rest is padding).

    Shapes: input ``(C)`` or ``(N, C)``, target int64 of the same shape; ``'none'`` returns ``()`` or ``(N)``,
    else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> x = torch.tensor([[0.1, 0.2, 0.4, 0.8]])
        >>> F.multilabel_margin_loss(x, torch.tensor([[3, 0, -1, 1]]))  # classes 3 and 0; 1 is padding
        tensor(0.8500)
    """
    fn = "multilabel_margin_loss"
    _checks.tensor(fn, "input", input)
    _checks.tensor(fn, "target", target)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.floating(fn, "input", input)
    if input.dim() > 2 or (input.dim() and input.shape[-1] == 0):
        raise _checks.LossValueError(f"{fn}(): 'input' must be (C) or (N, C) with C > 0, got {_checks.shape(input)}")
    if target.dtype != torch.int64:
        raise _checks.LossTypeError(f"{fn}(): 'target' must have dtype torch.int64, got {target.dtype}")
    if target.shape != input.shape:
        raise _checks.LossValueError(
            f"{fn}(): 'target' size {_checks.shape(target)} must equal the 'input' size {_checks.shape(input)}"
        )
    c = input.shape[-1] if input.dim() else 1
    out_of_range = (target < -1) | (target >= c)  # torch checks every entry, padding included
    if bool(out_of_range.any()):
        bad = int(target[out_of_range].flatten()[0])
        raise _checks.LossIndexError(
            f"{fn}(): 'target' {bad} is out of range for {c} classes (valid: 0..{c - 1}, or -1 to end the list)"
        )
    loss = _ranking.multilabel_margin(input.reshape(-1, c), target.reshape(-1, c))
    if input.dim() <= 1:
        loss = loss.reshape(())
    return _reduction.reduce_loss(loss, reduction)
