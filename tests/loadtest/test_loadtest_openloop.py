"""Open-loop arrivals (a statistical test of the drawn times and of a real Locust run's send times), goodput by
hand, and goodput counted against a fake server whose latencies are known."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from loadtest_fakes import FakeOpenAI

from orpo_deploy.loadtest.arrivals import schedule
from orpo_deploy.loadtest.cli import main
from orpo_deploy.loadtest.goodput import goodput, is_good, tpot_ms


def ks_exponential(gaps: list[float], rate: float) -> float:
    """Kolmogorov-Smirnov distance between the gaps' empirical CDF and the exponential CDF of ``rate``."""
    xs, n = sorted(gaps), len(gaps)
    return max(
        max((i + 1) / n - (1 - math.exp(-rate * x)), (1 - math.exp(-rate * x)) - i / n) for i, x in enumerate(xs)
    )


def test_poisson_gaps_fit_the_rate():
    times = schedule(rate=8.0, n=4001, seed=3)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[0] == 0.0 and all(g > 0 for g in gaps)
    # KS at the 1 % level for n = 4000: 1.63 / sqrt(n) = 0.026 (a fixed seed: this either holds or never does)
    assert ks_exponential(gaps, 8.0) < 1.63 / math.sqrt(len(gaps))
    assert statistics.fmean(gaps) == pytest.approx(1 / 8.0, rel=0.05)
    assert ks_exponential(gaps, 12.0) > 0.1  # and the test can tell a wrong rate
    assert schedule(8.0, 10, seed=3) == times[:10]  # seeded


def test_burstiness_keeps_the_mean_and_changes_the_spread():
    for shape, cv in ((0.25, 2.0), (1.0, 1.0), (4.0, 0.5)):  # gamma: CV = 1 / sqrt(shape)
        times = schedule(rate=5.0, n=8001, burstiness=shape, seed=1)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert statistics.fmean(gaps) == pytest.approx(0.2, rel=0.06)
        assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(cv, rel=0.08)


def test_goodput_by_hand():
    records = [
        {"start": 0.0, "ok": True, "ttft_ms": 100.0, "e2e_ms": 500.0, "output_tokens": 5},  # tpot 100
        {"start": 0.5, "ok": True, "ttft_ms": 300.0, "e2e_ms": 700.0, "output_tokens": 5},  # ttft too slow
        {"start": 1.0, "ok": True, "ttft_ms": 100.0, "e2e_ms": 1300.0, "output_tokens": 5},  # tpot 300: too slow
        {"start": 1.5, "ok": False, "ttft_ms": None, "e2e_ms": None},  # failed: never good
    ]
    assert tpot_ms(records[0]) == 100.0 and tpot_ms(records[3]) is None
    slos = {"ttft_ms": 200, "tpot_ms": 200}
    assert [is_good(r, slos) for r in records] == [True, False, False, False]
    g = goodput(records, slos, duration_s=2.0)
    assert (g["requests"], g["good"], g["ratio"], g["goodput_rps"]) == (4, 1, 0.25, 0.5)
    assert g["good_output_tokens_per_s"] == 2.5 and g["sent_rate_rps"] == 2.0 and g["interarrival_cv"] == 0.0
    assert goodput(records, {}, 2.0)["good"] == 3  # no SLOs: every successful request


def test_open_loop_run_sends_at_the_asked_rate_and_counts_goodput(tmp_path):
    """40 requests at 20/s against a server where every 2nd stream waits 300 ms for its first token: about half
    meet a TTFT SLO of 150 ms, and the send times fit the asked rate whatever the server's latency."""
    with FakeOpenAI(tokens=4, delay_s=0.001, slow_every=2, slow_first_token_s=0.3) as server:
        argv = ["--host", server.url, "--request-rate", "20", "--max-requests", "40", "--run-time", "30s",
                "--seed", "7", "--request-slo", "ttft_ms=150", "--slo", "goodput_ratio=0.4",
                "--output", str(tmp_path)]  # fmt: skip
        code = main(argv)
    report = json.loads((tmp_path / "summary.json").read_text())
    assert code == 0, report
    g = report["summary"]["goodput"]
    assert g["requests"] == 40 and 18 <= g["good"] <= 22, g  # the slow half misses its SLO
    records = [json.loads(line) for line in (tmp_path / "locust_requests.jsonl").read_text().splitlines()]
    starts = sorted(r["start"] for r in records)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    planned = schedule(20.0, 40, seed=7)
    planned_gaps = [b - a for a, b in zip(planned, planned[1:], strict=False)]
    # sent when planned (gevent timing adds ms, not the server's 300 ms): the open loop does not wait for answers
    assert max(abs(a - b) for a, b in zip(gaps, planned_gaps, strict=True)) < 0.1  # loaded 2-core hosts: ~50 ms
    assert report["run"]["request_rate"] == 20.0
    failing = main(["--from-results", str(tmp_path), "--request-slo", "ttft_ms=150", "--slo", "goodput_ratio=0.9"])
    assert failing == 1


def test_a_time_bounded_open_loop_stops_sending_at_the_run_time_and_lets_requests_finish(tmp_path):
    """No --max-requests: 3 s at 10 req/s against answers that take ~0.5 s. Sending stops when the 3 s are up and
    the requests then in flight finish (they once kept being sent through --stop-timeout and were cut at its end,
    counted as failed in goodput)."""
    with FakeOpenAI(tokens=10, delay_s=0.05) as server:
        argv = ["--host", server.url, "--request-rate", "10", "--run-time", "3s", "--stop-timeout", "20",
                "--seed", "3", "--output", str(tmp_path)]  # fmt: skip
        code = main(argv)
    records = [json.loads(line) for line in (tmp_path / "locust_requests.jsonl").read_text().splitlines()]
    planned = [t for t in schedule(10.0, 100, seed=3) if t < 3.0]
    assert code == 0 and len(records) == len(planned) and all(r["ok"] for r in records), records[-3:]
    starts = sorted(r["start"] for r in records)
    assert starts[-1] - starts[0] < 3.0


def test_a_sweep_stops_where_the_server_saturates(tmp_path):
    """One slot, 8 tokens x 10 ms = ~80 ms per request: ~12 req/s at most. At 4 req/s TTFT stays low; at 40 req/s
    the queue grows and TTFT p95 passes its bound: the sweep stops there and reports 4 (never trying 80)."""
    with FakeOpenAI(tokens=8, delay_s=0.01, serial=True) as server:
        argv = ["--host", server.url, "--sweep", "4,40,80", "--max-requests", "24", "--run-time", "30s"]
        code = main([*argv, "--request-slo", "ttft_ms=300", "--slo", "goodput_ratio=0.9", "--output", str(tmp_path)])
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert code == 0 and sweep["capacity_rps"] == 4.0, sweep
    assert [r["rate"] for r in sweep["rates"]] == [4.0, 40.0]  # stopped at the first miss
    assert sweep["rates"][1]["failed_slos"] == ["goodput_ratio"]
    assert sweep["rates"][1]["ttft_p95_ms"] > sweep["rates"][0]["ttft_p95_ms"]
    assert (tmp_path / "capacity.png").stat().st_size > 5_000 and "| 40 |" in (tmp_path / "sweep.md").read_text()
