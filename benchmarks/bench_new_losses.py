"""The issue-13 losses against torch, side by side in one process: forward+backward time and peak extra memory.

Each case alternates torch and losskit for ``--rounds`` rounds and keeps each one's best time; peak extra
memory is the rise of the resident peak (``VmHWM``, reset through ``/proc/self/clear_refs``) over one
forward+backward, the best of two. The script re-executes itself with glibc's mmap threshold pinned at
64 KiB, so that every large buffer is mapped afresh and unmapped on free and the peak sees each one.

Usage: python benchmarks/bench_new_losses.py [--rounds 7] [--threads 1] [--only NAME ...]
                                             [--out docs/bench_new_losses.md]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

ENV = "MALLOC_MMAP_THRESHOLD_"


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def cases():
    import torch

    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    n, d = 4096, 4096
    x, t = randn(n, d), torch.poisson(torch.rand(n, d, generator=g) * 4, generator=g)
    yield "poisson_nll_loss", "4096x4096", (x, t), (0,), {}
    var = torch.rand(n, d, generator=g) + 0.1
    yield "gaussian_nll_loss", "4096x4096 var (N, D)", (x, randn(n, d), var), (0, 2), {}
    yield "gaussian_nll_loss", "4096x4096 var (N, 1)", (x, randn(n, d), var[:, :1].clone()), (0, 2), {}
    yield "hinge_embedding_loss", "4096x4096", (x.abs(), randn(n, d).sign()), (0,), {}
    n, c = 4096, 1000
    logits, labels = randn(n, c), (torch.rand(n, c, generator=g) < 0.1).float()
    yield "multilabel_soft_margin_loss", "N=4096 C=1000", (logits, labels), (0,), {}
    yield "multilabel_soft_margin_loss", "N=4096 C=1000 weight", (logits, labels), (0,), {"weight": torch.rand(c)}
    y = torch.randint(0, c, (n,), generator=g)
    yield "multi_margin_loss", "N=4096 C=1000 p=1", (logits, y), (0,), {}
    yield "multi_margin_loss", "N=4096 C=1000 p=2 weight", (logits, y), (0,), {"p": 2, "weight": torch.rand(c)}
    n, d = 4096, 512
    a, p, q = randn(n, d), randn(n, d), randn(n, d)
    yield "cosine_embedding_loss", "N=4096 D=512", (a, p, randn(n).sign()), (0, 1), {}
    yield "triplet_margin_loss", "N=4096 D=512", (a, p, q), (0, 1, 2), {}
    yield "triplet_margin_loss", "N=4096 D=512 p=1 swap", (a, p, q), (0, 1, 2), {"p": 1, "swap": True}
    yield "triplet_margin_with_distance_loss", "N=4096 D=512", (a, p, q), (0, 1, 2), {}


def run(args) -> list[dict]:
    import torch
    import torch.nn.functional as TF

    import losskit.functional as LF

    torch.set_num_threads(args.threads)
    rows = []
    for name, label, tensors, grad_idx, kwargs in cases():
        if args.only and not any(o in name for o in args.only):
            continue
        impls = {"torch": getattr(TF, name), "losskit": getattr(LF, name)}
        leaves = {k: [t.clone().requires_grad_(i in grad_idx) for i, t in enumerate(tensors)] for k in impls}

        def step(impl, impls=impls, leaves=leaves, kwargs=kwargs):
            ins = leaves[impl]
            loss = impls[impl](*ins, **kwargs)
            loss.backward()
            for t in ins:
                t.grad = None

        for impl in impls:  # warm-up
            step(impl)
            step(impl)
        best = {k: float("inf") for k in impls}
        for _ in range(args.rounds):
            for impl in impls:
                t0 = time.perf_counter()
                step(impl)
                best[impl] = min(best[impl], (time.perf_counter() - t0) * 1e3)
        peak = {k: float("inf") for k in impls}
        for _ in range(2):
            for impl in impls:
                gc.collect()
                before = _status_kib("VmRSS")
                _reset_peak()
                step(impl)
                peak[impl] = min(peak[impl], max(0, _status_kib("VmHWM") - before) / 1024)
        rows.append({"loss": name, "case": label, "ms": best, "mib": peak})
        print(
            f"{name:34} {label:24} torch {best['torch']:8.2f} ms {peak['torch']:7.1f} MiB | losskit "
            f"{best['losskit']:8.2f} ms {peak['losskit']:7.1f} MiB | x{best['losskit'] / best['torch']:.2f} time "
            f"x{(peak['losskit'] / peak['torch']) if peak['torch'] else float('nan'):.2f} memory",
            flush=True,
        )
    return rows


def table(rows, args) -> str:
    import platform

    import torch

    lines = [
        "# The issue-13 losses against torch: forward + backward",
        "",
        f"`python benchmarks/bench_new_losses.py --rounds {args.rounds} --threads {args.threads}`: torch "
        f"{torch.__version__}, {platform.machine()} CPU, {args.threads} intra-op thread(s), float32, one process, "
        "torch and losskit alternating, best of the rounds; peak extra memory = rise of the resident peak over one "
        "forward+backward (gradients of the inputs included), best of two.",
        "",
        "| loss | case | torch ms | losskit ms | time / torch | torch MiB | losskit MiB | memory / torch |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms, mib = r["ms"], r["mib"]
        mem = f"{mib['losskit'] / mib['torch']:.2f}" if mib["torch"] else "—"
        lines.append(
            f"| {r['loss']} | {r['case']} | {ms['torch']:.2f} | {ms['losskit']:.2f} | "
            f"{ms['losskit'] / ms['torch']:.2f} | {mib['torch']:.1f} | {mib['losskit']:.1f} | {mem} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="run only the losses whose name contains one of these")
    parser.add_argument("--out", default=None, help="write the markdown table here (e.g. docs/bench_new_losses.md)")
    args = parser.parse_args(argv)
    if os.environ.get(ENV) != "65536":  # re-execute with the mmap threshold pinned (see the module docstring)
        os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ, **{ENV: "65536"}))
    rows = run(args)
    text = table(rows, args)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
