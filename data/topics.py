"""The hand-written knowledge behind the answers: topics with prompts, factual sentences and keywords.

`topics.json` holds ~160 topics. Each has two differently phrased user prompts, 5-7 plain, self-contained
factual sentences that answer them, and 3-6 lowercase keywords that occur in those sentences. Sentences are
used in any order, so none may lean on another ("This...", "It..."), except in topics marked `ordered`
(procedures). `load_topics` validates the file, so a typo in the content fails loudly, not as a bad pair.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from orpo_deploy.data.verifiers import count_occurrences

TOPICS_PATH = Path(__file__).with_name("topics.json")

# Characters that would interfere with a verifier (quotes, placeholders, bullets, titles) or with case checks.
_FORBIDDEN = set('"[]*<>#\n')


@dataclass(frozen=True)
class Topic:
    """One subject: id, domain (science, cooking, ...), short title, prompts, keywords and sentences."""

    id: str
    domain: str
    title: str
    prompts: tuple[str, ...]
    keywords: tuple[str, ...]
    sentences: tuple[str, ...]
    ordered: bool = False  # steps of a procedure: keep the sentences in their written order


def _problems(t: Topic) -> list[str]:
    problems = []
    if len(t.prompts) != 2 or not 5 <= len(t.sentences) <= 7 or not 3 <= len(t.keywords) <= 6:
        problems.append("needs 2 prompts, 5-7 sentences and 3-6 keywords")
    if "," in t.title:
        problems.append("title must not contain commas")
    for text in (t.title, *t.prompts, *t.sentences):
        if not text.isascii() or _FORBIDDEN & set(text) or text != text.strip():
            problems.append(f"non-ASCII, forbidden character or padding in {text!r}")
    for s in t.sentences:
        if not re.fullmatch(r"[A-Z0-9].*[A-Za-z0-9)]\.", s) or re.match(r"\d+\.", s):
            problems.append(f"sentence must start with a capital or digit and end with a period: {s!r}")
    for k in t.keywords:
        if k != k.lower() or not any(count_occurrences(s, k) for s in t.sentences):
            problems.append(f"keyword {k!r} is not lowercase or occurs in no sentence")
    return problems


def load_topics(path: Path = TOPICS_PATH) -> list[Topic]:
    """Read and validate the topics file; raise ValueError listing every problem found."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    topics = [
        Topic(
            id=d["id"],
            domain=d["domain"],
            title=d["title"],
            prompts=tuple(d["prompts"]),
            keywords=tuple(d["keywords"]),
            sentences=tuple(d["sentences"]),
            ordered=d.get("ordered", False),
        )
        for d in raw
    ]
    problems = [f"{t.id}: {p}" for t in topics for p in _problems(t)]
    ids = [t.id for t in topics]
    prompts = [p for t in topics for p in t.prompts]
    if len(set(ids)) != len(ids) or len(set(prompts)) != len(prompts):
        problems.append("topic ids and prompts must be unique")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return topics
