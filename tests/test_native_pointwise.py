"""losskit's element-wise kernel (kernels/pointwise.cpp): loss and gradient in one pass, against torch and float64.

The per-loss files run each loss's option grid and torch's databases through the public functions (which take
the kernel for fp32/fp64 same-shape calls); here: the kernel's own arithmetic (its polynomial exp and log), the
vector tails and the thread split, non-finite inputs, the backward paths (grad_output ≠ 1, retain_graph,
create_graph) and the cases the kernel hands back to the general path.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF
from helpers import KERNEL_PATHS, in_forked_child, kernel_spy, run_in_threads, seeded
from losskit.engine import entry
from losskit.engine import native_pointwise as NP

DISABLED = os.environ.get("LOSSKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")
pytestmark = pytest.mark.skipif(DISABLED, reason="LOSSKIT_NATIVE=0 in the environment")

LOSSES = (
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "soft_margin_loss",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "kl_div",
    "poisson_nll_loss",
    "hinge_embedding_loss",
)


def _inputs(name: str, shape, dtype, g: torch.Generator):
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    if name == "binary_cross_entropy":
        x, t = x.sigmoid(), torch.rand(shape, generator=g, dtype=torch.float64)
    elif name == "binary_cross_entropy_with_logits":
        t = torch.rand(shape, generator=g, dtype=torch.float64)
    elif name == "soft_margin_loss":
        t = t.sign()
    elif name == "kl_div":
        x, t = x.log_softmax(-1), t.softmax(-1)
    elif name == "hinge_embedding_loss":
        t = t.sign()
    elif name == "poisson_nll_loss":
        t = torch.poisson(torch.rand(shape, generator=g, dtype=torch.float64) * 4, generator=g)
    return x.to(dtype), t.to(dtype)


@pytest.fixture(params=KERNEL_PATHS)
def kernel_calls(request, monkeypatch):
    """Counts the kernel's calls on each eager path and fails the test if it was never reached."""
    yield from kernel_spy(
        request.param, monkeypatch, NP, "run", "pointwise", "the element-wise kernel was never called"
    )


def test_the_kernel_is_built():
    assert NP.library() is not None, NP.status()
    assert NP.library().losskit_kernel_version() == NP.VERSION


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 1000])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_every_length_matches_torch_in_float64(kernel_calls, name, n, reduction):
    """Whole vectors and every tail length: values and gradients as torch's at float64."""
    x, t = _inputs(name, (n,), torch.float64, seeded("len", name, n))
    kw = {"reduction": reduction}
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, ref = getattr(LF, name)(ours_x, t, **kw), getattr(F, name)(ref_x, t, **kw)
    cot = torch.randn(ref.shape, generator=seeded("cot", name, n), dtype=torch.float64)
    (ours * cot).sum().backward()
    (ref * cot).sum().backward()
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", LOSSES)
def test_float32_error_is_torchs(kernel_calls, name):
    """fp32 element losses and gradients: error vs float64 (of the same fp32 inputs), largest and mean, within
    2× torch's plus one ulp of the largest value (element by element would be too strict where a formula
    cancels, as KL's t·log t - t·x does, and torch's error happens to be 0)."""
    x, t = _inputs(name, (64, 257), torch.float32, seeded("f32", name))
    x64, t64 = x.double(), t.double()
    results = {}
    for label, fn, xx, tt in (("ours", getattr(LF, name), x, t), ("torch", getattr(F, name), x, t),
                              ("exact", getattr(F, name), x64, t64)):  # fmt: skip
        leaf = xx.clone().requires_grad_()
        loss = fn(leaf, tt, reduction="none")
        loss.sum().backward()
        results[label] = (loss.double(), leaf.grad.double())
    eps = torch.finfo(torch.float32).eps
    for k, what in enumerate(("loss", "grad")):
        exact = results["exact"][k]
        ours = (results["ours"][k] - exact).abs()
        torch_err = (results["torch"][k] - exact).abs()
        slack = eps * float(exact.abs().max())
        assert float(ours.max()) <= 2 * float(torch_err.max()) + slack, (name, what, ours.max(), torch_err.max())
        assert float(ours.mean()) <= 2 * float(torch_err.mean()) + slack, (name, what, ours.mean(), torch_err.mean())


