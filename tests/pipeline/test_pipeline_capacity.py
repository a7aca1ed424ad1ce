"""The pipeline's load test as capacity at SLO (loadtest.sweep): the stage's command and manifest, and the report."""

import json

from orpo_deploy.pipeline.config import CPU_CONFIG, load_config, parse_set
from orpo_deploy.pipeline.report import collect, to_markdown
from orpo_deploy.pipeline.stages import plan_loadtest


def test_a_sweep_config_runs_orpo_loadtest_sweep_and_keys_on_sweep_json():
    closed_cfg = load_config(CPU_CONFIG, overrides=parse_set(["loadtest.sweep="]))  # empty: closed-loop users
    closed = plan_loadtest(closed_cfg, "http://127.0.0.1:9", "k")
    assert "--users" in closed.command and "--sweep" not in closed.command and closed.manifest == "summary.json"
    cfg = load_config(
        CPU_CONFIG, overrides=parse_set(["loadtest.sweep=[0.5, 1, 2]", "loadtest.request_slos={ttft_ms: 2000}"])
    )
    plan = plan_loadtest(cfg, "http://127.0.0.1:9", "k")
    argv = plan.command
    assert argv[argv.index("--sweep") + 1] == "0.5,1,2" and "--users" not in argv
    assert argv[argv.index("--request-slo") + 1] == "ttft_ms=2000"
    assert plan.manifest == "sweep.json" and plan.settings["sweep"] == [0.5, 1.0, 2.0]
    assert plan.key != closed.key


def test_the_report_shows_capacity_and_each_rate(tmp_path):
    (tmp_path / "loadtest").mkdir()
    row = {"sent_rps": 1.0, "goodput_ratio": 1.0, "goodput_rps": 1.0, "output_tokens_per_s": 60.0,
           "ttft_p50_ms": 90.0, "ttft_p95_ms": 150.0, "failed_slos": []}  # fmt: skip
    rates = [{**row, "rate": 1.0, "passed": True}, {**row, "rate": 2.0, "passed": False, "goodput_ratio": 0.7,
                                                     "failed_slos": ["goodput_ratio"]}]  # fmt: skip
    sweep = {"capacity_rps": 1.0, "slos": {"goodput_ratio": 0.95}, "request_slos": {"ttft_ms": 2000}, "rates": rates}
    (tmp_path / "loadtest" / "sweep.json").write_text(json.dumps(sweep))
    text = to_markdown(collect(tmp_path), {})
    assert "capacity at SLO **1 req/s**" in text
    assert "| 2 | 1.00 | 0.70 |" in text and "no: goodput_ratio" in text and "users for" not in text
