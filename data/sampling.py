"""Draw constraints for a prompt: which kinds go together, and their arguments for a given topic."""

from __future__ import annotations

import random
from typing import Any

from data.compose import END_PHRASES, LAYOUTS, POSTSCRIPT_MARKERS, START_PHRASES, Infeasible
from data.topics import Topic
from data.verifiers import KINDS, Constraint, count_occurrences

# Pairs that cannot (or should not) be asked for together, e.g. a quoted response cannot start with a phrase.
_CONFLICTS = {
    "lowercase": ("uppercase", "start_with", "end_with", "sections", "postscript"),
    "uppercase": ("start_with", "end_with"),
    "max_words": ("min_words",),
    "json_format": (
        "title",
        "postscript",
        "quotation",
        "start_with",
        "end_with",
        "no_commas",
        "placeholders",
    ),
    "quotation": ("start_with", "end_with", "numbered_list", "bullet_list", "sections"),
    "title": ("start_with",),
    "end_with": ("postscript",),
    "avoid_keywords": ("include_keywords", "keyword_frequency"),
    "include_keywords": ("keyword_frequency",),
}
INCOMPATIBLE: frozenset[frozenset[str]] = frozenset(
    {frozenset((a, b)) for a, bs in _CONFLICTS.items() for b in bs}
    | {frozenset((a, b)) for a in LAYOUTS for b in LAYOUTS if a != b}
)


def compatible(a: str, b: str) -> bool:
    """Whether kinds a and b can be asked for in the same prompt."""
    return a != b and frozenset((a, b)) not in INCOMPATIBLE


def _avoidable(topic: Topic) -> list[str]:
    """Keywords that a natural answer tends to use but that an answer can do without."""
    out = []
    for k in topic.keywords:
        hits = sum(1 for s in topic.sentences if count_occurrences(s, k))
        if not count_occurrences(topic.title, k) and hits and len(topic.sentences) - hits >= 3:
            out.append(k)
    return out


def sample_kwargs(kind: str, topic: Topic, rng: random.Random) -> dict[str, Any]:
    """Arguments for `kind` that suit `topic`. Length kinds get n=0: the builder sets n after shaping."""
    if kind in ("max_words", "min_words"):
        return {"n": 0}
    if kind == "numbered_list":
        return {"n": rng.choice((3, 4, 5))}
    if kind == "bullet_list":
        return {"n": rng.choice((2, 3, 4, 5))}
    if kind == "paragraphs":
        return {"n": rng.choice((2, 3, 4))}
    if kind == "sections":
        return {"n": rng.choice((2, 3))}
    if kind == "placeholders":
        return {"n": rng.choice((1, 2, 3))}
    if kind == "include_keywords":
        return {"keywords": rng.sample(list(topic.keywords), rng.choice((1, 2, 2)))}
    if kind == "avoid_keywords":
        options = _avoidable(topic)
        if not options:
            raise Infeasible(f"{topic.id} has no keyword an answer can avoid")
        return {"keywords": rng.sample(options, min(len(options), rng.choice((1, 1, 2))))}
    if kind == "keyword_frequency":
        counts = {k: sum(count_occurrences(s, k) for s in topic.sentences) for k in topic.keywords}
        keyword = rng.choice([k for k in topic.keywords if counts[k] >= 2] or list(topic.keywords))
        return {"keyword": keyword, "n": rng.choice((2, 3)) if counts[keyword] >= 3 else 2}
    if kind == "start_with":
        return {"phrase": rng.choice(START_PHRASES)}
    if kind == "end_with":
        return {"phrase": rng.choice(END_PHRASES)}
    if kind == "postscript":
        return {"marker": rng.choice(POSTSCRIPT_MARKERS)}
    return {}


def sample_constraints(primary: str, topic: Topic, rng: random.Random, p_second: float) -> list[Constraint]:
    """`primary` and, with probability `p_second`, one compatible second kind, in random order."""
    kinds = [primary]
    if rng.random() < p_second:
        kinds.append(rng.choice([k for k in KINDS if compatible(primary, k)]))
        rng.shuffle(kinds)
    return [Constraint(k, sample_kwargs(k, topic, rng)) for k in kinds]
