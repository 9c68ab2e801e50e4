"""losskit's optional CPU kernel (``kernels/cross_entropy.cpp``): built on first use, loaded with ctypes.

The kernel is plain C++ with a C ABI and no dependency beyond the C++ runtime, so building it takes about a
second with the system compiler (``$CXX``, else ``g++``/``c++``/``clang++``) and needs neither torch's
headers nor Python's. One ctypes call does a whole tensor: ctypes releases the GIL, and the kernel splits the
rows over ``torch.get_num_threads()`` std::threads that all end before the call returns (nothing to clean up
after an interrupt or a fork). When there is no compiler, when the build fails or times out, or when
``LOSSKIT_NATIVE=0``, :func:`library` returns None and callers take their torch path, which computes the same
formulas. :func:`status` says which it is and why.

How it is built, cached (private, sha256-verified, one build for many processes), bounded in time
(``LOSSKIT_BUILD_TIMEOUT``) and sanitized (``LOSSKIT_SANITIZE``) is :mod:`losskit.engine.native_build`. Here: a
failed or interrupted build is remembered for the process (torch ops from then on, no rebuild on every call);
while one thread builds, other threads do not wait for it (their calls take the torch path until the library
is ready); a child forked while a thread builds gets a fresh lock and builds or loads on its own.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from .native_build import (  # noqa: F401 - the build configuration, also used by native_ctc and the tests
    _compiler,
    _flags,
    _truthy,
    build_and_load,
    build_timeout,
    cache_dir,
    fcntl,
    isa_level,
    sanitizers,
)
from .native_loader import Loader


class _KernelArgumentError(ValueError):
    """A call of the kernel that losskit's own code got wrong (checked before a pointer reaches C++)."""


class _KernelOutOfMemory(MemoryError):
    """The kernel could not allocate its scratch row."""


class _KernelTargetError(IndexError):
    """A target outside [0, C) that reached the kernel (the checking layer validates targets first)."""


SOURCE = Path(__file__).parent.parent / "kernels" / "cross_entropy.cpp"
KERNEL_VERSION = 6  # what losskit_kernel_version() must return
# The kernel hands chunks of about CHUNK_ELEMENTS (whole rows) to its parallel loop (kernels/pool.h: torch's own
# OpenMP threads, or losskit's pool of waiting threads; starting a std::thread per call cost 60-80 µs on the VMs
# measured, a chunk's work about 10 µs); from PARALLEL_ELEMENTS (two chunks) a call offers torch's thread count,
# below it runs on the caller's.
CHUNK_ELEMENTS = 1 << 14
PARALLEL_ELEMENTS = 2 * CHUNK_ELEMENTS

_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


# ================================================================================ loading


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr, dbl = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
    f = lib.losskit_ce_rows
    f.restype = i64
    f.argtypes = [ctypes.c_int, ptr, i64, ptr, i64, i64, i64, ptr, ptr, dbl, dbl, dbl, dbl, ptr, ptr, ctypes.c_int]
    g = lib.losskit_ce_small  # engine/small.py: a whole small problem in one call
    g.restype = i64
    g.argtypes = [ptr]  # a SmallCall struct (see small.py)
    h = lib.losskit_ce_bf16_ne  # see bf16_conversion()
    h.restype, h.argtypes = ctypes.c_int, [ctypes.c_int]
    s = lib.losskit_ce_stream_bytes  # see stream_bytes()
    s.restype, s.argtypes = dbl, [dbl]
    t = lib.losskit_ce_tiny_classes  # see tiny_classes()
    t.restype, t.argtypes = i64, [i64]


