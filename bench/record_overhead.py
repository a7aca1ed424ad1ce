"""What `orpo-serve --record` costs a request: the same Locust load on orpo-serve without and with recording
(SQLite, the default store), one after the other, then again in the other order.

    .venv/bin/python bench/record_overhead.py --model tiny-smollm2 --users 8 --run-time 60s

Issue 21 asks for throughput (on / off) >= 0.95 and TTFT p95 (on / off) <= 1.05. A 2-core host shares its cores
between Locust, the HTTP front end, the engine and the record writer, and run-to-run noise on it is several per
cent, so the arms alternate in blocks of off, on, on, off (--blocks of them) and the ratios use each arm's
median run. Writes
<output>/record_overhead.json and README.md with the git commit and the command; Locust outputs stay in --runs-dir.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from loadtest_compare import figure, run_one  # bench/: one server, one Locust run, its summary

from orpo_deploy.core.io import write_atomic, write_json
from orpo_deploy.core.models import TINY_NAME, resolve_model

REPO = Path(__file__).resolve().parents[1]
FIGURES = [("output tokens/s", "output_tokens_per_s"), ("requests/s", "requests_per_s"),
           ("TTFT p50 ms", "ttft_ms.p50"), ("TTFT p95 ms", "ttft_ms.p95"), ("e2e p95 ms", "e2e_ms.p95"),
           ("requests", "requests"), ("failures", "failures")]  # fmt: skip


def median(values: list) -> float | None:
    values = sorted(v for v in values if isinstance(v, int | float))
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=TINY_NAME)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--run-time", default="60s")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--start-deadline", type=float, default=300.0)
    p.add_argument("--blocks", type=int, default=1, help="blocks of off, on, on, off runs (default 1)")
    p.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "record_overhead")
    p.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "record-overhead")
    args = p.parse_args(argv)
    args.ignore_eos = True
    model_dir = resolve_model(args.model)
    args.served_name = model_dir.name if Path(args.model).exists() else args.model
    db = args.runs_dir / "records.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.unlink(missing_ok=True)
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    order = ["off", "on", "on", "off"] * args.blocks
    for i, arm in enumerate(order):
        extra = ("--record", f"sqlite:///{db}") if arm == "on" else ()
        print(f"== run {i + 1}: recording {arm}", flush=True)
        runs[arm].append(run_one("orpo-serve", args, model_dir, args.runs_dir / f"{i + 1}-{arm}", extra))
    with sqlite3.connect(db) as con:
        recorded = con.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    table = {}
    for label, path in FIGURES:
        off = median([figure(r["summary"], path) for r in runs["off"]])
        on = median([figure(r["summary"], path) for r in runs["on"]])
        table[path] = {"label": label, "off": off, "on": on, "ratio": round(on / off, 3) if off and on else None}
    served = sum(figure(r["summary"], "requests") or 0 for r in runs["on"])
    verdict = {
        "throughput_ratio": table["output_tokens_per_s"]["ratio"],
        "ttft_p95_ratio": table["ttft_ms.p95"]["ratio"],
    }
    verdict["passes"] = bool(
        verdict["throughput_ratio"] and verdict["throughput_ratio"] >= 0.95
        and verdict["ttft_p95_ratio"] and verdict["ttft_p95_ratio"] <= 1.05
    )  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    report = {
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "git_commit": commit,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "settings": {"model": args.model, "users": args.users, "run_time": args.run_time,
                     "max_tokens": args.max_tokens, "ignore_eos": True, "machine": f"{os.cpu_count()} CPUs"},
        "runs": runs, "figures": table, "recorded_rows": recorded, "requests_with_recording": served,
        "verdict": verdict,
    }  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "record_overhead.json", report)
    lines = [
        "# orpo-serve with and without `--record` (SQLite), the same Locust load",
        "",
        f"{report['created_at']}, commit {commit[:10]}. `{report['command']}`. Model `{args.model}`, {args.users} "
        f"closed-loop users for {args.run_time} per run, max_tokens {args.max_tokens} (ignore_eos); runs in the "
        f"order (off, on, on, off) x {args.blocks} on a 2-core host (Locust, server and writer share it); each "
        "figure is the median of an arm's runs.",
        "",
        "| figure | recording off | recording on | on / off |",
        "|---|---:|---:|---:|",
    ]
    for row in table.values():
        fmt = lambda v: "-" if v is None else f"{v:,.1f}"  # noqa: E731
        lines.append(f"| {row['label']} | {fmt(row['off'])} | {fmt(row['on'])} | {row['ratio']} |")
    lines += [
        "",
        f"Rows in the store after the recording runs: {recorded} (requests those runs completed: {served}). "
        f"Issue 21's bar: throughput on/off >= 0.95 ({verdict['throughput_ratio']}), TTFT p95 on/off <= 1.05 "
        f"({verdict['ttft_p95_ratio']}): {'met' if verdict['passes'] else 'NOT met'}.",
        "",
    ]
    lines += [
        "Per run, in the order they ran:",
        "",
        "| run | recording | output tokens/s | TTFT p95 ms |",
        "|---|---|---:|---:|",
    ]
    seen = {"off": 0, "on": 0}
    for i, arm in enumerate(order):
        s = runs[arm][seen[arm]]["summary"]
        seen[arm] += 1
        lines.append(f"| {i + 1} | {arm} | {s['output_tokens_per_s']:.1f} | {s['ttft_ms']['p95']:.0f} |")
    write_atomic(args.output / "README.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
