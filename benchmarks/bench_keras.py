"""losskit.keras against Keras 3's own losses (KERAS_BACKEND=torch), forward + backward, side by side.

One process; for each loss class both implementations run on the same inputs (4096 x 1000 float32, the
class's kind of targets; CTC at the realistic T=200, N=32, C=40, S=50), with ``y_pred`` requiring grad and
the default reduction. Each is warmed up once, then timed ``--rounds`` times; the table gives the best time
and (from a second run of the script, see :func:`_memory_pass`) the smallest peak extra resident memory of a
round (``VmHWM`` of ``/proc/self/status`` after a reset
through ``/proc/self/clear_refs``, minus the resident size before the round: every CPU allocation, torch's
included, which ``tracemalloc`` would not see; the script re-executes itself with ``MALLOC_MMAP_THRESHOLD_`` fixed
so that freed tensors leave the resident set). The two implementations alternate round by round, so that a
machine shared with other work slows both alike.

    KERAS_BACKEND=torch python benchmarks/bench_keras.py [--rounds 5] [--threads N] [--only Name,...] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402

import losskit  # noqa: E402
import losskit.keras as LK  # noqa: E402

N, C = 4096, 1000


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def inputs(name: str, g: torch.Generator):
    """(y_true, y_pred, constructor kwargs) for a class."""
    shape = (N, C)
    onehot = torch.nn.functional.one_hot(torch.randint(0, C, (N,), generator=g), C).float()
    logits = torch.randn(shape, generator=g) * 2
    probs = torch.softmax(logits, -1)
    binary = (torch.rand(shape, generator=g) < 0.5).float()
    labels = torch.randint(0, C, (N,), generator=g)
    table = {
        "CategoricalCrossentropy": (onehot, logits, {"from_logits": True}),
        "SparseCategoricalCrossentropy": (labels, logits, {"from_logits": True}),
        "CategoricalFocalCrossentropy": (onehot, logits, {"from_logits": True}),
        "CategoricalGeneralizedCrossEntropy": (labels, probs, {}),
        "CategoricalHinge": (onehot, logits, {}),
        "BinaryCrossentropy": (binary, logits, {"from_logits": True}),
        "BinaryFocalCrossentropy": (binary, logits, {"from_logits": True}),
        "Hinge": (binary, logits, {}),
        "SquaredHinge": (binary, logits, {}),
        "KLDivergence": (probs, torch.softmax(torch.randn(shape, generator=g), -1), {}),
        "Poisson": (binary * 3, torch.rand(shape, generator=g) + 0.1, {}),
        "MeanSquaredLogarithmicError": (binary * 3, torch.rand(shape, generator=g) * 3, {}),
        "MeanAbsolutePercentageError": (binary + 1, torch.rand(shape, generator=g), {}),
        "Dice": (binary, torch.rand(shape, generator=g), {"axis": 1}),
        "Tversky": (binary, torch.rand(shape, generator=g), {"axis": 1}),
        "CosineSimilarity": (torch.randn(shape, generator=g), logits, {}),
        "Circle": (torch.randint(0, 64, (N,), generator=g), torch.nn.functional.normalize(logits, dim=1), {}),
        "CTC": (torch.randint(1, 40, (32, 50), generator=g), torch.randn(32, 200, 40, generator=g), {}),
    }
    return table.get(name, (torch.randn(shape, generator=g), logits, {}))


def run_once(loss, y_true, y_pred) -> tuple[float, float]:
    leaf = y_pred.detach().clone().requires_grad_()
    gc.collect()
    base = _status_kib("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    loss(y_true, leaf).backward()
    seconds = time.perf_counter() - start
    peak_kib = _status_kib("VmHWM") - base
    del leaf
    return seconds * 1e3, max(peak_kib, 0) / 1024


def bench(name: str, rounds: int) -> dict:
    import keras

    y_true, y_pred, kwargs = inputs(name, torch.Generator().manual_seed(0))
    losses = {"keras": getattr(keras.losses, name)(**kwargs), "losskit": getattr(LK, name)(**kwargs)}
    results = {impl: [] for impl in losses}
    for round_ in range(rounds + 1):  # round 0 warms up
        for impl, loss in losses.items():
            result = run_once(loss, y_true, y_pred)
            if round_:
                results[impl].append(result)
    row = {"loss": name}
    for impl, runs in results.items():
        row[f"{impl}_ms"] = min(r[0] for r in runs)
        row[f"{impl}_mib"] = min(r[1] for r in runs)
    return row


def _memory_pass(names: list[str]) -> dict:
    """Peak memory from a second run of this script: glibc keeps freed large blocks for reuse once its mmap
    threshold has grown, and the resident peak then says nothing about one round; with a fixed threshold every
    large tensor leaves the resident set when freed. The timings are taken here, under the default allocator
    (the fixed threshold would make every chunk-sized temporary a fresh mmap, which no training run sees)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--memory-pass", "--only", ",".join(names), "--threads", "1"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    import keras

    head = (
        f"*Keras losses* — {platform.processor() or platform.machine()} x{os.cpu_count()}, torch {torch.__version__}, "
        f"keras {keras.__version__}, losskit {losskit.__version__}, {torch.get_num_threads()} torch thread(s), "
        f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}; forward+backward, default reduction, "
        f"{N}x{C} float32 (CTC: T=200, N=32, C=40, S=50), best of the rounds, peak = extra resident memory\n\n"
    )
    lines = [
        "| loss | keras ms | losskit ms | keras MiB | losskit MiB | time losskit/keras | memory losskit/keras |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mem = r["losskit_mib"] / r["keras_mib"] if r["keras_mib"] > 0.5 else float("nan")
        lines.append(
            f"| {r['loss']} | {r['keras_ms']:.1f} | {r['losskit_ms']:.1f} | {r['keras_mib']:.0f} | "
            f"{r['losskit_mib']:.0f} | {r['losskit_ms'] / r['keras_ms']:.2f}× | {mem:.2f}× |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated class names")
    parser.add_argument("--out", default="", help="also write the table to this file")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--memory-pass", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in LK.__all__ if n[0].isupper() and n != "Loss"]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    if args.memory_pass:  # the child: peak memory only, under the fixed mmap threshold
        print(json.dumps({name: bench(name, 2) for name in names}))
        return 0
    rows = []
    for name in names:
        rows.append(bench(name, args.rounds))
        print(f"{name}: keras {rows[-1]['keras_ms']:.1f} ms, losskit {rows[-1]['losskit_ms']:.1f} ms", file=sys.stderr)
    memory = _memory_pass(names)
    for row in rows:
        for impl in ("keras", "losskit"):
            row[f"{impl}_mib"] = memory[row["loss"]][f"{impl}_mib"]
    text = table(rows)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
