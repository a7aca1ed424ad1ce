"""Dev instruction following while training: the logged figures by hand, and a real run that keeps its best
checkpoint and stops early."""

import pytest
import torch

from orpo_deploy.core.manifest import read_manifest
from orpo_deploy.evaluation.generate import Generation
from orpo_deploy.train.callbacks import read_metrics
from orpo_deploy.train.dev_eval import GenerationEval, GenerationEvalError, figures
from orpo_deploy.train.pipeline import run_training

ROWS = [
    {"topic": "a", "constraints": [{"kind": "lowercase", "kwargs": {}}], "relevance": ["moon"]},
    {"topic": "b", "constraints": [{"kind": "lowercase", "kwargs": {}}, {"kind": "no_commas", "kwargs": {}}],
     "relevance": ["tides"]},
]  # fmt: skip


def test_figures_by_hand():
    gens = [
        Generation("the moon is bright", "stop", 5),  # on topic, lowercase: 1 of 1
        Generation("Tides, TIDES", "length", 8),  # on topic, fails both: 0 of 2
    ]
    f = figures(ROWS, gens, 1.23)
    assert f["if_prompt_strict"] == pytest.approx(1 / 2)
    assert f["if_instruction_strict"] == pytest.approx(1 / 3)
    # mean of prompt strict/loose and instruction strict/loose; loose equals strict on these answers
    assert f["if_mean"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3 + 1 / 3) / 4)
    assert f["if_relevant"] == 1.0
    assert f["answer_tokens"] == pytest.approx(6.5) and f["answer_hit_limit"] == pytest.approx(0.5)
    off_topic = figures(ROWS, [Generation("the sun", "stop", 2), Generation("the tides rise and fall", "stop", 1)])
    assert off_topic["if_prompt_strict"] == pytest.approx(1 / 2) and off_topic["if_relevant"] == pytest.approx(1 / 2)


def test_rows_without_constraints_are_refused():
    with pytest.raises(GenerationEvalError, match="constraints"):
        GenerationEval([{"prompt": "hi"}], 4)


def test_subset_spans_the_split():
    rows = [{"prompt": f"p{i}", "topic": f"t{i // 10}", "constraints": ROWS[0]["constraints"]} for i in range(40)]
    ev = GenerationEval(rows, 4)
    assert [r["topic"] for r in ev.rows] == ["t0", "t1", "t2", "t3"]
    assert ev.prompts[0] == [{"role": "user", "content": "p0"}]


def test_best_checkpoint_is_merged_and_training_stops_early(tmp_path):
    """A random tiny model scores 0 at every dev evaluation: the first stays the best, patience 1 stops the run at
    the second, and the adapter saved (and merged) is checkpoint-1's, not the last step's."""
    from safetensors.torch import load_file

    from tests.train.test_training import tiny_config

    cfg = tiny_config(
        tmp_path, eval_dataset="dev", eval_max_pairs=4, eval_generate=3, eval_max_new_tokens=4, eval_steps=1,
        save_steps=1, best_metric="if_mean", early_stopping_patience=1, max_steps=6,
    )  # fmt: skip
    merged = run_training(cfg)
    evals = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "eval_if_mean" in r]
    assert [r["step"] for r in evals] == [1, 2]
    assert all(r["eval_if_mean"] == 0.0 and 0 < r["eval_answer_tokens"] <= 4 for r in evals)
    train = read_metrics(cfg.run_dir / "metrics.jsonl")
    assert max(r["step"] for r in train) == 2
    manifest = read_manifest(cfg.run_dir / "adapter")
    assert manifest["train"]["stopped_early"] is True
    assert manifest["train"]["best"] == {"metric": "eval_if_mean", "value": 0.0, "step": 1}
    assert manifest["eval_dataset"]["generate_prompts"] == 3
    saved = load_file(cfg.run_dir / "adapter" / "adapter_model.safetensors")
    best = load_file(cfg.run_dir / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors")
    last = load_file(cfg.run_dir / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    assert saved.keys() == best.keys()
    assert all(torch.equal(saved[k], best[k]) for k in saved)
    assert any(not torch.equal(best[k], last[k]) for k in best)
    assert read_manifest(merged)["stage"] == "train"
