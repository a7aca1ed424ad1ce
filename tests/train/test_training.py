"""Real trl ORPO steps on the tiny model: LoRA moves, metrics/plots/manifest are written, merged == adapter."""

import json
import os

import pytest
import torch

from orpo_deploy.core.manifest import read_manifest, weights_sha256
from orpo_deploy.core.models import resolve_model
from orpo_deploy.train.callbacks import ORPO_KEYS, read_metrics
from orpo_deploy.train.config import TrainConfig
from orpo_deploy.train.merge import MergeError, merge_adapter
from orpo_deploy.train.pipeline import TrainError, run_training

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]


def write_pairs(path, n: int = 24) -> None:
    """Learnable pairs: chosen repeats the colour the prompt names, rejected names another; one very long prompt."""
    rows = []
    for i in range(n):
        colour, other = COLOURS[i % len(COLOURS)], COLOURS[(i + 3) % len(COLOURS)]
        rows.append({"prompt": f"Name the colour {colour}.", "chosen": f"{colour} {colour}.", "rejected": f"{other}."})
    rows[0]["prompt"] = "Please read this carefully. " * 200 + "Name the colour red."  # must keep its tail
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    data = tmp_path / "pairs.jsonl"
    if not data.exists():
        write_pairs(data)
    values = dict(
        model="tiny-smollm2",
        dataset=str(data),
        output_dir=str(tmp_path / "out"),
        max_length=96,
        max_prompt_length=48,
        lora_r=4,
        lora_alpha=8,
        learning_rate=5e-3,
        max_steps=3,
        batch_size=4,
        logging_steps=1,
        save_steps=2,
        seed=0,
    )
    values.update(overrides)
    return TrainConfig.from_sources(overrides=values, environ={})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("orpo")
    cfg = tiny_config(tmp_path)
    merged = run_training(cfg)
    return cfg, merged


def test_lora_weights_changed(trained):
    from safetensors.torch import load_file

    cfg, _ = trained
    weights = load_file(cfg.run_dir / "adapter" / "adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b, sorted(weights)[:5]
    # peft initialises every B to zero: a non-zero B is a trained update
    assert all(v.abs().max() > 0 for v in lora_b.values())


def test_metrics_log_checkpoints_and_plots(trained):
    cfg, _ = trained
    records = read_metrics(cfg.run_dir / "metrics.jsonl")
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == [1, 2, 3]
    for key in ORPO_KEYS:
        assert key in train_records[-1], key
    assert train_records[-1]["tokens_per_second"] > 0
    assert (cfg.run_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    assert (cfg.run_dir / "plots" / "metrics.png").stat().st_size > 10_000


def test_manifest_records_provenance(trained):
    cfg, merged = trained
    manifest = read_manifest(merged)
    assert manifest["stage"] == "train"
    assert manifest["base_model"]["weights_sha256"] == weights_sha256(resolve_model("tiny-smollm2"))
    assert manifest["dataset"]["path"] == str((cfg.run_dir.parent.parent / "pairs.jsonl").resolve())
    assert len(manifest["dataset"]["sha256"]) == 64
    assert manifest["dataset"]["truncation"]["prompts_truncated"] == 1
    assert manifest["config"]["learning_rate"] == cfg.learning_rate
    assert set(manifest["versions"]) >= {"torch", "transformers", "trl", "peft"}
    assert manifest["train"]["global_step"] == 3 and manifest["train"]["wall_time_s"] > 0
    assert manifest["train"]["tokens_per_second"] > 0 and manifest["train"]["peak_rss_mib"] > 0
    assert "loss" in manifest["metrics"]["train"]
    assert manifest["weights_sha256"] == weights_sha256(merged)
    assert manifest["adapter_sha256"] == weights_sha256(cfg.run_dir / "adapter")
    assert {"tokenizer.json", "generation_config.json", "config.json"} <= {p.name for p in merged.iterdir()}
    assert (
        "chat_template" in (merged / "tokenizer_config.json").read_text() or (merged / "chat_template.jinja").exists()
    )


def test_merged_logits_equal_adapter_logits(trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, merged_dir = trained
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    ids = tokenizer(["Name the colour blue.", "red red."], return_tensors="pt", padding=True)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-smollm2"))
    adapter = PeftModel.from_pretrained(base, cfg.run_dir / "adapter").eval()
    with torch.no_grad():
        expected = adapter(**ids).logits
        got = merged(**ids).logits
        untrained = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-smollm2"))(**ids).logits
    assert merged.dtype == torch.float32  # the tiny base is fp32; the merge keeps the base's dtype
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, untrained, atol=1e-4)  # and the adapter did change the model


def test_merge_twice_is_a_no_op_and_quantised_bases_are_refused(trained, tmp_path):
    cfg, merged = trained
    before = (merged / "model.safetensors").stat().st_mtime_ns
    assert merge_adapter(cfg.run_dir / "adapter", merged) == merged
    assert (merged / "model.safetensors").stat().st_mtime_ns == before

    fake_base = tmp_path / "quantised"
    fake_base.mkdir()
    config = json.loads((resolve_model("tiny-smollm2") / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (fake_base / "config.json").write_text(json.dumps(config))
    with pytest.raises(MergeError, match="refusing to merge into a quantised base"):
        merge_adapter(cfg.run_dir / "adapter", tmp_path / "m", base_model=fake_base)
    assert not (tmp_path / "m").exists()


def test_existing_run_needs_resume(trained):
    cfg, _ = trained
    with pytest.raises(TrainError, match="pass --resume"):
        run_training(cfg)
    changed = TrainConfig.from_sources(overrides={**cfg.to_dict(), "learning_rate": 1e-4}, environ={})
    with pytest.raises(TrainError, match="learning_rate: 0.005 -> 0.0001"):
        run_training(changed, resume=True)


def test_no_empty_responses_reach_trl(tmp_path):
    """With trl's own truncation only, the 200-sentence prompt would leave an empty response; ours keeps one."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from transformers import AutoTokenizer

    from orpo_deploy.train.pipeline import load_pairs, prepare_pairs
    from orpo_deploy.train.trainer import build_trainer

    cfg = tiny_config(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    pairs, stats = prepare_pairs(load_pairs(cfg.dataset, "train"), tokenizer, cfg, None)
    trainer, _ = build_trainer(cfg, resolve_model(cfg.model), tokenizer, pairs)  # runs check_tokenized
    for row in trainer.train_dataset:
        for side in ("chosen", "rejected"):
            supervised = [t for t in row[f"{side}_labels"] if t != -100]
            assert len(supervised) >= 2 and len(row[f"{side}_labels"]) <= cfg.max_length
    assert stats.prompts_truncated == 1


def test_merged_folder_has_a_model_card(trained):
    from huggingface_hub import ModelCard

    _, merged = trained
    card = ModelCard.load(merged / "README.md")
    assert "orpo" in card.data.tags and "ORPO lambda (trl's beta) | 0.1" in card.text
    assert "steps run | 3 of batch 4" in card.text
