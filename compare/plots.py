"""The charts of a comparison report (matplotlib, Agg): loss curves, cost bars, quality bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orpo_deploy.compare.report import ARM_LABELS, peak_memory

COLOURS = {"base": "#999999", "sft": "#4c72b0", "sft_dpo": "#dd8452", "orpo": "#55a868", "dpo": "#c44e52"}


def plot_all(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write loss_curves.png, cost.png and quality.png into ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [
        _save(plt, _loss_curves(plt, report["curves"]), out_dir / "loss_curves.png"),
        _save(plt, _cost(plt, report["stages"], report["arms"], report["machine"]), out_dir / "cost.png"),
        _save(plt, _quality(plt, report["eval"]), out_dir / "quality.png"),
    ]
    return paths


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _series(curve: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in curve if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _loss_curves(plt, curves: dict[str, list[dict[str, Any]]]):
    """One panel per objective (their losses differ in kind) and one for the NLL of chosen that ORPO and SFT share."""
    panels = [
        ("ORPO loss (NLL + lambda x odds-ratio term)", [("orpo", "loss", "orpo")]),
        ("SFT loss (NLL of chosen)", [("sft", "loss", "sft")]),
        ("DPO loss (sigmoid, on the SFT model)", [("dpo", "loss", "dpo")]),
        ("NLL of chosen: ORPO's term vs SFT", [("orpo", "nll_loss", "orpo"), ("sft", "loss", "sft")]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, series) in zip(axes.flat, panels, strict=True):
        for stage, key, colour in series:
            xs, ys = _series(curves.get(stage, []), key)
            if xs:
                ax.plot(xs, ys, "-o", markersize=3, color=COLOURS[colour], label=f"{stage} {key}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize=8)
    return fig


def _cost(plt, stages: dict[str, Any], arms: dict[str, Any], machine: dict[str, Any]):
    """Wall time (SFT -> DPO stacked by stage), peak memory and tokens/s per arm."""
    names = list(arms)
    labels = [ARM_LABELS[n] for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    bottom = [0.0] * len(names)
    for stage in ("sft", "dpo", "orpo"):
        heights = [stages[stage]["process_s"] if stage in arms[n]["stages"] else 0.0 for n in names]
        axes[0].bar(labels, heights, bottom=bottom, color=COLOURS[stage], label=stage)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes[0].set_title("wall time per arm (s), by stage")
    axes[0].legend(fontsize=8)
    axes[1].bar(labels, [peak_memory(arms[n]) for n in names], color=[COLOURS[n] for n in names])
    axes[1].set_title(f"peak memory (MiB): {machine.get('memory_measure', '')}", fontsize=9)
    axes[2].bar(labels, [arms[n]["tokens_per_second"] for n in names], color=[COLOURS[n] for n in names])
    axes[2].set_title("training tokens/s")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    return fig


def _quality(plt, evals: dict[str, Any]):
    """Preference accuracy and instruction-following rates, grouped by metric, one bar per model."""
    metrics = [
        ("IF prompt strict", "prompt_strict"),
        ("IF prompt loose", "prompt_loose"),
        ("IF instruction strict", "instruction_strict"),
    ]
    names = list(evals)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, name in enumerate(names):
        inf = evals[name]["instruction_following"]
        xs = [m + (i - (len(names) - 1) / 2) * width for m in range(len(metrics))]
        ys = [inf[key] for _, key in metrics]
        cis = [inf.get("ci", {}).get(key) or [inf[key], inf[key]] for _, key in metrics]
        err = [[y - c[0] for y, c in zip(ys, cis, strict=True)], [c[1] - y for y, c in zip(ys, cis, strict=True)]]
        ax.bar(xs, ys, width, yerr=err, capsize=3, color=COLOURS[name], label=ARM_LABELS[name])
    ax.set_xticks(range(len(metrics)), [label for label, _ in metrics])
    ax.set_ylim(0, 1)
    ax.set_title("instruction following on held-out prompts, 95 % intervals")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig
