"""The one typed config of the training stage: YAML < environment (``ORPO_TRAIN_<FIELD>``) < command line.

Every field has a help string (shown by ``orpo-train --help``); ``__post_init__`` rejects values that would only
fail later or train silently wrong. ``DIFFERS_FROM_TRL`` lists our defaults that are not trl's, and why.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orpo_deploy.core import config as engine
from orpo_deploy.core.config import coerce_fields, option
from orpo_deploy.core.config import parse_value as parse_value
from orpo_deploy.core.config import read_yaml as read_yaml
from orpo_deploy.core.errors import ConfigError

ENV_PREFIX = "ORPO_TRAIN_"
PRECISIONS = ("auto", "fp32", "bf16")
REPORT_TO = ("none", "tensorboard", "mlflow", "wandb", "trackio")
ORPO_FORWARDS = ("lean", "trl")
CHECKPOINT_POLICIES = ("full", "selective")  # train/checkpointing.py
# Measured on this project's 2-core CPU (AMD EPYC, AVX2 only: no AVX512-BF16/AMX, so bf16 GEMMs are emulated):
# a 4096x576 @ 576x1536 GEMM took 1.39 s in bf16 vs 0.25 s in fp32, its input-gradient GEMM 7.4 s vs 0.19 s, and a
# fwd+bwd through one such layer under bf16 autocast 21.6 s vs 1.2 s; a full SmolLM2+LoRA fwd+bwd under autocast did
# not finish in 18 min where fp32 took 102 s. So "auto" means fp32 on CPU and bf16 (autocast) on CUDA.
CPU_AUTO_PRECISION = "fp32"
# A pair keeps at least this many response tokens: max_prompt_length must leave room for them.
MIN_RESPONSE_TOKENS = 16
# Our committed splits an eval_dataset can name. Choose on dev (steps, checkpoints, recipes); test is report-only.
EVAL_SPLITS = ("dev", "test")


@dataclass
class TrainConfig:
    """ORPO + LoRA training of a causal LM on preference pairs, merged into a servable HF folder."""

    # --- inputs ---
    model: str | None = option(
        "Base model: 'smollm2-135m-instruct' (bundled; the default when empty), 'tiny-smollm2' (random, for tests), "
        "a local HF folder, or a hub id (online only).",
        default=None,
    )
    dataset: str | None = option(
        "Preference pairs: a JSONL/Parquet file or a save_to_disk folder with prompt/chosen/rejected (standard or "
        "conversational). Empty = our committed train split.",
        default=None,
    )
    eval_dataset: str | None = option(
        "Pairs to evaluate on every eval_steps: a file/folder like `dataset`, or 'dev' / 'test' for our committed "
        "splits (dev is for choosing steps and checkpoints; test is report-only). Empty = no evaluation.",
        default=None,
    )
    max_pairs: int | None = option("Use only the first N training pairs (quick runs). Empty = all.", default=None)
    eval_max_pairs: int | None = option("Evaluate on at most N pairs (eval is slow on CPU).", default=64)
    chat_template: bool = option(
        "Render plain-string prompts/responses with the tokenizer's chat template (one user turn, one assistant "
        "turn), so training sees what the server sends. Conversational pairs always use it.",
        default=True,
    )
    output_dir: str = option(
        "Output folder: OUTPUT/run (checkpoints, metrics.jsonl, plots, adapter) and OUTPUT/merged (the servable "
        "model).",
        default="runs/orpo-smollm2",
    )
    # --- objective ---
    beta: float = option("ORPO's λ (trl calls it beta): weight of the odds-ratio term. 0 = plain SFT.", default=0.1)
    orpo_forward: str = option(
        "'lean': ORPO's log-probs from the final hidden states, logit_chunk_size tokens at a time, never holding "
        "the [2 x batch, length, vocab] logits (same loss, metrics and gradients as trl's forward, tested), with LoRA "
        "dropout fused into lora_A (train/lora_dropout.py: cheaper masks, no dropped copies kept); 'trl': trl's stock "
        "forward and peft's dropout. FSDP / DeepSpeed ZeRO-3 runs always use trl's forward.",
        default="lean",
    )
    logit_chunk_size: int = option(
        "Tokens per chunk of the lean forward; its largest temporary is chunk x vocab fp32 (512 x 49152: 100 MB).",
        default=512,
    )
    # --- sequence lengths ---
    max_length: int = option("Max tokens of prompt + response (each of chosen and rejected).", default=512)
    max_prompt_length: int = option(
        "Max prompt tokens; longer prompts keep their tail (the question and the assistant header).", default=256
    )
    drop_truncated: bool = option(
        "Drop pairs whose chosen or rejected response does not fit, instead of truncating it (trl appends EOS to a "
        "truncated response, which teaches the model to stop mid-sentence).",
        default=False,
    )
    # --- LoRA ---
    lora_r: int = option("LoRA rank.", default=16)
    lora_alpha: int = option("LoRA alpha (scale = alpha / r).", default=32)
    lora_dropout: float = option("Dropout on the LoRA branch.", default=0.05)
    lora_target_modules: list[str] | str = option(
        "Modules that get LoRA: 'all-linear' (every linear layer but the LM head) or a list of names such as "
        "[q_proj, v_proj].",
        default="all-linear",
    )
    disable_dropout: bool = option(
        "trl's switch that sets every dropout to 0, LoRA's included. Off: lora_dropout applies (Llama-family "
        "configs have attention_dropout 0 anyway). Turning it on requires lora_dropout: 0.",
        default=False,
    )
    # --- optimisation ---
    learning_rate: float = option("Peak AdamW learning rate (LoRA wants ~1e-4..5e-4).", default=2e-4)
    warmup_ratio: float = option("Fraction of the steps spent warming the learning rate up from 0.", default=0.05)
    lr_scheduler_type: str = option("transformers scheduler name: linear, cosine, constant, ...", default="linear")
    num_train_epochs: float = option("Epochs over the training pairs (ignored when max_steps > 0).", default=1.0)
    max_steps: int = option("Optimizer steps to run; -1 = use num_train_epochs.", default=-1)
    batch_size: int = option("Pairs per process per forward pass (each pair = 2 sequences).", default=8)
    grad_accum: int = option(
        "Gradient accumulation steps (effective batch = batch_size x grad_accum x processes).", default=1
    )
    gradient_checkpointing: bool = option(
        "Recompute activations in backward. With the lean forward on SmolLM2 (2 cores, batch 1-4 x 256) full "
        "checkpointing peaked at 0.22-0.62x the RSS of trl's stock ORPO at 0.78-1.25x its tokens/s, 'selective' at "
        "0.40-0.71x and 0.92-1.53x (README, 'Memory settings'); off, lean alone ran 1.16-1.72x at 0.57-0.81x.",
        default=False,
    )
    checkpoint_policy: str = option(
        "With gradient_checkpointing, what backward recomputes: 'full' = each decoder layer (transformers' way), "
        "'selective' = only the cheap ops (norms, activations, dropout, RoPE, LoRA's rank-r up-projection), keeping "
        "the large matmuls' and attention's outputs (train/checkpointing.py).",
        default="full",
    )
    precision: str = option(
        f"'fp32', 'bf16' (autocast, fp32 master weights) or 'auto' (bf16 on CUDA, {CPU_AUTO_PRECISION} on CPU, "
        "measured).",
        default="auto",
    )
    seed: int = option("Seed for LoRA init, data order and dropout.", default=42)
    # --- bookkeeping ---
    logging_steps: int = option("Log metrics (metrics.jsonl, progress bar) every N steps.", default=5)
    report_to: str = option(
        "Also send the logged metrics to a tracker: none, tensorboard, mlflow, wandb or trackio (its package must be "
        "installed; metrics.jsonl is written either way).",
        default="none",
    )
    save_steps: int = option("Save a resumable checkpoint every N steps.", default=50)
    save_total_limit: int = option("Keep the N newest checkpoints.", default=3)
    eval_steps: int = option("Evaluate every N steps (when eval_dataset is set).", default=50)
    eval_generate: int = option(
        "At every evaluation also answer N eval prompts greedily and score them with our verifiers (train/dev_eval.py;"
        " logs eval_if_mean, eval_if_prompt_strict, eval_answer_tokens, eval_answer_hit_limit). Needs eval rows with "
        "constraints (the dev split). 0 = off.",
        default=0,
    )
    eval_max_new_tokens: int = option("Token limit of those answers.", default=256)
    best_metric: str | None = option(
        "Keep the checkpoint with the best value of this eval metric and merge it instead of the last step: "
        "'if_mean' (dev instruction following, needs eval_generate), 'loss', 'rewards/accuracies', ... Lower is "
        "better for names ending in 'loss'. save_steps must be a multiple of eval_steps. Empty = the last step.",
        default=None,
    )
    early_stopping_patience: int = option(
        "Stop after N evaluations in a row without a better best_metric. 0 = run every step.", default=0
    )

    def __post_init__(self) -> None:
        coerce_fields(self)
        positive = ("lora_r", "lora_alpha", "batch_size", "grad_accum", "logging_steps", "save_steps")
        limits = ("logit_chunk_size", "save_total_limit", "eval_steps", "max_length", "max_prompt_length")
        for name in positive + limits:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_pairs", "eval_max_pairs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 or empty, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.beta >= 0:
            raise ConfigError(f"beta (ORPO lambda) must be >= 0, got {self.beta}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_steps <= 0 and self.max_steps != -1:
            raise ConfigError(f"max_steps must be > 0, or -1 to use num_train_epochs; got {self.max_steps}")
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise ConfigError(f"num_train_epochs must be > 0 when max_steps is -1, got {self.num_train_epochs}")
        if self.max_length - self.max_prompt_length < MIN_RESPONSE_TOKENS:
            raise ConfigError(
                f"max_prompt_length ({self.max_prompt_length}) must leave at least {MIN_RESPONSE_TOKENS} response "
                f"tokens within max_length ({self.max_length})"
            )
        if self.report_to not in REPORT_TO:
            raise ConfigError(f"report_to must be one of {', '.join(REPORT_TO)}; got {self.report_to!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.checkpoint_policy not in CHECKPOINT_POLICIES:
            raise ConfigError(
                f"checkpoint_policy must be one of {', '.join(CHECKPOINT_POLICIES)}; got {self.checkpoint_policy!r}"
            )
        if self.orpo_forward not in ORPO_FORWARDS:
            raise ConfigError(f"orpo_forward must be one of {', '.join(ORPO_FORWARDS)}; got {self.orpo_forward!r}")
        if self.disable_dropout and self.lora_dropout > 0:
            raise ConfigError(
                f"disable_dropout: true would silently zero lora_dropout ({self.lora_dropout}); set lora_dropout: 0 "
                "or disable_dropout: false"
            )
        targets = [self.lora_target_modules] if isinstance(self.lora_target_modules, str) else self.lora_target_modules
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ConfigError(f"lora_target_modules must be 'all-linear' or a list of names, got {targets!r}")
        if not self.output_dir:
            raise ConfigError("output_dir must not be empty")
        if self.dataset is not None and not Path(self.dataset).expanduser().exists():
            raise ConfigError(f"dataset file not found: {self.dataset}")
        self._check_selection()
        if self.eval_dataset not in (None, *EVAL_SPLITS) and not Path(self.eval_dataset).expanduser().exists():
            raise ConfigError(f"eval_dataset not found: {self.eval_dataset} (a file/folder, 'dev' or 'test')")

    def _check_selection(self) -> None:
        """Dev evaluation, best checkpoint and early stopping: combinations that would fail mid-run or do nothing."""
        for name in ("eval_generate", "early_stopping_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_max_new_tokens < 1:
            raise ConfigError(f"eval_max_new_tokens must be >= 1, got {self.eval_max_new_tokens}")
        if self.eval_dataset is None:
            for name in ("eval_generate", "best_metric", "early_stopping_patience"):
                if getattr(self, name):
                    raise ConfigError(f"{name} needs an eval_dataset (e.g. dev)")
        if self.best_metric is not None:
            metric = self.best_metric.removeprefix("eval_")
            if metric.startswith(("if_", "answer_")) and not self.eval_generate:
                raise ConfigError(f"best_metric {self.best_metric!r} is measured only with eval_generate > 0")
            if self.save_steps % self.eval_steps:
                raise ConfigError(
                    f"best_metric needs a checkpoint at every evaluation: save_steps ({self.save_steps}) must be a "
                    f"multiple of eval_steps ({self.eval_steps})"
                )
        if self.early_stopping_patience and self.best_metric is None:
            raise ConfigError("early_stopping_patience needs a best_metric to watch")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / "run"

    @property
    def merged_dir(self) -> Path:
        return Path(self.output_dir) / "merged"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_sources(
        cls,
        yaml_path: str | os.PathLike | None = None,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> TrainConfig:
        """Defaults < YAML file < ``ORPO_TRAIN_*`` environment < ``overrides`` (the command line)."""
        values: dict[str, Any] = {}
        if yaml_path is not None:
            values.update(read_yaml(Path(yaml_path)))
            check_keys(values, source=str(yaml_path))
        environ = os.environ if environ is None else environ
        for name in field_names():
            env_key = ENV_PREFIX + name.upper()
            if env_key in environ:
                values[name] = parse_value(environ[env_key])
        check_keys(overrides or {}, source="command line")
        values.update(overrides or {})
        return cls(**values)


# Defaults that differ from trl's ORPOConfig / transformers' TrainingArguments: (name, ours, upstream, why).
DIFFERS_FROM_TRL: list[tuple[str, Any, Any, str]] = [
    ("learning_rate", 2e-4, 1e-6, "trl's 1e-6 is for full fine-tuning; LoRA needs ~1e-4..5e-4"),
    ("max_length", 512, 1024, "our pairs are <= 285 tokens; a lower cap bounds the worst-case batch memory on CPU"),
    ("max_prompt_length", 256, "(removed)", "trl dropped it and over-truncates responses; we pre-truncate"),
    ("gradient_checkpointing", False, True, "SmolLM2 fwd+bwd measured 2.1x slower with it; lower batch_size instead"),
    ("bf16", "auto", True, "trl's bf16=True raises on CPU; auto = bf16 on CUDA, fp32 on CPU (measured 5-18x faster)"),
    ("disable_dropout", False, True, "trl's True also zeroes LoRA dropout, silently ignoring lora_dropout"),
    ("orpo_forward", "lean", "(full logits)", "trl holds [2B, T, vocab] logits + log-softmax copies; lean: chunks"),
    ("logging_steps", 5, 10, "short CPU runs: curves need points"),
    ("save_total_limit", 3, None, "resumable checkpoints without filling the disk"),
    ("warmup_ratio", 0.05, 0.0, "LoRA's fresh B=0 adapters tolerate a high peak lr better after a short warm-up"),
]


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def check_keys(values: Mapping[str, Any], source: str, names: list[str] | None = None) -> None:
    """Refuse keys that are not TrainConfig's fields (or ``names``), suggesting the closest one."""
    engine.check_keys(values, source, field_names() if names is None else names)


def field_help() -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainConfig)}
