"""The pipeline's typed config: defaults < YAML (``--config``) < ``--quick`` < ``--set stage.key=value``, built and
coerced by the engine every command shares (core/config.py).

One dataclass per stage budget, nested in ``PipelineConfig``. A YAML file may carry a ``quick:`` mapping of the
same keys: ``--quick`` applies it on top (a first look in a few minutes, written to its own run folder).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orpo_deploy.core.config import build, merge, nest, read_yaml
from orpo_deploy.core.config import parse_set as parse_set  # the CLI's --set, re-exported
from orpo_deploy.core.errors import ConfigError
from orpo_deploy.core.resources import config_path

REPO = Path(__file__).resolve().parents[1]
CPU_CONFIG = REPO / "configs" / "pipeline_smollm2_cpu.yaml"
GPU_CONFIG = REPO / "configs" / "pipeline_smollm2_gpu.yaml"
SERVE_CHOICES = ("auto", "quantized", "merged")


PAIR_SOURCES = ("committed", "onpolicy")


@dataclass
class PairsBudget:
    source: str = "committed"
    """Training pairs: 'committed' (``dataset``, or our train split) or 'onpolicy' (the pairs stage samples k
    answers per train prompt from the base model and judges them with our verifiers: ``orpo-data generate``)."""
    limit: int | None = 256
    """On-policy: evenly spaced train prompts to sample (empty = all ~1,400)."""
    k: int = 4
    """On-policy: answers per prompt."""
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0
    rounds: int = 1
    """On-policy rounds: round r samples pairs from round r-1's model (the base for r = 1), trains on them
    starting from that model, and scores the result on the dev split; the last round's model goes on."""


@dataclass
class TrainBudget:
    config: str = "configs/orpo_smollm2_cpu.yaml"
    """orpo-train YAML (relative paths are from the repository root); output_dir and model are set by the pipeline."""
    max_steps: int | None = None
    """Override the train config's max_steps (empty = keep it)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Further orpo-train keys (--set KEY=VALUE), e.g. {max_pairs: 64}."""


@dataclass
class EvalBudget:
    limit: int | None = 64
    """Held-out pairs (evenly spaced subset); empty = all."""
    max_new_tokens: int = 128
    """Max new tokens per answer in the instruction-following check."""
    engine: str = "vllm"
    """Generation engine of orpo-eval: vllm or hf."""
    batch_size: int = 8
    preference: bool = True
    """Also score preference accuracy on the pairs (log-probs of chosen vs rejected; a training diagnostic, not a
    quality figure, and on CPU the slower half of the stage)."""


@dataclass
class IFEvalBudget:
    limit: int | None = 64
    """IFEval prompts (evenly spaced subset of Google's 541); empty = all. Report-only: never chosen on."""
    max_new_tokens: int = 512
    """Max new tokens per answer (IFEval asks for essays; the report says how many answers hit this)."""


@dataclass
class ExportBudget:
    method: str = "gptq"
    group_size: int | None = None
    """Weights per quantisation group; None = orpo-export's auto choice (the largest of 128, 64, 32 that fits)."""
    min_retention: float = 0.9
    """The export's quality gate (0 = report only)."""
    eval_limit: int = 64
    eval_max_new_tokens: int = 128
    calibration_size: int = 128
    calibration_max_tokens: int = 512
    quality_engine: str = "auto"


@dataclass
class ServeBudget:
    serve: str = "auto"
    """What to serve: auto (the quantised folder where the engine runs 4-bit weights, else the merged one),
    quantized, or merged."""
    max_model_len: int = 1024
    kv_cache_gib: int = 1
    enforce_eager: bool = True
    """Skip torch.compile: faster start-up, slower decode (a short load test favours it)."""
    start_timeout_s: float = 600.0
    """Seconds to wait for /ready before the stage fails."""
    grace_seconds: float = 30.0
    """Drain time after SIGTERM."""
    evaluate: bool = True
    """Score the served model (the 4-bit export where it is served) through its API on the same test subset and
    IFEval subset as base and ORPO: the figures of what users get (stages eval-served, ifeval-served)."""
    eval_concurrency: int = 8
    """Requests in flight from those evaluations."""


@dataclass
class LoadtestBudget:
    users: int = 4
    run_time: str = "60s"
    max_tokens: int = 64
    slos: dict[str, float] = field(default_factory=lambda: {"error_rate": 0.0, "min_requests": 8})
    """orpo-loadtest --slo KEY=VALUE pairs."""
    sweep: list[float] | None = None
    """Capacity at SLO instead of closed-loop users: open-loop Poisson runs at these rates (req/s), upwards, each for
    run_time, until one misses an SLO (orpo-loadtest --sweep); the report gives the largest rate that met them."""
    request_slos: dict[str, float] = field(default_factory=dict)
    """Per-request bounds that define goodput (orpo-loadtest --request-slo), e.g. {ttft_ms: 2000, tpot_ms: 500}."""