_loader = Loader("CPU kernel", SOURCE, KERNEL_VERSION, _declare)


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first use; None when unavailable (see :func:`status`).

    Only one thread builds; a call from another thread meanwhile returns None at once (torch ops for that
    call) instead of waiting for the compiler."""
    return _loader.lib if _loader.state == "done" else _loader.library()


def status() -> str:
    """Why :func:`library` is or is not available (it tries to load first)."""
    library()
    return _loader.status


# ================================================================================ calling


def supports(x: torch.Tensor) -> bool:
    """Whether the kernel takes these (rows, C) logits: CPU, fp32 or bf16, unit stride along classes, plain
    storage (no lazy negation or conjugation)."""
    return (
        x.device.type == "cpu"
        and x.dtype in _DTYPES
        and x.dim() == 2
        and (x.stride(1) == 1 or x.shape[1] <= 1)
        and not x.is_neg()
        and not x.is_conj()
        and library() is not None
    )


def _checked(t: torch.Tensor | None, name: str, dtype: torch.dtype, rows: int | None = None) -> int | None:
    """The data pointer of a CPU tensor of ``dtype`` that the kernel reads as a flat array (None for None)."""
    if t is None:
        return None
    if t.device.type != "cpu" or t.dtype != dtype or not t.is_contiguous() or (rows is not None and t.numel() < rows):
        raise _KernelArgumentError(
            f"cross_entropy kernel: '{name}' must be a contiguous CPU {dtype} tensor"
            + (f" of {rows} elements" if rows is not None else "")
            + f", got {t.dtype} {tuple(t.shape)} on {t.device}"
        )
    return t.data_ptr()


def threads_for(n: int, c: int) -> int:
    """Threads for ``n`` rows of ``c`` classes: ``torch.get_num_threads()`` (at most one per row), one below
    :data:`PARALLEL_ELEMENTS`."""
    if n * c < PARALLEL_ELEMENTS:
        return 1
    return max(1, min(torch.get_num_threads(), n))


def cross_entropy_rows(
    x: torch.Tensor,
    grad: torch.Tensor | None,
    y: torch.Tensor,
    weight: torch.Tensor | None,
    w_sum: float,
    eps: float,
    z: float,
    scale: float,
    row_scale: torch.Tensor | None,
    rows: torch.Tensor,
) -> None:
    """Row losses of class-index cross entropy into ``rows`` (fp32) and, when ``grad`` is given (same dtype as
    ``x``, unit class stride, possibly ``x`` itself), the gradient of ``scale·Σ rows`` scaled per row by
    ``row_scale``. ``y`` is int64 with -1 for ignored rows; ``weight`` fp32 or None. See the kernel's header.

    Any alignment is fine: the kernel reads and writes through ``memcpy``."""
    lib = library()
    if lib is None or not supports(x):
        raise _KernelArgumentError(
            f"cross_entropy kernel: cannot take {x.dtype} {tuple(x.shape)} on {x.device} ({status()})"
        )
    n, c = x.shape
    if grad is not None and (grad.shape != x.shape or grad.dtype != x.dtype or not supports(grad)):
        raise _KernelArgumentError(
            f"cross_entropy kernel: 'grad' {grad.dtype} {tuple(grad.shape)} does not match the logits"
        )
    pointers = (
        _checked(y, "y", torch.int64, n),
        _checked(weight, "weight", torch.float32, c),
        _checked(row_scale, "row_scale", torch.float32, n),
        _checked(rows, "rows", torch.float32, n),
    )
    if grad is not None:
        # written through a raw pointer: tell autograd, as an in-place torch op would, and before the write, so
        # that no interrupt (Ctrl-C arrives when the foreign call returns) can leave it written but unbumped
        torch.autograd.graph.increment_version(grad)
    bad = lib.losskit_ce_rows(
        _DTYPES[x.dtype],
        x.data_ptr(),
        x.stride(0),
        None if grad is None else grad.data_ptr(),
        0 if grad is None else grad.stride(0),
        n,
        c,
        pointers[0],
        pointers[1],
        w_sum,
        eps,
        z,
        scale,
        pointers[2],
        pointers[3],
        threads_for(n, c),
    )
    if bad == -1:
        raise _KernelOutOfMemory(f"cross_entropy kernel: no memory for a scratch row of {c} floats")
    if bad:  # the checking layer validates targets first; this guards memory safety, not user input
        raise _KernelTargetError(f"cross_entropy kernel: target {int(y[bad - 1])} out of range [0, {c})")


def bf16_conversion(native: bool | None = None) -> bool:
    """Whether the kernel rounds bf16 gradients with AVX-512 BF16's ``vcvtneps2bf16`` (True; chosen where the CPU
    has it) or with integer operations (False). Both give the same bits; ``native`` chooses (True only takes
    effect where the CPU has it), None only asks. For tests and benchmarks; the setting is per process."""
    lib = library()
    if lib is None:
        return False
    return bool(lib.losskit_ce_bf16_ne(-1 if native is None else int(native)))


def stream_bytes(value: float | None = None) -> float:
    """The gradient size in bytes from which the kernel writes the gradient with non-temporal stores (they skip
    reading each line before writing it, which pays once the gradient is larger than the caches; 8 MiB unless
    set). ``value`` sets it, None only asks. For tests and benchmarks; the setting is per process."""
    lib = library()
    if lib is None:
        return float("inf")
    return float(lib.losskit_ce_stream_bytes(-1.0 if value is None else float(value)))


def tiny_classes(value: int | None = None) -> int:
    """Rows of at most this many classes (and at most two vectors: 16 classes with AVX2, 32 with AVX-512) go
    through the kernel's straight-line ``tiny_rows`` instead of its general row loop (same arithmetic, same bits).
    ``value`` sets it (0: the general loop always), None only asks. For tests; the setting is per process."""
    lib = library()
    if lib is None:
        return 0
    return int(lib.losskit_ce_tiny_classes(-1 if value is None else int(value)))


# ================================================================================ a sum in a fixed order

SUM_BLOCK = 2048  # below torch's parallel grain (32768): one block is summed by one thread


def fixed_order_sum(t: torch.Tensor) -> torch.Tensor:
    """Σ t (1-D) in float64 (at least), in an order that depends on the length alone, never on the thread count:
    blocks of :data:`SUM_BLOCK` elements, each summed by one thread, then the block sums the same way."""
    acc = t.dtype if t.device.type == "mps" else torch.promote_types(t.dtype, torch.float64)  # mps: no float64
    t = t.reshape(-1)
    if t.numel() <= SUM_BLOCK:  # one op for the small batches of eager training loops
        return t.sum(dtype=acc)
    t = t.to(acc)
    while t.numel() > SUM_BLOCK:
        pad = -t.numel() % SUM_BLOCK
        if pad:
            t = torch.cat([t, t.new_zeros(pad)])
        t = t.view(-1, SUM_BLOCK).sum(1)
    return t.sum()


__all__ = [
    "KERNEL_VERSION",
    "bf16_conversion",
    "cache_dir",
    "cross_entropy_rows",
    "fixed_order_sum",
    "isa_level",
    "library",
    "status",
    "stream_bytes",
    "tiny_classes",
    "supports",
]
