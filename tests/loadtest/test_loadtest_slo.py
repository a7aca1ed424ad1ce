"""SLO parsing and evaluation."""

from __future__ import annotations

import pytest
from loadtest_fakes import write_run

from orpo_deploy.loadtest.slo import DEFAULT_SLOS, SLO_KEYS, SLOError, evaluate, parse_slos
from orpo_deploy.loadtest.summary import summarize


def test_parse_adds_defaults_and_lets_the_user_override_them():
    assert parse_slos([]) == DEFAULT_SLOS == {"error_rate": 0.0, "min_requests": 1.0}
    slos = parse_slos(["ttft_p95_ms=500", "error_rate=0.01", " min_output_tokens_per_s = 20.5"])
    assert slos == {"error_rate": 0.01, "min_requests": 1.0, "ttft_p95_ms": 500.0, "min_output_tokens_per_s": 20.5}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("ttft_p99_ms=5", "unknown SLO key 'ttft_p99_ms'; known: ttft_p50_ms"),
        ("ttft_p95_ms", "is not KEY=VALUE"),
        ("=5", "is not KEY=VALUE"),
        ("ttft_p95_ms=fast", "'fast' is not a number"),
        ("itl_p95_ms=-1", "must be a finite number >= 0"),
        ("itl_p95_ms=nan", "must be a finite number >= 0"),
        ("error_rate=5", "fraction in 0..1"),
    ],
)
def test_bad_slos_say_what_is_wrong(item, message):
    with pytest.raises(SLOError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_slos([item])


def test_every_key_reads_a_summary_field(tmp_path):
    from orpo_deploy.loadtest.goodput import goodput

    summary = summarize(write_run(tmp_path))
    records = [{"start": i * 0.1, "ok": True, "ttft_ms": 5.0, "e2e_ms": 20.0, "output_tokens": 4} for i in range(5)]
    summary.goodput = goodput(records, {"ttft_ms": 10}, summary.duration_s)
    results = evaluate(summary, {key: 1e9 if key.endswith("_ms") or key == "error_rate" else 0 for key in SLO_KEYS})
    assert all(r.value is not None and r.ok for r in results), [r.describe() for r in results]


def test_upper_and_lower_bounds(tmp_path):
    summary = summarize(write_run(tmp_path, ttft_p95=200))  # 256 output tokens/s
    slos = {"ttft_p95_ms": 200, "itl_p95_ms": 39, "min_output_tokens_per_s": 256, "min_requests_per_s": 4.5}
    failed = [r.key for r in evaluate(summary, slos) if not r.ok]
    assert failed == ["itl_p95_ms", "min_requests_per_s"]
    (failed,) = evaluate(summary, {"itl_p95_ms": 39})
    assert failed.describe() == "itl_p95_ms: 40 (want <= 39) FAILED"


def test_a_figure_the_run_did_not_produce_fails(tmp_path):
    summary = summarize(write_run(tmp_path))
    summary.ttft_ms.p95 = None  # e.g. no stream succeeded
    (result,) = evaluate(summary, {"ttft_p95_ms": 1e9})
    assert not result.ok and "missing" in result.describe()
