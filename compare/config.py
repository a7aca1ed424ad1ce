"""The typed config of ``orpo-compare``: YAML < command line (``--set key=value``).

One budget for every arm: each training stage makes ``epochs`` passes over the same ``pairs`` pairs with the same
batch, LoRA, lengths, schedule and precision. ORPO sees each pair once per pass; SFT sees each chosen response
once; DPO sees each pair once. So SFT -> DPO makes twice the passes of ORPO: that is the cost the comparison
measures. Only the learning rate (and beta) differ per arm, because the objectives differ in scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# train.config's YAML reader, key check and type coercion, so both stages read config files alike.
from orpo_deploy.core.config import check_keys, coerce_fields, option, read_yaml
from orpo_deploy.train.config import PRECISIONS, ConfigError, TrainConfig

ENGINES = ("vllm", "hf")
# Save only the end-of-training checkpoint (trl saves at the last step with save_strategy "steps"): equal in all arms.
NO_INTERMEDIATE_SAVES = 1_000_000


@dataclass
class CompareConfig:
    """ORPO against SFT -> DPO and SFT alone, same base model, data, LoRA and budget."""

    model: str = option("Base model: a bundled name, 'tiny-smollm2' or an HF folder.", default="smollm2-135m-instruct")
    dataset: str | None = option(
        "Training pairs (JSONL/Parquet/folder). Empty = our committed train split.", default=None
    )
    pairs: int = option("The budget: the first N training pairs, the same for every arm.", default=240)
    epochs: int = option("Passes over the pairs, per training stage.", default=1)
    output: str = option(
        "Report folder (report.md, report.json, PNGs, evals, manifest; replaced).", default="runs/compare"
    )
    work_dir: str | None = option(
        "Scratch folder for the runs and merged models (default OUTPUT.work); wiped at the start of a run.",
        default=None,
    )
    # --- shared training settings (every arm) ---
    max_length: int = option("Max tokens of prompt + response.", default=384)
    max_prompt_length: int = option("Max prompt tokens (pre-truncation keeps the tail).", default=128)
    lora_r: int = option("LoRA rank.", default=16)
    lora_alpha: int = option("LoRA alpha.", default=32)
    lora_dropout: float = option("LoRA dropout.", default=0.05)
    lora_target_modules: list[str] | str = option("'all-linear' or a list of module names.", default="all-linear")
    batch_size: int = option("Pairs (or SFT examples) per forward pass.", default=4)
    grad_accum: int = option("Gradient accumulation steps.", default=2)
    warmup_ratio: float = option("Warm-up share of the steps.", default=0.05)
    lr_scheduler_type: str = option("transformers scheduler name.", default="linear")
    gradient_checkpointing: bool = option("Recompute activations in backward.", default=False)
    precision: str = option("'auto' (bf16 on CUDA, fp32 on CPU), 'fp32' or 'bf16'.", default="auto")
    seed: int = option("Seed for LoRA init and data order.", default=42)
    logging_steps: int = option("Log a loss-curve point every N steps.", default=2)
    # --- per-arm objective settings ---
    orpo_learning_rate: float = option("ORPO peak lr (orpo-train's default for LoRA).", default=2e-4)
    sft_learning_rate: float = option("SFT peak lr (the same NLL term as ORPO's, so the same lr).", default=2e-4)
    dpo_learning_rate: float = option("DPO peak lr (LoRA DPO wants far less than NLL training).", default=5e-5)
    orpo_beta: float = option("ORPO's lambda: weight of the odds-ratio term.", default=0.1)
    dpo_beta: float = option("DPO's beta: strength of the pull towards the reference.", default=0.1)
    # --- evaluation (the same for the base model and every arm) ---
    eval_limit: int | None = option("Evaluate an evenly spaced subset of N held-out pairs. Empty = all.", default=64)
    eval_max_new_tokens: int = option("Max new tokens per generated answer.", default=256)
    eval_engine: str = option("Generation engine: 'vllm' (fast on CPU) or 'hf'.", default="vllm")
    eval_batch_size: int = option("Batch size of scoring and HF generation.", default=8)

    def __post_init__(self) -> None:
        coerce_fields(self)
        for name in ("pairs", "epochs", "batch_size", "grad_accum", "logging_steps", "eval_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(f"eval_limit must be >= 1 or empty, got {self.eval_limit}")
        for name in ("orpo_learning_rate", "sft_learning_rate", "dpo_learning_rate", "dpo_beta"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.orpo_beta > 0:
            raise ConfigError(f"orpo_beta must be > 0 (0 would make ORPO plain SFT), got {self.orpo_beta}")
        if self.eval_engine not in ENGINES:
            raise ConfigError(f"eval_engine must be one of {', '.join(ENGINES)}; got {self.eval_engine!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if not self.output:
            raise ConfigError("output must not be empty")
        if Path(self.work_path).resolve() == Path(self.output).resolve():
            raise ConfigError("work_dir must differ from output")
        self.arm_config("orpo", Path("."))  # TrainConfig checks the shared settings (lengths, LoRA, dataset path)

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(f"{self.output}.work")

    def arm_config(self, stage: str, out_dir: Path, model: str | None = None) -> TrainConfig:
        """The orpo-train config of one training stage ('orpo', 'sft' or 'dpo'), writing under ``out_dir``."""
        learning_rate = {"orpo": self.orpo_learning_rate, "sft": self.sft_learning_rate, "dpo": self.dpo_learning_rate}
        if stage not in learning_rate:
            raise ConfigError(f"unknown stage {stage!r}")
        shared = {name: getattr(self, name) for name in SHARED_WITH_TRAIN}
        overrides = dict(
            shared,
            model=model or self.model,
            max_pairs=self.pairs,
            num_train_epochs=float(self.epochs),
            output_dir=str(out_dir),
            learning_rate=learning_rate[stage],
            beta=self.orpo_beta,  # read by ORPO only; DPO gets dpo_beta explicitly
            save_steps=NO_INTERMEDIATE_SAVES,
            save_total_limit=1,
        )
        return TrainConfig.from_sources(overrides=overrides, environ={})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_sources(cls, yaml_path: str | None = None, overrides: Mapping[str, Any] | None = None) -> CompareConfig:
        """Defaults < YAML file < ``overrides`` (the command line)."""
        values: dict[str, Any] = {}
        if yaml_path is not None:
            values.update(read_yaml(Path(yaml_path)))
            check_keys(values, str(yaml_path), FIELD_NAMES)
        check_keys(overrides or {}, "command line", FIELD_NAMES)
        values.update(overrides or {})
        return cls(**values)


FIELD_NAMES = [f.name for f in dataclasses.fields(CompareConfig)]
# Fields that mean the same here as in orpo-train's TrainConfig: copied into every arm's config by name.
SHARED_WITH_TRAIN = tuple(
    f.name for f in dataclasses.fields(CompareConfig) if f.name in {g.name for g in dataclasses.fields(TrainConfig)}
)
