"""The plot step of the benchmarks: long-format CSV in, one PNG per suite out (matplotlib, Agg).

Each suite gets two panels, time and peak extra memory, as ratios against the suite's baseline (torch) on a
linear axis that starts at zero: one horizontal bar per implementation and case, the ratio printed at the end
of every bar, the baseline a dashed line at 1. The baseline's absolute value is in each case's label, so the
numbers behind every ratio are on the picture. Every implementation keeps one colour in every picture
(:data:`COLORS`); the legend sits below the panels, never over a bar.

``python -m losskit.cli.bench_plot docs/bench_*.csv`` redraws the PNGs from CSVs alone.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict

# One colour per implementation, the same in every picture (matplotlib's colour-blind-safe tableau hues).
COLORS = {
    "torch": "#4e79a7",  # blue: torch, always the baseline when it ran
    "losskit": "#f28e2b",  # orange: losskit, always
    "copy": "#9d9d9d",  # grey: one plain copy of the logits, the memory-bandwidth floor
    "torch_chunked": "#76b7b2",  # teal: torch 2.13's chunked linear_cross_entropy
    "allgather": "#b07aa1",  # purple: the all-gather baseline of the distributed suite
}
_SPARE = ("#59a14f", "#e15759", "#edc948", "#ff9da7", "#9c755f")
ORDER = ("losskit", "torch_chunked", "copy", "allgather", "torch")  # bars top to bottom within a case
BASELINES = ("torch", "allgather")  # the first of these that a suite ran is its baseline


def color(impl: str) -> str:
    """The colour of ``impl`` in every picture (unknown names get a stable spare colour)."""
    return COLORS.get(impl) or _SPARE[sum(map(ord, impl)) % len(_SPARE)]


def load(csv_path: str) -> list[dict]:
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def latest_run(rows: list[dict]) -> list[dict]:
    """The rows of the newest timestamp of each suite (a CSV may hold several appended runs)."""
    newest: dict[str, str] = {}
    for r in rows:
        newest[r["suite"]] = max(newest.get(r["suite"], ""), r["timestamp"])
    return [r for r in rows if r["timestamp"] == newest[r["suite"]]]


def _collect(rows: list[dict]) -> tuple[list[str], dict[str, dict[str, dict[str, float]]]]:
    cases: list[str] = []
    data: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r["metric"] not in ("forward_backward_ms", "forward_ms", "peak_extra_mib"):
            continue
        if r["case"] not in cases:
            cases.append(r["case"])
        data[r["impl"]][r["case"]][r["metric"]] = float(r["value"])
    return cases, data


def _time(m: dict[str, float]) -> float | None:
    return m.get("forward_backward_ms", m.get("forward_ms"))


def _amount(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.3g} ms"
    return f"{value / 1024:.2f} GiB" if value >= 1024 else f"{value:.3g} MiB"


def plot(rows: list[dict], png_path: str, title: str | None = None) -> str:
    """Draw ``rows`` (one suite's long-format rows; the newest run is used) into ``png_path``; return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    rows = latest_run(rows)
    cases, data = _collect(rows)
    present = set(data)
    base = next((b for b in BASELINES if b in present), None)
    others = [i for i in ORDER if i in present and i != base] + sorted(present - set(ORDER) - {base})
    n_bars = max(len(others), 1)
    height = 0.8 / n_bars
    fig_h = 1.6 + len(cases) * (0.28 + 0.2 * n_bars)
    fig, axes = plt.subplots(1, 2, figsize=(13, fig_h))
    panels = (
        (axes[0], _time, "forward + backward time"),
        (axes[1], lambda m: m.get("peak_extra_mib"), "peak extra memory"),
    )
    labels = []
    for case in cases:
        m = data[base].get(case, {}) if base else {}
        ms, mib = _time(m), m.get("peak_extra_mib")
        amounts = ", ".join(_amount(v, u) for v, u in ((ms, "ms"), (mib, "MiB")) if v is not None)
        labels.append(f"{case}\n{base}: {amounts}" if amounts else f"{case}\n{base}: not run")
    for ax, get, what in panels:
        top = 1.0
        for ci, case in enumerate(cases):
            ref = get(data[base].get(case, {})) if base else None
            if not ref:  # no baseline to divide by: the absolute values, in words
                unit = "ms" if get is _time else "MiB"
                said = [f"{i} {_amount(v, unit)}" for i in others if (v := get(data[i].get(case, {}))) is not None]
                ax.text(
                    0.01,
                    ci,
                    f"no {base} run: " + ", ".join(said),
                    va="center",
                    fontsize=7.5,
                    transform=ax.get_yaxis_transform(),
                )
                continue
            for k, impl in enumerate(others):
                value = get(data[impl].get(case, {}))
                if value is None:
                    continue
                y = ci + (k - (n_bars - 1) / 2) * height
                ratio = value / ref
                top = max(top, ratio)
                ax.barh(y, ratio, height * 0.92, color=color(impl))
                ax.text(
                    ratio,
                    y,
                    f" {ratio:.2f}×",
                    va="center",
                    ha="left",
                    fontsize=7.5,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3, "alpha": 0.8},
                )
        if base:
            ax.axvline(1.0, color=color(base), linestyle="--", linewidth=1.4)
        ax.set_xlim(0, top * 1.18)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}×"))
        ax.set_xlabel(f"{what} / {base}'s (linear, from 0; lower is better)" if base else what)
        ax.set_yticks(range(len(cases)))
        ax.set_yticklabels(labels if ax is axes[0] else [], fontsize=7.5)
        ax.set_ylim(len(cases) - 0.5, -0.5)  # first case on top
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(what, fontsize=10)
    handles: list[Artist] = [Patch(color=color(i), label=i) for i in others]
    if base:
        handles.append(Line2D([0], [0], color=color(base), linestyle="--", label=f"{base} (= 1×)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    suite = rows[0]["suite"] if rows else ""
    where = f"{rows[0]['machine']}, torch {rows[0]['torch_version']}" if rows else ""
    fig.suptitle(title or f"{suite}: losskit against {base} ({where})", fontsize=10)
    fig.tight_layout(rect=(0, 0.45 / fig_h, 1, 1))
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def params_of(row: dict) -> dict:
    return json.loads(row["params"])


def main(argv: list[str] | None = None) -> int:
    """Redraw ``bench_<suite>.png`` next to each given ``bench_<suite>.csv``."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m losskit.cli.bench_plot docs/bench_<suite>.csv ...", file=sys.stderr)
        return 2
    for path in paths:
        print(plot(load(path), path.removesuffix(".csv") + ".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
