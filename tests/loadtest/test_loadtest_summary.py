"""summary.py and plots.py on hand-made Locust CSVs."""

from __future__ import annotations

import pytest
from loadtest_fakes import STATS_COLUMNS, stats_row, write_csv, write_run

from orpo_deploy.loadtest.plots import plot_history, read_history
from orpo_deploy.loadtest.summary import SummaryError, summarize


def test_summary_counts_only_http_rows_and_derives_rates(tmp_path):
    s = summarize(write_run(tmp_path))
    assert (s.requests, s.failures, s.error_rate) == (40, 0, 0.0)
    assert s.output_tokens == 40 * 64
    assert s.duration_s == pytest.approx(10.0)  # Request Count / Requests/s, the same for every row
    assert s.requests_per_s == pytest.approx(4.0)
    assert s.output_tokens_per_s == pytest.approx(256.0)
    assert (s.ttft_ms.p50, s.ttft_ms.p95, s.ttft_ms.count) == (100, 200, 30)
    assert (s.itl_ms.p50, s.itl_ms.p95, s.itl_ms.count) == (12, 40, 1890)
    # e2e over two request names: the worse name's percentiles (an upper bound of the mixture's)
    assert (s.e2e_ms.p50, s.e2e_ms.p95, s.e2e_ms.count) == (1000, 1500, 40)
    assert s.e2e_ms.mean == pytest.approx((10 * 900 + 30 * 1000) / 40)
    assert set(s.by_name) == {"POST chat", "POST chat stream", "TTFT chat stream", "ITL chat stream"}


def test_failed_requests_count_in_the_error_rate_and_not_in_tokens(tmp_path):
    s = summarize(write_run(tmp_path, failures=3))
    assert (s.requests, s.failures) == (40, 3)
    assert s.error_rate == pytest.approx(3 / 40)
    assert s.output_tokens == 37 * 64


def test_final_stats_win_over_lockusts_periodic_file(tmp_path):
    write_run(tmp_path)  # locust_final_stats.csv: 40 requests
    write_csv(tmp_path / "locust_stats.csv", STATS_COLUMNS, [stats_row("POST", "chat", 3, 0, 1, 1, 64.0, 1.0)])
    assert summarize(tmp_path).requests == 40
    (tmp_path / "locust_final_stats.csv").unlink()
    assert summarize(tmp_path).requests == 3


def test_a_run_without_requests_has_no_error_rate_and_no_percentiles(tmp_path):
    write_csv(tmp_path / "locust_stats.csv", STATS_COLUMNS, [stats_row("", "Aggregated", 0, 0, 0, 0, 0.0, 0.0)])
    s = summarize(tmp_path)
    assert (s.requests, s.error_rate, s.duration_s, s.output_tokens_per_s) == (0, None, 0.0, 0.0)
    assert s.ttft_ms.p95 is None and s.e2e_ms.p50 is None


def test_missing_or_foreign_csv_is_a_summary_error(tmp_path):
    with pytest.raises(SummaryError, match="not found"):
        summarize(tmp_path)
    (tmp_path / "locust_stats.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SummaryError, match="does not look like"):
        summarize(tmp_path)


def test_history_gives_users_rates_and_latency_over_time(tmp_path):
    h = read_history(write_run(tmp_path) / "locust_stats_history.csv")
    assert h.t == [float(i) for i in range(11)] and set(h.users) == {4}
    # 4 requests/s x 64 tokens, as the slope of the cumulative tokens
    assert h.output_tokens_per_s[0] is None and h.output_tokens_per_s[-1] == pytest.approx(256.0)
    assert h.latency_ms["e2e p95"][-1] == 1500 and all(v is None for v in h.latency_ms["TTFT p95"])
    png = plot_history(tmp_path / "locust_stats_history.csv", tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
