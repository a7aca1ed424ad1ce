"""The one module of the training stage that imports trl: trl's ORPOTrainer with a peft LoRA adapter.

trl's ORPO is experimental (``trl.experimental.orpo``); ``tests/train/test_loss.py`` pins its loss to ours,
``tests/train/test_lean_orpo.py`` pins our lean forward to its forward and ``tests/train/test_training.py`` runs it,
so an upgrade that changes any of them fails loudly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from datasets import Dataset
from torch import nn
from transformers import AutoModelForCausalLM, EarlyStoppingCallback, TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled

from orpo_deploy.train.callbacks import MetricsLogCallback, TokenCountingCollator
from orpo_deploy.train.config import TrainConfig
from orpo_deploy.train.dev_eval import GenerationEval
from orpo_deploy.train.hf_args import lora_config, resolve_precision, training_arguments
from orpo_deploy.train.lean_logps import LeanForwardError, orpo_sequence_logps
from orpo_deploy.train.lora_dropout import fuse_lora_dropout

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # we know it is experimental: the tests pin it
from trl.experimental.orpo import ORPOConfig, ORPOTrainer  # noqa: E402

logger = logging.getLogger(__name__)


def build_trainer(
    cfg: TrainConfig,
    base_dir: Path,
    tokenizer,
    train_dataset: Dataset,
    eval_dataset: Dataset | None = None,
    callbacks: list[TrainerCallback] | None = None,
    generation_eval: GenerationEval | None = None,
) -> tuple[ORPOTrainer, MetricsLogCallback]:
    """An ORPOTrainer over string pairs (already chat-formatted and pre-truncated), LoRA on ``base_dir``.

    ``generation_eval`` adds dev instruction following to every evaluation; with ``cfg.best_metric`` the best
    checkpoint is reloaded at the end (so the saved adapter is that one), and ``early_stopping_patience`` stops early.
    """
    precision = resolve_precision(cfg)
    on_cpu = not torch.cuda.is_available()
    # fp32 master weights either way: bf16 runs under autocast, so LoRA updates and the odds ratio keep fp32 sums.
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    args = ORPOConfig(
        **{
            **training_arguments(cfg),
            "eval_strategy": "steps" if eval_dataset is not None else "no",
            "eval_steps": cfg.eval_steps,
            **best_checkpoint_arguments(cfg),
        },
        beta=cfg.beta,
        # trl's default True runs disable_dropout_in_model *after* wrapping in LoRA, so it zeroes lora_dropout
        # too; the config refuses that combination, and by default we keep it off so lora_dropout acts.
        disable_dropout=cfg.disable_dropout,
        remove_unused_columns=False,  # trl's pair collator needs the chosen_/rejected_ columns
    )
    lean = {"logit_chunk_size": cfg.logit_chunk_size} if cfg.orpo_forward == "lean" else {}
    callbacks = list(callbacks or [])
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = (LeanORPOTrainer if lean else DevORPOTrainer)(
        **lean,
        generation_eval=generation_eval,
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        callbacks=callbacks,
    )
    check_tokenized(trainer.train_dataset, cfg.max_length)
    counter = TokenCountingCollator(trainer.data_collator)
    trainer.data_collator = counter  # read when the dataloaders are built, in train()
    metrics_cb = MetricsLogCallback(cfg.run_dir / "metrics.jsonl", counter, world_size=args.world_size)
    trainer.add_callback(metrics_cb)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    logger.info(
        "LoRA r=%d on %s: %s trainable of %s parameters; precision %s on %s, %d process(es), %s ORPO forward",
        cfg.lora_r,
        cfg.lora_target_modules,
        f"{trainable:,}",
        f"{total:,}",
        precision,
        "cpu" if on_cpu else "cuda",
        args.world_size,
        "lean" if getattr(trainer, "lean", False) else "trl's",
    )
    return trainer, metrics_cb


def best_checkpoint_arguments(cfg: TrainConfig) -> dict:
    """TrainingArguments that keep (and reload at the end) the checkpoint with the best ``cfg.best_metric``."""
    if cfg.best_metric is None:
        return {}
    metric = cfg.best_metric.removeprefix("eval_")
    return {
        "metric_for_best_model": metric,
        "greater_is_better": not metric.endswith("loss"),
        "load_best_model_at_end": True,
    }


class DevORPOTrainer(ORPOTrainer):
    """trl's ORPOTrainer whose evaluations also generate on dev prompts (``train/dev_eval.py``), when given one.

    The figures join the evaluation's metrics before transformers logs them and before callbacks see them, so
    ``metric_for_best_model`` and early stopping can use them like any eval metric.
    """

    def __init__(self, *args, generation_eval: GenerationEval | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.generation_eval = generation_eval

    def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
        output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        if self.generation_eval is not None:
            model = self.accelerator.unwrap_model(self.model)
            scores = self.generation_eval(model, self.processing_class)
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
            logger.info("step %d dev: %s", self.state.global_step, {k: round(v, 3) for k, v in scores.items()})
        return output


class LeanORPOTrainer(DevORPOTrainer):
    """trl's ORPOTrainer whose forward never holds the ``[2B, T, V]`` logits (``train/lean_logps.py``).

    The (possibly DDP-wrapped) model runs its own forward, so gradient sync and hooks stay intact, with the output
    layer swapped for an identity: ``outputs.logits`` are then the final hidden states, and the real LM head weight
    is applied chunk by chunk. The loss, metrics and logged names are trl's (``get_batch_loss_metrics`` is not
    overridden). FSDP and DeepSpeed ZeRO-3 shard the head weight outside forward, so there trl's forward is used.
    LoRA's dropout runs fused into ``lora_A`` (``train/lora_dropout.py``): the same objective, cheaper masks.
    """

    def __init__(self, *args, logit_chunk_size: int = 512, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.logit_chunk_size = logit_chunk_size
        self.lean = not (self.is_fsdp_enabled or is_deepspeed_zero3_enabled())
        if not self.lean:
            logger.warning("orpo_forward 'lean' does not support FSDP / ZeRO-3 (sharded LM head): using trl's forward")
            return
        if self.is_encoder_decoder:
            raise LeanForwardError("orpo_forward 'lean' supports decoder-only models; use orpo_forward: trl")
        check_lean_forward(self.accelerator.unwrap_model(self.model))
        fused = fuse_lora_dropout(self.model)
        if fused:
            logger.info("LoRA dropout fused into lora_A in %d adapted linears (train/lora_dropout.py)", fused)

    def concatenated_forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, ...]:
        if not self.lean:
            return super().concatenated_forward(model, batch)
        cat = self.concatenated_inputs(batch, padding_value=self.padding_value, device=self.accelerator.device)
        n_chosen = batch["chosen_labels"].shape[0]
        model_kwargs = {"output_router_logits": True} if self.aux_loss_enabled else {}
        with hidden_states_as_logits(self.accelerator.unwrap_model(model)) as head:
            outputs = model(
                cat["concatenated_input_ids"],
                attention_mask=cat["concatenated_attention_mask"],
                use_cache=False,
                **model_kwargs,
            )
        out = orpo_sequence_logps(
            outputs.logits,
            head.weight,
            head.bias,
            cat["concatenated_input_ids"],
            cat["concatenated_attention_mask"],
            cat["concatenated_labels"],
            n_chosen,
            self.logit_chunk_size,
        )
        # trl's tuple: the "logits" slots only feed the logged logits/chosen|rejected (.detach().mean() of them)
        result = (out.chosen_logps, out.rejected_logps, out.chosen_mean_logit, out.rejected_mean_logit, out.chosen_nll)
        return (*result, outputs.aux_loss) if self.aux_loss_enabled else result


@contextmanager
def hidden_states_as_logits(model: nn.Module) -> Iterator[nn.Linear]:
    """Within the block, ``model``'s output layer is an identity, so its forward returns hidden states as logits."""
    head = model.get_output_embeddings()
    name = next(name for name, module in model.named_modules() if module is head)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    setattr(parent, attr, nn.Identity())
    try:
        yield head
    finally:
        setattr(parent, attr, head)


