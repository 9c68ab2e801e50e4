"""losskit's optional CPU kernel (``kernels/cross_entropy.cpp``): built on first use, loaded with ctypes.

The kernel is plain C++ with a C ABI and no dependency beyond the C++ runtime, so building it takes about a
second with the system compiler (``$CXX``, else ``g++``/``c++``/``clang++``) and needs neither torch's
headers nor Python's. The library is cached per source, compiler flags and CPU under
``$LOSSKIT_CACHE_DIR`` (default ``~/.cache/losskit``) and written atomically, so concurrent processes agree.

Rows are split over ``torch.get_num_threads()`` threads of a small pool; ctypes releases the GIL for the
call, so they run in parallel. Everything else stays on torch ops: when there is no compiler, when the
build fails, or when ``LOSSKIT_NATIVE=0``, :func:`library` returns None and callers take their torch path,
which computes the same formulas. :func:`status` says which it is and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels") / "cross_entropy.cpp"
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno"]
# below this many elements one thread does the whole call (a thread hand-off costs tens of microseconds)
PARALLEL_ELEMENTS = 1 << 16

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_status = "not loaded yet"
_pool: ThreadPoolExecutor | None = None
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_key() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def cache_dir() -> Path:
    return Path(os.environ.get("LOSSKIT_CACHE_DIR") or Path.home() / ".cache" / "losskit")


def _build(cxx: str) -> Path:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), cxx.encode(), _cpu_key().encode()]))
    target = cache_dir() / f"cross_entropy-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run(
            [cxx, *FLAGS, "-o", str(built), str(SOURCE)], capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"{cxx} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        os.replace(built, target)  # atomic: another process sees the whole library or none
    return target


def _load() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("LOSSKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "disabled by LOSSKIT_NATIVE=0"
    if not SOURCE.exists():
        return None, f"kernel source missing: {SOURCE}"
    cxx = _compiler()
    if cxx is None:
        return None, "no C++ compiler found (set CXX); using torch ops"
    try:
        path = _build(cxx)
        lib = ctypes.CDLL(str(path))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return None, f"build failed, using torch ops: {exc}"
    f = lib.losskit_ce_rows
    f.restype = ctypes.c_int64
    i64, ptr, dbl = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
    f.argtypes = [ctypes.c_int, ptr, i64, ptr, i64, i64, i64, i64, ptr, ptr, dbl, dbl, dbl, dbl, ptr, ptr]
    return lib, f"loaded {path}"


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first use; None when unavailable (see :func:`status`)."""
    global _lib, _status
    if _status == "not loaded yet":
        with _lock:
            if _status == "not loaded yet":
                _lib, _status = _load()
    return _lib


def status() -> str:
    """Why :func:`library` is or is not available (it tries to load first)."""
    library()
    return _status


def supports(x: torch.Tensor) -> bool:
    """Whether the kernel takes these (rows, C) logits: CPU, fp32 or bf16, unit stride along classes."""
    return (
        x.device.type == "cpu"
        and x.dtype in _DTYPES
        and x.dim() == 2
        and (x.stride(1) == 1 or x.shape[1] <= 1)
        and library() is not None
    )


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="losskit")
        return _pool


def _after_fork_in_child() -> None:
    """A forked child inherits the pool object but none of its threads (and maybe a held lock): start over."""
    global _lock, _pool
    _lock, _pool = threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


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
    ``row_scale``. ``y`` is int64 with -1 for ignored rows; ``weight`` fp32 or None. See the kernel's header."""
    lib = library()
    assert lib is not None and supports(x)
    n, c = x.shape
    for t in (y, rows, weight, row_scale):
        assert t is None or t.is_contiguous()
    args = (
        _DTYPES[x.dtype],
        x.data_ptr(),
        x.stride(0),
        _ptr(grad),
        0 if grad is None else grad.stride(0),
    )
    tail = (c, y.data_ptr(), _ptr(weight), w_sum, eps, z, scale, _ptr(row_scale), rows.data_ptr())
    parts = min(torch.get_num_threads(), n) if n * c >= PARALLEL_ELEMENTS else 1
    if parts <= 1:
        results = [lib.losskit_ce_rows(*args, 0, n, *tail)]
    else:
        pool = _thread_pool(parts)
        bounds = [n * k // parts for k in range(parts + 1)]
        futures = [pool.submit(lib.losskit_ce_rows, *args, bounds[k], bounds[k + 1], *tail) for k in range(parts)]
        results = [f.result() for f in futures]
    bad = [r for r in results if r]
    if bad:  # the checking layer validates targets first; this guards memory safety, not user input
        raise IndexError(f"cross_entropy kernel: target {int(y[bad[0] - 1])} out of range [0, {c})")
