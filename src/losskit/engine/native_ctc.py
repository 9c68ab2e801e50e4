"""Loader of losskit's CPU CTC kernel (``kernels/ctc.cpp``): built on first use, loaded with ctypes.

A minimal, self-contained sibling of :mod:`losskit.engine.native` (which builds the cross-entropy kernel and is
being reworked; the two loaders are meant to be merged). It takes from ``native`` only its public
configuration (:func:`~losskit.engine.native.cache_dir`, :func:`~losskit.engine.native.isa_level`,
:func:`~losskit.engine.native.build_timeout`, ``$LOSSKIT_NATIVE``) and keeps the same safety rules:

* the cache directory must be this user's and not writable by group or others, else a private temporary
  directory is used for this process;
* a library is keyed by the sha256 of its source, flags, compiler and instruction-set level, recorded with its
  own sha256 in a 0600 file; the open file is hashed before ``dlopen`` and that very file is loaded;
* builds run under a ``flock`` in the cache directory, in their own process group, killed on timeout;
* any failure means ``library()`` returns None and callers take the torch-op path (:func:`status` says why).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from . import native

SOURCE = Path(__file__).parent.parent / "kernels" / "ctc.cpp"
FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fno-math-errno"]
VERSION = 1

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_status = "not loaded yet"
_done = False
_tmp_dirs: list[str] = []


class _BuildFailed(RuntimeError):
    """The kernel could not be built or loaded (callers take the torch-op path)."""


def _private_dir() -> Path:
    d = native.cache_dir() / "ctc"
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.stat(d)
        if st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and stat.S_ISDIR(st.st_mode):
            return d
    except OSError:
        pass
    if not _tmp_dirs:
        _tmp_dirs.append(tempfile.mkdtemp(prefix="losskit-ctc-"))
    return Path(_tmp_dirs[0])


def _compile(args: list[str], timeout: float) -> tuple[int, str]:
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return proc.returncode, out.decode(errors="replace")


def _open_verified(target: Path) -> ctypes.CDLL | None:
    record = target.with_name(target.name + ".sha256")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return None
        expected = record.read_text().strip()
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        if digest.hexdigest() != expected:
            return None
        path = f"/proc/self/fd/{fd}"
        lib = ctypes.CDLL(path if os.path.exists(path) else str(target))
        return lib if lib.losskit_ctc_version() == VERSION else None
    except (OSError, AttributeError):
        return None
    finally:
        os.close(fd)


def _build() -> tuple[ctypes.CDLL, Path]:
    import fcntl

    cxx = next(
        (shutil.which(c) for c in (os.environ.get("CXX"), "g++", "c++", "clang++") if c and shutil.which(c)), None
    )
    if cxx is None:
        raise _BuildFailed("no C++ compiler found (set CXX)")
    level = native.isa_level()
    arch = ["-march=native"] if level == "native" else [f"-march={level}", "-mtune=generic"]
    flags = [*FLAGS, *arch]
    timeout = native.build_timeout()
    version = _compile([cxx, "--version"], timeout)[1]
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(flags).encode(), cxx.encode(), version.encode()]))
    d = _private_dir()
    target = d / f"ctc-{level}-{key.hexdigest()[:16]}.so"
    lib = _open_verified(target)
    if lib is not None:
        return lib, target
    fd = os.open(d / (target.stem + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        lib = _open_verified(target)
        if lib is not None:
            return lib, target
        tmp = tempfile.mkdtemp(dir=d, prefix=".build-")
        try:
            built = Path(tmp) / target.name
            code, out = _compile([cxx, *flags, "-o", str(built), str(SOURCE)], timeout)
            if code != 0:
                raise _BuildFailed(f"{cxx} failed ({code}): {out.strip()[-2000:]}")
            os.chmod(built, 0o600)
            digest = hashlib.sha256(built.read_bytes()).hexdigest()
            os.replace(built, target)
            record = target.with_name(target.name + ".sha256")
            record.write_text(digest + "\n")
            os.chmod(record, 0o600)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        os.close(fd)
    lib = _open_verified(target)
    if lib is None:
        raise _BuildFailed(f"{target} was built but does not load as CTC kernel version {VERSION}")
    return lib, target


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    common: list[type[ctypes._SimpleCData[Any]]] = [cint, ptr, i64, i64, i64, i64, i64, i64, ptr, i64, ptr, ptr, i64]
    lib.losskit_ctc_forward.restype = i64
    lib.losskit_ctc_forward.argtypes = [*common, ptr, ptr, cint]
    lib.losskit_ctc_backward.restype = i64
    lib.losskit_ctc_backward.argtypes = [*common, ptr, ptr, ptr, cint, ptr, cint]


def library() -> ctypes.CDLL | None:
    """The CTC kernel, built on first use; None when unavailable (``LOSSKIT_NATIVE=0``, no compiler, a failed
    build, not POSIX). Another thread's call during the build gets None at once (torch ops for that call)."""
    global _lib, _status, _done
    if _done:
        return _lib
    if not _lock.acquire(blocking=False):
        return None
    try:
        if not _done:
            if os.environ.get("LOSSKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off", ""):
                _status = "disabled by LOSSKIT_NATIVE=0"
            elif os.name != "posix":
                _status = "the kernel is built on POSIX systems only; using torch ops"
            else:
                try:
                    _lib, path = _build()
                    _declare(_lib)
                    _status = f"loaded {path}"
                except Exception as exc:  # noqa: BLE001 - any failure means: use torch ops, and say why
                    _lib, _status = None, f"build failed, using torch ops: {type(exc).__name__}: {exc}"
            _done = True
    finally:
        _lock.release()
    return _lib


def status() -> str:
    """Why :func:`library` is or is not available (it tries to load first)."""
    library()
    return _status


__all__ = ["library", "status"]
