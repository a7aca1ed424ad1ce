"""Draw constraints for a prompt: which kinds go together, and their arguments for a given topic."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from orpo_deploy.data.compose import (
    END_PHRASES,
    LAYOUTS,
    NOVEL_END_PHRASES,
    NOVEL_POSTSCRIPT_MARKERS,
    NOVEL_START_PHRASES,
    POSTSCRIPT_MARKERS,
    START_PHRASES,
    Infeasible,
)
from orpo_deploy.data.topics import Topic
from orpo_deploy.data.verifiers import Constraint, count_occurrences

# n-values, phrases and markers: the familiar ones (train, dev, the test split's in-template rows) and the novel
# ones only the test split's out-of-template rows use. Keyword kinds draw from the topic, so only their wording is new.
N_VALUES = {
    "numbered_list": ((3, 4, 5), (2, 6)),
    "bullet_list": ((2, 3, 4, 5), (6,)),
    "paragraphs": ((2, 3, 4), (5,)),
    "sections": ((2, 3), (4,)),
    "placeholders": ((1, 2, 3), (4,)),
    "highlights": ((2, 3), (2, 3)),
    "capital_words": ((3, 4, 5), (3, 4, 5)),
}
PHRASES = {
    "start_with": (START_PHRASES, NOVEL_START_PHRASES),
    "end_with": (END_PHRASES, NOVEL_END_PHRASES),
    "postscript": (POSTSCRIPT_MARKERS, NOVEL_POSTSCRIPT_MARKERS),
}

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
    "highlights": ("json_format", "bullet_list", "numbered_list"),
    "capital_words": ("lowercase", "uppercase"),
    "repeat_request": ("start_with", "title", "quotation", "json_format"),
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


def sample_kwargs(
    kind: str, topic: Topic, rng: random.Random, request: str = "", novel: bool = False
) -> dict[str, Any]:
    """Arguments for `kind` that suit `topic` (``novel``: the test-only values and phrases).

    Length kinds get n=0: the builder sets n after shaping. ``request`` is the base prompt (for repeat_request).
    """
    if kind in ("max_words", "min_words"):
        return {"n": 0}
    if kind in N_VALUES:
        return {"n": rng.choice(N_VALUES[kind][novel])}
    if kind in PHRASES:
        key = "marker" if kind == "postscript" else "phrase"
        return {key: rng.choice(PHRASES[kind][novel])}
    if kind == "repeat_request":
        return {"request": request}
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
    return {}


def sample_constraints(
    primary: str,
    topic: Topic,
    rng: random.Random,
    p_second: float,
    kinds: Sequence[str],
    request: str = "",
    novel: bool = False,
) -> list[Constraint]:
    """`primary` and, with probability `p_second`, one compatible second kind of `kinds`, in random order."""
    chosen = [primary]
    if rng.random() < p_second:
        chosen.append(rng.choice([k for k in kinds if compatible(primary, k)]))
        rng.shuffle(chosen)
    return [Constraint(k, sample_kwargs(k, topic, rng, request, novel)) for k in chosen]
