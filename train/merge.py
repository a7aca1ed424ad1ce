"""Merge a LoRA adapter into its base model and save a plain, servable HF folder (no trl here).

The merge happens in the base's own float dtype (bf16 for the bundled SmolLM2), never into a quantised base:
merging into 4-bit weights would round the update away or fail, so it is refused. The output folder gets
safetensors, the tokenizer with its chat template, the generation config and ``orpo_manifest.json`` (the
training manifest of the adapter plus the merged weights' sha256). It is written through ``atomic_output_dir``,
and a second run with the same adapter leaves an up-to-date folder alone, so this is safe to run twice.

Standalone: ``python -m orpo_deploy.train.merge RUN_DIR/adapter OUT_DIR [--base MODEL_DIR]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from orpo_deploy.core.errors import UsageError
from orpo_deploy.core.manifest import atomic_output_dir, make_manifest, read_manifest, weights_sha256, write_manifest
from orpo_deploy.core.model_card import train_card, write_card

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


class MergeError(UsageError):
    """An adapter or base model that cannot be merged; the message says why."""


def merge_adapter(
    adapter_dir: str | Path,
    out_dir: str | Path,
    base_model: str | Path | None = None,
    dtype: str | None = None,
) -> Path:
    """Merge ``adapter_dir`` into its base (from the adapter's manifest, else its adapter_config) -> ``out_dir``.

    ``dtype`` (e.g. "float32") overrides the base's float dtype. In bf16 a short run's update can fall below the
    weights' rounding step: after 3 steps on SmolLM2, bf16-merged logits were 0.56 (mean abs) from the adapter's.
    """
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        raise MergeError(f"{adapter_dir} is not a LoRA adapter folder (no {ADAPTER_CONFIG})")
    train_manifest = read_manifest(adapter_dir) or {}
    base_dir = _base_dir(adapter_dir, train_manifest, base_model)
    adapter_sha = weights_sha256(adapter_dir)

    config = AutoConfig.from_pretrained(base_dir)
    if getattr(config, "quantization_config", None):
        method = dict(config.quantization_config).get("quant_method", "?")
        raise MergeError(f"refusing to merge into a quantised base ({base_dir}, {method}); use the float model")
    dtype = _float_dtype(dtype or config)
    existing = read_manifest(out_dir) if out_dir.is_dir() else None
    if (
        existing
        and existing.get("adapter_sha256") == adapter_sha
        and existing.get("merged_dtype") == str(dtype).removeprefix("torch.")
        and existing.get("weights_sha256") == weights_sha256(out_dir)
    ):
        logger.info("%s is already the merge of this adapter; nothing to do", out_dir)
        return out_dir
    recorded = train_manifest.get("base_model", {}).get("weights_sha256")
    if recorded is not None and recorded != weights_sha256(base_dir):
        raise MergeError(f"base model {base_dir} differs from the one the adapter was trained on (sha256 mismatch)")

    logger.info("merging %s into %s (%s)", adapter_dir, base_dir, dtype)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.to(dtype)  # peft keeps adapter math in fp32; the merged weights go back to the base dtype
    tokenizer_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_src)
    if (base_dir / "generation_config.json").is_file():
        merged.generation_config = GenerationConfig.from_pretrained(base_dir)

    with atomic_output_dir(out_dir, overwrite=True) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        fields: dict[str, Any] = {k: v for k, v in train_manifest.items() if k not in ("schema_version", "stage")}
        fields.pop("created_at", None)
        fields.update(
            adapter_dir=str(adapter_dir.resolve()),
            adapter_sha256=adapter_sha,
            merged_dtype=str(dtype).removeprefix("torch."),
            weights_sha256=weights_sha256(tmp),
        )
        fields.setdefault("base_model", {"path": str(base_dir), "weights_sha256": weights_sha256(base_dir)})
        manifest = make_manifest("train", **fields)
        write_manifest(tmp, manifest)
        write_card(tmp, train_card(manifest))  # README.md: what a user of the folder needs to know
        for path in tmp.iterdir():  # transformers writes model.safetensors 0600; servers may run as another user
            path.chmod(0o644)
    logger.info("merged model written to %s", out_dir)
    return out_dir


def _base_dir(adapter_dir: Path, train_manifest: dict[str, Any], base_model: str | Path | None) -> Path:
    if base_model is not None:
        candidate = Path(base_model)
    elif train_manifest.get("base_model", {}).get("path"):
        candidate = Path(train_manifest["base_model"]["path"])
    else:
        adapter_config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
        candidate = Path(adapter_config.get("base_model_name_or_path") or "")
    if not (candidate / "config.json").is_file():
        raise MergeError(f"base model folder {candidate} not found (pass --base / base_model=)")
    return candidate


def _float_dtype(config_or_name) -> torch.dtype:
    if isinstance(config_or_name, str):
        dtype = config_or_name
    else:
        dtype = getattr(config_or_name, "dtype", None) or getattr(config_or_name, "torch_dtype", None) or torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise MergeError(f"base model dtype {dtype!r} is not a float dtype; refusing to merge")
    return dtype


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orpo_deploy.train.merge", description=__doc__.splitlines()[0])
    parser.add_argument("adapter_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--base", default=None, help="base model folder (default: the one the adapter records)")
    parser.add_argument("--dtype", default=None, help="float dtype of the merged weights (default: the base's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        merge_adapter(args.adapter_dir, args.out_dir, args.base, args.dtype)
    except (MergeError, OSError) as exc:
        print(f"merge: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
