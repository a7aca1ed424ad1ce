"""orpo-loadtest's arguments, exit codes and --from-results grading on hand-made CSVs (no load is sent)."""

from __future__ import annotations

import json

import pytest
from loadtest_fakes import write_run

from orpo_deploy.loadtest.cli import UsageError, check_host, main, parse_duration


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--host", "http://127.0.0.1:8000", "--slo", "ttft_p99_ms=5"], "unknown SLO key 'ttft_p99_ms'"),
        (["--host", "http://127.0.0.1:8000", "--slo", "ttft_p95_ms=soon"], "'soon' is not a number"),
        (["--host", "http://10.1.2.3:8000"], "--host 10.1.2.3 is not loopback"),
        (["--host", "http://example.com"], "--host example.com is not loopback"),
        (["--host", "127.0.0.1:8000"], "expected a URL like http://127.0.0.1:8000"),
        (["--host", "http://127.0.0.1:8000", "--run-time", "soon"], "--run-time 'soon'"),
        (["--host", "http://127.0.0.1:8000", "--users", "0"], "--users must be >= 1"),
        (["--host", "http://127.0.0.1:8000", "--users", "two"], "invalid int value: 'two'"),
        (["--host", "http://127.0.0.1:8000", "--shape", "wave"], "invalid choice: 'wave'"),
        (["--host", "http://127.0.0.1:8000", "--prompts", "/no/such.jsonl"], "no such file"),
        (["--users", "2"], "--host is required"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("orpo-loadtest: error: ")


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "min_output_tokens_per_s" in capsys.readouterr().out


def test_loopback_hosts_pass_and_remote_ones_need_a_flag():
    for url in ("http://127.0.0.1:8000/", "http://localhost:1", "http://[::1]:8000", "https://127.0.0.2"):
        assert check_host(url, allow_remote=False) == url.rstrip("/")
    assert check_host("http://10.1.2.3:8000", allow_remote=True) == "http://10.1.2.3:8000"


def test_run_time_forms():
    assert [parse_duration(t) for t in ("90", "90s", "2m", "1h30m", "1m5s")] == [90, 90, 120, 5400, 65]
    for bad in ("", "0", "1.5m", "m", "-5"):
        with pytest.raises(UsageError):
            parse_duration(bad)


def test_from_results_passes_when_slos_hold(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    code = main(["--from-results", str(run), "--slo", "ttft_p95_ms=250", "--slo", "min_output_tokens_per_s=200"])
    assert code == 0
    report = json.loads((run / "summary.json").read_text())
    assert report["passed"] is True and report["summary"]["output_tokens_per_s"] == 256.0
    keys = {r["key"] for r in report["slos"]}
    assert keys == {"error_rate", "min_requests", "ttft_p95_ms", "min_output_tokens_per_s"}
    assert (run / "loadtest.png").stat().st_size > 0
    assert "256.0 output tok/s" in capsys.readouterr().out


def test_from_results_fails_and_lists_the_failed_slos(tmp_path, capsys):
    run = write_run(tmp_path / "run", ttft_p95=900)
    code = main(["--from-results", str(run), "--slo", "ttft_p95_ms=500", "--slo", "itl_p95_ms=100"])
    assert code == 1
    err = capsys.readouterr().err
    assert "ttft_p95_ms: 900 (want <= 500) FAILED" in err and "itl_p95_ms" not in err
    assert json.loads((run / "summary.json").read_text())["passed"] is False


def test_any_failed_request_fails_by_default(tmp_path, capsys):
    run = write_run(tmp_path / "run", failures=1)
    assert main(["--from-results", str(run)]) == 1
    assert "error_rate: 0.025 (want <= 0) FAILED" in capsys.readouterr().err
    assert main(["--from-results", str(run), "--slo", "error_rate=0.05"]) == 0


def test_from_results_without_csvs_exits_1(tmp_path, capsys):
    assert main(["--from-results", str(tmp_path)]) == 1
    assert "not found" in capsys.readouterr().err
