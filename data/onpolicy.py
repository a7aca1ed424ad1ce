"""On-policy preference pairs: the model's own answers, judged by our verifiers (``orpo-data generate``).

For each prompt with verifiable constraints, draw ``k`` answers from the model (vLLM offline, HF for tiny test
models, or any OpenAI endpoint such as orpo-serve), check each with the verifiers plus the relevance condition,
and keep one pair per prompt: chosen passes every constraint, rejected fails at least one.

How a pair is picked among the k answers (``pick_pair``), and why:
- chosen: a passing answer that *ended* (finish reason ``stop``) before one cut at the token limit, then the
  shortest. A cut answer may pass by luck and teaches rambling; among passing answers the shorter one says as much
  with less padding (the base model runs to the limit on many IFEval prompts).
- rejected: the answer that fails the most constraints (strictly); ties go to one cut at the token limit, then to
  the longest. The widest verifiable gap is the clearest signal, and a rambling failure is what we want less of.
- a prompt with no passing answer or no failing one gives no pair (counted in the stats, by reason).

Samples are written chunk by chunk (temp file, then rename) and seeded per prompt, so a killed run resumes where it
stopped and draws the same answers; pairs, stats and a manifest are written last, into a folder renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orpo_deploy.core.errors import UsageError
from orpo_deploy.core.io import read_jsonl
from orpo_deploy.core.messages import as_messages
from orpo_deploy.data.verifiers import Constraint, check, relevant

logger = logging.getLogger(__name__)

SAMPLES_DIR = "samples"  # resumable chunks, beside the output folder while the run is under way
PAIRS_FILE = "pairs.jsonl"


class GenerateError(UsageError):
    """Bad input or settings for ``orpo-data generate``; the message names the row or the setting."""


@dataclass
class GenerateConfig:
    model: str | None = None  # a model folder, 'smollm2-135m-instruct' or 'tiny-smollm2'
    endpoint: str | None = None  # or an OpenAI-compatible base URL (orpo-serve, vLLM)
    api_key: str | None = None  # never written anywhere
    served_model: str | None = None
    engine: str = "vllm"  # for --model: vllm, or hf (slow; tiny models and tests)
    prompts: str | None = None  # a JSONL of {prompt, constraints[, relevance, topic, id]}
    split: str = "train"  # with no --prompts: our committed train (default) or dev split; never test
    limit: int | None = None  # an evenly spaced subset of N prompts
    k: int = 8
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0
    chunk_size: int = 64  # prompts per resumable chunk
    output: str = "runs/onpolicy"

    def __post_init__(self) -> None:
        if (self.model is None) == (self.endpoint is None):
            raise GenerateError("give exactly one of --model and --endpoint")
        if self.engine not in ("vllm", "hf"):
            raise GenerateError(f"--engine must be vllm or hf, got {self.engine!r}")
        if self.split not in ("train", "dev"):
            raise GenerateError(f"--split must be train or dev (test is report-only), got {self.split!r}")
        for name in ("k", "max_new_tokens", "chunk_size"):
            if getattr(self, name) < 1:
                raise GenerateError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.k < 2:
            raise GenerateError("--k must be >= 2: a pair needs two answers to the same prompt")
        if self.limit is not None and self.limit < 1:
            raise GenerateError(f"--limit must be >= 1, got {self.limit}")
        if not 0 < self.temperature <= 2:
            raise GenerateError(f"--temperature must be in (0, 2], got {self.temperature}: k greedy answers are one")
        if not 0 < self.top_p <= 1:
            raise GenerateError(f"--top-p must be in (0, 1], got {self.top_p}")

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d["api_key"] = "(set, not recorded)" if self.api_key else None
        return d


# --- prompts -----------------------------------------------------------------------------------------------------


def load_prompts(cfg: GenerateConfig) -> list[dict[str, Any]]:
    """Prompt rows ({id, messages, constraints, relevance, topic}); one line naming the row for a bad one."""
    from orpo_deploy.evaluation.runner import subset

    if cfg.prompts is None:
        from orpo_deploy.data.splits import load_split

        rows, source = load_split(cfg.split), f"our {cfg.split} split"
        rows = unique_prompts(rows)
    else:
        path = Path(cfg.prompts).expanduser()
        if not path.is_file():
            raise GenerateError(f"prompts file not found: {path}")
        try:
            rows, source = [row for _, row in read_jsonl(path)], str(path)
        except ValueError as exc:
            raise GenerateError(str(exc)) from None
    out = [prompt_row(r, f"{source}: row {i}") for i, r in enumerate(rows)]
    if not out:
        raise GenerateError(f"{source}: no prompts")
    ids = Counter(r["id"] for r in out)
    dup = [i for i, n in ids.items() if n > 1]
    if dup:
        raise GenerateError(f"{source}: id {dup[0]!r} appears {ids[dup[0]]} times")
    return subset(out, cfg.limit)


def unique_prompts(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per distinct prompt text (our splits hold a prompt once per rejection type)."""
    seen, out = set(), []
    for r in rows:
        if r["prompt"] not in seen:
            seen.add(r["prompt"])
            out.append(r)
    return out


