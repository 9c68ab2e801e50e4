"""Connectionist temporal classification (CTC) loss: the alpha/beta dynamic program in log space.

On the CPU (float32/float64) both passes run on losskit's C++ kernel (``kernels/ctc.cpp``, loaded by
:mod:`losskit.engine.native_ctc`), which computes torch's formulas in torch's order, so the loss and the gradient
are torch's bit for bit, while skipping the (frame, position) cells on no complete path and keeping beta in two
rolling rows (no ``(N, T, 2S+1)`` beta buffer). Elsewhere (other devices, no compiler, under ``torch.func.vmap``)
a torch-op path computes the same formulas, vectorised over the batch and the extended label sequence and looping
over time only. Both passes are ``torch.library`` custom ops (``losskit::ctc_forward`` and
``losskit::ctc_backward``) with shape-only fake implementations, which ``torch.compile``/``torch.export`` see as
one opaque node each; in eager the autograd.Function (separate ``setup_context``, ``generate_vmap_rule``) calls
the implementations directly, which also serves ``torch.func.grad``.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor
from torch._C import _functions as _autograd_functions

from .. import _checks
from .._catalog import Entry, Problem
from ..engine import native_ctc
from ..engine.autocast import fp32_under_autocast
from ..engine.autograd import plain_apply
from ._base import Loss


class _KernelMissing(RuntimeError):
    """The CTC kernel was asked for where it is not loaded (callers check first)."""


FN = "ctc_loss"
_NINF = float("-inf")


# ---------------------------------------------------------------------------------------- helpers


def _padded_targets(targets: Tensor, tl: Tensor, blank: int, padded: bool) -> Tensor:
    """``(N, K)`` int64 targets, positions past each target length set to ``blank`` (concatenated targets are
    split by ``target_lengths``; K is the longest target, or under torch.compile the static bound numel)."""
    y = targets.to(torch.int64)
    n = tl.numel()
    tl = tl.to(y.device)
    if padded:
        k = y.shape[1]
        j = torch.arange(k, device=y.device)
        return torch.where(j < tl[:, None], y, blank).contiguous()
    k = y.numel() if torch.compiler.is_compiling() else (int(tl.max()) if n else 0)
    j = torch.arange(k, device=y.device)
    if y.numel() == 0:
        return torch.full((n, k), blank, dtype=torch.int64, device=y.device)
    offsets = torch.cumsum(tl, 0) - tl
    idx = (offsets[:, None] + j).clamp(max=y.numel() - 1)
    return torch.where(j < tl[:, None], y[idx], blank).contiguous()


def _extended(y: Tensor, blank: int) -> tuple[Tensor, Tensor]:
    """The extended labels ``l' = (blank, y_1, blank, ..., y_K, blank)`` ``(N, 2K+1)`` and whether the skip
    ``s-2 -> s`` is allowed (``l'(s) != l'(s-2)``)."""
    n, k = y.shape
    ext = torch.full((n, 2 * k + 1), blank, dtype=torch.int64, device=y.device)
    ext[:, 1::2] = y
    skip = torch.zeros_like(ext, dtype=torch.bool)
    skip[:, 2:] = ext[:, 2:] != ext[:, :-2]
    return ext, skip


def _use_kernel(lp: Tensor) -> bool:
    return lp.device.type == "cpu" and lp.dtype in native_ctc.DTYPES and native_ctc.library() is not None


def _library() -> ctypes.CDLL:
    """The kernel, once :func:`_use_kernel` has said yes (a loaded kernel stays loaded)."""
    lib = native_ctc.library()
    if lib is None:
        raise _KernelMissing("losskit: the CTC kernel is not loaded")
    return lib


def _cpu_int64(t: Tensor) -> Tensor:
    return t.to("cpu", torch.int64).contiguous()


# ---------------------------------------------------------------------------------------- torch-op path


def _forward_torch(lp: Tensor, y: Tensor, il: Tensor, tl: Tensor, blank: int) -> tuple[Tensor, Tensor]:
    """alpha ``(N, T, 2K+1)`` and the per-sample ``nll``, looping over time (any device)."""
    t_max, n, _ = lp.shape
    il, tl = il.to(lp.device), tl.to(lp.device)
    ext, skip = _extended(y, blank)
    length = ext.shape[1]
    skip_add = torch.zeros(ext.shape, dtype=lp.dtype, device=lp.device).masked_fill_(~skip, _NINF)
    alpha = lp.new_full((n, t_max, length), _NINF)
    rolling = lp.new_full((n, length + 2), _NINF)  # alpha_{t-1} with two -inf columns in front
    first = lp[0].gather(1, ext[:, :2])
    rolling[:, 2] = first[:, 0]
    if length > 1:
        rolling[:, 3] = torch.where(tl > 0, first[:, 1], _NINF)
    alpha[:, 0] = rolling[:, 2:]
    for t in range(1, t_max):
        x = torch.logaddexp(rolling[:, 2:], rolling[:, 1:-1])
        x = torch.logaddexp(x, rolling[:, :-2] + skip_add)
        x += lp[t].gather(1, ext)
        rolling[:, 2:] = x
        alpha[:, t] = x
    rows = torch.arange(n, device=lp.device)
    last = alpha[rows, (il - 1).clamp_min(0)]
    end = last.gather(1, (2 * tl)[:, None])[:, 0]
    before = torch.where(tl > 0, last.gather(1, (2 * tl - 1).clamp_min(0)[:, None])[:, 0], _NINF)
    nll = -torch.logaddexp(end, before)
    nll = torch.where(il == 0, torch.where(tl == 0, 0.0, float("inf")).to(lp.dtype), nll)
    return nll, alpha


def _backward_torch(grad_out, lp, y, il, tl, nll, alpha, blank: int, zero_infinity: bool) -> Tensor:
    """The gradient ``(T, N, C)`` from beta (looping over time) and alpha, as in the kernel's header."""
    t_max, n, _ = lp.shape
    il, tl = il.to(lp.device), tl.to(lp.device)
    ext, skip = _extended(y, blank)
    length = ext.shape[1]
    skip_from = torch.zeros(ext.shape, dtype=lp.dtype, device=lp.device)  # s+2 -> s allowed: skip[s+2]
    skip_from[:, :-2].masked_fill_(~skip[:, 2:], _NINF)
    skip_from[:, -2:] = _NINF
    # beta at "time il" is a virtual start: 0 at s = 2·tl, so beta_{il-1} comes out of the same recursion
    positions = torch.arange(length + 2, device=lp.device)
    start = lp.new_zeros(n, length + 2).masked_fill_(positions != 2 * tl[:, None], _NINF)
    rolling = start.clone()  # beta_{t+1} with two -inf columns behind
    valid = torch.arange(t_max, device=lp.device)[:, None] < il[None, :]  # (T, N)
    occupancy = lp.new_empty(n, t_max, length)  # beta_t - lp[t, l'(s)], then the posteriors
    for t in range(t_max - 1, -1, -1):
        x = torch.logaddexp(rolling[:, :length], rolling[:, 1 : length + 1])
        x = torch.logaddexp(x, rolling[:, 2:] + skip_from)
        occupancy[:, t] = x
        rolling[:, :length] = torch.where(valid[t][:, None], x + lp[t].gather(1, ext), start[:, :length])
    bad = ~torch.isfinite(nll)
    occupancy += alpha
    occupancy += torch.where(bad, 0.0, nll).to(lp.dtype)[:, None, None]
    occupancy.exp_().neg_()
    # torch assigns (does not add) the end positions' terms at the last frame: a last label equal to blank
    # drops position 2S's term there (kept, to be torch's gradient exactly)
    rows, last = torch.arange(n, device=lp.device), (il - 1).clamp_min(0)
    if y.shape[1]:
        label_is_blank = (tl > 0) & (y.gather(1, (tl - 1).clamp_min(0)[:, None])[:, 0] == blank)
        end = occupancy[rows, last, 2 * tl]
        occupancy[rows, last, 2 * tl] = torch.where(label_is_blank, torch.zeros_like(end), end)
    grad = lp.exp()
    grad.scatter_add_(2, ext[None].expand(t_max, n, length), occupancy.permute(1, 0, 2))
    grad = grad * grad_out.to(lp.dtype)[None, :, None]  # out of place: grad_out may be vmapped (jacrev)
    grad.masked_fill_(lp == _NINF, float("nan"))
    grad.masked_fill_(bad[None, :, None] & valid[:, :, None], 0.0 if zero_infinity else float("nan"))
    grad.masked_fill_(~valid[:, :, None], 0.0)
    return grad


