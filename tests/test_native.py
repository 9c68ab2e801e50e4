"""losskit's CPU cross-entropy kernel (``losskit/kernels/cross_entropy.cpp``, loaded by ``losskit.engine.native``).

fp32 and bf16 class-index cross entropy on the CPU goes through the kernel whenever it is available, so the
oracle grids of ``test_cross_entropy.py`` already run on it. This file checks what those grids cannot see:

1. the kernel is really built and used here (CI must not quietly test the fallback instead);
2. its option grid against torch, with a spy that proves each case ran on the kernel, and the same grid on the
   torch-op path that CUDA tensors and machines without a compiler take;
3. z-loss against float64 math, row strides, in-place, the fused linear + cross entropy, non-finite logits,
   class counts around the vector width, thread splits (bitwise equal), the out-of-range guard;
4. what issue 15 found: an interrupt after an in-place write, a reduced loss that depended on the thread count,
   misaligned buffers (also under UBSan). Building, caching and loading are in ``test_native_build.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import losskit.engine.rows as engine
import losskit.functional as LF
from helpers import (
    assert_close_to,
    assert_matches_torch,
    assert_same_across_thread_counts,
    ce_problem,
    entry_off,
    num_classes,
    oracle_cross_entropy,
    run_in_threads,
)
from helpers import seeded as _gen
from losskit.engine import entry as _entry
from losskit.engine import native as _native
from losskit.engine import small as _small

DISABLED = os.environ.get("LOSSKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")
needs_kernel = pytest.mark.skipif(DISABLED, reason="LOSSKIT_NATIVE=0 in the environment")


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the kernel's calls through either entry (the row engine's ``losskit_ce_rows``, or the one-call
    ``losskit_ce_small`` of small problems) and fails the test if it was never reached."""
    calls = []

    def spy(module, name):
        real = getattr(module, name)

        def wrapper(x, *args, **kwargs):
            calls.append(tuple(x.shape))
            return real(x, *args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    spy(_native, "cross_entropy_rows")
    spy(_small, "_run")
    fast = _entry.module
    if fast is not None:  # the C++ entry point of small problems: the calls it took
        real_entry = fast.cross_entropy

        def took(x, *args):
            out = real_entry(x, *args)
            if out is not None:
                calls.append(tuple(x.shape))
            return out

        monkeypatch.setattr(fast, "cross_entropy", took)
    yield calls
    assert calls, "the kernel was never called"


@pytest.fixture(params=["rows", "small", "entry"])
def entry(request, monkeypatch):
    """Every kernel entry: small problems take ``losskit_ce_small`` from C++ ('entry', engine/entry.py) or from
    Python ('small'); 'rows' sends them to the row engine."""
    if request.param != "entry":
        entry_off(monkeypatch)
    elif _entry.wait() is None:
        pytest.skip(f"losskit's C++ entry points are unavailable: {_entry.status()}")
    if request.param == "rows":
        monkeypatch.setattr(_small, "MAX_ELEMENTS", -1)
    return request.param


@pytest.fixture
def torch_path(monkeypatch):
    """The torch-op path (what CUDA tensors and machines without a compiler get)."""
    entry_off(monkeypatch)
    monkeypatch.setattr(_native, "supports", lambda x: False)
    monkeypatch.setattr(_small, "MAX_ELEMENTS", -1)


def _problem(shape, options: str, g: torch.Generator):
    """A class-index case; with one class every row is ignored ('mean' is then nan, as in torch)."""
    return ce_problem(shape, "index", options, g, ignore_index=1 if num_classes(shape) > 1 else 0)


# ================================================================================ 1. built and used


@needs_kernel
def test_kernel_is_built_on_this_machine():
    assert _native.library() is not None, _native.status()
    assert _native.status().startswith("loaded "), _native.status()
    assert _native.library().losskit_kernel_version() == _native.KERNEL_VERSION
    # under `make sanitize` (LOSSKIT_SANITIZE=1) the instrumented build is the one loaded
    assert ("sanitizers: " in _native.status()) == bool(_native.sanitizers())


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp32_and_bf16_rows_take_the_kernel(kernel_calls, dtype):
    x = torch.randn(6, 40, dtype=dtype, requires_grad=True)
    LF.cross_entropy(x, torch.randint(0, 40, (6,))).backward()
    assert kernel_calls == [(6, 40)]  # one call for all rows


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dtype": torch.float64},
        {"dtype": torch.float16},
        {"dtype": torch.float32, "softcap": 5.0},
        {"dtype": torch.float32, "probabilities": True},
    ],
    ids=["fp64", "fp16", "softcap", "probabilities"],
)
def test_other_cases_stay_on_torch_ops(monkeypatch, kwargs):
    calls = []
    monkeypatch.setattr(_native, "cross_entropy_rows", lambda *a, **k: calls.append(a))
    kwargs = dict(kwargs)
    dtype, probabilities = kwargs.pop("dtype"), kwargs.pop("probabilities", False)
    x = torch.randn(4, 7, dtype=dtype, requires_grad=True)
    y = torch.softmax(torch.randn(4, 7, dtype=dtype), 1) if probabilities else torch.randint(0, 7, (4,))
    LF.cross_entropy(x, y, **kwargs).backward()
    assert not calls


# ================================================================================ 2. option grid, both paths

# 32x10 and 4x16: rows of at most one vector (the kernel's tiny_rows; 16 classes is one AVX-512 vector)
SHAPES = {
    "7x5": (7, 5),
    "32x10": (32, 10),
    "4x16": (4, 16),
    "33x37": (33, 37),
    "9x129": (9, 129),
    "5x1": (5, 1),
    "K_3x4x5x6": (3, 4, 5, 6),
    "C17": (17,),
}
OPTIONS = ("plain", "w", "ii", "ls", "w+ii+ls", "w+ls")
REDUCTIONS = ("mean", "sum", "none")


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_kernel_matches_torch(entry, kernel_calls, reduction, options, shape, dtype):
    inputs, kwargs = _problem(shape, options, _gen("kernel", reduction, options, shape))
    kwargs["reduction"] = reduction
    assert_matches_torch(LF.cross_entropy, F.cross_entropy, inputs, kwargs, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(33, 37), (3, 4, 5, 6)], ids=["33x37", "K_3x4x5x6"])
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_torch_path_matches_torch(torch_path, reduction, options, shape, dtype):
    inputs, kwargs = _problem(shape, options, _gen("torch-path", reduction, options, shape))
    kwargs["reduction"] = reduction
    assert_matches_torch(LF.cross_entropy, F.cross_entropy, inputs, kwargs, dtype=dtype)


@needs_kernel
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("z", [1e-4, 0.3])
@pytest.mark.parametrize("c", [19, 10])
def test_z_loss_matches_float64_math(entry, kernel_calls, reduction, options, z, c):
    """z-loss has no torch oracle: fp32 on the kernel against plain float64 math (torch's CE plus z·lse²)."""
    inputs, kwargs = _problem((21, c), options, _gen("z", reduction, options, z, c))
    kwargs.update(reduction=reduction, z_loss=z)
    x64 = inputs["input"].clone().requires_grad_()
    ref = oracle_cross_entropy(x64, inputs["target"], inputs["weight"], **kwargs)
    x32 = inputs["input"].float().requires_grad_()
    w32 = None if inputs["weight"] is None else inputs["weight"].float()
    got = LF.cross_entropy(x32, inputs["target"], w32, **kwargs)
    g = torch.randn(ref.shape, generator=_gen("zg"), dtype=torch.float64)
    (ref * g).sum().backward()
    (got * g.float()).sum().backward()
    assert_close_to(got, ref.float(), torch.float32)
    assert_close_to(x32.grad, x64.grad.float(), torch.float32, "grad")


