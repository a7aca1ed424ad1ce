"""Instruction-following figures on our own split, from generated responses (pure: no model, no I/O).

The four IFEval figures (Zhou et al. 2023, arXiv 2311.07911): prompt-level strict/loose (every instruction of
a prompt followed) and instruction-level strict/loose (each instruction counted on its own), with a 95 %
bootstrap interval clustered by topic (prompts of one topic are not independent draws).

An answer must also be *about* its question: where a row carries ``relevance`` words (dataset v2), an answer
that uses none of them fails every instruction of its prompt, so no constant answer can score.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from orpo_deploy.data.verifiers import Constraint, check, check_loose, relevant
from orpo_deploy.evaluation.stats import IF_FIGURES, if_figures, instruction_parts, ratio_ci


def verdicts(rows: Sequence[dict[str, Any]], responses: Sequence[str]) -> list[dict[str, Any]]:
    """Per row: each constraint's strict and loose verdict, relevance included; plus the row's topic and template."""
    if len(rows) != len(responses):
        raise ValueError(f"{len(rows)} rows for {len(responses)} responses")
    out = []
    for row, response in zip(rows, responses, strict=True):
        cs = [c if isinstance(c, Constraint) else Constraint.from_dict(c) for c in row["constraints"]]
        words = row.get("relevance")
        on_topic = True if not words else relevant(response, words)
        out.append(
            {
                "id": row.get("id"),
                "topic": row.get("topic"),
                "template": row.get("template"),
                "kinds": [c.kind for c in cs],
                "relevant": on_topic,
                "strict": [on_topic and check(response, c) for c in cs],
                "loose": [on_topic and check_loose(response, c) for c in cs],
            }
        )
    return out


def summarize(vs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The four figures (floats, as before) with ``ci`` beside them, the mean, per kind, per template, relevance."""
    clusters = [v["topic"] for v in vs] if vs and all(v.get("topic") for v in vs) else None
    figures = if_figures(vs, clusters)
    result: dict[str, Any] = {
        "prompts": len(vs),
        "instructions": sum(len(v["strict"]) for v in vs),
        **{name: figures[name]["value"] for name in (*IF_FIGURES, "mean")},
        "ci": {name: [figures[name]["ci_low"], figures[name]["ci_high"]] for name in (*IF_FIGURES, "mean")},
        "clustered_by": "topic" if clusters else "prompt",
        "relevance_rate": sum(v["relevant"] for v in vs) / max(len(vs), 1),
    }
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for v in vs:
        for kind, ok in zip(v["kinds"], v["strict"], strict=True):
            per_kind[kind][0] += ok
            per_kind[kind][1] += 1
    result["per_kind_strict"] = {k: ok / total for k, (ok, total) in sorted(per_kind.items())}
    templates = sorted({v["template"] for v in vs if v.get("template")})
    if len(templates) > 1:
        result["by_template"] = {}
        for t in templates:
            sub = [v for v in vs if v.get("template") == t]
            sub_clusters = [v["topic"] for v in sub] if clusters else None
            result["by_template"][t] = {"prompts": len(sub), **if_figures(sub, sub_clusters)}
    return result


def score_responses(
    constraints: Sequence[Sequence[Constraint]], responses: Sequence[str], rows: Sequence[dict] | None = None
) -> dict[str, Any]:
    """IFEval rates plus a strict rate per constraint kind; ``constraints[i]`` belong to ``responses[i]``.

    ``rows`` (the dataset rows, same order) adds relevance, topic clusters and templates when they have them.
    """
    if len(constraints) != len(responses):
        raise ValueError(f"{len(constraints)} constraint lists for {len(responses)} responses")
    rows = rows or [{} for _ in constraints]
    merged = [{**r, "constraints": list(cs)} for r, cs in zip(rows, constraints, strict=True)]
    return summarize(verdicts(merged, responses))


def per_kind_ci(vs: Sequence[dict[str, Any]]) -> dict[str, dict]:
    """Strict instruction-level accuracy per constraint kind with its interval (prompts resampled by topic)."""
    out = {}
    for kind in sorted({k for v in vs for k in v["kinds"]}):
        num, den, idx = instruction_parts(vs, lambda k, kind=kind: k == kind, key="kinds")
        topics = [vs[i].get("topic") for i in idx]
        out[kind] = ratio_ci(num, den, clusters=topics if all(topics) else None).to_dict()
    return out
