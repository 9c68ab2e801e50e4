"""Loader of losskit's CPU CTC kernel (``kernels/ctc.cpp``): built on first use, loaded with ctypes.

Built, cached and loaded like the other kernels (:mod:`.native_build`: a private cache keyed by the sha256 of
the source, its headers, flags, compiler and instruction-set level; the open file hashed before ``dlopen``;
builds under a lock, in their own process group, killed on timeout) through a :class:`.native_loader.Loader`:
any failure means :func:`library` returns None and callers take the torch-op path (:func:`status` says why).
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import torch
from torch._C import _functions as _autograd_functions

from .. import _checks
from .._tracing import _is_compiling, capturing
from . import entry
from .autograd import eager_apply
from .native_loader import Loader

SOURCE = Path(__file__).parent.parent / "kernels" / "ctc.cpp"
VERSION = 2  # what its losskit_kernel_version() returns
# From this many (frame, sample, extended position) cells a call hands its samples to the kernel's parallel loop
# (kernels/pool.h); a cell costs a few exp/log, 10-20 ns.
PARALLEL_CELLS = 1 << 10
DTYPES = {torch.float32: 0, torch.float64: 1}  # the kernel's dtype codes


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    common: list[type[ctypes._SimpleCData[Any]]] = [cint, ptr, i64, i64, i64, i64, i64, i64, ptr, i64, ptr, ptr, i64]
    lib.losskit_ctc_forward.restype = i64
    lib.losskit_ctc_forward.argtypes = [*common, ptr, ptr, cint]
    lib.losskit_ctc_backward.restype = i64
    lib.losskit_ctc_backward.argtypes = [*common, ptr, ptr, ptr, cint, ptr, cint]


_loader = Loader("CTC CPU kernel", SOURCE, VERSION, _declare)


def library() -> ctypes.CDLL | None:
    """The CTC kernel, built on first use; None when unavailable (``LOSSKIT_NATIVE=0``, no compiler, a failed
    build, not POSIX). Another thread's call during the build gets None at once (torch ops for that call)."""
    return _loader.lib if _loader.state == "done" else _loader.library()


def status() -> str:
    """Why :func:`library` is or is not available (it tries to load first)."""
    library()
    return _loader.status


def threads(t: int, n: int, k: int) -> int:
    """Threads for ``n`` samples of ``t`` frames and targets of (padded) length ``k``."""
    return 1 if t * n * (2 * k + 1) < PARALLEL_CELLS else max(1, min(torch.get_num_threads(), n))


def kernel_args(lp, y, il, tl, blank: int) -> tuple:
    """The arguments the kernel's two entries share, for ``(T, N, C)`` log-probs and ``(N, K)`` int64 targets."""
    t, n, c = lp.shape
    return (
        DTYPES[lp.dtype],
        lp.data_ptr(),
        t,
        n,
        c,
        *lp.stride(),
        y.data_ptr(),
        y.shape[1],
        il.data_ptr(),
        tl.data_ptr(),
        blank,
    )


def _reduce(nll, lengths, reduction: str, zero_infinity: bool):
    """torch's reduction of the per-sample losses (its ops, in its order); ``lengths``: the target lengths in
    the loss's dtype, at least 1 ('mean' only)."""
    if zero_infinity:
        nll = torch.where(nll == float("inf"), torch.zeros((), dtype=nll.dtype), nll)
    if reduction == "mean":
        return (nll / lengths).mean()
    return nll.sum() if reduction == "sum" else nll


