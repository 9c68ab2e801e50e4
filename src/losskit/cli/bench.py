"""``losskit bench``: the benchmark suites against torch, with a progress bar, a ratio table, CSV and PNG.

Every measurement runs in a fresh process (see :mod:`losskit.cli.harness`), so peak memory is exact and
one variant cannot warm the caches of another. Timings decide nothing here: they are reported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._util import CliError, require

SUITES = ("cross_entropy", "linear_cross_entropy", "elementwise")


def add_parser(commands) -> None:
    p = commands.add_parser(
        "bench",
        help="time losskit against torch and measure peak memory (CSV + PNG + table)",
        description="Run the benchmark suites side by side with torch in one run: forward+backward time "
        "(median after warm-up) and peak extra memory, each variant in a fresh process. Appends long-format "
        "rows to DIR/bench_<suite>.csv and draws DIR/bench_<suite>.png.",
    )
    p.add_argument("--quick", action="store_true", help="a small grid that finishes in under two minutes")
    p.add_argument("--out", type=Path, default=Path("losskit-bench"), metavar="DIR", help="output folder")
    p.add_argument(
        "--suite",
        action="append",
        choices=SUITES,
        help="run only this suite (repeatable; default: all three)",
    )
    p.add_argument("--max-cases", type=int, default=None, metavar="K", help="only the first K cases of each suite")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rich_progress, rich_table, rich_console, rich_box = require(
        "bench", "rich.progress", "rich.table", "rich.console", "rich.box"
    )
    require("bench", "matplotlib")
    from . import bench_cases, bench_plot, harness

    suites = args.suite or list(SUITES)
    if args.max_cases is not None and args.max_cases < 1:
        raise CliError(f"--max-cases must be at least 1, got {args.max_cases}")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"cannot create --out folder {args.out}: {err.strerror}") from None
    console = rich_console.Console()
    from ..engine import native as _native

    console.print(f"cross-entropy CPU kernel: {_native.status()}")
    plan = {s: getattr(bench_cases, f"{s}_cases")(quick=args.quick)[: args.max_cases] for s in suites}
    total = sum(len(c.impls) for cases in plan.values() for c in cases)
    all_rows: dict[str, list[dict]] = {}
    with rich_progress.Progress(
        rich_progress.TextColumn("[bold]{task.description}"),
        rich_progress.BarColumn(),
        rich_progress.MofNCompleteColumn(),
        rich_progress.TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("benchmarking", total=total)

        def step(case, impl, metrics):
            progress.update(task, advance=1, description=f"{case.suite}: {harness.short_case(case.name)} [{impl}]")

        for suite, cases in plan.items():
            all_rows[suite] = harness.run_suite(cases, str(args.out / f"bench_{suite}.csv"), step)

    for suite, rows in all_rows.items():
        baselines = ("torch", "torch_chunked") if suite == "linear_cross_entropy" else ("torch",)
        for baseline in baselines:
            console.print(ratio_table(rich_table, rich_box, harness, rows, suite, baseline))
        errors = [r for r in rows if r["metric"] == "error"]
        for r in errors:
            console.print(f"[red]{r['case']} [{r['impl']}] failed: {r['value']}")
        png = bench_plot.plot(
            bench_plot.load(str(args.out / f"bench_{suite}.csv")), str(args.out / f"bench_{suite}.png")
        )
        console.print(f"wrote {args.out / f'bench_{suite}.csv'} and {png}")
    return 0


def ratio_table(rich_table, rich_box, harness, rows: list[dict], suite: str, baseline: str):
    """One suite's results against ``baseline`` as a rich table that fits 80 columns, in a terminal or a pipe:
    short case names, short headers (the ratio's baseline is in the title), no vertical borders."""
    table = rich_table.Table(
        title=f"{suite}: time / {baseline} and memory / {baseline}",
        caption="ms: forward+backward median; MiB: peak extra memory",
        box=rich_box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("case", overflow="fold")
    table.add_column("impl", overflow="fold")
    for col in ("ms", "MiB", "time", "memory"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in harness.ratio_table(rows, baseline):
        table.add_row(
            harness.short_case(r["case"]),
            r["impl"],
            "—" if r["ms"] is None else f"{r['ms']:.1f}",
            "—" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}",
            f"{r['time_ratio']:.2f}×" if "time_ratio" in r else "",
            f"{r['mem_ratio']:.2f}×" if "mem_ratio" in r else "",
        )
    return table
