"""losskit's eager entry points (``kernels/entry.cpp``): the common eager call of the small-call losses (NLL,
multi-class and multi-label margin, the element-wise losses) in one Python-to-C++ call, with a C++ autograd node.

Why: at a classifier's batch (32×10) a loss costs its fixed cost, and a Python ``autograd.Function`` with nothing
in it costs as much as torch's whole NLL forward+backward. The entry module does the checks, calls the same
kernel as the Python path (so both give the same bits) and attaches a C++ node; anything it does not take
returns None and the Python path runs (and raises the clear errors).

The module is a Python extension built against the running torch (its headers ship in the wheel). Building it
takes a C++ compiler ~20–40 s, so by default that happens **in a background thread** on the first call that
could use it: calls meanwhile take the Python path, later ones the entry (same results). It lives in the kernels'
private cache (:mod:`.native_build`: keyed by source, torch version, Python, compiler; verified before loading),
so later processes load it at once. ``LOSSKIT_ENTRY=0`` turns it off, ``LOSSKIT_ENTRY=sync`` builds it in the
calling thread (tests); it is off with ``LOSSKIT_NATIVE=0``. Under ``LOSSKIT_SANITIZE`` it is instrumented like the
kernels (its own cache key).
"""

from __future__ import annotations

import ctypes
import os
import sys
import sysconfig
import threading
from pathlib import Path
from typing import Any

import torch

from . import native_build

SOURCE = Path(__file__).parent.parent / "kernels" / "entry.cpp"
VERSION = 1  # what its losskit_kernel_version() returns
MODULE = "losskit_entry"

module: Any = None  # the bound module once ready (hot paths read it: `entry.module or entry.get()`)
_state = "new"  # "new" -> "building" -> "done"
_status = "not loaded yet"
_lock = threading.Lock()
_ready = threading.Event()


def get() -> Any:
    """The entry module, or None: not built yet (the first call starts the build), being built, or unavailable."""
    if module is not None:
        return module
    if _state == "new":
        _start()
    return None


def status() -> str:
    return _status


def wait(timeout: float | None = None) -> Any:
    """The entry module once its build (started now if need be) is over, or None if it is unavailable; with every
    kernel library loaded and bound to it (the steady state, for tests and benchmarks)."""
    from . import native, native_ctc, native_pointwise

    get()
    for load in (native_pointwise.library, native.library, native_ctc.library):
        load()
    _ready.wait(timeout)
    return module


def _mode() -> str:
    return os.environ.get("LOSSKIT_ENTRY", "background").strip().lower()


def _start() -> None:
    global _state, _status
    with _lock:
        if _state != "new":
            return
        _state = "building"
    mode = _mode()
    if mode in ("0", "false", "no", "off") or not native_build._truthy("LOSSKIT_NATIVE", "1"):
        _finish(None, f"disabled ({'LOSSKIT_ENTRY' if mode in ('0', 'false', 'no', 'off') else 'LOSSKIT_NATIVE'}=0)")
    elif (
        (sanitize := native_build.sanitizers())
        and "address" in sanitize
        and "asan" not in os.environ.get("LD_PRELOAD", "")
    ):
        _finish(None, "LOSSKIT_SANITIZE asks for AddressSanitizer, which needs LD_PRELOAD of libasan")
    elif mode == "sync":
        _build()
    else:
        _status = "being built in the background"
        threading.Thread(target=_build, name="losskit-entry-build", daemon=True).start()


def _finish(built: Any, status: str) -> None:
    global module, _state, _status
    module, _status, _state = built, status, "done"
    _ready.set()


