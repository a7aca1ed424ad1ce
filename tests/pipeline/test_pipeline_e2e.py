"""orpo-pipeline end to end on the tiny model with tiny budgets: real training, eval, GPTQ export, orpo-serve and
Locust. Then a re-run skips every stage, and deleting the export output re-runs export and what follows only."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import yaml

from orpo_deploy.pipeline.cli import main
from orpo_deploy.pipeline.stages import PAIRS
from orpo_deploy.pipeline.stages import STAGES as ALL_STAGES

STAGES = tuple(s for s in ALL_STAGES if s != PAIRS)  # committed pairs: no pairs stage

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("trl", "gptqmodel", "vllm", "locust")),
        reason="needs the train, export, cpu/gpu and loadtest extras",
    ),
]

TINY = {
    "name": "tiny",
    "model": "tiny-smollm2",
    "train": {
        "config": "configs/orpo_tiny_test.yaml",
        "max_steps": 2,
        "overrides": {"max_pairs": 16, "eval_dataset": None, "logging_steps": 1, "save_steps": 2},
    },
    "eval": {"limit": 4, "max_new_tokens": 16, "engine": "hf", "batch_size": 4},
    "ifeval": {"limit": 3, "max_new_tokens": 16},
    "export": {
        "min_retention": 0,  # a random model has no quality to keep
        "eval_limit": 4,
        "eval_max_new_tokens": 16,
        "calibration_size": 8,
        "calibration_max_tokens": 64,
        "quality_engine": "hf",
    },
    # a loaded shared 2-core host has taken 50 to over 300 s to /ready (nice 19)
    "serve": {"max_model_len": 512, "kv_cache_gib": 1, "enforce_eager": True, "start_timeout_s": 900},
    "loadtest": {"users": 2, "run_time": "20s", "max_tokens": 16, "slos": {"error_rate": 0, "min_requests": 1}},
}


def test_pipeline_runs_skips_and_reruns_downstream_of_a_deleted_output(tmp_path, capsys):
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({**TINY, "runs_dir": str(tmp_path / "runs")}))
    run_dir = tmp_path / "runs" / "tiny"

    assert main(["--config", str(config)]) == 0, capsys.readouterr().err
    first = capsys.readouterr().out
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert [s["this_run"] for s in report["stages"]] == ["ran"] * (len(STAGES) - 1)
    for png in ("training", "quality", "sizes", "stages", "loadtest"):
        assert (run_dir / "report" / f"{png}.png").stat().st_size > 0, png
    assert report["loadtest"]["passed"] is True and report["loadtest"]["summary"]["requests"] >= 1
    assert report["serve"]["served"] in ("merged", "quantized") and report["serve"]["exit_code"] == 0
    assert report["sizes_mib"]["quantised"] < report["sizes_mib"]["merged (ORPO)"]
    quality = {row["figure"]: row["values"] for row in report["quality"]["rows"]}
    columns = ("base", "ORPO", "served", "constant answer (floor)")
    assert all(quality["IF prompt-strict"][c] is not None for c in columns)
    for diff in ("ORPO - base", "served - ORPO"):  # paired over the same 4 prompts (3 on IFEval)
        assert report["quality"]["diffs"][diff]["prompt_strict"]["n"] == 4
        assert report["quality"]["ifeval_diffs"][diff]["prompt_strict"]["n"] == 3
    assert set(report["quality"]["ifeval"]) == {"base", "ORPO", "served", "floor"}
    assert report["quality_measured_on"]["served"].startswith("orpo-eval, 4 prompts, greedy through the server")
    assert {g["figure"] for g in report["quality"]["export_gate"]} >= {"instruction_following", "perplexity"}
    assert set(report["quality"]["preference"]) == {"base", "ORPO"}
    assert "## Serving" in (run_dir / "report" / "report.md").read_text()
    assert sum(" running (" in line for line in first.splitlines()) == len(STAGES)

    assert main(["--config", str(config)]) == 0
    second = capsys.readouterr().out
    assert second.count("skipped (up to date)") == len(STAGES), second
    assert "running" not in second

    # The server reads the export only where it serves the quantised folder (GPU, AVX-512); on an AVX2 CPU it
    # serves the merged one, so a new export leaves the served model, and so serve and loadtest, up to date.
    shutil.rmtree(run_dir / "export")
    assert main(["--config", str(config)]) == 0
    ran, skipped = ran_and_skipped(capsys.readouterr().out)
    served_quantised = report["serve"]["served"] == "quantized"
    served_stages = {"serve", "eval-served", "ifeval-served", "loadtest"}
    assert ran == {"export", "report"} | (served_stages if served_quantised else set())
    assert skipped == set(STAGES) - ran

    # a load test needs a live server: serve runs again with it; the served evaluations key on the served model
    # and the server's arguments, not on its port, so they stay up to date
    shutil.rmtree(run_dir / "loadtest")
    assert main(["--config", str(config)]) == 0
    ran, skipped = ran_and_skipped(capsys.readouterr().out)
    assert ran == {"serve", "loadtest", "report"} and skipped == set(STAGES) - ran
    assert json.loads((run_dir / "serve" / "stop.json").read_text())["exit_code"] == 0


def ran_and_skipped(out: str) -> tuple[set[str], set[str]]:
    ran = {line.split()[1] for line in out.splitlines() if " running (" in line}
    skipped = {line.split()[1] for line in out.splitlines() if "skipped (up to date)" in line}
    return ran, skipped
