"""Cosine embedding loss."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .. import _checks, _reduction
from .._catalog import Curve, Entry, Problem, randn
from .._tracing import tracing
from ..engine import native_embedding
from ..engine.autocast import fp32_under_autocast
from ..engine.autograd import plain_apply
from ._base import Loss

EPSILON = 9.999999960041972e-13  # 1e-12 rounded to float32, added to each squared norm as torch does


_LOW = (torch.float16, torch.bfloat16)


def cosine(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``x1·x2 / sqrt((|x1|² + ε)(|x2|² + ε))`` per row of ``(N, D)`` inputs, ``ε = 1e-12`` (torch's ops)."""
    prod = (x1 * x2).sum(1)
    m1, m2 = (x1 * x1).sum(1) + EPSILON, (x2 * x2).sum(1) + EPSILON
    return prod / (m1 * m2).sqrt()


def cosine_embedding(cos: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """``1 - cos`` where ``y = 1``, ``max(0, cos - margin)`` where ``y = -1``, 0 elsewhere."""
    zero = torch.zeros((), dtype=cos.dtype, device=cos.device)
    return torch.where(target == 1, 1 - cos, zero) + torch.where(target == -1, (cos - margin).clamp_min(0), zero)


class _CosineEmbedding(torch.autograd.Function):
    """Eager fused path for ``(N, D)`` inputs: squared norms as norms (no ``x·x`` temporaries), and a backward
    that writes ``∂l/∂x1 = g·(x2 / ‖·‖ - cos·x1 / m1)`` (and alike for ``x2``) straight into the gradients."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x1, x2, target, margin: float, reduction: str):
        low = x1.dtype in _LOW
        a, b = (x1.float(), x2.float()) if low else (x1, x2)
        prod = torch.linalg.vecdot(a, b)
        m1 = torch.linalg.vector_norm(a, dim=1).square_().add_(EPSILON)
        m2 = torch.linalg.vector_norm(b, dim=1).square_().add_(EPSILON)
        denom = (m1 * m2).sqrt_()
        cos = prod / denom
        loss = cosine_embedding(cos, target, margin)
        out = _reduction.reduce_loss(loss, reduction).to(x1.dtype)
        return out, cos, m1, denom

    @staticmethod
    def setup_context(ctx, inputs, output):
        x1, x2, target, margin, reduction = inputs
        _, cos, m1_, denom = output
        ctx.save_for_backward(x1, x2, target, cos, denom)
        ctx.margin, ctx.reduction = margin, reduction
        ctx.mark_non_differentiable(cos, m1_, denom)

    @staticmethod
    def backward(ctx, grad, *_):
        x1, x2, target, cos, denom = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: cos and its norms again, differentiably
            a, b = (x1.float(), x2.float()) if x1.dtype in _LOW else (x1, x2)
            m1, m2 = (a * a).sum(1) + EPSILON, (b * b).sum(1) + EPSILON
            denom = (m1 * m2).sqrt()
            cos = (a * b).sum(1) / denom
        n = cos.shape[0]
        g = grad.to(cos.dtype)
        if ctx.reduction == "mean":
            g = g / n
        # ∂l/∂cos: -1 where y = 1, [cos - margin >= 0] where y = -1 (clamp's sub-gradient), 0 elsewhere
        gcos = torch.where(target == -1, ((cos - ctx.margin) >= 0).to(cos.dtype), torch.zeros_like(cos))
        gcos = (gcos - (target == 1).to(cos.dtype)) * g
        m1 = torch.linalg.vector_norm(x1.to(cos.dtype), dim=1).square() + EPSILON  # out of place: create_graph
        m2 = torch.linalg.vector_norm(x2.to(cos.dtype), dim=1).square() + EPSILON
        across = (gcos / denom).unsqueeze(1)  # coefficient of the other input
        g1 = g2 = None
        if ctx.needs_input_grad[0]:
            g1 = torch.mul(x2, across).addcmul_(x1, (-gcos * cos / m1).unsqueeze(1)).to(x1.dtype)
        if ctx.needs_input_grad[1]:
            g2 = torch.mul(x1, across).addcmul_(x2, (-gcos * cos / m2).unsqueeze(1)).to(x2.dtype)
        return g1, g2, None, None, None


_cosine_embedding_apply = plain_apply(_CosineEmbedding)  # torch's C++ apply in plain eager calls


def _fused_ok(x1, x2, target) -> bool:
    return (
        not tracing()
        and x1.dim() == 2
        and x1.is_floating_point()
        and x1.dtype == x2.dtype
        and x1.shape == x2.shape
        and x1.shape[0] > 0
        and target.shape == (x1.shape[0],)
    )


def _general(input1, input2, target, margin: float, reduction: str):
    """The (N, D) loss in differentiable torch ops (double backward through the native path)."""
    return _reduction.reduce_loss(cosine_embedding(cosine(input1, input2), target, margin), reduction)


def _fast(input1, input2, target, margin=0, size_average=None, reduce=None, reduction="mean"):
    if size_average is not None or reduce is not None or type(margin) not in (int, float):
        return None
    general = functools.partial(_general, margin=float(margin), reduction=reduction)
    return native_embedding.cosine_plain(input1, input2, target, margin, reduction, general)


@fp32_under_autocast(fast=_fast)  # on torch's fp32 autocast list
def cosine_embedding_loss(
    input1: torch.Tensor,
    input2: torch.Tensor,
    target: torch.Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Cosine embedding loss: ``l = 1 - cos(x1, x2)`` where ``y = 1``, ``max(0, cos(x1, x2) - margin)``
    where ``y = -1`` (0 for any other ``y``), ``cos = x1·x2 / sqrt((|x1|² + 1e-12)(|x2|² + 1e-12))``.

    Shapes: input1 ``(N, D)`` or ``(D)``, input2 alike, target ``(N)`` or ``()``; ``'none'`` returns
    ``(N)`` or ``()``, else a scalar.

    Example::

        >>> import torch, losskit.functional as F
        >>> a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> b = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        >>> F.cosine_embedding_loss(a, b, torch.tensor([1.0, -1.0]), margin=0.5, reduction="none")
        tensor([1.0000, 0.2071])
    """
    fn = "cosine_embedding_loss"
    for name, t in (("input1", input1), ("input2", input2), ("target", target)):
        _checks.tensor(fn, name, t)
    margin = _checks.number(fn, "margin", margin)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _checks.embedding.cosine_shapes(fn, input1, input2, target)
    _checks.broadcast_shape(fn, ("input1", "input2"), input1, input2)
    if _fused_ok(input1, input2, target):
        return _cosine_embedding_apply(input1, input2, target, margin, reduction)[0]
    if target.dim() == 0:
        loss = cosine_embedding(cosine(input1.unsqueeze(0), input2.unsqueeze(0)), target, margin).squeeze(0)
    else:
        loss = cosine_embedding(cosine(input1, input2), target, margin)
    return _reduction.reduce_loss(loss, reduction)


class CosineEmbeddingLoss(Loss):
    r"""Cosine embedding ``1 - cos(x1, x2)`` (``y = 1``) or ``max(0, cos(x1, x2) - margin)`` (``y = -1``);
    see :func:`losskit.functional.cosine_embedding_loss`.

    Shapes: input1 ``(N, D)`` or ``(D)``, input2 alike, target ``(N)`` or ``()``; output ``()`` or, for
    ``'none'``, ``(N)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> nn.CosineEmbeddingLoss()(torch.tensor([[3.0, 4.0]]), torch.tensor([[4.0, 3.0]]), torch.tensor([1.0]))
        tensor(0.0400)
    """

    __constants__ = ["margin", "reduction"]
    margin: float

    def __init__(self, margin: float = 0.0, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return cosine_embedding_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


def _sample(shape, dtype, gen):
    n, d = shape
    y = randn((n,), torch.float64, gen).sign().to(dtype)
    return Problem((randn(shape, dtype, gen), randn(shape, dtype, gen), y), 2)


def _plot(z, params):
    """Against the angle ``z`` (radians) between two unit vectors, ``y = -1``, margin 0."""
    a = torch.stack([torch.ones_like(z), torch.zeros_like(z)], 1)
    b = torch.stack([torch.cos(z), torch.sin(z)], 1)
    return cosine_embedding_loss(a, b, -torch.ones_like(z), reduction="none")


CATALOG = (
    Entry(
        "cosine_embedding_loss",
        cosine_embedding_loss,
        CosineEmbeddingLoss,
        "embedding",
        _sample,
        aliases=("cosine_embedding",),
        options=({}, {"margin": 0.5}, {"margin": -0.25}),
        plot=Curve("score", "cosine_embedding_loss (y = -1, angle in radians)", _plot),
    ),
)