def prompt_row(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise GenerateError(f"{where}: expected an object, got {type(row).__name__}")
    messages = as_messages(row.get("prompt"))
    if messages is None:
        raise GenerateError(f"{where}: 'prompt' must be a non-empty string or a list of messages")
    raw = row.get("constraints")
    if not isinstance(raw, list) or not raw:
        raise GenerateError(f"{where}: 'constraints' must be a non-empty list of {{kind, kwargs}}")
    try:
        constraints = [Constraint.from_dict(c).to_dict() for c in raw]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise GenerateError(f"{where}: bad constraint: {exc}") from None
    relevance = row.get("relevance")
    if relevance is not None and not (isinstance(relevance, list) and all(isinstance(w, str) for w in relevance)):
        raise GenerateError(f"{where}: 'relevance' must be a list of words")
    text = json.dumps(messages, sort_keys=True)
    return {
        "id": str(row.get("id") or hashlib.sha256(text.encode()).hexdigest()[:16]),
        "messages": messages,
        "constraints": constraints,
        "relevance": relevance,
        "topic": row.get("topic"),
    }


# --- judging and picking ------------------------------------------------------------------------------------------


def judge(row: dict[str, Any], text: str) -> dict[str, Any]:
    """Which constraints one answer fails (strict), and whether it is about its topic."""
    on_topic = not row["relevance"] or relevant(text, row["relevance"])
    fails = [c["kind"] for c in row["constraints"] if not (on_topic and check(text, Constraint.from_dict(c)))]
    return {"fails": fails, "relevant": on_topic, "passes": not fails}


def pick_pair(answers: Sequence[dict[str, Any]]) -> tuple[dict | None, dict | None, str | None]:
    """(chosen, rejected, why none) among one prompt's judged answers; see the module docstring for the rule."""
    passing = [a for a in answers if a["passes"]]
    failing = [a for a in answers if not a["passes"]]
    if not passing:
        return None, None, "no answer passed"
    if not failing:
        return None, None, "every answer passed"
    chosen = min(passing, key=lambda a: (a["finish_reason"] == "length", len(a["text"]), a["index"]))
    rejected = max(
        failing, key=lambda a: (len(a["fails"]), a["finish_reason"] == "length", len(a["text"]), -a["index"])
    )
    return chosen, rejected, None


def prompt_seed(seed: int, prompt_id: str) -> int:
    """A per-prompt seed from the run's seed and the prompt's id: the same answers whatever chunk it lands in."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()[:4], "big")


# --- sampling -----------------------------------------------------------------------------------------------------


def sample_chunk(cfg: GenerateConfig, rows: Sequence[dict[str, Any]], engine: Any) -> list[dict[str, Any]]:
    """k judged answers for each row of one chunk."""
    from orpo_deploy.evaluation.generate import Sampling

    sampling = Sampling(cfg.k, cfg.temperature, cfg.top_p, [prompt_seed(cfg.seed, r["id"]) for r in rows])
    out = engine([r["messages"] for r in rows], sampling)
    records = []
    for row, gens in zip(rows, out, strict=True):
        answers = []
        for j, g in enumerate(gens):
            answers.append({"index": j, "text": g.text, "finish_reason": g.finish_reason, "tokens": g.tokens,
                            **judge(row, g.text)})  # fmt: skip
        records.append({"id": row["id"], "answers": answers})
    return records


def make_engine(cfg: GenerateConfig, rows: Sequence[dict[str, Any]]):
    """A function (prompts, Sampling) -> k Generations per prompt; the model is loaded once (vLLM's context is
    sized for every row, so later chunks fit)."""
    from orpo_deploy.evaluation import generate

    if cfg.endpoint is not None:
        return lambda prompts, sampling: generate.sample_endpoint(
            cfg.endpoint, prompts, sampling, cfg.api_key, cfg.served_model, cfg.max_new_tokens
        )
    from orpo_deploy.core.models import resolve_model

    model_dir = str(resolve_model(cfg.model))
    if cfg.engine == "hf":
        from orpo_deploy.evaluation.loading import load_model

        _, model, tokenizer = load_model(model_dir)
        return lambda prompts, sampling: generate.sample_hf(model, tokenizer, prompts, cfg.max_new_tokens, sampling)
    return generate.VLLMSampler(model_dir, [r["messages"] for r in rows], cfg.max_new_tokens)


def run(cfg: GenerateConfig) -> Path:
    """Sample (resuming finished chunks), pick pairs, write pairs + stats + manifest; returns the output folder."""
    from tqdm.auto import tqdm

    from orpo_deploy.core.manifest import atomic_output_dir, make_manifest, sha256_file, write_manifest

    started = time.perf_counter()
    rows = load_prompts(cfg)  # bad input fails here, before a model is loaded
    out = Path(cfg.output)
    work = out.with_name(f".{out.name}.{SAMPLES_DIR}")
    work.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in cfg.public().items() if k not in ("output", "chunk_size", "api_key")}
    check_resume(work, settings)
    chunks = [rows[i : i + cfg.chunk_size] for i in range(0, len(rows), cfg.chunk_size)]
    pending = [i for i in range(len(chunks)) if not (work / f"chunk-{i:05d}.jsonl").is_file()]
    if len(pending) < len(chunks):
        logger.info("resuming: %d of %d chunks already sampled", len(chunks) - len(pending), len(chunks))
    if pending:
        engine = make_engine(cfg, rows)
        for i in tqdm(pending, desc="chunks", unit="chunk"):
            write_chunk(work / f"chunk-{i:05d}.jsonl", sample_chunk(cfg, chunks[i], engine))
    samples = {}
    for i in range(len(chunks)):
        for line in (work / f"chunk-{i:05d}.jsonl").read_text().splitlines():
            record = json.loads(line)
            samples[record["id"]] = record["answers"]
    pairs, stats = build_pairs(rows, samples)
    stats["wall_time_s"] = round(time.perf_counter() - started, 1)
    with atomic_output_dir(out, overwrite=True) as tmp:
        with (tmp / PAIRS_FILE).open("w") as f:
            for p in pairs:
                f.write(json.dumps(p, ensure_ascii=False) + "\n")
        with (tmp / "samples.jsonl").open("w") as f:
            for row in rows:
                f.write(json.dumps({"id": row["id"], "answers": samples[row["id"]]}, ensure_ascii=False) + "\n")
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        (tmp / "stats.md").write_text(stats_markdown(stats, cfg))
        write_manifest(
            tmp,
            make_manifest(
                "onpolicy_pairs",
                config=cfg.public(),
                source_model=cfg.model or cfg.endpoint,
                prompts={"file": cfg.prompts, "split": None if cfg.prompts else cfg.split, "count": len(rows)},
                pairs=len(pairs),
                pairs_sha256=sha256_file(tmp / PAIRS_FILE),
            ),
        )
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return out


def check_resume(work: Path, settings: dict[str, Any]) -> None:
    """Chunks left by a run with other settings would mix two samplings: refuse, naming the difference."""
    path = work / "settings.json"
    if path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise GenerateError(
                f"{work} holds samples drawn with other settings ({', '.join(changed)}): delete it or use them"
            )
    else:
        path.write_text(json.dumps(settings, indent=2, default=str))


def write_chunk(path: Path, records: Sequence[dict[str, Any]]) -> None:
    from orpo_deploy.core.io import write_atomic

    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def build_pairs(rows: Sequence[dict[str, Any]], samples: dict[str, list[dict]]) -> tuple[list[dict], dict]:
    """The pairs (conversational rows the trainer reads) and the stats of what was kept, dropped and why."""
    pairs, dropped = [], Counter()
    kind_pass: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    answers_total = cut = relevant_n = 0
    for row in rows:
        answers = samples[row["id"]]
        for a in answers:
            answers_total += 1
            cut += a["finish_reason"] == "length"
            relevant_n += a["relevant"]
            for c in row["constraints"]:
                kind_pass[c["kind"]][0] += c["kind"] not in a["fails"]
                kind_pass[c["kind"]][1] += 1
        chosen, rejected, why = pick_pair(answers)
        if why:
            dropped[why] += 1
            continue
        pairs.append(
            {
                "id": row["id"],
                "prompt": row["messages"],
                "chosen": [{"role": "assistant", "content": chosen["text"]}],
                "rejected": [{"role": "assistant", "content": rejected["text"]}],
                "constraints": row["constraints"],
                "relevance": row["relevance"],
                "topic": row["topic"],
                "rejected_fails": rejected["fails"],
                "chosen_finish": chosen["finish_reason"],
                "rejected_finish": rejected["finish_reason"],
                "chosen_words": len(chosen["text"].split()),
                "rejected_words": len(rejected["text"].split()),
            }
        )
    n = max(len(pairs), 1)
    stats = {
        "prompts": len(rows),
        "answers": answers_total,
        "answers_per_prompt": answers_total / max(len(rows), 1),
        "answer_pass_rate": sum(a["passes"] for r in rows for a in samples[r["id"]]) / max(answers_total, 1),
        "answers_cut_at_limit": cut / max(answers_total, 1),
        "answers_on_topic": relevant_n / max(answers_total, 1),
        "pass_rate_by_kind": {k: ok / total for k, (ok, total) in sorted(kind_pass.items())},
        "pairs": len(pairs),
        "dropped": dict(dropped),
        "chosen_cut_at_limit": sum(p["chosen_finish"] == "length" for p in pairs) / n,
        "rejected_cut_at_limit": sum(p["rejected_finish"] == "length" for p in pairs) / n,
        "chosen_mean_words": sum(p["chosen_words"] for p in pairs) / n,
        "rejected_mean_words": sum(p["rejected_words"] for p in pairs) / n,
        "rejected_fails_by_kind": dict(Counter(k for p in pairs for k in p["rejected_fails"]).most_common()),
    }
    return pairs, stats


def stats_markdown(stats: dict[str, Any], cfg: GenerateConfig) -> str:
    source = cfg.model or cfg.endpoint
    lines = [
        "# On-policy pairs",
        "",
        f"{stats['prompts']} prompts ({cfg.prompts or 'our ' + cfg.split + ' split'}), k = {cfg.k} answers each from "
        f"`{source}` (temperature {cfg.temperature}, top-p {cfg.top_p}, {cfg.max_new_tokens} new tokens, seed "
        f"{cfg.seed}), judged by our verifiers with the relevance condition; {stats['wall_time_s']:.0f} s.",
        "",
        f"- answers passing every constraint: {stats['answer_pass_rate']:.3f}; cut at the token limit: "
        f"{stats['answers_cut_at_limit']:.3f}; on topic: {stats['answers_on_topic']:.3f}",
        f"- pairs kept: {stats['pairs']}; dropped: "
        + (", ".join(f"{why} {n}" for why, n in stats["dropped"].items()) or "none"),
        f"- chosen: {stats['chosen_mean_words']:.0f} words on average, {stats['chosen_cut_at_limit']:.3f} cut; "
        f"rejected: {stats['rejected_mean_words']:.0f} words, {stats['rejected_cut_at_limit']:.3f} cut",
        "",
        "| constraint kind | pass rate (all answers, before training) | rejected answers failing it |",
        "|---|---|---|",
    ]
    for kind, rate in stats["pass_rate_by_kind"].items():
        lines.append(f"| {kind} | {rate:.3f} | {stats['rejected_fails_by_kind'].get(kind, 0)} |")
    return "\n".join(lines) + "\n"