# ---------------------------------------------------------------------------------------- the ops


def _plain(*tensors: Tensor) -> bool:
    """No functorch wrapper (torch.func.grad/vmap) around any of them: the kernel can read their memory."""
    return not any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def _forward_impl(log_probs, targets, input_lengths, target_lengths, blank):
    if not (_use_kernel(log_probs) and _plain(log_probs)):
        return _forward_torch(log_probs, targets, input_lengths, target_lengths, blank)
    t, n, _ = log_probs.shape
    y, il, tl = _cpu_int64(targets), _cpu_int64(input_lengths), _cpu_int64(target_lengths)
    alpha = log_probs.new_empty(n, t, 2 * y.shape[1] + 1)
    nll = log_probs.new_empty(n)
    code = _library().losskit_ctc_forward(
        *native_ctc.kernel_args(log_probs, y, il, tl, blank),
        alpha.data_ptr(),
        nll.data_ptr(),
        native_ctc.threads(t, n, y.shape[1]),
    )
    _checks.sequence.ctc_kernel_error(FN, code)
    return nll, alpha


def _backward_impl(grad_out, log_probs, targets, input_lengths, target_lengths, nll, alpha, blank, zero_infinity):
    if not (_use_kernel(log_probs) and _plain(grad_out, log_probs, nll, alpha)):
        return _backward_torch(
            grad_out, log_probs, targets, input_lengths, target_lengths, nll, alpha, blank, zero_infinity
        )
    y, il, tl = _cpu_int64(targets), _cpu_int64(input_lengths), _cpu_int64(target_lengths)
    g = grad_out.to(log_probs.dtype).contiguous()
    nll, alpha = nll.contiguous(), alpha.contiguous()
    grad = torch.empty(log_probs.shape, dtype=log_probs.dtype)
    code = _library().losskit_ctc_backward(
        *native_ctc.kernel_args(log_probs, y, il, tl, blank),
        alpha.data_ptr(),
        nll.data_ptr(),
        g.data_ptr(),
        int(zero_infinity),
        grad.data_ptr(),
        native_ctc.threads(log_probs.shape[0], log_probs.shape[1], y.shape[1]),
    )
    _checks.sequence.ctc_kernel_error(FN, code)
    return grad


