"""One training stage of ``orpo-compare``, run in its own process so its peak memory is its own.

    python -m orpo_deploy.compare.stage SPEC.json

SPEC holds ``stage`` ('orpo', 'sft' or 'dpo'), ``train`` (the orpo-train config of the stage), ``dpo_beta`` and
``result`` (where to write the figures). ORPO runs the orpo-train recipe itself (``train.pipeline``); SFT and DPO
run the same recipe with trl's SFTTrainer/DPOTrainer (``train.baselines``). Each stage is load -> train -> save
the adapter -> merge, merged in fp32 so that DPO starts from the exact SFT model. Figures: in-process wall time,
the training loop's time, tokens/s, peak RSS (ru_maxrss) and, on CUDA, max allocated memory.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STAGES = ("orpo", "sft", "dpo")
MERGE_DTYPE = "float32"


def run_stage(stage: str, train: dict[str, Any], dpo_beta: float) -> dict[str, Any]:
    """Run one stage; returns its figures (the caller adds nothing but the process wall time)."""
    started = time.perf_counter()
    from orpo_deploy.train.config import TrainConfig

    cfg = TrainConfig(**train)
    if stage == "orpo":
        from orpo_deploy.train.pipeline import run_training

        merged = run_training(cfg)
    elif stage in ("sft", "dpo"):
        merged = run_baseline(stage, cfg, dpo_beta)
    else:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    wall = time.perf_counter() - started
    adapter_manifest = json.loads((cfg.run_dir / "adapter" / "orpo_manifest.json").read_text())
    summary = _train_summary(cfg.run_dir / "metrics.jsonl")
    return {
        "stage": stage,
        "wall_s": round(wall, 2),
        "train_loop_s": round(summary["train_runtime"], 2),
        "tokens_per_second": round(summary["tokens_per_second_session"], 1),
        "global_step": summary["step"],
        "pairs": adapter_manifest["dataset"]["pairs"],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cuda_max_allocated_mib": _cuda_max_allocated_mib(),
        "merged_dir": str(merged),
        "adapter_dir": str(cfg.run_dir / "adapter"),
        "metrics_path": str(cfg.run_dir / "metrics.jsonl"),
    }


def run_baseline(stage: str, cfg, dpo_beta: float) -> Path:
    """The orpo-train recipe with trl's SFT or DPO trainer: data -> trainer -> train -> adapter -> merge."""
    from transformers import AutoTokenizer

    from orpo_deploy.core.manifest import library_versions, make_manifest, weights_sha256, write_manifest
    from orpo_deploy.core.models import resolve_model
    from orpo_deploy.train import baselines
    from orpo_deploy.train.merge import merge_adapter
    from orpo_deploy.train.pipeline import dataset_record, load_pairs, prepare_pairs, prepare_run_dir

    prepare_run_dir(cfg, resume=False)
    base_dir = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pairs, stats = prepare_pairs(load_pairs(cfg.dataset, "train"), tokenizer, cfg, cfg.max_pairs)
    if stage == "sft":
        trainer, metrics = baselines.build_sft_trainer(cfg, base_dir, tokenizer, pairs)
    else:
        trainer, metrics = baselines.build_dpo_trainer(cfg, base_dir, tokenizer, pairs, dpo_beta)
    output = trainer.train()
    adapter_dir = cfg.run_dir / "adapter"
    trainer.save_model(str(adapter_dir))
    manifest = make_manifest(
        "adapter",
        objective=stage,
        base_model={"spec": cfg.model, "path": str(base_dir), "weights_sha256": weights_sha256(base_dir)},
        dataset=dataset_record(cfg.dataset, "train", False, stats),
        config=cfg.to_dict(),
        dpo_beta=dpo_beta if stage == "dpo" else None,
        versions=library_versions("torch", "transformers", "trl", "peft"),
        metrics={"train": metrics.last_train_record, "summary": output.metrics},
        train={"global_step": output.global_step, "tokens_per_second": round(metrics.tokens_per_second, 1)},
        weights_sha256=weights_sha256(adapter_dir),
    )
    write_manifest(adapter_dir, manifest)
    return merge_adapter(adapter_dir, cfg.merged_dir, dtype=MERGE_DTYPE)


def _train_summary(metrics_path: Path) -> dict[str, Any]:
    """The end-of-training record of metrics.jsonl (train_runtime, tokens/s of the session, last step)."""
    from orpo_deploy.train.callbacks import read_metrics

    for record in reversed(read_metrics(metrics_path)):
        if "train_runtime" in record:
            return record
    raise RuntimeError(f"{metrics_path} has no end-of-training record")


def _cuda_max_allocated_mib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("compare.stage: error: usage: python -m orpo_deploy.compare.stage SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    result = run_stage(spec["stage"], spec["train"], spec["dpo_beta"])
    Path(spec["result"]).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
