"""PNG curves of a run's ``metrics.jsonl`` (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from orpo_deploy.train.callbacks import DEV_KEYS, ORPO_KEYS, read_metrics

logger = logging.getLogger(__name__)


def plot_metrics(metrics_path: str | Path, out_dir: str | Path) -> list[Path]:
    """One PNG with a panel per ORPO metric (train, and eval where logged) against the step; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(Path(metrics_path))
    keys = [k for k in (*ORPO_KEYS, *DEV_KEYS) if any(k in r or f"eval_{k}" in r for r in records)]
    if not keys:
        logger.warning("no metrics to plot in %s", metrics_path)
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = 4
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for name, style in ((key, "-"), (f"eval_{key}", "o--")):
            points = [(r["step"], r[name]) for r in records if name in r and r[name] is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, label="eval" if name.startswith("eval_") else "train", markersize=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(f"ORPO training: {Path(metrics_path).parent}")
    fig.tight_layout()
    path = out_dir / "metrics.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
