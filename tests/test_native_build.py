"""Building, caching and loading losskit's CPU kernel (``losskit.engine.native``), under faults and misuse.

Each test runs fresh Python processes (the module's build state is per process) with a cache of its own:

1. the cache is reused, a failing or silent compiler means torch ops, ``LOSSKIT_NATIVE=0``;
2. only what this user built is loaded: private modes whatever the umask, a library that does not match its
   recorded sha256 is rebuilt, a cache directory others can write (or own) is not used at all (issue 15, item 6);
3. a hanging compiler is killed with its process group after ``LOSSKIT_BUILD_TIMEOUT``, Ctrl-C during a build
   kills it too, both are remembered for the process, nothing outlives Python, other threads do not wait
   (item 8); a child forked while another thread builds does not deadlock (item 7);
4. processes starting together compile once; a broken library in the cache is rebuilt (item 9).

No test passes or fails on timing: waits are for events (a file the fake compiler writes), with generous
limits that only turn a hang into a failure.
"""

from __future__ import annotations

import os
import platform
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF
from helpers import in_forked_child
from helpers import seeded as _gen
from losskit.engine import native as _native

DISABLED = os.environ.get("LOSSKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")
needs_kernel = pytest.mark.skipif(DISABLED, reason="LOSSKIT_NATIVE=0 in the environment")
needs_posix = pytest.mark.skipif(os.name != "posix", reason="process groups, flock and fork are POSIX")
CXX = _native._compiler() or "g++"

_CHILD = """
import torch, losskit.functional as LF, torch.nn.functional as F
from losskit.engine import native as _native
x = torch.randn(64, 2048)
y = torch.randint(0, 2048, (64,))
assert abs(float(LF.cross_entropy(x, y)) - float(F.cross_entropy(x, y))) < 1e-5
print(_native.status())
"""


def _env(tmp_path: Path, **update: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOSSKIT_SANITIZE", "LOSSKIT_BUILD_TIMEOUT")}
    # the kernels' builds alone: the C++ entry points (their own build, tests/test_entry.py) stay off
    return {**env, "LOSSKIT_CACHE_DIR": str(tmp_path / "cache"), "LOSSKIT_ENTRY": "0", **update}


def _child(env_update: dict[str, str], tmp_path: Path, code: str = _CHILD, check: bool = True):
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(tmp_path, **env_update), capture_output=True, text=True, timeout=300
    )
    if check:
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()
    return out


def _compiler(tmp_path: Path, before_compile: str = "") -> Path:
    """A compiler that logs each build (``--version`` calls for the cache key are not builds), runs
    ``before_compile`` (shell) first, then the real compiler."""
    cxx = tmp_path / "cxx"
    cxx.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *-shared*) ;; *) exec {CXX} "$@" ;; esac\n'
        f'echo "$@" >> {tmp_path / "compiles.log"}\n'
        f"{before_compile}\n"
        f'exec {CXX} "$@"\n'
    )
    cxx.chmod(0o700)
    return cxx


@pytest.fixture(scope="module")
def prebuilt(tmp_path_factory):
    """A logging compiler (to ``$LOSSKIT_TEST_LOG``) shared by the tests that start from a built cache, and
    that cache, built once; :func:`_from_prebuilt` copies it (modes kept) into a test's own directory."""
    root = tmp_path_factory.mktemp("prebuilt")
    cxx = root / "cxx"
    cxx.write_text(f'#!/bin/sh\ncase "$*" in *-shared*) echo "$@" >> "$LOSSKIT_TEST_LOG" ;; esac\nexec {CXX} "$@"\n')
    cxx.chmod(0o700)
    assert _child({"CXX": str(cxx), "LOSSKIT_TEST_LOG": str(root / "log")}, root).startswith("loaded ")
    return cxx, root / "cache"


def _from_prebuilt(prebuilt, tmp_path: Path) -> dict[str, str]:
    cxx, cache = prebuilt
    shutil.copytree(cache, tmp_path / "cache")
    return {"CXX": str(cxx), "LOSSKIT_TEST_LOG": str(tmp_path / "compiles.log")}


def _compiles(tmp_path: Path) -> int:
    log = tmp_path / "compiles.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _libraries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").glob("cross_entropy-*.so"))


