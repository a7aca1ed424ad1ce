"""Read Locust's CSV output (``--csv PREFIX``) into one summary of a chat load test.

``PREFIX_final_stats.csv`` (written by loadtest/locustfile.py at shutdown, same columns) is preferred over
``PREFIX_stats.csv``, which Locust last rewrites up to a second before the final requests finish.

Rows whose Type is an HTTP method are requests; the locustfile's custom events have Type ``TTFT`` and ``ITL``
(they also inflate Locust's own "Aggregated" row, which is therefore only used for the run's duration).

- Output tokens: ``response_length`` is usage.completion_tokens, so tokens = Average Content Size x Request Count.
- Duration: every Locust row divides by the same time (first stats reset to the last event), so
  duration = Request Count / Requests/s of any row with traffic.
- e2e p50/p95 over several request names (streaming and not) is the worst of the per-name percentiles: an
  upper bound of the true mixed percentile (a mixture's quantile never exceeds its components' largest).
- Locust keeps response times rounded (to 1 ms below 100 ms, 10 ms below 1 s, 100 ms above), so are these.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orpo_deploy.core.errors import UsageError

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
CSV_PREFIX = "locust"


class SummaryError(UsageError):
    """Locust's CSV files are missing or not what we expect."""


@dataclass
class Percentiles:
    count: int = 0
    p50: float | None = None
    p95: float | None = None
    mean: float | None = None


@dataclass
class Summary:
    requests: int
    failures: int
    error_rate: float | None
    duration_s: float
    requests_per_s: float
    output_tokens: int
    output_tokens_per_s: float
    ttft_ms: Percentiles
    itl_ms: Percentiles
    e2e_ms: Percentiles
    by_name: dict[str, dict] = field(default_factory=dict)
    top_failures: list[dict] = field(default_factory=list)
    goodput: dict | None = None  # from the per-request records (loadtest/goodput.py), when asked

    def to_dict(self) -> dict:
        return asdict(self)


def stats_paths(directory: Path, prefix: str = CSV_PREFIX) -> dict[str, Path]:
    """Locust's CSVs; the final ones written by our locustfile at shutdown win over Locust's periodic ones."""
    paths = {}
    for key, final, periodic in (("stats", "final_stats", "stats"), ("failures", "final_failures", "failures")):
        paths[key] = directory / f"{prefix}_{final}.csv"
        if not paths[key].is_file():
            paths[key] = directory / f"{prefix}_{periodic}.csv"
    paths["history"] = directory / f"{prefix}_stats_history.csv"
    return paths


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise SummaryError(f"{path} not found (did Locust run with --csv?)")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def parse_number(value: str | None) -> float | None:
    if value in (None, "", "N/A"):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _int(row: dict[str, str], key: str) -> int:
    try:
        return int(row[key])
    except (KeyError, ValueError) as exc:
        raise SummaryError(f"stats row {row.get('Name')!r} has no integer {key!r}") from exc


def _percentiles(rows: list[dict[str, str]]) -> Percentiles:
    """The rows' counts summed, p50/p95 the worst row's (see the module docstring), mean weighted by count."""
    rows = [r for r in rows if _int(r, "Request Count") > 0]
    if not rows:
        return Percentiles()
    count = sum(_int(r, "Request Count") for r in rows)
    p50s = [v for r in rows if (v := parse_number(r.get("50%"))) is not None]
    p95s = [v for r in rows if (v := parse_number(r.get("95%"))) is not None]
    mean = sum((parse_number(r["Average Response Time"]) or 0.0) * _int(r, "Request Count") for r in rows) / count
    return Percentiles(count, max(p50s, default=None), max(p95s, default=None), round(mean, 3))


def output_tokens(row: dict[str, str]) -> int:
    """Sum of response_length (completion tokens) of a request row: Locust writes their mean at full precision."""
    return round((parse_number(row.get("Average Content Size")) or 0.0) * _int(row, "Request Count"))


def duration_from(rows: list[dict[str, str]]) -> float:
    for row in rows:
        rps = parse_number(row.get("Requests/s"))
        if rps and _int(row, "Request Count"):
            return _int(row, "Request Count") / rps
    return 0.0


def summarize(directory: Path, prefix: str = CSV_PREFIX) -> Summary:
    paths = stats_paths(directory, prefix)
    rows = read_rows(paths["stats"])
    if rows and not {"Type", "Name", "Request Count", "95%"} <= rows[0].keys():
        raise SummaryError(f"{paths['stats']} does not look like a Locust stats CSV (columns: {list(rows[0])})")
    requests = [r for r in rows if r["Type"] in HTTP_METHODS]
    n_requests = sum(_int(r, "Request Count") for r in requests)
    n_failures = sum(_int(r, "Failure Count") for r in requests)
    tokens = sum(output_tokens(r) for r in requests)
    duration = duration_from(rows)
    by_name = {
        f"{r['Type']} {r['Name']}": {
            "requests": _int(r, "Request Count"),
            "failures": _int(r, "Failure Count"),
            "p50_ms": parse_number(r.get("50%")),
            "p95_ms": parse_number(r.get("95%")),
            **({"output_tokens": output_tokens(r)} if r["Type"] in HTTP_METHODS else {}),
        }
        for r in rows
        if r["Name"] != "Aggregated"
    }
    return Summary(
        requests=n_requests,
        failures=n_failures,
        error_rate=n_failures / n_requests if n_requests else None,
        duration_s=round(duration, 3),
        requests_per_s=round(n_requests / duration, 3) if duration else 0.0,
        output_tokens=tokens,
        output_tokens_per_s=round(tokens / duration, 2) if duration else 0.0,
        ttft_ms=_percentiles([r for r in rows if r["Type"] == "TTFT"]),
        itl_ms=_percentiles([r for r in rows if r["Type"] == "ITL"]),
        e2e_ms=_percentiles(requests),
        by_name=by_name,
        top_failures=_top_failures(paths["failures"]),
    )


def _top_failures(path: Path, limit: int = 5) -> list[dict]:
    if not path.is_file():
        return []
    rows = sorted(read_rows(path), key=lambda r: -int(r.get("Occurrences") or 0))
    return [
        {"name": r.get("Name"), "error": (r.get("Error") or "")[:300], "occurrences": int(r.get("Occurrences") or 0)}
        for r in rows[:limit]
    ]


def write_summary(path: Path, summary: dict) -> None:
    path.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n", encoding="utf-8")
