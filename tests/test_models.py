import json

import pytest

from orpo_deploy.core.manifest import read_manifest, weights_sha256
from orpo_deploy.core.models import GGUF_SHA256, ModelError, resolve_model


def test_bundled_model_is_a_plain_hf_folder(bundled_model_dir):
    names = {p.name for p in bundled_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    config = json.loads((bundled_model_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    manifest = read_manifest(bundled_model_dir)
    assert manifest["source"]["sha256"] == GGUF_SHA256
    assert manifest["weights_sha256"] == weights_sha256(bundled_model_dir)
    assert resolve_model(None) == bundled_model_dir == resolve_model("smollm2-135m-instruct")


def test_tiny_model_has_smollm2_tokenizer_and_chat_template(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n") and len(tok) == 49152
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.head_dim == 32 and sum(p.numel() for p in model.parameters()) < 10_000_000


@pytest.mark.parametrize("spec", ["/no/such/folder", "./relative/missing", "not-a-hub-id"])
def test_resolve_model_rejects_missing_paths(spec):
    with pytest.raises(ModelError):
        resolve_model(spec)


def test_resolve_model_rejects_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        resolve_model(tmp_path)


def test_resolve_model_refuses_hub_ids_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        resolve_model("someone/some-model")