@dataclass
class PipelineConfig:
    """From preference data to a served, load-tested model: train -> eval -> export -> serve -> loadtest -> report."""

    name: str = "smollm2"
    """Run name: everything goes to RUNS_DIR/NAME."""
    runs_dir: str = "runs"
    model: str = "smollm2-135m-instruct"
    """Base model: bundled name, 'tiny-smollm2' or an HF folder."""
    dataset: str | None = None
    """Training pairs (empty = our committed train split)."""
    eval_dataset: str | None = None
    """Held-out pairs for eval and the export check (empty = our test split)."""
    pairs: PairsBudget = field(default_factory=PairsBudget)
    train: TrainBudget = field(default_factory=TrainBudget)
    eval: EvalBudget = field(default_factory=EvalBudget)
    ifeval: IFEvalBudget = field(default_factory=IFEvalBudget)
    export: ExportBudget = field(default_factory=ExportBudget)
    serve: ServeBudget = field(default_factory=ServeBudget)
    loadtest: LoadtestBudget = field(default_factory=LoadtestBudget)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.name or "") or self.name in (".", ".."):
            raise ConfigError(f"name must be a plain folder name ([A-Za-z0-9._-]+, not . or ..), got {self.name!r}")
        if self.pairs.source not in PAIR_SOURCES:
            raise ConfigError(f"pairs.source must be one of {', '.join(PAIR_SOURCES)}, got {self.pairs.source!r}")
        if self.pairs.source == "onpolicy" and self.dataset is not None:
            raise ConfigError("pairs.source: onpolicy samples our train prompts; leave dataset empty")
        if self.pairs.rounds < 1 or (self.pairs.rounds > 1 and self.pairs.source != "onpolicy"):
            raise ConfigError(f"pairs.rounds must be 1, or more with pairs.source: onpolicy; got {self.pairs.rounds}")
        if self.pairs.k < 2 or (self.pairs.limit is not None and self.pairs.limit < 1):
            raise ConfigError(
                f"pairs.k must be >= 2 and pairs.limit >= 1 or empty, got {self.pairs.k} / {self.pairs.limit}"
            )
        if self.train.max_steps is not None and self.train.max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1 or empty, got {self.train.max_steps}")
        if self.eval.limit is not None and self.eval.limit < 1:
            raise ConfigError(f"eval.limit must be >= 1 or empty, got {self.eval.limit}")
        if self.eval.engine not in ("vllm", "hf"):
            raise ConfigError(f"eval.engine must be vllm or hf, got {self.eval.engine!r}")
        if self.ifeval.limit is not None and self.ifeval.limit < 1:
            raise ConfigError(f"ifeval.limit must be >= 1 or empty, got {self.ifeval.limit}")
        if self.ifeval.max_new_tokens < 1:
            raise ConfigError(f"ifeval.max_new_tokens must be >= 1, got {self.ifeval.max_new_tokens}")
        if self.serve.serve not in SERVE_CHOICES:
            raise ConfigError(f"serve.serve must be one of {', '.join(SERVE_CHOICES)}, got {self.serve.serve!r}")
        if self.serve.eval_concurrency < 1:
            raise ConfigError(f"serve.eval_concurrency must be >= 1, got {self.serve.eval_concurrency}")
        if self.loadtest.sweep is not None and (not self.loadtest.sweep or min(self.loadtest.sweep) <= 0):
            raise ConfigError(f"loadtest.sweep must list rates > 0, got {self.loadtest.sweep}")
        if self.loadtest.users < 1:
            raise ConfigError(f"loadtest.users must be >= 1, got {self.loadtest.users}")
        if not self.train_config_path().is_file():
            raise ConfigError(f"train.config not found: {self.train.config}")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def train_config_path(self) -> Path:
        return config_path(self.train.config)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(
    path: str | Path | None, quick: bool = False, overrides: Mapping[str, Any] | None = None
) -> PipelineConfig:
    """YAML file (None = no file: the dataclass defaults), its ``quick:`` section if asked, then overrides."""
    values: dict[str, Any] = {}
    quick_values: dict[str, Any] = {}
    if path is not None:
        values = read_yaml(Path(path))
        quick_values = values.pop("quick", None) or {}
    if quick:
        if path is not None and not quick_values:
            raise ConfigError(f"--quick: {path} has no 'quick:' section")
        merge(values, quick_values)
    for dotted, value in (overrides or {}).items():
        merge(values, nest(dotted, value))
    return build(PipelineConfig, values)
