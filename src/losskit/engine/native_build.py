"""Building, caching, verifying and loading losskit's C++ kernels (plain C ABI, loaded with ctypes).

Used by :mod:`losskit.engine.native`, which says what the kernel is for; this module only knows how to turn a
source file into a loaded library, safely:

**Instruction set.** On x86-64 a library is built for the best of three fixed levels that this CPU runs
(``x86-64-v4``: AVX-512; ``x86-64-v3``: AVX2 + FMA; else baseline ``x86-64``), chosen at run time from the
CPU's flags. The level is part of the cache key and nothing CPU-specific beyond it is, so one cache shared by
several machines holds one build per level and each machine loads the one it can run. Other architectures
build with ``-march=native`` and key on the CPU's identification lines. ``LOSSKIT_ISA=x86-64-v3`` (or
``x86-64``) asks for a lower level, e.g. to test the AVX2 build on an AVX-512 machine.

**Cache.** Under ``$LOSSKIT_CACHE_DIR`` (default ``~/.cache/losskit``), keyed by source, flags, compiler,
compiler version and instruction-set level. Only what this user built is loaded:

* the directory must be owned by this user and not writable by group or others (created 0700, whatever the
  umask); otherwise losskit warns once and builds into a private temporary directory for this process;
* each library is recorded with its sha256 in a 0600 file beside it; before ``dlopen`` the open file's bytes
  are hashed and compared, and the same open file is what gets loaded (``/proc/self/fd``), so what is checked
  is what runs. A library that does not verify or load is rebuilt, never trusted and never fatal;
* an inter-process lock (``flock`` on a lock file in the directory) makes one process build while the others
  wait for it and then load its result.

**Builds.** The compiler runs in its own process group under ``LOSSKIT_BUILD_TIMEOUT`` seconds (default 120),
also enforced by coreutils ``timeout`` where present so that it holds even if Python is killed; on timeout,
error or interrupt the whole group is killed, and at exit any build still running is. A forked child closes
its copy of a parent's build lock and leaves the parent's compilers alone.

``LOSSKIT_SANITIZE=1`` (or a ``-fsanitize`` list such as ``address,undefined`` or ``undefined``) builds an
instrumented variant under its own cache key; AddressSanitizer needs ``LD_PRELOAD`` of libasan (``make sanitize``
sets it up).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: nothing is built (see native._load)
    fcntl = None  # type: ignore[assignment]


class _UntrustedFile(PermissionError):
    """A cache file that is not this user's own (never loaded)."""


class _BuildTimeout(TimeoutError):
    """A build, or the wait for another process's build, ran over LOSSKIT_BUILD_TIMEOUT."""


class _BuildFailed(RuntimeError):
    """The compiler failed, or what it built does not load (the caller falls back to torch ops)."""


FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fno-math-errno"]
SANITIZE_FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
DEFAULT_BUILD_TIMEOUT_S = 120.0
# /proc/cpuinfo lines that -march=native depends on (non-x86: implementer, part, features)
_CPU_KEYS = ("model name", "flags", "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "Features")
# x86-64 micro-architecture levels (GCC's and clang's -march names) and the /proc/cpuinfo flags each needs
_X86_LEVELS: tuple[tuple[str, set[str]], ...] = (
    ("x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "bmi2", "f16c"}),
    ("x86-64-v3", {"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"}),
    ("x86-64", set()),
)

_warned: set[str] = set()
_build_groups: set[int] = set()  # process groups of compilers running now (killed at exit)
_held_lock_fds: set[int] = set()  # inter-process lock files this process holds (a forked child closes them)
_private_tmp: list[tuple[int, str]] = []  # (pid, fallback build directory), removed at that process's exit


# ================================================================================ configuration


def _truthy(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() not in ("0", "false", "no", "off", "")


def build_timeout() -> float:
    """Seconds a build (or the wait for another process's build) may take: ``$LOSSKIT_BUILD_TIMEOUT``."""
    raw = os.environ.get("LOSSKIT_BUILD_TIMEOUT", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_BUILD_TIMEOUT_S
    except ValueError:
        _warn_once("timeout", f"LOSSKIT_BUILD_TIMEOUT={raw!r} is not a number of seconds; using 120")
        return DEFAULT_BUILD_TIMEOUT_S
    return value if value > 0 else DEFAULT_BUILD_TIMEOUT_S


def sanitizers() -> str | None:
    """The ``-fsanitize=`` list asked for by ``$LOSSKIT_SANITIZE`` (``1`` means ``address,undefined``)."""
    raw = os.environ.get("LOSSKIT_SANITIZE", "").strip()
    if raw.lower() in ("", "0", "false", "no", "off"):
        return None
    return "address,undefined" if raw.lower() in ("1", "true", "yes", "on") else raw


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"losskit: {message}", RuntimeWarning, stacklevel=3)


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_info() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _cpu_key(info: str) -> str:
    """What -march=native depends on: the first line of each of :data:`_CPU_KEYS` in /proc/cpuinfo."""
    seen: dict[str, str] = {}
    for line in info.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in _CPU_KEYS and key not in seen:
            seen[key] = line
    return "\n".join(seen.values()) or f"{platform.machine()} {platform.processor()}"


def isa_level(info: str | None = None) -> str:
    """The instruction-set level the library is built for on this CPU: an x86-64 level, or ``native``.

    ``$LOSSKIT_ISA`` (an x86-64 level name) asks for a lower level than the CPU's best, e.g. to test the AVX2
    build on an AVX-512 machine; a level the CPU cannot run is ignored."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "native"
    info = _cpu_info() if info is None else info
    flags: set[str] = set()
    for line in info.splitlines():
        if line.split(":", 1)[0].strip() == "flags":
            flags = set(line.split(":", 1)[1].split())
            break
    runnable = [level for level, needs in _X86_LEVELS if needs <= flags]
    wanted = os.environ.get("LOSSKIT_ISA", "").strip()
    if wanted in runnable:
        return wanted
    return runnable[0]


def _flags(level: str, sanitize: str | None) -> list[str]:
    arch = ["-march=native"] if level == "native" else [f"-march={level}", "-mtune=generic"]
    if sanitize:
        return [*(f for f in FLAGS if f != "-O3"), *SANITIZE_FLAGS, f"-fsanitize={sanitize}", *arch]
    return [*FLAGS, *arch]


# ================================================================================ the private cache


def cache_dir() -> Path:
    return Path(os.environ.get("LOSSKIT_CACHE_DIR") or Path.home() / ".cache" / "losskit")


def _is_private(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _make_private_dir(path: Path) -> None:
    """``mkdir -p`` where every directory made is 0700, whatever the umask."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)


def _private_cache_dir() -> Path:
    """The cache directory when it is this user's alone; else, with a one-time warning, a fresh private one."""
    d = cache_dir()
    try:
        _make_private_dir(d)
        st = os.stat(d)
        if not stat.S_ISDIR(st.st_mode):
            problem = "is not a directory"
        elif st.st_uid != os.getuid():
            problem = f"is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
        elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = (
                f"is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} (mode {st.st_mode & 0o777:o})"
            )
        else:
            return d
    except OSError as exc:
        problem = f"cannot be used ({exc})"
    _warn_once(
        "cache",
        f"the kernel cache {d} {problem}: libraries found there are not loaded (another user could have put them "
        "there). The kernel is built into a private temporary directory for this process instead; point "
        "LOSSKIT_CACHE_DIR at a directory only you can write (e.g. chmod 700) to keep builds between runs.",
    )
    if not _private_tmp or _private_tmp[0][0] != os.getpid():  # (a forked child makes its own)
        _private_tmp[:] = [(os.getpid(), tempfile.mkdtemp(prefix="losskit-"))]  # 0700
    return Path(_private_tmp[0][1])


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _InterProcessLock:
    """``flock`` on a 0600 lock file, waited for at most ``timeout`` seconds (TimeoutError after)."""

    def __init__(self, path: Path, timeout: float):
        self.path, self.timeout, self.fd = path, timeout, -1

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        _held_lock_fds.add(self.fd)
        try:
            if not _is_private(os.fstat(self.fd)):
                raise _UntrustedFile(f"{self.path} is not this user's own file")
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return self
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                if time.monotonic() > deadline:
                    raise _BuildTimeout(f"another process has been building the kernel for over {self.timeout:g} s")
                time.sleep(0.05)
        except BaseException:
            self._close()
            raise

    def _close(self):
        if self.fd >= 0:
            _held_lock_fds.discard(self.fd)
            os.close(self.fd)  # releases the lock
            self.fd = -1

    def __exit__(self, *exc):
        self._close()


# ================================================================================ building


def _run(args: list[str], timeout: float) -> tuple[int, str]:
    """Run ``args`` in a process group of its own, killed whole on timeout, error or interrupt."""
    name = Path(args[0]).name
    wrapper = shutil.which("timeout")
    if wrapper:  # still bounded if this process dies without cleaning up
        args = [wrapper, "-s", "KILL", f"{timeout + 5:g}", *args]
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    _build_groups.add(proc.pid)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise _BuildTimeout(f"{name} ran over LOSSKIT_BUILD_TIMEOUT={timeout:g} s; killed") from None
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        _build_groups.discard(proc.pid)
    return proc.returncode, out.decode(errors="replace")


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):  # a process SIGKILL cannot end: leave it
        proc.wait(timeout=10)


@atexit.register
def _at_exit() -> None:
    for pgid in list(_build_groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for pid, d in _private_tmp:
        if pid == os.getpid():  # not a forked parent's
            shutil.rmtree(d, ignore_errors=True)


def _after_fork_in_child() -> None:
    """A forked child closes its copy of the parent's build lock (else the lock would outlive the parent's build)
    and leaves the parent's compilers to the parent."""
    for fd in list(_held_lock_fds):  # the parent's lock stays the parent's; this copy must not outlive it
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_lock_fds.clear()
    _build_groups.clear()  # the parent's compilers are the parent's to kill
    _forked[0] = True


_forked = [False]


def in_forked_child() -> bool:
    """Whether this process is a child forked (``os.fork``, multiprocessing's "fork") after losskit's import:
    there the parent's OpenMP threads do not exist, and a library loaded now is told so (see pool.h)."""
    return _forked[0]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def source_bytes(source: Path) -> bytes:
    """``source`` and every header beside it (``pool.h``, ...): what a build's cache key must cover."""
    headers = sorted(source.parent.glob("*.h"))
    return b"\0".join([source.read_bytes(), *(h.name.encode() + b"\0" + h.read_bytes() for h in headers)])


def _key(source: Path, cxx: str, flags: list[str], level: str, timeout: float) -> str:
    code, version = _run([cxx, "--version"], timeout)
    parts = [source_bytes(source), " ".join(flags).encode(), cxx.encode(), version.encode(), level.encode()]
    if level == "native":
        parts.append(_cpu_key(_cpu_info()).encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


_loads = [0]


def _fd_path(fd: int) -> str:
    """A name for ``dlopen`` of the open file ``fd``, never used before in this process: the dynamic loader
    hands back an already loaded library whose name matches, and fd numbers are reused ("./" is a no-op)."""
    _loads[0] += 1
    return f"/proc/self/fd/{'./' * _loads[0]}{fd}"


def _open_verified(target: Path, version: int, module: str | None = None) -> Any:
    """The library at ``target`` if it is this user's, private, matches its recorded sha256 and its
    ``losskit_kernel_version()`` is ``version``; else None (the caller rebuilds). With ``module``, the library
    is a Python extension of that name and what is returned is the module, imported from the same open file."""
    record = target.with_name(target.name + ".sha256")
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        rfd = os.open(record, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            if not (_is_private(os.fstat(fd)) and _is_private(os.fstat(rfd))):
                return None
            expected = os.read(rfd, 256).decode(errors="replace").strip()
        finally:
            os.close(rfd)
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        if digest.hexdigest() != expected:
            return None
        # load the very file that was hashed (not whatever the name points at by now)
        path = _fd_path(fd) if os.path.isdir("/proc/self/fd") else str(target)
        lib = ctypes.CDLL(path)
        if lib.losskit_kernel_version() != version:
            return None
        if module is None:
            return lib
        loader = importlib.machinery.ExtensionFileLoader(module, path)  # dlopen gives back the handle just checked
        spec = importlib.util.spec_from_file_location(module, path, loader=loader)
        if spec is None:
            return None
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
        return mod
    except (OSError, AttributeError, ImportError):
        return None
    finally:
        os.close(fd)


def build_and_load(source: Path, version: int, cxx: str, sanitize: str | None) -> tuple[ctypes.CDLL, Path]:
    """The library built from ``source`` (C ABI, ``losskit_kernel_version()`` returning ``version``) for this
    CPU's instruction-set level, from the private cache or built into it; raises when that fails.

    With OpenMP (``-fopenmp``) unless ``LOSSKIT_OPENMP=0``: the kernels' parallel loops then run on torch's own
    OpenMP threads (``kernels/pool.h``). A compiler that cannot build with it (clang without libomp) builds
    without it, and the kernels use losskit's own worker pool."""
    if _truthy("LOSSKIT_OPENMP", "1"):
        try:
            return _build_and_load(source, version, cxx, sanitize, ["-fopenmp"])
        except _BuildFailed as exc:
            if not any(sign in str(exc) for sign in _NO_OPENMP):
                raise
    return _build_and_load(source, version, cxx, sanitize, [])


# what a compiler says when it cannot build with OpenMP (clang without libomp, gcc without libgomp)
_NO_OPENMP = ("fopenmp", "omp.h", "lgomp", "lomp", "libgomp", "libomp")


def openmp(lib: ctypes.CDLL) -> bool:
    """Whether ``lib``'s parallel loops run on torch's OpenMP threads in this process (built with OpenMP, not in
    a forked child); else on losskit's own worker pool."""
    return bool(lib.losskit_pool_openmp())


def build_and_load_extension(
    source: Path, version: int, cxx: str, module: str, flags: list[str], libs: list[str]
) -> tuple[Any, Path]:
    """The Python extension ``module`` built from ``source`` with ``flags`` (compile) and ``libs`` (link), from the
    private cache or built into it, verified like a kernel library; raises when that fails. Its cache key covers
    both lists (the caller puts what the build depends on, e.g. torch's version and include paths, in them)."""
    return _build_and_load(source, version, cxx, None, [], level="extension", base=flags, libs=libs, module=module)


def _build_and_load(
    source: Path,
    version: int,
    cxx: str,
    sanitize: str | None,
    extra: list[str],
    level: str | None = None,
    base: list[str] | None = None,
    libs: list[str] | None = None,
    module: str | None = None,
) -> tuple[Any, Path]:
    timeout = build_timeout()
    level = level or isa_level()
    flags = [*(_flags(level, sanitize) if base is None else base), *extra]
    libs = libs or []
    key = _key(source, cxx, [*flags, *libs], level, timeout)
    d = _private_cache_dir()
    target = d / f"{source.stem}-{level}-{key}.so"
    lib = _open_verified(target, version, module)
    if lib is not None:
        return lib, target
    with _InterProcessLock(d / f"{source.stem}-{level}-{key}.lock", timeout):
        lib = _open_verified(target, version, module)  # built by another process while this one waited
        if lib is not None:
            return lib, target
        tmp = tempfile.mkdtemp(dir=d, prefix=".build-")  # 0700
        try:
            built = Path(tmp) / target.name
            code, out = _run([cxx, *flags, "-o", str(built), str(source), *libs], timeout)
            if code != 0:
                raise _BuildFailed(f"{cxx} failed ({code}): {out.strip()[-2000:]}")
            os.chmod(built, 0o600)
            digest = hashlib.sha256(built.read_bytes()).hexdigest()
            os.replace(built, target)  # atomic: another process sees the whole library or none
            _write_private(target.with_name(target.name + ".sha256"), digest.encode() + b"\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        lib = _open_verified(target, version, module)
        if lib is None:
            raise _BuildFailed(f"{target} was built but does not load as kernel version {version}")
        return lib, target
