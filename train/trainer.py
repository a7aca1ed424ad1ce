"""The one module of the training stage that imports trl: trl's ORPOTrainer with a peft LoRA adapter.

trl's ORPO is experimental (``trl.experimental.orpo``); ``tests/train/test_loss.py`` pins its loss to ours and
``tests/train/test_training.py`` runs it, so an upgrade that changes either fails loudly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, TrainerCallback

from train.callbacks import MetricsLogCallback, TokenCountingCollator
from train.config import CPU_AUTO_PRECISION, TrainConfig

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # we know it is experimental: the tests pin it
from trl.experimental.orpo import ORPOConfig, ORPOTrainer  # noqa: E402

logger = logging.getLogger(__name__)


def resolve_precision(cfg: TrainConfig) -> str:
    """'fp32' or 'bf16': the config's choice, or for 'auto' bf16 on CUDA and the measured-faster one on CPU."""
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if torch.cuda.is_available() else CPU_AUTO_PRECISION


def build_trainer(
    cfg: TrainConfig,
    base_dir: Path,
    tokenizer,
    train_dataset: Dataset,
    eval_dataset: Dataset | None = None,
    callbacks: list[TrainerCallback] | None = None,
) -> tuple[ORPOTrainer, MetricsLogCallback]:
    """An ORPOTrainer over string pairs (already chat-formatted and pre-truncated), LoRA on ``base_dir``."""
    precision = resolve_precision(cfg)
    on_cpu = not torch.cuda.is_available()
    # fp32 master weights either way: bf16 runs under autocast, so LoRA updates and the odds ratio keep fp32 sums.
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    args = ORPOConfig(
        output_dir=str(cfg.run_dir / "checkpoints"),
        beta=cfg.beta,
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
        use_cpu=on_cpu,
        bf16=precision == "bf16",
        seed=cfg.seed,
        # trl's default True runs disable_dropout_in_model *after* wrapping in LoRA, so it zeroes lora_dropout
        # too; the config refuses that combination, and by default we keep it off so lora_dropout acts.
        disable_dropout=cfg.disable_dropout,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if eval_dataset is not None else "no",
        eval_steps=cfg.eval_steps,
        report_to="none",
        remove_unused_columns=False,  # trl's pair collator needs the chosen_/rejected_ columns
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every LoRA parameter is used in every step
    )
    trainer = ORPOTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )
    check_tokenized(trainer.train_dataset, cfg.max_length)
    counter = TokenCountingCollator(trainer.data_collator)
    trainer.data_collator = counter  # read when the dataloaders are built, in train()
    metrics_cb = MetricsLogCallback(cfg.run_dir / "metrics.jsonl", counter, world_size=args.world_size)
    trainer.add_callback(metrics_cb)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    logger.info(
        "LoRA r=%d on %s: %s trainable of %s parameters; precision %s on %s, %d process(es)",
        cfg.lora_r,
        cfg.lora_target_modules,
        f"{trainable:,}",
        f"{total:,}",
        precision,
        "cpu" if on_cpu else "cuda",
        args.world_size,
    )
    return trainer, metrics_cb


def check_tokenized(tokenized: Dataset, max_length: int) -> None:
    """Fail if trl's tokenisation left a response without a supervised token or a sequence over max_length.

    Our pre-truncation (train/data_prep.py) should make both impossible; this catches a tokenizer for which the
    token arithmetic does not add up.
    """
    bad = []
    for i, row in enumerate(tokenized):
        for key in ("chosen", "rejected"):
            labels = row[f"{key}_labels"]
            if len(labels) > max_length or not any(t != -100 for t in labels):
                bad.append((i, key, len(labels)))
    if bad:
        raise ValueError(f"{len(bad)} tokenised responses are empty or too long, e.g. (row, side, length) {bad[:3]}")


def train(trainer: ORPOTrainer, resume_from: Path | None = None):
    """Run (or resume) training; returns transformers' TrainOutput."""
    return trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)


def save_adapter(trainer: ORPOTrainer, adapter_dir: Path) -> None:
    """The LoRA adapter (safetensors) and tokenizer; only the main process writes."""
    trainer.save_model(str(adapter_dir))
