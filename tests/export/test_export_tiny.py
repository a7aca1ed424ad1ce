"""GPTQ and AWQ exports of the tiny random model: a servable folder, a chained manifest, and the quality gate.

Each export runs once per module (~1 min on 2 shared cores, most of it imports and the quality check). vLLM can only
run the 4-bit folders where its kernels for them exist (AVX-512 CPUs, CUDA): elsewhere those tests skip and say
why, and the folders are still checked to load and answer through transformers + gptqmodel's torch kernels.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from orpo_deploy.core.manifest import MANIFEST_NAME, read_manifest, sha256_file
from orpo_deploy.export.cli import main as export_main
from orpo_deploy.export.quality import vllm_serves_4bit

FAST_QUALITY = ["--eval-limit", "4", "--eval-max-new-tokens", "8", "--calibration-size", "16"]
CHAT = [{"role": "user", "content": "Name three colours."}]
VLLM_OK, VLLM_WHY = vllm_serves_4bit()
# each export takes ~1 min on 2 shared cores (a spawned quantiser process, then the quality check)
pytestmark = pytest.mark.slow


def export(tiny_model_dir, out, method: str, group_size: int, *extra: str) -> int:
    argv = ["--model", str(tiny_model_dir), "--method", method, "--group-size", str(group_size), *FAST_QUALITY]
    return export_main([*argv, "--min-retention", "0", *extra, "--output", str(out)])


@pytest.fixture(scope="module")
def gptq_dir(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-gptq"
    assert export(tiny_model_dir, out, "gptq", 32) == 0
    return out


@pytest.fixture(scope="module")
def awq_dir(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-awq"
    assert export(tiny_model_dir, out, "awq", 64) == 0
    return out


def test_gptq_folder_has_what_a_server_needs(gptq_dir, tiny_model_dir):
    names = {p.name for p in gptq_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        MANIFEST_NAME,
        "README.md",
    } <= names
    assert "chat_template.jinja" in names or "chat_template" in (gptq_dir / "tokenizer_config.json").read_text()
    quant = json.loads((gptq_dir / "config.json").read_text())["quantization_config"]
    assert (quant["quant_method"], quant["bits"], quant["group_size"], quant["sym"]) == ("gptq", 4, 32, True)
    # generation defaults are the input's, not the sampling ones gptqmodel's save writes
    gen = json.loads((gptq_dir / "generation_config.json").read_text())
    assert gen == json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert not list(gptq_dir.parent.glob(".tiny-gptq.tmp-*"))


def test_manifest_is_chained_to_the_input(gptq_dir, tiny_model_dir):
    manifest = read_manifest(gptq_dir)
    parent = manifest["parent"]
    assert parent["manifest"] == read_manifest(tiny_model_dir)
    assert parent["manifest_sha256"] == sha256_file(tiny_model_dir / MANIFEST_NAME)
    assert parent["weights_sha256"] == manifest["parent"]["manifest"]["weights_sha256"]
    assert manifest["weights_sha256"]["model.safetensors"] == sha256_file(gptq_dir / "model.safetensors")
    assert (manifest["stage"], manifest["method"], manifest["bits"], manifest["group_size"]) == (
        "export",
        "gptq",
        4,
        32,
    )
    assert manifest["calibration"]["size"] == 16
    sizes = manifest["size_on_disk_bytes"]
    assert 0 < sizes["output"] < sizes["input"]
    assert manifest["wall_time_s"]["total"] >= manifest["wall_time_s"]["quality"] > 0
    figures = manifest["quality"]["figures"]
    assert set(figures) == {"perplexity", "preference_accuracy", "instruction_following"}
    ppl = figures["perplexity"]
    assert math.isclose(ppl["retention"], ppl["full"] / ppl["quantized"])
    assert manifest["quality"]["engine"] in ("vllm", "hf")


def test_quantised_model_stays_close_to_the_full_one_and_answers(gptq_dir, awq_dir):
    import torch

    from orpo_deploy.evaluation.generate import generate_hf
    from orpo_deploy.evaluation.loading import load_model

    _, full, tok = load_model("tiny-smollm2")
    ids = tok.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        want = full(ids).logits[0].flatten()
    for folder in (gptq_dir, awq_dir):
        _, model, _ = load_model(str(folder))
        assert any("Quant" in type(m).__name__ or "Aten" in type(m).__name__ for m in model.modules())
        with torch.no_grad():
            got = model(ids).logits[0].flatten()
        assert torch.corrcoef(torch.stack([want, got]))[0, 1] > 0.99, folder.name
        answer = generate_hf(model, tok, [CHAT], max_new_tokens=8, batch_size=1)
        assert isinstance(answer[0].text, str) and answer[0].tokens <= 8


def test_awq_keeps_zero_points(awq_dir):
    quant = json.loads((awq_dir / "config.json").read_text())["quantization_config"]
    assert (quant["quant_method"], quant["bits"], quant["group_size"]) == ("awq", 4, 64)
    assert quant["zero_point"] is True


@pytest.mark.integration
@pytest.mark.skipif(not VLLM_OK, reason=f"vLLM cannot run 4-bit weights on this host: {VLLM_WHY}")
@pytest.mark.parametrize("which", ["gptq_dir", "awq_dir"])
def test_vllm_loads_the_export_and_answers_a_chat_request(which, request):
    from orpo_deploy.evaluation.generate import generate_vllm

    folder = request.getfixturevalue(which)
    answers = generate_vllm(str(folder), [CHAT], max_new_tokens=8)
    assert len(answers) == 1 and isinstance(answers[0].text, str) and answers[0].finish_reason in ("stop", "length")


def test_quality_gate_refuses_a_degraded_export(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """A random model cannot be made measurably worse by a bad 4-bit config (measured: per-channel groups with
    one calibration sample keep its perplexity within 0.1%), so the quantised model's measured figures are
    degraded on their way to the gate; everything else, quantisation and evaluation included, runs for real."""
    import orpo_deploy.export.pipeline as export_pipeline

    real = export_pipeline.model_figures

    def degraded(model_dir, cfg, engine):
        figures = real(model_dir, cfg, engine)
        return {**figures, "perplexity": figures["perplexity"] * 2.0}

    monkeypatch.setattr(export_pipeline, "model_figures", degraded)
    out = tmp_path / "bad-gptq"
    argv = ["--model", str(tiny_model_dir), "--method", "gptq", "--group-size", "-1", *FAST_QUALITY]
    code = export_main([*argv, "--calibration-size", "1", "--min-retention", "0.9", "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert re.match(r"orpo-export: failed: quality gate: perplexity retention 0\.(49|50)\d < 0\.9 ", err), err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temp folder left behind either
