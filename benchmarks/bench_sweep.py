"""Never slower than torch: forward+backward per call from classifier batches (N=32, C=10) up, in one process.

torch and losskit are interleaved round by round on the same inputs and the best round of each counts (the
fixed cost of a call is what small sizes measure, and interleaving keeps a busy machine fair to both). At
these sizes a call allocates a few KiB to a few MiB; peak memory is measured where it matters, by the
``cross_entropy`` and ``elementwise`` suites of the harness (each variant in a fresh process).
A second section runs every other loss of the catalog that torch has on the catalog's own sample problem at
32×10 and 1024×10; a third compares ``torch.compile`` (inductor) of both at N=4096, C=32000.

    python benchmarks/bench_sweep.py [--quick] [--no-compile] [--only mse_loss,ctc_loss] [--out docs]

writes ``bench_sweep.csv`` and prints a Markdown table (the README's "Small batches" table).
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as TF

import losskit
import losskit.functional as LF
from losskit.engine import entry as entry_points

CE_SIZES = [(32, 10), (128, 10), (256, 100), (1024, 1000), (4096, 1000), (512, 32000), (4096, 32000)]
ELEMENTWISE_SIZES = [(32, 10), (1024, 10), (256, 1000)]
ELEMENTWISE = [
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "soft_margin_loss",
    "kl_div",
]


def _problem(name: str, n: int, c: int, smoothing: float = 0.0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, generator=g)
    kwargs: dict = {}
    if name == "cross_entropy":
        other = torch.randint(0, c, (n,), generator=g)
        kwargs = {"label_smoothing": smoothing} if smoothing else {}
    elif name == "nll_loss":
        x, other = x.log_softmax(1), torch.randint(0, c, (n,), generator=g)
    elif name == "binary_cross_entropy":
        x, other = x.sigmoid(), torch.rand(n, c, generator=g)
    elif name == "binary_cross_entropy_with_logits":
        other = torch.rand(n, c, generator=g)
    elif name == "soft_margin_loss":
        other = torch.randn(n, c, generator=g).sign()
    elif name == "kl_div":
        x, other = x.log_softmax(1), torch.randn(n, c, generator=g).softmax(1)
        kwargs = {"reduction": "batchmean"}
    else:
        other = torch.randn(n, c, generator=g)
    return x, other, kwargs


def _step(fn, x, other, kwargs):
    leaf = x.detach().requires_grad_()
    fn(leaf, other, **kwargs).backward()


def _interleaved(fns, x, other, kwargs, budget_s: float, rounds: int = 7) -> list[float]:
    """Best seconds per call of each function, rounds interleaved; calls per round sized to the budget."""
    for fn in fns:  # warm up (the kernel is built and loaded on first use)
        for _ in range(3):
            _step(fn, x, other, kwargs)
    entry_points.wait()  # the steady state: the C++ entry points (built in the background on first use) in place
    start = time.perf_counter()
    _step(fns[0], x, other, kwargs)
    once = max(time.perf_counter() - start, 1e-6)
    calls = max(1, min(2000, int(budget_s / rounds / len(fns) / once)))
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(calls):
                _step(fn, x, other, kwargs)
            best[i] = min(best[i], (time.perf_counter() - start) / calls)
    return best


def sweep(quick: bool, only: set[str] | None = None) -> list[dict]:
    rows = []
    budget = 0.5 if quick else 2.0
    cases = [("cross_entropy", n, c, s) for n, c in CE_SIZES for s in (0.0, 0.1)]
    cases += [("nll_loss", n, c, 0.0) for n, c in CE_SIZES[:4]]
    cases += [(name, n, c, 0.0) for name in ELEMENTWISE for n, c in ELEMENTWISE_SIZES]
    if quick:
        cases = [case for case in cases if case[1] * case[2] <= 256 * 1000]
    if only:
        cases = [case for case in cases if case[0] in only]
    for name, n, c, smoothing in cases:
        x, other, kwargs = _problem(name, n, c, smoothing)
        t_torch, t_ours = _interleaved([getattr(TF, name), getattr(LF, name)], x, other, kwargs, budget)
        label = f"{name}{' smoothing' if smoothing else ''}"
        rows.append({"loss": label, "N": n, "C": c, "torch_us": t_torch * 1e6, "losskit_us": t_ours * 1e6})
        print(
            f"{label:36s} N={n:<5d} C={c:<6d} torch {t_torch * 1e6:9.1f} µs  losskit {t_ours * 1e6:9.1f} µs  "
            f"{t_ours / t_torch:5.2f}×",
            flush=True,
        )
    return rows


def catalog(quick: bool, only: set[str] | None = None) -> list[dict]:
    """Every loss of losskit's catalog that torch has, with the catalog's own sample problem and typical
    keywords, at a classifier's batch: torch and losskit interleaved as in :func:`sweep`."""
    import torch.nn.functional as torch_functional

    from losskit import _catalog

    rows = []
    for entry in _catalog.entries():
        reference = getattr(torch_functional, entry.name, None)
        if reference is None or entry.name == "cross_entropy":  # cross entropy: the sweep above
            continue
        if only and entry.name not in only:
            continue
        for n, c in ((32, 10),) if quick else ((32, 10), (1024, 10)):
            problem = entry.sample((n, c), torch.float32, torch.Generator().manual_seed(0))
            k = problem.differentiable
            kwargs = dict(entry.typical)

            def call(fn, _args=problem.args, _k=k, _kwargs=kwargs):
                leaves = [a.detach().requires_grad_() if i < _k else a for i, a in enumerate(_args)]
                fn(*leaves, **_kwargs).backward()

            best = _best_of([lambda f=reference: call(f), lambda f=entry.function: call(f)], 0.5 if quick else 1.5)
            label = f"{entry.name} (catalog problem)"
            rows.append({"loss": label, "N": n, "C": c, "torch_us": best[0] * 1e6, "losskit_us": best[1] * 1e6})
            print(
                f"{label:36s} N={n:<5d} C={c:<6d} torch {best[0] * 1e6:9.1f} µs  losskit {best[1] * 1e6:9.1f} µs  "
                f"{best[1] / best[0]:5.2f}×",
                flush=True,
            )
    return rows