def _flags() -> tuple[list[str], list[str]]:
    root = Path(torch.__file__).parent
    include = [root / "include", root / "include" / "torch" / "csrc" / "api" / "include"]
    flags = ["-O2", "-std=c++20", "-shared", "-fPIC", "-pthread", f"-DTORCH_EXTENSION_NAME={MODULE}"]
    sanitize = native_build.sanitizers()
    if sanitize:  # LOSSKIT_SANITIZE: instrumented like the kernels (torch's own types are not: no vptr checks)
        flags = [f for f in flags if f != "-O2"] + [*native_build.SANITIZE_FLAGS, f"-fsanitize={sanitize}"]
        flags += ["-fno-sanitize=vptr"] if "undefined" in sanitize else []
    flags += [f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    # what the build depends on, in its cache key: torch's version and Python's
    flags += [f"-DLOSSKIT_TORCH={torch.__version__}", f"-DLOSSKIT_PYTHON={sys.implementation.cache_tag}"]
    flags += [f"-I{p}" for p in (*include, sysconfig.get_paths()["include"])]
    lib = root / "lib"
    libs = [f"-L{lib}", "-lc10", "-ltorch_cpu", "-ltorch", "-ltorch_python", f"-Wl,-rpath,{lib}"]
    return flags, libs


def _build() -> None:
    try:
        cxx = native_build._compiler()
        if cxx is None:
            _finish(None, "unavailable: no C++ compiler")
            return
        flags, libs = _flags()
        built, path = native_build.build_and_load_extension(SOURCE, VERSION, cxx, MODULE, flags, libs)
        built.set_create_graph(_create_graph)
    except BaseException as exc:  # any failure means: the Python path, and say why (Ctrl-C: then re-raised)
        _finish(None, f"unavailable, using the Python path: {type(exc).__name__}: {str(exc)[-500:]}")
        if not isinstance(exc, Exception):
            raise
        return
    _finish(built, f"loaded {path}")
    bind_loaded()


_bound: set[str] = set()
_bind_lock = threading.Lock()


def _address(fn) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value or 0


def bind_loaded() -> None:
    """Hands every loaded kernel library's entries to the entry module (once each). Called when the module is
    ready and whenever a kernel library finishes loading (:class:`.native_loader.Loader`): whichever comes second
    binds. An entry point whose kernel is not bound hands its calls back (the Python path loads the kernel)."""
    if module is None:
        return
    from . import native, native_ctc, native_pointwise, small

    with _bind_lock:
        lib = native_pointwise._loader.lib
        if "pointwise" not in _bound and lib is not None:
            fns = (lib.losskit_nll, lib.losskit_multi_margin, lib.losskit_multilabel_margin, lib.losskit_pointwise)
            module.bind_pointwise(*(_address(fn) for fn in fns), native_pointwise.PARALLEL_ELEMENTS)
            _bound.add("pointwise")
        lib = native._loader.lib
        if "cross_entropy" not in _bound and lib is not None:
            module.bind_cross_entropy(_address(lib.losskit_ce_small), small.MAX_ELEMENTS)
            _bound.add("cross_entropy")
        lib = native_ctc._loader.lib
        if "ctc" not in _bound and lib is not None:
            module.bind_ctc(
                _address(lib.losskit_ctc_forward), _address(lib.losskit_ctc_backward), native_ctc.PARALLEL_CELLS
            )
            _bound.add("ctc")


# ================================================================================ element-wise states

_STATES: list[tuple] = []  # (spec, params, reduction, divisor) by the id the C++ node keeps
_CODES: dict[tuple, tuple | None] = {}  # (spec, params, reduction, divisor) -> (kind, p, id), or None: not native
_MAX_STATES = 4096
_PLAIN = (bool, int, float, str, type(None))
_states_lock = threading.Lock()


def pointwise_code(spec, params, reduction: str, divisor) -> tuple | None:
    """(kind, p, state id) of an element-wise loss's call for :func:`get`'s ``pointwise``; None when the kernel
    does not compute it, or its parameters are not plain values (ints, floats, bools, None, tuples of them) or
    there have been too many distinct ones (4096: the table lives as long as the process); the Python path
    takes those."""
    if not (type(params) in _PLAIN or (type(params) is tuple and all(type(p) in _PLAIN for p in params))):
        return None
    key = (spec, params, reduction, divisor)
    if key in _CODES:
        return _CODES[key]
    code = spec.native(params)
    with _states_lock:  # one id per state, also when threads meet here
        if key in _CODES:
            return _CODES[key]
        if len(_CODES) >= _MAX_STATES:
            return None
        found = None if code is None else (code[0], float(code[1]), len(_STATES))
        if found is not None:
            _STATES.append(key)
        _CODES[key] = found
    return found


def _create_graph(name: str, tensors: tuple, state: Any, grad_output: torch.Tensor) -> torch.Tensor:
    """The gradient, in differentiable torch ops, of an entry's loss under ``create_graph=True``."""
    if name == "ctc":
        from .native_ctc import not_twice

        return not_twice(tensors[0])
    if name == "cross_entropy":
        from .small import create_graph_grad

        logits, target = tensors
        return create_graph_grad(logits, target, state, grad_output)
    if name == "multi_margin":
        from .native_targets import _mm_grad

        x, y, w = tensors
        return _mm_grad(x, y, w, *state) * grad_output
    from .pointwise import differentiable_grad

    spec, params, reduction, divisor = _STATES[state]
    x, t = tensors
    if divisor is not None:
        grad_output = grad_output / divisor
    return differentiable_grad(spec, params, x, t, None, reduction, False, grad_output)


def _after_fork_in_child() -> None:
    global _state, _lock, _ready, _bind_lock, _states_lock
    _lock, _bind_lock, _states_lock = threading.Lock(), threading.Lock(), threading.Lock()
    if _state == "building":  # the parent's build thread is not in this process
        _state, _ready = "new", threading.Event()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
