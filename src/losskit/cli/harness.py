"""The one benchmark harness: times forward, backward and both, measures peak memory, writes long CSV.

Every measurement runs in a fresh Python process (one per case and implementation), so the peak
resident memory it reports (``VmHWM`` from ``/proc/self/status``, reset before the measured step)
catches every CPU allocation, torch's or not. Timings run in a second fresh process and are the median
of several runs after warm-up. Suites are defined in :mod:`losskit.cli.bench_cases`;
``benchmarks/*.py`` and ``losskit bench`` both drive them through :func:`run_suite`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

FIELDS = [
    "timestamp",
    "machine",
    "torch_version",
    "losskit_version",
    "suite",
    "case",
    "impl",
    "params",
    "metric",
    "value",
    "unit",
]


@dataclass(frozen=True)
class Case:
    """One configuration of a suite, run by each implementation in ``impls``."""

    suite: str
    name: str
    params: dict
    impls: tuple[str, ...]
    repeat: int = 5
    warmup: int = 2


# ------------------------------------------------------------------------------ inside the child


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _zero_grads(inputs) -> None:
    for t in inputs:
        if getattr(t, "grad", None) is not None:
            t.grad = None


def measure(
    make: Callable[[], tuple], fn: Callable, repeat: int, backward: bool = True, mode: str = "both", warmup: int = 2
) -> dict:
    """Median forward / backward / forward+backward milliseconds and/or peak extra memory (MiB) of ``fn``.

    ``make()`` builds fresh inputs (leaves that require grad where the case differentiates);
    ``fn(*inputs)`` returns the loss. Peak extra memory is the peak resident memory during one
    forward+backward minus the resident memory just before it (inputs already allocated).
    ``mode`` is ``'time'``, ``'memory'`` or ``'both'``.
    """
    import torch

    def step():
        loss = fn(*inputs)
        if backward:
            loss.sum().backward() if loss.dim() else loss.backward()
        return loss

    inputs = make()
    for _ in range(warmup if mode != "memory" else min(warmup, 1)):  # first-call costs, thread pools
        del_loss = step()
        _zero_grads(inputs)
        del del_loss
    from ..engine import entry

    entry.wait()  # the steady state: the C++ entry points (built in the background on first use) in place
    gc.collect()
    result = {}
    if mode in ("memory", "both") and _reset_peak():
        before = _status_kib("VmRSS")
        _reset_peak()
        loss = step()
        peak = _status_kib("VmHWM")
        result["peak_extra_mib"] = max(0, peak - before) / 1024
        _zero_grads(inputs)
        del loss
        gc.collect()
    if mode in ("time", "both"):
        fwd, bwd, both = [], [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            loss = fn(*inputs)
            t1 = time.perf_counter()
            if backward:
                loss.sum().backward() if loss.dim() else loss.backward()
            t2 = time.perf_counter()
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t2 - t1) * 1e3)
            both.append((t2 - t0) * 1e3)
            _zero_grads(inputs)
            del loss
        result["forward_ms"] = statistics.median(fwd)
        if backward:
            result["backward_ms"] = statistics.median(bwd)
            result["forward_backward_ms"] = statistics.median(both)
        result["threads"] = torch.get_num_threads()
    return result


def _child(spec: dict) -> dict:
    from . import bench_cases

    setup = bench_cases.SUITES[spec["suite"]]
    make, fn, backward = setup(spec["params"], spec["impl"])
    return measure(make, fn, spec["repeat"], backward, spec.get("mode", "both"), spec.get("warmup", 2))


# ------------------------------------------------------------------------------ the parent


def _run_child(spec: dict, timeout: float, env: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "losskit.cli.harness", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_case(case: Case, impl: str, timeout: float = 900) -> dict:
    """Run one case with one implementation: memory in one fresh process, timings in another.

    For the memory run glibc's mmap threshold is pinned, so that every buffer over 64 KiB is mapped afresh
    and unmapped on free and the resident peak sees each allocation (the adaptive threshold would recycle
    freed heap silently). Timings run with the allocator as users have it.
    """
    spec = {"suite": case.suite, "params": case.params, "impl": impl, "repeat": case.repeat, "warmup": case.warmup}
    memory = _run_child(dict(spec, mode="memory"), timeout, dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))
    if "error" in memory:
        return memory
    timing = _run_child(dict(spec, mode="time"), timeout)
    return timing if "error" in timing else {**timing, **memory}


def machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu} x{os.cpu_count()}"


def rows_for(case: Case, impl: str, metrics: dict, stamp: str) -> list[dict]:
    import torch

    import losskit

    units = {"forward_ms": "ms", "backward_ms": "ms", "forward_backward_ms": "ms", "peak_extra_mib": "MiB"}
    base = {
        "timestamp": stamp,
        "machine": machine_name(),
        "torch_version": torch.__version__,
        "losskit_version": losskit.__version__,
        "suite": case.suite,
        "case": case.name,
        "impl": impl,
        "params": json.dumps(case.params, sort_keys=True),
    }
    if "error" in metrics:
        return [dict(base, metric="error", value=metrics["error"], unit="")]
    return [dict(base, metric=k, value=f"{v:.6g}", unit=units[k]) for k, v in metrics.items() if k in units]


def run_suite(
    cases: Iterable[Case],
    csv_path: str | None,
    progress: Callable[[Case, str, dict], None] | None = None,
) -> list[dict]:
    """Run every case × implementation; append long-format rows to ``csv_path``; return the rows."""
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rows: list[dict] = []
    for case in cases:
        for impl in case.impls:
            metrics = run_case(case, impl)
            rows += rows_for(case, impl, metrics, stamp)
            if progress:
                progress(case, impl, metrics)
    if csv_path:
        append_csv(rows, csv_path)
    return rows


def append_csv(rows: list[dict], csv_path: str) -> None:
    """Append long-format rows to ``csv_path`` (with a header when the file is new)."""
    os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
    new = not os.path.exists(csv_path) or os.path.getsize(csv_path) == 0
    with open(csv_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def ratio_table(rows: list[dict], baseline: str = "torch") -> list[dict]:
    """Per case and implementation: time and peak-memory ratios against ``baseline`` from the same run."""
    by: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for r in rows:
        if r["metric"] in ("forward_backward_ms", "forward_ms", "peak_extra_mib"):
            by.setdefault((r["suite"], r["case"]), {}).setdefault(r["impl"], {})[r["metric"]] = float(r["value"])
    table = []
    for (suite, case), impls in by.items():
        ref = impls.get(baseline)
        for impl, m in impls.items():
            t_key = "forward_backward_ms" if "forward_backward_ms" in m else "forward_ms"
            row = {
                "suite": suite,
                "case": case,
                "impl": impl,
                "ms": m.get(t_key),
                "peak_mib": m.get("peak_extra_mib"),
            }
            if ref and impl != baseline:
                # a copy (forward only) is timed against torch's forward+backward
                ref_ms = ref.get("forward_backward_ms", ref.get("forward_ms"))
                if ref_ms and m.get(t_key) is not None:
                    row["time_ratio"] = m[t_key] / ref_ms
                if ref.get("peak_extra_mib") and m.get("peak_extra_mib") is not None:
                    row["mem_ratio"] = m["peak_extra_mib"] / ref["peak_extra_mib"]
            table.append(row)
    return table


_SHORT = (
    ("binary_cross_entropy_with_logits", "bce_with_logits"),
    ("binary_cross_entropy", "bce"),
    ("weight+ignore+smoothing", "w+ign+ls"),
    ("bfloat16", "bf16"),
    ("float16", "f16"),
    ("float32", "f32"),
    ("float64", "f64"),
    (" plain", ""),
)


def short_case(name: str) -> str:
    """A case name short enough for an 80-column table (``float32`` -> ``f32``, ``plain`` dropped, ...)."""
    for long, short in _SHORT:
        name = name.replace(long, short)
    return name


def format_table(table: list[dict]) -> str:
    """A plain-text (Markdown) table of :func:`ratio_table` rows, under 80 columns for the usual cases."""
    baseline = next((r["impl"] for r in table if "time_ratio" not in r and "mem_ratio" not in r), "baseline")
    lines = [
        f"| case | impl | ms | MiB | time / {baseline} | memory / {baseline} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in table:
        ms = "—" if r["ms"] is None else f"{r['ms']:.1f}"
        mib = "—" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        tr = f"{r['time_ratio']:.2f}×" if "time_ratio" in r else ""
        mr = f"{r['mem_ratio']:.2f}×" if "mem_ratio" in r else ""
        lines.append(f"| {short_case(r['case'])} | {r['impl']} | {ms} | {mib} | {tr} | {mr} |")
    return "\n".join(lines)


def script_main(suite: str, argv: list[str] | None = None) -> int:
    """Entry point of ``benchmarks/bench_<suite>.py``: run the suite, append CSV, draw PNG, print ratios."""
    import argparse

    from . import bench_cases, bench_plot

    parser = argparse.ArgumentParser(description=f"benchmark the {suite} suite against torch")
    parser.add_argument("--quick", action="store_true", help="a small grid (about a minute)")
    parser.add_argument("--out", default="docs", help="folder for bench_<suite>.csv and .png")
    args = parser.parse_args(argv)
    cases = getattr(bench_cases, f"{suite}_cases")(quick=args.quick)
    csv_path = os.path.join(args.out, f"bench_{suite}.csv")

    def progress(case, impl, metrics):
        shown = {k: round(v, 1) for k, v in metrics.items() if isinstance(v, float)}
        print(f"{case.name:40s} {impl:14s} {shown or metrics}", flush=True)

    rows = run_suite(cases, csv_path, progress)
    baselines = ("torch", "torch_chunked") if suite == "linear_cross_entropy" else ("torch",)
    for baseline in baselines:
        print(f"ratios against {baseline}:")
        print(format_table(ratio_table(rows, baseline)))
    png = bench_plot.plot(bench_plot.load(csv_path), os.path.join(args.out, f"bench_{suite}.png"))
    print(f"wrote {csv_path} and {png}")
    return 0


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
