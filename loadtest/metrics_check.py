"""Check that orpo-serve's Prometheus counters moved by what Locust counted during a run.

Scrape ``/metrics`` before and after; the chat route's ``orpo_serve_requests_total`` (all statuses) must grow by
exactly Locust's request count, and ``orpo_serve_completion_tokens_total`` by the sum of usage.completion_tokens
(checked only when no request failed: a failed request's tokens are not in Locust's sum).

The server bumps its request counter once the response has been sent, so right after Locust exits the last
few increments may still be on their way: ``check_after_run`` polls until the expected count is reached or a
short deadline passes (that is synchronisation with a deadline, not a retry: a count that overshoots or never
arrives still fails). Only meaningful when nothing else talks to the server during the run.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import httpx

from orpo_deploy.core.errors import RunFailed

CHAT_ROUTE = "/v1/chat/completions"
REQUESTS = "orpo_serve_requests_total"
COMPLETION_TOKENS = "orpo_serve_completion_tokens_total"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class MetricsError(RunFailed):
    """/metrics could not be read or lacks orpo-serve's counters."""


@dataclass(frozen=True)
class Counters:
    requests: float
    completion_tokens: float


@dataclass(frozen=True)
class CounterCheck:
    name: str
    expected: float | None  # None: not checked
    observed: float
    ok: bool
    note: str = ""

    def describe(self) -> str:
        if self.expected is None:
            return f"{self.name}: server +{self.observed:g}, not checked ({self.note})"
        return f"{self.name}: server +{self.observed:g}, Locust {self.expected:g} {'ok' if self.ok else 'MISMATCH'}"


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format -> (name, labels, value) for every sample line."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return samples


def scrape(base_url: str, api_key: str | None = None, route: str = CHAT_ROUTE, timeout: float = 10.0) -> Counters:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{base_url.rstrip('/')}/metrics", headers=headers, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise MetricsError(f"cannot scrape {base_url}/metrics: {exc}") from exc
    samples = parse_samples(response.text)
    names = {name for name, _, _ in samples}
    if REQUESTS not in names and COMPLETION_TOKENS not in names:
        raise MetricsError(f"{base_url}/metrics has no {REQUESTS} / {COMPLETION_TOKENS} (not orpo-serve?)")
    requests = sum(v for name, labels, v in samples if name == REQUESTS and labels.get("route") == route)
    tokens = sum(v for name, _, v in samples if name == COMPLETION_TOKENS)
    return Counters(requests, tokens)


def compare(before: Counters, after: Counters, requests: int, failures: int, tokens: int) -> list[CounterCheck]:
    d_requests = after.requests - before.requests
    d_tokens = after.completion_tokens - before.completion_tokens
    checks = [CounterCheck(REQUESTS, requests, d_requests, d_requests == requests)]
    if failures:
        checks.append(CounterCheck(COMPLETION_TOKENS, None, d_tokens, True, f"{failures} failed requests"))
    else:
        checks.append(CounterCheck(COMPLETION_TOKENS, tokens, d_tokens, d_tokens == tokens))
    return checks


def check_after_run(
    base_url: str,
    before: Counters,
    requests: int,
    failures: int,
    tokens: int,
    api_key: str | None = None,
    settle_s: float = 10.0,
) -> list[CounterCheck]:
    """Scrape until the request counter reaches ``before + requests`` (or ``settle_s`` passes), then compare."""
    deadline = time.monotonic() + settle_s
    while True:
        after = scrape(base_url, api_key)
        if after.requests - before.requests >= requests or time.monotonic() >= deadline:
            return compare(before, after, requests, failures, tokens)
        time.sleep(0.2)
