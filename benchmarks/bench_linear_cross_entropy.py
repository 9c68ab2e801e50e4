"""Benchmark losskit's linear_cross_entropy against torch 2.13, side by side, fp32 with 10% of targets ignored.

For each case (N rows, H features, V classes):

* **peak extra memory** of one forward+backward, each implementation in its own fresh process: the resident
  high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` after one warm-up step) minus the resident
  memory before the step, with glibc's mmap threshold pinned so that every buffer is mapped and unmapped on its
  own. Compared with torch's chunked path (``options=LinearCrossEntropyOptions()``), the memory-lean baseline;
* **time** of forward+backward, all implementations interleaved in one fresh process, the best (min) of several
  rounds after a warm-up, compared with torch's unfused ``cross_entropy(linear(x, W), y)``;
* **GEMM rate**: the three matmuls (logits, ``∂h``, ``∂W``) of the kept rows, ``3·2·kept·H·V`` FLOPs, over
  losskit's time, against a warm sgemm of the same shape (``(kept, H) @ (H, V)`` into a preallocated output),
  timed in the same process and rounds.

A gradient-accumulation micro-step is measured too (``W.grad`` already exists, so only the step's temporaries
count): torch's chunked path (``torch_chunked_acc``) against ``accumulate_grad=True`` (``losskit_acc``), which
adds ``∂W`` straight into ``W.grad`` in backward instead of making a ``(V, H)`` temporary.

The machine's load average is recorded with each run. Writes ``<out>/bench_linear_cross_entropy.csv`` (long
format, appended; the harness's columns) and ``.png`` (the newest run), and prints a Markdown table.

Usage: python benchmarks/bench_linear_cross_entropy.py [--quick | --full] [--rounds R] [--out docs]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import subprocess
import sys
import time

SUITE = "linear_cross_entropy"
IMPLS = ("torch", "torch_chunked", "losskit")
ACCUMULATING = ("torch_chunked_acc", "losskit_acc")  # W.grad exists: a gradient-accumulation micro-step
IGNORED = 0.1
MAIN = (4096, 1024, 32000)


def cases(quick: bool, full: bool) -> list[tuple[int, int, int]]:
    if quick:
        return [(1024, 512, 32000)]
    grid = [MAIN, (2048, 512, 32000)]
    if full:
        grid += [(2048, 512, 128000), (2048, 512, 256000)]
    return grid


# ----------------------------------------------------------------------------------------- in the child


def _problem(n: int, h: int, v: int):
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, h, generator=gen) / h**0.5
    w = torch.randn(v, h, generator=gen)
    y = torch.randint(0, v, (n,), generator=gen)
    y[torch.rand(n, generator=gen) < IGNORED] = -100
    return x, w, y


def _loss(impl: str, x, w, y):
    import torch
    import torch.nn.functional as F

    import losskit.functional as LF

    if impl == "torch":
        return F.cross_entropy(F.linear(x, w), y)
    if impl.startswith("torch_chunked"):
        return F.linear_cross_entropy(x, w, y, options=torch.nn.LinearCrossEntropyOptions())
    return LF.linear_cross_entropy(x, w, y, accumulate_grad=impl == "losskit_acc")


def _step(impl: str, x0, w0, y) -> float:
    import torch

    x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    if impl in ACCUMULATING:
        w.grad = torch.zeros_like(w)
    t0 = time.perf_counter()
    _loss(impl, x, w, y).backward()
    return time.perf_counter() - t0


def _kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))


def child_memory(impl: str, n: int, h: int, v: int) -> dict:
    x0, w0, y = _problem(n, h, v)
    x, w = x0.requires_grad_(), w0.requires_grad_()
    _loss(impl, x, w, y).backward()  # first-call costs: kernel load, thread pools, allocator
    x.grad = None
    if impl not in ACCUMULATING:  # else W.grad stays: the step adds into it
        w.grad = None
    gc.collect()
    before = _kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    _loss(impl, x, w, y).backward()
    return {"peak_extra_mib": (_kib("VmHWM") - before) / 1024}


def child_time(n: int, h: int, v: int, rounds: int, impls: list[str]) -> dict:
    import torch

    x0, w0, y = _problem(n, h, v)
    kept = int((y != -100).sum())
    a, b = torch.randn(kept, h), torch.randn(h, v)
    c = torch.empty(kept, v)

    def sgemm() -> float:
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        return time.perf_counter() - t0

    best: dict[str, float] = {}
    sgemm()
    for impl in impls:  # warm-up
        _step(impl, x0, w0, y)
    for _ in range(rounds):
        for impl in (*impls, "sgemm"):
            best[impl] = min(best.get(impl, float("inf")), sgemm() if impl == "sgemm" else _step(impl, x0, w0, y))
            gc.collect()
    return {"best_s": best, "kept": kept, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------- in the parent


def _run_child(args: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(n: int, h: int, v: int, rounds: int, impls: tuple[str, ...]) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    load_before = os.getloadavg()[0]
    memory = {impl: _run_child(["memory", impl, n, h, v], env)["peak_extra_mib"] for impl in impls}
    timing = _run_child(["time", n, h, v, rounds, list(impls)])
    kept = timing["kept"]
    flops = 3 * 2 * kept * h * v
    best = timing["best_s"]
    sgemm_rate = 2 * kept * h * v / best["sgemm"] / 1e9
    return {
        "case": f"N={n} H={h} V={v} float32",
        "params": {"N": n, "H": h, "V": v, "dtype": "float32", "ignored": IGNORED, "kept": kept, "rounds": rounds},
        "memory": memory,
        "seconds": {impl: best[impl] for impl in impls},
        "flops": flops,
        "gflops": flops / best["losskit"] / 1e9,
        "sgemm_s": best["sgemm"],
        "sgemm_gflops": sgemm_rate,
        "threads": timing["threads"],
        "load": (load_before, os.getloadavg()[0]),
    }


def _machine() -> str:
    from losskit.cli.harness import machine_name

    return machine_name()


def csv_rows(results: list[dict], stamp: str) -> list[dict]:
    import torch

    import losskit

    rows = []
    for r in results:
        base = {
            "timestamp": stamp,
            "machine": _machine(),
            "torch_version": torch.__version__,
            "losskit_version": losskit.__version__,
            "suite": SUITE,
            "case": r["case"],
            "params": json.dumps({**r["params"], "load": [round(x, 2) for x in r["load"]]}, sort_keys=True),
        }
        for impl, s in r["seconds"].items():
            rows.append(dict(base, impl=impl, metric="forward_backward_ms", value=f"{s * 1e3:.6g}", unit="ms"))
        for impl, mib in r["memory"].items():
            rows.append(dict(base, impl=impl, metric="peak_extra_mib", value=f"{mib:.6g}", unit="MiB"))
        rows.append(dict(base, impl="losskit", metric="gemm_gflops", value=f"{r['gflops']:.6g}", unit="GFLOP/s"))
        rows.append(dict(base, impl="sgemm", metric="gemm_gflops", value=f"{r['sgemm_gflops']:.6g}", unit="GFLOP/s"))
        rows.append(dict(base, impl="sgemm", metric="gemm_ms", value=f"{r['sgemm_s'] * 1e3:.6g}", unit="ms"))
    return rows


def table(results: list[dict]) -> str:
    lines = [
        "| case | torch | torch chunked | losskit | time / torch | peak MiB: torch / chunked / losskit "
        "| memory / chunked | GEMM rate (losskit / warm sgemm) |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        s, m = r["seconds"], r["memory"]
        lines.append(
            f"| {r['case']} | {s['torch']:.2f} s | {s['torch_chunked']:.2f} s | {s['losskit']:.2f} s "
            f"| {s['losskit'] / s['torch']:.2f}× | {m['torch']:.0f} / {m['torch_chunked']:.0f} / {m['losskit']:.0f} "
            f"| **{m['losskit'] / m['torch_chunked']:.2f}×** | {r['flops'] / 1e9:.0f} GFLOP: {r['gflops']:.0f} / "
            f"{r['sgemm_gflops']:.0f} GFLOP/s = **{r['gflops'] / r['sgemm_gflops']:.2f}×** |"
        )
    return "\n".join(lines)


def table_accumulating(results: list[dict]) -> str:
    lines = [
        "| case (W.grad exists) | torch chunked | losskit accumulate_grad | time / torch (unfused) "
        "| peak MiB: chunked / losskit | memory / chunked |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in results:
        s, m = r["seconds"], r["memory"]
        lines.append(
            f"| {r['case']} | {s['torch_chunked_acc']:.2f} s | {s['losskit_acc']:.2f} s "
            f"| {s['losskit_acc'] / s['torch']:.2f}× | {m['torch_chunked_acc']:.0f} / {m['losskit_acc']:.0f} "
            f"| **{m['losskit_acc'] / m['torch_chunked_acc']:.2f}×** |"
        )
    return "\n".join(lines)


def plot(results: list[dict], png: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from losskit.cli.bench_plot import color

    # (title, the 1× implementation, what it measures, [(implementation, its own baseline), ...]): the accumulating
    # micro-step (W.grad exists) is compared with torch's chunked path in the same micro-step
    panels = [
        (
            "forward+backward time / torch (unfused)",
            "torch",
            lambda r, i: r["seconds"][i],
            [(i, "torch") for i in ("torch_chunked", "losskit", "losskit_acc")],
        ),
        (
            "peak extra memory / torch chunked\n(accumulate_grad: / chunked, W.grad existing)",
            "torch_chunked",
            lambda r, i: r["memory"][i],
            [("torch", "torch_chunked"), ("losskit", "torch_chunked"), ("losskit_acc", "torch_chunked_acc")],
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.0 + 1.1 * len(results)))
    labels = [r["case"] for r in results]
    names = {"losskit_acc": "losskit accumulate_grad (W.grad exists)"}
    for ax, (what, base, get, bars) in zip(axes, panels, strict=False):
        bars = [(impl, b) for impl, b in bars if impl in results[0]["seconds"]]
        height = 0.8 / len(bars)
        for ci, r in enumerate(results):
            for k, (impl, own_base) in enumerate(bars):
                ratio = get(r, impl) / get(r, own_base)
                y = ci + (k - (len(bars) - 1) / 2) * height
                label = names.get(impl, impl) if ci == 0 else None
                shade = color("losskit") if impl == "losskit_acc" else color(impl)
                ax.barh(y, ratio, height * 0.92, color=shade, alpha=0.55 if impl == "losskit_acc" else 1.0, label=label)
                ax.text(ratio, y, f" {ratio:.2f}×", va="center", fontsize=8)
        ax.axvline(1.0, color=color(base), linestyle="--", linewidth=1.2, label=f"{base} (= 1×)")
        ax.set_title(what, fontsize=10)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, frameon=False)
    ax = axes[2]
    for ci, r in enumerate(results):
        ratio = r["gflops"] / r["sgemm_gflops"]
        ax.barh(ci, ratio, 0.5, color=color("losskit"))
        ax.text(
            ratio, ci, f" {ratio:.2f}× ({r['gflops']:.0f} / {r['sgemm_gflops']:.0f} GFLOP/s)", va="center", fontsize=8
        )
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1.2)
    ax.set_title("losskit GEMM rate / warm sgemm of the same shape", fontsize=10)
    ax.set_xlim(0, 1.7)
    for ax in axes:
        ax.set_yticks(range(len(results)))
        ax.set_yticklabels(labels if ax is axes[0] else [], fontsize=8)
        ax.set_ylim(len(results) - 0.5, -0.5)
        if ax is not axes[2]:
            ax.set_xlim(0, max(ax.get_xlim()[1], 1.0) * 1.25)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small case")
    parser.add_argument("--full", action="store_true", help="also V=128000 and V=256000 (H=512, N=2048)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (the best is kept)")
    parser.add_argument("--out", default="docs", help="folder for bench_linear_cross_entropy.csv and .png")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        out = child_memory(*spec[1:]) if spec[0] == "memory" else child_time(*spec[1:])
        print(json.dumps(out))
        return 0
    from losskit.cli.harness import append_csv

    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results = []
    for n, h, v in cases(args.quick, args.full):
        r = measure(n, h, v, args.rounds, (*IMPLS, *ACCUMULATING))
        print(f"{r['case']}: {json.dumps({k: r[k] for k in ('seconds', 'memory', 'gflops', 'sgemm_gflops', 'load')})}")
        results.append(r)
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, f"bench_{SUITE}.csv")
    png = os.path.join(args.out, f"bench_{SUITE}.png")
    append_csv(csv_rows(results, stamp), csv_path)
    loads = [x for r in results for x in r["load"]]
    import torch

    title = (
        f"linear_cross_entropy, fp32, {IGNORED:.0%} of targets ignored: {_machine()}, torch {torch.__version__}, "
        f"{results[0]['threads']} threads, {stamp}, load {min(loads):.1f}-{max(loads):.1f}"
    )
    plot(results, png, title)
    print(table(results))
    print()
    print(table_accumulating(results))
    print(f"load average (1 min) {min(loads):.2f}-{max(loads):.2f}; wrote {csv_path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
