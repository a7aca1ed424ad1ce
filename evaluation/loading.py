"""Load a model folder for scoring: fp32 on CPU, so log-prob comparisons are not decided by bf16 rounding."""

from __future__ import annotations

from pathlib import Path


def load_model(spec: str) -> tuple[Path, object, object]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from orpo_deploy.core.models import resolve_model

    model_dir = resolve_model(spec)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    if torch.cuda.is_available():
        model.to("cuda")
    model.eval()
    return model_dir, model, tokenizer
