"""CTC loss and adaptive log-softmax: losskit against torch, time and peak memory, side by side.

Timings: one process, both implementations interleaved round by round on the same inputs, best of ``--rounds``
(forward, and forward+backward). Peak extra memory: each implementation in a fresh process (the harness's
``VmHWM`` measurement, glibc's mmap threshold pinned so every large buffer is seen), forward+backward.
Writes a Markdown table to ``docs/bench_ctc.md``.

Usage: python benchmarks/bench_ctc.py [--rounds 15] [--out docs/bench_ctc.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

CASES = {
    "ctc T=200 N=32 C=40 S=50 fp32": {"kind": "ctc", "T": 200, "N": 32, "C": 40, "S": 50, "dtype": "float32"},
    "ctc T=200 N=32 C=40 S=50 fp64": {"kind": "ctc", "T": 200, "N": 32, "C": 40, "S": 50, "dtype": "float64"},
    "adaptive N=2048 D=512 V=32000 cutoffs=[2000,10000]": {
        "kind": "adaptive",
        "N": 2048,
        "D": 512,
        "V": 32000,
        "cutoffs": [2000, 10000],
    },
}


def setup(params: dict, impl: str):
    """``(make, fn)``: ``make()`` builds fresh inputs, ``fn(*inputs)`` returns the loss."""
    ours = impl == "losskit"
    g = torch.Generator().manual_seed(0)
    if params["kind"] == "ctc":
        import torch.nn.functional as TF

        import losskit.functional as LF

        t, n, c, s = params["T"], params["N"], params["C"], params["S"]
        dtype = getattr(torch, params["dtype"])
        lp = torch.randn(t, n, c, generator=g, dtype=dtype).log_softmax(2)
        targets = torch.randint(1, c, (n, s), generator=g)
        il = torch.full((n,), t)
        tl = torch.randint(s // 2, s + 1, (n,), generator=g)
        loss = LF.ctc_loss if ours else TF.ctc_loss

        def make():
            return (lp.detach().clone().requires_grad_(),)

        return make, lambda x: loss(x, targets, il, tl)
    import losskit.nn as LNN

    d, v, n = params["D"], params["V"], params["N"]
    torch.manual_seed(0)
    module = (LNN if ours else torch.nn).AdaptiveLogSoftmaxWithLoss(d, v, params["cutoffs"])
    ranks = torch.arange(1, v + 1, dtype=torch.float64)
    target = torch.multinomial(1.0 / ranks, n, replacement=True, generator=g)  # Zipf-like word frequencies
    x = torch.randn(n, d, generator=g)

    def make():
        module.zero_grad(set_to_none=True)
        return (x.clone().requires_grad_(),)

    return make, lambda h: module(h, target).loss


def _child(params: dict, impl: str) -> dict:
    from losskit.cli.harness import measure

    make, fn = setup(params, impl)
    return measure(make, fn, repeat=1, backward=True, mode="memory", warmup=1)


def peak_memory(params: dict, impl: str) -> float | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps({"params": params, "impl": impl})],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1]).get("peak_extra_mib")


def timings(params: dict, rounds: int) -> dict:
    """Best-of-rounds forward and forward+backward wall milliseconds (all threads), then forward+backward CPU
    milliseconds of the calling thread with one thread (steadier on a shared machine), implementations
    interleaved in one process."""
    setups = {impl: setup(params, impl) for impl in ("losskit", "torch")}
    best = {impl: [float("inf")] * 3 for impl in setups}
    threads = torch.get_num_threads()
    for column, clock, n_threads in ((0, time.perf_counter, threads), (2, time.thread_time, 1)):
        torch.set_num_threads(n_threads)
        for r in range(rounds + 2):  # two warm-up rounds
            for impl, (make, fn) in setups.items():
                inputs = make()
                t0 = clock()
                loss = fn(*inputs)
                t1 = clock()
                loss.backward()
                t2 = clock()
                if r >= 2:
                    if column == 0:
                        best[impl][0] = min(best[impl][0], (t1 - t0) * 1e3)
                        best[impl][1] = min(best[impl][1], (t2 - t0) * 1e3)
                    else:
                        best[impl][2] = min(best[impl][2], (t2 - t0) * 1e3)
                del loss, inputs
    torch.set_num_threads(threads)
    return best


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, torch.get_num_threads() = {torch.get_num_threads()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "bench_ctc.md"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(_child(spec["params"], spec["impl"])))
        return 0
    from losskit.engine import native_ctc

    lines = [
        "# CTC loss and adaptive log-softmax: losskit vs torch",
        "",
        f"Machine: {machine()}; torch {torch.__version__}; CTC kernel: {native_ctc.status()}.",
        f"Time: best of {args.rounds} interleaved rounds in one process (wall with torch's threads; CPU time of "
        "the calling thread with one thread). Peak: extra resident memory of one forward+backward in a fresh "
        "process (VmHWM, mmap threshold 64 KiB).",
        "",
        "| case | impl | forward ms | fwd+bwd ms | fwd+bwd CPU ms, 1 thread | peak MiB | time / torch | "
        "CPU time / torch | memory / torch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, params in CASES.items():
        times = timings(params, args.rounds)
        peaks = {impl: peak_memory(params, impl) for impl in ("losskit", "torch")}
        for impl in ("losskit", "torch"):
            fwd, both, cpu = times[impl]
            peak = peaks[impl]
            t_ratio, c_ratio = both / times["torch"][1], cpu / times["torch"][2]
            m_ratio = "—" if peak is None or not peaks["torch"] else f"{peak / peaks['torch']:.2f}"
            peak_s = "—" if peak is None else f"{peak:.1f}"
            lines.append(
                f"| {name} | {impl} | {fwd:.2f} | {both:.2f} | {cpu:.2f} | {peak_s} | {t_ratio:.2f} | {c_ratio:.2f} "
                f"| {m_ratio} |"
            )
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
