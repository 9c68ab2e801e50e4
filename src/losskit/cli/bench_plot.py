"""The plot step of the benchmarks: long-format CSV in, one PNG per suite out (matplotlib, Agg)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict


def load(csv_path: str) -> list[dict]:
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def latest_run(rows: list[dict]) -> list[dict]:
    """The rows of the newest timestamp of each suite (a CSV may hold several appended runs)."""
    newest: dict[str, str] = {}
    for r in rows:
        newest[r["suite"]] = max(newest.get(r["suite"], ""), r["timestamp"])
    return [r for r in rows if r["timestamp"] == newest[r["suite"]]]


def plot(rows: list[dict], png_path: str, title: str | None = None) -> str:
    """Bars per case: forward+backward time and peak extra memory of each implementation, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = latest_run(rows)
    cases: list[str] = []
    data: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r["metric"] not in ("forward_backward_ms", "forward_ms", "peak_extra_mib"):
            continue
        if r["case"] not in cases:
            cases.append(r["case"])
        data[r["impl"]][r["case"]][r["metric"]] = float(r["value"])
    impls = list(data)
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 1.2 * len(cases) + 4), 5.5))
    width = 0.8 / max(len(impls), 1)
    for ax, metric, label in (
        (axes[0], "time", "forward + backward (ms, log scale)"),
        (axes[1], "peak_extra_mib", "peak extra memory (MiB, log scale)"),
    ):
        for k, impl in enumerate(impls):
            values = []
            for case in cases:
                m = data[impl].get(case, {})
                values.append(
                    m.get("forward_backward_ms", m.get("forward_ms", 0.0)) if metric == "time" else m.get(metric, 0.0)
                )
            xs = [i + k * width for i in range(len(cases))]
            ax.bar(xs, values, width, label=impl)
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.set_xticks([i + width * (len(impls) - 1) / 2 for i in range(len(cases))])
        ax.set_xticklabels(cases, rotation=35, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    suite = rows[0]["suite"] if rows else ""
    fig.suptitle(title or f"losskit vs torch: {suite} ({rows[0]['machine'] if rows else ''})", fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def params_of(row: dict) -> dict:
    return json.loads(row["params"])
