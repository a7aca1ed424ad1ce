"""The one module that imports trl's SFTTrainer and DPOTrainer: the baselines ORPO is compared against.

Both take the same ``TrainConfig`` as ORPO (LoRA, lengths, batch, precision, schedule) and the same pre-truncated
string pairs (``train.pipeline.prepare_pairs``), so the arms differ only in the objective:

- SFT: prompt + chosen, loss on the completion tokens only (trl's prompt/completion format).
- DPO: a *new* LoRA adapter on the given (SFT-merged) model; the reference is the same model with the adapter
  disabled (``ref_model=None`` with peft), so no second copy of the weights is loaded, and reference log-probs
  are computed on the fly (``precompute_ref_log_probs=False``), as a LoRA user would run it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from orpo_deploy.train.callbacks import MetricsLogCallback, TokenCountingCollator
from orpo_deploy.train.config import TrainConfig
from orpo_deploy.train.hf_args import lora_config, training_arguments

logger = logging.getLogger(__name__)

# trl's SFT and DPO batches carry one attention mask (DPO's stacks prompt+chosen over prompt+rejected).
BATCH_MASK_KEYS = ("attention_mask",)


def build_sft_trainer(
    cfg: TrainConfig, base_dir: Path, tokenizer, pairs: Dataset
) -> tuple[SFTTrainer, MetricsLogCallback]:
    """SFT with LoRA on ``prompt + chosen`` of chat-formatted, pre-truncated pairs; loss on the completion only."""
    data = pairs.map(lambda r: {"prompt": r["prompt"], "completion": r["chosen"]}, remove_columns=pairs.column_names)
    args = SFTConfig(**training_arguments(cfg), completion_only_loss=True, packing=False)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora_config(cfg)
    )
    return trainer, _count_tokens(trainer, cfg)


def build_dpo_trainer(
    cfg: TrainConfig, base_dir: Path, tokenizer, pairs: Dataset, beta: float
) -> tuple[DPOTrainer, MetricsLogCallback]:
    """DPO (sigmoid loss, ``beta``) with a new LoRA on ``base_dir``; reference = the adapter-disabled model."""
    args = DPOConfig(
        **training_arguments(cfg),
        beta=beta,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=False,
        # trl's default True would also zero lora_dropout (as with ORPO, see train.config)
        disable_dropout=cfg.disable_dropout,
    )
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=pairs,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
    )
    if trainer.ref_model is not None:  # would mean a second copy of the weights, which the comparison excludes
        raise RuntimeError("DPOTrainer loaded a separate reference model; expected the adapter-disabled policy")
    return trainer, _count_tokens(trainer, cfg)


def _count_tokens(trainer, cfg: TrainConfig) -> MetricsLogCallback:
    """Wrap the collator to count tokens and log every event to ``metrics.jsonl``, as the ORPO trainer does."""
    counter = TokenCountingCollator(trainer.data_collator, keys=BATCH_MASK_KEYS)
    trainer.data_collator = counter  # read when the dataloader is built, in train()
    metrics = MetricsLogCallback(cfg.run_dir / "metrics.jsonl", counter, world_size=trainer.args.world_size)
    trainer.add_callback(metrics)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    logger.info("%s: LoRA r=%d, %s trainable of %s", type(trainer).__name__, cfg.lora_r, f"{trainable:,}", f"{total:,}")
    return metrics
