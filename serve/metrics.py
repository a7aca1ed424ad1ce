"""Every Prometheus collector of the server, in one explicit registry per app (no duplicate registration in tests).

/metrics serves this registry followed by prometheus_client's default registry, where vLLM keeps its own
``vllm:*`` metrics (and the process/GC collectors).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from orpo_deploy.serve.engine import EngineStats

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "orpo_serve_requests", "HTTP requests by route template and status code.", ["route", "status"], registry=r
        )
        self.in_flight = Gauge("orpo_serve_requests_in_flight", "Requests holding a generation slot.", registry=r)
        self.waiting = Gauge("orpo_serve_requests_waiting", "Requests queued for a generation slot.", registry=r)
        self.engine_running = Gauge(
            "orpo_serve_engine_requests_running", "Sequences the engine scheduler is running.", registry=r
        )
        self.ttft = Histogram(
            "orpo_serve_time_to_first_token_seconds",
            "From admission to the first generated token.",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "orpo_serve_inter_token_latency_seconds",
            "Between successive engine outputs of a request (one output usually carries one token per choice).",
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "orpo_serve_e2e_request_latency_seconds",
            "From admission to the last token of a finished generation.",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("orpo_serve_prompt_tokens", "Prompt tokens of admitted requests.", registry=r)
        self.completion_tokens = Counter("orpo_serve_completion_tokens", "Generated tokens.", registry=r)
        self.records_dropped = Counter(
            "orpo_serve_records_dropped",
            "Completion records dropped (record queue full, or the store failed).",
            registry=r,
        )
        self.kv_cache_usage = Gauge("orpo_serve_kv_cache_usage_ratio", "KV-cache blocks in use (0-1).", registry=r)

    def bind(self, in_flight: Callable[[], float], waiting: Callable[[], float], stats: Callable[[], EngineStats]):
        """Gauges read their values at scrape time, so no handler has to keep them up to date."""
        self.in_flight.set_function(in_flight)
        self.waiting.set_function(waiting)
        self.engine_running.set_function(lambda: stats().running)
        self.kv_cache_usage.set_function(lambda: stats().kv_cache_usage)

    def observe_request(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()

    def generation(self, prompt_tokens: int) -> GenerationTimer:
        self.prompt_tokens.inc(prompt_tokens)
        return GenerationTimer(self)

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(REGISTRY)


class GenerationTimer:
    """Latency bookkeeping for one generation: call ``output`` per engine output, ``finish`` at the end."""

    def __init__(self, metrics: ServeMetrics) -> None:
        self._m = metrics
        self.start = time.perf_counter()
        self.first_token_at: float | None = None
        self._last = self.start
        self.completion_tokens = 0

    def output(self, num_tokens: int) -> None:
        if num_tokens <= 0:
            return
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
            self._m.ttft.observe(now - self.start)
        else:
            self._m.itl.observe(now - self._last)
        self._last = now
        self.completion_tokens += num_tokens
        self._m.completion_tokens.inc(num_tokens)

    def finish(self) -> None:
        self._m.e2e.observe(time.perf_counter() - self.start)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.start
