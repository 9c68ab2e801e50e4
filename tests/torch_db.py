"""Helpers that drive torch's own test databases against losskit (used by ``tests/test_torch_db.py``).

* ``op_db`` (``torch.testing._internal.common_methods_invocations``): each ``nn.functional.<name>`` OpInfo
  whose name is a losskit function: its ``sample_inputs`` and ``reference_inputs`` run through losskit and
  torch (values, dtypes, shapes, NaN/inf positions, every input gradient), its ``error_inputs`` must make
  losskit raise an instance of torch's error type;
* ``module_db`` (``common_modules``): each ModuleInfo of a losskit module: ``module_inputs_func``
  (construct both modules, forward, compare as above) and ``module_error_inputs_func`` (the error at the same
  stage as torch: constructor or forward).

Comparison rules: float64 and float32 within :data:`helpers.TOLERANCES`; bfloat16 no further from the float64
truth (torch's function on the inputs upcast) than torch's own bfloat16 result: the largest absolute error
at most 1.5x torch's largest plus 1e-3. A float32 result outside the tolerances still matches when it is no
further from the float64 truth than torch's float32 result: the largest absolute error at most 1.5x torch's
largest plus 2 ulps (2·2⁻²³) of the truth's largest magnitude. That is the rounding of large terms that nearly
cancel: e.g. a cross-entropy gradient with class weights ~9 has elements near 0 that two exact float32
implementations round 1-2e-6 apart, beyond ``atol=1e-6``, while both are within an ulp of float64 (measured:
losskit's and torch's largest errors agree within ~10% on average over random weighted problems).
"""

from __future__ import annotations

import copy
import functools
from collections import Counter
from dataclasses import dataclass, field

import torch

from helpers import TOLERANCES

DTYPES = (torch.float64, torch.float32, torch.bfloat16)
BF16_SLACK = 1.5
BF16_ATOL = 1e-3
FP32_SLACK = 1.5
FP32_ULPS = 2
FP32_EPS = torch.finfo(torch.float32).eps


@functools.cache
def op_db():
    from torch.testing._internal.common_methods_invocations import op_db as db

    return db


@functools.cache
def module_db():
    from torch.testing._internal.common_modules import module_db as db

    return db


def opinfos(name: str) -> list:
    """The OpInfos of ``nn.functional.<name>`` (every variant)."""
    return [op for op in op_db() if op.name == f"nn.functional.{name}"]


def moduleinfos(cls_name: str) -> list:
    return [m for m in module_db() if m.module_cls.__name__ == cls_name]


def cpu_dtypes(op) -> set:
    return set(op.supported_dtypes("cpu"))


@dataclass
class Tally:
    """Per (loss, dtype, kind): samples compared, matched, skipped (with reasons), and the failures."""

    compared: Counter = field(default_factory=Counter)
    matched: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    failures: dict = field(default_factory=dict)
    skip_reasons: dict = field(default_factory=dict)  # key -> Counter of reasons (where a reason was given)

    def skip(self, key, reason: str) -> None:
        self.skipped[key] += 1
        self.skip_reasons.setdefault(key, Counter())[reason] += 1

    def record(self, key, ok: bool, why: str = "") -> None:
        self.compared[key] += 1
        if ok:
            self.matched[key] += 1
        else:
            self.failures.setdefault(key, []).append(why)

    def lines(self, kinds: tuple[str, ...] | None = None) -> list[str]:
        """One line per (loss, dtype, kind), only ``kinds`` when given; skip reasons indented below."""
        keys = sorted(set(self.compared) | set(self.skipped), key=str)
        out = [f"{'loss':36} {'dtype':9} {'kind':15} compared matched skipped"]
        for k in keys:
            name, dtype, kind = k
            if kinds is not None and kind not in kinds:
                continue
            out.append(
                f"{name:36} {str(dtype).replace('torch.', ''):9} {kind:15} "
                f"{self.compared[k]:8} {self.matched[k]:7} {self.skipped[k]:7}"
            )
            out += [f"    skipped {n}: {reason}" for reason, n in self.skip_reasons.get(k, Counter()).items()]
        return out


TALLY = Tally()


# ------------------------------------------------------------------------------------------ comparison


