"""The report's own PNG charts (matplotlib, Agg): quality, sizes on disk, stage times."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def quality_chart(rows: list[dict[str, Any]], columns: list[str], path: Path) -> Path | None:
    """Grouped bars with 95 % error bars: one group per figure (0..1), one bar per model column.

    A value is ``{"value", "ci_low", "ci_high"}`` (bounds may be None: no bar end then) or None (not measured).
    """
    rates = [r for r in rows if any(v is not None for v in r["values"].values())]
    if not rates:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(columns)
    for i, column in enumerate(columns):
        cells = [(j, r["values"].get(column)) for j, r in enumerate(rates)]
        cells = [(j, v) for j, v in cells if v is not None]
        if not cells:
            continue
        xs = [j + i * width for j, _ in cells]
        ys = [v["value"] for _, v in cells]
        err = [
            [v["value"] - v["ci_low"] if v["ci_low"] is not None else 0 for _, v in cells],
            [v["ci_high"] - v["value"] if v["ci_high"] is not None else 0 for _, v in cells],
        ]
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=column, error_kw={"elinewidth": 1})
    ax.set_xticks([j + width * (len(columns) - 1) / 2 for j in range(len(rates))])
    ax.set_xticklabels([r["figure"] for r in rates], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("rate")
    ax.set_title("instruction following on held-out prompts, 95 % intervals (bootstrap over prompts, by topic)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def bar_chart(labels: list[str], values: list[float], path: Path, title: str, xlabel: str, notes=None) -> Path | None:
    """Horizontal bars (sizes, stage times); ``notes`` are written at the bars' ends."""
    if not labels:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.2))
    ax.barh(labels, values, color="tab:blue")
    for y, (value, note) in enumerate(zip(values, notes or [""] * len(values), strict=True)):
        ax.text(value, y, f" {value:.1f} {note}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.set_xlim(0, max(values + [1.0]) * 1.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
