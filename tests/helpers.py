"""Shared oracle helpers: run a losskit function and its torch counterpart on the same inputs and compare.

The one entry point is :func:`assert_matches_torch`. It works for any loss function with any number of
tensor arguments (passed by keyword, so the names must be the parameter names of both functions):

    assert_matches_torch(losskit.functional.mse_loss, torch.nn.functional.mse_loss,
                         {"input": x, "target": y}, {"reduction": "sum"}, grad_wrt=("input", "target"))

What it checks (see :data:`TOLERANCES`):

* both are called on fresh leaf clones of the inputs (float inputs named in ``grad_wrt`` require grad);
* outputs have the same shape and dtype, and the same NaN / ±inf positions;
* float64 / float32: values agree within the dtype's ``rtol``/``atol``;
* float16 / bfloat16: the error of ours against the truth (torch's own function run in float64 on the
  same, already rounded, inputs) is at most torch's error plus ``atol + rtol·|truth|``;
* gradients w.r.t. each input in ``grad_wrt``, by the same rules, with a cotangent that is not 1: a fixed
  scalar for scalar outputs, a fixed-seed random tensor otherwise (so per-element scaling is tested).
  Each gradient must have the input's dtype and shape.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

# rtol/atol per dtype. float64/float32: direct comparison with torch. float16/bfloat16: the slack allowed
# on top of torch's own error against the float64 truth (about one unit in the last place).
TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rtol": 1e-9, "atol": 1e-9},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
    torch.float16: {"rtol": 1e-3, "atol": 1e-3},
    torch.bfloat16: {"rtol": 8e-3, "atol": 8e-3},
}
LOW_PRECISION = (torch.float16, torch.bfloat16)

# the cotangent used for scalar outputs (anything but 1, so a missing grad_output factor shows)
SCALAR_GRAD_OUTPUT = 1.75


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """``{"rtol": ..., "atol": ...}`` for ``dtype`` (KeyError for dtypes without an entry)."""
    return TOLERANCES[dtype]


def _float_dtype(inputs: Mapping[str, Any], grad_wrt: Iterable[str]) -> torch.dtype:
    for name in grad_wrt:
        value = inputs.get(name)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.dtype
    for value in inputs.values():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.dtype
    raise AssertionError("assert_matches_torch: no floating point tensor among the inputs")


def _leaves(inputs: Mapping[str, Any], grad_wrt: Iterable[str], cast: torch.dtype | None) -> dict[str, Any]:
    """Fresh leaf copies of the inputs: float tensors cast to ``cast`` (when given), grad where asked."""
    grad_wrt = set(grad_wrt)
    out: dict[str, Any] = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            t = value.detach()
            if cast is not None and t.is_floating_point():
                t = t.to(cast)
            t = t.clone()
            if name in grad_wrt and t.is_floating_point():
                t.requires_grad_(True)
            out[name] = t
        else:
            out[name] = value
    return out


def _assert_same_nonfinite(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    o, r = ours.detach(), ref.detach()
    assert torch.equal(torch.isnan(o), torch.isnan(r)), f"{what}: NaN positions differ\nours={o}\ntorch={r}"
    assert torch.equal(torch.isposinf(o), torch.isposinf(r)), f"{what}: +inf positions differ\nours={o}\ntorch={r}"
    assert torch.equal(torch.isneginf(o), torch.isneginf(r)), f"{what}: -inf positions differ\nours={o}\ntorch={r}"


def assert_close_to(ours: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str = "value") -> None:
    """Same shape, same dtype, same non-finite positions, values within :data:`TOLERANCES` [dtype]."""
    assert isinstance(ours, torch.Tensor), f"{what}: ours is {type(ours).__name__}, not a Tensor"
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != torch's {tuple(ref.shape)}"
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != torch's {ref.dtype}"
    _assert_same_nonfinite(ours, ref, what)
    tol = tolerance(dtype)
    torch.testing.assert_close(
        ours.detach(), ref.detach(), rtol=tol["rtol"], atol=tol["atol"], equal_nan=True, msg=lambda m: f"{what}: {m}"
    )


def assert_error_no_worse(
    ours: torch.Tensor, ref: torch.Tensor, truth: torch.Tensor, dtype: torch.dtype, what: str = "value"
) -> None:
    """Low precision: ``|ours - truth| <= |ref - truth| + atol + rtol·|truth|`` element-wise.

    ``ours`` and ``ref`` must have the same shape, dtype and non-finite positions; elements where the truth
    is not finite are only compared through those positions.
    """
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != torch's {tuple(ref.shape)}"
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != torch's {ref.dtype}"
    _assert_same_nonfinite(ours, ref, what)
    tol = tolerance(dtype)
    o, r, t = (v.detach().to(torch.float64) for v in (ours, ref, truth))
    finite = torch.isfinite(t) & torch.isfinite(o) & torch.isfinite(r)
    err_ours = (o - t).abs()[finite]
    err_ref = (r - t).abs()[finite]
    bound = err_ref + tol["atol"] + tol["rtol"] * t.abs()[finite]
    bad = err_ours > bound
    assert not bool(bad.any()), (
        f"{what}: {int(bad.sum())} element(s) further from the float64 truth than torch's {dtype} result; "
        f"worst excess {float((err_ours - bound).max()):.3g}\nours={ours}\ntorch={ref}\ntruth={truth}"
    )


def cotangent(out: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The grad_output used for ``out``: :data:`SCALAR_GRAD_OUTPUT` for a scalar, else fixed-seed randn."""
    if out.dim() == 0:
        return torch.full((), SCALAR_GRAD_OUTPUT, dtype=out.dtype, device=out.device)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype=out.dtype, device=out.device)


