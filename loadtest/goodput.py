"""Per-request SLOs and goodput, from the locustfile's per-request records (``locust_requests.jsonl``).

Goodput (DistServe, Zhong et al. 2024; vLLM's ``--goodput``) is the rate of requests that met *every* per-request
objective: TTFT, time per output token after the first (TPOT = (end-to-end - TTFT) / (tokens - 1)) and end-to-end
latency. Throughput counts requests a user waited too long for; goodput does not. A failed request is never good.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REQUESTS_FILE = "locust_requests.jsonl"
# --request-slo keys: a per-request bound in ms
REQUEST_SLO_KEYS = {"ttft_ms": "time to first token", "tpot_ms": "time per output token", "e2e_ms": "end-to-end"}


def tpot_ms(record: dict[str, Any]) -> float | None:
    tokens, ttft, e2e = record.get("output_tokens") or 0, record.get("ttft_ms"), record.get("e2e_ms")
    if tokens < 2 or ttft is None or e2e is None:
        return None
    return (e2e - ttft) / (tokens - 1)


def is_good(record: dict[str, Any], slos: dict[str, float]) -> bool:
    """Did this request succeed and meet every per-request SLO? A figure it lacks (no TTFT) counts as missed."""
    if not record.get("ok"):
        return False
    values = {"ttft_ms": record.get("ttft_ms"), "e2e_ms": record.get("e2e_ms"), "tpot_ms": tpot_ms(record)}
    for key, bound in slos.items():
        value = values[key]
        if key == "tpot_ms" and value is None and (record.get("output_tokens") or 0) == 1:
            continue  # one token: no time per output token to judge
        if value is None or value > bound:
            return False
    return True


def read_records(directory: Path) -> list[dict[str, Any]]:
    path = Path(directory) / REQUESTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def goodput(records: Sequence[dict[str, Any]], slos: dict[str, float], duration_s: float) -> dict[str, Any]:
    """Requests, good ones, their ratio and rate, and good output tokens/s; plus what the arrivals achieved."""
    good = [r for r in records if is_good(r, slos)]
    starts = sorted(r["start"] for r in records if r.get("start") is not None)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    mean_gap = statistics.fmean(gaps) if gaps else None
    return {
        "request_slos": dict(slos),
        "requests": len(records),
        "good": len(good),
        "ratio": len(good) / len(records) if records else None,
        "goodput_rps": round(len(good) / duration_s, 4) if duration_s else None,
        "good_output_tokens_per_s": round(sum(r.get("output_tokens") or 0 for r in good) / duration_s, 2)
        if duration_s
        else None,
        "sent_rate_rps": round(1 / mean_gap, 4) if mean_gap else None,
        "interarrival_cv": round(statistics.pstdev(gaps) / mean_gap, 3) if mean_gap and len(gaps) > 1 else None,
    }
