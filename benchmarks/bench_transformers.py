"""One training step of a small Llama (vocabulary 32000) with and without ``losskit.transformers.apply``.

A step is forward + backward + AdamW. Each variant runs in fresh processes: one measures the peak resident
memory of a step beyond what the process held just before it (``VmHWM`` reset through ``/proc/self/clear_refs``,
after a warm-up step that already created the gradients and AdamW's state; glibc's mmap threshold pinned so every
large buffer shows), others the median step time after a warm-up step (the fastest of a few such processes,
the variants taking turns, so that load from elsewhere on the machine does not decide the comparison).

Usage: python benchmarks/bench_transformers.py [--out docs] [--batch 4] [--seq 256] [--repeat 3] [--rounds 3]
Needs ``pip install 'losskit[hf]'``; writes ``bench_transformers.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

VARIANTS = {
    "transformers": "unpatched: transformers' own forward and ForCausalLMLoss (B·T·V logits)",
    "losskit plain": "apply(model, fused=False): the logits, losskit's cross entropy as loss_function",
    "losskit fused": "apply(model): linear_cross_entropy on the hidden states, no logits",
}
CONFIG = {
    "vocab_size": 32000,
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": False,
}


def _kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def child(variant: str, mode: str, batch: int, seq: int, repeat: int) -> dict:
    import torch
    import transformers

    import losskit.transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG)).train()
    if variant != "transformers":
        losskit.transformers.apply(model, fused=variant == "losskit fused")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, CONFIG["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(1))

    def step() -> float:
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # gradients stay allocated: the measured peak is the step's own
        return float(out.loss)

    loss = step()  # warm-up: gradients, AdamW state, thread pools, the kernel's first build
    gc.collect()
    if mode == "memory":
        before = _kib("VmRSS")
        _reset_peak()
        step()
        return {"peak_mib": (_kib("VmHWM") - before) / 1024, "loss": loss}
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return {
        "step_ms": statistics.median(times),
        "cpu_ms": statistics.median(cpu),
        "threads": torch.get_num_threads(),
        "loss": loss,
    }


def _run(variant: str, mode: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if mode == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    spec = json.dumps([variant, mode, args.batch, args.seq, args.repeat])
    proc = subprocess.run(
        [sys.executable, __file__, "--child", spec], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{variant} ({mode}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} x{os.cpu_count()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for bench_transformers.md")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="timed steps per process (the median is kept)")
    parser.add_argument("--rounds", type=int, default=3, help="timing processes per variant (the fastest is kept)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return 0
    import torch
    import transformers

    import losskit

    results = {}
    load_before = os.getloadavg()[0]
    for variant in VARIANTS:
        results[variant] = _run(variant, "memory", args)
    for _ in range(args.rounds):  # the variants take turns, so a burst of load elsewhere slows all of them
        for variant in VARIANTS:
            timing = _run(variant, "time", args)
            best = {k: min(timing[k], results[variant].get(k, float("inf"))) for k in ("step_ms", "cpu_ms")}
            results[variant].update(timing, **best)
            print(variant, round(timing["step_ms"]), "ms", round(timing["cpu_ms"]), "ms CPU", flush=True)
    ref = results["transformers"]
    b, t, v, h = args.batch, args.seq, CONFIG["vocab_size"], CONFIG["hidden_size"]
    logits_mib = b * t * v * 4 / 2**20
    lines = [
        "# One training step of a small Llama with and without `losskit.transformers.apply`",
        "",
        f"LlamaForCausalLM, vocab {v}, hidden {h}, {CONFIG['num_hidden_layers']} layers, untied lm_head, fp32; "
        f"batch {b} × sequence {t} = {b * t} tokens (one fp32 copy of the logits: {logits_mib:.0f} MiB). "
        "A step is forward + backward + AdamW. Peak memory: the resident-set high-water mark of the step beyond "
        "what the process held just before it (weights, gradients and AdamW state already allocated), each "
        f"variant in a fresh process; time: median of {args.repeat} steps after a warm-up step in a fresh "
        f"process, the fastest of {args.rounds} such processes per variant, the variants taking turns; CPU ms: the "
        "process's user + system time over the same steps (less sensitive than wall time to other processes).",
        "",
        f"{_machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, losskit {losskit.__version__}, "
        f"{dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()}, load average "
        f"{load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run (a busy machine slows every variant)",
        "",
        "| variant | step ms | step CPU ms | peak MiB | time / transformers | CPU / transformers "
        "| memory / transformers | first loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, r in results.items():
        lines.append(
            f"| {variant} | {r['step_ms']:.0f} | {r['cpu_ms']:.0f} | {r['peak_mib']:.0f} "
            f"| {r['step_ms'] / ref['step_ms']:.2f}× | {r['cpu_ms'] / ref['cpu_ms']:.2f}× "
            f"| {r['peak_mib'] / ref['peak_mib']:.2f}× | {r['loss']:.6f} |"
        )
    lines += ["", *(f"- *{k}*: {d}" for k, d in VARIANTS.items()), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_transformers.md"), "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