def _grads(out: torch.Tensor, leaves: Mapping[str, Any], names: list[str], g: torch.Tensor):
    tensors = [leaves[n] for n in names]
    return torch.autograd.grad(out, tensors, grad_outputs=g, allow_unused=True)


def assert_matches_torch(
    ours_fn: Callable[..., torch.Tensor],
    torch_fn: Callable[..., torch.Tensor],
    inputs: Mapping[str, Any],
    kwargs: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    grad_wrt: Iterable[str] = ("input",),
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Call ``ours_fn(**inputs, **kwargs)`` and ``torch_fn(**inputs, **kwargs)`` and compare value and grads.

    Args:
        ours_fn, torch_fn: the functions (or modules) under test and the oracle; called with keywords.
        inputs: the tensor (and any other) arguments by name; each call gets fresh leaf clones.
        kwargs: further keyword arguments passed unchanged to both (``reduction=...``, ...).
        dtype: when given, every floating point tensor in ``inputs`` is cast to it first (so one float64
            input set serves every dtype); otherwise the dtype of the first ``grad_wrt`` input. It picks
            the tolerance, and for float16/bfloat16 the truth is ``torch_fn`` on the inputs upcast to float64.
        grad_wrt: names of the float inputs whose gradients are compared (empty: values only).
        seed: seed of the random cotangent used for non-scalar outputs.

    Returns:
        ``(ours, torch's)`` outputs, detached, for further checks by the caller.
    """
    kwargs = dict(kwargs or {})
    grad_wrt = [n for n in grad_wrt if isinstance(inputs.get(n), torch.Tensor) and inputs[n].is_floating_point()]
    dtype = dtype if dtype is not None else _float_dtype(inputs, grad_wrt)
    ours_in = _leaves(inputs, grad_wrt, dtype)
    ref_in = _leaves(inputs, grad_wrt, dtype)

    ours = ours_fn(**ours_in, **kwargs)
    ref = torch_fn(**ref_in, **kwargs)
    assert isinstance(ours, torch.Tensor), f"ours returned {type(ours).__name__}, not a Tensor"

    low = dtype in LOW_PRECISION
    truth_in = truth = None
    if low:
        truth_in = _leaves(ref_in, grad_wrt, torch.float64)
        truth = torch_fn(**truth_in, **kwargs)
        assert_error_no_worse(ours, ref, truth, dtype, "value")
    else:
        assert_close_to(ours, ref, dtype, "value")

    if grad_wrt:
        assert ours.requires_grad == ref.requires_grad, (
            f"output requires_grad: ours {ours.requires_grad}, torch {ref.requires_grad}"
        )
    if grad_wrt and ref.requires_grad:
        g = cotangent(ref, seed)
        ours_g = _grads(ours, ours_in, grad_wrt, g)
        ref_g = _grads(ref, ref_in, grad_wrt, g)
        truth_g = _grads(truth, truth_in, grad_wrt, g.to(torch.float64)) if low else None
        for i, name in enumerate(grad_wrt):
            what = f"grad wrt '{name}'"
            og, rg = ours_g[i], ref_g[i]
            if rg is None:
                assert og is None or not bool(og.any()), f"{what}: torch has none, ours is {og}"
                continue
            assert og is not None, f"{what}: ours has no gradient, torch's is {rg}"
            assert og.dtype == ours_in[name].dtype, f"{what}: dtype {og.dtype} != input's {ours_in[name].dtype}"
            if low:
                assert_error_no_worse(og, rg, truth_g[i], dtype, what)
            else:
                assert_close_to(og, rg, dtype, what)
    return ours.detach(), ref.detach()


# ---------------------------------------------------------------- grids shared by the family test modules

SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4, 5), (0, 3)]  # scalar, awkward sizes, K-dim and empty
SHAPE_IDS = ["x".join(map(str, s)) or "0d" for s in SHAPES]
DTYPES = [torch.float64, torch.float32]
# (size_average, reduce) pairs that make torch's legacy mapping and warning kick in
LEGACY = [
    (None, False),
    (False, None),
    (True, None),
    (False, True),
    (True, False),
    (None, True),
    (False, False),
]


def case_seed(*parts) -> int:
    """A seed from a test case's parameters (fixed across runs, different across cases)."""
    return sum((i + 1) * 7919 * len(str(p)) + sum(map(ord, str(p))) for i, p in enumerate(parts)) % 100_000


def call_recording(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), [(category, message), ...])``: the result and the warnings the call raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [(w.category, str(w.message)) for w in caught]


# ---------------------------------------------------------------- cross-entropy problems (shared by its test files)


def seeded(*key: object) -> torch.Generator:
    """A generator seeded from a test case's parameters (fixed across runs, different across cases)."""
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def num_classes(shape: tuple[int, ...]) -> int:
    """C of (C,), (N, C) or (N, C, d1, ..., dK) logits."""
    return shape[0] if len(shape) == 1 else shape[1]


def target_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The class-index target's shape for logits of ``shape``: (), (N,) or (N, d1, ..., dK)."""
    return () if len(shape) == 1 else (shape[0], *shape[2:])


def randn_logits(shape, g: torch.Generator, scale: float) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


def leaf(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A fresh leaf copy of ``t`` (cast to ``dtype`` when given) that requires grad."""
    return t.detach().to(dtype or t.dtype).clone().requires_grad_(True)


def class_weights(c: int, g: torch.Generator) -> torch.Tensor:
    """Positive class weights in [0.1, 2.0), float64."""
    return torch.rand(c, generator=g, dtype=torch.float64) * 1.9 + 0.1


def class_target(shape, g: torch.Generator, ignore_index: int | None = None) -> torch.Tensor:
    """Class indices in [0, C); with ``ignore_index``, every third one (from the second) is ignored."""
    y = torch.randint(0, num_classes(shape), target_shape(shape), generator=g)
    if ignore_index is not None:
        y.view(-1)[1::3] = ignore_index
    return y


def prob_target(shape, g: torch.Generator) -> torch.Tensor:
    """Rows (along the class dim) of softmax(2·randn)."""
    return torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 2, dim=0 if len(shape) == 1 else 1)


def ce_problem(shape, target_kind: str, options: str, g: torch.Generator, ignore_index: int = 1, scale: float = 3.0):
    """``(inputs, kwargs)`` of a cross-entropy case for ``assert_matches_torch``.

    ``target_kind``: 'index' or 'prob'. ``options``: '+'-joined subset of ``w`` (class weights), ``ii``
    (ignore_index, class targets only), ``ls`` (label smoothing 0.2), or ``plain``.
    """
    opts = set(options.split("+")) - {"plain"}
    x = randn_logits(shape, g, scale)
    if target_kind == "index":
        y = class_target(shape, g, ignore_index if "ii" in opts else None)
    else:
        assert "ii" not in opts
        y = prob_target(shape, g)
    inputs = {"input": x, "target": y, "weight": class_weights(num_classes(shape), g) if "w" in opts else None}
    kwargs = {"label_smoothing": 0.2 if "ls" in opts else 0.0}
    if "ii" in opts:
        kwargs["ignore_index"] = ignore_index
    return inputs, kwargs


def oracle_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> torch.Tensor:
    """Plain float64 math: torch's per-row CE of the capped logits plus ``z·lse²`` on the kept rows.

    ``'mean'`` divides by the CE mean's own denominator: ``Σ w_y`` over kept rows (class indices), the
    number of rows (probabilities).
    """
    capped = softcap * torch.tanh(input / softcap) if softcap is not None else input
    probabilities = target.is_floating_point()
    kw = {"weight": weight, "label_smoothing": label_smoothing, "reduction": "none"}
    if not probabilities:
        kw["ignore_index"] = ignore_index
    ce = F.cross_entropy(capped, target, **kw)
    lse = torch.logsumexp(capped, dim=0 if input.dim() == 1 else 1)
    z_rows = z_loss * lse * lse
    if probabilities:
        rows = ce + z_rows
        denom = torch.tensor(float(ce.numel()), dtype=input.dtype)
    else:
        kept = target != ignore_index
        rows = ce + torch.where(kept, z_rows, torch.zeros_like(z_rows))
        safe = torch.where(kept, target, torch.zeros_like(target))
        w_y = torch.ones_like(ce) if weight is None else weight[safe]
        denom = torch.where(kept, w_y, torch.zeros_like(w_y)).sum()
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / denom


# ---------------------------------------------------------------- linear cross-entropy problems (its two test files)


def linear_problem(shape, v: int, g: torch.Generator, bias: bool):
    """Float64 ``input``, ``linear_weight`` and (optionally) ``linear_bias`` with logits of a few units."""
    h_features = shape[-1]
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    w = torch.randn(v, h_features, generator=g, dtype=torch.float64) * (2.0 / math.sqrt(h_features))
    b = torch.randn(v, generator=g, dtype=torch.float64) if bias else None
    return x, w, b


def lead_class_target(lead, v: int, g: torch.Generator, ignored: int | None) -> torch.Tensor:
    """Class indices in [0, V); with ``ignored``, every third one from the second is set to it."""
    y = torch.randint(0, v, tuple(lead), generator=g)
    if ignored is not None:
        y.view(-1)[1::3] = ignored
    return y


def assert_same_across_thread_counts(x: torch.Tensor, y: torch.Tensor) -> None:
    """Cross entropy (smoothed, per row) and its gradient are bitwise the same with 1, 2 and 3 intra-op threads."""
    import losskit.functional as LF

    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            xx = x.clone().requires_grad_()
            loss = LF.cross_entropy(xx, y, label_smoothing=0.1, reduction="none")
            loss.sum().backward()
            results.append((loss.detach(), xx.grad))
    finally:
        torch.set_num_threads(before)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def in_forked_child(target: Callable, timeout: float = 60.0):
    """What ``target(queue)`` put on its queue, run in a child made by ``fork`` (the test fails if the child
    hangs or exits non-zero). Keep the child to small torch ops: torch's own OpenMP pool is not fork-safe once
    the parent has used it."""
    import multiprocessing

    import pytest

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(queue,))
    child.start()
    child.join(timeout=timeout)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung")
    assert child.exitcode == 0
    return queue.get(timeout=5)


def run_in_threads(work: Callable, args: list[tuple], intra_op_threads: int, timeout: float = 120.0) -> None:
    """``work(*a)`` for each ``a`` in ``args``, each in its own Python thread, all at once, with torch's intra-op
    thread count set to ``intra_op_threads`` meanwhile (restored after); every thread is joined."""
    import threading

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(intra_op_threads)
    try:
        threads = [threading.Thread(target=work, args=a) for a in args]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=timeout)
    finally:
        torch.set_num_threads(before)


KERNEL_PATHS = ("python", "entry")  # the two eager paths onto a kernel: Python + ctypes, or the C++ entry points


def entry_off(monkeypatch) -> None:
    """Turns losskit's C++ entry points off for a test: the Python path (or what a test patches into it) runs."""
    from losskit.engine import entry

    monkeypatch.setattr(entry, "module", None)
    monkeypatch.setattr(entry, "get", lambda: None)


def kernel_spy(path: str, monkeypatch, module, name: str, entry_name: str, never: str):
    """Records the kernel calls of a test on one eager path (a generator for a fixture to ``yield from``):
    ``'python'``: ``module.name``, the Python side's call of the kernel, with the C++ entry points turned off;
    ``'entry'``: the entry module's ``entry_name`` (:mod:`losskit.engine.entry`), counting the calls it took
    rather than handed back. Fails the test if the kernel was never reached on that path."""
    from losskit.engine import entry

    if path == "python":
        entry_off(monkeypatch)
        owner, attr = module, name
    else:
        owner, attr = entry.wait(), entry_name
        if owner is None:
            import pytest

            pytest.skip(f"losskit's C++ entry points are unavailable: {entry.status()}")
    calls: list = []
    real = getattr(owner, attr)

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        if out is not None:
            calls.append(args)
        return out

    monkeypatch.setattr(owner, attr, spy)
    yield calls
    assert calls, never


_PEAK_CHILD = """
import gc, json, sys, torch
import losskit.functional as LF
def kib(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))
{code}
step()  # first-call costs (kernel load, thread pools, allocator)
reset()
gc.collect()
before = kib("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
step()
print(json.dumps((kib("VmHWM") - before) * 1024))
"""


def peak_step_bytes(code: str, timeout: float = 300.0) -> int:
    """Peak resident bytes one ``step()`` adds, in a fresh process: ``code`` (top-level Python, ``torch`` and
    ``losskit.functional as LF`` imported) defines ``step()`` and ``reset()``; ``step`` runs once to warm up, then
    ``reset``, then the measured ``step``, from the resident-memory high-water mark (``VmHWM``, reset through
    ``/proc/self/clear_refs``) with glibc's mmap threshold pinned so each buffer is mapped and unmapped on its own
    (as the benchmarks measure). Skips the test where the mark cannot be reset."""
    import json
    import os
    import subprocess
    import sys

    import pytest

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("the resident-memory high-water mark cannot be reset here")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_CHILD.format(code=code)], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