@torch.library.custom_op("losskit::ctc_forward", mutates_args=())
def ctc_forward(
    log_probs: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor, blank: int
) -> tuple[Tensor, Tensor]:
    """Per-sample negative log-likelihood ``(N,)`` and alpha ``(N, T, 2K+1)`` for padded int64 targets ``(N, K)``."""
    return _forward_impl(log_probs, targets, input_lengths, target_lengths, blank)


@ctc_forward.register_fake
def _(log_probs, targets, input_lengths, target_lengths, blank):
    t, n, _ = log_probs.shape
    return log_probs.new_empty(n), log_probs.new_empty(n, t, 2 * targets.shape[1] + 1)


@torch.library.custom_op("losskit::ctc_backward", mutates_args=())
def ctc_backward(
    grad_out: Tensor,
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: Tensor,
    target_lengths: Tensor,
    nll: Tensor,
    alpha: Tensor,
    blank: int,
    zero_infinity: bool,
) -> Tensor:
    """The gradient ``(T, N, C)`` of ``Σ_n grad_out[n]·nll[n]`` with respect to ``log_probs`` (torch's convention)."""
    return _backward_impl(grad_out, log_probs, targets, input_lengths, target_lengths, nll, alpha, blank, zero_infinity)


@ctc_backward.register_fake
def _(grad_out, log_probs, targets, input_lengths, target_lengths, nll, alpha, blank, zero_infinity):
    return torch.empty_like(log_probs, memory_format=torch.contiguous_format)


