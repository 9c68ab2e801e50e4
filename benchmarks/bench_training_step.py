"""Whole training steps, torch's loss against losskit's, where the loss sits inside a model's work.

    python benchmarks/bench_training_step.py [--rounds 9]

A loss timed alone on a warm leaf tensor is not what a training step sees: there the model's output was just
written by torch's OpenMP threads (the matmul splits its rows between them, and each half sits in that
thread's cache), those threads are still spinning when the loss starts, and the optimizer runs after it. Each
case here is an MLP (Linear(128, 256) → ReLU → Linear(256, C), SGD) ending in the loss; one step is forward,
loss, ``zero_grad``, backward and ``step``. Time: torch's and losskit's steps interleaved round by round in one
process, the best round of each (``--rounds``, 100 steps a round). Peak memory: the rise of ``VmHWM`` over the
resident memory just before one step (reset first), in a fresh process per implementation, every buffer mapped
afresh (``MALLOC_MMAP_THRESHOLD_``), best of three steps after one warm-up. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time

from losskit.engine import entry

# (loss, N, C): a classifier's batch, a wide classifier, a regression head, a multi-label head
CASES = (
    ("cross_entropy", 32, 10),
    ("cross_entropy", 1024, 1000),
    ("mse_loss", 256, 1000),
    ("binary_cross_entropy_with_logits", 256, 1000),
)


def _setup(loss: str, n: int, c: int):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.ReLU(), torch.nn.Linear(256, c))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(n, 128)
    if loss == "cross_entropy":
        target = torch.randint(0, c, (n,))
    elif loss == "binary_cross_entropy_with_logits":
        target = torch.rand(n, c)
    else:
        target = torch.randn(n, c)
    return model, opt, x, target


def _step(model, opt, x, target, fn) -> None:
    loss = fn(model(x), target)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _functions(loss: str):
    import torch.nn.functional as TF

    import losskit.functional as LF

    return getattr(TF, loss), getattr(LF, loss)


def timed(loss: str, n: int, c: int, rounds: int) -> tuple[float, float]:
    """Best µs per step of torch's and losskit's loss, interleaved round by round."""
    model, opt, x, target = _setup(loss, n, c)
    fns = _functions(loss)
    for fn in fns:
        for _ in range(20):
            _step(model, opt, x, target, fn)
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(100):
                _step(model, opt, x, target, fn)
            best[i] = min(best[i], (time.perf_counter() - start) / 100 * 1e6)
    return best[0], best[1]


def child(impl: str, loss: str, n: int, c: int) -> str:
    """Peak extra MiB of one step with ``impl``'s loss (run in a fresh process)."""
    from losskit.cli.harness import _reset_peak, _status_kib

    model, opt, x, target = _setup(loss, n, c)
    fn = _functions(loss)[impl == "losskit"]

    def step() -> float:
        gc.collect()
        _reset_peak()
        before = _status_kib("VmRSS")
        _step(model, opt, x, target, fn)
        return (_status_kib("VmHWM") - before) / 1024

    step()
    entry.wait()  # the steady state: the C++ entry points in place
    return str(min(step() for _ in range(3)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, loss, n, c = args.child
        print(child(impl, loss, int(n), int(c)))
        return 0
    import torch

    entry.wait()  # the steady state: the C++ entry points (built in the background on first use) in place
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    print("| step ending in | N×C | torch µs | losskit µs | × torch | peak extra MiB torch / losskit |")
    print("|---|---|---:|---:|---:|---|")
    for loss, n, c in CASES:
        t_torch, t_ours = timed(loss, n, c, args.rounds)
        mib = []
        for impl in ("torch", "losskit"):
            cmd = [sys.executable, __file__, "--child", impl, loss, str(n), str(c)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout.split()
            mib.append(float(out[-1]))
        cells = [loss, f"{n}×{c}", f"{t_torch:.1f}", f"{t_ours:.1f}", f"{t_ours / t_torch:.2f}×"]
        print("| " + " | ".join([*cells, f"{mib[0]:.1f} / {mib[1]:.1f}"]) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
