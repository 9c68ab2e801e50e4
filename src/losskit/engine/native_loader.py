"""One kernel library's life in a process: built (or taken from the cache) and loaded on first use, by one thread.

Each kernel library (cross entropy, element-wise, CTC) holds one :class:`Loader`. The rules:

* ``library()`` returns the loaded ``ctypes.CDLL`` or None; None means the caller computes with torch ops, and
  ``status()`` says why (disabled by ``LOSSKIT_NATIVE=0``, no compiler, not POSIX, a failed build);
* one thread builds; another thread's call meanwhile gets None at once (torch ops for that call), never waits;
* the outcome is kept for the life of the process; a failure warns once (not when disabled on purpose);
* a child forked while its parent was building starts over (the parent's lock and build are the parent's).
"""

from __future__ import annotations

import ctypes
import os
import threading
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path

from . import native_build

_loaders: weakref.WeakSet[Loader] = weakref.WeakSet()


class Loader:
    """``source`` built by :func:`.native_build.build_and_load` (its ``losskit_kernel_version()`` must be
    ``version``); ``declare(lib)`` sets the entries' argument and result types; ``what`` names it in messages."""

    def __init__(self, what: str, source: Path, version: int, declare: Callable[[ctypes.CDLL], None]) -> None:
        self.what, self.source, self.version, self.declare = what, source, version, declare
        self.lib: ctypes.CDLL | None = None
        self.status = "not loaded yet"
        self.state = "new"  # "new" -> "building" -> "done"
        self.lock = threading.Lock()
        _loaders.add(self)

    def _load(self) -> tuple[ctypes.CDLL | None, str]:
        if not native_build._truthy("LOSSKIT_NATIVE", "1"):
            return None, "disabled by LOSSKIT_NATIVE=0"
        if not self.source.exists():
            return None, f"kernel source missing: {self.source}"
        if os.name != "posix" or native_build.fcntl is None:
            return None, "the kernel is built on POSIX systems only; using torch ops"
        cxx = native_build._compiler()
        if cxx is None:
            return None, "no C++ compiler found (set CXX); using torch ops"
        sanitize = native_build.sanitizers()
        if sanitize and "address" in sanitize and "asan" not in os.environ.get("LD_PRELOAD", ""):
            return None, "LOSSKIT_SANITIZE asks for AddressSanitizer, which needs LD_PRELOAD of libasan; torch ops"
        try:
            lib, path = native_build.build_and_load(self.source, self.version, cxx, sanitize)
            self.declare(lib)
            lib.losskit_pool_openmp.restype = ctypes.c_int
            if native_build.in_forked_child():  # not the parent's OpenMP threads: losskit's own pool (pool.h)
                lib.losskit_pool_forked()
        except Exception as exc:  # noqa: BLE001 - any failure means: use torch ops, and say why
            return None, f"build failed, using torch ops: {type(exc).__name__}: {exc}"
        return lib, f"loaded {path}" + (f" (sanitizers: {sanitize})" if sanitize else "")

    def library(self) -> ctypes.CDLL | None:
        """The loaded library, built on first use; None when unavailable (:attr:`status` says why)."""
        if self.state == "done":
            return self.lib
        lock = self.lock
        if not lock.acquire(blocking=False):
            return None
        try:
            if self.state != "done":
                self.state, self.status = "building", "being built"
                try:
                    self.lib, self.status = self._load()
                    if self.lib is None and "LOSSKIT_NATIVE=0" not in self.status:
                        warnings.warn(
                            f"losskit: the {self.what} is not available ({self.status}). Results are the same, "
                            "computed with torch ops (slower, more memory). Install a C++ compiler (g++) or set "
                            "CXX; set LOSSKIT_NATIVE=0 to use torch ops without this warning.",
                            RuntimeWarning,
                            stacklevel=5,
                        )
                except BaseException as exc:  # KeyboardInterrupt, SystemExit: remembered, not retried
                    self.lib, self.status = None, f"build interrupted ({type(exc).__name__}); using torch ops"
                    raise
                finally:
                    self.state = "done"
        finally:
            lock.release()
        if self.lib is not None:
            from . import entry

            entry.bind_loaded()  # its entries to the C++ entry points, if those are loaded already
        return self.lib

    def _after_fork_in_child(self) -> None:
        self.lock = threading.Lock()
        if self.state == "building":
            self.state, self.status = "new", "not loaded yet"


def _after_fork_in_child() -> None:
    for loader in list(_loaders):
        loader._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
