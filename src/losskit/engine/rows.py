"""The cross-entropy family: the fused cross-entropy engine (class indices or probabilities) and NLL.

Cross entropy is one autograd Function whose forward computes the row losses and, when the logits require
grad, the gradient of the reduced loss, written once into the one (rows, C) buffer; backward only scales
that buffer by ``grad_output``. Two paths compute the same formulas:

* **the CPU kernel** (:mod:`losskit.engine.native`, ``kernels/cross_entropy.cpp``) for fp32 and bf16 logits on the
  CPU with class-index targets and no softcap: each row is read from memory once, its max, sum of
  exponentials and gradient computed while it stays in cache, rows split over threads;
* **torch ops** for everything else (CUDA, fp64/fp16, probability targets, softcap, no compiler): the rows
  are walked in chunks sized to stay in cache; per chunk, in at least fp32, one fused kernel gives
  ``lp = log_softmax(x)``, the row losses come from it and the gradient is written over the same chunk of
  the gradient buffer: ``softmax(lp) = exp(lp)`` scaled, minus the target terms.

For rows ``n``, target ``y``, class weights ``w`` (ones when absent), smoothing ``ε`` over ``C`` classes,
``p = softmax(x)``:

    class index:  l_n = (1-ε)·w_y·(-lp_y) + ε/C·Σ_c w_c·(-lp_c)
                  ∂l_n/∂x = p·((1-ε)·w_y + ε/C·Σ_c w_c) - (1-ε)·w_y·onehot(y) - ε/C·w
    probability:  t' = (1-ε)·t + ε/C,   l_n = -Σ_c w_c·t'_c·lp_c
                  ∂l_n/∂x = p·Σ_c w_c·t'_c - w⊙t'

``'mean'`` divides by ``Σ_n w_{y_n}`` over non-ignored rows (class indices) or by the number of rows
(probabilities); rows whose target is ``ignore_index`` give 0 and a zero gradient. Extras beyond torch:
``z_loss`` adds ``z·lse_n²`` per kept row (gradient ``2·z·lse_n·p``), ``softcap`` replaces the logits by
``s·tanh(x/s)`` (gradient times ``1 - tanh²``).
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

from .. import _checks
from . import native, overwritten
from .autograd import acc_dtype, first_order_only

# Rows per chunk are chosen so that one chunk of fp32 logits is about this many elements (2 MiB):
# half of it per core fits the L2 cache, and the per-chunk Python overhead stays small.
CHUNK_ELEMENTS = 1 << 19


@dataclass(frozen=True)
class CrossEntropyOptions:
    reduction: str  # 'none' | 'mean' | 'sum'
    ignore_index: int = -100
    label_smoothing: float = 0.0  # validated, >= 0
    z_loss: float = 0.0
    softcap: float | None = None
    inplace: bool = False


def as_rows(input: torch.Tensor) -> torch.Tensor:
    """View (C,), (N, C) or (N, C, d1, ..., dK) logits as (rows, C), the class dimension last."""
    if input.dim() == 1:
        return input.unsqueeze(0)
    if input.dim() == 2:
        return input
    return input.movedim(1, -1).reshape(-1, input.shape[1])


def rows_per_chunk(num_classes: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(num_classes, 1))


class _CrossEntropy(torch.autograd.Function):
    """Loss and gradient in one pass; backward hands the precomputed gradient over, scaled in place.

    The gradient buffer is kept on ``ctx`` (not saved for backward) so that the first backward can give
    it away: nothing else references it, so autograd stores it as ``.grad`` without a copy. A second
    backward through the same graph (``retain_graph=True``, gradcheck) recomputes it from the saved
    inputs. With ``inplace`` the buffer is the logits' own storage: writing it bumps their version counter, so
    autograd raises if another op saved them for its backward.
    """

    @staticmethod
    def forward(ctx, x, target, weight, opts: CrossEntropyOptions):
        want_grad = ctx.needs_input_grad[0]
        want_target_grad = ctx.needs_input_grad[1] and target.is_floating_point()
        inplace = opts.inplace and want_grad
        # low precision, reduction='none': the gradient is made in backward with grad_output folded in (one
        # rounding to bf16/fp16 instead of two); the forward then keeps no (rows, C) buffer at all
        defer = x.dtype in _LOW_PRECISION and opts.reduction == "none" and not inplace
        loss, grad, ctx.target_grad = fused_pass(
            x,
            target,
            weight,
            opts,
            want_grad and not defer,
            out=x if inplace else None,
            want_target_grad=want_target_grad and not defer,
        )
        ctx.opts = opts
        # in place, the gradient is the logits' storage under a separate plain tensor: the logits object itself
        # is marked overwritten after the call (see .overwritten), and autograd must not receive that object
        ctx.grad = grad.detach() if inplace and grad is not None else grad
        if (want_grad and not inplace) or want_target_grad:
            ctx.save_for_backward(x if not inplace else None, target, weight)
        return loss

    @staticmethod
    @first_order_only
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        target_grad, ctx.target_grad = ctx.target_grad, None
        fold = _fold_grad_output(ctx, grad, target_grad, grad_output)
        if fold is not None:  # low precision: recompute with grad_output folded into each row's scale
            x, target, weight = ctx.saved_tensors
            _, grad, target_grad = fused_pass(
                x,
                target,
                weight,
                ctx.opts,
                ctx.needs_input_grad[0],
                out=grad,
                want_target_grad=ctx.needs_input_grad[1] and target.is_floating_point(),
                row_scale=fold,
            )
            return grad, target_grad, None, None
        if (ctx.needs_input_grad[0] and grad is None) or (ctx.needs_input_grad[1] and target_grad is None):
            # a second backward through this graph: recompute
            _checks.gradient_available(
                "cross_entropy(inplace=True)",
                not ctx.opts.inplace,
                "the gradient was written over the logits and has been consumed by the first backward; "
                "a second backward (retain_graph=True) needs inplace=False",
            )
            x, target, weight = ctx.saved_tensors
            _, grad, target_grad = fused_pass(
                x,
                target,
                weight,
                ctx.opts,
                ctx.needs_input_grad[0],
                want_target_grad=ctx.needs_input_grad[1] and target.is_floating_point(),
            )
        for g in (grad, target_grad):
            if g is None:
                continue
            if ctx.opts.reduction == "none":
                g.mul_(grad_output.reshape(-1, 1).to(g.dtype))
            elif grad_output.device.type != "cpu" or float(grad_output) != 1.0:
                g.mul_(grad_output.to(g.dtype))
        return grad, target_grad, None, None


_LOW_PRECISION = (torch.bfloat16, torch.float16)


def _fold_grad_output(ctx, grad, target_grad, grad_output):
    """The per-row scale to recompute a low-precision gradient with, or None when scaling the stored one is exact.

    A bf16/fp16 gradient scaled by ``grad_output`` after the fact is rounded twice; torch rounds once. So where
    the saved logits allow it, backward recomputes the gradient with ``grad_output`` as each row's scale:
    always for ``'none'`` (whose forward made no gradient), and for a scalar ``grad_output`` on the CPU that is
    not a power of two (1, or a loss scaler's 2^k, scale exactly)."""
    g = grad if grad is not None else target_grad
    deferred = ctx.opts.reduction == "none" and g is None
    if not (deferred or (g is not None and g.dtype in _LOW_PRECISION)) or ctx.opts.inplace:
        return None
    x = ctx.saved_tensors[0]
    if x is None or x.dtype not in _LOW_PRECISION:
        return None
    n = x.shape[0]
    if ctx.opts.reduction == "none":
        return grad_output.reshape(-1).to(torch.float32).expand(n)
    if grad_output.device.type != "cpu":
        return None
    value = float(grad_output)
    if value == 0.0 or not math.isfinite(value) or math.frexp(value)[0] in (0.5, -0.5):
        return None
    return grad_output.reshape(1).to(torch.float32).expand(n)


class RowPlan:
    """What one call needs per row, computed once: targets, weights, validity, the reduction's scale.

    :meth:`chunk` then turns the logits of rows ``[s, e)`` into row losses and, optionally, into the
    gradient of the reduced loss (in place). Shared by the cross-entropy engine and the fused
    linear + cross entropy, which feeds it one chunk of ``input @ W.T`` at a time.
    """

    def __init__(self, target, weight, opts: CrossEntropyOptions, n: int, c: int, acc, device, want_grad: bool):
        self.opts, self.c, self.acc = opts, c, acc
        self.probabilities = target.is_floating_point()
        self.target = target
        self.zero = torch.zeros((), dtype=acc, device=device)
        self.w: torch.Tensor | None = None if weight is None else weight.to(acc)
        eps = opts.label_smoothing
        self.smooth_vec: torch.Tensor | None = None
        self.denom: int | torch.Tensor
        self.w_sum: float | torch.Tensor
        if self.probabilities:
            self.denom = n
        else:
            y = target.long()
            self.valid = y != opts.ignore_index
            self.y_safe = torch.where(self.valid, y, torch.zeros_like(y))
            w = self.w
            self.w_y = self.valid.to(acc) if w is None else torch.where(self.valid, w[self.y_safe], self.zero)
            self.w_sum = float(c) if w is None else w.sum()
            self.denom = self.w_y.sum()  # 0 when every target is ignored: 0/0 = nan for 'mean', as in torch
            if eps > 0 and want_grad:
                self.smooth_vec = torch.full((c,), eps / c, dtype=acc, device=device) if w is None else w * (eps / c)
        self.scale = 1.0 / self.denom if opts.reduction == "mean" and n else None
        if self.scale is not None and self.smooth_vec is not None:
            self.smooth_vec = self.smooth_vec * self.scale
        self.rows = torch.empty(n, dtype=acc, device=device)
        # set to a (rows, C) buffer to get ∂loss/∂target for probability targets
        self.target_grad: torch.Tensor | None = None
        # targets for the CPU kernel (-1 = ignored), made on its first chunk
        self.y_kernel: torch.Tensor | None = None
        # (Σ w, the reduction's scale, fp32 weights) as the kernel takes them
        self.kernel_scalars: tuple[float, float, torch.Tensor | None] | None = None
        self.exact = False  # True: low-precision chunks take the fp32 path (one rounding; see native())

    @functools.cached_property
    def ignored(self) -> tuple[torch.Tensor, list[int]]:
        """The ignored rows, whose gradient rows the torch-op path zeroes chunk by chunk: found on its first
        chunk with grad, once per call (one host sync), with a host copy that chunks bisect. The kernel
        never needs them."""
        rows = (~self.valid).nonzero().squeeze(1)
        return rows, rows.tolist()

    def kernel_ok(self, xc, out=None) -> bool:
        """Whether these logits take losskit's CPU kernel (:mod:`losskit.engine.native`): class-index targets, no
        softcap, fp32 or bf16 rows with unit class stride, the gradient written in the logits' dtype."""
        return (
            not self.probabilities
            and self.opts.softcap is None
            and native.supports(xc)
            and (out is None or (out.dtype == xc.dtype and out.stride(1) == 1))
        )

    def kernel_chunk(self, xc, s: int, e: int, want_grad: bool, out=None, row_scale=None):
        """:meth:`chunk` on losskit's CPU kernel: one call for all of rows ``[s, e)``, each row read once."""
        y_kernel, scalars = self.y_kernel, self.kernel_scalars
        if y_kernel is None or scalars is None:  # the first chunk: both are made together
            y_kernel = self.y_kernel = torch.where(self.valid, self.y_safe, -1)
            scale = 1.0
            if self.scale is not None:  # 1 / Σ w_y, the same for any thread count (see reduced)
                counted = self.w is None and self.w_y.numel() < 1 << 24
                scale = float(self.scale) if counted else float(1.0 / native.fixed_order_sum(self.w_y))
            scalars = self.kernel_scalars = (
                float(self.w_sum),
                scale,
                None if self.w is None else self.w.float().contiguous(),
            )
        w_sum, scale, w = scalars
        grad = None
        if want_grad:
            grad = out if out is not None else torch.empty(xc.shape, dtype=xc.dtype, device=xc.device)
        native.cross_entropy_rows(
            xc,
            grad,
            y_kernel[s:e],
            w,
            w_sum,
            self.opts.label_smoothing,
            self.opts.z_loss,
            scale,
            None if row_scale is None else row_scale.float().contiguous(),
            self.rows[s:e],
        )
        return grad

    def native(self, dtype) -> bool:
        """Whether chunks of this dtype take the bf16 softmax path: torch's bf16 softmax kernel writes ``p``
        straight into the bf16 gradient buffer (no fp32 copies, which are slow on CPUs without bf16 units),
        the row's log-sum-exp recovered as ``x_y - log p_y``. Only for scalar reductions: ``p_y`` is rounded to
        2⁻⁹, which a sum or mean averages out, while ``'none'`` returns each row and takes the fp32 path.
        (fp32/fp64 measured no faster this way than with log-softmax, which is exact: they keep it.) On the CPU
        the kernel (:meth:`kernel_ok`) comes first and is exact in bf16 too; this path serves CUDA and
        machines without a compiler. Not with label smoothing or z-loss: their terms nearly cancel the NLL's at
        the target (exactly at C=1), and bf16 ``p·coef`` and ``ε/C·w`` rounded apart lose the difference."""
        o = self.opts
        plain = o.softcap is None and o.label_smoothing == 0 and o.z_loss == 0 and o.reduction != "none"
        return not self.exact and dtype == torch.bfloat16 and plain

    def chunk(self, xc, s: int, e: int, want_grad: bool, out=None, row_scale=None):
        """Row losses of logits ``xc`` (rows s..e) into ``self.rows``; returns their gradient (in the
        accumulation dtype, or bf16 on the native path; written into ``out`` when given) or None.
        ``row_scale`` multiplies each row's gradient (backward of ``reduction='none'``)."""
        if self.kernel_ok(xc, out):
            return self.kernel_chunk(xc, s, e, want_grad, out, row_scale)
        opts, c, acc, zero = self.opts, self.c, self.acc, self.zero
        eps, z, cap = opts.label_smoothing, opts.z_loss, opts.softcap
        if cap is not None:
            th = torch.tanh(xc.to(acc) / cap)
            xc = th * cap
        # (not when the output is the logits themselves: the native path reads them after the softmax)
        native = self.native(xc.dtype) and (out is None or out.data_ptr() != xc.data_ptr())
        lp_out = out if out is not None and out.dtype == acc else None
        if native:
            # torch's bf16 softmax kernel (fp32 inside) writes p straight into the bf16 gradient buffer; the row's
            # log-sum-exp comes from the target's probability (or, for probability targets, the largest one)
            p = torch.softmax(xc, 1, out=out) if out is not None else torch.softmax(xc, 1)
            if self.probabilities:
                lse = xc.amax(1).to(acc) - p.amax(1).to(acc).log()
            else:  # lse = x_y - log p_y; a row whose p_y underflowed gets its log-sum-exp computed exactly
                p_y = p.gather(1, self.y_safe[s:e].unsqueeze(1)).squeeze(1).to(acc)
                lse = xc.gather(1, self.y_safe[s:e].unsqueeze(1)).squeeze(1).to(acc) - p_y.log()
                tiny = (p_y < 1e-30).nonzero().squeeze(1)
                if tiny.numel():
                    lse[tiny] = torch.logsumexp(xc[tiny].to(acc), 1)

            def lp_at(idx):
                return xc.gather(1, idx).squeeze(1).to(acc) - lse

            def lp_sum():
                return xc.sum(1, dtype=acc) - c * lse

            def lp_dot(v):
                return xc.to(acc) @ v - lse * v.sum()

            def lp_weighted(wt):
                return (wt * xc).sum(1) - lse * wt.sum(1)

            def lp_full():
                return xc.to(acc) - lse.unsqueeze(1)

        else:
            lse = torch.logsumexp(xc.to(acc), 1) if z > 0 else None
            # one fused kernel: max, log-sum-exp and x - lse, in the accumulation dtype (a chunk-sized temporary:
            # the softmax below writes the gradient buffer from it)
            lp = torch.log_softmax(xc, 1, dtype=acc)

            def lp_at(idx):
                return lp.gather(1, idx).squeeze(1)

            def lp_sum():
                return lp.sum(1)

            def lp_dot(v):
                return lp @ v

            def lp_weighted(wt):
                return (wt * lp).sum(1)

            def lp_full():
                return lp

        if self.probabilities:
            t = self.target[s:e].to(acc)
            t = t * (1 - eps) + eps / c if eps > 0 else t
            wt = t if self.w is None else t * self.w
            row = -lp_weighted(wt)
            if self.target_grad is not None:  # ∂l/∂t_c = -(1-ε)·w_c·lp_c, before lp turns into softmax
                factor = -(1 - eps) if self.scale is None else -(1 - eps) * self.scale
                gt = lp_full() * (factor if self.w is None else self.w * factor)
                self.target_grad[s:e].copy_(gt if row_scale is None else gt * row_scale.unsqueeze(1))
            if z > 0:
                row = row + z * lse * lse
            self.rows[s:e] = row
        else:
            yc = self.y_safe[s:e].unsqueeze(1)
            wyc, vc = self.w_y[s:e], self.valid[s:e]
            row = lp_at(yc).neg_() * wyc
            if eps > 0:
                smooth = lp_sum() if self.w is None else lp_dot(self.w)
                row = (1 - eps) * row - (eps / c) * smooth
            if z > 0:
                row = row + z * lse * lse
            self.rows[s:e] = torch.where(vc, row, zero)
        if not want_grad:
            return None
        scale = self.scale
        if row_scale is not None:
            scale = row_scale if scale is None else row_scale * scale
        if not native:
            # the gradient is softmax · coef - (target terms); softmax(lp) = exp(lp), but torch's softmax kernel
            # exponentiates several times faster than its elementwise exp on the CPU
            p = torch.softmax(lp, 1, out=lp_out) if lp_out is not None else torch.softmax(lp, 1)
        if self.probabilities:
            coef = wt.sum(1)
            if z > 0:
                coef = coef + 2 * z * lse
            if scale is not None:
                coef = coef * scale
            p.mul_(coef.unsqueeze(1))
            # per row (a tensor) exactly when row_scale is given: probability targets' own scale is 1/n, a float
            if isinstance(scale, torch.Tensor):
                p.sub_(wt * scale.unsqueeze(1))
            else:  # one pass, no (rows, C) temporary
                p.sub_(wt, alpha=1.0 if scale is None else scale)
        else:
            coef = (1 - eps) * wyc + (eps / c) * self.w_sum
            if z > 0:
                coef = coef + 2 * z * lse
            hit = (-(1 - eps)) * wyc
            if scale is not None:
                coef = coef * scale
                hit = hit * scale
            if p.dtype == acc:
                p.mul_(coef.unsqueeze(1))
                p.scatter_add_(1, yc, hit.unsqueeze(1))
            else:  # bf16: scale in bf16 (no promoted copies), set the target entries from fp32 values
                p.mul_(coef.to(p.dtype).unsqueeze(1))
                rows = torch.arange(e - s, device=p.device)  # index_put_: bf16 scatter_ copies the whole chunk
                p.index_put_((rows, yc.squeeze(1)), (p_y * coef + hit).to(p.dtype))
            if self.smooth_vec is not None:
                smooth_vec = self.smooth_vec if row_scale is None else row_scale.unsqueeze(1) * self.smooth_vec
                p.sub_(smooth_vec.to(p.dtype))
            ignored, ignored_rows = self.ignored
            lo, hi = bisect.bisect_left(ignored_rows, s), bisect.bisect_left(ignored_rows, e)
            if hi > lo:
                p.index_fill_(0, ignored[lo:hi] - s, 0.0)
        if cap is not None:
            p.mul_(th.mul_(th).neg_().add_(1))  # d(s·tanh(x/s))/dx = 1 - tanh²
        if out is not None and p.data_ptr() != out.data_ptr():
            out.copy_(p)
            return out
        return p

    def reduced(self, dtype):
        """The loss as the reduction asks, in ``dtype``. Sums (of the row losses and of the weights) are taken in
        float64 in an order fixed by the row count alone (:func:`native.fixed_order_sum`), so the loss does not
        depend on ``torch.get_num_threads()``."""
        if self.opts.reduction == "none":
            return self.rows.to(dtype)
        loss = native.fixed_order_sum(self.rows)
        if self.opts.reduction == "mean":
            denom = self.denom  # probabilities: the row count; class indices: Σ w_y over kept rows
            if not self.probabilities and not (self.w is None and self.w_y.numel() < 1 << 24):
                denom = native.fixed_order_sum(self.w_y)  # (a count below 2^24 is exact in any order)
            loss = loss / denom
            if isinstance(denom, torch.Tensor):  # class indices (probabilities divide by the int row count)
                # kept rows of total weight 0: torch's NLL part is 0/0 = nan
                loss = torch.where(denom == 0, torch.full_like(loss, float("nan")), loss)
        return loss.to(dtype)


def fused_pass(
    x, target, weight, opts: CrossEntropyOptions, want_grad: bool, out=None, want_target_grad=False, row_scale=None
):
    """Reduced loss and, if ``want_grad``, the gradient of the reduced loss w.r.t. ``x`` (rows, C), each row's
    gradient times ``row_scale`` when given (a backward folding ``grad_output`` in).

    The only (rows, C) buffer is the gradient (``out`` when given, e.g. the logits themselves);
    everything else is one chunk of rows at a time. Without grad, nothing of size (rows, C) is made.
    """
    n, c = x.shape
    acc = acc_dtype(x.dtype)
    plan = RowPlan(target, weight, opts, n, c, acc, x.device, want_grad)
    plan.exact = row_scale is not None
    if want_target_grad:
        plan.target_grad = torch.empty(target.shape, dtype=target.dtype, device=target.device)
    grad: torch.Tensor | None = None
    if want_grad:
        grad = out if out is not None else torch.empty(x.shape, dtype=x.dtype, device=x.device)
    kernel = plan.kernel_ok(x)  # the CPU kernel walks all rows in one call, each row staying in cache
    # chunks write straight into the gradient buffer
    direct = want_grad and (x.dtype == acc or plan.native(x.dtype) or kernel)
    step = max(n, 1) if kernel else rows_per_chunk(c)
    for s in range(0, n, step):
        e = min(n, s + step)
        rs = None if row_scale is None else row_scale[s:e]
        # (direct implies want_grad, and grad is set exactly when want_grad)
        p = plan.chunk(x[s:e], s, e, want_grad, out=grad[s:e] if direct and grad is not None else None, row_scale=rs)
        if grad is not None and not direct:
            grad[s:e].copy_(p)
    return plan.reduced(x.dtype), grad, plan.target_grad


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    opts: CrossEntropyOptions,
) -> torch.Tensor:
    """Checked arguments in, loss out (shape: the target's for ``'none'``, else a scalar)."""
    if not torch.is_grad_enabled():  # no_grad / inference_mode: no gradient is made, nothing is overwritten
        input, target = input.detach(), target.detach()
    probabilities = target.is_floating_point()
    rows_x = as_rows(input)
    if opts.inplace and rows_x.requires_grad:
        _checks.inplace_allowed("cross_entropy", input)
        if not rows_x.is_contiguous():  # e.g. a transposed product: work in a fresh buffer instead
            opts = dataclasses.replace(opts, inplace=False)
    if probabilities:
        rows_t = as_rows(target)
        out_shape = target.shape[:1] + target.shape[2:] if input.dim() > 1 else torch.Size([])
    else:
        rows_t = target.reshape(-1)
        out_shape = target.shape
    loss = _CrossEntropy.apply(rows_x, rows_t, weight, opts)
    if opts.inplace and rows_x.requires_grad:  # any later read of the overwritten logits now raises
        overwritten.poison(rows_x)
    if probabilities and target.dtype != input.dtype:  # torch promotes, e.g. float32 logits, float64 targets
        loss = loss.to(torch.promote_types(input.dtype, target.dtype))
    if opts.reduction == "none":
        loss = loss.reshape(out_shape)
    return loss