def _fresh(value, upcast: torch.dtype | None = None):
    """A fresh leaf copy of a tensor (same requires_grad), optionally upcast; containers recursively."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if upcast is not None and t.is_floating_point():
            t = t.to(upcast)
        return t.clone().requires_grad_(value.requires_grad)
    if isinstance(value, (list, tuple)):
        return type(value)(_fresh(v, upcast) for v in value)
    if isinstance(value, dict):
        return {k: _fresh(v, upcast) for k, v in value.items()}
    return value


def _leaves(args, kwargs) -> list[torch.Tensor]:
    found = []

    def walk(v):
        if isinstance(v, torch.Tensor):
            if v.requires_grad and v.is_leaf:
                found.append(v)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(args)
    walk(kwargs)
    return found


def _same_nonfinite(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.detach(), b.detach()
    if a.is_complex() or b.is_complex():
        return bool(torch.equal(torch.isnan(a), torch.isnan(b)))
    return all(bool(torch.equal(f(a), f(b))) for f in (torch.isnan, torch.isposinf, torch.isneginf))


def close(ours, ref, truth, dtype, what: str) -> str | None:
    """None when ``ours`` matches ``ref`` by the rules above, else why not."""
    if ref is None:
        return None if ours is None or not bool(ours.detach().ne(0).any()) else f"{what}: torch has none, ours {ours}"
    if ours is None:
        return f"{what}: ours is None, torch's has shape {tuple(ref.shape)}"
    if not isinstance(ours, torch.Tensor):
        return f"{what}: ours is a {type(ours).__name__}"
    if ours.shape != ref.shape:
        return f"{what}: shape {tuple(ours.shape)} != torch's {tuple(ref.shape)}"
    if ours.dtype != ref.dtype:
        return f"{what}: dtype {ours.dtype} != torch's {ref.dtype}"
    if not _same_nonfinite(ours, ref):
        return f"{what}: NaN/inf positions differ: ours {ours.detach()} torch {ref.detach()}"
    o, r = ours.detach(), ref.detach()
    if dtype in TOLERANCES and dtype != torch.bfloat16:
        tol = TOLERANCES[dtype]
        try:
            torch.testing.assert_close(o, r, rtol=tol["rtol"], atol=tol["atol"], equal_nan=True)
        except AssertionError as e:
            why = f"{what}: {str(e).splitlines()[0:4]}"
            if dtype != torch.float32 or truth is None:
                return why
            # float32 rounding of large terms that nearly cancel: no further from float64 than torch's result
            return (
                None if _error_ok(o, r, truth, FP32_SLACK, FP32_ULPS * FP32_EPS) else why + " " + _errors(o, r, truth)
            )
        return None
    if _error_ok(o, r, truth, BF16_SLACK, 0.0, BF16_ATOL):
        return None
    return f"{what}: bf16 {_errors(o, r, truth)}"


def _error_parts(o, r, truth):
    t = truth.detach().to(torch.float64) if truth is not None else r.to(torch.float64)
    o64, r64 = o.to(torch.complex128 if o.is_complex() else torch.float64), r.to(torch.float64)
    fin = torch.isfinite(t) & torch.isfinite(o64) & torch.isfinite(r64)
    if not bool(fin.any()):
        return None
    err_o, err_r = float((o64 - t).abs()[fin].max()), float((r64 - t).abs()[fin].max())
    return err_o, err_r, float(t.abs()[fin].max())


def _error_ok(o, r, truth, slack: float, rel: float, atol: float = 0.0) -> bool:
    """torch's rule for alternative implementations: the largest error against the float64 truth no worse than
    torch's largest (x ``slack``), plus ``atol`` and ``rel`` times the truth's largest magnitude."""
    parts = _error_parts(o, r, truth)
    if parts is None:
        return True
    err_o, err_r, scale = parts
    return err_o <= slack * err_r + atol + rel * scale


def _errors(o, r, truth) -> str:
    parts = _error_parts(o, r, truth)
    return (
        "" if parts is None else f"max error vs float64 {parts[0]:.3g} vs torch's {parts[1]:.3g} (scale {parts[2]:.3g})"
    )


def _cotangent(out: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)


def _truth(torch_fn, args, kwargs, g):
    """torch's function on the inputs upcast to float64 (float32 where it refuses float64): (output, grads)."""
    for high in (torch.float64, torch.float32):  # some ops refuse float64 (linear CE's chunked options)
        truth_args, truth_kwargs = _fresh(args, high), _fresh(kwargs, high)
        # a module's own tensors (class weights, linear CE's parameters) in the same dtype
        fn = copy.deepcopy(torch_fn).to(high) if isinstance(torch_fn, torch.nn.Module) else torch_fn
        try:
            truth = fn(*truth_args, **truth_kwargs)
            break
        except Exception:  # noqa: BLE001
            continue
    else:
        return None, None
    grads = None
    leaves = _leaves(truth_args, truth_kwargs)
    if g is not None and leaves and truth.requires_grad:
        grads = torch.autograd.grad(truth, leaves, g.to(truth.dtype), allow_unused=True)
    return truth, grads


