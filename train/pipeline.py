"""The training recipe: data -> model -> LoRA -> trainer -> train -> adapter -> merge -> manifest.

Layout under ``output_dir``: ``run/`` (train_config.yaml, checkpoints/, metrics.jsonl, plots/, adapter/) and
``merged/`` (the servable model). Under ``accelerate launch`` every process runs this; only the main one writes
the config, manifest, plots and merged folder.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

import yaml
from datasets import Dataset

from orpo_deploy.core.errors import UsageError
from orpo_deploy.core.manifest import library_versions, make_manifest, sha256_file, weights_sha256, write_manifest
from orpo_deploy.core.models import resolve_model
from orpo_deploy.train.config import EVAL_SPLITS, TrainConfig
from orpo_deploy.train.data_prep import TruncationStats, format_pairs, truncate_pairs
from orpo_deploy.train.hf_args import resolve_precision
from orpo_deploy.train.merge import merge_adapter
from orpo_deploy.train.plots import plot_metrics

logger = logging.getLogger(__name__)

CONFIG_FILE = "train_config.yaml"
# Changing these between a checkpoint and its resume would silently train a different model.
FROZEN_ON_RESUME = (
    "model",
    "dataset",
    "max_pairs",
    "chat_template",
    "beta",
    "max_length",
    "max_prompt_length",
    "drop_truncated",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "batch_size",
    "grad_accum",
    "seed",
    "disable_dropout",
)


class TrainError(UsageError):
    """A run that cannot start or continue; the message says what to do."""


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def run_training(
    cfg: TrainConfig,
    resume: bool = False,
    train_pairs: Dataset | None = None,
    eval_pairs: Dataset | None = None,
) -> Path | None:
    """Train, save the adapter, merge; returns the merged folder (None on non-main processes).

    ``train_pairs``/``eval_pairs`` replace loading ``cfg.dataset``/``cfg.eval_dataset`` (tests build data in code).
    """
    started = time.perf_counter()
    checkpoint = prepare_run_dir(cfg, resume)
    base_dir = resolve_model(cfg.model)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    raw = train_pairs if train_pairs is not None else load_pairs(cfg.dataset, "train")
    train_set, train_stats = prepare_pairs(raw, tokenizer, cfg, cfg.max_pairs)
    eval_set = eval_record = generation_eval = None
    if eval_pairs is not None or cfg.eval_dataset is not None:
        split = cfg.eval_dataset if cfg.eval_dataset in EVAL_SPLITS else "test"
        eval_spec = None if cfg.eval_dataset in EVAL_SPLITS else cfg.eval_dataset
        raw_eval = eval_pairs if eval_pairs is not None else load_pairs(eval_spec, split)
        eval_set, eval_stats = prepare_pairs(raw_eval, tokenizer, cfg, cfg.eval_max_pairs)
        eval_record = dataset_record(eval_spec, split, eval_pairs is not None, eval_stats)
        if cfg.eval_generate:
            from orpo_deploy.train.dev_eval import GenerationEval, GenerationEvalError

            try:
                generation_eval = GenerationEval(raw_eval.to_list(), cfg.eval_generate, cfg.eval_max_new_tokens)
            except GenerationEvalError as exc:
                raise TrainError(str(exc)) from None
            eval_record["generate_prompts"] = len(generation_eval.rows)

    from orpo_deploy.train import trainer as orpo  # trl is imported only once the config and data are known good

    trainer, metrics = orpo.build_trainer(
        cfg, base_dir, tokenizer, train_set, eval_set, generation_eval=generation_eval
    )
    output = orpo.train(trainer, checkpoint)
    adapter_dir = cfg.run_dir / "adapter"
    orpo.save_adapter(trainer, adapter_dir)
    if not is_main_process():
        return None
    wall_time = time.perf_counter() - started
    manifest = make_manifest(
        "adapter",
        base_model={"spec": cfg.model, "path": str(base_dir), "weights_sha256": weights_sha256(base_dir)},
        dataset=dataset_record(cfg.dataset, "train", train_pairs is not None, train_stats),
        eval_dataset=eval_record,
        config=cfg.to_dict(),
        precision=resolve_precision(cfg),
        world_size=trainer.args.world_size,
        versions=library_versions("torch", "transformers", "trl", "peft", "accelerate", "datasets"),
        metrics={"train": metrics.last_train_record, "eval": metrics.last_eval_record, "summary": output.metrics},
        train={
            "global_step": output.global_step,
            "resumed_from": str(checkpoint) if checkpoint else None,
            "stopped_early": output.global_step < trainer.state.max_steps,
            "best": best_record(cfg, trainer.state),
            "wall_time_s": round(wall_time, 1),  # this session: load + train + save, not the merge
            "tokens_per_second": round(metrics.tokens_per_second, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
        weights_sha256=weights_sha256(adapter_dir),
    )
    write_manifest(adapter_dir, manifest)
    plot_metrics(cfg.run_dir / "metrics.jsonl", cfg.run_dir / "plots")
    merged = merge_adapter(adapter_dir, cfg.merged_dir)
    logger.info("done in %.0f s: adapter %s, merged model %s", time.perf_counter() - started, adapter_dir, merged)
    return merged


def best_record(cfg: TrainConfig, state) -> dict[str, Any] | None:
    """Which checkpoint the adapter (and merged model) is, when ``best_metric`` chose it."""
    if cfg.best_metric is None:
        return None
    checkpoint = state.best_model_checkpoint
    step = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else None
    return {"metric": f"eval_{cfg.best_metric.removeprefix('eval_')}", "value": state.best_metric, "step": step}


def prepare_run_dir(cfg: TrainConfig, resume: bool) -> Path | None:
    """Check the run folder against ``resume``, save the config; the checkpoint to resume from, if any."""
    run_dir = cfg.run_dir
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    saved = run_dir / CONFIG_FILE
    if not resume:
        if checkpoint is not None or (run_dir / "metrics.jsonl").exists():
            raise TrainError(f"{run_dir} already holds a run: pass --resume to continue it, or another output_dir")
    elif saved.is_file():
        before = yaml.safe_load(saved.read_text()) or {}
        changed = [k for k in FROZEN_ON_RESUME if k in before and before[k] != getattr(cfg, k)]
        if changed:
            diffs = ", ".join(f"{k}: {before[k]!r} -> {getattr(cfg, k)!r}" for k in changed)
            raise TrainError(f"--resume with a different config ({diffs}); use the run's {saved}")
    if resume and checkpoint is None:
        logger.warning("--resume: no complete checkpoint in %s, starting from step 0", run_dir / "checkpoints")
    elif checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return checkpoint


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` that was completely written (its trainer_state.json, saved last, parses)."""
    if not checkpoints_dir.is_dir():
        return None
    candidates = [p for p in checkpoints_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for path in sorted(candidates, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return path
        except (OSError, json.JSONDecodeError):
            logger.warning("skipping incomplete checkpoint %s (killed while saving?)", path)
    return None


def prepare_pairs(raw: Dataset, tokenizer, cfg: TrainConfig, limit: int | None) -> tuple[Dataset, TruncationStats]:
    if limit is not None and len(raw) > limit:
        raw = raw.select(range(limit))
    formatted = format_pairs(raw, tokenizer, chat_template=cfg.chat_template)
    return truncate_pairs(formatted, tokenizer, cfg.max_length, cfg.max_prompt_length, cfg.drop_truncated)


def load_pairs(spec: str | None, split: str) -> Dataset:
    """Preference pairs through the data stage's loader (None = our committed split)."""
    from orpo_deploy.data.load import load_preference_dataset

    return load_preference_dataset(spec, split=split)


def dataset_record(spec: str | None, split: str, in_memory: bool, stats: TruncationStats) -> dict[str, Any]:
    """Where the pairs came from, with sha256, and what pre-truncation did to them."""
    record: dict[str, Any] = {"spec": spec, "split": split, "pairs": stats.pairs_out, "truncation": stats.as_dict()}
    if in_memory:
        record["path"] = None  # built in code (tests)
        return record
    from orpo_deploy.data.load import default_split_path

    path = Path(spec).expanduser() if spec is not None else default_split_path(split)
    record["path"] = str(path.resolve())
    if path.is_file():
        record["sha256"] = sha256_file(path)
    elif path.is_dir():
        record["sha256"] = {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return record