def _wait_for(predicate, what: str, limit: float = 60.0) -> None:
    """Wait for an event (not a timing check: the limit only turns a hang into a failure)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


# ================================================================================ 1. cache and fallback


@needs_kernel
def test_build_is_cached_and_reused(tmp_path):
    """The compiler runs once per cache; a second process loads the cached library."""
    cxx = _compiler(tmp_path)
    first = _child({"CXX": str(cxx)}, tmp_path)
    assert first.startswith("loaded ") and str(tmp_path) in first
    assert _compiles(tmp_path) == 1
    assert _child({"CXX": str(cxx)}, tmp_path) == first
    assert _compiles(tmp_path) == 1
    assert len(_libraries(tmp_path)) == 1


def test_failed_build_falls_back_to_torch_ops(tmp_path):
    status = _child({"CXX": "/bin/false", "LOSSKIT_NATIVE": "1"}, tmp_path)
    assert status.startswith("build failed, using torch ops"), status
    assert not _libraries(tmp_path)


def test_failed_build_warns_once_what_failed_and_how_to_fix_it(tmp_path):
    """Not silent: the first call warns (what failed, that results are the same, how to fix); later calls don't."""
    code = _CHILD.replace("import torch,", "import warnings; warnings.simplefilter('always'); import torch,") + (
        "LF.cross_entropy(x, y)\n"
    )
    out = _child({"CXX": "/bin/false", "LOSSKIT_NATIVE": "1"}, tmp_path, code, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("RuntimeWarning: losskit: the CPU kernel is not available") == 1, out.stderr
    assert "Results are the same" in out.stderr and "Install a C++ compiler" in out.stderr
    quiet = _child({"LOSSKIT_NATIVE": "0"}, tmp_path, code, check=False)
    assert "RuntimeWarning" not in quiet.stderr, quiet.stderr


def test_compiler_with_undecodable_output_falls_back(tmp_path):
    """A compiler that fails with non-UTF-8 messages still means: torch ops, once, with the reason."""
    cxx = tmp_path / "cxx"
    cxx.write_bytes(b"#!/bin/sh\nprintf '\\351chec de compilation\\n' >&2\nexit 1\n")
    cxx.chmod(0o755)
    status = _child({"CXX": str(cxx)}, tmp_path)
    assert status.startswith("build failed, using torch ops"), status


def test_disabled_by_environment(tmp_path):
    assert _child({"LOSSKIT_NATIVE": "0"}, tmp_path) == "disabled by LOSSKIT_NATIVE=0"


def test_instruction_set_level_comes_from_the_cpu_flags():
    """x86-64 builds for a fixed level chosen from the CPU's flags, so the cache key is right on any machine."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        assert _native.isa_level() == "native"
        return
    v4 = "flags : fpu avx avx2 fma bmi1 bmi2 f16c movbe abm avx512f avx512bw avx512cd avx512dq avx512vl\n"
    assert _native.isa_level(v4) == "x86-64-v4"
    assert _native.isa_level(v4.replace(" avx512bw", "")) == "x86-64-v3"
    assert _native.isa_level("flags : fpu sse sse2 avx\n") == "x86-64"
    assert "-march=x86-64-v3" in _native._flags("x86-64-v3", None)
    assert not any("native" in f for f in _native._flags("x86-64-v4", None))


# ================================================================================ 2. only what this user built

_PLANTED = """
#include <cstdio>
extern "C" int losskit_kernel_version() {{ return {version}; }}
extern "C" long long losskit_ce_rows() {{ return 0; }}
__attribute__((constructor)) static void planted() {{
    if (FILE* f = std::fopen("{marker}", "w")) {{ std::fputs("planted code ran", f); std::fclose(f); }}
}}
"""


def _plant(tmp_path: Path, where: Path, record: bool, version: int = _native.KERNEL_VERSION) -> Path:
    """Replace the library at ``where`` by one whose constructor writes a marker file (and, with ``record``,
    write its sha256 beside it, as someone able to write the directory could)."""
    marker = tmp_path / "planted-marker"
    src = tmp_path / "planted.cpp"
    src.write_text(_PLANTED.format(version=version, marker=marker))
    subprocess.run([CXX, "-shared", "-fPIC", "-o", str(where), str(src)], check=True, timeout=120)
    if record:
        import hashlib

        Path(str(where) + ".sha256").write_text(hashlib.sha256(where.read_bytes()).hexdigest() + "\n")
    return marker


@needs_kernel
@needs_posix
def test_cache_is_private_whatever_the_umask(tmp_path):
    """Under umask 000 the cache directory is still 0700 and its files 0600."""
    code = "import os\nos.umask(0)\n" + _CHILD
    assert _child({}, tmp_path, code).startswith("loaded ")
    cache = tmp_path / "cache"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    files = list(cache.iterdir())
    assert {p.suffix for p in files} >= {".so", ".sha256", ".lock"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, (p, oct(p.stat().st_mode))


@needs_kernel
@needs_posix
def test_library_that_does_not_match_its_record_is_rebuilt_not_loaded(tmp_path, prebuilt):
    """A library swapped under the cache's name (its sha256 record unchanged) never runs; it is rebuilt."""
    env = _from_prebuilt(prebuilt, tmp_path)
    (lib,) = _libraries(tmp_path)
    marker = _plant(tmp_path, lib, record=False)
    status = _child(env, tmp_path)
    assert not marker.exists(), "a library that does not match its record was loaded"
    assert status == f"loaded {lib}" and _compiles(tmp_path) == 1


@needs_kernel
@needs_posix
def test_library_of_another_kernel_version_is_rebuilt(tmp_path, prebuilt):
    """A recorded library that loads but is not this kernel version is replaced, and the new build is what gets
    loaded (not the loader's handle to the old one)."""
    env = _from_prebuilt(prebuilt, tmp_path)
    (lib,) = _libraries(tmp_path)
    _plant(tmp_path, lib, record=True, version=_native.KERNEL_VERSION + 1)
    assert _child(env, tmp_path) == f"loaded {lib}"
    assert _compiles(tmp_path) == 1


@needs_kernel
@needs_posix
@pytest.mark.parametrize("problem", ["world-writable", "group-writable", "foreign-owner"])
def test_cache_directory_others_can_write_is_not_used(tmp_path, prebuilt, problem):
    """A cache directory another user can write (or owns) is not trusted even with matching records: losskit
    warns once and builds into a private directory for the process."""
    env = _from_prebuilt(prebuilt, tmp_path)
    (lib,) = _libraries(tmp_path)
    marker = _plant(tmp_path, lib, record=True)  # what another user could do in that directory
    cache = tmp_path / "cache"
    if problem == "foreign-owner":
        if os.getuid() != 0:
            pytest.skip("needs root to give the directory to another user")
        os.chown(cache, 65534, 65534)
        for p in cache.iterdir():
            os.chown(p, 65534, 65534)
    else:
        cache.chmod(0o777 if problem == "world-writable" else 0o770)
    out = _child(env, tmp_path, check=False)
    assert out.returncode == 0, out.stderr
    assert not marker.exists(), "a library from a directory others can write was loaded"
    assert out.stdout.strip().startswith("loaded ") and str(cache) not in out.stdout
    assert out.stderr.count("RuntimeWarning") == 1 and str(cache) in out.stderr


# ================================================================================ 3. hangs and interrupts

_HANG = "echo $$ >> {pids}\nsleep 1000 &\necho $! >> {pids}\nwait"


@needs_posix
def test_hanging_compiler_is_killed_with_its_group_after_the_timeout(tmp_path):
    """LOSSKIT_BUILD_TIMEOUT bounds the build; the compiler and its children are killed; the failure is
    remembered (one compile for any number of calls)."""
    pids = tmp_path / "pids"
    cxx = _compiler(tmp_path, _HANG.format(pids=pids))
    code = (
        "from losskit.engine import native\n"
        "for _ in range(3):\n"
        "    assert native.library() is None\n"
        "print(native.status())\n"
    )
    status = _child({"CXX": str(cxx), "LOSSKIT_BUILD_TIMEOUT": "2"}, tmp_path, code)
    assert "LOSSKIT_BUILD_TIMEOUT=2" in status and status.startswith("build failed"), status
    assert _compiles(tmp_path) == 1
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    _wait_for(lambda: not any(_alive(p) for p in started), "the compiler's processes to end")


@needs_posix
def test_interrupted_build_kills_the_compiler_and_is_remembered(tmp_path):
    """Ctrl-C during a build: KeyboardInterrupt reaches the caller, the compiler's group is killed, and later
    calls take torch ops without starting another build."""
    pids = tmp_path / "pids"
    cxx = _compiler(tmp_path, _HANG.format(pids=pids))
    code = textwrap.dedent(f"""
        import os, signal, threading, time, pathlib
        import torch, losskit.functional as LF, torch.nn.functional as F
        from losskit.engine import native
        pids = pathlib.Path({str(pids)!r})
        def interrupt():
            while not pids.exists() or len(pids.read_text().split()) < 2:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGINT)
        threading.Thread(target=interrupt, daemon=True).start()
        try:
            native.library()
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted")
        x, y = torch.randn(4, 9), torch.tensor([0, 3, 8, 1])
        assert abs(float(LF.cross_entropy(x, y)) - float(F.cross_entropy(x, y))) < 1e-6
        assert native.library() is None
        print(native.status())
    """)
    out = _child({"CXX": str(cxx), "LOSSKIT_BUILD_TIMEOUT": "100"}, tmp_path, code).splitlines()
    assert out[0] == "interrupted" and out[1].startswith("build interrupted (KeyboardInterrupt)"), out
    assert _compiles(tmp_path) == 1
    started = [int(p) for p in pids.read_text().split()]
    _wait_for(lambda: not any(_alive(p) for p in started), "the compiler's processes to end")


@needs_posix
def test_no_compiler_outlives_python(tmp_path):
    """Python exiting while a (daemon) thread builds takes the compiler's whole process group with it."""
    pids = tmp_path / "pids"
    cxx = _compiler(tmp_path, _HANG.format(pids=pids))
    code = textwrap.dedent(f"""
        import threading, time, pathlib
        from losskit.engine import native
        pids = pathlib.Path({str(pids)!r})
        threading.Thread(target=native.library, daemon=True).start()
        while not pids.exists() or len(pids.read_text().split()) < 2:
            time.sleep(0.02)
        print("exiting")
    """)
    assert _child({"CXX": str(cxx), "LOSSKIT_BUILD_TIMEOUT": "100"}, tmp_path, code) == "exiting"
    started = [int(p) for p in pids.read_text().split()]
    _wait_for(lambda: not any(_alive(p) for p in started), "the compiler's processes to end")


_GATED = "touch {started}\nwhile [ ! -e {go} ]; do sleep 0.05; done"


@needs_kernel
@needs_posix
def test_other_threads_do_not_wait_for_a_build(tmp_path):
    """While one thread builds, a loss in another thread runs at once on torch ops; the build then loads."""
    started, go = tmp_path / "started", tmp_path / "go"
    cxx = _compiler(tmp_path, _GATED.format(started=started, go=go))
    code = textwrap.dedent(f"""
        import threading, time, pathlib
        import torch, losskit.functional as LF, torch.nn.functional as F
        from losskit.engine import native
        started, go = pathlib.Path({str(started)!r}), pathlib.Path({str(go)!r})
        builder = threading.Thread(target=native.library)
        builder.start()
        while not started.exists():
            time.sleep(0.02)
        print(native.library() is None, native.status())
        x, y = torch.randn(4, 9), torch.tensor([0, 3, 8, 1])
        assert abs(float(LF.cross_entropy(x, y)) - float(F.cross_entropy(x, y))) < 1e-6
        go.touch()
        builder.join()
        print(native.status())
    """)
    during, after = _child({"CXX": str(cxx)}, tmp_path, code).splitlines()
    assert during == "True being built"
    assert after.startswith("loaded ")


@needs_kernel
@needs_posix
def test_fork_while_another_thread_builds_does_not_deadlock(tmp_path):
    """A child forked while a thread holds the build lock gets a fresh one and loads the kernel itself."""
    started, go = tmp_path / "started", tmp_path / "go"
    cxx = _compiler(tmp_path, _GATED.format(started=started, go=go))
    code = textwrap.dedent(f"""
        import os, threading, time, pathlib
        from losskit.engine import native
        started, go = pathlib.Path({str(started)!r}), pathlib.Path({str(go)!r})
        builder = threading.Thread(target=native.library)
        builder.start()
        while not started.exists():
            time.sleep(0.02)
        pid = os.fork()
        if pid == 0:
            go.touch()
            os._exit(0 if native.library() is not None else 3)
        deadline = time.monotonic() + 120
        while True:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                print("child hung")
                raise SystemExit(1)
            time.sleep(0.05)
        builder.join()
        print(os.waitstatus_to_exitcode(code), native.status())
    """)
    out = _child({"CXX": str(cxx)}, tmp_path, code)
    assert out.startswith("0 loaded "), out


_FORK_X = torch.randn(256, 512, generator=_gen("fork"))
_FORK_Y = torch.randint(0, 512, (256,), generator=_gen("fork-y"))


def _forked_child(queue):
    # only small torch ops here: torch's own OpenMP pool is not fork-safe once the parent has used it
    torch.set_num_threads(2)
    queue.put(float(LF.cross_entropy(_FORK_X, _FORK_Y)))


@needs_kernel
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_its_own_threads():
    """A child forked after the parent ran the kernel on several threads runs it too (no inherited state)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = float(LF.cross_entropy(_FORK_X, _FORK_Y))
    finally:
        torch.set_num_threads(before)
    assert in_forked_child(_forked_child) == expected
    assert abs(expected - float(F.cross_entropy(_FORK_X, _FORK_Y))) < 1e-5


# ================================================================================ 4. many processes, broken files


@needs_kernel
@needs_posix
def test_processes_starting_together_compile_once(tmp_path):
    """8 processes on an empty cache: one compiles (the others wait on the cache's lock), all load it."""
    cxx = _compiler(tmp_path, "sleep 1")  # a wider window for a race
    code = "from losskit.engine import native\nprint(native.status())\n"
    env = _env(tmp_path, CXX=str(cxx))
    pipe = subprocess.PIPE
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=pipe, stderr=pipe, text=True) for _ in range(8)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip().startswith("loaded "), out
    assert _compiles(tmp_path) == 1
    assert len({out.strip() for out, _ in outs}) == 1


@needs_kernel
@needs_posix
@pytest.mark.parametrize("damage", ["garbage", "empty-with-record", "record-missing"])
def test_broken_library_in_the_cache_is_rebuilt(tmp_path, prebuilt, damage):
    """A library that fails its check or fails to load does not disable the kernel: the next process rebuilds."""
    env = _from_prebuilt(prebuilt, tmp_path)
    (lib,) = _libraries(tmp_path)
    record = Path(str(lib) + ".sha256")
    if damage == "garbage":
        lib.write_bytes(b"\x7fELF not really")
    elif damage == "empty-with-record":
        import hashlib

        lib.write_bytes(b"")
        record.write_text(hashlib.sha256(b"").hexdigest() + "\n")
    else:
        record.unlink()
    assert _child(env, tmp_path) == f"loaded {lib}"
    assert _compiles(tmp_path) == 1
    assert _child(env, tmp_path) == f"loaded {lib}"
    assert _compiles(tmp_path) == 1  # and the rebuilt one is reused


# ================================================================================ 5. every instruction-set level

_LEVEL_CHILD = """
import torch, torch.nn.functional as F, losskit.functional as LF
from losskit.engine import native, small
assert native.isa_level() == {level!r} and "-{level}-" in native.status(), native.status()
for max_small in (small.MAX_ELEMENTS, -1):  # the one-call entry, then the row engine
    small.MAX_ELEMENTS = max_small
    for dtype, tol in ((torch.float32, 2e-5), (torch.bfloat16, 2e-2)):
        for c in (1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 1000, 4099):
            g = torch.Generator().manual_seed(c)
            x = (torch.randn(5, c, generator=g) * 4).to(dtype)
            y = torch.randint(0, c, (5,), generator=g)
            w = (torch.rand(c, generator=g) + 0.5).to(dtype)
            for kw in ({{}}, {{"weight": w, "label_smoothing": 0.2}}):
                xx = x.clone().requires_grad_()
                got = LF.cross_entropy(xx, y, reduction="none", **kw)
                got.sum().backward()
                x64 = x.double().requires_grad_()
                kw64 = {{k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()}}
                ref = F.cross_entropy(x64, y, reduction="none", **kw64)
                ref.sum().backward()
                assert (got.double() - ref).abs().max() <= tol * (1 + ref.abs().max()), (dtype, c, kw)
                assert (xx.grad.double() - x64.grad).abs().max() <= tol, (dtype, c, kw)
print("ok")
"""


@needs_kernel
@pytest.mark.parametrize("level", ["x86-64-v3", "x86-64"])
def test_lower_instruction_set_levels_match_torch(tmp_path, level):
    """The AVX2 and baseline builds (which an AVX-512 CI machine would otherwise never run) against float64 torch,
    through both kernel entries, at class counts around every vector width."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 levels")
    with_level = {**os.environ, "LOSSKIT_ISA": level}
    if (
        subprocess.run(
            [sys.executable, "-c", "from losskit.engine import native; print(native.isa_level())"],
            env=with_level,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.strip()
        != level
    ):
        pytest.skip(f"this CPU does not run {level}")
    assert _child({"LOSSKIT_ISA": level}, tmp_path, _LEVEL_CHILD.format(level=level)) == "ok"