def compare_call(ours_fn, torch_fn, args, kwargs, dtype) -> str | None:
    """Run both on fresh copies; compare outputs and the gradients of every leaf that requires grad.

    The float64 truth is computed for bfloat16, and for a float32 result outside the tolerances (see the module
    docstring).
    """
    ref_args, ref_kwargs = _fresh(args), _fresh(kwargs)
    try:
        ref = torch_fn(*ref_args, **ref_kwargs)
    except Exception:  # torch itself refuses this sample (not an error input): nothing to compare
        return "torch-raises"
    our_args, our_kwargs = _fresh(args), _fresh(kwargs)
    try:
        ours = ours_fn(*our_args, **our_kwargs)
    except Exception as e:  # noqa: BLE001
        return f"ours raised {type(e).__name__}: {e}"
    ref_leaves, our_leaves = _leaves(ref_args, ref_kwargs), _leaves(our_args, our_kwargs)
    with_grad = bool(ref_leaves) and isinstance(ref, torch.Tensor) and ref.requires_grad and ref.is_floating_point()
    g = ref_g = our_g = None
    if with_grad and isinstance(ours, torch.Tensor) and ours.requires_grad:
        g = _cotangent(ref)
        ref_g = torch.autograd.grad(ref, ref_leaves, g, allow_unused=True)
        try:
            our_g = torch.autograd.grad(ours, our_leaves, g, allow_unused=True)
        except Exception as e:  # noqa: BLE001
            return f"ours backward raised {type(e).__name__}: {e}"
    truth = truth_g = None
    if dtype == torch.bfloat16:
        truth, truth_g = _truth(torch_fn, args, kwargs, g)
    why = _compare(ours, ref, truth, our_g, ref_g, truth_g, dtype, with_grad)
    if why and dtype == torch.float32 and why != "ours does not require grad":
        truth, truth_g = _truth(torch_fn, args, kwargs, g)
        why = _compare(ours, ref, truth, our_g, ref_g, truth_g, dtype, with_grad)
    return why


def _compare(ours, ref, truth, our_g, ref_g, truth_g, dtype, with_grad: bool) -> str | None:
    why = close(ours, ref, truth, dtype, "value")
    if why or not with_grad:
        return why
    if our_g is None:
        return "ours does not require grad"
    for i, (o, r) in enumerate(zip(our_g, ref_g, strict=True)):
        why = close(o, r, None if truth_g is None else truth_g[i], dtype, f"grad of leaf {i}")
        if why:
            return why
    return None


def error_stage_matches(call, error_type) -> str | None:
    """None when ``call()`` raises an instance of ``error_type``."""
    try:
        call()
    except Exception as e:  # noqa: BLE001
        if isinstance(e, error_type):
            return None
        return f"raised {type(e).__name__} ({e}), torch raises {error_type.__name__}"
    return f"did not raise; torch raises {error_type.__name__}"


def errors_vs_float64(ours_fn, torch_fn, args, kwargs=None) -> dict[str, tuple[float, float]]:
    """``{what: (ours' largest error, torch's largest error)}`` against the float64 truth, for the value and the
    gradient of each leaf that requires grad (the same random cotangent for all three)."""
    kwargs = dict(kwargs or {})
    ref_args, ref_kwargs = _fresh(args), _fresh(kwargs)
    our_args, our_kwargs = _fresh(args), _fresh(kwargs)
    ref, ours = torch_fn(*ref_args, **ref_kwargs), ours_fn(*our_args, **our_kwargs)
    g = _cotangent(ref)
    truth, truth_g = _truth(torch_fn, args, kwargs, g)
    out = {}
    parts = _error_parts(ours.detach(), ref.detach(), truth)
    out["value"] = (0.0, 0.0) if parts is None else parts[:2]
    leaves = _leaves(ref_args, ref_kwargs)
    if leaves:
        ref_g = torch.autograd.grad(ref, leaves, g, allow_unused=True)
        our_g = torch.autograd.grad(ours, _leaves(our_args, our_kwargs), g, allow_unused=True)
        for i, (o, r, t) in enumerate(zip(our_g, ref_g, truth_g, strict=True)):
            parts = _error_parts(o, r, t)
            out[f"grad {i}"] = (0.0, 0.0) if parts is None else parts[:2]
    return out
