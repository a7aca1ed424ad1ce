"""Totals, ratios and claim verdicts on hand-made figures; the markdown and the charts."""

import json

import pytest

from orpo_deploy.compare.plots import plot_all
from orpo_deploy.compare.report import arm_totals, build_report, memory_claim, quality_claim, time_claim, to_markdown


def stage(process_s, loop_s, rss, tps, steps=30, cuda=None):
    return {
        "process_s": process_s,
        "wall_s": process_s - 5,
        "train_loop_s": loop_s,
        "peak_rss_mib": rss,
        "cuda_max_allocated_mib": cuda,
        "tokens_per_second": tps,
        "global_step": steps,
        "pairs": 240,
    }


def evaluation(pref, strict, prompts=128, folder=None):
    """An arm's eval summary; with ``folder``, its responses.jsonl too (the first strict * n prompts followed)."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        followed = round(strict * prompts)
        lines = [
            json.dumps({"id": f"p{i}", "topic": f"t{i % 16}", "strict": [i < followed], "loose": [i < followed]})
            for i in range(prompts)
        ]
        (folder / "responses.jsonl").write_text("\n".join(lines) + "\n")
    return {
        "preference": {"preference_accuracy": pref, "pairs": prompts, "mean_margin": 0.1},
        "instruction_following": {
            "prompts": prompts,
            "prompt_strict": strict,
            "prompt_loose": strict + 0.05,
            "instruction_strict": strict + 0.1,
        },
        "results_dir": str(folder),
    }


STAGES = {"orpo": stage(600, 500, 7000, 300), "sft": stage(400, 300, 6000, 200), "dpo": stage(700, 600, 8000, 260)}


def test_arm_totals_add_times_and_take_the_peak():
    arms = arm_totals(STAGES)
    assert arms["sft_dpo"]["process_s"] == 1100 and arms["sft_dpo"]["train_loop_s"] == 900
    assert arms["sft_dpo"]["peak_rss_mib"] == 8000 and arms["sft_dpo"]["steps"] == 60
    # tokens/s over both loops: (200*300 + 260*600) / 900
    assert arms["sft_dpo"]["tokens_per_second"] == pytest.approx(240.0)
    assert arms["orpo"]["process_s"] == 600 and arms["sft"]["stages"] == ["sft"]
    assert arms["orpo"]["cuda_max_allocated_mib"] is None


@pytest.mark.parametrize(
    ("orpo_s", "verdict", "words"),
    [(550, "confirmed", "55%"), (300, "refuted", "cheaper"), (800, "refuted", "dearer")],
)
def test_time_claim(orpo_s, verdict, words):
    claim = time_claim({"process_s": orpo_s, "train_loop_s": orpo_s / 2}, {"process_s": 1000, "train_loop_s": 800})
    assert claim["verdict"] == verdict and words in claim["detail"]
    assert claim["ratio"] == pytest.approx(orpo_s / 1000)


def test_memory_claim_confirmed_at_half_refuted_at_par():
    half = memory_claim({"peak_rss_mib": 4000}, {"peak_rss_mib": 8000}, "RSS")
    assert half["verdict"] == "confirmed" and half["ratio"] == pytest.approx(0.5)
    par = memory_claim({"peak_rss_mib": 7000}, {"peak_rss_mib": 8000}, "RSS")
    assert par["verdict"] == "refuted" and "no second copy" in par["detail"]


def test_memory_claim_uses_cuda_when_measured():
    claim = memory_claim(
        {"peak_rss_mib": 9000, "cuda_max_allocated_mib": 1000},
        {"peak_rss_mib": 9000, "cuda_max_allocated_mib": 2000},
        "CUDA max allocated",
    )
    assert claim["verdict"] == "confirmed" and claim["ratio"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("orpo_strict", "dpo_strict", "verdict"),
    [(0.60, 0.30, "confirmed"), (0.30, 0.60, "refuted"), (0.42, 0.41, "inconclusive"), (0.0, 0.0, "inconclusive")],
)
def test_quality_claim_needs_a_paired_interval_clear_of_zero(orpo_strict, dpo_strict, verdict, tmp_path):
    orpo = evaluation(0.6, orpo_strict, folder=tmp_path / "orpo")
    dpo = evaluation(0.5, dpo_strict, folder=tmp_path / "dpo")
    claim = quality_claim(orpo, dpo)
    assert claim["verdict"] == verdict
    assert claim["difference"] == pytest.approx(round(orpo_strict * 128) / 128 - round(dpo_strict * 128) / 128)
    assert claim["ci"][0] <= claim["difference"] <= claim["ci"][1]


def make_report(tmp_path):
    evals = {
        "base": evaluation(0.5, 0.1, folder=tmp_path / "base"),
        "sft": evaluation(0.55, 0.2, folder=tmp_path / "sft"),
        "sft_dpo": evaluation(0.6, 0.29, folder=tmp_path / "sft_dpo"),  # one prompt fewer than ORPO
        "orpo": evaluation(0.62, 0.3, folder=tmp_path / "orpo"),
    }
    curves = {
        "orpo": [{"step": s, "loss": 2.0 - s / 10, "nll_loss": 1.9 - s / 10} for s in (1, 2, 3)],
        "sft": [{"step": s, "loss": 1.8 - s / 10} for s in (1, 2, 3)],
        "dpo": [{"step": s, "loss": 0.69 - s / 100} for s in (1, 2, 3)],
    }
    config = {
        "model": "m", "epochs": 1, "batch_size": 4, "grad_accum": 2, "lora_r": 16, "lora_alpha": 32,
        "lora_target_modules": "all-linear", "max_length": 384, "precision": "auto", "orpo_learning_rate": 2e-4,
        "orpo_beta": 0.1, "sft_learning_rate": 2e-4, "dpo_learning_rate": 5e-5, "dpo_beta": 0.1, "eval_limit": 128,
        "eval_engine": "vllm",
    }  # fmt: skip
    machine = {"device": "cpu", "cpu_count": 2, "omp_num_threads": "2", "load_average_at_end": [0.1, 0.1, 0.1],
               "memory_measure": "peak RSS (ru_maxrss)"}  # fmt: skip
    return build_report(config, STAGES, evals, curves, machine)


def test_markdown_has_the_table_and_the_verdicts(tmp_path):
    report = make_report(tmp_path)
    text = to_markdown(report)
    assert "| SFT -> DPO | 1100 | 900 | 60 | 8000 | 240 | 0.600 | 0.290 |" in text
    assert "| ORPO | 600 | 500 | 30 | 7000 | 300 | 0.620 | 0.300 |" in text
    assert "| base (untrained) | - | - | - | - | - | 0.500 | 0.100 |" in text
    assert "ORPO takes 50-60% of SFT + DPO's time: confirmed." in text  # 600 / 1100 = 55%
    assert "1x memory against SFT + DPO's 2x: refuted." in text  # 7000 / 8000
    assert [c["verdict"] for c in report["claims"]] == ["confirmed", "refuted", "inconclusive"]


def test_charts_are_written(tmp_path):
    paths = plot_all(make_report(tmp_path), tmp_path)
    assert [p.name for p in paths] == ["loss_curves.png", "cost.png", "quality.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
