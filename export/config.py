"""The one typed config of the export stage: defaults < YAML (``--config``) < command-line flags.

Every field carries its help text (shown by ``orpo-export --help``); ``__post_init__`` rejects values that would
only fail later, after minutes of quantisation. ``DIFFERS_FROM_GPTQMODEL`` lists our defaults that are not
gptqmodel's, and why.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from orpo_deploy.core.config import option
from orpo_deploy.core.errors import ConfigError, RunFailed, UsageError

METHODS = ("gptq", "awq")
# vLLM 0.32 serves only 4-bit GPTQ/AWQ on CPU (its CPU WNA16 kernel takes uint4/uint4b8); 8-bit GPTQ needs its CUDA
# Marlin kernel and 2/3-bit none at all. An export this stack cannot serve is refused up front.
SUPPORTED_BITS = (4,)
# Tried largest first when --group-size is not given: the largest that divides every quantised layer's width.
AUTO_GROUP_SIZES = (128, 64, 32)
QUALITY_ENGINES = ("auto", "vllm", "hf")
DEFAULT_MIN_RETENTION = 0.9

DIFFERS_FROM_GPTQMODEL = (
    ("group_size", "auto (128, 64 or 32)", "128", "128 does not divide SmolLM2-135M's hidden size 576"),
    ("sym (awq)", "False (zero_point=True)", "True", "vLLM's AWQ kernels read uint4 weights with zero points"),
    ("act_group_aware (gptq, group_size -1)", "False", "True", "gptqmodel raises for per-channel otherwise"),
    ("offload_to_disk", "False", "True", "small models fit in RAM; upstream writes its temp path into the config"),
    ("backend (CPU)", "torch", "auto", "auto picks a CUDA kernel for AWQ and fails on a CPU-only host"),
)


class ExportError(UsageError):
    """An input (model, dataset, output folder) that cannot be exported; the message says why and what to do."""


class ExportFailed(RunFailed):
    """The export ran and failed (quantisation error, quality gate); nothing was published."""


@dataclass
class ExportConfig:
    """Quantise a merged HF model folder to 4 bits (GPTQ or AWQ) and publish it only if it keeps its quality."""

    model: str = option("Merged HF model folder, or 'smollm2-135m-instruct' / 'tiny-smollm2'.", default="")
    method: str = option(f"Quantisation method: {' or '.join(METHODS)}.", default="gptq")
    output: str = option("Output folder; created atomically, and only if the quality gate passes.", default="")
    bits: int = option(f"Weight bits; supported: {SUPPORTED_BITS} (what vLLM serves on CPU).", default=4)
    group_size: int | None = option(
        f"Weights per quantisation group (-1 = per output channel). Empty = the largest of {AUTO_GROUP_SIZES} that "
        "divides every quantised layer's input width.",
        default=None,
    )
    calibration_dataset: str | None = option(
        "Preference pairs whose prompt + chosen response, chat-templated, calibrate the quantiser. Empty = our "
        "train split.",
        default=None,
    )
    calibration_size: int = option("Number of calibration samples (evenly spaced over the dataset).", default=128)
    calibration_max_tokens: int = option("Truncate each calibration sample to this many tokens.", default=1024)
    min_retention: float = option(
        "Fail (exit 1, nothing published) when any quality retention (quantised / full; perplexity inverted) is "
        "below this. 0 = report only.",
        default=DEFAULT_MIN_RETENTION,
    )
    eval_limit: int = option(
        "Held-out pairs for the quality check (evenly spaced over --eval-dataset, dev by default).", default=128
    )
    eval_max_new_tokens: int = option("Max new tokens per answer in the instruction-following check.", default=256)
    eval_dataset: str | None = option(
        "Held-out pairs for the quality gate: a file/folder, or 'dev' / 'test'. Empty = our dev split (a gate is a "
        "choice, and choices are made on dev; test is report-only).",
        default=None,
    )
    quality_engine: str = option(
        "Generation engine of the instruction-following check: vllm, hf, or auto (vllm where it can serve 4-bit "
        "weights on this host, else hf for both models).",
        default="auto",
    )
    overwrite: bool = option("Replace an existing output folder.", default=False)

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("--model is required")
        if not self.output:
            raise ConfigError("--output is required")
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.bits not in SUPPORTED_BITS:
            raise ConfigError(
                f"--bits {self.bits} is not supported: vLLM serves {'/'.join(map(str, SUPPORTED_BITS))}-bit "
                "GPTQ/AWQ on CPU"
            )
        if self.group_size is not None and not (self.group_size == -1 or self.group_size >= 2):
            raise ConfigError(f"--group-size must be -1 (per channel) or >= 2, got {self.group_size}")
        if self.group_size is not None and self.group_size > 0 and self.group_size % 2:
            raise ConfigError(f"--group-size {self.group_size}: vLLM's CPU kernel needs an even group size")
        if self.calibration_size < 1:
            raise ConfigError(f"--calibration-size must be >= 1, got {self.calibration_size}")
        if self.calibration_max_tokens < 16:
            raise ConfigError(f"--calibration-max-tokens must be >= 16, got {self.calibration_max_tokens}")
        if not 0.0 <= self.min_retention <= 1.0:
            raise ConfigError(f"--min-retention must be within [0, 1], got {self.min_retention}")
        if self.eval_limit < 1 or self.eval_max_new_tokens < 1:
            raise ConfigError("--eval-limit and --eval-max-new-tokens must be >= 1")
        if self.quality_engine not in QUALITY_ENGINES:
            raise ConfigError(f"--quality-engine must be one of {', '.join(QUALITY_ENGINES)}")


def field_help() -> dict[str, str]:
    return {f.name: f.metadata["help"] for f in fields(ExportConfig)}
