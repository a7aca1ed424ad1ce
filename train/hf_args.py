"""What every trainer here (ORPO, SFT, DPO) is given alike: precision, the LoRA adapter, the TrainingArguments.

Kept free of trl so that the ORPO module and the baselines module each stay the one importer of their trl trainers,
and so that an equal-budget comparison (compare/) cannot drift: a setting changed here changes every arm.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig

from orpo_deploy.train.checkpointing import checkpointing_kwargs
from orpo_deploy.train.config import CPU_AUTO_PRECISION, TrainConfig


def resolve_precision(cfg: TrainConfig) -> str:
    """'fp32' or 'bf16': the config's choice, or for 'auto' bf16 on CUDA and the measured-faster one on CPU."""
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if torch.cuda.is_available() else CPU_AUTO_PRECISION


def lora_config(cfg: TrainConfig) -> LoraConfig:
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def training_arguments(cfg: TrainConfig) -> dict[str, Any]:
    """transformers TrainingArguments keywords shared by ORPOConfig, SFTConfig and DPOConfig."""
    return dict(
        output_dir=str(cfg.run_dir / "checkpoints"),
        max_length=cfg.max_length,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs=checkpointing_kwargs(cfg.checkpoint_policy),
        use_cpu=not torch.cuda.is_available(),
        bf16=resolve_precision(cfg) == "bf16",
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="no",
        report_to=cfg.report_to,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every LoRA parameter is used in every step
    )
