"""Throughput and latency over time from Locust's ``*_stats_history.csv`` (written with ``--csv-full-history``).

Locust writes one row per entry and second: "Requests/s" is a ~10 s moving average and the percentiles are of
the last ~10 s ("current"), so the curves are smoothed. Output tokens/s is the slope of the cumulative tokens
(Total Request Count x Total Average Content Size of the request rows), averaged over 10 s.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from orpo_deploy.loadtest.summary import HTTP_METHODS, parse_number, read_rows

SMOOTH_S = 10  # Locust's own "current" figures cover ~10 s; requests finishing in bursts need as much


@dataclass
class History:
    t: list[float] = field(default_factory=list)  # seconds since the first row
    users: list[int] = field(default_factory=list)
    requests_per_s: list[float] = field(default_factory=list)
    output_tokens_per_s: list[float | None] = field(default_factory=list)
    latency_ms: dict[str, list[float | None]] = field(default_factory=dict)  # "TTFT p95" -> one value per t


LATENCY_SERIES = (("TTFT", "50%"), ("TTFT", "95%"), ("ITL", "95%"), ("e2e", "95%"))


def read_history(path: Path) -> History:
    by_time: dict[int, list[dict[str, str]]] = defaultdict(list)
    for row in read_rows(path):
        by_time[int(row["Timestamp"])].append(row)
    history = History(latency_ms={f"{kind} p{pct.rstrip('%')}": [] for kind, pct in LATENCY_SERIES})
    if not by_time:
        return history
    first = min(by_time)
    cumulative_tokens: list[float] = []
    for ts in sorted(by_time):
        rows = by_time[ts]
        requests = [r for r in rows if r["Type"] in HTTP_METHODS]
        history.t.append(float(ts - first))
        history.users.append(int(rows[0]["User Count"]))
        history.requests_per_s.append(sum(parse_number(r["Requests/s"]) or 0.0 for r in requests))
        cumulative_tokens.append(sum(_tokens_so_far(r) for r in requests))
        for kind, pct in LATENCY_SERIES:
            kind_rows = requests if kind == "e2e" else [r for r in rows if r["Type"] == kind]
            values = [v for r in kind_rows if (v := parse_number(r.get(pct))) is not None]
            history.latency_ms[f"{kind} p{pct.rstrip('%')}"].append(max(values, default=None))
    for i in range(len(history.t)):
        j = max(0, i - SMOOTH_S)
        dt = history.t[i] - history.t[j]
        history.output_tokens_per_s.append((cumulative_tokens[i] - cumulative_tokens[j]) / dt if dt else None)
    return history


def _tokens_so_far(row: dict[str, str]) -> float:
    return int(row["Total Request Count"]) * (parse_number(row["Total Average Content Size"]) or 0.0)


def plot_history(history_csv: Path, png: Path, title: str = "load test") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = read_history(history_csv)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, constrained_layout=True)
    top.plot(h.t, h.output_tokens_per_s, label="output tokens/s", color="tab:blue")
    top.set_ylabel("output tokens/s")
    right = top.twinx()
    right.plot(h.t, h.requests_per_s, label="requests/s", color="tab:orange")
    right.step(h.t, h.users, where="post", label="users", color="tab:gray", linestyle="--")
    right.set_ylabel("requests/s, users")
    lines = top.get_lines() + right.get_lines()
    top.legend(lines, [line.get_label() for line in lines], loc="upper left")
    top.set_title(title)
    for label, values in h.latency_ms.items():
        if any(v is not None for v in values):
            bottom.plot(h.t, [float("nan") if v is None else v for v in values], label=label)
    bottom.set_yscale("log")
    bottom.set_ylabel("latency, ms (last ~10 s)")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper left")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