# ================================================================================ 3. layouts and values


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_row_stride_larger_than_classes(kernel_calls, dtype):
    """Rows of a wider buffer (x = big[:, :C]): read with their stride, no copy."""
    big = torch.randn(12, 50, generator=_gen("stride"), dtype=torch.float64) * 3
    y = torch.randint(0, 37, (12,), generator=_gen("stride-y"))
    x = big.to(dtype)[:, :37]
    assert not x.is_contiguous()
    got = LF.cross_entropy(x.requires_grad_() if x.is_leaf else x, y, label_smoothing=0.1, reduction="none")
    ref = F.cross_entropy(big[:, :37], y, label_smoothing=0.1, reduction="none")
    assert (got.double() - ref).abs().max() < (1e-5 if dtype == torch.float32 else 0.05)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_inplace_on_the_kernel(kernel_calls, dtype):
    g = _gen("inplace", dtype)
    h = torch.randn(16, 8, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(45, 8, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randint(0, 45, (16,), generator=g)
    y[::4] = -100
    loss = LF.cross_entropy(h @ w.T, y, label_smoothing=0.1, inplace=True)
    loss.backward()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = F.cross_entropy(h2 @ w2.T, y, label_smoothing=0.1)
    ref.backward()
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert abs(float(loss.detach()) - float(ref.detach())) < tol * 10
    torch.testing.assert_close(h.grad.float(), h2.grad.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(w.grad.float(), w2.grad.float(), rtol=tol, atol=tol)


@needs_kernel
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_linear_cross_entropy_on_the_kernel(kernel_calls, reduction):
    g = _gen("lce", reduction)
    h = torch.randn(40, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(70, 16, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 70, (40,), generator=g)
    y[::5] = -100
    ref = F.cross_entropy(h @ w.T, y, reduction=reduction, label_smoothing=0.1)
    h32, w32 = h.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    got = LF.linear_cross_entropy(h32, w32, y, reduction=reduction, label_smoothing=0.1, chunk_size=8)
    cot = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (ref * cot).sum().backward()
    (got * cot.float()).sum().backward()
    assert_close_to(got, ref.float(), torch.float32)
    torch.testing.assert_close(h32.grad, h.grad.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w32.grad, w.grad.float(), rtol=1e-4, atol=1e-5)


NONFINITE = {
    "nan": lambda x: x[1, 2].fill_(float("nan")),
    "pos_inf": lambda x: x[2, 0].fill_(float("inf")),
    "neg_inf_mask": lambda x: x[3, 1:20].fill_(float("-inf")),
    "all_neg_inf": lambda x: x[0].fill_(float("-inf")),
    "huge": lambda x: x[4].mul_(1e30),
    "tiny_spread": lambda x: x[5].fill_(1e4).add_(torch.linspace(0, 1e-3, x.shape[1], dtype=x.dtype)),
}


@needs_kernel
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", list(NONFINITE))
@pytest.mark.parametrize("c", [37, 10, 16])
def test_nonfinite_logits_like_torch(entry, kernel_calls, reduction, case, c):
    """NaN/±inf logits give NaN and inf exactly where torch's do, in the loss and in the gradient."""
    x = torch.randn(7, c, generator=_gen("nonfinite", case, c), dtype=torch.float64)
    NONFINITE[case](x)
    y = torch.randint(0, c, (7,), generator=_gen("nonfinite-y", case, c))
    y[3] = 0  # the masked row's target is not masked
    assert_matches_torch(
        LF.cross_entropy, F.cross_entropy, {"input": x, "target": y}, {"reduction": reduction}, dtype=torch.float32
    )


@needs_kernel
@pytest.mark.parametrize("c", [1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 32003])
def test_class_counts_around_the_vector_width(kernel_calls, c):
    n = 3 if c > 1000 else 6
    inputs, kwargs = _problem((n, c), "w+ls", _gen("width", c))
    assert_matches_torch(
        LF.cross_entropy, F.cross_entropy, inputs, {**kwargs, "reduction": "none"}, dtype=torch.float32
    )


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_thread_split_is_bitwise_identical(dtype):
    """Rows are independent: 1, 2 or 3 threads give bitwise the same loss and gradient."""
    x = (torch.randn(300, 1000, generator=_gen("threads")) * 3).to(dtype)
    y = torch.randint(0, 1000, (300,), generator=_gen("threads-y"))
    y[::7] = -100
    assert x.numel() >= 3 * _native.CHUNK_ELEMENTS  # so that 3 threads really are 3
    assert_same_across_thread_counts(x, y)


@needs_kernel
def test_concurrent_callers_from_python_threads():
    """Several Python threads calling at once, each with its own row count and thread split: all right."""
    problems = [(torch.randn(n, 70000, generator=_gen("conc", n)), n) for n in (2, 5, 3, 7)]
    results: dict[int, float] = {}

    def work(x, n):
        y = torch.arange(n) % 70000
        for _ in range(3):
            results[n] = float(LF.cross_entropy(x, y, reduction="sum"))

    run_in_threads(work, problems, intra_op_threads=8)
    for x, n in problems:
        expected = float(F.cross_entropy(x.double(), torch.arange(n) % 70000, reduction="sum"))
        assert abs(results[n] - expected) < 1e-4 * abs(expected)


@needs_kernel
def test_lazily_negated_logits_are_not_read_raw():
    """A negative view (storage holds x, reads give -x) must not reach the kernel's raw pointer."""
    x = torch.randn(6, 33, generator=_gen("neg"))
    y = torch.randint(0, 33, (6,), generator=_gen("neg-y"))
    negated = torch._neg_view(x)
    assert negated.is_neg() and not _native.supports(negated)
    got = LF.cross_entropy(negated, y)
    assert abs(float(got) - float(F.cross_entropy(-x.double(), y))) < 1e-5


@needs_kernel
@pytest.mark.parametrize(
    "bad",
    [
        {"y": torch.tensor([0, 1], dtype=torch.int32)},
        {"y": torch.tensor([0])},
        {"weight": torch.ones(5, dtype=torch.float64)},
        {"rows": torch.empty(2, dtype=torch.float64)},
        {"grad": torch.empty(2, 4)},
    ],
    ids=["int32-y", "short-y", "fp64-weight", "fp64-rows", "grad-shape"],
)
def test_kernel_refuses_what_it_cannot_read(bad):
    """Its own arguments are checked (dtype, device, length) before any pointer reaches C++."""
    args = {"grad": None, "y": torch.tensor([0, 1]), "weight": None, "rows": torch.empty(2)}
    args.update(bad)
    with pytest.raises(ValueError, match="cross_entropy kernel"):
        _native.cross_entropy_rows(
            torch.randn(2, 5), args["grad"], args["y"], args["weight"], 5.0, 0.0, 0.0, 1.0, None, args["rows"]
        )


@needs_kernel
def test_out_of_range_target_is_refused_by_the_kernel_itself():
    """The checking layer rejects bad targets first; the kernel still never reads outside the row."""
    x = torch.randn(4, 5)
    rows = torch.empty(4)
    y = torch.tensor([0, 1, 5, 2])
    with pytest.raises(IndexError, match="target 5 out of range"):
        _native.cross_entropy_rows(x, None, y, None, 5.0, 0.0, 0.0, 1.0, None, rows)


@needs_kernel
@given(
    n=st.integers(1, 9),
    c=st.integers(1, 80),
    scale=st.sampled_from([0.1, 3.0, 30.0]),
    smoothing=st.sampled_from([0.0, 0.05, 0.7]),
    weighted=st.booleans(),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_kernel_fuzz_against_torch(n, c, scale, smoothing, weighted, reduction, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (n,), generator=g)
    w = torch.rand(c, generator=g, dtype=torch.float64) + 0.5 if weighted else None
    kwargs = {"label_smoothing": smoothing, "reduction": reduction}
    assert_matches_torch(
        LF.cross_entropy, F.cross_entropy, {"input": x, "target": y, "weight": w}, kwargs, dtype=torch.float32
    )


def test_chunked_engine_still_used_for_fp64(monkeypatch):
    """The torch-op engine keeps walking chunks (fp64 here), with the kernel present or not."""
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", 16)
    x = torch.randn(20, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 8, (20,))
    assert_matches_torch(LF.cross_entropy, F.cross_entropy, {"input": x, "target": y}, {"reduction": "sum"})


# ======================================================================= 4. issue 15: interrupts, threads, alignment


@needs_kernel
def test_interrupt_after_an_inplace_write_still_bumps_the_version(monkeypatch):
    """Ctrl-C is delivered when the foreign call returns: the logits are written by then, so their version must
    already be bumped, and an op that saved them must refuse to backward through the overwritten values."""
    real = _native.library()

    class Interrupted:  # the real kernel, then the KeyboardInterrupt that a Ctrl-C during it raises
        def __getattr__(self, name):
            return getattr(real, name)

        def losskit_ce_rows(self, *args):
            real.losskit_ce_rows(*args)
            raise KeyboardInterrupt

    monkeypatch.setattr(_native, "library", lambda: Interrupted())
    g = _gen("interrupt")
    h = torch.randn(8, 4, generator=g, requires_grad=True)
    w = torch.randn(10, 4, generator=g, requires_grad=True)
    z = h @ w.T
    other = (z * z).sum()  # saves z for its backward
    with pytest.raises(KeyboardInterrupt):
        LF.cross_entropy(z, torch.randint(0, 10, (8,), generator=g), inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        other.backward()


@pytest.mark.parametrize("path", ["kernel", "torch"])
@pytest.mark.parametrize("options", ["plain", "w", "ls"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reduced_loss_does_not_depend_on_the_thread_count(monkeypatch, path, options, reduction):
    """N=100000, C=50 fp32 over 1-4 threads: one loss (and, on the kernel, one gradient), bitwise."""
    if path == "kernel" and DISABLED:
        pytest.skip("LOSSKIT_NATIVE=0 in the environment")
    if path == "torch":
        entry_off(monkeypatch)
        monkeypatch.setattr(_native, "supports", lambda x: False)
        monkeypatch.setattr(_small, "MAX_ELEMENTS", -1)
    g = _gen("thread-count", options)
    x = torch.randn(100_000, 50, generator=g) * 4
    y = torch.randint(0, 50, (100_000,), generator=g)
    w = torch.rand(50, generator=g) + 0.5 if options == "w" else None
    smoothing = 0.1 if options == "ls" else 0.0
    losses, grads = set(), set()
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3, 4):
            torch.set_num_threads(threads)
            xx = x.clone().requires_grad_()
            loss = LF.cross_entropy(xx, y, w, reduction=reduction, label_smoothing=smoothing)
            loss.backward()
            losses.add(float(loss.detach()))
            grads.add(hash(xx.grad.numpy().tobytes()))
    finally:
        torch.set_num_threads(before)
    assert len(losses) == 1, losses
    if path == "kernel":
        assert len(grads) == 1
    expected = F.cross_entropy(
        x.double(), y, None if w is None else w.double(), reduction=reduction, label_smoothing=smoothing
    )
    assert abs(losses.pop() - float(expected)) <= 1e-6 * abs(float(expected))


def _misaligned(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` whose data pointer is one byte past an aligned address."""
    raw = t.contiguous().view(torch.uint8).reshape(-1)
    buf = bytearray(raw.numel() + 1)
    out = torch.frombuffer(buf, dtype=torch.uint8, offset=1, count=raw.numel())
    out.copy_(raw)
    out = out.view(t.dtype).view(t.shape)
    assert out.data_ptr() % 2 == 1
    return out


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("inplace", [False, True], ids=["grad", "inplace"])
def test_misaligned_buffers(dtype, inplace):
    """Logits, gradient, targets, weights, row scales and row losses at odd addresses give bitwise the results of
    aligned ones (the kernel reads and writes through memcpy; under UBSan see the test below)."""
    g = _gen("misaligned", dtype)
    n, c = 37, 53
    x = (torch.randn(n, c, generator=g) * 3).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    y[::5] = -1
    w = torch.rand(c, generator=g) + 0.5
    rs = torch.rand(n, generator=g)
    results = []
    for make in (lambda t: t.clone(), _misaligned):
        xx, rows = make(x), make(torch.zeros(n))
        grad = xx if inplace else make(torch.zeros(n, c, dtype=dtype))
        _native.cross_entropy_rows(xx, grad, make(y), make(w), float(w.sum()), 0.1, 1e-3, 0.5, make(rs), rows)
        results.append((rows.clone(), grad.clone()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


_UBSAN_CHILD = """
import sys
sys.path.insert(0, {tests!r})
import test_native
from losskit.engine import native
assert "sanitizers: undefined" in native.status(), native.status()
for dtype in (test_native.torch.float32, test_native.torch.bfloat16):
    for inplace in (False, True):
        test_native.test_misaligned_buffers(dtype, inplace)
print("clean")
"""


@needs_kernel
@pytest.mark.skipif(os.name != "posix", reason="sanitizer builds are for POSIX compilers")
def test_misaligned_buffers_under_ubsan(tmp_path):
    """The kernel built with UBSan (alignment checks on, any finding fatal) runs the misaligned cases clean."""
    env = {**os.environ, "LOSSKIT_SANITIZE": "undefined", "LOSSKIT_CACHE_DIR": str(tmp_path / "cache")}
    env["LOSSKIT_ENTRY"] = "0"  # the kernel's misaligned cases (the entry points take only aligned tensors)
    code = _UBSAN_CHILD.format(tests=os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "runtime error" not in out.stderr, out.stderr[-3000:]
    assert out.stdout.strip().endswith("clean")


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("options", ["plain", "w+ls+z", "ignore+rows"])
def test_tiny_rows_are_the_general_loop_bit_for_bit(dtype, options):
    """Rows of at most two vectors of classes take the straight-line tiny_rows; every class count up to and past
    it gives the general loop's bits (loss per row and gradient), whatever the options."""
    before = _native.tiny_classes()
    try:
        for c in range(1, 35):
            g = _gen("tiny", c, options)
            x = (torch.randn(9, c, generator=g) * 4).to(dtype)
            x[1, c // 2] = 50.0  # one class far above the others
            x[2] = -float("inf")
            x[2, c - 1] = 0.0  # all but one class impossible
            y = torch.randint(0, c, (9,), generator=g)
            w = torch.rand(c, generator=g) + 0.5 if options == "w+ls+z" else None
            eps, z = (0.1, 1e-3) if options == "w+ls+z" else (0.0, 0.0)
            if options == "ignore+rows":
                y[::3] = -1
            rs = torch.rand(9, generator=g) if options == "ignore+rows" else None
            w_sum = float(w.sum()) if w is not None else float(c)
            results = []
            for tiny in (1 << 20, 0):
                _native.tiny_classes(tiny)
                rows, grad = torch.zeros(9), torch.zeros(9, c, dtype=dtype)
                _native.cross_entropy_rows(x, grad, y, w, w_sum, eps, z, 0.5, rs, rows)
                results.append((rows, grad))
            bits = torch.int32 if dtype == torch.float32 else torch.int16
            assert torch.equal(results[0][0].view(torch.int32), results[1][0].view(torch.int32)), c
            assert torch.equal(results[0][1].view(bits), results[1][1].view(bits)), c
    finally:
        _native.tiny_classes(before)
