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
    """Grouped bars: one group per rate (0..1), one bar per model column."""
    rates = [r for r in rows if r.get("rate")]
    if not rates:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(columns)
    for i, column in enumerate(columns):
        values = [r["values"].get(column) for r in rates]
        xs = [j + i * width for j, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=column)
    ax.set_xticks([j + width * (len(columns) - 1) / 2 for j in range(len(rates))])
    ax.set_xticklabels([r["figure"] for r in rates], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("rate")
    ax.set_title("quality: base vs ORPO vs quantised (held-out pairs)")
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
