"""Capacity at SLO from an ``orpo-loadtest --sweep``: a table per rate and a throughput-vs-latency chart.

The capacity is the largest rate whose run met every SLO (goodput ratio, errors, latency bounds); the sweep stops at
the first rate that does not, as ``vllm bench serve``-style sweeps and guidellm do when the server saturates (a
queue that grows shows as TTFT climbing, then goodput falling, then 429s).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def step_row(step: dict[str, Any]) -> dict[str, Any]:
    summary = step["report"].get("summary") or {}
    g = summary.get("goodput") or {}
    return {
        "rate": step["rate"],
        "passed": step["passed"],
        "sent_rps": g.get("sent_rate_rps"),
        "requests": summary.get("requests"),
        "failures": summary.get("failures"),
        "goodput_ratio": g.get("ratio"),
        "goodput_rps": g.get("goodput_rps"),
        "output_tokens_per_s": summary.get("output_tokens_per_s"),
        "ttft_p50_ms": (summary.get("ttft_ms") or {}).get("p50"),
        "ttft_p95_ms": (summary.get("ttft_ms") or {}).get("p95"),
        "itl_p95_ms": (summary.get("itl_ms") or {}).get("p95"),
        "failed_slos": [s["key"] for s in step["report"].get("slos") or [] if not s.get("ok")],
    }


def write_sweep(out: Path, steps: list[dict[str, Any]], slos: dict, request_slos: dict) -> float | None:
    """sweep.json, sweep.md and capacity.png in ``out``; returns the capacity (None if the lowest rate missed)."""
    rows = [step_row(s) for s in steps]
    met = [r["rate"] for r in rows if r["passed"]]
    capacity = max(met) if met and rows[0]["passed"] else None
    result = {"capacity_rps": capacity, "slos": slos, "request_slos": request_slos, "rates": rows}
    (out / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Capacity at SLO",
        "",
        f"Capacity: **{capacity if capacity is not None else 'none'} req/s** (the largest rate that met every SLO; "
        f"SLOs {slos}, per-request {request_slos or 'none: every successful request counts'}).",
        "",
        "| rate (req/s) | sent | requests (failed) | goodput ratio | goodput req/s | output tok/s | TTFT p50 / p95 ms "
        "| ITL p95 ms | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met_text = "yes" if r["passed"] else "no: " + ", ".join(r["failed_slos"] or ["error"])
        lines.append(
            f"| {r['rate']:g} | {r['sent_rps']} | {r['requests']} ({r['failures']}) | {_f(r['goodput_ratio'])} | "
            f"{r['goodput_rps']} | {r['output_tokens_per_s']} | {r['ttft_p50_ms']} / {r['ttft_p95_ms']} | "
            f"{r['itl_p95_ms']} | {met_text} |"
        )
    (out / "sweep.md").write_text("\n".join(lines) + "\n\n![capacity](capacity.png)\n")
    plot(rows, capacity, out / "capacity.png")
    return capacity


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def plot(rows: list[dict[str, Any]], capacity: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (thr, lat) = plt.subplots(1, 2, figsize=(11, 4))
    rates = [r["rate"] for r in rows]
    thr.plot(rates, rates, ":", color="grey", label="offered")
    thr.plot(rates, [r["goodput_rps"] or 0 for r in rows], "o-", label="goodput")
    thr.set(xlabel="offered rate (req/s)", ylabel="req/s", title="goodput vs offered load")
    lat.plot(rates, [r["ttft_p95_ms"] or 0 for r in rows], "o-", label="TTFT p95")
    lat.plot(rates, [r["itl_p95_ms"] or 0 for r in rows], "s-", label="ITL p95")
    lat.set(xlabel="offered rate (req/s)", ylabel="ms", title="latency vs offered load")
    for ax in (thr, lat):
        if capacity is not None:
            ax.axvline(capacity, color="tab:green", linestyle="--", label=f"capacity {capacity:g}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