def _best_of(steps, budget_s: float, rounds: int = 7) -> list[float]:
    """Best seconds per call of each step (a no-argument callable), rounds interleaved."""
    for step in steps:
        for _ in range(3):
            step()
    start = time.perf_counter()
    steps[0]()
    calls = max(1, min(2000, int(budget_s / rounds / len(steps) / max(time.perf_counter() - start, 1e-6))))
    best = [float("inf")] * len(steps)
    for _ in range(rounds):
        for i, step in enumerate(steps):
            start = time.perf_counter()
            for _ in range(calls):
                step()
            best[i] = min(best[i], (time.perf_counter() - start) / calls)
    return best


def compiled(quick: bool) -> list[dict]:
    n, c = (1024, 32000) if quick else (4096, 32000)
    x, y, _ = _problem("cross_entropy", n, c)
    fns = [torch.compile(TF.cross_entropy), torch.compile(LF.cross_entropy)]
    t_torch, t_ours = _interleaved(fns, x, y, {}, 3.0 if quick else 10.0, rounds=3)
    print(
        f"compiled cross_entropy N={n} C={c}: torch {t_torch * 1e3:.1f} ms  losskit {t_ours * 1e3:.1f} ms  "
        f"{t_ours / t_torch:.2f}×"
    )
    return [
        {"loss": "cross_entropy (torch.compile)", "N": n, "C": c, "torch_us": t_torch * 1e6, "losskit_us": t_ours * 1e6}
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparison")
    parser.add_argument("--only", help="comma-separated loss names (e.g. mse_loss,ctc_loss): time just those")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    rows = sweep(args.quick, only)
    rows += catalog(args.quick, only)
    if not args.no_compile and not only:
        rows += compiled(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, losskit {losskit.__version__}"
    with open(args.out / "bench_sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [*rows[0], "ratio", "machine"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "ratio": row["losskit_us"] / row["torch_us"], "machine": machine})
    print("\n| loss | N | C | torch µs | losskit µs | losskit / torch |\n|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['loss']} | {row['N']} | {row['C']} | {row['torch_us']:.1f} | {row['losskit_us']:.1f} | "
            f"{row['losskit_us'] / row['torch_us']:.2f}× |"
        )


if __name__ == "__main__":
    main()