def test_exp_and_log_of_the_kernel_are_within_two_ulps(kernel_calls):
    """The kernel's own fp32 exp (KL with log-target: e^t·(t - x) at x = t - 1) and log (BCE at t = 1: -log p),
    over their whole ranges: within 2 ulps (3 for exp's product with t - x); exp's results below the smallest
    normal float are flushed to 0 (an absolute error under 1.2e-38), log takes subnormal inputs exactly."""
    t = torch.cat([torch.linspace(-103.0, 88.7, 200001), torch.tensor([-87.4, -87.3, 0.0, -0.0, 88.72])])
    x = t - 1  # rounded: t - x is not exactly 1, so the reference takes the same fp32 x
    exp_ours = LF.kl_div(x, t, reduction="none", log_target=True)
    exp_ref = t.double().exp() * (t.double() - x.double())
    ulp = torch.finfo(torch.float32).eps * exp_ref.abs().clamp_min(torch.finfo(torch.float32).tiny)
    assert bool(((exp_ours.double() - exp_ref).abs() <= 3 * ulp + torch.finfo(torch.float32).tiny).all())
    p = torch.cat([torch.logspace(-44.5, 0, 200001), torch.tensor([1.0, 0.5, 1e-45, 1.17549435e-38])]).float()
    p = p[p > 0]
    log_ours = -LF.binary_cross_entropy(p, torch.ones_like(p), reduction="none")
    log_ref = p.double().log().clamp_min(-100)
    ulp = torch.finfo(torch.float32).eps * log_ref.abs().clamp_min(1.0)
    assert bool(((log_ours.double() - log_ref).abs() <= 2 * ulp).all())


NONFINITE = (float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e30, -1e30, 1e-40)


