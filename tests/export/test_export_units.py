"""Pure pieces of the export stage: retention and the gate, group-size choice, calibration rendering, configs."""

from __future__ import annotations

import pytest

from orpo_deploy.export.calibration import as_messages, calibration_samples, evenly_spaced
from orpo_deploy.export.checks import quantised_layer_widths, resolve_group_size
from orpo_deploy.export.config import ConfigError, ExportConfig, ExportError
from orpo_deploy.export.quality import compare, gate_failures, retention
from orpo_deploy.export.quantize import quantize_config_kwargs


def test_retention_is_a_ratio_and_inverted_for_perplexity():
    assert retention("preference_accuracy", 0.80, 0.76) == pytest.approx(0.95)
    assert retention("instruction_following", 0.40, 0.44) == pytest.approx(1.10)
    # perplexity 10 -> 12.5 keeps 80% of the quality
    assert retention("perplexity", 10.0, 12.5) == pytest.approx(0.80)
    assert retention("instruction_following", 0.0, 0.1) is None  # nothing measurable to lose


def test_gate_names_every_figure_below_the_threshold():
    full = {"perplexity": 10.0, "preference_accuracy": 0.8, "instruction_following": 0.0}
    quant = {"perplexity": 12.5, "preference_accuracy": 0.78, "instruction_following": 0.05}
    comparison = compare(full, quant)
    assert comparison["perplexity"]["delta"] == pytest.approx(2.5)
    assert comparison["instruction_following"]["retention"] is None
    failures = gate_failures(comparison, 0.9)
    assert len(failures) == 1 and failures[0].startswith("perplexity retention 0.800 < 0.9")
    assert gate_failures(comparison, 0.8) == []
    assert len(gate_failures(comparison, 0.99)) == 2
    assert gate_failures(comparison, 0.0) == []


def test_group_size_auto_and_explicit():
    smollm2 = {"q_proj": 576, "o_proj": 576, "up_proj": 576, "down_proj": 1536}
    assert resolve_group_size(None, smollm2) == 64  # 128 does not divide 576
    assert resolve_group_size(32, smollm2) == 32
    assert resolve_group_size(-1, smollm2) == -1
    with pytest.raises(ExportError, match="--group-size 128 does not divide the input width 576 of q_proj"):
        resolve_group_size(128, smollm2)
    with pytest.raises(ExportError, match="none of the group sizes"):
        resolve_group_size(None, {"odd": 100})


def test_layer_widths_come_from_the_linear_layers_not_the_head(tiny_model_dir):
    widths = quantised_layer_widths(tiny_model_dir)
    assert widths["model.layers.0.self_attn.q_proj"] == 128
    assert widths["model.layers.1.mlp.down_proj"] == 256
    assert "lm_head" not in widths and len(widths) == 2 * 7


def test_calibration_samples_are_chat_templated_prompt_plus_chosen(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    samples = calibration_samples(tok, None, size=5, max_tokens=48)
    assert len(samples) == 5
    assert all(len(s["input_ids"]) <= 48 and len(s["attention_mask"]) == len(s["input_ids"]) for s in samples)
    full = calibration_samples(tok, None, size=1, max_tokens=4096)[0]
    text = tok.decode(full["input_ids"])
    assert "<|im_start|>user" in text and "<|im_start|>assistant" in text


def test_evenly_spaced_and_messages():
    assert evenly_spaced(list(range(10)), 3) == [0, 3, 6]
    assert evenly_spaced([1, 2], 5) == [1, 2]
    assert as_messages("Q", "A") == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]


def test_quantize_config_kwargs_for_vllm():
    awq = quantize_config_kwargs("awq", 4, 64)
    assert awq["sym"] is False and awq["desc_act"] is False  # AWQ with zero points
    assert quantize_config_kwargs("gptq", 4, -1)["act_group_aware"] is False
    assert "sym" not in quantize_config_kwargs("gptq", 4, 128)  # GPTQ stays symmetric (vLLM: uint4b8)


def test_config_checks():
    with pytest.raises(ConfigError, match="min-retention"):
        ExportConfig(model="m", output="o", min_retention=1.5)
    with pytest.raises(ConfigError, match="quality-engine"):
        ExportConfig(model="m", output="o", quality_engine="tgi")
    assert ExportConfig(model="m", output="o").min_retention == 0.9
