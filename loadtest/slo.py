"""Service-level objectives: ``KEY=VALUE`` strings parsed into bounds and checked against a ``Summary``.

Keys ending in ``_ms`` and ``error_rate`` are upper bounds; keys starting with ``min_`` are lower bounds.
``error_rate`` defaults to 0 (any failed request fails the run) unless given. A bound on a figure the run
did not produce (e.g. TTFT when no stream succeeded) fails, rather than passing vacuously.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orpo_deploy.core.errors import UsageError
from orpo_deploy.loadtest.summary import Summary

# key -> (what it reads from the summary, "max" or "min", help)
SLO_KEYS: dict[str, tuple[str, str, str]] = {
    "ttft_p50_ms": ("ttft_ms.p50", "max", "median time to first token, ms"),
    "ttft_p95_ms": ("ttft_ms.p95", "max", "95th percentile time to first token, ms"),
    "itl_p50_ms": ("itl_ms.p50", "max", "median inter-token latency, ms"),
    "itl_p95_ms": ("itl_ms.p95", "max", "95th percentile inter-token latency, ms"),
    "e2e_p50_ms": ("e2e_ms.p50", "max", "median request latency, ms (worst request name)"),
    "e2e_p95_ms": ("e2e_ms.p95", "max", "95th percentile request latency, ms (worst request name)"),
    "error_rate": ("error_rate", "max", "failed requests / requests, 0..1 (default 0)"),
    "min_output_tokens_per_s": ("output_tokens_per_s", "min", "completion tokens per second over the run"),
    "min_requests_per_s": ("requests_per_s", "min", "requests per second over the run"),
    "min_requests": ("requests", "min", "requests completed (guards against a run that did nothing)"),
    "goodput_ratio": ("goodput.ratio", "min", "share of requests that met every --request-slo, 0..1"),
    "min_goodput_rps": ("goodput.goodput_rps", "min", "requests per second that met every --request-slo"),
}
DEFAULT_SLOS = {"error_rate": 0.0, "min_requests": 1.0}


class SLOError(UsageError):
    """An SLO string that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class SLOResult:
    key: str
    bound: str  # "max" or "min"
    threshold: float
    value: float | None
    ok: bool

    def describe(self) -> str:
        op = "<=" if self.bound == "max" else ">="
        shown = "missing" if self.value is None else f"{self.value:g}"
        return f"{self.key}: {shown} (want {op} {self.threshold:g}) {'ok' if self.ok else 'FAILED'}"


def parse_slos(items: list[str]) -> dict[str, float]:
    """``["ttft_p95_ms=500", ...]`` -> ``{"ttft_p95_ms": 500.0, ...}`` on top of ``DEFAULT_SLOS``."""
    slos = dict(DEFAULT_SLOS)
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SLOError(f"SLO {item!r} is not KEY=VALUE")
        if key not in SLO_KEYS:
            raise SLOError(f"unknown SLO key {key!r}; known: {', '.join(SLO_KEYS)}")
        try:
            value = float(raw)
        except ValueError:
            raise SLOError(f"SLO {key}: {raw!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise SLOError(f"SLO {key}: must be a finite number >= 0, got {raw!r}")
        if key in ("error_rate", "goodput_ratio") and value > 1:
            raise SLOError(f"SLO {key} is a fraction in 0..1, got {raw!r}")
        slos[key] = value
    return slos


def _lookup(summary: Summary, path: str) -> float | None:
    value = summary
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part)
        if value is None:
            return None
    return float(value)


def evaluate(summary: Summary, slos: dict[str, float]) -> list[SLOResult]:
    results = []
    for key, threshold in slos.items():
        path, bound, _ = SLO_KEYS[key]
        value = _lookup(summary, path)
        ok = value is not None and (value <= threshold if bound == "max" else value >= threshold)
        results.append(SLOResult(key, bound, threshold, value, ok))
    return results
