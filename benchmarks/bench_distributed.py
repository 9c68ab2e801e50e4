"""Vocab-parallel cross entropy against gathering the logits, on W gloo ranks of this machine.

Each rank holds ``(N, C/W)`` logits. ``losskit`` runs ``vocab_parallel_cross_entropy`` (O(N) numbers
communicated); ``allgather`` is the baseline that gathers the full ``(N, C)`` logits on every rank and
runs ``torch.nn.functional.cross_entropy`` there, keeping its slice of the gradient. Rank 0 reports the
median forward+backward time (after warm-up, a barrier before each step), its peak extra memory, and the
bytes all-reduced / all-gathered per call (counted by wrapping the collectives), as rows of the same
long-format CSV the other suites write (through :mod:`losskit.cli.harness`).

Usage: python benchmarks/bench_distributed.py [--quick] [--out docs] [--world 2]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as TF


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count_bytes(counter: dict):
    """Wrap the collectives this benchmark uses so that every call adds its payload to ``counter``."""
    real_all_reduce, real_all_gather = dist.all_reduce, dist.all_gather_into_tensor

    def all_reduce(t, *a, **k):
        counter["bytes"] += t.numel() * t.element_size()
        return real_all_reduce(t, *a, **k)

    def all_gather_into_tensor(out, t, *a, **k):
        counter["bytes"] += t.numel() * t.element_size()
        return real_all_gather(out, t, *a, **k)

    dist.all_reduce, dist.all_gather_into_tensor = all_reduce, all_gather_into_tensor


def _losskit_step(x, y):
    from losskit.distributed import vocab_parallel_cross_entropy

    vocab_parallel_cross_entropy(x, y).backward()


def _allgather_step(x, y, rank, world):
    """The baseline: gather every rank's slice, the full cross entropy on each rank, keep this rank's slice."""
    n, cl = x.shape
    gathered = torch.empty(world * n, cl)
    dist.all_gather_into_tensor(gathered, x.detach())
    logits = gathered.view(world, n, cl).permute(1, 0, 2).reshape(n, world * cl).requires_grad_()
    TF.cross_entropy(logits, y).backward()
    x.grad = logits.grad[:, rank * cl : (rank + 1) * cl].contiguous()


def _worker(rank: int, world: int, port: int, cases: list, repeat: int, queue) -> None:
    from losskit.cli.harness import _reset_peak, _status_kib

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=datetime.timedelta(60)
    )
    counter = {"bytes": 0}
    _count_bytes(counter)
    for n, c in cases:
        cl = c // world
        gen = torch.Generator().manual_seed(0)
        full = torch.randn(n, c, generator=gen) * 2
        y = torch.randint(0, c, (n,), generator=gen)
        local = full[:, rank * cl : (rank + 1) * cl].contiguous()
        del full

        steps = {
            "losskit": functools.partial(_losskit_step, y=y),
            "allgather": functools.partial(_allgather_step, y=y, rank=rank, world=world),
        }
        for impl, step in steps.items():
            x = local.clone().requires_grad_()
            step(x)  # warm-up
            x.grad = None
            dist.barrier()
            counter["bytes"] = 0
            _reset_peak()
            before = _status_kib("VmRSS")
            _reset_peak()
            step(x)
            peak = (_status_kib("VmHWM") - before) / 1024
            sent = counter["bytes"]
            x.grad = None
            times = []
            for _ in range(repeat):
                dist.barrier()
                t0 = time.perf_counter()
                step(x)
                times.append((time.perf_counter() - t0) * 1e3)
                x.grad = None
            if rank == 0:
                queue.put((n, c, impl, statistics.median(times), peak, sent))
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    from losskit.cli import bench_plot, harness
    from losskit.distributed import communication_bytes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--world", type=int, default=2)
    args = parser.parse_args(argv)
    cases = [(1024, 8192)] if args.quick else [(1024, 32000), (4096, 32000)]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, args.world, port, cases, 3, queue)) for r in range(args.world)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=1800) for _ in range(2 * len(cases))]
    for p in procs:
        p.join(timeout=120)
        if p.is_alive():
            p.kill()
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rows = []
    for n, c, impl, ms, peak, sent in results:
        case = harness.Case("distributed", f"N={n} C={c} world={args.world}", {"N": n, "C": c, "world": args.world}, ())
        metrics = {"forward_backward_ms": ms, "peak_extra_mib": peak}
        rows += harness.rows_for(case, impl, metrics, stamp)
        rows.append(dict(rows[-1], metric="bytes_communicated", value=str(sent), unit="B"))
        if impl == "losskit":
            print(f"N={n} C={c}: analytic bytes per call {communication_bytes(n, c, args.world)}, counted {sent}")
    csv_path = os.path.join(args.out, "bench_distributed.csv")
    harness.append_csv(rows, csv_path)
    print(harness.format_table(harness.ratio_table(rows, "allgather")))
    for r in rows:
        if r["metric"] == "bytes_communicated":
            print(f"{r['case']:28s} {r['impl']:10s} {int(r['value']):>14,d} bytes per call")
    png = bench_plot.plot(bench_plot.load(csv_path), os.path.join(args.out, "bench_distributed.png"))
    print(f"wrote {csv_path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
