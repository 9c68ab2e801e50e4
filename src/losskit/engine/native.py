"""losskit's optional CPU kernel (``kernels/cross_entropy.cpp``): built on first use, loaded with ctypes.

The kernel is plain C++ with a C ABI and no dependency beyond the C++ runtime, so building it takes about a
second with the system compiler (``$CXX``, else ``g++``/``c++``/``clang++``) and needs neither torch's
headers nor Python's. The library is cached per source, compiler flags, compiler version and CPU under
``$LOSSKIT_CACHE_DIR`` (default ``~/.cache/losskit``) and written atomically, so concurrent processes agree.

One ctypes call does a whole tensor: ctypes releases the GIL, and the kernel splits the rows over
``torch.get_num_threads()`` std::threads that all end before the call returns (nothing to clean up after an
interrupt or a fork). Everything else stays on torch ops: when there is no compiler, when the build fails,
or when ``LOSSKIT_NATIVE=0``, :func:`library` returns None and callers take their torch path, which computes
the same formulas. :func:`status` says which it is and why.
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
from pathlib import Path

import torch

SOURCE = Path(__file__).parent.parent / "kernels" / "cross_entropy.cpp"
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fno-math-errno"]
KERNEL_VERSION = 2  # what losskit_kernel_version() must return
BUILD_TIMEOUT_S = 120
# below this many elements one thread does the whole call (starting a thread costs tens of microseconds)
PARALLEL_ELEMENTS = 1 << 16
# /proc/cpuinfo lines that -march=native depends on (x86: model and flags; arm: implementer, part, features)
_CPU_KEYS = ("model name", "flags", "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "Features")

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_status = "not loaded yet"
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=BUILD_TIMEOUT_S)


def _cpu_key() -> str:
    """What -march=native depends on: the first line of each of :data:`_CPU_KEYS` in /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    seen: dict[str, str] = {}
    for line in info.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in _CPU_KEYS and key not in seen:
            seen[key] = line
    return "\n".join(seen.values()) or platform.machine()


def cache_dir() -> Path:
    return Path(os.environ.get("LOSSKIT_CACHE_DIR") or Path.home() / ".cache" / "losskit")


def _build(cxx: str) -> Path:
    version = _run([cxx, "--version"]).stdout
    parts = [SOURCE.read_bytes(), " ".join(FLAGS).encode(), cxx.encode(), version.encode(), _cpu_key().encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    target = cache_dir() / f"cross_entropy-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        result = _run([cxx, *FLAGS, "-o", str(built), str(SOURCE)])
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
        if lib.losskit_kernel_version() != KERNEL_VERSION:
            return None, f"{path} is kernel version {lib.losskit_kernel_version()}, not {KERNEL_VERSION}"
    except Exception as exc:  # noqa: BLE001 - any failure means: use torch ops, and say why
        return None, f"build failed, using torch ops: {type(exc).__name__}: {exc}"
    f = lib.losskit_ce_rows
    f.restype = ctypes.c_int64
    i64, ptr, dbl = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
    f.argtypes = [ctypes.c_int, ptr, i64, ptr, i64, i64, i64, ptr, ptr, dbl, dbl, dbl, dbl, ptr, ptr, ctypes.c_int]
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
        raise ValueError(
            f"cross_entropy kernel: '{name}' must be a contiguous CPU {dtype} tensor"
            + (f" of {rows} elements" if rows is not None else "")
            + f", got {t.dtype} {tuple(t.shape)} on {t.device}"
        )
    return t.data_ptr()


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
    if lib is None or not supports(x):
        raise ValueError(f"cross_entropy kernel: cannot take {x.dtype} {tuple(x.shape)} on {x.device} ({status()})")
    n, c = x.shape
    if grad is not None and (grad.shape != x.shape or grad.dtype != x.dtype or not supports(grad)):
        raise ValueError(f"cross_entropy kernel: 'grad' {grad.dtype} {tuple(grad.shape)} does not match the logits")
    pointers = (
        _checked(y, "y", torch.int64, n),
        _checked(weight, "weight", torch.float32, c),
        _checked(row_scale, "row_scale", torch.float32, n),
        _checked(rows, "rows", torch.float32, n),
    )
    threads = min(torch.get_num_threads(), n) if n * c >= PARALLEL_ELEMENTS else 1
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
        max(1, threads),
    )
    if grad is not None:  # written through a raw pointer: tell autograd, as an in-place torch op would
        torch.autograd.graph.increment_version(grad)
    if bad == -1:
        raise MemoryError(f"cross_entropy kernel: no memory for a scratch row of {c} floats")
    if bad:  # the checking layer validates targets first; this guards memory safety, not user input
        raise IndexError(f"cross_entropy kernel: target {int(y[bad - 1])} out of range [0, {c})")
