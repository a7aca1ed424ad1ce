"""``orpo-eval``: preference accuracy and instruction-following rate of a model folder or an endpoint.

    orpo-eval --model smollm2-135m-instruct --output runs/eval-base
    orpo-eval --endpoint http://127.0.0.1:8000 --api-key KEY --output runs/eval-served

Writes ``results.json``, ``results.md`` and ``responses.jsonl`` into the output folder (atomically).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.manifest import atomic_output_dir, read_manifest
from core.models import ModelError
from data.load import DatasetError, load_preference_dataset
from data.verifiers import Constraint
from evaluation.generate import EvalError

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """What to evaluate and how; see ``orpo-eval --help``."""

    model: str | None = None  # HF folder, bundled name or hub id (scored for preference and generation)
    endpoint: str | None = None  # OpenAI-compatible base URL (generation only)
    api_key: str | None = None
    served_model: str | None = None  # model id at the endpoint; default: its first /v1/models entry
    dataset: str | None = None  # held-out pairs; default: our test split (conversational)
    limit: int | None = None  # evaluate an evenly spaced subset of this many pairs
    max_new_tokens: int = 256
    batch_size: int = 8
    engine: str = "vllm"  # generation for --model: vllm (offline engine, fast) or hf (transformers generate)
    preference: bool = True
    generation: bool = True
    output: str = "runs/eval"

    def __post_init__(self) -> None:
        if (self.model is None) == (self.endpoint is None):
            raise ValueError("give exactly one of --model or --endpoint")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.engine not in ("vllm", "hf"):
            raise ValueError(f"--engine must be vllm or hf, got {self.engine!r}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("--max-new-tokens and --batch-size must be >= 1")
        if self.endpoint is not None:
            self.preference = False  # log-probs of given text are not part of the chat API
        if not (self.preference or self.generation):
            raise ValueError("nothing to do: both preference and generation are off")


def parse_args(argv: list[str] | None) -> EvalConfig:
    p = argparse.ArgumentParser(prog="orpo-eval", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="HF model folder, 'smollm2-135m-instruct' (bundled) or 'tiny-smollm2'")
    src.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key")
    p.add_argument("--served-model", help="model id at the endpoint (default: the first it lists)")
    p.add_argument("--dataset", help="preference pairs (JSONL/Parquet/folder); default: our held-out split")
    p.add_argument("--limit", type=int, help="evaluate an evenly spaced subset of N pairs")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="generation engine for --model")
    p.add_argument("--no-preference", dest="preference", action="store_false", help="skip preference accuracy")
    p.add_argument("--no-generation", dest="generation", action="store_false", help="skip instruction following")
    p.add_argument("--output", default="runs/eval", help="output folder (replaced if it exists)")
    return EvalConfig(**vars(p.parse_args(argv)))


def subset(rows: list[dict], limit: int | None) -> list[dict]:
    """An evenly spaced, deterministic subset (the splits are grouped by topic, so not the first N)."""
    if limit is None or limit >= len(rows):
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    rows = subset(load_preference_dataset(cfg.dataset, split="test").to_list(), cfg.limit)
    result: dict[str, Any] = {"config": asdict(cfg), "timings_s": {}}
    start = time.perf_counter()
    model = tokenizer = None
    if cfg.model is not None:
        from evaluation.loading import load_model

        model_dir, model, tokenizer = load_model(cfg.model)
        result["model_dir"] = str(model_dir)
        result["model_manifest"] = read_manifest(model_dir)
        result["timings_s"]["load"] = round(time.perf_counter() - start, 2)
    if cfg.preference:
        from evaluation.scoring import preference_accuracy

        t = time.perf_counter()
        result["preference"] = preference_accuracy(model, tokenizer, rows, cfg.batch_size)
        result["timings_s"]["preference"] = round(time.perf_counter() - t, 2)
    if cfg.generation:
        result["instruction_following"], responses = _instruction_following(cfg, rows, model, tokenizer)
        result["responses"] = responses
    result["timings_s"]["total"] = round(time.perf_counter() - start, 2)
    return result


def _instruction_following(cfg: EvalConfig, rows: list[dict], model, tokenizer) -> tuple[dict, list[dict]]:
    from evaluation.generate import generate_endpoint, generate_hf, generate_vllm
    from evaluation.instruct import score_responses

    usable = [r for r in rows if r.get("constraints")]
    if not usable:
        raise EvalError("the dataset has no 'constraints' column, so instruction following cannot be checked")
    prompts = [
        r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}] for r in usable
    ]
    t = time.perf_counter()
    if cfg.endpoint is not None:
        texts = generate_endpoint(cfg.endpoint, prompts, cfg.api_key, cfg.served_model, cfg.max_new_tokens)
    elif cfg.engine == "vllm":
        texts = generate_vllm(result_model_dir(cfg), prompts, cfg.max_new_tokens)
    else:
        texts = generate_hf(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size)
    elapsed = time.perf_counter() - t
    constraints = [[Constraint.from_dict(c) for c in r["constraints"]] for r in usable]
    scores = score_responses(constraints, texts)
    scores["generation_s"] = round(elapsed, 2)
    responses = [
        {"id": r.get("id"), "prompt": p[-1]["content"], "response": x}
        for r, p, x in zip(usable, prompts, texts, strict=True)
    ]
    return scores, responses


def result_model_dir(cfg: EvalConfig):
    from core.models import resolve_model

    return resolve_model(cfg.model)


def to_markdown(result: dict[str, Any]) -> str:
    subject = result["config"]["model"] or result["config"]["endpoint"]
    lines = [f"# orpo-eval: {subject}", "", "| metric | value |", "|---|---|"]
    if "preference" in result:
        pref = result["preference"]
        lines.append(f"| preference accuracy ({pref['pairs']} pairs) | {pref['preference_accuracy']:.3f} |")
        lines.append(f"| mean log-prob margin (chosen - rejected) | {pref['mean_margin']:.4f} |")
    if "instruction_following" in result:
        inf = result["instruction_following"]
        for key in ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose"):
            lines.append(
                f"| instruction following, {key.replace('_', '-')} ({inf['prompts']} prompts) | {inf[key]:.3f} |"
            )
    lines.append(f"| wall time | {result['timings_s']['total']:.0f} s |")
    return "\n".join(lines) + "\n"


def write_results(result: dict[str, Any], output: str) -> None:
    responses = result.pop("responses", [])
    with atomic_output_dir(Path(output), overwrite=True) as tmp:
        (tmp / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (tmp / "results.md").write_text(to_markdown(result))
        with (tmp / "responses.jsonl").open("w") as f:
            for r in responses:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = parse_args(argv)
        result = evaluate(cfg)
        write_results(result, cfg.output)
    except (ValueError, ModelError, DatasetError, EvalError, FileNotFoundError) as e:
        print(f"orpo-eval: error: {e}", file=sys.stderr)
        return 2
    print(to_markdown(result))
    print(f"results written to {cfg.output}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