class _CTC(torch.autograd.Function):
    """nll per sample (and alpha, non-differentiable). The gradient is not differentiable (as torch's): under
    ``create_graph=True`` it carries a node that raises if differentiated again. Under ``torch.func.vmap`` the
    torch-op path runs (its ops have batching rules)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(log_probs, targets, input_lengths, target_lengths, blank, zero_infinity):
        # compiled: one opaque custom op (with a fake); eager (and torch.func): the implementation itself
        op = torch.ops.losskit.ctc_forward if torch.compiler.is_compiling() else _forward_impl
        return op(log_probs, targets, input_lengths, target_lengths, blank)

    @staticmethod
    def setup_context(ctx, inputs, output):
        log_probs, targets, input_lengths, target_lengths, blank, zero_infinity = inputs
        nll, alpha = output
        ctx.save_for_backward(log_probs, targets, input_lengths, target_lengths, nll, alpha)
        ctx.save_for_forward(log_probs, targets, input_lengths, target_lengths, nll, alpha)
        ctx.blank, ctx.zero_infinity = blank, zero_infinity
        ctx.mark_non_differentiable(alpha)
        ctx.set_materialize_grads(False)  # no (N, T, 2S+1) zeros for alpha's (never used) gradient

    @staticmethod
    def backward(ctx, grad_nll, _grad_alpha):
        if not ctx.needs_input_grad[0] or grad_nll is None:
            return (None,) * 6
        log_probs, targets, input_lengths, target_lengths, nll, alpha = ctx.saved_tensors
        op = torch.ops.losskit.ctc_backward if torch.compiler.is_compiling() else _backward_impl
        grad = op(grad_nll, log_probs, targets, input_lengths, target_lengths, nll, alpha, ctx.blank, ctx.zero_infinity)
        if torch.is_grad_enabled() and _plain(grad):  # create_graph=True: differentiating it again is an error
            message = b"losskit: derivative for ctc_loss's backward is not implemented (as in torch)"
            grad = _autograd_functions.DelayedError(message, 1)(grad.detach().requires_grad_())
        return grad, None, None, None, None, None


class _CTCWithJvp(_CTC):
    """:class:`_CTC` with forward-mode AD; eager only (dynamo cannot trace a Function that defines ``jvp``)."""

    @staticmethod
    def jvp(ctx, log_probs_t, *_):
        """Forward-mode AD (torch has none for ctc_loss): the directional derivative of each sample's loss, which
        depends on its own log-probs only. The backward's per-sample gradient is torch's formula, which assumes
        log-softmax inputs (its ``exp(lp)`` term); the true partial derivative drops that term over each sample's
        frames, and keeps the backward's value (0 or nan) for a sample whose loss is infinite."""
        log_probs, targets, input_lengths, target_lengths, nll, alpha = ctx.saved_tensors
        ones = torch.ones_like(nll)
        op = torch.ops.losskit.ctc_backward if torch.compiler.is_compiling() else _backward_impl
        grad = op(ones, log_probs, targets, input_lengths, target_lengths, nll, alpha, ctx.blank, ctx.zero_infinity)
        frames = (
            torch.arange(log_probs.shape[0], device=log_probs.device)[:, None]
            < input_lengths.to(log_probs.device)[None, :]
        )
        kept = frames & (nll != float("inf"))[None, :]
        exact = grad - torch.where(kept[:, :, None], log_probs.exp(), torch.zeros((), dtype=grad.dtype))
        return (exact * log_probs_t).sum((0, 2)), None


_ctc_apply = plain_apply(_CTCWithJvp)  # torch's C++ apply in plain eager calls


# ---------------------------------------------------------------------------------------- public API


