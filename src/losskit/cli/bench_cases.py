"""Benchmark suites: each defines ``setup(params, impl) -> (make_inputs, loss_fn, differentiate)``.

Implementations are compared side by side in one run: ``torch`` (torch.nn.functional), ``losskit``,
and, for cross entropy, ``copy`` (one plain copy of the logits: the memory-bandwidth floor).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .harness import Case

DTYPES = ("float32", "bfloat16")


def _dtype(name: str):
    import torch

    return getattr(torch, name)


def setup_cross_entropy(params: dict, impl: str):
    import torch
    import torch.nn.functional as TF

    import losskit.functional as LF

    n, c, dtype = params["N"], params["C"], _dtype(params["dtype"])
    gen = torch.Generator().manual_seed(0)
    x0 = (torch.randn(n, c, generator=gen) * 2).to(dtype)
    y = torch.randint(0, c, (n,), generator=gen)
    kwargs: dict[str, Any] = {}
    if params.get("options") == "weight+ignore+smoothing":
        kwargs = {
            "weight": torch.rand(c, generator=gen).to(dtype) + 0.5,
            "ignore_index": 7,
            "label_smoothing": 0.1,
        }
        y[::10] = 7

    def make():
        return (x0.clone().requires_grad_(),)

    if impl == "copy":

        def fn(x):
            return x.detach().clone().sum()

        return make, fn, False
    loss = {"torch": TF.cross_entropy, "losskit": LF.cross_entropy}[impl]
    return make, (lambda x: loss(x, y, **kwargs)), True


def setup_elementwise(params: dict, impl: str):
    """One element-wise loss of the catalog on its own sample problem, the typical keywords of its entry."""
    import torch
    import torch.nn.functional as TF

    import losskit.functional as LF
    from losskit._catalog import get

    entry = get(params["loss"])
    if entry is None:
        raise ValueError(f"no catalog loss named {params['loss']!r}")
    problem = entry.sample(tuple(params["shape"]), torch.float32, torch.Generator().manual_seed(0))
    a, *rest = problem.args
    fn = getattr({"torch": TF, "losskit": LF}[impl], entry.name)

    def make():
        return (a.clone().requires_grad_(),)

    return make, (lambda x: fn(x, *rest, **entry.typical)), True


def setup_linear_cross_entropy(params: dict, impl: str):
    import torch
    import torch.nn.functional as TF

    import losskit.functional as LF

    n, h, v, dtype = params["N"], params["H"], params["V"], _dtype(params["dtype"])
    gen = torch.Generator().manual_seed(0)
    h0 = (torch.randn(n, h, generator=gen) / h**0.5).to(dtype)
    w0 = torch.randn(v, h, generator=gen).to(dtype)
    y = torch.randint(0, v, (n,), generator=gen)
    y[torch.rand(n, generator=gen) < params.get("ignored", 0.0)] = -100

    def make():
        return h0.clone().requires_grad_(), w0.clone().requires_grad_()

    if impl == "torch":
        return make, (lambda x, w: TF.cross_entropy(TF.linear(x, w), y)), True
    if impl == "torch_chunked":
        options = torch.nn.LinearCrossEntropyOptions()
        return make, (lambda x, w: TF.linear_cross_entropy(x, w, y, options=options)), True
    return make, (lambda x, w: LF.linear_cross_entropy(x, w, y)), True


SUITES: dict[str, Callable] = {
    "cross_entropy": setup_cross_entropy,
    "linear_cross_entropy": setup_linear_cross_entropy,
    "elementwise": setup_elementwise,
}


def elementwise_names() -> tuple[str, ...]:
    from losskit._catalog import entries

    return tuple(e.name for e in entries() if e.bench == "elementwise")


def cross_entropy_cases(quick: bool = False) -> list[Case]:
    if quick:
        grid = [(1024, 8192, "float32", "plain"), (2048, 32000, "float32", "plain")]
    else:
        grid = [(n, c, dt, "plain") for dt in DTYPES for n in (1024, 4096) for c in (1024, 8192, 32000, 128000)] + [
            (4096, 32000, "float32", "weight+ignore+smoothing"),
            (4096, 32000, "bfloat16", "weight+ignore+smoothing"),
        ]
    return [
        Case(
            "cross_entropy",
            f"N={n} C={c} {dt} {opt}",
            {"N": n, "C": c, "dtype": dt, "options": opt},
            ("torch", "losskit", "copy"),
            repeat=3 if quick or n * c >= 2**28 else 5,
            warmup=1 if n * c >= 2**28 else 2,
        )
        for n, c, dt, opt in grid
    ]


def elementwise_cases(quick: bool = False) -> list[Case]:
    shape = [1024, 1024] if quick else [4096, 4096]
    names = ("mse_loss", "binary_cross_entropy_with_logits", "kl_div") if quick else elementwise_names()
    return [
        Case(
            "elementwise",
            f"{name} {shape[0]}x{shape[1]}",
            {"loss": name, "shape": shape},
            ("torch", "losskit"),
        )
        for name in names
    ]


def linear_cross_entropy_cases(quick: bool = False) -> list[Case]:
    impls: tuple[str, ...] = ("torch", "torch_chunked", "losskit")
    grid: list[tuple[int, int, int, tuple[str, ...]]]
    if quick:
        grid = [(1024, 512, 32000, impls)]
    else:
        grid = [(4096, 1024, 32000, impls)] + [(2048, 512, v, impls) for v in (32000, 128000, 256000)]
        # logits alone 8 GiB: torch's unfused path does not fit, so only the chunked ones run
        grid.append((16384, 512, 128256, ("torch_chunked", "losskit")))
    return [
        Case(
            "linear_cross_entropy",
            f"N={n} H={h} V={v} float32",
            {"N": n, "H": h, "V": v, "dtype": "float32", "ignored": 0.1},
            impls,
            repeat=1 if n * v >= 2**31 else 2 if quick or n * v >= 2**28 else 3,
            warmup=0 if n * v >= 2**31 else 1 if n * v >= 2**28 else 2,
        )
        for n, h, v, impls in grid
    ]