def check_lean_forward(model: nn.Module) -> None:
    """Refuse models whose logits are not exactly ``head(hidden)``, before any training step.

    The lean path assumes a plain ``nn.Linear`` head: a LoRA or ``modules_to_save`` LM head is a wrapper, refused.
    A constant scale after the head (Granite, Cohere) lands on the hidden states once the head is an identity, and
    the head is linear, so it stays exact; a non-linear soft-cap (Gemma) does not: a short probe forward compares
    both paths whatever the architecture calls its post-processing.
    """
    head = model.get_output_embeddings()
    if type(head) is not nn.Linear:
        raise LeanForwardError(
            f"orpo_forward 'lean' needs a plain nn.Linear LM head, this model has {type(head).__name__} (LoRA or "
            "modules_to_save on lm_head?); use orpo_forward: trl"
        )
    if getattr(getattr(model, "config", None), "final_logit_softcapping", None):
        raise LeanForwardError("orpo_forward 'lean' does not support final_logit_softcapping; use orpo_forward: trl")
    ids = torch.arange(1, 9, device=head.weight.device)[None]
    was_training = model.training
    model.eval()  # no dropout, so both forwards see the same function (and no RNG is consumed)
    try:
        with torch.no_grad():
            expected = model(ids, use_cache=False).logits.float()
            with hidden_states_as_logits(model):
                hidden = model(ids, use_cache=False).logits
            ok = hidden.shape[-1] == head.in_features
            if ok:
                got = nn.functional.linear(hidden.float(), head.weight.float(), head.bias)
                ok = torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()) + 1e-6)
    finally:
        model.train(was_training)
    if not ok:
        raise LeanForwardError(
            f"{type(model).__name__}: logits are not lm_head(hidden states) (a non-linear cap after the head?); "
            "use orpo_forward: trl"
        )


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
