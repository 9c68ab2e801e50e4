"""Peak extra memory and time of ``cross_entropy(inplace=True)`` against torch and the out-of-place kernel.

    python benchmarks/bench_inplace.py [--n 4096] [--c 32000]

``inplace=True`` needs logits computed by the model (not a leaf), so each case builds them as ``x + b`` (``b`` a
``(C,)`` leaf: its gradient is C numbers) before the measured step, as a model's last layer would. The step is
one forward + backward; its peak extra memory is the rise of ``VmHWM`` over the resident memory just before
(reset first), in a fresh process per implementation, every buffer mapped afresh (``MALLOC_MMAP_THRESHOLD_``),
best of three steps after one warm-up. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time

IMPLS = ("torch", "losskit", "losskit inplace=True")


def child(impl: str, dtype_name: str, n: int, c: int) -> str:
    import torch
    import torch.nn.functional as TF

    import losskit.functional as LF
    from losskit.cli.harness import _reset_peak, _status_kib

    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    x0 = (torch.randn(n, c, generator=gen) * 2).to(dtype)
    y = torch.randint(0, c, (n,), generator=gen)

    def step() -> tuple[float, float]:
        b = torch.zeros(c, dtype=dtype, requires_grad=True)
        z = x0 + b  # the model's logits, made before the loss is called
        gc.collect()
        _reset_peak()
        before = _status_kib("VmRSS")
        start = time.perf_counter()
        if impl == "torch":
            loss = TF.cross_entropy(z, y)
        else:
            loss = LF.cross_entropy(z, y, inplace=impl.endswith("inplace=True"))
        loss.backward()
        return (_status_kib("VmHWM") - before) / 1024, (time.perf_counter() - start) * 1e3

    step()
    runs = [step() for _ in range(3)]
    return f"{min(r[0] for r in runs)} {min(r[1] for r in runs)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--c", type=int, default=32000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(child(args.child[0], args.child[1], args.n, args.c))
        return 0
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    print(f"| {args.n}×{args.c} | peak extra MiB | × torch | ms | × torch |\n|---|---:|---:|---:|---:|")
    for dtype in ("float32", "bfloat16"):
        ref = None
        for impl in IMPLS:
            cmd = [sys.executable, __file__, "--n", str(args.n), "--c", str(args.c), "--child", impl, dtype]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout.split()
            mib, ms = float(out[-2]), float(out[-1])
            ref = ref or (mib, ms)
            print(f"| {dtype} {impl} | {mib:.1f} | {mib / ref[0]:.4f}× | {ms:.1f} | {ms / ref[1]:.2f}× |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
