"""The real locustfile under Locust (a subprocess) against a fake OpenAI-style server: a few seconds per run.

Checks the stream parsing, the custom TTFT/ITL events, token counting, failure marking, the /metrics
cross-check and exit codes, without a model. The real-server test is test_loadtest_vllm.py.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from loadtest_fakes import FakeOpenAI

from orpo_deploy.loadtest.cli import main

# find_spec, not importorskip: importing locust would monkey-patch this test process with gevent
pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="needs locust")


def run(server: FakeOpenAI, out, *extra: str) -> tuple[int, dict]:
    argv = ["--host", server.url, "--users", "2", "--run-time", "3s", "--output", str(out), *extra]
    code = main(argv)
    return code, json.loads((out / "summary.json").read_text())


def test_counts_match_the_server_and_streams_report_ttft_and_itl(tmp_path):
    with FakeOpenAI(tokens=8, api_key="k") as server:
        code, report = run(server, tmp_path, "--api-key", "k", "--check-metrics", "--slo", "min_output_tokens_per_s=1")
        served_requests, served_tokens = server.requests, server.completion_tokens
    assert code == 0, report
    s = report["summary"]
    assert s["requests"] == served_requests > 0 and s["failures"] == 0
    assert s["output_tokens"] == served_tokens == 8 * served_requests
    streams = s["by_name"]["POST chat stream"]["requests"]
    assert streams > 0 and s["by_name"]["POST chat"]["requests"] > 0
    assert s["ttft_ms"]["count"] == streams and s["itl_ms"]["count"] == 7 * streams  # 8 chunks, 7 gaps each
    assert report["run"]["model"] == "fake-model"  # discovered from /v1/models
    assert [c["ok"] for c in report["metrics_check"]] == [True, True]
    # the same CSVs, graded again with an SLO no run can meet: exit 1
    assert main(["--from-results", str(tmp_path), "--slo", "ttft_p95_ms=0"]) == 1


def test_wrong_key_and_broken_streams_are_failed_requests(tmp_path):
    with FakeOpenAI(api_key="right") as server:
        code, report = run(server, tmp_path / "key", "--api-key", "wrong", "--model", "m")
    assert code == 1 and report["summary"]["error_rate"] == 1.0
    assert "HTTP 401" in report["summary"]["top_failures"][0]["error"]

    with FakeOpenAI(break_streams=True) as server:
        code, report = run(server, tmp_path / "stream", "--slo", "error_rate=1")
    by_name = report["summary"]["by_name"]
    assert code == 0  # error_rate=1 tolerates them; the streams are still counted as failures
    assert by_name["POST chat stream"]["failures"] == by_name["POST chat stream"]["requests"] > 0
    assert by_name["POST chat"]["failures"] == 0
    assert "no usage chunk" in report["summary"]["top_failures"][0]["error"]
