"""The whole comparison on the tiny model: real trl ORPO/SFT/DPO steps in child processes, the real evaluator."""

import json
from pathlib import Path

import pytest

from orpo_deploy.compare.cli import main
from orpo_deploy.core.manifest import read_manifest
from orpo_deploy.core.models import resolve_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "report"
    code = main(["--config", str(REPO / "configs" / "compare_tiny_test.yaml"), "--set", f"output={out}"])
    assert code == 0
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_every_stage_trained_and_was_measured(compared):
    _, report = compared
    for name in ("orpo", "sft", "dpo"):
        s = report["stages"][name]
        assert s["global_step"] == 2, name  # 8 pairs / batch 4, one pass
        assert s["pairs"] == 8
        assert s["process_s"] > s["wall_s"] > s["train_loop_s"] > 0
        assert s["peak_rss_mib"] > 200 and s["tokens_per_second"] > 0
        assert [p["step"] for p in report["curves"][name]] == [1, 2]
    assert "nll_loss" in report["curves"]["orpo"][0]
    arms = report["arms"]
    assert arms["sft_dpo"]["process_s"] == pytest.approx(
        report["stages"]["sft"]["process_s"] + report["stages"]["dpo"]["process_s"], abs=0.02
    )
    assert arms["sft_dpo"]["peak_rss_mib"] == max(report["stages"][s]["peak_rss_mib"] for s in ("sft", "dpo"))


@pytest.mark.slow
def test_dpo_trained_a_new_adapter_on_the_sft_model(compared):
    from safetensors.torch import load_file

    _, report = compared
    dpo_adapter = Path(report["stages"]["dpo"]["adapter_dir"])
    manifest = read_manifest(dpo_adapter)
    assert manifest["objective"] == "dpo" and manifest["dpo_beta"] == 0.1
    assert manifest["base_model"]["path"] == report["stages"]["sft"]["merged_dir"]
    for stage in ("sft", "dpo"):
        weights = load_file(Path(report["stages"][stage]["adapter_dir"]) / "adapter_model.safetensors")
        assert all(v.abs().max() > 0 for k, v in weights.items() if "lora_B" in k), stage  # B starts at zero


@pytest.mark.slow
def test_every_model_was_evaluated_alike(compared):
    out, report = compared
    assert report["models"]["base"] == str(resolve_model("tiny-smollm2"))
    for name in ("base", "sft", "sft_dpo", "orpo"):
        ev = report["eval"][name]
        assert ev["preference"]["pairs"] == 4 and ev["instruction_following"]["prompts"] == 4
        assert (out / "eval" / name / "results.json").is_file()
    assert read_manifest(report["models"]["orpo"])["merged_dtype"] == "float32"


@pytest.mark.slow
def test_report_files(compared):
    out, report = compared
    assert {c["verdict"] for c in report["claims"]} <= {"confirmed", "refuted", "inconclusive"}
    assert len(report["claims"]) == 3
    text = (out / "report.md").read_text()
    assert "| ORPO |" in text and "| SFT -> DPO |" in text and "## The claims" in text
    for png in ("loss_curves.png", "cost.png", "quality.png"):
        assert (out / png).stat().st_size > 10_000
    assert sorted(p.name for p in (out / "metrics").iterdir()) == ["dpo.jsonl", "orpo.jsonl", "sft.jsonl"]
    assert read_manifest(out)["stage"] == "compare"
    assert not list(out.parent.glob(".report.tmp-*"))