@fp32_under_autocast(fast=native_ctc.plain)
def ctc_loss(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: Tensor | tuple[int, ...] | list[int],
    target_lengths: Tensor | tuple[int, ...] | list[int],
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> Tensor:
    r"""Connectionist temporal classification loss: ``-log p(y | x)`` summed over all alignments.

    With the extended labels ``l' = (b, y_1, b, y_2, ..., y_S, b)`` (``b`` = ``blank``) and ``lp = log_probs``::

        α_0(0) = lp_0(b),  α_0(1) = lp_0(y_1)
        α_t(s) = logsumexp(α_{t-1}(s), α_{t-1}(s-1), [l'(s) ≠ l'(s-2)]·α_{t-1}(s-2)) + lp_t(l'(s))
        loss_n = -logsumexp(α_{T_n-1}(2S), α_{T_n-1}(2S-1))

    ``'mean'`` divides each ``loss_n`` by its target length (at least 1), then averages over the batch;
    ``'sum'`` adds them up. ``zero_infinity`` replaces infinite losses (inputs too short for their targets) and
    their gradients by zero. The gradient with respect to ``log_probs`` is torch's (it assumes the log-probs come
    from a ``log_softmax``): ``exp(lp_t(c)) - Σ_{s: l'(s)=c} exp(α_t(s) + β_t(s) + loss_n - lp_t(c))``.

    Shapes: ``log_probs`` ``(T, N, C)`` or unbatched ``(T, C)``, float32 or float64; ``targets`` padded
    ``(N, S)`` or concatenated ``(sum(target_lengths),)`` class indices in ``[0, C)`` (any integer dtype);
    ``input_lengths``/``target_lengths``: ``(N,)`` integer tensors (int32 or int64) or tuples/lists of ints.
    Output: ``(N,)`` (``()`` unbatched) for ``'none'``, else a scalar.

    Differences from torch: a label outside ``[0, C)`` raises :class:`IndexError` (torch reads out of bounds).

    Example (two frames, one label: the paths ``"1 1"``, ``"1 b"``, ``"b 1"``)::

        >>> import torch, losskit.functional as F
        >>> lp = torch.tensor([[[0.5, 0.5]], [[0.5, 0.5]]]).log()  # (T=2, N=1, C=2), blank = 0
        >>> F.ctc_loss(lp, torch.tensor([[1]]), (2,), (1,))  # -log(3 · 0.25)
        tensor(0.2877)
        >>> F.ctc_loss(lp, torch.tensor([[1, 1]]), (2,), (2,), reduction="none")  # "1 1" needs a blank between
        tensor([inf])
        >>> F.ctc_loss(lp, torch.tensor([[1, 1]]), (2,), (2,), zero_infinity=True)
        tensor(0.)
    """
    _checks.tensor(FN, "log_probs", log_probs)
    _checks.tensor(FN, "targets", targets)
    blank = _checks.integer(FN, "blank", blank)
    reduction = _checks.reduction(reduction, ("none", "mean", "sum"))
    zero_infinity = _checks.flag(FN, "zero_infinity", zero_infinity)
    batched = _checks.sequence.ctc_log_probs(FN, log_probs)
    lp = log_probs if batched else log_probs.unsqueeze(1)
    t_max, n, c = lp.shape
    _checks.sequence.ctc_blank(FN, blank, c)
    il, tl = _checks.sequence.ctc_lengths(FN, input_lengths, target_lengths, n)
    padded = _checks.sequence.ctc_targets(FN, targets, n)
    _checks.sequence.ctc_values(FN, targets, il, tl, t_max, c)
    y = _padded_targets(targets, tl, blank, padded)
    nll, _ = (_CTC.apply if torch.compiler.is_compiling() else _ctc_apply)(lp, y, il, tl, blank, zero_infinity)
    if zero_infinity:
        nll = torch.where(nll == float("inf"), torch.zeros((), dtype=nll.dtype, device=nll.device), nll)
    if reduction == "mean":
        return (nll / tl.to(nll.device, nll.dtype).clamp_min(1)).mean()
    if reduction == "sum":
        return nll.sum()
    return nll if batched else nll.squeeze(0)


class CTCLoss(Loss):
    r"""Connectionist temporal classification loss; see :func:`losskit.functional.ctc_loss`.

    ``loss_n = -log Σ_{alignments π of y_n} Π_t p_t(π_t)`` computed by the alpha recursion in log space;
    ``'mean'`` divides each by its target length, then averages.

    Shapes: log_probs ``(T, N, C)`` or ``(T, C)``; targets ``(N, S)`` or ``(sum(target_lengths),)``;
    input_lengths and target_lengths ``(N,)`` or ``()``; output ``()`` or, for ``'none'``, ``(N,)``.

    Example::

        >>> import torch, losskit.nn as nn
        >>> lp = torch.tensor([[[0.5, 0.5]], [[0.5, 0.5]]]).log()
        >>> nn.CTCLoss(reduction="sum")(lp, torch.tensor([1]), torch.tensor([2]), torch.tensor([1]))
        tensor(0.2877)
    """

    __constants__ = ["blank", "reduction"]
    blank: int
    zero_infinity: bool

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False) -> None:
        super().__init__(reduction=reduction)
        self.blank = blank
        self.zero_infinity = zero_infinity

    def forward(self, log_probs: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor) -> Tensor:
        return ctc_loss(
            log_probs, targets, input_lengths, target_lengths, self.blank, self.reduction, self.zero_infinity
        )


def _sample(shape, dtype, gen) -> Problem:
    """``shape = (N, C)``: T = 12 frames, targets of length up to 4 in ``[1, C)``."""
    n, c = shape
    c = max(c, 2)
    t, s = 12, 4
    lp = torch.randn(t, n, c, generator=gen, dtype=torch.float64).log_softmax(2).to(dtype)
    targets = torch.randint(1, c, (n, s), generator=gen)
    il = torch.full((n,), t, dtype=torch.int64)
    tl = torch.randint(1, s + 1, (n,), generator=gen)
    return Problem((lp, targets, il, tl))


CATALOG = (
    Entry(
        "ctc_loss",
        ctc_loss,
        CTCLoss,
        "sequence",
        _sample,
        aliases=("ctc",),
        options=({}, {"zero_infinity": True}, {"blank": 1}),
        legacy=False,
        typical={"reduction": "mean"},
        gradcheck=False,
    ),
)