class _EagerCTC(torch.autograd.Function):
    """The eager ``ctc_loss`` of the common case once the forward kernel has run (``state``: the targets,
    lengths, alpha and per-sample nll, blank, reduction, zero_infinity, and for 'mean' the target lengths as
    divisors, made once for both passes): forward reduces, backward turns the
    incoming gradient into torch's per-sample one (through the reduction's own backward) and runs the kernel's
    backward. As torch's, the gradient is not differentiable again."""

    @staticmethod
    def forward(ctx, lp, state):
        *_, nll, _blank, reduction, zero_infinity, lengths = state
        # nll saved (for 'none' it is the output): an in-place change of the loss before backward raises, as torch's
        ctx.save_for_backward(lp, nll)
        ctx.state = state
        return _reduce(nll, lengths, reduction, zero_infinity)

    @staticmethod
    def backward(ctx, grad_output):
        lp, nll = ctx.saved_tensors
        y, il, tl, alpha, _, blank, reduction, zero_infinity, lengths = ctx.state
        n = nll.shape[0]
        with torch.no_grad():
            go = grad_output.to(nll.dtype)
            # 'mean': MeanBackward then DivBackward, as torch's autograd computes them
            per = go if reduction == "none" else (go / n).expand(n) / lengths if reduction == "mean" else go.expand(n)
            if zero_infinity:
                per = torch.where(nll == float("inf"), torch.zeros((), dtype=nll.dtype), per)
            per = per.contiguous()
            grad = torch.empty(lp.shape, dtype=lp.dtype)
            code = library().losskit_ctc_backward(  # type: ignore[union-attr]
                *kernel_args(lp, y, il, tl, blank),
                alpha.data_ptr(),
                nll.data_ptr(),
                per.data_ptr(),
                int(zero_infinity),
                grad.data_ptr(),
                threads(lp.shape[0], n, y.shape[1]),
            )
        _checks.sequence.ctc_kernel_error("ctc_loss", code)  # only "out of memory" can be left here
        if torch.is_grad_enabled():  # create_graph=True: differentiating it again is an error (as torch's)
            grad = not_twice(grad)
        return grad, None


_apply = eager_apply(_EagerCTC)


def _int64(t):
    return t if t.dtype is torch.int64 and t.is_contiguous() else t.to(torch.int64).contiguous()


def not_twice(grad: torch.Tensor) -> torch.Tensor:
    """The gradient under create_graph=True behind a node that raises if it is differentiated again (as torch's)."""
    message = b"losskit: derivative for ctc_loss's backward is not implemented (as in torch)"
    return _autograd_functions.DelayedError(message, 1)(grad.requires_grad_())


def plain(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    """The eager ctc_loss of the common case, or None: ``(T, N, C)`` fp32/fp64 CPU log-probs, padded ``(N, S)``
    int32/int64 targets and ``(N,)`` int32/int64 length tensors on the CPU, an int blank, a bool zero_infinity.
    The lengths and labels are validated by the kernel; any invalid one returns None, and the loss's general
    path raises the clear error."""
    if not _is_compiling() and (fast := entry.module or entry.get()) is not None:
        out = fast.ctc(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity)  # C++
        if out is not None:
            return out
    if not (
        not (capturing())
        and type(log_probs) is torch.Tensor
        and type(targets) is torch.Tensor
        and type(input_lengths) is torch.Tensor
        and type(target_lengths) is torch.Tensor
        and (log_probs.dtype is torch.float32 or log_probs.dtype is torch.float64)
        and log_probs.dim() == 3
        and log_probs.is_cpu
        and not (log_probs.is_neg() or log_probs.is_conj())
        and log_probs.shape[1] > 0
        and targets.dim() == 2
        and targets.shape[0] == log_probs.shape[1]
        and (targets.dtype is torch.int64 or targets.dtype is torch.int32)
        and targets.is_cpu
        and input_lengths.shape == (log_probs.shape[1],)
        and target_lengths.shape == input_lengths.shape
        and (input_lengths.dtype is torch.int64 or input_lengths.dtype is torch.int32)
        and (target_lengths.dtype is torch.int64 or target_lengths.dtype is torch.int32)
        and input_lengths.is_cpu
        and target_lengths.is_cpu
        and type(blank) is int
        and _checks.fits_int64(blank)
        and (reduction == "mean" or reduction == "sum" or reduction == "none")
        and type(zero_infinity) is bool
        and (_loader.lib if _loader.state == "done" else _loader.library()) is not None
    ):
        return None
    t, n, _ = log_probs.shape
    y, il, tl = _int64(targets), _int64(input_lengths), _int64(target_lengths)
    alpha = log_probs.new_empty(n, t, 2 * y.shape[1] + 1)
    nll = log_probs.new_empty(n)
    code = _loader.lib.losskit_ctc_forward(  # type: ignore[union-attr]
        *kernel_args(log_probs, y, il, tl, blank), alpha.data_ptr(), nll.data_ptr(), threads(t, n, y.shape[1])
    )
    if code != 0:  # an invalid length or label (the general path says which), or no memory (it tries again)
        return None
    lengths = tl.to(nll.dtype).clamp_min(1) if reduction == "mean" else None
    if log_probs.requires_grad and torch.is_grad_enabled():
        return _apply(log_probs, (y, il, tl, alpha, nll, blank, reduction, zero_infinity, lengths))
    return _reduce(nll, lengths, reduction, zero_infinity)


__all__ = ["library", "plain", "status"]