@pytest.mark.parametrize("name", LOSSES[:6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_nonfinite_inputs_like_torch(kernel_calls, name, dtype):
    """NaN, ±inf, huge and subnormal values in x and in t: NaN where torch has NaN, values and gradients
    otherwise as torch's (soft margin and BCE-with-logits stay finite where torch's formula overflows to inf:
    losskit's log(1 + e^z) is computed without overflow, so those elements are compared with float64 math)."""
    v = torch.tensor(NONFINITE, dtype=dtype)
    x, t = (z.contiguous() for z in torch.cartesian_prod(v, v).unbind(1))
    if name == "soft_margin_loss":
        t = torch.where(t.isnan(), t, t.sign())
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = getattr(LF, name)(ours_x, t, reduction="none")
    ref = getattr(F, name)(ref_x, t, reduction="none")
    ours.sum().backward()
    ref.sum().backward()
    assert torch.equal(ours.isnan(), ref.isnan()) or name in ("soft_margin_loss", "binary_cross_entropy_with_logits")
    both = ~(ours.isnan() | ref.isnan()) & ref.isfinite()
    torch.testing.assert_close(ours[both], ref[both], rtol=1e-6, atol=1e-6)
    gboth = ~(ours_x.grad.isnan() | ref_x.grad.isnan())
    torch.testing.assert_close(ours_x.grad[gboth], ref_x.grad[gboth], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_thread_split_gives_the_same_result(kernel_calls, name):
    """From PARALLEL_ELEMENTS the elements go in fixed chunks over the worker pool: the element losses, the
    gradients and the reduced loss (per-chunk partial sums, added in chunk order) are bitwise the same for 1, 2
    and 3 threads."""
    x, t = _inputs(name, (NP.PARALLEL_ELEMENTS * 2 + 5,), torch.float32, seeded("threads", name))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            leaf = x.clone().requires_grad_()
            none = getattr(LF, name)(leaf, t, reduction="none")
            mean = getattr(LF, name)(x.clone().requires_grad_(), t, reduction="sum")
            none.sum().backward()
            results.append((none, leaf.grad, mean))
    finally:
        torch.set_num_threads(before)
    for none, grad, total in results[1:]:
        assert torch.equal(none, results[0][0]) and torch.equal(grad, results[0][1])
        assert torch.equal(total, results[0][2])


@pytest.mark.parametrize("name", ["l1_loss", "mse_loss", "kl_div"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_grad_output_other_than_one_and_retain_graph(kernel_calls, name, reduction):
    """A scaled loss (grad_output ≠ 1) and a second backward through the same graph (retain_graph=True)."""
    x, t = _inputs(name, (6, 5), torch.float64, seeded("go", name, reduction))
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = getattr(LF, name)(ours_x, t, reduction=reduction) * 0.37
    ref = getattr(F, name)(ref_x, t, reduction=reduction) * 0.37
    ours.backward(retain_graph=True)
    ours.backward()
    ref.backward(retain_graph=True)
    ref.backward()
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-14, atol=0)


def test_l1_gradient_is_torchs_bit_for_bit_under_a_scaled_mean(kernel_calls):
    """torch's mean backward multiplies by grad_output / n; the kernel does the same (not (1/n)·grad_output)."""
    x = torch.randn(49, generator=seeded("l1bits"), dtype=torch.float32)
    t = torch.zeros(49)
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    (LF.l1_loss(ours_x, t) * 3.3).backward()
    (F.l1_loss(ref_x, t) * 3.3).backward()
    assert torch.equal(ours_x.grad, ref_x.grad)


@pytest.mark.parametrize("name", ["mse_loss", "binary_cross_entropy_with_logits", "soft_margin_loss", "huber_loss"])
def test_double_backward(kernel_calls, name):
    """create_graph=True differentiates the loss's own formula again (as torch's losses allow)."""
    x, t = _inputs(name, (3, 4), torch.float64, seeded("gg", name))
    x = x.requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a: getattr(LF, name)(a, t), (x,))


def test_no_grad_and_inference_calls(kernel_calls):
    x, t = _inputs("mse_loss", (5, 7), torch.float32, seeded("nograd"))
    with torch.no_grad():
        a = LF.mse_loss(x.requires_grad_(), t)
    with torch.inference_mode():
        b = LF.mse_loss(x.detach(), t)
    assert a.grad_fn is None and torch.equal(a, b)
    torch.testing.assert_close(a, F.mse_loss(x.detach(), t))


def test_bce_outside_zero_one_raises_torchs_error():
    p = torch.tensor([0.2, 1.5, 0.3])
    with pytest.raises(ValueError, match="between 0 and 1"):
        LF.binary_cross_entropy(p, torch.ones(3))
    with pytest.raises(ValueError, match="between 0 and 1"):
        LF.binary_cross_entropy(torch.tensor([0.2, float("nan")]), torch.ones(2))


@pytest.mark.parametrize(
    "case",
    ["broadcast", "float16", "mixed_dtype", "target_requires_grad", "strided", "weight", "empty"],
)
def test_cases_the_kernel_leaves_to_the_general_path(case, monkeypatch):
    """These calls do not reach the kernel and still match torch."""
    monkeypatch.setattr(NP, "run", lambda *a, **k: pytest.fail("the kernel was called"))
    fast = entry.wait()
    if fast is not None:  # nor the C++ entry point
        real = fast.pointwise

        def declined(*args):
            out = real(*args)
            assert out is None, "the C++ entry point took it"
            return out

        monkeypatch.setattr(fast, "pointwise", declined)
    x = torch.randn(4, 6, generator=seeded("general", case))
    t = torch.randn(4, 6, generator=seeded("general-t", case))
    kwargs = {}
    if case == "broadcast":
        t = t[:1]
    elif case == "float16":
        x, t = x.half(), t.half()
    elif case == "mixed_dtype":
        t = t.double()
    elif case == "target_requires_grad":
        t.requires_grad_()
    elif case == "strided":
        x = x.t()
        t = t.t()
    elif case == "weight":
        kwargs["weight"] = torch.rand(4, 6, generator=seeded("w"))
    elif case == "empty":
        x, t = x[:0], t[:0]
    with pytest.warns(UserWarning) if case == "broadcast" else _nothing():
        ours = LF.mse_loss(x, t, **kwargs)
    with pytest.warns(UserWarning) if case == "broadcast" else _nothing():
        ref = F.mse_loss(x, t, **kwargs)
    torch.testing.assert_close(ours, ref, equal_nan=True, rtol=1e-3, atol=1e-3)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_misaligned_tensor(kernel_calls):
    """A tensor may start at any byte (torch.frombuffer at an odd offset): read and written element-wise."""
    raw = bytearray(4 * 41 + 1)
    x = torch.frombuffer(raw, dtype=torch.float32, offset=1, count=41)
    x.copy_(torch.randn(41, generator=seeded("misaligned")))
    t = torch.zeros(41)
    assert x.data_ptr() % 4 != 0
    torch.testing.assert_close(LF.mse_loss(x, t, reduction="none"), F.mse_loss(x, t, reduction="none"))
    torch.testing.assert_close(LF.mse_loss(x, t), F.mse_loss(x, t))


_LEVEL_CHILD = """
import torch, torch.nn.functional as F, losskit.functional as LF
from losskit.engine import native_build, native_pointwise as NP
if native_build.isa_level() != {level!r}:
    print("skip")
    raise SystemExit
assert "-{level}-" in NP.status(), NP.status()
g = torch.Generator().manual_seed(0)
for name in {names!r}:
    for n in (1, 5, 8, 13, 16, 33, 300):
        x64 = torch.randn(n, generator=g, dtype=torch.float64) * 3
        t64 = torch.rand(n, generator=g, dtype=torch.float64)
        if name == "binary_cross_entropy":
            x64 = x64.sigmoid()
        if name == "kl_div":
            x64 = -x64.abs()
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
            x, t = x64.to(dtype).detach().clone().requires_grad_(), t64.to(dtype)
            ref_x = x.detach().double().requires_grad_()
            got = getattr(LF, name)(x, t, reduction="sum")
            ref = getattr(F, name)(ref_x, t.double(), reduction="sum")
            got.backward()
            ref.backward()
            total, expected = float(got.detach()), float(ref.detach())
            assert abs(total - expected) <= tol * (1 + abs(expected)), (name, n, dtype)
            scale = 1 + float(ref_x.grad.abs().max())
            assert float((x.grad.double() - ref_x.grad).abs().max()) <= tol * 10 * scale, (name, n, dtype)
print("ok")
"""


@pytest.mark.parametrize("level", ["x86-64-v3", "x86-64"])
def test_lower_instruction_set_levels_match_torch(tmp_path, level):
    """The AVX2 and baseline builds (an AVX-512 machine otherwise never runs them) against float64 torch."""
    import platform
    import subprocess
    import sys

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 levels")
    env = {**os.environ, "LOSSKIT_ISA": level, "LOSSKIT_CACHE_DIR": str(tmp_path), "LOSSKIT_ENTRY": "0"}
    code = _LEVEL_CHILD.format(level=level, names=LOSSES)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if run.stdout.strip() == "skip":
        pytest.skip(f"this CPU does not run {level}")
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("eps", [1e-8, 0.5])
def test_poisson_with_rates(kernel_calls, dtype, eps):
    """log_input=False: x - t·log(x + eps), against torch; full=True stays on the torch-op path."""
    g = seeded("poisson-rate", dtype, eps)
    x = torch.rand(40, generator=g, dtype=dtype) * 3
    t = torch.poisson(torch.rand(40, generator=g, dtype=dtype) * 4, generator=g)
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = LF.poisson_nll_loss(ours_x, t, log_input=False, eps=eps)
    ref = F.poisson_nll_loss(ref_x, t, log_input=False, eps=eps)
    ours.backward()
    ref.backward()
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(LF.poisson_nll_loss(x, t, full=True), F.poisson_nll_loss(x, t, full=True))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_multilabel_soft_margin_is_bce_with_logits_over_the_classes(kernel_calls, dtype, reduction):
    """Its 'mean'/'sum' are BCE-with-logits' sum over N·C elements divided by N·C (or C): the same kernel."""
    g = seeded("mlsm", dtype, reduction)
    x = torch.randn(6, 9, generator=g, dtype=dtype) * 3
    t = (torch.rand(6, 9, generator=g, dtype=dtype) > 0.5).to(dtype)
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = LF.multilabel_soft_margin_loss(ours_x, t, reduction=reduction) * 0.37
    ref = F.multilabel_soft_margin_loss(ref_x, t, reduction=reduction) * 0.37
    ours.backward()
    ref.backward()
    tol = 1e-14 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=tol, atol=tol)


# ================================================================================ the worker pool (kernels/pool.h)

_POOL_X = torch.randn(NP.PARALLEL_ELEMENTS * 4 + 3, generator=seeded("pool-x"))
_POOL_T = torch.randn(NP.PARALLEL_ELEMENTS * 4 + 3, generator=seeded("pool-t"))


def _pool_step():
    """mse forward+backward on the pool; only small torch ops besides (after a fork, torch's own OpenMP pool
    would hang a large one): the loss and a slice of the gradient."""
    leaf = _POOL_X.detach().requires_grad_()
    loss = LF.mse_loss(leaf, _POOL_T)
    loss.backward()
    return float(loss.detach()), leaf.grad[-50:].tolist()


def _pool_child(queue):
    torch.set_num_threads(2)
    queue.put(_pool_step())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_a_pool_of_its_own(kernel_calls):
    """The parent's workers do not exist in a forked child: its first parallel call starts its own (no hang),
    with the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = _pool_step()
    finally:
        torch.set_num_threads(before)
    assert in_forked_child(_pool_child) == expected
    assert abs(expected[0] - float(F.mse_loss(_POOL_X, _POOL_T))) <= 1e-6 * expected[0]  # and torch's value


def test_concurrent_callers_get_their_own_results(kernel_calls):
    """Python threads calling at once (ctypes releases the GIL): one holds the pool, the others run alone; every
    result is bitwise the single-caller one."""

    problems = [(_POOL_X * (k + 1), _POOL_T - k) for k in range(4)]
    expected = [LF.mse_loss(x, t, reduction="sum") for x, t in problems]
    for (x, t), e in zip(problems, expected, strict=True):  # the single caller's results are torch's
        torch.testing.assert_close(e, F.mse_loss(x.double(), t.double(), reduction="sum").float(), rtol=1e-6, atol=0)
    failures: list[str] = []

    def work(k):
        for _ in range(20):
            got = LF.mse_loss(*problems[k], reduction="sum")
            if not torch.equal(got, expected[k]):
                failures.append(f"caller {k}: {float(got)} != {float(expected[k])}")

    run_in_threads(work, [(k,) for k in range(4)], intra_op_threads=2)
    assert not failures, failures


# ================================================================================ OpenMP: torch's own threads


def _mapped(name: str) -> set[str]:
    with open("/proc/self/maps") as maps:
        return {line.split()[-1] for line in maps if os.path.basename(line.split()[-1]) == name}


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_kernels_run_on_torchs_own_openmp_threads(kernel_calls):
    """Built with OpenMP, the library's libgomp.so.1 is the copy torch loaded (not the system's beside it): one
    OpenMP runtime for torch and losskit, one set of threads. (Other wheels may bring their own under other
    names, e.g. scikit-learn's libgomp-<hash>.so.)"""
    from pathlib import Path

    from losskit.engine import native_build

    _pool_step()
    if not native_build.openmp(NP.library()):
        pytest.skip("built without OpenMP here (LOSSKIT_OPENMP=0 or no compiler support): losskit's own pool")
    torch_dir = Path(torch.__file__).parent.resolve()
    runtimes = _mapped("libgomp.so.1")
    assert len(runtimes) == 1, runtimes
    assert Path(runtimes.pop()).resolve().is_relative_to(torch_dir)


def _first_load_in_child(queue):
    """The library loaded before the fork, then one built and loaded for the first time here (a fresh cache)."""
    import tempfile

    from losskit.engine import native_build
    from losskit.engine.native_loader import Loader

    inherited = native_build.openmp(NP.library())
    os.environ["LOSSKIT_CACHE_DIR"] = tempfile.mkdtemp()
    NP._loader = Loader("element-wise CPU kernel", NP.SOURCE, NP.VERSION, NP._declare)
    torch.set_num_threads(2)
    queue.put((inherited, native_build.openmp(NP.library()), _pool_step()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_the_chunks_on_losskits_own_pool(kernel_calls):
    """libgomp's threads are the parent's; fork does not promise them to the child (torch's own parallel ops hang
    in one). A library loaded before the fork is told by its fork handler, one first loaded in the child by the
    loader: both run their chunks on losskit's own pool there, with the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = _pool_step()  # the parent's OpenMP threads exist now
    finally:
        torch.set_num_threads(before)
    inherited, fresh, got = in_forked_child(_first_load_in_child, timeout=180)
    assert (inherited, fresh) == (False, False)
    assert got == expected


def test_built_without_openmp_the_same_bits(tmp_path):
    """LOSSKIT_OPENMP=0 builds the library without OpenMP (losskit's own pool runs the chunks): the same bits, and
    both the loss and the gradient of torch's float64 smooth L1."""
    import subprocess
    import sys

    script = (
        "import torch, losskit.functional as LF\n"
        "from losskit.engine import native_build, native_pointwise as NP\n"
        "torch.set_num_threads(2)\n"
        "g = torch.Generator().manual_seed(5)\n"
        "x = torch.randn(NP.PARALLEL_ELEMENTS * 3 + 7, generator=g).requires_grad_()\n"
        "t = torch.randn(x.shape, generator=g)\n"
        "loss = LF.smooth_l1_loss(x, t)\n"
        "loss.backward()\n"
        "ref_x = x.detach().double().requires_grad_()\n"
        "ref = torch.nn.functional.smooth_l1_loss(ref_x, t.double())\n"
        "ref.backward()\n"
        "close = abs(loss.item() - ref.item()) <= 1e-6 * ref.item() and torch.allclose(x.grad.double(), ref_x.grad,"
        " rtol=1e-6, atol=1e-12)\n"
        "print(native_build.openmp(NP.library()), close, loss.item(), float(x.grad.double().sum()),"
        " x.grad[-3:].tolist())\n"
    )
    results = []
    for flag in ("0", "1"):
        env = {**os.environ, "LOSSKIT_OPENMP": flag, "LOSSKIT_CACHE_DIR": str(tmp_path), "LOSSKIT_ENTRY": "0"}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        results.append(done.stdout.split(" ", 1))
    assert results[0][0] == "False"
    assert results[1][0] in ("True", "False")  # False: this compiler has no OpenMP
    assert results[0][1] == results[1][1]
    assert results[0][1].startswith("True ")  # the oracle: torch in float64
